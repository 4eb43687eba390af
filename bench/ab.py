#!/usr/bin/env python3
"""Two or more builds (or servers) side by side on one scenario, in interleaved short runs.

On a machine that other work shares, throughput drifts by 10-20 % from one minute to the next,
so two builds measured in separate full runs differ by whatever period each fell in. Here every
side is started once, all pinned to the same core, and the load visits them in turn, several
rounds of a few seconds each (the order reversed every other round). Each round gives every
side's req/s and server CPU per request; the ratios within a round compare like with like, and
their median is the figure to quote.

    bench/.venv/bin/python bench/ab.py --side new=bench/.venv/bin/python \\
        --side old=/tmp/old-venv/bin/python                      # ferrocorn sync, hello
    bench/.venv/bin/python bench/ab.py --side new=bench/.venv/bin/python \\
        --side bjoern=bjoern@bench/.venv/bin/python --rounds 16

A side is LABEL=PYTHON (the `--server` configuration from that Python's environment) or
LABEL=CONFIG@PYTHON. The first side is the one the others are compared with. Needs wrk and
taskset, as bench/run.py does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as harness  # the harness sits next to this file


@dataclass
class Side:
    label: str
    config: harness.Config
    python: str
    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)


def parse_side(text: str, default: str, configs: dict[str, harness.Config]) -> Side:
    label, sep, rest = text.partition("=")
    if not sep or not label or not rest:
        raise ValueError(f"--side {text!r}: expected LABEL=PYTHON or LABEL=CONFIG@PYTHON")
    key, at, python = rest.rpartition("@")
    key = key if at else default
    if key not in configs:
        raise ValueError(f"--side {text!r}: unknown configuration {key!r}")
    python = os.path.abspath(python)
    if not os.access(python, os.X_OK):
        raise ValueError(f"--side {text!r}: {python} is not an executable Python")
    return Side(label, configs[key], python)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--side", action="append", required=True,
                   help="LABEL=PYTHON or LABEL=CONFIG@PYTHON; two or more")
    p.add_argument("--server", default="ferrocorn-sync",
                   help="configuration of the sides that name none: "
                        + ", ".join(c.key for c in harness.CONFIGS))
    p.add_argument("--scenario", default="hello",
                   help="app and load shape (plain HTTP/1.1 wrk scenarios): "
                        + ", ".join(s.key for s in harness.SCENARIOS))
    p.add_argument("--rounds", type=int, default=10, help="rounds (each side once per round)")
    p.add_argument("--seconds", type=int, default=3, help="length of one run")
    return p.parse_args()


def wrk(url: str, conns: int, seconds: int, extra: list[str]) -> harness.WrkResult:
    out = subprocess.run(
        ["taskset", "-c", harness.CLIENT_CPU, "wrk", "-t1", f"-c{conns}", f"-d{seconds}s",
         "--timeout", "5s", *extra, url],
        check=True, capture_output=True, text=True, timeout=seconds + 30)
    return harness.parse_wrk(out.stdout)


def measure(side: Side, server: harness.Server, conns: int, seconds: int,
            extra: list[str]) -> str:
    pids = harness.process_tree(server.proc.pid)
    before = sum(harness.cpu_ticks(p) for p in pids)
    res = wrk(server.url(), conns, seconds, extra)
    after = sum(harness.cpu_ticks(p) for p in pids)
    if res.errors:
        raise harness.ServerError(f"{side.label}: {res.errors} errors in a run")
    side.rps.append(res.rps)
    side.cpu_us.append((after - before) / harness.CLK_TCK / max(res.requests, 1) * 1e6)
    return f"{side.label} {res.rps:,.0f} req/s {side.cpu_us[-1]:.1f} µs"


def report(sides: list[Side]) -> None:
    base = sides[0]
    print(f"\nmedians over {len(base.rps)} rounds; ratios are taken within each round, "
          f"against {base.label}:")
    for s in sides:
        rps_ratio = statistics.median(a / b for a, b in zip(s.rps, base.rps))
        cpu_ratio = statistics.median(a / b for a, b in zip(s.cpu_us, base.cpu_us))
        print(f"  {s.label:>12}: {statistics.median(s.rps):>10,.0f} req/s "
              f"({min(s.rps):,.0f}-{max(s.rps):,.0f}), {statistics.median(s.cpu_us):6.2f} µs "
              f"CPU/request; req/s ×{rps_ratio:.3f}, CPU ×{cpu_ratio:.3f}")


def main() -> int:
    args = parse_args()
    configs = {c.key: c for c in harness.CONFIGS}
    scenarios = {s.key: s for s in harness.SCENARIOS}
    try:
        sides = [parse_side(t, args.server, configs) for t in args.side]
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    sc = scenarios.get(args.scenario)
    if sc is None or sc.load != "wrk" or sc.proto != "h1" or sc.tls:
        print(f"--scenario {args.scenario}: only the plain HTTP/1.1 wrk scenarios",
              file=sys.stderr)
        return 2
    if len(sides) < 2 or args.rounds < 1 or args.seconds < 1:
        print("two or more --side, and --rounds and --seconds of at least 1", file=sys.stderr)
        return 2
    if shutil.which("wrk") is None:
        print("wrk is missing: run bash bench/run.sh first", file=sys.stderr)
        return 1
    extra = list(sc.wrk_extra)
    tmp = Path(tempfile.mkdtemp(prefix="ferrocorn-ab-"))
    servers: list[harness.Server] = []
    try:
        for side in sides:
            bindir = str(Path(side.python).parent)
            launch = harness.Launch(port=harness.free_port(), module=sc.module,
                                    python=side.python, bindir=bindir)
            env = dict(os.environ, PATH=bindir + os.pathsep + os.environ["PATH"])
            servers.append(harness.Server(side.config, launch, env, tmp))
        for server in servers:
            server.wait_ready()
            wrk(server.url(), sc.connections, 1, extra)  # warm-up
        pairs = list(zip(sides, servers))
        for r in range(args.rounds):
            order = pairs if r % 2 == 0 else pairs[::-1]
            line = [measure(side, server, sc.connections, args.seconds, extra)
                    for side, server in order]
            print(f"round {r + 1}: " + "; ".join(line), flush=True)
        report(sides)
        print(f"scenario {sc.key}, {sc.connections} connections, {args.seconds} s runs; "
              + "; ".join(f"{s.label}: {' '.join(v.argv)}" for s, v in zip(sides, servers)))
    except (harness.ServerError, subprocess.SubprocessError, ValueError) as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
