#!/usr/bin/env python3
"""Memory a worker keeps per idle kept-alive connection.

Starts one server (by default ferrocorn, 1 `sync` worker, the hello app), finds its worker
process, and reads the worker's resident memory (`Rss` and `Pss` of /proc/PID/smaps_rollup).
Then opens N connections to it, sends one keep-alive GET on each and reads the answer, keeps
them all open, waits until the worker's memory stops moving, reads it again and prints the
growth per connection.

    .venv/bin/python bench/idle_memory.py                        # ferrocorn sync, 10,000
    .venv/bin/python bench/idle_memory.py -- -k gthread --threads 8
    .venv/bin/python bench/idle_memory.py --server \\
        'granian --interface wsgi --workers 1 --port {port} hello:app'

A `--server` command runs in bench/apps with `{port}` replaced by a free port; one without
`{port}` has to print its address (`Listening at: http://...` or `running on http://...`).
The worker is the server's one child process, or the server itself when it has none.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from instructions_per_request import HOST, free_port, read_response  # next to this file

APPS = Path(__file__).resolve().parent / "apps"
ADDRESS = re.compile(r"(?:Listening at:|running on) http://127\.0\.0\.1:(\d+)")
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--connections", type=int, default=10_000, help="connections to keep")
    p.add_argument("--server", help="server command, `{port}` replaced (default: ferrocorn)")
    p.add_argument("--app", default="hello:app", help="WSGI app of the default command")
    p.add_argument("--settle", type=float, default=2.0,
                   help="seconds the worker's memory must stay within 1%% to count as steady")
    p.add_argument("server_args", nargs="*", help="more ferrocorn arguments (after --)")
    return p.parse_args()


def memory_kib(pid: int) -> dict[str, int]:
    """`Rss` and `Pss` of the process, in KiB."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("Rss", "Pss"):
            fields[name] = int(rest.split()[0])
    return fields


def children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        kids.extend(int(k) for k in text)
    return kids


def get(sock: socket.socket, deadline: float) -> None:
    sock.sendall(REQUEST)
    read_response(sock, deadline)


def still_open(socks: list[socket.socket]) -> int:
    """How many of the connections the server has not closed."""
    open_ = 0
    for s in socks:
        s.setblocking(False)
        try:
            open_ += s.recv(1) != b""
        except BlockingIOError:
            open_ += 1
        except OSError:
            pass
    return open_


def start(args: argparse.Namespace, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Starts the server; returns it and its port once it is listening."""
    port = free_port()
    if args.server:
        argv = shlex.split(args.server.replace("{port}", str(port)))
    else:
        ferrocorn = Path(sys.executable).parent / "ferrocorn"
        argv = [str(ferrocorn), "-w", "1", "-b", f"{HOST}:0", "--worker-connections", "20000",
                "--keep-alive", "600", "--timeout", "600", *args.server_args, args.app]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=APPS, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {log.read_text(errors='replace')}")
        if not (args.server and "{port}" in args.server):
            m = ADDRESS.search(log.read_text(errors="replace"))
            port = int(m.group(1)) if m else 0
        if port:
            try:
                with socket.create_connection((HOST, port), timeout=5) as s:
                    get(s, deadline)
                return proc, port
            except OSError:
                pass
        time.sleep(0.05)
    raise SystemExit(f"the server did not answer: {log.read_text(errors='replace')}")


def worker_of(root: int, deadline: float) -> int:
    """The worker: the server's one child process, else the server itself."""
    while True:
        kids = children(root)
        if len(kids) <= 1 or time.monotonic() > deadline:
            return kids[0] if kids else root
        time.sleep(0.05)


def steady(pid: int, settle: float, deadline: float) -> dict[str, int]:
    """The worker's memory once it has stayed within 1% for `settle` seconds."""
    last = memory_kib(pid)
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = memory_kib(pid)
        if abs(now["Rss"] - last["Rss"]) > last["Rss"] / 100:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= settle:
            return now
    return memory_kib(pid)


def main() -> int:
    args = parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.connections * 2 + 1000
    if soft < want:
        # the server inherits the raised limit too
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    with tempfile.TemporaryDirectory(prefix="idle-memory-") as tmp:
        proc, port = start(args, Path(tmp) / "server.log")
        socks: list[socket.socket] = []
        try:
            deadline = time.monotonic() + 600
            worker = worker_of(proc.pid, time.monotonic() + 10)
            # warm up what the first requests allocate once (connections come and go)
            for _ in range(200):
                with socket.create_connection((HOST, port), timeout=10) as s:
                    get(s, deadline)
            before = steady(worker, args.settle, time.monotonic() + 60)
            for _ in range(args.connections):
                s = socket.create_connection((HOST, port), timeout=30)
                socks.append(s)
                get(s, deadline)
            after = steady(worker, args.settle, time.monotonic() + 120)
            if proc.poll() is not None:
                raise SystemExit("the server exited while measured")
            n = args.connections
            if (kept := still_open(socks)) != n:
                raise SystemExit(f"the server closed {n - kept} of the {n} connections")
            rss = (after["Rss"] - before["Rss"]) / n
            pss = (after["Pss"] - before["Pss"]) / n
            print(f"worker {worker}: Rss {before['Rss']} -> {after['Rss']} KiB, "
                  f"Pss {before['Pss']} -> {after['Pss']} KiB with {n} idle connections")
            print(f"per connection: {rss:.2f} KiB Rss, {pss:.2f} KiB Pss")
        finally:
            for s in socks:
                s.close()
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
