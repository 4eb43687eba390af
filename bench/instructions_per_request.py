#!/usr/bin/env python3
"""User-space instructions per request of a ferrocorn worker, counted by valgrind's callgrind.

Instruction counts do not depend on what else the machine is doing, so they show a change of
a few percent in the request path that CPU time on a shared machine would hide. The kernel's
part (system calls, TCP) is not counted.

The worker runs under callgrind twice, serving SHORT and then LONG keep-alive requests from one
client connection; the difference between the two totals, divided by LONG - SHORT, is the cost
of one request without start-up and shutdown.

    bench/.venv/bin/python bench/instructions_per_request.py                 # hello, sync
    bench/.venv/bin/python bench/instructions_per_request.py --app flask_hello:app
    bench/.venv/bin/python bench/instructions_per_request.py -- -k gthread --threads 8
    bench/.venv/bin/python bench/instructions_per_request.py --app hello_asgi:app -- -k asgi

Needs valgrind (`apt-get install valgrind`) and bench/.venv (`bash bench/run.sh` creates it).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def drive(port: int, count: int, deadline: float) -> None:
    """`count` GET requests on one keep-alive connection, each read to the end of its body."""
    request = b"GET / HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (HOST.encode(), port)
    with socket.create_connection((HOST, port), timeout=60) as s:
        for _ in range(count):
            s.sendall(request)
            read_response(s, deadline)


def read_response(s: socket.socket, deadline: float) -> None:
    """Reads one whole response with a Content-Length body."""
    data = b""
    while True:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end].lower()
            length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
            if len(data) >= head_end + 4 + length:
                return
        if time.monotonic() > deadline:
            raise SystemExit("the server stopped answering")
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("the server closed the connection")
        data += chunk


def worker_instructions(args: argparse.Namespace, count: int) -> int:
    """Total instructions of the worker process that served `count` requests."""
    ferrocorn = Path(sys.executable).parent / "ferrocorn"
    port = free_port()
    with tempfile.TemporaryDirectory() as out:
        # callgrind's default output name (callgrind.out.PID, in the working directory):
        # the worker retitles itself over its argv, which an explicit name would not survive.
        cmd = ["valgrind", "--tool=callgrind", str(ferrocorn), "--pythonpath", str(BENCH / "apps"), "-w", "1",
               "-b", f"{HOST}:{port}", "--log-level", "warning", "--timeout", "600",
               *args.server_args, args.app]
        master = subprocess.Popen(cmd, cwd=out, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    socket.create_connection((HOST, port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or master.poll() is not None:
                        raise SystemExit("the server did not start under valgrind") from None
                    time.sleep(0.5)
            drive(port, count, time.monotonic() + 600)
        finally:
            master.terminate()
            master.wait(timeout=120)
        totals, dumps = {}, {}
        for dump in Path(out).glob("callgrind.out.*"):
            for line in dump.read_text(errors="replace").splitlines():
                if line.startswith("summary:"):
                    pid = int(dump.name.rsplit(".", 1)[1])
                    totals[pid], dumps[pid] = int(line.split()[1]), dump
        workers = {pid: n for pid, n in totals.items() if pid != master.pid}
        if len(workers) != 1:
            raise SystemExit(f"expected one worker's profile, found {sorted(totals)}")
        pid, total = next(iter(workers.items()))
        if args.save:
            shutil.copyfile(dumps[pid], f"{args.save}.{count}")
        return total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--app", default="hello:app", help="MODULE:app in bench/apps")
    p.add_argument("--short", type=int, default=1000, help="requests of the first run")
    p.add_argument("--long", type=int, default=3000, help="requests of the second run")
    p.add_argument("--save", metavar="PREFIX",
                   help="keep the worker's callgrind profiles as PREFIX.SHORT and PREFIX.LONG "
                        "(request counts), for callgrind_annotate: the difference between the "
                        "two is the request path")
    p.add_argument("server_args", nargs="*", help="more ferrocorn arguments (after --)")
    args = p.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is missing: apt-get install valgrind", file=sys.stderr)
        return 1
    short = worker_instructions(args, args.short)
    long = worker_instructions(args, args.long)
    per_request = (long - short) / (args.long - args.short)
    print(f"{per_request:,.0f} instructions per request ({args.app}, "
          f"{' '.join(args.server_args) or 'sync'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
