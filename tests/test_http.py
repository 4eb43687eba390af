"""HTTP/1.1 behaviour over real sockets (RFC 9112), as Gunicorn answers it.

Every test starts the real server and speaks raw bytes to it. Unlike Gunicorn's sync worker,
ferrocorn keeps connections alive and answers pipelined requests in every worker class; the
tests that rely on it say so.
"""

from __future__ import annotations

import email.utils
import json
import re
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from conftest import SocketReader, connect_to, read_all, req

pytestmark = pytest.mark.timeout(60)


# ---------------------------------------------------------------------------- helpers

def closed_by_peer(reader: SocketReader, timeout: float = 10.0) -> bool:
    """True when the server closes the connection (EOF or reset) with nothing more to read."""
    reader.sock.settimeout(timeout)
    try:
        rest = reader.buf + reader.sock.recv(65536)
    except ConnectionResetError:
        rest = reader.buf
    except socket.timeout:
        return False
    return rest == b""


def marker_lines(path: Path) -> list[str]:
    return path.read_text("latin-1").splitlines() if path.exists() else []


def status_lines(data: bytes) -> list[bytes]:
    return re.findall(rb"HTTP/1\.[01] \d{3}[^\r\n]*\r\n", data)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "marker.log"


@pytest.fixture
def echo_server(run_server, worker_args, marker):
    return run_server(*worker_args, "-e", f"MARKER={marker}", "h_apps:echo")


# ---------------------------------------------------------------------------- keep-alive

def test_http11_keepalive_by_default(echo_server):
    # Gunicorn's sync worker closes after each response; ferrocorn keeps the connection.
    with echo_server.connect() as s:
        r = SocketReader(s)
        s.sendall(req("GET", "/one"))
        status, headers, body, _ = r.response()
        assert status == 200 and body.startswith(b"GET /one ")
        assert headers.get("connection", "keep-alive").lower() == "keep-alive"
        s.sendall(req("GET", "/two"))
        status, _, body, _ = r.response()
        assert status == 200 and body.startswith(b"GET /two ")


def test_connection_close_is_honoured(echo_server, marker):
    with echo_server.connect() as s:
        r = SocketReader(s)
        # The request pipelined after `Connection: close` must not be served.
        s.sendall(req("GET", "/bye", {"Connection": "close"}) + req("GET", "/ignored"))
        status, headers, body, _ = r.response()
        assert status == 200 and body.startswith(b"GET /bye ")
        assert headers.get("connection", "").lower() == "close"
        assert closed_by_peer(r), "server kept the connection open after Connection: close"
    assert marker_lines(marker) == ["GET /bye"]


def test_http10_without_keepalive_closes(echo_server):
    with echo_server.connect() as s:
        r = SocketReader(s)
        s.sendall(req("GET", "/ten", version="HTTP/1.0"))
        status, headers, body, raw = r.response()
        assert status == 200 and body.startswith(b"GET /ten ")
        assert raw.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200"))
        assert headers.get("connection", "close").lower() == "close"
        assert closed_by_peer(r)


