"""WebSocket keepalive pings and worker stops on the ASGI worker: a silent client is pinged and
closed with 1011 when it stops answering (uvicorn's `ws_ping_interval`/`ws_ping_timeout` map onto
the settings); a graceful stop or a retiring worker closes open connections with 1001, which the
application sees too; a fast stop just drops them."""

from __future__ import annotations

import re
import signal
import struct
import time

import pytest
from conftest import SocketReader, run_command
from test_asgi_websocket import frame, handshake, ws_url
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

pytestmark = pytest.mark.timeout(60)

APP = "ws_stop_apps:echo"


def opened(server) -> tuple:
    """A raw client connection after its `101`."""
    s = server.connect()
    s.sendall(handshake("/"))
    reader = SocketReader(s)
    assert reader.head()[0] == 101
    return s, reader


def next_frame(reader: SocketReader) -> tuple[int, bytes]:
    """The server's next frame: (opcode, payload); its frames here are all short."""
    first, second = reader.read_exact(2)
    n = second & 0x7F
    assert n < 126
    return first & 0x0F, reader.read_exact(n) if n else b""


def test_keepalive_pings_are_answered_or_the_client_is_closed_with_1011(run_server):
    srv = run_server("-k", "asgi", "--websocket-ping-interval", "1",
                     "--websocket-ping-timeout", "1", APP)
    s, reader = opened(srv)
    with s:
        # A client that answers keeps the connection through several intervals.
        for _ in range(2):
            assert next_frame(reader) == (0x9, b"")
            s.sendall(frame(0xA, b""))
        s.sendall(frame(0x1, b"still here"))
        assert next_frame(reader) == (0x1, b"still here")
        # One that stops answering is closed.
        assert next_frame(reader) == (0x9, b"")
        pinged = time.monotonic()
        opcode, payload = next_frame(reader)
        assert opcode == 0x8
        assert struct.unpack("!H", payload[:2])[0] == 1011
        assert payload[2:] == b"keepalive ping timeout"
        assert time.monotonic() - pinged < 5
        assert reader.read_to_close() == b""
    srv.wait_for_line("disconnect code 1006")


def test_uvicorn_ping_kwargs_become_the_settings():
    out = run_command(["--print-config", "-k", "asgi_ping_conf.PingWorker", "ws_stop_apps:echo"],
).stdout
    # 0.5 s rounds up to a whole second rather than down to 0 (never); None is never.
    assert re.search(r"^websocket_ping_interval\s*=\s*1$", out, re.M), out
    assert re.search(r"^websocket_ping_timeout\s*=\s*0$", out, re.M), out


def test_graceful_stop_closes_with_1001(run_server):
    srv = run_server("-k", "asgi", "--graceful-timeout", "10", APP)
    with connect(ws_url(srv), close_timeout=10) as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "hi"
        stopped = time.monotonic()
        srv.signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert ws.close_code == 1001
    assert srv.wait(15) == 0
    assert time.monotonic() - stopped < 10
    assert "disconnect code 1001" in srv.log


def test_retiring_worker_closes_with_1001(run_server):
    # The WebSocket is the first request, the plain GET the second: the worker retires.
    srv = run_server("-k", "asgi", "--max-requests", "2", APP)
    with connect(ws_url(srv), close_timeout=10) as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "hi"
        with srv.connect() as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            SocketReader(s).read_to_close()
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert ws.close_code == 1001
    srv.wait_for_line("disconnect code 1001")


def test_fast_stop_drops_the_connection(run_server):
    srv = run_server("-k", "asgi", APP)
    s, reader = opened(srv)
    with s:
        s.sendall(frame(0x1, b"hi"))
        assert next_frame(reader) == (0x1, b"hi")
        srv.signal(signal.SIGINT)
        assert reader.read_to_close() == b""
    assert srv.wait(15) == 0
