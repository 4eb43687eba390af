"""The master process: replacing dead and silent workers, signals, graceful shutdown, keep-alive.

Real signals are sent to the real master and workers; readiness and progress are read from the
log (`Booting worker with pid: N`, the app's `SLOW REQUEST STARTED` line on wsgi.errors), never
waited for with fixed sleeps.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest
from conftest import SocketReader, booted_worker_pids, get, wait_until

pytestmark = pytest.mark.timeout(90)

APP = "master_app:app"


class InFlight:
    """A request sent on its own connection, whose response is read in a background thread."""

    def __init__(self, server, path: str, read_timeout: float = 30.0) -> None:
        self.sock = server.connect(timeout=read_timeout)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        self.result: tuple[int, bytes] | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            status, _, body, _ = SocketReader(self.sock, timeout=30.0).response()
            self.result = (status, body)
        except (OSError, ConnectionError, ValueError, IndexError) as exc:
            self.error = exc
        finally:
            self.sock.close()

    def join(self, timeout: float = 40.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the in-flight request never finished"


def first_worker_pid(server) -> int:
    server.wait_for_line(r"Booting worker with pid: \d+")
    return booted_worker_pids(server)[0]


def test_killed_worker_is_replaced(run_server, worker_args):
    srv = run_server(*worker_args, "-w", "1", APP)
    old = first_worker_pid(srv)
    status, _, body = get(srv, "/pid")
    assert (status, int(body)) == (200, old)

    os.kill(old, signal.SIGKILL)
    new_pids = wait_until(lambda: [p for p in booted_worker_pids(srv) if p != old], 30,
                          message="a replacement worker")
    assert old not in new_pids
    # Requests keep being answered, by the new worker.
    for _ in range(5):
        status, _, body = get(srv, "/pid")
        assert status == 200
        assert int(body) == new_pids[0]
    assert srv.proc.poll() is None


def ask_keeping_alive(s: socket.socket, reader: SocketReader) -> None:
    """One request on `s`, answered 200 without closing the connection."""
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body, _ = reader.response()
    assert (status, body) == (200, b"ok")
    assert "close" not in headers.get("connection", "").lower(), headers


def wait_for_close(s: socket.socket) -> tuple[bytes, float]:
    """Waits for the server to close `s`: what arrived instead (b"" for a close or a reset) and
    the seconds it took."""
    start = time.monotonic()
    try:
        data = s.recv(1)
    except ConnectionResetError:
        data = b""
    return data, time.monotonic() - start


def test_term_is_graceful(run_server, worker_args):
    srv = run_server(*worker_args, "--graceful-timeout", "30", APP)
    first_worker_pid(srv)
    slow = InFlight(srv, "/sleep/1")
    srv.wait_for_line(r"SLOW REQUEST STARTED")
    srv.signal(signal.SIGTERM)
    slow.join()
    assert slow.error is None, f"{slow.error!r}; log:\n{srv.log}"
    assert slow.result == (200, b"slept 1.0"), slow.result
    assert srv.wait(timeout=30) == 0, srv.log
    log = srv.log
    assert "Handling signal: term" in log, log
    assert "Shutting down: Master" in log, log


def test_term_closes_a_silent_keep_alive_connection_after_keep_alive(run_server, worker_args):
    # A graceful stop keeps a connection idle between requests open, since the client may be
    # sending its next request already (tests/test_retirement.py), but not for the whole
    # graceful timeout: one that stays silent for --keep-alive is closed, in order (no reset).
    srv = run_server(*worker_args, "--keep-alive", "1", "--graceful-timeout", "60", APP)
    with srv.connect(timeout=15) as s:
        reader = SocketReader(s, timeout=15)
        for _ in range(3):
            ask_keeping_alive(s, reader)
        srv.signal(signal.SIGTERM)
        start = time.monotonic()
        assert s.recv(1) == b"", "unexpected bytes on an idle connection"
        closed_after = time.monotonic() - start
    assert closed_after < 10, f"idle connection closed {closed_after:.1f}s after TERM"
    assert srv.wait(timeout=30) == 0, srv.log


def test_a_request_longer_than_keep_alive_keeps_its_connection(run_server, worker_args):
    # The idle timer armed while the connection waited before a request may fire while the
    # request runs; neither then nor just after the answer may it end the connection.
    srv = run_server(*worker_args, "--keep-alive", "1", APP)
    with srv.connect(timeout=15) as s:
        reader = SocketReader(s, timeout=15)
        ask_keeping_alive(s, reader)
        s.sendall(b"GET /sleep/1.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body, _ = reader.response()
        assert (status, body) == (200, b"slept 1.5")
        assert "close" not in headers.get("connection", "").lower(), headers
        ask_keeping_alive(s, reader)
        time.sleep(0.5)
        ask_keeping_alive(s, reader)


def test_term_gives_up_after_graceful_timeout(run_server, worker_args):
    srv = run_server(*worker_args, "--graceful-timeout", "1", APP)
    first_worker_pid(srv)
    slow = InFlight(srv, "/sleep/60")
    srv.wait_for_line(r"SLOW REQUEST STARTED")
    sent = time.monotonic()
    srv.signal(signal.SIGTERM)
    srv.wait(timeout=30)
    elapsed = time.monotonic() - sent
    assert elapsed < 10, f"master took {elapsed:.1f}s to stop with --graceful-timeout 1"
    slow.join()
    assert slow.result is None or slow.result[0] != 200 or slow.result[1] != b"slept 60.0"
    assert "Shutting down: Master" in srv.log, srv.log


STOP_FAST = pytest.mark.parametrize(
    "sig, name", [(signal.SIGINT, "int"), (signal.SIGQUIT, "quit")], ids=["INT", "QUIT"]
)


def assert_fast_stop(srv, sig: int, name: str) -> None:
    sent = time.monotonic()
    srv.signal(sig)
    code = srv.wait(timeout=15)
    elapsed = time.monotonic() - sent
    assert code == 0, srv.log
    assert elapsed < 5, f"master took {elapsed:.1f}s to stop on SIG{name.upper()}"
    log = srv.log
    assert f"Handling signal: {name}" in log, log
    assert "Shutting down: Master" in log, log


@STOP_FAST
def test_int_and_quit_stop_fast(run_server, worker_args, sig, name):
    srv = run_server(*worker_args, "--graceful-timeout", "60", APP)
    first_worker_pid(srv)
    assert get(srv, "/")[0] == 200
    assert_fast_stop(srv, sig, name)


@STOP_FAST
def test_int_and_quit_do_not_wait_for_in_flight_requests(run_server, worker_args, sig, name):
    # A long graceful timeout: INT and QUIT ("quick shutdown") must not wait for the request.
    # Gunicorn's gthread worker fails this: its thread pool is joined at interpreter exit, so the
    # worker lives until the request ends or the master kills it after --graceful-timeout.
    srv = run_server(*worker_args, "--graceful-timeout", "60", APP)
    first_worker_pid(srv)
    slow = InFlight(srv, "/sleep/60")
    srv.wait_for_line(r"SLOW REQUEST STARTED")
    assert_fast_stop(srv, sig, name)
    slow.join()
    assert slow.result is None or slow.result[1] != b"slept 60.0", slow.result


def test_worker_timeout_kills_and_replaces_silent_worker(run_server):
    srv = run_server("-k", "sync", "-t", "2", APP)
    old = first_worker_pid(srv)
    slow = InFlight(srv, "/sleep/10")
    srv.wait_for_line(r"SLOW REQUEST STARTED")
    srv.wait_for_line(rf"WORKER TIMEOUT \(pid:{old}\)", timeout=20)
    new_pids = wait_until(lambda: [p for p in booted_worker_pids(srv) if p != old], 30,
                          message="a replacement worker")
    status, _, body = get(srv, "/pid")
    assert (status, int(body)) == (200, new_pids[0])
    slow.join()
    # The killed request was never answered by the app.
    assert slow.result is None or slow.result[1] != b"slept 10.0", slow.result


def test_idle_keep_alive_connection_is_closed_after_keep_alive_seconds(run_server, worker_args):
    # Gunicorn's sync worker has no keep-alive (it answers `Connection: close`), so against
    # Gunicorn this test fails for `sync` by design; ferrocorn keeps connections alive in every
    # worker class.
    srv = run_server(*worker_args, "--keep-alive", "1", APP)
    with srv.connect(timeout=15) as s:
        ask_keeping_alive(s, SocketReader(s, timeout=15))
        data, idle = wait_for_close(s)
    assert data == b"", f"unexpected bytes on an idle connection: {data!r}"
    assert idle >= 0.5, f"idle connection closed after only {idle:.2f}s with --keep-alive 1"
    assert idle < 5, f"idle connection still open after {idle:.2f}s with --keep-alive 1"


def test_term_reaches_a_worker_that_is_still_booting(run_server, worker_args, tmp_path):
    # post_fork holds the new worker between fork and its own signal set-up; a TERM the master
    # passes on in that window must still stop it, not wait out the graceful timeout.
    conf = tmp_path / "slow_fork.py"
    conf.write_text("import time\n\ndef post_fork(server, worker):\n    time.sleep(1.0)\n")
    srv = run_server(*worker_args, "-c", str(conf), "--graceful-timeout", "60", APP)
    sent = time.monotonic()
    srv.signal(signal.SIGTERM)
    assert srv.wait(timeout=30) == 0, srv.log
    elapsed = time.monotonic() - sent
    assert elapsed < 10, f"master took {elapsed:.1f}s to stop a booting worker on TERM"
