"""A worker that stops gracefully loses no request that reached it.

Kept-alive clients send GETs and POSTs back to back while workers retire: max-requests with and
without jitter, HUP, TTIN/TTOU, USR2 then TERM to the old master, --reload, and TERM to the
master. Each request carries a unique id, which the app records before it answers with its pid
and the checksum of the body it read. Every request must be answered, with the right checksum,
and run exactly once. No failure is excused: not even a reset on a reused connection, since a
retiring worker keeps serving its open connections and answers the next request on each with
`Connection: close`; the client then reconnects and reaches another worker.

TERM to the master leaves no worker to take a reconnection, so there the clients stop at the
first `Connection: close`: every request sent on a connection the server accepted is answered.

Progress is counted (requests answered, workers booted, workers gone), never timed.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import APPS_DIR, SocketReader, booted_worker_pids, connect_to, req, wait_until
from procs_util import children, kill_group_of, wait_gone

pytestmark = pytest.mark.timeout(240)

APP = "retire_app:app"
CLIENTS = 6
# Workers retired per load test.
RETIREMENTS = 6
# Requests answered between two retirements.
BETWEEN = 60
IO_TIMEOUT = 30.0
LOAD_DEADLINE = 150.0
WAIT = 60.0


class Load:
    """CLIENTS threads, each sending requests back to back on a kept-alive connection and
    reconnecting after a response that says `Connection: close`."""

    def __init__(self, address: str, log: Path) -> None:
        self.address = address
        self.log = log
        self.lock = threading.Lock()
        self.answered: list[str] = []
        self.failures: list[str] = []
        self.pids: set[int] = set()
        self.closes = 0
        self.connected = 0
        self.stop = threading.Event()
        # Set before TERM to the master: a client ends with its connection.
        self.last_connection = threading.Event()
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(CLIENTS)]
        for t in self.threads:
            t.start()

    def count(self) -> int:
        with self.lock:
            return len(self.answered)

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)

    def client(self, index: int) -> None:
        rng = random.Random(index)
        sock: socket.socket | None = None
        reader: SocketReader | None = None
        n = 0
        deadline = time.monotonic() + LOAD_DEADLINE
        while not self.stop.is_set() and time.monotonic() < deadline:
            if sock is None:
                if self.last_connection.is_set():
                    break
                try:
                    sock = connect_to(self.address, timeout=IO_TIMEOUT)
                except OSError as exc:
                    self.fail(f"connect: {exc!r}")
                    break
                reader = SocketReader(sock, IO_TIMEOUT)
                with self.lock:
                    self.connected += 1
            n += 1
            request_id = f"{index}-{n}"
            # Alternate a GET with a POST whose body (1 B to 8 KiB) the app checksums.
            body = rng.randbytes(rng.randrange(1, 8192)) if n % 2 else b""
            method = "POST" if body else "GET"
            try:
                sock.sendall(req(method, f"/r/{request_id}", body=body))
                status, headers, got, _ = reader.response()
            except (OSError, ConnectionError) as exc:
                self.fail(f"{method} {request_id}: {exc!r}")
                sock.close()
                sock = None
                continue
            pid, _, digest = got.decode("latin-1").partition(" ")
            if status != 200 or digest != hashlib.sha256(body).hexdigest() or not pid.isdigit():
                self.fail(f"{method} {request_id}: {status} {got[:100]!r}")
                continue
            with self.lock:
                self.answered.append(request_id)
                self.pids.add(int(pid))
            if headers.get("connection", "").lower() == "close":
                sock.close()
                sock = None
                with self.lock:
                    self.closes += 1
        if sock is not None:
            sock.close()

    def wait_for(self, answered: int) -> None:
        """Until `answered` requests are answered in all (or one failed)."""
        wait_until(lambda: self.count() >= answered or self.failures, WAIT, message=f"{answered} answered requests")

    def more(self, n: int = BETWEEN) -> None:
        self.wait_for(self.count() + n)

    def join(self) -> None:
        for t in self.threads:
            t.join(LOAD_DEADLINE)
        assert not any(t.is_alive() for t in self.threads), "clients stuck"

    def finish(self) -> None:
        self.more()
        self.stop.set()
        self.join()
        self.check()

    def check(self) -> None:
        """No failure; every answered request ran once, and no request ran twice."""
        assert not self.failures, f"{len(self.failures)} failed of {self.count()} answered: {self.failures[:5]}"
        ran = Counter(self.log.read_text().split())
        twice = sorted(i for i, times in ran.items() if times > 1)
        assert not twice, f"requests run twice: {twice[:10]}"
        unrecorded = [i for i in self.answered if ran[i] != 1]
        assert not unrecorded, f"answered but not run: {unrecorded[:10]}"
        assert len(self.answered) >= BETWEEN


@pytest.fixture
def ids(tmp_path: Path) -> Path:
    """The file the app records request ids in."""
    log = tmp_path / "ids.log"
    log.write_text("")
    return log


def start(run_server, ids: Path, *args: str):
    srv = run_server(*args, env={"RETIRE_LOG": str(ids)})
    return srv, Load(srv.address, ids)


def workers(srv) -> set[int]:
    return set(children(srv.proc.pid))


def wait_booted(srv, mark: int, count: int) -> None:
    """Until `count` workers booted since log line `mark`."""
    wait_until(lambda: len(booted_worker_pids(srv, mark)) >= count, WAIT, message=f"{count} new workers")


def wait_workers(srv, count: int) -> None:
    wait_until(lambda: len(workers(srv)) == count, WAIT, message=f"{count} workers")


def wait_all_gone(srv, pids: set[int]) -> None:
    wait_until(lambda: not workers(srv) & pids, WAIT, message=f"workers {sorted(pids)} gone")


@pytest.mark.parametrize("jitter", [0, 20], ids=["fixed", "jitter"])
def test_max_requests_recycling(run_server, worker_args, ids, jitter):
    count = 1 if jitter == 0 else 2
    srv, load = start(run_server, ids, *worker_args, "-w", str(count), "--max-requests", "30",
                      "--max-requests-jitter", str(jitter), APP)
    wait_until(lambda: len(booted_worker_pids(srv)) > count + RETIREMENTS or load.failures, WAIT,
               message=f"{RETIREMENTS} recycled workers")
    load.finish()
    assert len(load.pids) > RETIREMENTS
    assert load.closes >= RETIREMENTS


def test_hup(run_server, worker_args, ids):
    srv, load = start(run_server, ids, *worker_args, "-w", "2", APP)
    wait_until(lambda: len(booted_worker_pids(srv)) == 2, WAIT, message="two workers")
    for _ in range(RETIREMENTS // 2):
        load.more()
        old = workers(srv)
        mark = len(srv.lines)
        srv.signal(signal.SIGHUP)
        wait_booted(srv, mark, 2)
        wait_all_gone(srv, old)
    load.finish()
    # Every HUP moved every client to a new generation of workers.
    assert len(load.pids) > RETIREMENTS // 2


def test_ttin_ttou(run_server, worker_args, ids):
    srv, load = start(run_server, ids, *worker_args, "-w", "2", APP)
    wait_until(lambda: len(booted_worker_pids(srv)) == 2, WAIT, message="two workers")
    for _ in range(RETIREMENTS):
        load.more()
        mark = len(srv.lines)
        srv.signal(signal.SIGTTIN)
        wait_booted(srv, mark, 1)
        wait_workers(srv, 3)
        load.more()
        srv.signal(signal.SIGTTOU)
        wait_workers(srv, 2)
    load.finish()
    assert load.closes, "no client was on a retired worker"


def next_master(srv, mark: int, old: int) -> int:
    """The master started by USR2 to `old`: the other pid in a `Listening at:` line."""

    def found() -> list[int]:
        return [int(m.group(1)) for line in list(srv.lines[mark:])
                for m in [re.search(r"Listening at: \S+ \((\d+)\)", line)] if m and int(m.group(1)) != old]

    return wait_until(found, WAIT, message="a second master")[0]


def test_usr2_then_term_to_the_old_master(run_server, worker_args, ids):
    srv, load = start(run_server, ids, *worker_args, "-w", "2", APP)
    masters = [srv.proc.pid]
    try:
        wait_until(lambda: len(booted_worker_pids(srv)) == 2, WAIT, message="two workers")
        for _ in range(2):
            old = masters[-1]
            load.more()
            mark = len(srv.lines)
            os.kill(old, signal.SIGUSR2)
            new = next_master(srv, mark, old)
            masters.append(new)
            wait_booted(srv, mark, 2)
            load.more()
            os.kill(old, signal.SIGTERM)
            wait_gone(old, WAIT)
            # Promoted, the new master may be upgraded in turn.
            srv.wait_for_line("Master has been promoted", timeout=WAIT, start=mark)
            load.more()
        load.finish()
        assert load.pids & set(children(masters[-1]))
        os.kill(masters[-1], signal.SIGTERM)
        wait_gone(masters[-1], WAIT)
    finally:
        for pid in masters[1:]:
            kill_group_of(pid)


def test_reload(run_server, worker_args, ids, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    module = code / "retire_reloaded.py"
    module.write_text((APPS_DIR / "retire_app.py").read_text())
    srv, load = start(run_server, ids, *worker_args, "-w", "1", "--reload", "--pythonpath", str(code),
                      "retire_reloaded:app")
    wait_until(lambda: booted_worker_pids(srv), WAIT, message="a worker")
    for round_ in range(RETIREMENTS // 2):
        load.more()
        mark = len(srv.lines)
        # A worker watches its files from shortly after it boots: change the module until one
        # change is seen (each attempt waits for the log line, bounded in number).
        for attempt in range(30):
            module.write_text(module.read_text() + f"# change {round_}.{attempt}\n")
            try:
                srv.wait_for_line("Worker reloading", timeout=2, start=mark)
                break
            except AssertionError:
                continue
        wait_booted(srv, mark, 1)
    load.finish()
    assert len(load.pids) > RETIREMENTS // 2


def test_term_answers_every_request_on_accepted_connections(run_server, worker_args, ids):
    srv, load = start(run_server, ids, *worker_args, "-w", "2", APP)
    wait_until(lambda: load.connected == CLIENTS, WAIT, message="every client connected")
    load.wait_for(BETWEEN)
    load.last_connection.set()
    srv.signal(signal.SIGTERM)
    assert srv.wait(WAIT) == 0
    load.join()
    load.check()
    assert load.closes == CLIENTS, "every client was told the connection closes"


class Client:
    """One kept-alive connection, used one request at a time."""

    def __init__(self, srv) -> None:
        self.sock = srv.connect(timeout=IO_TIMEOUT)
        self.reader = SocketReader(self.sock, IO_TIMEOUT)

    def post(self, body: bytes = b"x" * 1000) -> tuple[int, str]:
        """Returns the answering pid and the Connection header."""
        self.sock.sendall(req("POST", "/", body=body))
        status, headers, got, _ = self.reader.response()
        pid, _, digest = got.decode("latin-1").partition(" ")
        assert (status, digest) == (200, hashlib.sha256(body).hexdigest())
        return int(pid), headers.get("connection", "").lower()

    def until_close(self, pid: int) -> None:
        """Sends requests until one is answered with `Connection: close` (bounded)."""
        deadline = time.monotonic() + WAIT
        for _ in range(100_000):
            answered_by, connection = self.post()
            assert answered_by == pid
            if connection == "close" or time.monotonic() > deadline:
                break
        assert connection == "close", "the stopping worker never announced the close"


def begin_stop(srv, stop: str) -> None:
    mark = len(srv.lines)
    if stop == "hup":
        srv.signal(signal.SIGHUP)
    elif stop == "ttou":
        srv.signal(signal.SIGTTIN)
        wait_booted(srv, mark, 1)
        wait_workers(srv, 2)
        srv.signal(signal.SIGTTOU)
    elif stop == "term":
        srv.signal(signal.SIGTERM)


@pytest.mark.parametrize("stop", ["max-requests", "hup", "ttou", "term"])
def test_request_on_an_idle_connection_is_served_during_the_stop(run_server, worker_args, ids, stop):
    """The race made deterministic: a connection idle when its worker begins to stop is not
    closed under a request the client may already be sending; the request is answered, once,
    with `Connection: close`."""
    recycle = ["--max-requests", "4"] if stop == "max-requests" else []
    srv = run_server(*worker_args, "-w", "1", "--keep-alive", "60", *recycle, APP, env={"RETIRE_LOG": str(ids)})
    idle, busy = Client(srv), Client(srv)
    pid, connection = idle.post()
    assert connection == "keep-alive"
    assert busy.post()[0] == pid
    begin_stop(srv, stop)
    busy.until_close(pid)
    # The worker is stopping now (it said so on `busy`); `idle` still reaches it.
    assert idle.post(b"y" * 5000) == (pid, "close")
    assert idle.sock.recv(1) == b""
    wait_gone(pid, WAIT)
    if stop == "term":
        assert srv.wait(WAIT) == 0
    else:
        assert Client(srv).post()[0] != pid



def test_a_worker_waiting_on_idle_connections_keeps_its_heartbeat(run_server, worker_args, ids):
    """A stopping worker may wait --keep-alive on a silent connection, longer than --timeout:
    the master must not take it for a stuck worker and abort it."""
    srv = run_server(*worker_args, "-w", "1", "--keep-alive", "5", "--timeout", "2", APP,
                     env={"RETIRE_LOG": str(ids)})
    idle, busy = Client(srv), Client(srv)
    pid = idle.post()[0]
    busy.post()
    srv.signal(signal.SIGHUP)
    busy.until_close(pid)
    idle.sock.settimeout(WAIT)
    assert idle.sock.recv(1) == b""
    wait_gone(pid, WAIT)
    end = srv.wait_for_line(rf"Worker exiting \(pid: {pid}\)|WORKER TIMEOUT \(pid:{pid}\)")
    assert end.group(0).startswith("Worker exiting"), srv.log


@pytest.mark.parametrize("stop", ["max-requests", "reload"])
def test_replacement_serves_while_the_retiring_worker_waits_on_idle_connections(
    run_server, worker_args, ids, stop, tmp_path
):
    """A worker that stops on its own may wait --keep-alive on an idle connection; the master
    starts its replacement at once, so new connections are served meanwhile (with `-w 1`
    they would otherwise queue for the whole keep-alive time)."""
    args = ["-w", "1", "--keep-alive", "120"]
    watched = tmp_path / "touched.py"
    if stop == "max-requests":
        args += ["--max-requests", "3"]
    else:
        watched.write_text("x = 1\n")
        args += ["--reload", "--reload-extra-file", str(watched)]
    srv = run_server(*worker_args, *args, APP, env={"RETIRE_LOG": str(ids)})
    idle, busy = Client(srv), Client(srv)
    pid = idle.post()[0]
    # Both connections are the old worker's before it stops: a connection's first bytes
    # decide which worker accepts it (TCP_DEFER_ACCEPT), and after the stop that would be
    # the replacement.
    assert busy.post()[0] == pid
    if stop == "reload":
        watched.write_text("x = 2\n")
    busy.until_close(pid)
    # `idle` still holds the old worker open (for up to 120 s); a new client is served by
    # another worker well before that.
    fresh = Client(srv)
    assert fresh.post()[0] != pid
    assert pid in workers(srv), "the old worker waits on its idle connection"
    assert idle.post() == (pid, "close")
    wait_gone(pid, WAIT)
