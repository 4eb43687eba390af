"""USR2 binary upgrade and WINCH: a second master re-executed with the listening sockets,
pidfiles `FILE` / `FILE.2`, promotion when the old master leaves."""

from __future__ import annotations

import os
import re
import signal

import pytest
from conftest import get, wait_until
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
from test_procs import get_at

pytestmark = pytest.mark.timeout(90)

APP = "p_apps:app"


def new_master_pid(srv) -> int:
    def find():
        pids = [int(m.group(1)) for line in list(srv.lines)
                for m in [re.search(r"Listening at: \S+ \((\d+)\)", line)] if m]
        others = [p for p in pids if p != srv.proc.pid]
        return others[0] if others else None

    return wait_until(find, 30, message="a second master")


def test_usr2_starts_a_second_master_on_the_same_sockets(run_server, tmp_path):
    pidfile = tmp_path / "app.pid"
    sock = tmp_path / "u.sock"
    srv = run_server("-b", "127.0.0.1:0", "-b", f"unix:{sock}", "-w", "1", "-p", str(pidfile), APP, listeners=2)
    old = srv.proc.pid
    srv.wait_for_line("Booting worker")
    mark = len(srv.lines)
    srv.signal(signal.SIGUSR2)
    new = new_master_pid(srv)
    srv.wait_for_line(rf"Listening at: {re.escape(','.join(srv.addresses))} \({new}\)", start=mark)
    assert read_pid(pidfile) == old
    wait_until(lambda: read_pid(tmp_path / "app.pid.2") == new, 20, message="app.pid.2")
    assert os.getppid() != new and os.getppid() != old
    wait_until(lambda: children(new), 20, message="the new master's workers")
    # Both masters serve; the second one is titled NAME.2.
    from procs_util import ps_args
    assert ps_args(new).startswith(f"ferrocorn: master [{APP}.2]"), ps_args(new)
    ppids = set()
    for _ in range(60):
        status, _, body = get(srv, "/ppid")
        assert status == 200
        ppids.add(int(body))
    assert ppids <= {old, new}
    # A second USR2 to the old master is refused while its child runs.
    srv.signal(signal.SIGUSR2)
    srv.wait_for_line("USR2 signal ignored. Child exists.", start=mark)
    # The old master stops; the new one is promoted and takes the pidfile.
    srv.signal(signal.SIGTERM)
    srv.wait(30)
    wait_until(lambda: read_pid(pidfile) == new, 20, message="the pidfile naming the new master")
    assert not (tmp_path / "app.pid.2").exists()
    assert any("Master has been promoted." in line for line in srv.lines)
    assert sock.exists(), "the old master leaves the shared unix socket in place"
    for address in srv.addresses:
        assert get_at(address, "/") == (200, b"ok")
    os.kill(new, signal.SIGTERM)
    wait_gone(new)
    assert not pidfile.exists()


def test_winch_is_ignored_when_not_daemonized(run_server):
    srv = run_server("-w", "1", "--log-level", "debug", APP)
    worker = int(srv.wait_for_line(r"Booting worker with pid: (\d+)").group(1))
    srv.signal(signal.SIGWINCH)
    srv.wait_for_line("SIGWINCH ignored. Not daemonized")
    assert alive(worker)
    status, _, _ = get(srv, "/")
    assert status == 200


def test_daemon_usr2_winch_term_upgrade(tmp_path):
    pidfile = tmp_path / "app.pid"
    log = tmp_path / "error.log"
    old = start_daemon(["-b", "127.0.0.1:0", "-w", "2", "--error-logfile", str(log), APP], tmp_path, pidfile)
    new = None
    try:
        address = log_listening(log)
        wait_log(log, "Booting worker", count=2)
        os.kill(old, signal.SIGUSR2)
        new = wait_until(lambda: read_pid(tmp_path / "app.pid.2"), 30, message="app.pid.2")
        wait_log(log, "Booting worker", count=4)
        old_workers = children(old)
        old_workers.remove(new)
        os.kill(old, signal.SIGWINCH)
        wait_log(log, "graceful stop of workers")
        for pid in old_workers:
            wait_gone(pid)
        assert alive(old), "WINCH stops the workers, not the master"
        assert get_at(address, "/ppid") == (200, str(new).encode())
        os.kill(old, signal.SIGTERM)
        wait_gone(old)
        wait_until(lambda: read_pid(pidfile) == new, 20, message="promotion")
        assert get_at(address, "/") == (200, b"ok")
        os.kill(new, signal.SIGTERM)
        wait_gone(new)
    finally:
        kill_group_of(old)
        if new:
            kill_group_of(new)
