"""The WebSocket Denial Response extension on `-k asgi`: an application answers the handshake
with its own HTTP response (`websocket.http.response.start` and `.body`) instead of accepting."""

from __future__ import annotations

import base64
import os

import pytest
from conftest import SocketReader
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server(run_server):
    return run_server("-k", "asgi", "ws_deny_apps:app")


def handshake(path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {key}\r\n\r\n").encode()


def raw_answer(server, path: str) -> tuple[int, dict[str, str], bytes, bytes]:
    """The response to a handshake for `path`, and what follows it until the server closes."""
    with server.connect() as s:
        s.sendall(handshake(path))
        reader = SocketReader(s)
        status, headers, body, _ = reader.response()
        rest = reader.read_to_close()
    return status, headers, body, rest


def test_scope_offers_the_extension(server):
    host, port = server.host_port
    with connect(f"ws://{host}:{port}/extensions") as ws:
        assert ws.recv(timeout=10) == repr({"websocket.http.response": {}})


def test_denial_streamed_in_parts_over_a_raw_socket(server):
    status, headers, body, rest = raw_answer(server, "/deny")
    assert status == 401
    assert headers["x-why"] == "token"
    assert headers["content-type"] == "text/plain"
    assert headers["transfer-encoding"] == "chunked"
    assert headers["connection"] == "close"
    assert "sec-websocket-accept" not in headers
    assert body == b"no entry"
    assert rest == b""


def test_denial_with_its_content_length(server):
    status, headers, body, rest = raw_answer(server, "/length")
    assert (status, headers["content-length"], body, rest) == (401, "8", b"no entry", b"")
    assert "transfer-encoding" not in headers


def test_websockets_client_sees_status_and_body(server):
    host, port = server.host_port
    with pytest.raises(InvalidStatus) as raised:
        connect(f"ws://{host}:{port}/deny", open_timeout=10)
    response = raised.value.response
    assert response.status_code == 401
    assert response.headers["x-why"] == "token"
    assert response.body == b"no entry"


def test_receive_tells_the_app_once_the_denial_is_complete(server):
    status, _, body, _ = raw_answer(server, "/receive")
    assert (status, body) == (401, b"no entry")
    server.wait_for_line(r"after denial: \{'type': 'websocket.disconnect', 'code': 1006")


def test_accept_after_the_response_started_is_an_error(server):
    # Nothing of the response went out yet: the error answer replaces it.
    status, _, _, _ = raw_answer(server, "/accept-after")
    assert status == 500
    server.wait_for_line(r"Expected ASGI message 'websocket.http.response.body', "
                         r"but got 'websocket.accept'")


def test_raise_before_the_body_is_500(server):
    status, _, _, _ = raw_answer(server, "/raise")
    assert status == 500
    server.wait_for_line("ValueError: broken denial")


def test_body_after_the_response_completed_is_an_error(server):
    status, _, body, rest = raw_answer(server, "/twice")
    assert (status, body, rest) == (401, b"no entry", b"")
    server.wait_for_line(r"Unexpected ASGI message 'websocket.http.response.body', after "
                         r"sending 'websocket.close' or response already completed")


def test_denial_without_headers_or_body(server):
    status, headers, body, rest = raw_answer(server, "/bare")
    assert (status, headers["content-length"], body, rest) == (404, "0", b"", b"")


def test_interim_status_is_refused(server):
    status, _, _, _ = raw_answer(server, "/interim")
    assert status == 500
    server.wait_for_line("invalid status 101 for a WebSocket denial response")
