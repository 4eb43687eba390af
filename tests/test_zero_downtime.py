"""Zero downtime: while 20 keep-alive clients send requests, a HUP, a TTOU/TTIN pair, a
max-requests recycle and a full USR2 + WINCH + TERM(old) upgrade complete with no failed
request.

What counts as a failure: an error status, a truncated response, or a reset / missing
response on a *fresh* connection. A client reconnects after a response that said
`Connection: close`, and when a kept-alive connection it reuses turns out to have been closed
while idle (the server closed it before the request arrived: EOF or reset before any byte of
the response). That race is inherent to HTTP keep-alive; RFC 9112 section 9.3.1 lets clients
retry then, and every HTTP client library does for idempotent requests.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest
from conftest import booted_worker_pids, connect_to, wait_until
from procs_util import (
    alive,
    children,
    kill_group_of,
    log_listening,
    read_pid,
    start_daemon,
    wait_gone,
    wait_log,
)

pytestmark = pytest.mark.timeout(120)

APP = "p_apps:app"
CLIENTS = 20
MIN_REQUESTS = 2000
REQUEST = b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n"


class Stale(Exception):
    """A reused keep-alive connection was closed while idle."""


def read_response(sock: socket.socket, buf: bytes) -> tuple[int, dict, bytes, bytes]:
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"EOF inside a response head: {buf!r}")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers["content-length"])
    while len(rest) < length:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("EOF inside a response body")
        rest += data
    return status, headers, rest[:length], rest[length:]


class Load:
    """CLIENTS threads sending keep-alive requests until stopped (and MIN_REQUESTS are done)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.done = 0
        self.failures: list[str] = []
        self.reconnects = 0
        self.stale = 0
        self.pids: set[int] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(CLIENTS)]
        for t in self.threads:
            t.start()

    def client(self) -> None:
        sock, reused, buf = None, False, b""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with self.lock:
                if self.stop.is_set() and self.done >= MIN_REQUESTS:
                    break
            if sock is None:
                try:
                    sock = connect_to(self.address, timeout=30)
                except OSError as exc:
                    with self.lock:
                        self.failures.append(f"connect: {exc!r}")
                    time.sleep(0.05)
                    continue
                reused, buf = False, b""
            got_bytes = False
            try:
                sock.sendall(REQUEST)
                first = sock.recv(65536)
                if not first:
                    raise Stale() if reused else ConnectionError("EOF before any response byte")
                got_bytes = True
                status, headers, body, buf = read_response(sock, buf + first)
                with self.lock:
                    self.done += 1
                    self.pids.add(int(body))
                    if status != 200:
                        self.failures.append(f"status {status}")
                if headers.get("connection", "").lower() == "close":
                    sock.close()
                    sock = None
                    with self.lock:
                        self.reconnects += 1
                else:
                    reused = True
            except Stale:
                with self.lock:
                    self.stale += 1
                sock.close()
                sock = None
            except (OSError, ConnectionError, ValueError, KeyError, IndexError) as exc:
                if reused and not got_bytes and isinstance(exc, ConnectionResetError):
                    with self.lock:
                        self.stale += 1
                else:
                    with self.lock:
                        self.failures.append(repr(exc))
                sock.close()
                sock = None
        if sock is not None:
            sock.close()

    def wait_done(self, at_least: int) -> None:
        wait_until(lambda: self.done >= at_least or self.failures, 60, message=f"{at_least} requests")

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(100)
        assert not any(t.is_alive() for t in self.threads), "clients stuck"
        assert not self.failures, f"{len(self.failures)} failed requests of {self.done}: {self.failures[:5]}"
        assert self.done >= MIN_REQUESTS


def test_hup_under_load(run_server, worker_args):
    srv = run_server(*worker_args, "-w", "2", APP)
    wait_until(lambda: len(booted_worker_pids(srv)) == 2, 30, message="workers")
    old = set(booted_worker_pids(srv))
    load = Load(srv.address)
    load.wait_done(300)
    mark = len(srv.lines)
    srv.signal(signal.SIGHUP)
    new = wait_until(lambda: len(booted_worker_pids(srv, mark)) == 2 and set(booted_worker_pids(srv, mark)),
                     30, message="new workers")
    wait_until(lambda: set(children(srv.proc.pid)) == new, 30, message="old workers gone")
    seen = load.done
    load.wait_done(seen + 300)
    load.finish()
    assert load.pids & old and load.pids & new


def test_ttou_ttin_under_load(run_server, worker_args):
    srv = run_server(*worker_args, "-w", "3", APP)
    wait_until(lambda: len(booted_worker_pids(srv)) == 3, 30, message="workers")
    load = Load(srv.address)
    load.wait_done(300)
    srv.signal(signal.SIGTTOU)
    wait_until(lambda: len(children(srv.proc.pid)) == 2, 30, message="two workers")
    load.wait_done(load.done + 300)
    mark = len(srv.lines)
    srv.signal(signal.SIGTTIN)
    wait_until(lambda: booted_worker_pids(srv, mark), 30, message="a new worker")
    wait_until(lambda: len(children(srv.proc.pid)) == 3, 30, message="three workers")
    load.wait_done(load.done + 300)
    load.finish()


def test_max_requests_recycle_under_load(run_server, worker_args):
    srv = run_server(*worker_args, "-w", "2", "--max-requests", "300", "--max-requests-jitter", "50", APP)
    wait_until(lambda: len(booted_worker_pids(srv)) == 2, 30, message="workers")
    load = Load(srv.address)
    load.finish()
    assert len(booted_worker_pids(srv)) >= 5, "workers were recycled several times"
    assert len(load.pids) >= 5


def test_usr2_winch_term_upgrade_under_load(tmp_path):
    pidfile = tmp_path / "app.pid"
    log = tmp_path / "error.log"
    old = start_daemon(["-b", "127.0.0.1:0", "-w", "2", "--error-logfile", str(log), APP], tmp_path, pidfile)
    new = None
    try:
        address = log_listening(log)
        wait_log(log, "Booting worker", count=2)
        load = Load(address)
        load.wait_done(300)
        os.kill(old, signal.SIGUSR2)
        new = wait_until(lambda: read_pid(tmp_path / "app.pid.2"), 30, message="the new master")
        wait_log(log, "Booting worker", count=4)
        load.wait_done(load.done + 200)
        old_workers = [p for p in children(old) if p != new]
        os.kill(old, signal.SIGWINCH)
        for pid in old_workers:
            wait_gone(pid)
        load.wait_done(load.done + 200)
        os.kill(old, signal.SIGTERM)
        wait_gone(old)
        wait_until(lambda: read_pid(pidfile) == new, 20, message="promotion")
        load.wait_done(load.done + 200)
        load.finish()
        new_workers = set(children(new))
        assert load.pids & new_workers
        assert not any(alive(p) for p in old_workers)
        os.kill(new, signal.SIGTERM)
        wait_gone(new)
    finally:
        kill_group_of(old)
        if new:
            kill_group_of(new)
