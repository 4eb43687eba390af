"""The HTTP/1.1 upgrade to cleartext HTTP/2 (`Upgrade: h2c`, `--http2-cleartext upgrade`):
curl `--http2` and `nghttp -u`, which upgrade on an http:// URL, the `h2` package's
`initiate_upgrade_connection` on a raw socket, and the requests that must stay HTTP/1.1.
Apps in tests/apps/h2_apps.py."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time

import h2.config
import h2.connection
import h2.events
import pytest
from conftest import SocketReader, get, run_command
from test_tls import Certs

pytestmark = pytest.mark.timeout(120)

APP = "h2_apps:app"
UPGRADE = ["--http-protocols", "h2,h1", "--http2-cleartext", "upgrade"]
# curl's HTTP2-Settings: MAX_CONCURRENT_STREAMS 100, INITIAL_WINDOW_SIZE 33554432, ENABLE_PUSH 0.
SETTINGS = "AAMAAABkAAQCAAAAAAIAAAAA"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def curl(*args: str) -> subprocess.CompletedProcess:
    assert shutil.which("curl"), "curl is part of the test setup"
    return subprocess.run(["curl", "-sS", "--max-time", "30", *args], capture_output=True, timeout=60,
                          check=False, text=True)


def upgrade_request(path: str = "/env", extra: str = "", settings: str = SETTINGS) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            f"Upgrade: h2c\r\nHTTP2-Settings: {settings}\r\n{extra}\r\n").encode()


def http1_answer(server, request: bytes) -> tuple[bytes, bytes]:
    """Sends `request` on a new connection; the status line and the whole answer."""
    with server.connect() as s:
        s.sendall(request)
        reader = SocketReader(s)
        head = reader.read_until(b"\r\n\r\n")
        return head.split(b"\r\n", 1)[0], head + reader.buf


def test_curl_upgrades_and_keeps_the_connection(run_server, worker_args):
    server = run_server(*worker_args, *UPGRADE, APP)
    out = curl("--http2", "-v", "-H", "X-Test: yes", "-w", "\n%{http_version} %{num_connects}\n",
               f"{server.url}/env?q=1", f"{server.url}/env?q=2")
    assert out.returncode == 0, out.stderr
    assert "HTTP/1.1 101 Switching Protocols" in out.stderr, out.stderr
    # Both answered over HTTP/2, the second on the first one's connection.
    assert out.stdout.count("SERVER_PROTOCOL=HTTP/2.0") == 2, out.stdout
    assert "QUERY_STRING=q=1" in out.stdout and "QUERY_STRING=q=2" in out.stdout
    assert "HTTP_X_TEST=yes" in out.stdout
    assert f"HTTP_HOST={server.url.removeprefix('http://')}" in out.stdout
    assert out.stdout.splitlines()[-1] == "2 0", out.stdout
    assert "\n2 1\n" in out.stdout, out.stdout


def test_nghttp_upgrades(run_server, worker_args):
    assert shutil.which("nghttp"), "nghttp (Debian nghttp2-client) is part of the test setup"
    server = run_server(*worker_args, *UPGRADE, APP)
    out = subprocess.run(["nghttp", "-u", "-t", "30", f"{server.url}/env"], capture_output=True,
                         timeout=60, check=False, text=True)
    assert out.returncode == 0, out.stderr
    assert "SERVER_PROTOCOL=HTTP/2.0" in out.stdout, out.stdout


def test_h2_package_upgrade_then_more_streams(run_server, worker_args):
    server = run_server(*worker_args, *UPGRADE, APP)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    settings = conn.initiate_upgrade_connection().decode()
    with server.connect() as s:
        s.sendall(upgrade_request("/env?first", "X-Test: up\r\n", settings))
        reader = SocketReader(s)
        assert reader.read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 101 "), reader.buf
        # The preface and SETTINGS the upgrade queued, sent after the 101.
        s.sendall(conn.data_to_send())
        events = conn.receive_data(reader.buf)
        # A second stream on the upgraded connection, with a body.
        conn.send_headers(3, [(":method", "POST"), (":path", "/echo"), (":scheme", "http"),
                              (":authority", "localhost")])
        conn.send_data(3, b"ping", end_stream=True)
        s.sendall(conn.data_to_send())
        bodies: dict[int, bytes] = {1: b"", 3: b""}
        ended: set[int] = set()
        deadline = time.monotonic() + 30
        while ended != {1, 3} and time.monotonic() < deadline:
            for event in events:
                assert not isinstance(event, (h2.events.ConnectionTerminated, h2.events.StreamReset)), event
                if isinstance(event, h2.events.DataReceived):
                    bodies[event.stream_id] += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    ended.add(event.stream_id)
            s.sendall(conn.data_to_send())
            if ended != {1, 3}:
                data = s.recv(65536)
                assert data, f"closed; got {bodies}"
                events = conn.receive_data(data)
    assert ended == {1, 3}, bodies
    assert b"SERVER_PROTOCOL=HTTP/2.0" in bodies[1] and b"QUERY_STRING=first" in bodies[1], bodies[1]
    assert b"HTTP_X_TEST=up" in bodies[1]
    assert bodies[3] == f"4 {hashlib.sha256(b'ping').hexdigest()}".encode()


def test_an_upgrade_with_a_body_is_answered_over_http1(run_server, worker_args):
    server = run_server(*worker_args, *UPGRADE, APP)
    request = upgrade_request("/echo", "Content-Length: 4\r\nConnection: close\r\n") + b"ping"
    with server.connect() as s:
        s.sendall(request)
        answer = SocketReader(s).read_to_close()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
    assert f"4 {hashlib.sha256(b'ping').hexdigest()}".encode() in answer, answer


@pytest.mark.parametrize("settings", ["not*base64", "AAQAAP__AAIAAA", "AAIAAAAC"])
def test_a_bad_http2_settings_gets_400(run_server, settings):
    server = run_server(*UPGRADE, APP)
    line, answer = http1_answer(server, upgrade_request(settings=settings))
    assert line == b"HTTP/1.1 400 Bad Request", answer
    assert b"HTTP2-SETTINGS" in answer
    twice = upgrade_request(extra=f"HTTP2-Settings: {SETTINGS}\r\n")
    assert http1_answer(server, twice)[0] == b"HTTP/1.1 400 Bad Request"
    server.wait_for_line(r"Invalid request from ip=127\.0\.0\.1: Invalid HTTP Header: 'HTTP2-SETTINGS'")


def test_a_client_that_does_not_start_http2_is_closed(run_server):
    server = run_server(*UPGRADE, APP)
    with server.connect() as s:
        s.sendall(upgrade_request())
        reader = SocketReader(s)
        assert reader.read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 101 ")
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert reader.read_to_close() == b""
    assert get(server, "/env")[0] == 200


def test_untrusted_peers_are_not_upgraded(run_server):
    server = run_server(*UPGRADE, "--forwarded-allow-ips", "192.0.2.1", APP)
    out = curl("--http2", "-w", "\n%{http_version}\n", f"{server.url}/env")
    assert out.returncode == 0, out.stderr
    assert "SERVER_PROTOCOL=HTTP/1.1" in out.stdout and out.stdout.endswith("\n1.1\n"), out.stdout


def test_unix_socket_peers_are_upgraded(run_server, tmp_path):
    sock = tmp_path / "h2c.sock"
    server = run_server("-b", f"unix:{sock}", *UPGRADE, "--forwarded-allow-ips", "192.0.2.1", APP)
    out = curl("--http2", "--unix-socket", str(sock), "-w", "\n%{http_version}\n", "http://localhost/env")
    assert out.returncode == 0, out.stderr
    assert "SERVER_PROTOCOL=HTTP/2.0" in out.stdout and out.stdout.endswith("\n2\n"), out.stdout
    assert server.address.startswith("unix:")


def test_no_upgrade_over_tls(run_server, tmp_path):
    certs = Certs(tmp_path / "certs")
    server = run_server(*UPGRADE, *certs.args(), APP)
    # No ALPN: HTTP/1.1 over TLS, where h2c has no place (RFC 9113 section 3.2).
    with certs.client_context().wrap_socket(server.connect(), server_hostname="localhost") as s:
        s.sendall(upgrade_request(extra="Connection: close\r\n"))
        answer = SocketReader(s).read_to_close()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
    assert b"SERVER_PROTOCOL=HTTP/1.1" in answer and b"wsgi.url_scheme=https" in answer, answer


def test_prior_knowledge_alone_does_not_upgrade(run_server):
    server = run_server("--http-protocols", "h2,h1", "--http2-cleartext", "prior-knowledge", APP)
    # A trusted peer is expected to open with the preface: HTTP/1.1 400, no 101.
    assert http1_answer(server, upgrade_request())[0] == b"HTTP/1.1 400 Bad Request"
    untrusted = run_server("--http2-cleartext", "prior-knowledge", "--forwarded-allow-ips", "192.0.2.1",
                           "--http-protocols", "h2,h1", APP)
    out = curl("--http2", "-w", "\n%{http_version}\n", f"{untrusted.url}/env")
    assert out.stdout.endswith("\n1.1\n"), out.stdout


def test_no_upgrade_without_h2_offered(run_server):
    server = run_server("--http2-cleartext", "upgrade", APP)
    out = curl("--http2", "-w", "\n%{http_version}\n", f"{server.url}/env")
    assert "SERVER_PROTOCOL=HTTP/1.1" in out.stdout and out.stdout.endswith("\n1.1\n"), out.stdout


def test_both_takes_the_preface_and_the_upgrade(run_server, worker_args):
    server = run_server(*worker_args, "--http-protocols", "h2,h1", "--http2-cleartext", "both", APP)
    for how in ("--http2", "--http2-prior-knowledge"):
        out = curl(how, "-w", "\n%{http_version}\n", f"{server.url}/env")
        assert "SERVER_PROTOCOL=HTTP/2.0" in out.stdout and out.stdout.endswith("\n2\n"), (how, out.stdout)
    # Plain HTTP/1.1 from a trusted peer is served, since it may yet upgrade.
    status, _, body = get(server, "/env")
    assert status == 200 and b"SERVER_PROTOCOL=HTTP/1.1" in body


@pytest.mark.parametrize("value", ["upgrade", "both"])
def test_upgrade_and_both_pass_check_config(value, tmp_path):
    out = run_command(["--http-protocols", "h2,h1", "--http2-cleartext", value, "--check-config", APP],
                      cwd=tmp_path)
    assert out.returncode == 0, out.stdout


def test_asgi_upgrades_too(run_server):
    """The upgrade is the HTTP/1 driver's: an ASGI application's stream 1 and the next stream
    see HTTP/2 in their scope."""
    server = run_server("-k", "asgi", *UPGRADE, "asgi_h2_apps:app")
    out = curl("--http2", "-v", "-w", "\n%{http_version}\n", f"{server.url}/scope",
               f"{server.url}/scope")
    assert out.returncode == 0, out.stderr
    assert "HTTP/1.1 101 Switching Protocols" in out.stderr, out.stderr
    assert out.stdout.count('"http_version": "2"') == 2, out.stdout
