"""The ASGI worker over HTTP/2 (TLS with ALPN, and cleartext prior knowledge): streams of one
connection served at once by the event loop, bodies under flow control, disconnects, GOAWAY on
stop; `http.response.informational` and `http.response.trailers` on HTTP/2 and HTTP/1.1; and
Gunicorn's `gunicorn.http2.send_trailers` for WSGI on HTTP/2. Apps in
tests/apps/asgi_h2_apps.py."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import h2.errors
import h2.events
import httpx
import pytest
from conftest import SocketReader, read_all, req, wait_until
from test_http2 import DATA, END_HEADERS, END_STREAM, H2C, HEADERS, Client, Raw, frame
from test_tls import Certs

pytestmark = pytest.mark.timeout(120)

APP = "asgi_h2_apps:app"
ASGI = ["-k", "asgi"]


@pytest.fixture(params=["asyncio", "uvloop"])
def h2c(request, run_server):
    return run_server(*ASGI, "--asgi-loop", request.param, *H2C, APP)


def stream_events(client: Client, sid: int) -> list[h2.events.Event]:
    return [e for e in client.events if getattr(e, "stream_id", None) == sid]


def test_httpx_over_tls_with_alpn_h2(run_server, tmp_path: Path):
    certs = Certs(tmp_path / "certs")
    srv = run_server(*ASGI, *certs.args(), "--http-protocols", "h2,h1", APP)
    base = f"https://localhost:{srv.port}"
    with httpx.Client(verify=certs.client_context(), http1=False, http2=True, timeout=20) as client:
        r = client.get(f"{base}/scope")
        assert r.http_version == "HTTP/2"
        assert r.json() == {"http_version": "2", "scheme": "https", "extensions": {"http.response.trailers": {}}}
        body = os.urandom(300_000)
        r = client.post(f"{base}/echo", content=body)
        assert r.json() == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        r = client.get(f"{base}/stream")
        assert "content-length" not in r.headers
        assert r.content == b"".join(b"%d," % i * 1000 for i in range(50)) + b"end"
    load = subprocess.run(["h2load", "-n", "200", "-c", "4", "-m", "10", f"https://127.0.0.1:{srv.port}/scope"],
                          capture_output=True, timeout=60, text=True, check=False)
    assert "200 succeeded, 0 failed, 0 errored" in load.stdout, load.stdout + load.stderr


def test_httpx_with_prior_knowledge(h2c):
    with httpx.Client(base_url=h2c.url, http1=False, http2=True, timeout=20) as client:
        r = client.get("/scope")
        assert r.http_version == "HTTP/2"
        assert r.json() == {"http_version": "2", "scheme": "http", "extensions": {"http.response.trailers": {}}}
        # Past the stream's initial window many times over: only flow control lets it through.
        body = os.urandom(2_000_000)
        r = client.post("/echo", content=body)
        assert r.json() == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        r = client.get("/stream")
        assert r.headers.get("content-length") is None and r.content.endswith(b"49,end")


def test_h2load_short_run(h2c):
    load = subprocess.run(["h2load", "-n", "300", "-c", "3", "-m", "10", f"{h2c.url}/scope"],
                          capture_output=True, timeout=60, text=True, check=False)
    assert "300 succeeded, 0 failed, 0 errored" in load.stdout, load.stdout + load.stderr


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_streams_of_one_connection_run_at_once(run_server, loop):
    # One connection counts once against --worker-connections, however many streams it has.
    server = run_server(*ASGI, "--asgi-loop", loop, *H2C, "--worker-connections", "1", APP)
    client = Client(server)
    started = time.monotonic()
    sids = [client.request("/sleep?ms=1000") for _ in range(10)]
    peaks = [client.response(sid) for sid in sids]
    elapsed = time.monotonic() - started
    assert [status for status, _, _ in peaks] == [200] * 10
    # Every request was in the application at once at some point, and the ten one-second
    # waits overlapped.
    assert max(int(body.decode().split(":")[1].strip(" }")) for _, _, body in peaks) == 10
    assert elapsed < 5, elapsed
    client.close()


def test_a_reset_stream_is_a_disconnect_for_the_app(h2c):
    client = Client(h2c)
    sid = client.request("/wait-disconnect")
    client.wait(lambda events: any(isinstance(e, h2.events.DataReceived) for e in events))
    client.conn.reset_stream(sid)
    client.flush()

    def disconnects() -> int:
        asked = client.request("/disconnects")
        return int(client.response(asked)[2].decode().split(":")[1].strip(" }"))

    wait_until(lambda: disconnects() == 1, timeout=10, message="http.disconnect after RST_STREAM")
    # The connection itself lost nothing.
    assert client.response(client.request("/scope"))[0] == 200
    client.close()


def test_a_lost_connection_is_a_disconnect_for_its_streams(h2c):
    client = Client(h2c)
    for _ in range(3):
        client.request("/wait-disconnect")
    client.wait(lambda events: sum(isinstance(e, h2.events.DataReceived) for e in events) >= 3)
    client.close()
    with httpx.Client(base_url=h2c.url, http1=False, http2=True, timeout=20) as other:
        wait_until(lambda: other.get("/disconnects").json()["disconnects"] == 3, timeout=10,
                   message="http.disconnect for each stream of a closed connection")


@pytest.mark.parametrize("kind", ["raise", "return", "short", "unsent"])
def test_a_response_cut_short_resets_its_stream(h2c, kind):
    client = Client(h2c)
    sid = client.request(f"/cut?{kind}")
    client.response(sid)
    events = stream_events(client, sid)
    resets = [e for e in events if isinstance(e, h2.events.StreamReset)]
    assert len(resets) == 1 and resets[0].error_code == h2.errors.ErrorCodes.INTERNAL_ERROR, events
    assert not any(isinstance(e, h2.events.StreamEnded) for e in events), events
    if kind != "unsent":
        assert b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived)) == b"partial"
    # The connection goes on.
    assert client.response(client.request("/scope"))[0] == 200
    client.close()


def test_a_stopping_worker_sends_goaway_and_finishes_streams(run_server):
    server = run_server(*ASGI, *H2C, "--keep-alive", "60", APP)
    raw = Raw(server)
    # A request whose body is still to come, under way as the stop begins.
    raw.send(frame(HEADERS, END_HEADERS, 1, raw.encoder.encode(
        [(":method", "POST"), (":path", "/echo"), (":scheme", "http"), (":authority", "localhost")])))
    server.signal(signal.SIGTERM)
    assert raw.goaway() == 0  # NO_ERROR: the stream under way is still served
    raw.send(frame(DATA, END_STREAM, 1, b"late"))
    data = raw.read_until(lambda f: f[0] == DATA and f[2] == 1)
    assert data is not None and hashlib.sha256(b"late").hexdigest().encode() in data[3]
    raw.close()
    assert server.wait(timeout=30) == 0


def test_request_limits_apply_to_asgi_streams(run_server):
    server = run_server(*ASGI, *H2C, "--limit-request-line", "40", "--limit-request-fields", "4", APP)
    client = Client(server)
    assert client.response(client.request("/" + "p" * 60))[0] == 414
    assert client.response(client.request("/scope", headers=[(f"x-{i}", "v") for i in range(6)]))[0] in (400, 431)
    # The connection and its other streams go on.
    assert client.response(client.request("/scope"))[0] == 200
    client.close()


def test_http2_is_accepted_with_the_asgi_worker(run_server):
    server = run_server(*ASGI, "--http-protocols", "h2,h1", APP)
    # Without TLS or prior knowledge, HTTP/1.1 as before.
    with server.connect() as s:
        s.sendall(req("GET", "/scope", {"Connection": "close"}))
        status, _, body, _ = SocketReader(s).response()
    assert status == 200 and b'"http_version": "1.1"' in body and b'"extensions": null' in body


# --- http.response.informational -----------------------------------------------------------------


def test_informational_is_a_headers_frame_on_http2(h2c):
    client = Client(h2c)
    sid = client.request("/hints", method="POST", body=b"body")
    status, _, body = client.response(sid)
    assert (status, body) == (200, b"hinted body")
    kinds = [type(e).__name__ for e in stream_events(client, sid)]
    assert kinds.index("InformationalResponseReceived") < kinds.index("ResponseReceived"), kinds
    hint = next(e for e in client.events if isinstance(e, h2.events.InformationalResponseReceived))
    assert dict(hint.headers) == {b":status": b"103", b"link": b"</s.css>; rel=preload; as=style"}
    client.close()


def test_informational_is_sent_at_once_on_http11(run_server):
    # Bodies past one byte are not awaited before the application runs.
    server = run_server(*ASGI, "--body-buffer-size", "1", APP)
    with server.connect() as s:
        s.sendall(req("POST", "/hints", {"Content-Length": "4"}) + b"b")
        r = SocketReader(s)
        status, headers, raw = r.head()
        assert raw == b"HTTP/1.1 103 Early Hints\r\nlink: </s.css>; rel=preload; as=style\r\n\r\n"
        # The application still waits for the body: the hint went out at once.
        s.sendall(b"ody")
        status, _, body, _ = r.response()
    assert (status, body) == (200, b"hinted body")


def test_no_informational_for_http10(run_server):
    server = run_server(*ASGI, APP)
    with server.connect() as s:
        s.sendall(req("POST", "/hints", {"Content-Length": "4"}, b"body", version="HTTP/1.0"))
        data = read_all(s)
    assert data.startswith(b"HTTP/1.0 200 OK\r\n") and b"103" not in data, data[:300]
    assert data.endswith(b"hinted body")


@pytest.mark.parametrize(("query", "refusal"), [
    ("late", b"refused: Informational response after response start"),
    ("switch", b"refused: invalid informational status 101"),
])
def test_bad_informational_is_refused(run_server, query, refusal):
    server = run_server(*ASGI, APP)
    with server.connect() as s:
        s.sendall(req("GET", f"/bad-hint?{query}", {"Connection": "close"}))
        r = SocketReader(s)
        status, _, body, raw = r.response()
        assert r.read_to_close() == b""
    assert status == 200 and body.startswith(refusal), raw


# --- http.response.trailers ----------------------------------------------------------------------


def test_trailers_end_the_stream_on_http2(h2c):
    client = Client(h2c)
    sid = client.request("/trailers")
    status, _, body = client.response(sid)
    assert (status, body) == (200, b"part one, part two")
    events = stream_events(client, sid)
    trailers = [e for e in events if isinstance(e, h2.events.TrailersReceived)]
    assert len(trailers) == 1 and dict(trailers[0].headers) == {b"x-checksum": b"abc123", b"x-status": b"done"}
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("TrailersReceived") > max(i for i, k in enumerate(kinds) if k == "DataReceived")
    # The trailers carried END_STREAM: no DATA frame ended the stream.
    assert not any(isinstance(e, h2.events.DataReceived) and e.stream_ended for e in events)
    client.close()


def test_trailers_are_declined_on_http11(run_server):
    server = run_server(*ASGI, APP)
    with server.connect() as s:
        s.sendall(req("GET", "/trailers", {"TE": "trailers", "Connection": "close"}))
        data = read_all(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head, head
    # The chunked body ends with no trailer section.
    assert body.endswith(b"0\r\n\r\n") and b"x-checksum" not in data, body


@pytest.mark.parametrize("worker", [["-k", "sync"], ["-k", "gthread", "--threads", "2"]])
def test_wsgi_sends_trailers_as_gunicorn_offers_them_on_http2(run_server, worker):
    server = run_server(*worker, *H2C, "asgi_h2_apps:wsgi_app")
    client = Client(server)
    sid = client.request("/")
    status, _, body = client.response(sid)
    assert (status, body) == (200, b"offered")
    trailers = [e for e in stream_events(client, sid) if isinstance(e, h2.events.TrailersReceived)]
    assert len(trailers) == 1 and dict(trailers[0].headers) == {b"x-checksum": b"abc123", b"x-status": b"done"}
    client.close()
    plain = run_server(*worker, "asgi_h2_apps:wsgi_app")
    with plain.connect() as s:
        s.sendall(req("GET", "/", {"Connection": "close"}))
        assert read_all(s).endswith(b"\r\n\r\nB\r\nnot offered\r\n0\r\n\r\n")

