"""HTTP/2 over cleartext (h2c, prior knowledge): real clients (curl, httpx, h2load) and raw
frames built with the `h2` and `hpack` packages for the error and attack cases. Every attack
must end in a GOAWAY or a stream reset, with the server still answering and its memory
bounded. Apps in tests/apps/h2_apps.py."""

from __future__ import annotations

import hashlib
import re
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import hpack
import httpx
import pytest
from conftest import booted_worker_pids, get, run_command

pytestmark = pytest.mark.timeout(120)

APP = "h2_apps:app"
H2C = ["--http-protocols", "h2,h1", "--http2-cleartext", "prior-knowledge"]
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types and flags (RFC 9113 section 6).
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, CONTINUATION = 0, 1, 3, 4, 6, 7, 9
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
ENHANCE_YOUR_CALM, REFUSED_STREAM, CANCEL = 11, 7, 8


@pytest.fixture
def h2_server(run_server, worker_args):
    return run_server(*worker_args, *H2C, APP)


def curl(*args: str) -> subprocess.CompletedProcess:
    assert shutil.which("curl"), "curl is part of the test setup"
    return subprocess.run(["curl", "-sS", "--max-time", "30", *args], capture_output=True, timeout=60,
                          check=False)


def h2_client(server) -> httpx.Client:
    """An httpx client speaking HTTP/2 with prior knowledge (no HTTP/1 at all)."""
    return httpx.Client(base_url=server.url, http1=False, http2=True, timeout=30)


def h2_get(server, path: str) -> str:
    with h2_client(server) as client:
        return client.get(path).text


def worker_rss_kib(server) -> int:
    server.wait_for_line(r"Booting worker with pid")
    pid = booted_worker_pids(server)[-1]
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))


