"""Server hooks: each fires at Gunicorn's moment, in Gunicorn's process, with Gunicorn's
arguments; a raising hook is logged and, except where Gunicorn makes it fatal, harmless.

tests/apps/k_hooks_conf.py defines every hook; each appends `<hook> <pid> <summary>` to the
file named by $HOOK_LOG, and checks the objects it receives with asserts (a failed check shows
as `Exception in <hook> hook` in the server log).
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
from conftest import APPS_DIR, Server, get, server_env

HOOKS_CONF = str(APPS_DIR / "k_hooks_conf.py")
DEADLINE = 20.0


class HookLog:
    """The lines the hooks appended, parsed as (hook, pid, summary)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> list[tuple[str, int, str]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            hook, pid, summary = (line.split(" ", 2) + [""])[:3]
            out.append((hook, int(pid), summary))
        return out

    def names(self) -> list[str]:
        return [e[0] for e in self.entries()]

    def of(self, hook: str) -> list[tuple[str, int, str]]:
        return [e for e in self.entries() if e[0] == hook]

    def wait(self, hook: str, count: int = 1, summary: str | None = None,
             srv: Server | None = None) -> list[tuple[str, int, str]]:
        deadline = time.monotonic() + DEADLINE
        while True:
            found = [e for e in self.of(hook) if summary is None or re.search(summary, e[2])]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                log = srv.log if srv else ""
                raise AssertionError(f"{hook} x{count} ({summary}) not seen; hooks: "
                                     f"{self.entries()}\nserver log:\n{log}")
            time.sleep(0.05)

    def index(self, hook: str, pid: int | None = None) -> int:
        for i, e in enumerate(self.entries()):
            if e[0] == hook and (pid is None or e[1] == pid):
                return i
        raise AssertionError(f"{hook} ({pid}) not in {self.entries()}")


@pytest.fixture
def hook_log(tmp_path: Path) -> HookLog:
    return HookLog(tmp_path / "hooks.log")


def start(run_server, hook_log: HookLog, *args: str, raise_in: str = "", workers: int = 1,
          ready: bool = True) -> Server:
    env = {"HOOK_LOG": str(hook_log.path), "HOOK_RAISE": raise_in, "HOOK_WORKERS": str(workers)}
    return run_server("-c", HOOKS_CONF, "-w", str(workers), *args, "k_apps:application",
                      env=env, ready=ready)


def no_hook_failures(srv: Server) -> None:
    assert "Exception in" not in srv.log, srv.log


def test_lifecycle_hooks_in_gunicorn_order_and_processes(run_server, hook_log, worker_args):
    srv = start(run_server, hook_log, *worker_args)
    master = srv.proc.pid
    hook_log.wait("post_worker_init", srv=srv)
    srv.stop(signal.SIGTERM)
    assert srv.proc.returncode == 0
    no_hook_failures(srv)

    entries = hook_log.entries()
    names = hook_log.names()
    # Master-side hooks run in the master.
    for hook in ("nworkers_changed", "on_starting", "when_ready", "pre_fork", "child_exit",
                 "on_exit"):
        assert all(pid == master for _, pid, _ in hook_log.of(hook)), (hook, entries)
    # Worker-side hooks run in the worker that post_fork reported.
    worker_pid = hook_log.of("post_fork")[0][1]
    assert worker_pid != master
    assert hook_log.of("post_fork")[0][2] == f"age=1 worker_pid={worker_pid}"
    for hook in ("post_worker_init", "worker_exit"):
        assert [pid for _, pid, _ in hook_log.of(hook)] == [worker_pid], (hook, entries)
    assert hook_log.of("child_exit")[0][2] == f"worker_pid={worker_pid}"
    # Gunicorn's order: the worker count is set, on_starting, when_ready, then the fork.
    assert hook_log.of("nworkers_changed")[0][2] == "1 None"
    assert hook_log.of("on_starting")[0][2] == "workers=1"
    assert names[:6] == ["nworkers_changed", "on_starting", "when_ready", "pre_fork",
                         "post_fork", "post_worker_init"], names
    assert hook_log.of("pre_fork")[0][2] == "age=1 workers=0"
    # On TERM: the worker exits, the master reaps it, then the master exits.
    assert names[-3:] == ["worker_exit", "child_exit", "on_exit"], names
    # The hooks' log calls go to the error log in Gunicorn's format.
    assert re.search(rf"\[{master}\] \[INFO\] on_starting says hi", srv.log)
    assert re.search(rf"\[{worker_pid}\] \[INFO\] post_worker_init in {worker_pid}", srv.log)


def test_ttin_ttou_call_nworkers_changed(run_server, hook_log):
    srv = start(run_server, hook_log)
    hook_log.wait("post_worker_init", srv=srv)
    srv.signal(signal.SIGTTIN)
    hook_log.wait("nworkers_changed", summary=r"^2 1$", srv=srv)
    hook_log.wait("post_worker_init", count=2, srv=srv)
    assert hook_log.of("pre_fork")[-1][2] == "age=2 workers=1"
    srv.signal(signal.SIGTTOU)
    hook_log.wait("nworkers_changed", summary=r"^1 2$", srv=srv)
    # The oldest worker is retired: it runs worker_exit, the master child_exit.
    first = hook_log.of("post_fork")[0][1]
    hook_log.wait("child_exit", summary=rf"worker_pid={first}$", srv=srv)
    assert (hook_log.index("worker_exit", first) < hook_log.index("child_exit"))
    no_hook_failures(srv)


def test_hup_calls_on_reload_before_new_workers(run_server, hook_log):
    srv = start(run_server, hook_log)
    hook_log.wait("post_worker_init", srv=srv)
    srv.signal(signal.SIGHUP)
    hook_log.wait("on_reload", srv=srv)
    hook_log.wait("post_worker_init", count=2, srv=srv)
    hook_log.wait("child_exit", srv=srv)
    names = hook_log.names()
    assert names.index("on_reload") < [i for i, n in enumerate(names) if n == "pre_fork"][1]
    assert hook_log.of("on_reload")[0][1] == srv.proc.pid
    no_hook_failures(srv)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_worker_int_then_worker_exit_in_the_worker(run_server, hook_log, worker_args, sig):
    srv = start(run_server, hook_log, *worker_args)
    worker = hook_log.wait("post_worker_init", srv=srv)[0][1]
    os.kill(worker, sig)
    hook_log.wait("worker_exit", srv=srv)
    assert hook_log.of("worker_int") == [("worker_int", worker, f"worker_pid={worker}")]
    assert hook_log.index("worker_int") < hook_log.index("worker_exit", worker)
    hook_log.wait("child_exit", summary=rf"worker_pid={worker}$", srv=srv)
    # The master replaces it.
    hook_log.wait("post_worker_init", count=2, srv=srv)
    no_hook_failures(srv)


def test_worker_abort_on_an_idle_worker(run_server, hook_log, worker_args):
    srv = start(run_server, hook_log, *worker_args)
    worker = hook_log.wait("post_worker_init", srv=srv)[0][1]
    os.kill(worker, signal.SIGABRT)
    hook_log.wait("child_exit", summary=rf"worker_pid={worker}$", srv=srv)
    assert hook_log.of("worker_abort") == [("worker_abort", worker, f"worker_pid={worker}")]
    assert hook_log.index("worker_abort") < hook_log.index("worker_exit", worker)
    srv.wait_for_line(rf"Worker \(pid:{worker}\) exited with code 1")


def test_worker_abort_interrupts_a_stuck_sync_application(run_server, hook_log):
    """The master's timeout: the hook runs in the worker while the application is stuck."""
    srv = start(run_server, hook_log, "-k", "sync", "--timeout", "2")
    worker = hook_log.wait("post_worker_init", srv=srv)[0][1]
    with srv.connect(timeout=30) as s:
        s.sendall(b"GET /sleep HTTP/1.1\r\nHost: localhost\r\n\r\n")
        hook_log.wait("worker_abort", srv=srv)
    srv.wait_for_line(rf"WORKER TIMEOUT \(pid:{worker}\)")
    hook_log.wait("worker_exit", srv=srv)
    srv.wait_for_line(rf"Worker \(pid:{worker}\) exited with code 1")


def test_request_hooks_see_the_request_and_response(run_server, hook_log, worker_args):
    srv = start(run_server, hook_log, *worker_args)
    worker = hook_log.wait("post_worker_init", srv=srv)[0][1]
    status, _, body = get(srv, "/hello?x=1")
    assert (status, body) == (200, b"GET /hello")
    hook_log.wait("post_request", srv=srv)
    assert hook_log.of("pre_request") == [("pre_request", worker, "GET /hello x=1 nr=0")]
    assert hook_log.of("post_request") == [("post_request", worker, "GET /hello 200 200 sent=10")]
    assert hook_log.index("pre_request") < hook_log.index("post_request")
    no_hook_failures(srv)


def test_request_hook_req_has_the_uri_and_fragment_as_sent(run_server, hook_log):
    srv = start(run_server, hook_log)
    worker = hook_log.wait("post_worker_init", srv=srv)[0][1]
    status, _, _ = get(srv, "/hello?x=1#top")
    assert status == 200
    hook_log.wait("post_request", srv=srv)
    assert hook_log.of("pre_request") == [("pre_request", worker, "GET /hello x=1 nr=0")]
    no_hook_failures(srv)


def test_raising_post_request_is_logged_and_serving_goes_on(run_server, hook_log, worker_args):
    srv = start(run_server, hook_log, *worker_args, raise_in="post_request")
    hook_log.wait("post_worker_init", srv=srv)
    for _ in range(2):
        status, _, body = get(srv, "/again")
        assert (status, body) == (200, b"GET /again")
    srv.wait_for_line("Exception in post_request hook")
    assert "RuntimeError: post_request failed on purpose" in srv.log
    assert "Traceback (most recent call last)" in srv.log
    assert len(hook_log.of("post_request")) == 2


def test_raising_pre_request_answers_500(run_server, hook_log):
    srv = start(run_server, hook_log, raise_in="pre_request")
    hook_log.wait("post_worker_init", srv=srv)
    status, _, _ = get(srv, "/")
    assert status == 500
    srv.wait_for_line("Exception in pre_request hook")
    status, _, _ = get(srv, "/")
    assert status == 500
    assert srv.proc.poll() is None


@pytest.mark.parametrize("hook", ["on_starting", "when_ready"])
def test_raising_start_hooks_stop_the_master(run_server, hook_log, hook):
    srv = start(run_server, hook_log, raise_in=hook, ready=False)
    code = srv.wait(timeout=30)
    assert code == 1, srv.log
    assert f"Exception in {hook} hook" in srv.log
    assert f"RuntimeError: {hook} failed on purpose" in srv.log
    assert hook_log.of("pre_fork") == []
    if hook == "on_starting":
        assert "Listening at" not in srv.log


@pytest.mark.parametrize("hook", ["nworkers_changed", "pre_fork", "child_exit", "on_reload"])
def test_raising_master_hooks_are_logged_not_fatal(run_server, hook_log, hook):
    srv = start(run_server, hook_log, raise_in=hook)
    hook_log.wait("post_worker_init", srv=srv)
    srv.signal(signal.SIGTTIN)
    hook_log.wait("post_worker_init", count=2, srv=srv)
    # HUP re-reads the config: back to its one worker (nworkers_changed 1 2), as in Gunicorn.
    srv.signal(signal.SIGHUP)
    hook_log.wait("post_worker_init", count=3, srv=srv)
    hook_log.wait("child_exit", srv=srv)
    assert srv.proc.poll() is None
    srv.wait_for_line(f"Exception in {hook} hook")
    assert srv.stop() == 0


def test_usr2_calls_pre_exec_in_the_child_that_becomes_the_new_master(run_server, hook_log):
    srv = start(run_server, hook_log)
    master = srv.proc.pid
    hook_log.wait("post_worker_init", srv=srv)
    srv.signal(signal.SIGUSR2)
    (_, child, summary), = hook_log.wait("pre_exec", srv=srv)
    assert child != master and summary == f"master={master}"
    # The child execs into the new master: its on_starting runs under the same pid.
    hook_log.wait("on_starting", count=2, srv=srv)
    assert hook_log.of("on_starting")[1][1] == child
    no_hook_failures(srv)
    os.kill(child, signal.SIGTERM)
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    assert srv.stop() == 0


def test_raising_post_worker_init_fails_the_boot_like_gunicorn(run_server, hook_log):
    srv = start(run_server, hook_log, raise_in="post_worker_init", ready=False)
    assert srv.wait(timeout=30) == 3, srv.log
    assert "Reason: Worker failed to boot." in srv.log
    assert "RuntimeError: post_worker_init failed on purpose" in srv.log


def test_raising_worker_exit_is_logged(run_server, hook_log):
    srv = start(run_server, hook_log, raise_in="worker_exit")
    hook_log.wait("post_worker_init", srv=srv)
    assert srv.stop() == 0
    assert "Exception during worker exit" in srv.log
    assert hook_log.names()[-1] == "on_exit"


def test_gunicorn_style_config_file_runs_unchanged(tmp_path):
    log = tmp_path / "hooks.log"
    srv = Server(["-c", str(APPS_DIR / "k_gunicorn_style_conf.py"), "k_apps:application"],
                 tmp_path, server_env({"HOOK_LOG": str(log)}))
    try:
        srv.wait_ready()
        assert srv.address.startswith("http://127.0.0.1:")
        srv.wait_for_line("Server is ready. Spawning workers")
        deadline = time.monotonic() + DEADLINE
        while (not log.exists() or log.read_text().count("post_worker_init") < 2) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        text = log.read_text()
        assert f"when_ready {srv.proc.pid} env={{'A': 'B'}} workers=2" in text
        assert text.count("A=B") == 2, text
        srv.wait_for_line(r"Worker spawned \(pid: \d+\)")
        assert "no effect" not in srv.log, srv.log
        assert srv.stop() == 0
    finally:
        srv.kill()
