"""Operating an ASGI server (`-k asgi`) as a WSGI one is operated: USR2 re-exec, `--reload`,
StatsD and the metrics endpoint counting its requests, the `worker_int` and `worker_abort`
hooks."""

from __future__ import annotations

import os
import re
import signal
import textwrap
from pathlib import Path

import pytest
from conftest import APPS_DIR, booted_worker_pids, get, wait_until
from procs_util import alive, children, wait_gone
from test_logging import udp_receiver
from test_metrics import metrics_url, parse_statsd, scrape
from test_procs_upgrade import new_master_pid

pytestmark = pytest.mark.timeout(90)

APP = "asgi_apps:app"


def ppid_app(path: Path, version: int) -> None:
    """An ASGI application answering `VERSION PPID`, written so that its mtime changes."""
    path.write_text(textwrap.dedent(f"""
        import os

        async def app(scope, receive, send):
            assert scope["type"] == "http"
            body = b"{version} %d" % os.getppid()
            await send({{"type": "http.response.start", "status": 200, "headers": []}})
            await send({{"type": "http.response.body", "body": body}})
    """))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + version * 2_000_000_000))


def answer(srv) -> tuple[int, int]:
    status, _, body = get(srv, "/")
    assert status == 200
    version, ppid = body.split()
    return int(version), int(ppid)


def test_usr2_new_master_serves_and_old_one_stops_on_term(run_server, tmp_path):
    ppid_app(tmp_path / "asgi_ppid.py", 1)
    srv = run_server("-k", "asgi", "-w", "1", "--pythonpath", str(tmp_path), "asgi_ppid:app")
    old = srv.proc.pid
    srv.wait_for_line("Booting worker")
    srv.signal(signal.SIGUSR2)
    new = new_master_pid(srv)
    try:
        wait_until(lambda: children(new), 20, message="the new master's workers")
        # Both masters' workers answer on the shared socket, until the old master leaves.
        assert {answer(srv) for _ in range(10)} <= {(1, old), (1, new)}
        srv.signal(signal.SIGTERM)
        srv.wait(30)
        for _ in range(10):
            assert answer(srv) == (1, new)
    finally:
        if alive(new):
            os.kill(new, signal.SIGTERM)
            wait_gone(new)


def test_reload_serves_the_changed_asgi_app(run_server, tmp_path):
    mod = tmp_path / "asgi_versioned.py"
    ppid_app(mod, 1)
    srv = run_server("-k", "asgi", "--reload", "-w", "1", "--pythonpath", str(tmp_path),
                     "asgi_versioned:app")
    # An answer: the worker watches its files.
    assert answer(srv)[0] == 1
    ppid_app(mod, 2)
    srv.wait_for_line(rf"Worker reloading: {re.escape(str(mod))} modified", timeout=15)
    wait_until(lambda: answer(srv)[0] == 2, 20, message="the new code served")


def test_statsd_counts_asgi_requests(run_server):
    rx, port = udp_receiver()
    try:
        srv = run_server("-k", "asgi", "--statsd-host", f"127.0.0.1:{port}", APP)
        for path in ("/", "/status/404", "/boom"):
            get(srv, path)

        def counted():
            names = [m["name"] for m in parse_statsd(list(rx.items))]
            done = (names.count(b"gunicorn.requests") >= 3
                    and names.count(b"gunicorn.request.duration") >= 3)
            return names if done else None

        names = wait_until(counted, 15, message="three requests counted and timed")
        for status in (b"200", b"404", b"500"):
            assert b"gunicorn.request.status." + status in names, names
    finally:
        rx.close()


def test_metrics_endpoint_counts_asgi_requests(run_server):
    srv = run_server("-k", "asgi", "--metrics-bind", "127.0.0.1:0", APP)
    addr = metrics_url(srv)
    for path in ("/", "/", "/status/404", "/boom"):
        get(srv, path)
    after = wait_until(lambda: (m := scrape(addr))["ferrocorn_request_duration_seconds_count"] == 4
                       and m, 10, message="four requests counted")
    assert after['ferrocorn_requests_total{status="2xx"}'] == 2
    assert after['ferrocorn_requests_total{status="4xx"}'] == 1
    assert after['ferrocorn_requests_total{status="5xx"}'] == 1
    assert after["ferrocorn_requests_in_flight"] == 0


def hook_lines(path: Path) -> list[tuple[str, int]]:
    if not path.exists():
        return []
    return [(hook, int(pid)) for hook, pid in (line.split() for line in path.read_text().splitlines())]


@pytest.fixture(params=["asyncio", "uvloop"])
def asgi_loop(request) -> str:
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    return request.param


def start_with_hooks(run_server, tmp_path: Path, asgi_loop: str, *args: str):
    log = tmp_path / "hooks.log"
    srv = run_server("-k", "asgi", "--asgi-loop", asgi_loop, "-c",
                     str(APPS_DIR / "asgi_ops_conf.py"), *args, APP, env={"HOOK_LOG": str(log)})
    worker = wait_until(lambda: [p for h, p in hook_lines(log) if h == "post_worker_init"], 20,
                        message="post_worker_init")[0]
    return srv, log, worker


def test_worker_int_runs_in_the_worker_and_it_is_replaced(run_server, tmp_path, asgi_loop):
    srv, log, worker = start_with_hooks(run_server, tmp_path, asgi_loop)
    os.kill(worker, signal.SIGINT)
    wait_until(lambda: ("worker_exit", worker) in hook_lines(log), 20, message="worker_exit")
    lines = hook_lines(log)
    assert lines.index(("worker_int", worker)) < lines.index(("worker_exit", worker)), lines
    wait_until(lambda: [p for p in booted_worker_pids(srv) if p != worker], 20,
               message="a new worker")
    assert get(srv, "/")[2] == b"hello"


def test_worker_abort_on_a_blocked_event_loop(run_server, tmp_path, asgi_loop):
    """The heartbeat stops while the loop is blocked: after `--timeout` the master aborts the
    worker, whose worker_abort hook runs, and a new worker serves the next request."""
    srv, log, worker = start_with_hooks(run_server, tmp_path, asgi_loop, "--timeout", "2")
    with srv.connect(timeout=30) as s:
        s.sendall(b"GET /block HTTP/1.1\r\nHost: localhost\r\n\r\n")
        wait_until(lambda: ("worker_abort", worker) in hook_lines(log), 20,
                   message="worker_abort in the blocked worker")
    srv.wait_for_line(rf"WORKER TIMEOUT \(pid:{worker}\)")
    srv.wait_for_line(rf"Worker \(pid:{worker}\) exited with code 1")
    wait_until(lambda: [p for p in booted_worker_pids(srv) if p != worker], 20,
               message="a new worker")
    assert get(srv, "/")[2] == b"hello"
