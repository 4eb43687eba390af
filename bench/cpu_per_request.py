#!/usr/bin/env python3
"""CPU time per request of one server configuration, for profiling and A/B comparisons.

Starts the server pinned to core 0 (as bench/run.py does), warms it up, then drives exactly
N requests with wrk pinned to core 1 and reads utime + stime of the server's processes from
/proc/PID/stat before and after. CPU time is what the server itself spent, so unlike req/s it
stays meaningful on a machine that other work shares.

    bench/.venv/bin/python bench/cpu_per_request.py                      # ferrocorn sync, hello
    bench/.venv/bin/python bench/cpu_per_request.py --server gunicorn-sync -n 50000
    bench/.venv/bin/python bench/cpu_per_request.py --scenario post-64kib --repeat 3

Run `bash bench/run.sh --quick --only hello` once first: it installs bench/.venv.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as harness  # the harness sits next to this file


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", default="ferrocorn-sync",
                   help="configuration: " + ", ".join(c.key for c in harness.CONFIGS))
    p.add_argument("--scenario", default="hello",
                   help="app and load shape: " + ", ".join(s.key for s in harness.SCENARIOS))
    p.add_argument("-n", "--requests", type=int, default=100_000, help="requests to measure")
    p.add_argument("-c", "--connections", type=int, default=None,
                   help="wrk connections (default: the scenario's)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds")
    p.add_argument("--repeat", type=int, default=1, help="measure this many times")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    configs = {c.key: c for c in harness.CONFIGS}
    scenarios = {s.key: s for s in harness.SCENARIOS}
    if args.server not in configs or args.scenario not in scenarios:
        print("unknown --server or --scenario (see --help)", file=sys.stderr)
        return 2
    if shutil.which("wrk") is None:
        print("wrk is missing: run bash bench/run.sh first", file=sys.stderr)
        return 1
    config, sc = configs[args.server], scenarios[args.scenario]
    if sc.load != "wrk" or sc.proto != "h1":
        print(f"--scenario {sc.key}: only the plain HTTP/1.1 scenarios driven by wrk are counted "
              "here", file=sys.stderr)
        return 1
    if sc.interface != config.interface:
        print(f"--server {config.key} serves the {config.interface.upper()} scenarios, not "
              f"{sc.key}", file=sys.stderr)
        return 1
    conns = args.connections or sc.connections
    python = sys.executable
    bindir = str(Path(python).parent)
    if sc.tls and config.tls_flags is None:
        print(f"--server {config.key} does not serve TLS itself", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="ferrocorn-cpu-"))
    launch = harness.Launch(port=harness.free_port(), module=sc.module, python=python,
                            bindir=bindir, tls=harness.make_certificate(tmp) if sc.tls else None)
    data = tmp / "file.bin"
    with data.open("wb") as f:
        f.write(os.urandom(harness.FILE_SIZE))
    env = dict(os.environ, BENCH_FILE=str(data), PATH=bindir + os.pathsep + os.environ["PATH"])
    # the counting script replaces the scenario's own script, so it sends the POST body itself
    extra = [a for a in sc.wrk_extra if not a.endswith(".lua") and a != "-s"]
    wrk_env = dict(os.environ, BENCH_REQUESTS=str(args.requests),
                   BENCH_POST_BYTES="65536" if any(a.endswith("post64k.lua")
                                                   for a in sc.wrk_extra) else "0")
    server = harness.Server(config, launch, env, tmp)
    url = server.url()
    try:
        server.wait_ready()
        root = server.proc.pid
        # the warm-up also tells the rate, so that the counted run gets a long enough -d
        warm = subprocess.run(
            ["taskset", "-c", harness.CLIENT_CPU, "wrk", "-t1", f"-c{conns}",
             f"-d{args.warmup:g}s", "-s", str(harness.BENCH / "count.lua"), *extra, url],
            env=dict(wrk_env, BENCH_REQUESTS="0"), check=True, capture_output=True, text=True,
            timeout=args.warmup + 30)
        rate = max(harness.parse_wrk(warm.stdout).rps, 1.0)
        seconds = args.requests / rate * 1.5 + 2
        results = []
        for i in range(args.repeat):
            pids = harness.process_tree(root)
            workers = [p for p in pids if p != root] or [root]
            before = {p: harness.cpu_ticks(p) for p in pids}
            t0 = time.monotonic()
            out = subprocess.run(
                ["taskset", "-c", harness.CLIENT_CPU, "wrk", "-t1", f"-c{conns}",
                 f"-d{seconds:.0f}s", "-s", str(harness.BENCH / "count.lua"), *extra, url],
                env=wrk_env, check=True, capture_output=True, text=True, timeout=seconds + 30)
            wall = time.monotonic() - t0
            after = {p: harness.cpu_ticks(p) for p in pids}
            res = harness.parse_wrk(out.stdout)
            n = res.requests or 1
            tck = harness.CLK_TCK

            def us(group: list[int], n: int = n, tck: int = tck,
                   after: dict[int, int] = after, before: dict[int, int] = before) -> float:
                return sum(after[p] - before[p] for p in group) / tck / n * 1e6

            w_us, total_us = us(workers), us(pids)
            results.append(w_us)
            print(f"run {i + 1}: {res.requests} requests ({res.errors} errors) in {wall:.1f} s; "
                  f"worker {w_us:.1f} µs CPU/request, all server processes {total_us:.1f} µs "
                  f"({len(workers)} worker process(es) of {len(pids)})", flush=True)
        if len(results) > 1:
            print(f"median worker CPU: {statistics.median(results):.1f} µs/request "
                  f"(min {min(results):.1f}, max {max(results):.1f})")
        print(f"server: {config.key} ({' '.join(server.argv)}); scenario {sc.key}, "
              f"{conns} connections; clock tick {1e6 / harness.CLK_TCK:.0f} µs")
    except (harness.ServerError, subprocess.SubprocessError, ValueError) as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
