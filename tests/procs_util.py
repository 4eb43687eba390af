"""Helpers shared by test_procs*.py, test_systemd.py and test_zero_downtime.py."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

from conftest import SERVER_COMMAND, server_env, wait_until


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0): look at its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def ps_args(pid: int) -> str:
    """The command line `ps -o args` shows for `pid`."""
    out = subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True)
    return out.stdout.strip()


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def kill_group_of(pid: int) -> None:
    """Kills the process group `pid` belongs to (a daemon's workers share it)."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    if pgid == os.getpgid(0):
        os.kill(pid, signal.SIGKILL)
        return
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def start_daemon(args: list[str], cwd: Path, pidfile: Path, extra_env: dict | None = None) -> int:
    """Runs `ferrocorn -D ...`, which returns at once; returns the daemon master's pid."""
    proc = subprocess.run(SERVER_COMMAND + ["-D", "-p", str(pidfile)] + args, cwd=str(cwd),
                          env=server_env(extra_env), stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=30)
    assert proc.returncode == 0, proc
    return wait_until(lambda: read_pid(pidfile), 30, message="the daemon's pidfile")


def log_listening(logfile: Path, timeout: float = 30) -> str:
    def found():
        try:
            m = re.search(r"Listening at: (\S+) \(\d+\)", logfile.read_text())
        except OSError:
            return None
        return m and m.group(1).split(",")[0]

    return wait_until(found, timeout, message="a Listening at line")


def wait_log(logfile: Path, pattern: str, timeout: float = 30, count: int = 1) -> list[re.Match]:
    regex = re.compile(pattern)

    def found():
        try:
            text = logfile.read_text()
        except OSError:
            return None
        hits = list(regex.finditer(text))
        return hits if len(hits) >= count else None

    return wait_until(found, timeout, message=f"{count}x {pattern!r} in {logfile}")


def wait_gone(pid: int, timeout: float = 30) -> None:
    wait_until(lambda: not alive(pid), timeout, message=f"pid {pid} to exit")
