"""`--worker-connections`: a worker holds at most that many connections open at once; past
the cap a new connection is answered `503 Service Unavailable` at once and closed."""

from __future__ import annotations

import socket

from conftest import SocketReader


def _request(sock: socket.socket, path: str) -> None:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())


def test_worker_connections_sheds_load_with_503(run_server, worker_args):
    server = run_server(*worker_args, "-w", "1", "--worker-connections", "2", "--keep-alive", "30",
                        "h_apps:echo")
    held = [server.connect(), server.connect()]
    for i, sock in enumerate(held):
        _request(sock, f"/held{i}")
        status, _, _, _ = SocketReader(sock).response()
        assert status == 200
    # Both slots are taken by idle keep-alive connections: a third client is told so promptly.
    third = server.connect()
    _request(third, "/third")
    reader = SocketReader(third, timeout=5)
    status, headers, body, _ = reader.response()
    assert status == 503
    assert headers.get("connection", "").lower() == "close"
    assert b"Service Unavailable" in body
    assert reader.read_to_close() == b"", "the shed connection must be closed after the 503"
    third.close()
    # The held connections are unaffected and still served.
    for i, sock in enumerate(held):
        _request(sock, f"/again{i}")
        status, _, body, _ = SocketReader(sock).response()
        assert status == 200 and f"/again{i}".encode() in body
    # Once one of them goes away, a new client is served again.
    held.pop().close()
    for _ in range(50):
        with server.connect() as s:
            _request(s, "/after")
            status, _, body, _ = SocketReader(s, timeout=10).response()
        if status == 200:
            break
        assert status == 503  # the closed slot may not be released yet
    assert status == 200 and b"/after" in body
    for sock in held:
        sock.close()


def test_connections_that_send_nothing_take_no_slot(run_server, worker_args):
    # A TCP listener accepts a connection only once its first bytes arrive (TCP_DEFER_ACCEPT),
    # so clients that connect and stay silent wait in the kernel, not in the worker's slots.
    server = run_server(*worker_args, "-w", "1", "--worker-connections", "2", "h_apps:echo")
    silent = [server.connect() for _ in range(4)]
    try:
        with server.connect() as s:
            _request(s, "/real")
            status, _, body, _ = SocketReader(s, timeout=5).response()
        assert status == 200 and b"/real" in body
        # They are still served once they speak.
        for i, sock in enumerate(silent[:2]):
            _request(sock, f"/late{i}")
            status, _, body, _ = SocketReader(sock, timeout=5).response()
            assert status == 200 and f"/late{i}".encode() in body
    finally:
        for sock in silent:
            sock.close()
