"""Process management: HUP config reload, --preload, pidfile, daemon, titles, umask, user,
timeouts, max-requests, --reuse-port, --reload. Real master, real signals; outcomes read from
responses, `ps`, pidfiles and the log."""

from __future__ import annotations

import os
import pwd
import signal
import stat
import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import SocketReader, booted_worker_pids, connect_to, get, run_command, wait_until
from procs_util import (
    alive,
    children,
    kill_group_of,
    log_listening,
    ps_args,
    read_pid,
    start_daemon,
    wait_gone,
)

pytestmark = pytest.mark.timeout(90)

APP = "p_apps:app"


def body(srv, path: str) -> str:
    status, _, data = get(srv, path)
    assert status == 200
    return data.decode()


def get_at(address: str, path: str) -> tuple[int, bytes]:
    with connect_to(address) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        status, _, data, _ = SocketReader(s).response()
    return status, data


# --- HUP ------------------------------------------------------------------------------------

def test_hup_rereads_the_config_file(run_server, tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text('workers = 1\nraw_env = ["P_VALUE=one"]\n')
    srv = run_server("-c", str(conf), APP)
    srv.wait_for_line(r"Booting worker")
    assert body(srv, "/env/P_VALUE") == "one"
    conf.write_text('workers = 2\nraw_env = ["P_VALUE=two"]\n')
    mark = len(srv.lines)
    srv.signal(signal.SIGHUP)
    srv.wait_for_line(r"Handling signal: hup", start=mark)
    srv.wait_for_line(r"Hang up: Master", start=mark)
    wait_until(lambda: len(booted_worker_pids(srv, mark)) >= 2, 30, message="two new workers")
    new = set(booted_worker_pids(srv, mark))
    # The old worker goes; two workers run with the new environment.
    wait_until(lambda: set(children(srv.proc.pid)) == new, 30, message="only the new workers left")
    for _ in range(6):
        assert body(srv, "/env/P_VALUE") == "two"


def write_versioned_app(path: Path, version: int) -> None:
    path.write_text(textwrap.dedent(f"""
        import os
        VERSION = "{version}"
        IMPORT_PID = os.getpid()
        def app(environ, start_response):
            data = ("%s %s" % (VERSION, IMPORT_PID)).encode()
            start_response("200 OK", [("Content-Length", str(len(data)))])
            return [data]
    """))
    # A new mtime even within the same second, so no stale bytecode is used.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + version * 2_000_000_000))


@pytest.mark.parametrize("preload", [False, True], ids=["fresh", "preload"])
def test_hup_reloads_code_unless_preloaded(run_server, tmp_path, preload):
    mod = tmp_path / "p_versioned.py"
    write_versioned_app(mod, 1)
    args = ["--preload"] if preload else []
    srv = run_server(*args, "-w", "1", "--pythonpath", str(tmp_path), "p_versioned:app")
    srv.wait_for_line(r"Booting worker")
    version, import_pid = body(srv, "/").split()
    assert version == "1"
    if preload:
        assert int(import_pid) == srv.proc.pid, "--preload imports the app in the master"
    write_versioned_app(mod, 2)
    mark = len(srv.lines)
    srv.signal(signal.SIGHUP)
    new = wait_until(lambda: booted_worker_pids(srv, mark), 30, message="a new worker")
    wait_until(lambda: set(children(srv.proc.pid)) == set(new), 30, message="the old worker to leave")
    assert body(srv, "/").split()[0] == ("1" if preload else "2")


def test_preload_imports_once_in_the_master(run_server):
    srv = run_server("--preload", "-w", "2", APP)
    wait_until(lambda: len(booted_worker_pids(srv)) == 2, 30, message="two workers")
    pids = {int(body(srv, "/pid")) for _ in range(10)}
    assert pids <= set(booted_worker_pids(srv))
    for _ in range(4):
        assert int(body(srv, "/import-pid")) == srv.proc.pid


def test_without_preload_each_worker_imports(run_server):
    srv = run_server("-w", "1", APP)
    srv.wait_for_line(r"Booting worker")
    assert int(body(srv, "/import-pid")) == int(body(srv, "/pid"))


# --- pidfile -------------------------------------------------------------------------------

def test_pidfile_written_and_removed(run_server, tmp_path):
    pidfile = tmp_path / "run" / "app.pid"
    pidfile.parent.mkdir()
    srv = run_server("-p", str(pidfile), APP)
    assert read_pid(pidfile) == srv.proc.pid
    assert stat.S_IMODE(pidfile.stat().st_mode) == 0o644
    assert [p.name for p in pidfile.parent.iterdir()] == ["app.pid"], "no temporary file left"
    assert srv.stop() == 0
    assert not pidfile.exists()


def test_pidfile_naming_a_live_process_refuses_to_start(tmp_path):
    pidfile = tmp_path / "app.pid"
    pidfile.write_text(f"{os.getpid()}\n")
    res = run_command(["-b", "127.0.0.1:0", "-p", str(pidfile), APP], cwd=tmp_path)
    assert res.returncode != 0
    assert f"Already running on PID {os.getpid()}" in res.stdout, res.stdout
    assert str(pidfile) in res.stdout
    assert read_pid(pidfile) == os.getpid(), "the other process's pidfile is left alone"


def test_stale_pidfile_is_replaced(run_server, tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    pidfile = tmp_path / "app.pid"
    pidfile.write_text(f"{dead.pid}\n")
    srv = run_server("-p", str(pidfile), APP)
    assert read_pid(pidfile) == srv.proc.pid


# --- daemon, titles, umask, user -------------------------------------------------------------

def test_daemon_detaches_and_serves(tmp_path):
    pidfile = tmp_path / "d.pid"
    log = tmp_path / "error.log"
    pid = start_daemon(["-b", "127.0.0.1:0", "-w", "1", "--error-logfile", str(log), APP], tmp_path, pidfile)
    try:
        assert alive(pid)
        assert os.getsid(pid) != os.getsid(0), "the daemon has its own session"
        assert os.getppid() != pid
        address = log_listening(log)
        assert get_at(address, "/") == (200, b"ok")
        # Standard streams go to /dev/null.
        assert os.readlink(f"/proc/{pid}/fd/1") == "/dev/null"
        os.kill(pid, signal.SIGTERM)
        wait_gone(pid)
        wait_until(lambda: not pidfile.exists(), 10, message="pidfile removed")
    finally:
        kill_group_of(pid)


def test_process_titles(run_server):
    srv = run_server("-w", "2", "-n", "shop", APP)
    wait_until(lambda: len(booted_worker_pids(srv)) == 2, 30, message="two workers")
    assert ps_args(srv.proc.pid).startswith("ferrocorn: master [shop]"), ps_args(srv.proc.pid)
    for pid in booted_worker_pids(srv):
        assert ps_args(pid).startswith("ferrocorn: worker [shop]"), ps_args(pid)
    comm = Path(f"/proc/{srv.proc.pid}/comm").read_text().strip()
    assert comm == "ferrocorn: mast"


def test_default_title_names_the_app(run_server):
    srv = run_server("-w", "1", APP)
    srv.wait_for_line("Booting worker")
    wait_until(lambda: ps_args(srv.proc.pid).startswith(f"ferrocorn: master [{APP}]"), 5,
               message=ps_args(srv.proc.pid))


def test_umask_sets_unix_socket_mode(run_server, tmp_path):
    sock = tmp_path / "s.sock"
    srv = run_server("-b", f"unix:{sock}", "-m", "077", APP)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o700
    assert body(srv, "/") == "ok"


def _world_traversable(path: str) -> bool:
    p = Path(path).resolve()
    return all(os.stat(d).st_mode & 0o005 == 0o005 for d in [p, *p.parents])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to change users")
def test_group_applies_to_workers_only(run_server):
    nobody = pwd.getpwnam("nobody")
    srv = run_server("-g", str(nobody.pw_gid), "-w", "1", APP)
    srv.wait_for_line("Booting worker")
    assert body(srv, "/uid") == f"0:{nobody.pw_gid}"
    status = Path(f"/proc/{srv.proc.pid}/status").read_text()
    assert status.split("Gid:")[1].split()[0] == "0", "the master keeps its group"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to change users")
def test_user_and_group_apply_to_workers_only(run_server, tmp_path):
    nobody = pwd.getpwnam("nobody")
    tmp_path.chmod(0o755)
    # Where nobody cannot read the interpreter's files (a Python under /root), the app is
    # loaded by the master before the worker switches user, as a --preload deployment does.
    readable = _world_traversable(os.path.dirname(os.__file__))
    preload = [] if readable else ["--preload"]
    srv = run_server("-u", "nobody", "-g", str(nobody.pw_gid), "-w", "1", *preload, APP)
    srv.wait_for_line("Booting worker")
    assert body(srv, "/uid") == f"{nobody.pw_uid}:{nobody.pw_gid}"
    master_uid = int(Path(f"/proc/{srv.proc.pid}/status").read_text().split("Uid:")[1].split()[0])
    assert master_uid == 0


def test_worker_tmp_dir_is_accepted(run_server, tmp_path):
    srv = run_server("--worker-tmp-dir", str(tmp_path), APP)
    assert body(srv, "/") == "ok"
    assert "no effect" not in srv.log


# --- timeouts and max-requests -----------------------------------------------------------------

def test_timeout_zero_disables_the_heartbeat_check(run_server):
    srv = run_server("-k", "sync", "-w", "1", "-t", "0", APP)
    srv.wait_for_line("Booting worker")
    assert body(srv, "/sleep/3") == "slept"
    assert "WORKER TIMEOUT" not in srv.log


def test_long_sync_call_triggers_worker_timeout(run_server):
    srv = run_server("-k", "sync", "-w", "1", "-t", "1", APP)
    srv.wait_for_line("Booting worker")
    old = booted_worker_pids(srv)[0]
    with srv.connect() as s:
        s.sendall(b"GET /sleep/30 HTTP/1.1\r\nHost: x\r\n\r\n")
        srv.wait_for_line(rf"WORKER TIMEOUT \(pid:{old}\)", timeout=20)
    wait_until(lambda: [p for p in booted_worker_pids(srv) if p != old], 20, message="a replacement")
    assert body(srv, "/") == "ok"


def test_max_requests_replaces_the_worker(run_server, worker_args):
    srv = run_server(*worker_args, "-w", "1", "--max-requests", "5", APP)
    srv.wait_for_line("Booting worker")
    seen = [int(body(srv, "/pid")) for _ in range(12)]
    first = seen[0]
    assert seen[:5] == [first] * 5
    assert first not in seen[5:]
    assert len(set(seen)) == 3, seen
    assert "Autorestarting worker after current request." in srv.log


def test_max_requests_jitter_stays_in_range(run_server):
    srv = run_server("-w", "1", "--max-requests", "3", "--max-requests-jitter", "3", APP)
    srv.wait_for_line("Booting worker")
    seen = [int(body(srv, "/pid")) for _ in range(8)]
    first_run = next(i for i, p in enumerate(seen) if p != seen[0])
    assert 3 <= first_run <= 6, seen


def test_max_requests_lets_in_flight_work_finish(run_server):
    srv = run_server("-k", "gthread", "--threads", "4", "-w", "1", "--max-requests", "2", APP)
    srv.wait_for_line("Booting worker")
    slow = srv.connect(timeout=30)
    slow.sendall(b"GET /sleep/1.5 HTTP/1.1\r\nHost: x\r\n\r\n")
    srv.wait_for_line("SLOW REQUEST STARTED")
    assert body(srv, "/") == "ok"  # the second request: the worker starts to recycle
    status, headers, data, _ = SocketReader(slow, timeout=30).response()
    slow.close()
    assert (status, data) == (200, b"slept")
    assert headers.get("connection", "").lower() == "close"
    srv.wait_for_line("Autorestarting worker")
    wait_until(lambda: len(booted_worker_pids(srv)) == 2, 30, message="a replacement worker")


# --- reuse-port --------------------------------------------------------------------------------

def test_reuse_port_lets_two_servers_share_a_port(run_server):
    first = run_server("--reuse-port", APP)
    port = first.port
    second = run_server("--reuse-port", "-b", f"127.0.0.1:{port}", APP)
    assert second.port == port
    second.wait_for_line("Booting worker")
    assert "Connection in use" not in second.log
    pids = set()
    for _ in range(40):
        pids.add(int(body(first, "/ppid")))
    assert pids <= {first.proc.pid, second.proc.pid}


# --- reload --------------------------------------------------------------------------------------

def touch_until_reload(srv, path: Path) -> None:
    """Moves `path`'s mtime on, a whole second each time, until the worker logs that it
    reloads. The watcher records the files' first state some time after the worker boots; a
    change made before that is part of it, so one change is not enough. Whole seconds, because
    a `.pyc` records its source's mtime in seconds."""
    first = int(path.stat().st_mtime)
    steps = iter(range(1, 100))

    def touched() -> bool:
        stamp = first + 2 * next(steps)
        os.utime(path, (stamp, stamp))
        return f"Worker reloading: {path} modified" in srv.log

    wait_until(touched, 20, interval=0.25, message=f"a reload for {path}")


@pytest.mark.parametrize("engine", ["inotify", "poll"])
def test_reload_restarts_worker_when_module_changes(run_server, tmp_path, engine):
    mod = tmp_path / "p_versioned.py"
    write_versioned_app(mod, 1)
    srv = run_server("--reload", "--reload-engine", engine, "-w", "1", "--pythonpath", str(tmp_path),
                     "p_versioned:app")
    srv.wait_for_line("Booting worker")
    assert body(srv, "/").split()[0] == "1"
    write_versioned_app(mod, 2)
    touch_until_reload(srv, mod)
    wait_until(lambda: body(srv, "/").split()[0] == "2", 20, message="the new code served")


def test_reload_extra_file(run_server, tmp_path):
    extra = tmp_path / "settings.toml"
    extra.write_text("a = 1\n")
    srv = run_server("--reload", "--reload-extra-file", str(extra), "-w", "1", APP)
    srv.wait_for_line("Booting worker")
    old = booted_worker_pids(srv)[0]
    extra.write_text("a = 2\n")
    touch_until_reload(srv, extra)
    wait_until(lambda: [p for p in booted_worker_pids(srv) if p != old], 20, message="a new worker")
