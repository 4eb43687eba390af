"""`--worker-connections`: a worker holds at most that many connections open at once."""

from __future__ import annotations

import socket

from conftest import SocketReader


def _request(sock: socket.socket, path: str) -> None:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())


def test_worker_connections_caps_open_connections(run_server, worker_args):
    server = run_server(*worker_args, "-w", "1", "--worker-connections", "2", "--keep-alive", "30",
                        "h_apps:echo")
    held = [server.connect(), server.connect()]
    for i, sock in enumerate(held):
        _request(sock, f"/held{i}")
        status, _, _, _ = SocketReader(sock).response()
        assert status == 200
    # Both slots are taken by idle keep-alive connections: a third client is not served...
    third = server.connect()
    _request(third, "/third")
    third.settimeout(1.0)
    try:
        data = third.recv(1)
    except socket.timeout:
        data = None
    assert data is None, "a third connection was served beyond --worker-connections 2"
    # ...until one of them goes away.
    held.pop().close()
    status, _, body, _ = SocketReader(third, timeout=10).response()
    assert status == 200 and b"/third" in body
    for sock in held + [third]:
        sock.close()
