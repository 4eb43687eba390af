"""Slow clients against ONE `sync` worker: slowloris heads, slow uploads and slow readers are
held by the Rust event loop, so a normal client is still answered promptly.

The attack: 500 connections dripping a request head one byte at a time, 50 uploads with a
large Content-Length whose body drips, and 50 clients that request a large response (half a
list, half a generator) with a tiny receive buffer and never read it. While all of them are
open, a normal client makes 50 requests on fresh connections; every one must be answered 200
within 1 s. The attack runs for as long as the measurement needs and is torn down by the test.
"""

from __future__ import annotations

import resource
import selectors
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import SocketReader

pytestmark = pytest.mark.timeout(120)

SLOWLORIS = 500
SLOW_POSTS = 50
SLOW_READERS = 50
NORMAL_REQUESTS = 50
BIG = 8 * 1024 * 1024  # far beyond the socket buffers of a client that never reads
DRIP_EVERY = 0.25


def _raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        if target < need:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below the {need} descriptors needed")
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class Attack:
    """Opens the slow connections and keeps them dripping from one thread until stopped."""

    def __init__(self, host: str, port: int) -> None:
        self.addr = (host, port)
        self.slowloris: list[socket.socket] = []
        self.posts: list[socket.socket] = []
        self.readers: list[socket.socket] = []
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._drip, daemon=True)

    def _connect(self, rcvbuf: int | None = None) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(10)
        s.connect(self.addr)
        return s

    def open(self) -> None:
        for i in range(SLOW_READERS):
            s = self._connect(rcvbuf=4096)
            path = "/big" if i % 2 else "/gen"
            s.sendall(f"GET {path}?n={BIG} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            self.readers.append(s)
        for _ in range(SLOW_POSTS):
            s = self._connect()
            s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
            self.posts.append(s)
        for _ in range(SLOWLORIS):
            s = self._connect()
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            self.slowloris.append(s)
        for s in self.slowloris + self.posts:
            s.setblocking(False)
        self.thread.start()

    def _drip(self) -> None:
        while not self.stop.wait(DRIP_EVERY):
            for s in self.slowloris:
                self._send(s, b"a")
            for s in self.posts:
                self._send(s, b"b")

    def _send(self, s: socket.socket, data: bytes) -> None:
        try:
            s.send(data)
        except BlockingIOError:
            pass
        except OSError as e:
            self.errors.append(f"fd {s.fileno()}: {e}")

    def still_open(self, socks: list[socket.socket]) -> int:
        """How many of `socks` the server has not closed or answered."""
        sel = selectors.DefaultSelector()
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        readable = len(sel.select(timeout=0))
        sel.close()
        return len(socks) - readable

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)
        for s in self.slowloris + self.posts + self.readers:
            s.close()


def _normal_request(host: str, port: int, i: int) -> tuple[int, float]:
    start = time.monotonic()
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(f"GET /normal{i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        status, _, body, _ = SocketReader(s, timeout=5).response()
    assert f"/normal{i}".encode() in body
    return status, time.monotonic() - start


def test_sync_worker_serves_normal_clients_under_slow_client_attack(run_server, tmp_path: Path):
    need = SLOWLORIS + SLOW_POSTS + SLOW_READERS + 200
    # The server inherits the raised limit; it holds one descriptor per connection.
    _raise_fd_limit(2 * need)
    marker = tmp_path / "marker.log"
    server = run_server(
        "-k", "sync", "-w", "1", "--worker-connections", "2000",
        # Long enough that no attacker is cut off while the measurement runs, however slow
        # the machine: the worker must stay responsive with all of them connected.
        "--header-timeout", "120", "--body-timeout", "120", "--timeout", "120",
        "-e", f"MARKER={marker}", "s_apps:app",
    )
    host, port = server.host_port
    attack = Attack(host, port)
    try:
        attack.open()
        # Every slow reader's request reached the application and its response is pending.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            lines = marker.read_text().splitlines() if marker.exists() else []
            if sum(1 for line in lines if line.startswith("GET /big") or line.startswith("GET /gen")) >= SLOW_READERS:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"the slow readers' requests did not all reach the application: {lines[-5:]}")

        latencies = []
        for i in range(NORMAL_REQUESTS):
            status, elapsed = _normal_request(host, port, i)
            assert status == 200, f"normal request {i} answered {status}"
            latencies.append(elapsed)

        # The attack was in place for the whole measurement.
        assert not attack.errors, attack.errors[:5]
        assert attack.still_open(attack.slowloris) == SLOWLORIS
        assert attack.still_open(attack.posts) == SLOW_POSTS
        assert not any(line.startswith("POST /upload") for line in marker.read_text().splitlines()), \
            "a dripping upload reached the application before its body was buffered"
        worst = max(latencies)
        assert worst < 1.0, f"a normal request waited {worst:.2f}s (latencies: {sorted(latencies)[-5:]})"
    finally:
        attack.close()
    # The worker is still healthy afterwards.
    status, _ = _normal_request(host, port, 999)
    assert status == 200
