"""`--worker-connections`: a worker holds at most that many connections open at once. At the
cap it closes the connection that has waited longest without sending a byte to make room; when
every open connection has sent something, a new one is answered `503 Service Unavailable` at
once and closed."""

from __future__ import annotations

import re
import select
import socket
import time

import pytest
from conftest import SocketReader, req, wait_until

SHED_WARNING = r"\[WARNING\] worker_connections limit \(\d+\) reached"


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
    # Once one of them goes away, a new client is served again. The worker frees the slot when
    # it reads the close, which a loaded machine may delay: retry until then, with a deadline.
    held.pop().close()

    def served_after() -> bytes | None:
        with server.connect() as s:
            _request(s, "/after")
            status, _, body, _ = SocketReader(s, timeout=10).response()
        assert status in (200, 503), status
        return body if status == 200 else None

    assert b"/after" in wait_until(served_after, timeout=10, message="a freed slot")
    for sock in held:
        sock.close()


def test_connections_that_send_nothing_take_no_slot(run_server, worker_args):
    # A TCP listener accepts a connection only once its first bytes arrive (TCP_DEFER_ACCEPT),
    # so clients that connect and stay silent wait in the kernel, not in the worker's slots.
    # Three slots: the worker may not yet have seen /real's client go when /late1 arrives.
    server = run_server(*worker_args, "-w", "1", "--worker-connections", "3", "h_apps:echo")
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


def _server_spoke(sock: socket.socket) -> bool:
    """Whether the server sent something on `sock` or closed it (a read would not block)."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_silent_flood_does_not_lock_out_requests(run_server, worker_args, tmp_path, transport):
    cap = 20
    bind = ["-b", f"unix:{tmp_path / 's.sock'}"] if transport == "unix" else []
    # A header timeout longer than the test: silent connections leave only if shed.
    server = run_server(*worker_args, *bind, "-w", "1", "--worker-connections", str(cap),
                        "--header-timeout", "120", "--keep-alive", "120", "h_apps:echo")
    silent = [server.connect() for _ in range(3 * cap)]
    real: list[socket.socket] = []
    try:
        # Over TCP the kernel hands a silent connection to the worker only after about a
        # second (TCP_DEFER_ACCEPT). Once all are accepted, two caps' worth have been dealt
        # with (closed for room, or before the fix answered 503) and one cap's worth holds
        # every slot of the worker.
        deadline = time.monotonic() + 30
        while sum(map(_server_spoke, silent)) < 2 * cap:
            assert time.monotonic() < deadline, "the worker did not take the silent connections"
            select.select(silent, [], [], 0.2)
        started = time.monotonic()
        # A client that keeps its connections: each one takes the slot of a silent one.
        for i in range(cap):
            sock = server.connect()
            real.append(sock)
            sock.sendall(req("GET", f"/real{i}"))
            status, _, body, _ = SocketReader(sock, timeout=10).response()
            assert status == 200 and f"/real{i}".encode() in body, f"request {i} got {status}"
        # Then every silent connection has been closed, without a word.
        for sock in silent:
            assert SocketReader(sock, timeout=10).read_to_close() == b""
        for i, sock in enumerate(real):
            sock.sendall(req("GET", f"/again{i}"))
            status, _, body, _ = SocketReader(sock, timeout=10).response()
            assert status == 200 and f"/again{i}".encode() in body
        elapsed = time.monotonic() - started
    finally:
        for sock in silent + real:
            sock.close()
    warnings = [line for line in server.lines if re.search(SHED_WARNING, line)]
    assert warnings, server.log
    assert f"limit ({cap}) reached" in warnings[0]
    # At most one warning per 10 s.
    assert len(warnings) <= 1 + int(elapsed // 10), warnings


def test_connections_that_sent_something_are_never_closed_for_room(run_server, worker_args):
    server = run_server(*worker_args, "-w", "1", "--worker-connections", "2", "--keep-alive", "30",
                        "h_apps:echo")
    # One connection idle between requests, one with half a request head.
    idle = server.connect()
    idle.sendall(req("GET", "/idle"))
    assert SocketReader(idle).response()[0] == 200
    partial = server.connect()
    partial.sendall(b"GET /partial HTTP/1.1\r\n")
    try:
        wait = time.monotonic() + 10
        for _ in range(200):
            with server.connect() as s:
                s.sendall(req("GET", "/third"))
                status, _, _, _ = SocketReader(s, timeout=5).response()
            # The partial request may not have been accepted yet (TCP_DEFER_ACCEPT aside,
            # the worker reads it on its next turn): then /third is served and goes.
            if status == 503 or time.monotonic() > wait:
                break
        assert status == 503
        partial.sendall(b"Host: t\r\n\r\n")
        status, _, body, _ = SocketReader(partial).response()
        assert status == 200 and b"/partial" in body
        idle.sendall(req("GET", "/idle2"))
        status, _, body, _ = SocketReader(idle).response()
        assert status == 200 and b"/idle2" in body
    finally:
        idle.close()
        partial.close()