class Client:
    """A client on one connection driven by the `h2` package's state machine."""

    def __init__(self, server, prelude: bytes = b"") -> None:
        """`prelude`: bytes sent before the connection preface (a PROXY header)."""
        self.sock = server.connect()
        self.sock.sendall(prelude)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.flush()
        self.events: list[h2.events.Event] = []
        self.closed = False

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def request(self, path: str, method: str = "GET", headers: list[tuple[str, str]] | None = None,
                body: bytes = b"") -> int:
        sid = self.conn.get_next_available_stream_id()
        fields = [(":method", method), (":path", path), (":scheme", "http"), (":authority", "localhost"),
                  *(headers or [])]
        self.conn.send_headers(sid, fields, end_stream=not body)
        for start in range(0, len(body), 16384):
            self.conn.send_data(sid, body[start:start + 16384], end_stream=start + 16384 >= len(body))
        self.flush()
        return sid

    def wait(self, done, timeout: float = 30.0) -> list[h2.events.Event]:
        """Reads until `done(events)` holds or the server closes; fails past `timeout`."""
        deadline = time.monotonic() + timeout
        while not done(self.events) and not self.closed:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"no answer within {timeout}s; events: {self.events}") from None
            if not data:
                self.closed = True
                break
            for event in self.conn.receive_data(data):
                self.events.append(event)
                if isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            self.flush()
        return self.events

    def response(self, sid: int, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
        def ended(events):
            return any(isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and e.stream_id == sid
                       for e in events)

        self.wait(ended, timeout)
        status, headers, body = 0, {}, b""
        for e in self.events:
            if getattr(e, "stream_id", None) != sid:
                continue
            if isinstance(e, h2.events.ResponseReceived):
                headers = {k.decode(): v.decode() for k, v in e.headers}
                status = int(headers[":status"])
            elif isinstance(e, h2.events.DataReceived):
                body += e.data
        return status, headers, body

    def close(self) -> None:
        self.sock.close()


def test_curl_with_prior_knowledge(h2_server):
    out = curl("--http2-prior-knowledge", "-D", "-", "-H", "X-Test: yes", f"{h2_server.url}/env?q=1")
    assert out.returncode == 0, out.stderr
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/2 200"), head
    # The application's hop-by-hop header is not forwarded; HTTP/2 forbids it anyway.
    assert b"connection:" not in head.lower()
    assert b"server: ferrocorn" in head
    env = dict(line.split("=", 1) for line in body.decode().splitlines())
    assert env["SERVER_PROTOCOL"] == "HTTP/2.0"
    assert env["REQUEST_METHOD"] == "GET"
    assert env["QUERY_STRING"] == "q=1"
    assert env["HTTP_HOST"] == f"127.0.0.1:{h2_server.port}"
    assert env["HTTP_X_TEST"] == "yes"
    assert env["wsgi.url_scheme"] == "http"
    # The forwarded headers of a trusted peer count as on HTTP/1.
    out = curl("--http2-prior-knowledge", "-H", "X-Forwarded-Proto: https", f"{h2_server.url}/env")
    assert b"wsgi.url_scheme=https" in out.stdout, out.stdout


def test_a_proxy_header_comes_before_the_preface(run_server):
    server = run_server(*H2C, "--proxy-protocol", "v1", APP)
    client = Client(server, prelude=b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 443\r\n")
    status, _, body = client.response(client.request("/env"))
    client.close()
    assert status == 200
    assert "REMOTE_ADDR=203.0.113.7\nREMOTE_PORT=40000" in body.decode()


def test_httpx_bodies_both_ways(h2_server, tmp_path):
    upload = bytes(range(256)) * 12_000  # 3 MB: past the body buffer, so it streams on gthread
    data = tmp_path / "data.bin"
    data.write_bytes(upload[:1_000_000])
    with h2_client(h2_server) as client:
        r = client.get("/env")
        assert r.http_version == "HTTP/2"
        assert "SERVER_PROTOCOL=HTTP/2.0" in r.text
        r = client.post("/echo", content=upload)
        assert r.status_code == 200
        assert r.text == f"{len(upload)} {hashlib.sha256(upload).hexdigest()}"
        # A body without Content-Length ends with its stream.
        r = client.post("/echo", content=iter([upload[:70_000], upload[70_000:100_000]]))
        assert r.text == f"100000 {hashlib.sha256(upload[:100_000]).hexdigest()}"
        r = client.get("/big?5000000")
        assert r.headers["content-length"] == "5000000"
        assert r.content == b"x" * 5_000_000
        assert client.get("/write").content == b"w" * 400_000
        assert client.get(f"/file?{data}").content == upload[:1_000_000]
        r = client.head("/big?10")
        assert (r.status_code, r.headers["content-length"], r.content) == (200, "10", b"")
        # The application failing before its response: an error answer on the stream.
        r = client.get("/fail")
        assert r.status_code == 500
        # The connection survived all of it.
        assert client.get("/").text == "Hello, World!"


def test_h2load_many_streams_on_many_connections(h2_server):
    assert shutil.which("h2load"), "h2load (Debian nghttp2-client) is part of the test setup"
    out = subprocess.run(["h2load", "-n", "1000", "-c", "10", "-m", "10", f"{h2_server.url}/"],
                         capture_output=True, text=True, timeout=90, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "requests: 1000 total, 1000 started, 1000 done, 1000 succeeded" in out.stdout, out.stdout
    assert "status codes: 1000 2xx" in out.stdout, out.stdout


def test_gthread_serves_the_streams_of_one_connection_together(run_server):
    server = run_server("-k", "gthread", "--threads", "4", *H2C, APP)
    client = Client(server)
    first, second = client.request("/meet"), client.request("/meet")
    # Each finishes only once the other is in the application too.
    assert client.response(first)[::2] == (200, b"met")
    assert client.response(second)[::2] == (200, b"met")
    client.close()


def test_sync_serves_the_streams_of_one_connection_in_turn(run_server):
    server = run_server("-k", "sync", *H2C, APP)
    client = Client(server)
    sids = [client.request("/echo", method="POST", body=b"a" * n) for n in (10, 50_000, 0)]
    bodies = [client.response(sid)[2] for sid in sids]
    assert bodies == [f"{n} {hashlib.sha256(b'a' * n).hexdigest()}".encode() for n in (10, 50_000, 0)]
    client.close()


def test_a_client_expecting_100_continue_gets_it(h2_server):
    client = Client(h2_server)
    sid = client.conn.get_next_available_stream_id()
    client.conn.send_headers(sid, [(":method", "POST"), (":path", "/echo"), (":scheme", "http"),
                                   (":authority", "localhost"), ("expect", "100-continue")])
    client.flush()
    client.wait(lambda events: any(isinstance(e, h2.events.InformationalResponseReceived) for e in events))
    client.conn.send_data(sid, b"body", end_stream=True)
    client.flush()
    assert client.response(sid)[::2] == (200, f"4 {hashlib.sha256(b'body').hexdigest()}".encode())
    client.close()


def test_early_hints_are_an_informational_headers_frame(h2_server):
    client = Client(h2_server)
    sid = client.request("/hints")
    status, _, body = client.response(sid)
    assert (status, body) == (200, b"hinted")
    kinds = [type(e).__name__ for e in client.events if getattr(e, "stream_id", None) == sid]
    assert kinds.index("InformationalResponseReceived") < kinds.index("ResponseReceived")
    hint = next(e for e in client.events if isinstance(e, h2.events.InformationalResponseReceived))
    assert dict(hint.headers) == {b":status": b"103", b"link": b"</s.css>; rel=preload; as=style"}
    client.close()


def test_peers_not_trusted_get_no_h2c(run_server):
    server = run_server(*H2C, "--forwarded-allow-ips", "192.0.2.1", APP)
    with server.connect() as s:
        s.sendall(PREFACE)
        answer = s.recv(4096)
    # Spoken to in HTTP/1, where the preface is no request.
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:100]
    assert get(server, "/")[0] == 200


def test_unix_socket_peers_get_h2c(run_server, tmp_path):
    sock = tmp_path / "h2.sock"
    server = run_server("-b", f"unix:{sock}", *H2C, "--forwarded-allow-ips", "192.0.2.1", APP)
    assert server.address.startswith("unix:")
    out = curl("--http2-prior-knowledge", "--unix-socket", str(sock), "http://localhost/env")
    assert out.returncode == 0, out.stderr
    assert b"SERVER_PROTOCOL=HTTP/2.0" in out.stdout


def test_prior_knowledge_alone_refuses_http1_from_trusted_peers(run_server):
    server = run_server(*H2C, APP)
    assert get(server, "/")[0] == 400
    # With h2c off, the preface is only a bad HTTP/1 request.
    plain = run_server(APP)
    with plain.connect() as s:
        s.sendall(PREFACE)
        assert s.recv(4096).startswith(b"HTTP/1.1 400 ")
    assert get(plain, "/")[0] == 200


def test_a_stopping_worker_sends_goaway_and_finishes_streams(run_server):
    server = run_server("-k", "gthread", "--threads", "4", "--keep-alive", "60", *H2C, APP)
    raw = Raw(server)
    # A request whose body is still to come, under way as the stop begins.
    raw.send(frame(HEADERS, END_HEADERS, 1, raw.block("/echo")))
    server.signal(signal.SIGTERM)
    assert raw.goaway() == 0  # NO_ERROR: the stream under way is still served
    raw.send(frame(DATA, END_STREAM, 1, b"late"))
    head = raw.read_until(lambda f: f[0] == HEADERS and f[2] == 1)
    assert head is not None and dict(hpack.Decoder().decode(head[3]))[":status"] == "200"
    data = raw.read_until(lambda f: f[0] == DATA and f[2] == 1)
    assert data is not None and data[3] == f"4 {hashlib.sha256(b'late').hexdigest()}".encode()
    raw.close()
    assert server.wait(timeout=30) == 0


def test_an_idle_connection_gets_goaway_after_the_keep_alive(run_server):
    server = run_server(*H2C, "--keep-alive", "1", APP)
    raw = Raw(server)
    started = time.monotonic()
    assert raw.goaway(timeout=10) == 0
    assert time.monotonic() - started >= 0.5
    assert raw.read_until(lambda f: False, timeout=10) is None  # then the connection ends
    raw.close()


def test_h2_without_a_way_to_speak_it_is_warned_of(tmp_path):
    out = run_command(["--http-protocols", "h2,h1", "--check-config", APP], cwd=tmp_path)
    assert out.returncode == 0, out.stdout
    assert ("Warning: http_protocols includes h2 but there is no TLS and http2_cleartext is off, "
            "so HTTP/2 will never be negotiated.") in out.stdout


def test_request_limits_apply_to_streams(run_server, worker_args):
    server = run_server(*worker_args, *H2C, "--limit-request-line", "40", "--limit-request-fields", "4",
                        "--limit-request-field_size", "200", APP)
    client = Client(server)
    long_path = client.request("/" + "p" * 60)
    many = client.request("/", headers=[(f"x-{i}", "v") for i in range(6)])
    wide = client.request("/", headers=[("x-wide", "v" * 300)])
    assert client.response(long_path)[0] == 414
    assert client.response(many)[0] in (400, 431)
    assert client.response(wide)[0] in (400, 431)
    # None of them reached the application: this is its first call.
    assert client.response(client.request("/calls"))[2] == b"1"
    client.close()


# --- Attacks, on raw frames ----------------------------------------------------------------------


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


class Raw:
    """A connection speaking raw frames: preface, SETTINGS, and the server's SETTINGS acknowledged
    (so the limits it announced are in force)."""

    def __init__(self, server) -> None:
        self.sock = server.connect()
        self.buf = b""
        self.frames: list[tuple[int, int, int, bytes]] = []
        self.checked = 0  # frames read_until has looked at
        self.closed = False
        self.encoder = hpack.Encoder()
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
        settings = self.read_until(lambda f: f[0] == SETTINGS and not f[1] & ACK)
        assert settings, "the server sends its SETTINGS first"
        self.sock.sendall(frame(SETTINGS, ACK, 0))

    def block(self, path: str = "/", extra: list[tuple[str, str]] | None = None) -> bytes:
        return self.encoder.encode([(":method", "GET"), (":path", path), (":scheme", "http"),
                                    (":authority", "localhost"), *(extra or [])])

    def send(self, data: bytes) -> bool:
        """Sends what the server takes within a few seconds; False if it closed or stopped reading."""
        self.sock.settimeout(5)
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            return False
        return True

    def read_until(self, match, timeout: float = 15.0):
        """Reads frames until one not seen before satisfies `match` (returned) or the
        connection closes (None)."""
        deadline = time.monotonic() + timeout
        seen = self.checked
        while True:
            self.parse()
            for f in self.frames[seen:]:
                seen += 1
                if match(f):
                    self.checked = seen
                    return f
            self.checked = seen
            if self.closed:
                return None
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"nothing matching within {timeout}s; frames: {[f[:3] for f in self.frames]}"
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            self.closed = not data
            self.buf += data

    def flood(self, frames: list[bytes], batch: int = 500) -> int | None:
        """Sends `frames` in batches until the server's GOAWAY arrives (its error code is
        returned) or the connection ends (None). Looking between batches keeps the GOAWAY
        from being lost to the reset that closing with our bytes unread would cause."""
        for start in range(0, len(frames), batch):
            if not self.send(b"".join(frames[start:start + batch])) or self.goaway_seen(0.2):
                break
        return self.goaway()

    def goaway_seen(self, wait: float) -> bool:
        """Reads what arrives within `wait` seconds; whether a GOAWAY (or the end) came."""
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            data = None
        except ConnectionResetError:
            data = b""
        if data is not None:
            self.buf += data
            self.closed = not data
        self.parse()
        return self.closed or any(f[0] == GOAWAY for f in self.frames)

    def parse(self) -> None:
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + length:
                return
            self.frames.append((self.buf[3], self.buf[4], int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF,
                                self.buf[9:9 + length]))
            self.buf = self.buf[9 + length:]

    def goaway(self, timeout: float = 15.0) -> int | None:
        """The error code of the server's GOAWAY, or None if it closed without one."""
        f = self.read_until(lambda f: f[0] == GOAWAY, timeout)
        return None if f is None else int.from_bytes(f[3][4:8], "big")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def guarded(run_server):
    """A server with small HTTP/2 limits, to be attacked."""
    return run_server("-k", "gthread", "--threads", "4", *H2C, "--http2-max-concurrent-streams", "5",
                      "--http2-max-header-list-size", "4096", APP)


def assert_healthy(server, rss_before: int) -> None:
    assert h2_get(server, "/") == "Hello, World!"
    # Bounded: the attack left no lasting growth (a few MiB of allocator slack at most).
    assert worker_rss_kib(server) - rss_before < 64 * 1024


def test_rapid_reset_gets_goaway(guarded):
    rss = worker_rss_kib(guarded)
    raw = Raw(guarded)
    burst = [frame(HEADERS, END_HEADERS | END_STREAM, sid, raw.block("/"))
             + frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL)) for sid in range(1, 4001, 2)]
    assert raw.flood(burst) == ENHANCE_YOUR_CALM
    raw.close()
    calls = h2_get(guarded, "/calls")
    assert int(calls) < 200, calls
    assert_healthy(guarded, rss)


