"""WebSocket on the ASGI worker (`-k asgi`): the scope, the handshake, messages both ways with
and without compression, close codes, protocol errors from a raw client, and Starlette."""

from __future__ import annotations

import base64
import os
import struct

import pytest
from conftest import SocketReader
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["asyncio", "uvloop"])
def asgi_loop(request) -> str:
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    return request.param


@pytest.fixture
def server(run_server, asgi_loop):
    return run_server("-k", "asgi", "--asgi-loop", asgi_loop,
                      "--websocket-max-message-size", "1048576", "ws_apps:echo")


def ws_url(server, path: str = "/") -> str:
    host, port = server.host_port
    return f"ws://{host}:{port}{path}"


@pytest.mark.parametrize("compression", ["deflate", None])
def test_echo_text_bytes_and_large(server, compression):
    with connect(ws_url(server, "/echo"), compression=compression, max_size=None) as ws:
        assert ws.response.headers["x-accepted"] == "yes"
        extensions = ws.response.headers.get("sec-websocket-extensions", "")
        assert ("permessage-deflate" in extensions) == (compression is not None)
        ws.send("héllo")
        assert ws.recv(timeout=10) == "héllo"
        ws.send(b"\x00\xffbin")
        assert ws.recv(timeout=10) == b"\x00\xffbin"
        large = os.urandom(600_000)
        ws.send(large)
        assert ws.recv(timeout=10) == large
        ws.close()
    assert ws.close_code == 1000


def test_close_after_a_reply_past_the_output_limit(server):
    # The driver reads nothing while 256 KiB of output wait; once written, it reads again.
    with connect(ws_url(server, "/echo"), compression=None, max_size=None, close_timeout=3) as ws:
        large = os.urandom(300_000)
        ws.send(large)
        assert ws.recv(timeout=10) == large
        ws.close()
    assert ws.close_code == 1000


def test_scope_and_subprotocol(server):
    with connect(ws_url(server, "/scope?x=1"), subprotocols=["chat.v2", "chat.v1"]) as ws:
        assert ws.subprotocol == "chat.v2"
        shown = dict(eval(ws.recv(timeout=10)))  # noqa: S307 - repr of our own scope
    assert shown["type"] == "websocket"
    assert shown["scheme"] == "ws"
    assert shown["path"] == "/scope"
    assert shown["raw_path"] == "/scope"
    assert shown["query_string"] == "x=1"
    assert shown["root_path"] == ""
    assert shown["subprotocols"] == ["chat.v2", "chat.v1"]
    assert shown["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert shown["client"][0] == "127.0.0.1"
    assert shown["server"][1] == server.port
    assert "method" not in shown


def test_app_closes_with_code(server):
    with connect(ws_url(server, "/close/4001")) as ws:
        ws.send("x")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert ws.close_code == 4001
    assert ws.close_reason == "bye"


def test_app_returns_without_closing_is_1011(server):
    with connect(ws_url(server, "/return")) as ws:
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert ws.close_code == 1011


def handshake(path: str = "/", version: str = "13", key: bool = True) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: localhost", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Version: {version}"]
    if key:
        lines.append("Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)).decode())
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_close_before_accept_is_403(server):
    with server.connect() as s:
        s.sendall(handshake("/refuse"))
        status, _, _, _ = SocketReader(s).response()
    assert status == 403


@pytest.mark.parametrize(("kwargs", "status"), [({"version": "8"}, 426), ({"key": False}, 400)])
def test_bad_handshake_never_reaches_app(server, kwargs, status):
    with server.connect() as s:
        s.sendall(handshake("/scope", **kwargs))
        got, headers, _, _ = SocketReader(s).response()
    assert got == status
    if status == 426:
        assert headers["sec-websocket-version"] == "13"


def frame(opcode: int, payload: bytes, masked: bool = True, fin: bool = True) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_code_after(server, data: bytes) -> int:
    """Opens a raw connection, sends `data` as frames, and returns the server's close code."""
    with server.connect() as s:
        s.sendall(handshake("/echo"))
        reader = SocketReader(s)
        status, _, _ = reader.head()
        assert status == 101
        s.sendall(data)
        while True:
            first, second = reader.read_exact(2)
            n = second & 0x7F
            if n == 126:
                n = struct.unpack("!H", reader.read_exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", reader.read_exact(8))[0]
            payload = reader.read_exact(n) if n else b""
            if first & 0x0F == 0x8:
                return struct.unpack("!H", payload[:2])[0]


def test_protocol_errors_close_with_their_codes(server):
    assert close_code_after(server, frame(0x1, b"hi", masked=False)) == 1002
    assert close_code_after(server, frame(0x1, b"\xff\xfe")) == 1007
    # Only the head of the oversize frame: its length alone is refused.
    oversize = bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 1048576 + 1) + os.urandom(4)
    assert close_code_after(server, oversize) == 1009


def test_client_close_code_reaches_app_and_is_echoed(server):
    with server.connect() as s:
        s.sendall(handshake("/echo"))
        reader = SocketReader(s)
        assert reader.head()[0] == 101
        s.sendall(frame(0x8, struct.pack("!H", 4321) + b"done"))
        first, second = reader.read_exact(2)
        payload = reader.read_exact(second & 0x7F)
    assert first & 0x0F == 0x8
    assert struct.unpack("!H", payload[:2])[0] == 4321


def test_starlette_websocket(run_server, asgi_loop):
    srv = run_server("-k", "asgi", "--asgi-loop", asgi_loop, "ws_apps:starlette_app")
    with connect(ws_url(srv, "/ws")) as ws:
        ws.send("ping")
        assert ws.recv(timeout=10) == "starlette: ping"
    assert ws.close_code == 1000


def test_unaccepted_path_in_starlette_is_403(run_server):
    srv = run_server("-k", "asgi", "ws_apps:starlette_app")
    with srv.connect() as s:
        s.sendall(handshake("/nowhere"))
        status, _, _, _ = SocketReader(s).response()
    assert status == 403
