"""Safety settings and rejection classes over raw sockets, with Gunicorn's defaults and effects.

Complements tests/test_http.py (limits, malformed requests, keep-alive) and tests/test_wsgi.py
(SCRIPT_NAME and scheme headers from trusted/untrusted peers): here are the strictness
settings, the header map, forwarded-header trust, REMOTE_ADDR, the slow-client deadlines and
buffers, and the rule that nothing pipelined behind a rejected request ever runs.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from conftest import SocketReader, read_all

pytestmark = pytest.mark.timeout(60)

APP = "s_apps:app"


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "marker.log"


def seen(marker: Path) -> list[str]:
    return marker.read_text("latin-1").splitlines() if marker.exists() else []


def exchange(sock: socket.socket, raw: bytes, timeout: float = 10.0) -> tuple[int, dict, bytes]:
    sock.sendall(raw)
    status, headers, body, _ = SocketReader(sock, timeout).response()
    return status, headers, body


def environ(srv, raw_headers: str = "", path: str = "/e", sock: socket.socket | None = None) -> dict:
    """The JSON environ summary for one GET with the given raw header lines."""
    raw = f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{raw_headers}\r\n".encode("latin-1")
    s = sock or srv.connect()
    with s:
        status, _, body = exchange(s, raw)
    assert status == 200, body
    return json.loads(body)


def refused(srv, raw: bytes, marker: Path, *statuses: int) -> bytes:
    """Sends `raw` followed by a pipelined valid request; asserts one error answer, a close, and
    that the application saw neither request."""
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    with srv.connect() as s:
        try:
            s.sendall(raw + smuggled)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = read_all(s)
    answers = [line for line in data.split(b"\r\n") if line.startswith(b"HTTP/1.")]
    assert len(answers) == 1, data[:400]
    status = int(answers[0].split()[1])
    assert status in statuses, data[:400]
    assert b"connection: close" in data.lower()
    assert not any("/smuggled" in line for line in seen(marker)), seen(marker)
    return data


# ---------------------------------------------------------------------------- rejection classes

REJECTED = {
    # RFC 9112 6.1/6.3: Content-Length with Transfer-Encoding is a smuggling vector.
    "te-and-cl": (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
                  b"0\r\n\r\n", (400,)),
    "conflicting-cl-list": (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd", (400,)),
    "cl-with-plus": (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc", (400,)),
    "te-chunked-not-last": (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
                            b"0\r\n\r\n", (400, 501)),
    "te-chunked-twice": (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", (400, 501)),
    "te-on-http10": (b"POST /a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", (400, 501)),
    "chunk-size-overflow": (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"1ffffffffffffffff\r\na\r\n0\r\n\r\n", (400,)),
    "chunk-size-with-space": (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"1 \r\na\r\n0\r\n\r\n", (400,)),
    "chunk-bad-extension": (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"1;a\x00b\r\na\r\n0\r\n\r\n", (400,)),
    "chunk-size-line-too-long": (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"1;x=" + b"b" * 9000 + b"\r\na\r\n0\r\n\r\n", (400,)),
    "chunk-data-no-crlf": (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"1\r\naXX0\r\n\r\n", (400,)),
    "bare-cr-in-value": (b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", (400,)),
    "bare-lf-line-end": (b"GET /a HTTP/1.1\nHost: x\n\n", (400,)),
    "control-char-in-value": (b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", (400,)),
    "lowercase-method": (b"get /a HTTP/1.1\r\nHost: x\r\n\r\n", (400,)),
    "method-bad-token": (b"GE(T /a HTTP/1.1\r\nHost: x\r\n\r\n", (400,)),
    "header-name-bad-token": (b"GET /a HTTP/1.1\r\nHost: x\r\nX\"A: b\r\n\r\n", (400,)),
    "tab-before-colon": (b"GET /a HTTP/1.1\r\nHost: x\r\nX-A\t: b\r\n\r\n", (400,)),
    "http-version-3": (b"GET /a HTTP/3.0\r\nHost: x\r\n\r\n", (400, 505)),
    "request-line-too-long": (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", (414, 400)),
    "field-too-large": (b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 9000 + b"\r\n\r\n", (431, 400)),
    "underscore-header-refused": None,  # under --header-map refuse, below
}


@pytest.mark.parametrize("case", sorted(k for k, v in REJECTED.items() if v))
def test_rejected_and_nothing_pipelined_runs(run_server, worker_args, marker, case):
    raw, statuses = REJECTED[case]
    srv = run_server(*worker_args, "-e", f"MARKER={marker}", APP)
    refused(srv, raw, marker, *statuses)
    assert not any(line.endswith(" /a") for line in seen(marker))


def test_request_before_rejected_one_is_answered(run_server, worker_args, marker):
    srv = run_server(*worker_args, "-e", f"MARKER={marker}", APP)
    good = b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
    bad = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
    with srv.connect() as s:
        s.sendall(good + bad + b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = SocketReader(s)
        assert reader.response()[0] == 200
        status, headers, _, _ = reader.response()
        assert status == 400 and headers["connection"] == "close"
        assert reader.read_to_close() == b""
    assert seen(marker) == ["GET /first"]


# ---------------------------------------------------------------------------- --header-map

def test_header_map_drop_is_default(run_server, worker_args, marker):
    srv = run_server(*worker_args, "--forwarded-allow-ips", "10.9.9.9", APP)
    env = environ(srv, "X_Under: one\r\nX-Dash: two\r\n")
    assert env["headers"] == {"HTTP_HOST": "localhost", "HTTP_CONNECTION": "close", "HTTP_X_DASH": "two"}


def test_header_map_drop_cannot_shadow_dash_header(run_server, worker_args):
    # X_Dash would land on the same key as X-Dash; dropped, the real header is untouched.
    srv = run_server(*worker_args, "--forwarded-allow-ips", "10.9.9.9", APP)
    env = environ(srv, "X-Dash: real\r\nX_Dash: forged\r\n")
    assert env["headers"]["HTTP_X_DASH"] == "real"


def test_header_map_refuse(run_server, worker_args, marker):
    srv = run_server(*worker_args, "--header-map", "refuse", "--forwarded-allow-ips", "10.9.9.9",
                     "-e", f"MARKER={marker}", APP)
    data = refused(srv, b"GET /a HTTP/1.1\r\nHost: x\r\nX_Under: one\r\n\r\n", marker, 400)
    assert b"X_Under" in data
    assert seen(marker) == []
    # Headers without "_" are still fine.
    assert environ(srv, "X-Dash: two\r\n")["headers"]["HTTP_X_DASH"] == "two"


def test_header_map_dangerous(run_server, worker_args):
    srv = run_server(*worker_args, "--header-map", "dangerous", "--forwarded-allow-ips", "10.9.9.9", APP)
    env = environ(srv, "X_Under: one\r\n")
    assert env["headers"]["HTTP_X_UNDER"] == "one"


def test_forwarder_headers_from_trusted_peer_only(run_server, worker_args):
    trusted = run_server(*worker_args, "--forwarder-headers", "X_REAL_USER", APP)
    assert environ(trusted, "X_Real_User: alice\r\n")["headers"].get("HTTP_X_REAL_USER") == "alice"
    untrusted = run_server(*worker_args, "--forwarder-headers", "X_REAL_USER",
                           "--forwarded-allow-ips", "10.9.9.9", APP)
    assert "HTTP_X_REAL_USER" not in environ(untrusted, "X_Real_User: mallory\r\n")["headers"]


def test_forwarder_headers_default_does_not_include_others(run_server, worker_args):
    # Trusted peer, default --forwarder-headers SCRIPT_NAME,PATH_INFO: other "_" names drop.
    srv = run_server(*worker_args, APP)
    assert "HTTP_X_REAL_USER" not in environ(srv, "X_Real_User: alice\r\n")["headers"]


# ---------------------------------------------------------------------------- method and field strictness

def test_permit_unconventional_http_method(run_server, worker_args):
    srv = run_server(*worker_args, "--permit-unconventional-http-method", APP)
    with srv.connect() as s:
        status, _, body = exchange(s, b"get /e HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 200 and json.loads(body)["REQUEST_METHOD"] == "get"
    with srv.connect() as s:
        status, _, body = exchange(s, b"M-SEARCH# /e HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 200 and json.loads(body)["REQUEST_METHOD"] == "M-SEARCH#"


def test_permit_unconventional_http_version(run_server, worker_args):
    """The application sees the version as sent; the answer is in the nearest version the
    server speaks (RFC 9110 section 6.2; Gunicorn echoes the request's), with that version's
    framing: 2.0 keeps 1.1's persistent connection, 0.9 gets 1.0's close-delimited body."""
    srv = run_server(*worker_args, "--permit-unconventional-http-version", APP)
    with srv.connect() as s:
        s.sendall(b"GET /e HTTP/2.0\r\nHost: x\r\n\r\n")
        reader = SocketReader(s)
        status, headers, body, _ = reader.response()
        assert status == 200 and json.loads(body)["SERVER_PROTOCOL"] == "HTTP/2.0"
        assert headers["connection"] == "keep-alive"
        s.sendall(b"GET /e HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert reader.response()[0] == 200, "the connection stayed usable"
    with srv.connect() as s:
        s.sendall(b"GET /e HTTP/0.9\r\nHost: x\r\n\r\n")
        data = read_all(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 ") and b"connection: close" in head.lower()
    assert json.loads(body)["SERVER_PROTOCOL"] == "HTTP/0.9"


def test_casefold_http_method(run_server, worker_args, marker):
    srv = run_server(*worker_args, "--permit-unconventional-http-method", "--casefold-http-method", APP)
    with srv.connect() as s:
        status, _, body = exchange(s, b"get /e HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 200 and json.loads(body)["REQUEST_METHOD"] == "GET"
    # Without permitting unconventional methods, a lower-case method is still refused.
    strict = run_server(*worker_args, "--casefold-http-method", "-e", f"MARKER={marker}", APP)
    refused(strict, b"get /e HTTP/1.1\r\nHost: x\r\n\r\n", marker, 400)


def test_permit_obsolete_folding(run_server, worker_args, marker):
    strict = run_server(*worker_args, "-e", f"MARKER={marker}", APP)
    folded = b"GET /e HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n  b\r\nConnection: close\r\n\r\n"
    refused(strict, folded, marker, 400)
    srv = run_server(*worker_args, "--permit-obsolete-folding", APP)
    with srv.connect() as s:
        status, _, body = exchange(s, folded)
    assert status == 200
    value = json.loads(body)["headers"]["HTTP_X_FOLD"]
    assert value.split() == ["a", "b"], value


def test_strip_header_spaces(run_server, worker_args, marker):
    raw = b"GET /e HTTP/1.1\r\nHost: x\r\nX-Field : v\r\nConnection: close\r\n\r\n"
    strict = run_server(*worker_args, "-e", f"MARKER={marker}", APP)
    refused(strict, raw, marker, 400)
    srv = run_server(*worker_args, "--strip-header-spaces", APP)
    with srv.connect() as s:
        status, _, body = exchange(s, raw)
    assert status == 200 and json.loads(body)["headers"]["HTTP_X_FIELD"] == "v"


# ---------------------------------------------------------------------------- forwarded trust, REMOTE_ADDR

FORGED = ("X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: on\r\nX-Forwarded-Protocol: ssl\r\n"
          "X-Forwarded-For: 203.0.113.9\r\nX-Real-IP: 203.0.113.9\r\nForwarded: for=203.0.113.9;proto=https\r\n"
          "X_Forwarded_Proto: https\r\nScript_Name: /forged\r\n")
CORE = ("REMOTE_ADDR", "SERVER_NAME", "SERVER_PORT", "SCRIPT_NAME", "PATH_INFO", "wsgi.url_scheme")


@pytest.mark.parametrize("allow", ["10.0.0.0/8", "192.168.1.1", "10.0.0.0/8,192.168.0.0/16,::1"])
def test_forged_forwarded_headers_from_untrusted_peer_change_nothing(run_server, worker_args, allow):
    srv = run_server(*worker_args, "--forwarded-allow-ips", allow, APP)
    base = environ(srv)
    forged = environ(srv, FORGED)
    for key in CORE:
        assert forged.get(key) == base.get(key), key
    assert forged["wsgi.url_scheme"] == "http" and forged["REMOTE_ADDR"] == "127.0.0.1"
    # The "_" spelling was dropped, not merged into the "-" one.
    assert forged["headers"]["HTTP_X_FORWARDED_PROTO"] == "https"
    assert "HTTP_SCRIPT_NAME" not in forged["headers"]


@pytest.mark.parametrize("allow", ["*", "127.0.0.0/8", "127.0.0.1", "10.0.0.0/8,127.0.0.0/24"])
def test_forwarded_allow_ips_star_and_cidr_trust(run_server, worker_args, allow):
    srv = run_server(*worker_args, "--forwarded-allow-ips", allow, APP)
    assert environ(srv, "X-Forwarded-Proto: https\r\n")["wsgi.url_scheme"] == "https"
    # Gunicorn does not take REMOTE_ADDR from X-Forwarded-For, trusted or not.
    assert environ(srv, "X-Forwarded-For: 203.0.113.9\r\n")["REMOTE_ADDR"] == "127.0.0.1"


def test_unix_socket_peer_is_trusted(run_server, worker_args, tmp_path):
    path = tmp_path / "s.sock"
    srv = run_server(*worker_args, "-b", f"unix:{path}", "--forwarded-allow-ips", "10.9.9.9", APP)
    env = environ(srv, "X-Forwarded-Proto: https\r\n")
    assert env["wsgi.url_scheme"] == "https"
    # A unix-socket peer has no address: REMOTE_ADDR is empty, as Gunicorn sets it.
    assert env["REMOTE_ADDR"] == ""
    assert "REMOTE_PORT" not in env


def test_remote_addr_and_port_over_tcp(run_server, worker_args):
    srv = run_server(*worker_args, APP)
    s = srv.connect()
    port = s.getsockname()[1]
    env = environ(srv, sock=s)
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REMOTE_PORT"] == str(port)


def test_secure_scheme_headers_from_config_file(run_server, worker_args, tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text("secure_scheme_headers = {'X-SCHEME': 'https'}\nforwarded_allow_ips = '127.0.0.1'\n")
    srv = run_server(*worker_args, "-c", str(conf), APP)
    assert environ(srv, "X-Scheme: https\r\n")["wsgi.url_scheme"] == "https"
    assert environ(srv, "X-Scheme: http\r\n")["wsgi.url_scheme"] == "http"
    # The default headers no longer count once the dict replaces them.
    assert environ(srv, "X-Forwarded-Proto: https\r\n")["wsgi.url_scheme"] == "http"


# ---------------------------------------------------------------------------- slow-client bounds

def test_header_timeout_answers_408(run_server, worker_args, marker):
    srv = run_server(*worker_args, "--header-timeout", "1", "-e", f"MARKER={marker}", APP)
    with srv.connect() as s:
        s.sendall(b"GET /late HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        data = read_all(s, timeout=10)
    assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data[:200]
    assert b"connection: close" in data.lower()
    assert time.monotonic() - start < 8
    assert seen(marker) == []


def test_header_timeout_closes_silent_connection(run_server, worker_args):
    srv = run_server(*worker_args, "--header-timeout", "1", APP)
    with srv.connect() as s:
        assert read_all(s, timeout=10) == b""


def test_header_timeout_does_not_cut_keepalive_idle(run_server, worker_args):
    # Idle time between requests is --keep-alive, not --header-timeout.
    srv = run_server(*worker_args, "--header-timeout", "1", "--keep-alive", "5", APP)
    with srv.connect() as s:
        reader = SocketReader(s)
        s.sendall(b"GET /e HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reader.response()[0] == 200
        time.sleep(2)
        s.sendall(b"GET /e HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reader.response()[0] == 200


def test_body_timeout_answers_408(run_server, worker_args, marker):
    srv = run_server(*worker_args, "--body-timeout", "1", "-e", f"MARKER={marker}", APP)
    with srv.connect() as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        data = read_all(s, timeout=10)
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]
    assert seen(marker) == []


def _app_called_before_body_complete(srv, marker: Path) -> bool:
    with srv.connect() as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"a" * 50)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline and not seen(marker):
            time.sleep(0.05)
        called = bool(seen(marker))
        s.sendall(b"a" * 50)
        status, _, body, _ = SocketReader(s).response()
    assert status == 200 and body == b"100"
    return called


def test_body_buffer_size(run_server, worker_args, marker, tmp_path):
    # Default (1 MiB): a 100-byte body is complete before the application runs.
    srv = run_server(*worker_args, "-e", f"MARKER={marker}", APP)
    assert not _app_called_before_body_complete(srv, marker)
    # With a 10-byte buffer, the application runs and streams the rest from wsgi.input.
    other = tmp_path / "other.log"
    small = run_server(*worker_args, "--body-buffer-size", "10", "-e", f"MARKER={other}", APP)
    assert _app_called_before_body_complete(small, other)


@pytest.mark.parametrize("path", ["/big", "/gen"])
def test_response_buffer_size_keeps_responses_whole(run_server, worker_args, path):
    # A tiny bound pauses (sync) or waits (gthread) at nearly every piece; nothing is lost.
    size = 3 * 1024 * 1024 + 17
    srv = run_server(*worker_args, "--response-buffer-size", "1000", APP)
    with srv.connect() as s:
        reader = SocketReader(s, timeout=30)
        for _ in range(2):  # and the connection stays usable
            s.sendall(f"GET {path}?n={size} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            status, _, body, _ = reader.response()
            assert status == 200 and len(body) == size
            assert body == (b"x" if path == "/big" else b"y") * size