def segments_without_data(sock: socket.socket) -> int:
    """Segments the socket received that carried no data (Linux TCP_INFO: `tcpi_segs_in`
    minus `tcpi_data_segs_in`)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
    (segs_in,) = struct.unpack_from("<I", info, 140)
    (data_segs_in,) = struct.unpack_from("<I", info, 152)
    return segs_in - data_segs_in


@pytest.mark.parametrize("request_bytes, status", [
    (req("GET", "/bye", {"Connection": "close"}), b"200"),
    (req("GET", "/ten", version="HTTP/1.0"), b"200"),
    (b"NOT A REQUEST\r\n\r\n", b"400"),
], ids=["connection-close", "http10", "refused"])
def test_fin_comes_in_the_last_responses_segment(echo_server, request_bytes, status):
    # The client receives, besides the response, the SYN-ACK and (at once, before any
    # response) the acknowledgement of its request. A FIN in a segment of its own would be
    # the third without data.
    with echo_server.connect() as s:
        s.sendall(request_bytes)
        data = read_all(s)
        assert data.split(b" ", 2)[1] == status
        assert segments_without_data(s) <= 2


def test_http10_with_keepalive_stays_open(echo_server):
    # Gunicorn's sync worker closes after each response; ferrocorn keeps the connection.
    with echo_server.connect() as s:
        r = SocketReader(s)
        s.sendall(req("GET", "/a", {"Connection": "keep-alive"}, version="HTTP/1.0"))
        status, headers, body, _ = r.response()
        assert status == 200 and body.startswith(b"GET /a ")
        assert headers.get("connection", "").lower() == "keep-alive"
        s.sendall(req("GET", "/b", {"Connection": "keep-alive"}, version="HTTP/1.0"))
        status, headers, body, _ = r.response()
        assert status == 200 and body.startswith(b"GET /b ")


def test_keepalive_idle_timeout(run_server, worker_args):
    # Gunicorn's sync worker closes after each response; ferrocorn keeps the connection
    # (and closes it only once it has been idle for --keep-alive seconds).
    srv = run_server(*worker_args, "--keep-alive", "1", "h_apps:echo")
    with srv.connect() as s:
        r = SocketReader(s)
        s.sendall(req("GET", "/idle"))
        status, headers, _, _ = r.response()
        assert status == 200
        assert headers.get("connection", "keep-alive").lower() == "keep-alive"
        start = time.monotonic()
        assert closed_by_peer(r, timeout=15), "idle connection not closed within 15 s"
        waited = time.monotonic() - start
    assert 0.5 <= waited <= 10, f"idle connection closed after {waited:.2f}s with --keep-alive 1"


def test_keepalive_idle_time_counts_from_the_last_response(run_server, worker_args):
    # Requests 0.4 s apart for longer than --keep-alive: each gap starts the idle time afresh,
    # so none of them may end the connection; once the client stops, it closes.
    srv = run_server(*worker_args, "--keep-alive", "1", "h_apps:echo")
    with srv.connect() as s:
        r = SocketReader(s)
        for i in range(7):
            s.sendall(req("GET", f"/gap{i}"))
            status, headers, _, _ = r.response()
            assert status == 200, i
            assert headers.get("connection", "keep-alive").lower() == "keep-alive", i
            time.sleep(0.4)
        start = time.monotonic()
        assert closed_by_peer(r, timeout=15), "idle connection not closed within 15 s"
        waited = time.monotonic() - start
    assert 0.3 <= waited <= 10, f"idle connection closed after {waited:.2f}s (+0.4 s) with --keep-alive 1"


def test_keepalive_zero_announces_the_close(run_server, worker_args):
    # No connection is kept between requests, so no response may promise one: a client that
    # sent its next request on the strength of `keep-alive` would lose it.
    srv = run_server(*worker_args, "--keep-alive", "0", "h_apps:echo")
    with srv.connect() as s:
        s.sendall(req("GET", "/once") + req("GET", "/never"))
        reader = SocketReader(s)
        status, headers, _, _ = reader.response()
        assert (status, headers.get("connection")) == (200, "close")
        assert reader.read_to_close() == b"", "answered again after Connection: close"


# ---------------------------------------------------------------------------- pipelining

def test_pipelined_requests_answered_in_order(echo_server):
    # Gunicorn's sync worker closes after each response; ferrocorn keeps the connection.
    batch = (req("GET", "/p1")
             + req("POST", "/p2", {"Content-Type": "text/plain"}, body=b"hello")
             + req("GET", "/p3?x=1")
             + req("POST", "/p4", body=b"GET /fake HTTP/1.1\r\n\r\n")
             + req("GET", "/p5", {"Connection": "close"}))
    with echo_server.connect() as s:
        s.sendall(batch)
        r = SocketReader(s)
        bodies = [r.response()[2] for _ in range(5)]
    assert bodies == [b"GET /p1 len=0\n", b"POST /p2 len=5\nhello", b"GET /p3?x=1 len=0\n",
                      b"POST /p4 len=22\nGET /fake HTTP/1.1\r\n\r\n", b"GET /p5 len=0\n"]


def test_concurrent_connections_each_get_their_own_responses(run_server, worker_args):
    # The sync worker holds the responses of a turn of its event loop and writes them in one
    # burst: every response must still reach its own connection, in order, pipelined or not.
    server = run_server(*worker_args, "h_apps:spin")
    connections, rounds, depth = 24, 25, 3
    failures: list[str] = []

    def client(n: int) -> None:
        try:
            with server.connect() as s:
                reader = SocketReader(s, timeout=10)
                for r in range(rounds):
                    paths = [f"/c{n}/r{r}/q{q}" for q in range(depth if r % 2 else 1)]
                    s.sendall(b"".join(req("GET", p) for p in paths))
                    got = [reader.response()[2].decode() for _ in paths]
                    if got != paths:
                        failures.append(f"connection {n} round {r}: sent {paths}, got {got}")
                        return
        except OSError as e:
            failures.append(f"connection {n}: {e!r}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "clients still waiting after 60 s"
    assert failures == []


@pytest.mark.parametrize("pieces", [1, 7])
def test_pipelined_large_bodies_keep_their_bounds(echo_server, pieces):
    """Bodies larger than one socket read, with requests right behind them: every body gets
    exactly its bytes, and what follows each body is parsed as the next request."""
    sizes = [100_000, 16_384, 40_001]
    bodies = [bytes([65 + i]) * n for i, n in enumerate(sizes)]
    batch = b"".join(req("POST", f"/b{i}", body=b) for i, b in enumerate(bodies))
    batch += req("GET", "/last", {"Connection": "close"})
    step = -(-len(batch) // pieces)
    with echo_server.connect() as s:
        for start in range(0, len(batch), step):
            s.sendall(batch[start:start + step])
            time.sleep(0.02 if pieces > 1 else 0)
        r = SocketReader(s)
        got = [r.response()[2] for _ in range(len(bodies) + 1)]
    expected = [b"POST /b%d len=%d\n" % (i, len(b)) + b for i, b in enumerate(bodies)]
    assert got == [*expected, b"GET /last len=0\n"]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_unread_request_body_is_skipped(run_server, worker_args, marker, framing):
    """A body the app did not read is discarded, never parsed as the next request."""
    # Gunicorn's sync worker closes after each response; ferrocorn keeps the connection.
    srv = run_server(*worker_args, "-e", f"MARKER={marker}", "h_apps:ignore_body")
    smuggled = req("GET", "/smuggled")
    if framing == "chunked":
        first = req("POST", "/first", {"Transfer-Encoding": "chunked"}) + \
            b"%x\r\n%s\r\n0\r\n\r\n" % (len(smuggled), smuggled)
    else:
        first = req("POST", "/first", body=smuggled)
    with srv.connect() as s:
        s.sendall(first + req("GET", "/second", {"Connection": "close"}))
        data = read_all(s)
    assert status_lines(data) == [b"HTTP/1.1 200 OK\r\n"] * 2, data
    assert data.count(b"POST /first") == 1 and data.count(b"GET /second") == 1
    assert b"smuggled" not in data
    assert marker_lines(marker) == ["POST /first", "GET /second"]


# ---------------------------------------------------------------------------- request bodies

def test_chunked_request_body(echo_server):
    body = (b"5\r\nhello\r\n"
            b"1;ext=1;name=\"quoted\"\r\n \r\n"
            b"0B\r\nchunked wor\r\n"
            b"2\r\nld\r\n"
            b"0\r\nX-Trailer: yes\r\nX-Other: 2\r\n\r\n")
    with echo_server.connect() as s:
        s.sendall(req("POST", "/chunked", {"Transfer-Encoding": "chunked", "Connection": "close"}) + body)
        status, _, data, _ = SocketReader(s).response()
    assert status == 200
    assert data == b"POST /chunked len=19\nhello chunked world"


def test_chunked_request_body_sent_slowly(echo_server):
    """Chunks arriving in separate writes are joined, and the next request stays framed."""
    # Gunicorn's sync worker closes after each response; ferrocorn keeps the connection.
    with echo_server.connect() as s:
        r = SocketReader(s)
        s.sendall(req("POST", "/slow", {"Transfer-Encoding": "chunked"}))
        for piece in (b"3\r\nabc\r\n", b"4\r\ndefg\r\n", b"0\r\n", b"\r\n"):
            s.sendall(piece)
            time.sleep(0.05)  # pacing only; correctness does not depend on it
        s.sendall(req("GET", "/next"))
        assert r.response()[2] == b"POST /slow len=7\nabcdefg"
        assert r.response()[2] == b"GET /next len=0\n"


def test_expect_100_continue(echo_server):
    with echo_server.connect() as s:
        r = SocketReader(s)
        s.sendall(req("POST", "/expect", {"Content-Length": "6", "Expect": "100-continue",
                                          "Connection": "close"}))
        interim = r.read_until(b"\r\n\r\n")
        assert re.match(rb"HTTP/1\.1 100 Continue\r\n", interim), interim
        s.sendall(b"abcdef")
        status, _, body, _ = r.response()
    assert status == 200
    assert body == b"POST /expect len=6\nabcdef"


def test_expect_100_continue_ignored_for_http10(echo_server):
    # RFC 9110 10.1.1: a 100-continue expectation in an HTTP/1.0 request MUST be ignored.
    with echo_server.connect() as s:
        s.sendall(req("POST", "/expect10", {"Expect": "100-continue"}, body=b"abc", version="HTTP/1.0"))
        data = read_all(s)
    assert b" 100 " not in data.split(b"\r\n", 1)[0]
    assert len(status_lines(data)) == 1 and data.endswith(b"POST /expect10 len=3\nabc")


def test_unknown_expectation_is_417(echo_server, marker):
    # Gunicorn answers an Expect other than 100-continue with 417 Expectation Failed.
    _refused(echo_server, req("POST", "/", {"Expect": "something-else"}, body=b"abc"), marker, 417)


# ---------------------------------------------------------------------------- HEAD, HTTP/1.0

def test_head_has_get_headers_and_no_body(run_server, worker_args):
    srv = run_server(*worker_args, "h_apps:fixed")
    with srv.connect() as s:
        r = SocketReader(s)
        s.sendall(req("GET", "/"))
        gstatus, gheaders, gbody, _ = r.response()
    assert gstatus == 200 and len(gbody) == 64
    with srv.connect() as s:
        r = SocketReader(s)
        s.sendall(req("HEAD", "/"))
        status, headers, _ = r.head()
        assert status == 200
        assert headers["content-length"] == gheaders["content-length"] == "64"
        assert headers["content-type"] == gheaders["content-type"]
        assert headers["x-app"] == "fixed"
        assert "transfer-encoding" not in headers
        if headers.get("connection", "keep-alive").lower() == "keep-alive":
            s.sendall(req("GET", "/", {"Connection": "close"}))
            rest = read_all(s)
            assert (r.buf + rest).startswith(b"HTTP/1.1 200"), "HEAD response carried body bytes"
        else:
            assert r.buf + read_all(s) == b"", "HEAD response carried body bytes"


def test_http10_response_is_not_chunked(run_server, worker_args):
    srv = run_server(*worker_args, "h_apps:streaming")
    with srv.connect() as s:
        s.sendall(req("GET", "/", version="HTTP/1.0"))
        data = read_all(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")), head
    assert b"chunked" not in head.lower()
    assert body == b"part-0;part-1;part-2;part-3;part-4;"
    m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    assert m is None or int(m.group(1)) == len(body)


def test_http11_streaming_response_is_chunked(run_server, worker_args):
    srv = run_server(*worker_args, "h_apps:streaming")
    with srv.connect() as s:
        s.sendall(req("GET", "/", {"Connection": "close"}))
        status, headers, body, _ = SocketReader(s).response()
    assert status == 200
    assert headers.get("transfer-encoding", "").lower() == "chunked"
    assert body == b"part-0;part-1;part-2;part-3;part-4;"


# ---------------------------------------------------------------------------- Date, Server

def test_date_and_server_headers(run_server, worker_args):
    srv = run_server(*worker_args, "h_apps:fixed")
    with srv.connect() as s:
        s.sendall(req("GET", "/", {"Connection": "close"}))
        status, headers, _, _ = SocketReader(s).response()
    assert status == 200
    assert headers.get("server", "").strip()
    date = headers["date"]
    assert re.fullmatch(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct"
                        r"|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT", date), date
    when = email.utils.parsedate_to_datetime(date).timestamp()
    assert abs(when - time.time()) < 300


# ---------------------------------------------------------------------------- limits

def _refused(srv, raw: bytes, marker: Path, expected_status: int) -> bytes:
    """Sends `raw` then a pipelined valid request; checks one error answer, then the close."""
    with srv.connect() as s:
        s.sendall(raw + req("GET", "/after-error"))
        data = read_all(s)
    lines = status_lines(data)
    assert lines, f"no response; got {data[:300]!r}"
    assert int(lines[0].split()[1]) == expected_status, lines[0]
    assert len(lines) == 1, f"request after the refused one was answered: {lines}"
    assert marker_lines(marker) == [], "the refused request reached the application"
    return data


def test_request_line_over_default_limit(echo_server, marker):
    # Gunicorn answers a request line over --limit-request-line (4094) with 414 URI Too Long.
    path = "/" + "a" * 4100
    _refused(echo_server, req("GET", path), marker, 414)


def test_request_line_limit_setting(run_server, worker_args, marker):
    srv = run_server(*worker_args, "--limit-request-line", "100", "-e", f"MARKER={marker}", "h_apps:echo")
    # "GET <path> HTTP/1.1" of exactly 100 bytes is accepted, 101 is refused.
    ok_path = "/" + "b" * (100 - len("GET  HTTP/1.1") - 1)
    with srv.connect() as s:
        s.sendall(req("GET", ok_path, {"Connection": "close"}))
        status, _, body, _ = SocketReader(s).response()
    assert status == 200 and body.startswith(f"GET {ok_path} ".encode())
    marker.unlink(missing_ok=True)
    _refused(srv, req("GET", ok_path + "b"), marker, 414)


def test_too_many_header_fields_default_limit(echo_server, marker):
    # Gunicorn: more than --limit-request-fields (100) fields -> 431; 100 are fine.
    hundred = [(f"X-F{i}", "v") for i in range(98)] + [("Connection", "close")]  # + Host
    with echo_server.connect() as s:
        s.sendall(req("GET", "/hundred", hundred))
        assert SocketReader(s).response()[0] == 200
    marker.unlink(missing_ok=True)
    headers = [(f"X-F{i}", "v") for i in range(101)]
    _refused(echo_server, req("GET", "/many", headers), marker, 431)


def test_limit_request_fields_setting(run_server, worker_args, marker):
    srv = run_server(*worker_args, "--limit-request-fields", "5", "-e", f"MARKER={marker}", "h_apps:echo")
    five = [("Host", "x")] + [(f"X-F{i}", "v") for i in range(3)] + [("Connection", "close")]
    with srv.connect() as s:
        s.sendall(req("GET", "/five", five))
        assert SocketReader(s).response()[0] == 200
    marker.unlink(missing_ok=True)
    six = [("Host", "x")] + [(f"X-F{i}", "v") for i in range(5)]
    _refused(srv, req("GET", "/six", six), marker, 431)


def test_header_field_over_default_size(echo_server, marker):
    # Gunicorn: a field line over --limit-request-field_size (8190) -> 431.
    _refused(echo_server, req("GET", "/big", {"X-Big": "v" * 8200}), marker, 431)


def test_limit_request_field_size_setting(run_server, worker_args, marker):
    srv = run_server(*worker_args, "--limit-request-field_size", "50", "-e", f"MARKER={marker}",
                     "h_apps:echo")
    # Gunicorn counts the field line plus its CRLF: a 48-byte line fits in 50, 49 does not.
    ok_value = "v" * (48 - len("X-Long: "))
    with srv.connect() as s:
        s.sendall(req("GET", "/fits", {"X-Long": ok_value, "Connection": "close"}))
        assert SocketReader(s).response()[0] == 200
    marker.unlink(missing_ok=True)
    _refused(srv, req("GET", "/long", {"X-Long": ok_value + "v"}), marker, 431)


# ---------------------------------------------------------------------------- malformed requests

MALFORMED = {
    "bad-request-line": b"THIS IS NOT HTTP\r\n\r\n",
    "missing-version": b"GET /\r\nHost: x\r\n\r\n",
    "invalid-header-name": b"GET / HTTP/1.1\r\nHost: x\r\nBad{Name: v\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost: x\r\nX-Field : v\r\n\r\n",
    "no-colon": b"GET / HTTP/1.1\r\nHost: x\r\nJustAName\r\n\r\n",
    "cl-and-te": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\r\nhello\r\n0\r\n\r\n"),
    "bad-chunk-size": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "bad-content-length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "negative-content-length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    "duplicate-content-length": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
                                 b"hello!"),
    "nul-in-header": b"GET / HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
    # HTTP/1.2 is not here: Gunicorn serves any HTTP/1.x (and answers "HTTP/1.2 200 OK").
    "unknown-http-version-2.0": b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
    "unknown-http-version-0.9": b"GET / HTTP/0.9\r\nHost: x\r\n\r\n",
    "http-version-garbage": b"GET / HTTP/x.y\r\nHost: x\r\n\r\n",
    "duplicate-host": b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    "obsolete-line-folding": b"GET / HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n  b\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_request_refused(echo_server, marker, case):
    # Gunicorn answers each of these with 400 Bad Request and closes the connection.
    data = _refused(echo_server, MALFORMED[case], marker, 400)
    assert b"connection: close" in data.lower()


def test_unsupported_transfer_coding_is_501(echo_server, marker):
    # Gunicorn (RFC 9112 6.1): an unknown transfer coding is 501 Not Implemented.
    raw = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: foo, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    _refused(echo_server, raw, marker, 501)


# ---------------------------------------------------------------------------- targets and Host

# RFC 9112 section 3.2 and RFC 9110 sections 4.2, 7.2, 9.3.6: each must get 400 without reaching
# the application. Gunicorn 27.0.1 serves all but the repeated Host, authority-form and
# asterisk-form ones (see docs/migrating.md).
TARGET_HOST_REFUSED = {
    "http11-without-host": b"GET /hello HTTP/1.1\r\n\r\n",
    "http11-absolute-form-without-host": b"GET http://x/hello HTTP/1.1\r\n\r\n",
    "duplicate-host-http10": b"GET / HTTP/1.0\r\nHost: x\r\nHost: x\r\n\r\n",
    "host-with-space": b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    "host-with-path": b"GET / HTTP/1.1\r\nHost: x/y\r\n\r\n",
    "host-with-userinfo": b"GET / HTTP/1.1\r\nHost: u@x\r\n\r\n",
    "host-bad-port": b"GET / HTTP/1.1\r\nHost: x:80a\r\n\r\n",
    "host-unclosed-ipv6": b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
    "host-invalid-on-http10": b"GET / HTTP/1.0\r\nHost: a,b c\r\n\r\n",
    "absolute-form-invalid-scheme": b"GET 5ttp://x/hello HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute-form-other-scheme": b"GET ftp://x/hello HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute-form-empty-host": b"GET http:///hello HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute-form-port-only": b"GET http://:80/hello HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute-form-bad-port": b"GET http://x:8o/hello HTTP/1.1\r\nHost: x\r\n\r\n",
    "authority-form-not-connect": b"GET x:80 HTTP/1.1\r\nHost: x\r\n\r\n",
    "connect-without-port": b"CONNECT x HTTP/1.1\r\nHost: x\r\n\r\n",
    "connect-port-zero": b"CONNECT x:0 HTTP/1.1\r\nHost: x\r\n\r\n",
    "connect-origin-form": b"CONNECT /x HTTP/1.1\r\nHost: x\r\n\r\n",
    "asterisk-form-not-options": b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(TARGET_HOST_REFUSED))
def test_target_or_host_refused(echo_server, marker, case):
    data = _refused(echo_server, TARGET_HOST_REFUSED[case], marker, 400)
    assert re.search(rb"Missing Host|Invalid Host|Invalid request target|Invalid HTTP Header"
                     rb"|Invalid Request Line", data), data[-300:]


@pytest.mark.parametrize("raw, seen", [
    # HTTP/1.0 needs no Host.
    (b"GET /ten HTTP/1.0\r\n\r\n", b"GET /ten len=0"),
    # Empty, IPv6, registered names with sub-delims and an empty port are valid Host values.
    (b"GET /e HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n", b"GET /e len=0"),
    (b"GET /6 HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n", b"GET /6 len=0"),
    (b"GET /s HTTP/1.1\r\nHost: 0.0.0.0=5000:\r\nConnection: close\r\n\r\n", b"GET /s len=0"),
    (b"GET HTTPS://u:p@x:1/a?b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"GET /a?b len=0"),
    (b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"OPTIONS * len=0"),
    (b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", b"CONNECT  len=0"),
])
def test_valid_targets_and_hosts_served(echo_server, raw, seen):
    with echo_server.connect() as s:
        s.sendall(raw)
        status, _, body, _ = SocketReader(s).response()
    assert status == 200 and body.startswith(seen), body


def test_absolute_form_host_wins_over_host_field(run_server, worker_args, tmp_path):
    # RFC 9112 section 3.2.2: the target's host replaces the Host field, in HTTP_HOST and, on
    # a unix socket (where SERVER_NAME comes from the host, as in Gunicorn), in SERVER_NAME.
    sock_path = tmp_path / "app.sock"
    srv = run_server(*worker_args, "-b", "127.0.0.1:0", "-b", f"unix:{sock_path}", "w_apps:echo_environ")
    raw = b"GET http://target.example:81/p?q HTTP/1.1\r\nHost: field.example\r\nConnection: close\r\n\r\n"
    with srv.connect() as s:
        s.sendall(raw)
        status, _, body, _ = SocketReader(s).response()
    assert status == 200, body
    env = json.loads(body)
    assert env["HTTP_HOST"] == ["str", "target.example:81"]
    assert env["RAW_URI"] == ["str", "http://target.example:81/p?q"]
    assert env["PATH_INFO"] == ["str", "/p"] and env["QUERY_STRING"] == ["str", "q"]
    # TCP: SERVER_NAME/SERVER_PORT are the listener's, whatever the request says.
    assert env["SERVER_NAME"] == ["str", "127.0.0.1"]
    with connect_to(f"unix:{sock_path}") as s:
        s.sendall(raw)
        status, _, body, _ = SocketReader(s).response()
    assert status == 200, body
    env = json.loads(body)
    assert env["HTTP_HOST"] == ["str", "target.example:81"]
    assert env["SERVER_NAME"] == ["str", "target.example"] and env["SERVER_PORT"] == ["str", "81"]
    # HTTP/1.0 needs no Host: none is invented, but SERVER_NAME still follows the target.
    with connect_to(f"unix:{sock_path}") as s:
        s.sendall(b"GET http://target.example:82/p HTTP/1.0\r\n\r\n")
        status, _, body, _ = SocketReader(s).response()
    assert status == 200, body
    env = json.loads(body)
    assert "HTTP_HOST" not in env
    assert env["SERVER_NAME"] == ["str", "target.example"] and env["SERVER_PORT"] == ["str", "82"]