def test_continuation_flood_gets_goaway(guarded):
    rss = worker_rss_kib(guarded)
    raw = Raw(guarded)
    start = frame(HEADERS, END_STREAM, 1, raw.block("/"))
    piece = hpack.Encoder().encode([("x-flood", "0123456789")])
    # The header block never ends: without a bound on its CONTINUATION frames (or on its
    # size) the server would buffer it for as long as the client sends.
    flood = [frame(CONTINUATION, 0, 1, piece) for _ in range(20_000)]
    assert raw.flood([start, *flood]) == ENHANCE_YOUR_CALM
    raw.close()
    assert_healthy(guarded, rss)


@pytest.mark.parametrize("kind", ["settings", "ping"])
def test_control_frame_flood_stays_bounded(guarded, kind):
    rss = worker_rss_kib(guarded)
    raw = Raw(guarded)
    one = frame(SETTINGS, 0, 0) if kind == "settings" else frame(PING, 0, 0, b"12345678")
    # 100,000 frames, not reading the acknowledgements: the server must not queue them all.
    sent = 0
    while sent < 100 and raw.send(one * 1000):
        sent += 1
    raw.close()
    assert_healthy(guarded, rss)


def test_streams_past_the_limit_are_refused(guarded):
    raw = Raw(guarded)
    # Eight requests whose bodies never come, so each stream stays open.
    raw.send(b"".join(frame(HEADERS, END_HEADERS, sid, raw.block("/echo")) for sid in range(1, 17, 2)))
    refused = set()
    while len(refused) < 3:
        f = raw.read_until(lambda f: f[0] in (RST_STREAM, GOAWAY))
        assert f is not None and f[0] == RST_STREAM, raw.frames
        assert int.from_bytes(f[3], "big") == REFUSED_STREAM
        refused.add(f[2])
    assert min(refused) > 9  # the first five were taken
    raw.close()


def test_oversize_header_list_is_refused(guarded):
    raw = Raw(guarded)
    raw.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, raw.block("/", [("x-big", "b" * 5000)])))
    f = raw.read_until(lambda f: f[2] == 1 and f[0] in (HEADERS, RST_STREAM))
    assert f is not None
    if f[0] == HEADERS:
        assert dict(hpack.Decoder().decode(f[3]))[":status"] == "431"
    raw.close()
    assert h2_get(guarded, "/calls") == "1"
