"""Runs the Autobahn WebSocket test suite's fuzzing client against a server and sums up.

    python tests/autobahn/run.py --url ws://127.0.0.1:9001/
    python tests/autobahn/run.py --serve 'uvicorn echo:app --port {port}'

`--serve` starts the command (with `{port}` replaced by a free port), waits for it to listen,
runs the suite against `ws://127.0.0.1:{port}/` and stops it. The suite's `wstest` runs on
Python 2.7: the first run makes a virtualenv for it from pyenv's 2.7 (`--venv`, kept for later
runs) and installs `autobahntestsuite` there.

The cases are 1-7, 10, 12 and 13 (`--cases` to change): framing, pings, reserved bits,
opcodes, fragmentation, UTF-8, closing, auto-fragmentation and permessage-deflate. Prints the
count of each result and the cases that were not OK; exits non-zero when any case is FAILED,
NON-STRICT or UNIMPLEMENTED, or the run does not finish within `--timeout` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*", "12.*", "13.*"]
BAD = ("FAILED", "NON-STRICT", "UNIMPLEMENTED")
RESULTS = ("OK", "INFORMATIONAL", *BAD)
# The last releases that still run on Python 2.7.
VIRTUALENV = "virtualenv==16.7.12"
# wsaccel masks and validates in C: without it the client spends minutes masking the
# large messages of cases 12 and 13 in Python.
SUITE = ["autobahntestsuite", "wsaccel"]
DEFAULT_VENV = Path(tempfile.gettempdir()) / "ferrocorn-autobahn-py27"


def python27() -> str:
    """pyenv's Python 2.7 interpreter."""
    if shutil.which("pyenv") is None:
        sys.exit("no Python 2.7 found: pyenv is not on PATH (install pyenv, then "
                 "pyenv install 2.7.18)")
    for version in ("2.7", "2.7.18"):
        found = subprocess.run(
            ["pyenv", "prefix", version], capture_output=True, text=True, check=False
        )
        if found.returncode == 0:
            return str(Path(found.stdout.strip().splitlines()[-1]) / "bin" / "python2.7")
    sys.exit("no Python 2.7 found: pyenv prefix 2.7 failed (install it with pyenv install 2.7.18)")


def wstest(venv: Path) -> Path:
    """The `wstest` of the suite's virtualenv, made first if missing."""
    tool = venv / "bin" / "wstest"
    if tool.exists():
        return tool
    python = python27()
    with tempfile.TemporaryDirectory() as scratch:
        # virtualenv itself goes to a scratch folder, leaving pyenv's 2.7 untouched.
        pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, "--target", scratch, VIRTUALENV], check=True)
        env = {**os.environ, "PYTHONPATH": scratch}
        subprocess.run([python, "-m", "virtualenv", "-q", str(venv)], check=True, env=env)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", *SUITE],
        check=True,
    )
    return tool


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, server: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the server exited with status {server.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"the server did not listen on port {port} within {timeout:.0f} s")


def run_suite(
    tool: Path, url: str, agent: str, cases: list[str], out: Path, timeout: float
) -> dict:
    spec = {
        "outdir": str(out / "reports"),
        "servers": [{"agent": agent, "url": url}],
        "cases": cases,
        "exclude-cases": [],
        "exclude-agent-cases": {},
    }
    spec_path = out / "fuzzingclient.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    command = [str(tool), "-m", "fuzzingclient", "-s", str(spec_path)]
    try:
        subprocess.run(command, cwd=out, check=True, timeout=timeout, stdout=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        sys.exit(f"the suite did not finish within {timeout:.0f} s")
    index = json.loads((out / "reports" / "index.json").read_text())
    return dict(index[agent])


def summarise(results: dict) -> tuple[Counter[str], list[str]]:
    """Counts of each result, and a line for each case that was not OK."""
    counts: Counter[str] = Counter()
    notes = []

    def order(case: str) -> list[int]:
        return [int(part) for part in case.split(".")]

    for case in sorted(results, key=order):
        result = results[case]
        counts[result["behavior"]] += 1
        if result["behavior"] != "OK" or result.get("behaviorClose") not in ("OK", "INFORMATIONAL"):
            notes.append(
                f"  {case}: {result['behavior']} (close: {result.get('behaviorClose')}, "
                f"code {result.get('remoteCloseCode')})"
            )
    return counts, notes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a WebSocket echo endpoint, ws://host:port/path")
    target.add_argument("--serve", help="a command serving an echo endpoint on {port}")
    parser.add_argument("--agent", default="server", help="the server's name in the report")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case ids")
    parser.add_argument("--timeout", type=float, default=2400, help="seconds for the whole run")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="Python 2.7 virtualenv")
    parser.add_argument("--keep", type=Path, help="keep the reports in this folder")
    args = parser.parse_args()

    tool = wstest(args.venv)
    server = None
    url = args.url
    port = free_port()
    if args.serve:
        server = subprocess.Popen(shlex.split(args.serve.replace("{port}", str(port))))
        url = f"ws://127.0.0.1:{port}/"
    out = Path(tempfile.mkdtemp(prefix="autobahn-"))
    try:
        if server is not None:
            wait_listening(port, server, 30)
        results = run_suite(tool, url, args.agent, args.cases.split(","), out, args.timeout)
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        if args.keep:
            shutil.copytree(out, args.keep, dirs_exist_ok=True)
        shutil.rmtree(out, ignore_errors=True)

    counts, notes = summarise(results)
    print(f"Autobahn {args.agent} ({url}): {len(results)} cases")
    print("  " + ", ".join(f"{name} {counts.get(name, 0)}" for name in RESULTS))
    for name in sorted(set(counts) - set(RESULTS)):
        print(f"  {name} {counts[name]}")
    if notes:
        print("Not OK:")
        print("\n".join(notes))
    return 1 if any(counts.get(name) for name in BAD) else 0


if __name__ == "__main__":
    sys.exit(main())
