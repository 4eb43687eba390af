"""The embedding API: `ferrocorn.app.base.BaseApplication` (Gunicorn's standalone-application
pattern with only the import changed) and `ferrocorn.run(app, **settings)`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import APPS_DIR, Server, get, script_server, stop_all


@pytest.fixture
def run_script(tmp_path: Path):
    started: list[Server] = []

    def start(*args: str, ready: bool = True) -> Server:
        srv = script_server(list(args), tmp_path)
        started.append(srv)
        if ready:
            srv.wait_ready()
        return srv

    yield start
    stop_all(started)


def test_standalone_application_boots_workers(run_script):
    srv = run_script(str(APPS_DIR / "k_standalone.py"), "2")
    assert re.match(r"http://127\.0\.0\.1:\d+$", srv.address)
    for _ in range(2):
        srv.wait_for_line(r"post_fork app=StandaloneApplication cfg.workers=2")
    master = srv.proc.pid
    # Without preload, load() runs in each worker, never in the master.
    srv.wait_for_line(r"load\(\) in \d+")
    loads = [int(m.group(1)) for line in srv.lines for m in [re.search(r"load\(\) in (\d+)", line)]
             if m]
    assert loads and master not in loads
    assert srv.stop() == 0
    assert "Shutting down: Master" in srv.log


def test_standalone_application_serves(run_script):
    srv = run_script(str(APPS_DIR / "k_standalone.py"), "1")
    status, _, body = get(srv, "/")
    assert status == 200 and body.startswith(b"standalone ")
    assert int(body.split()[1]) != srv.proc.pid


def test_standalone_application_preload_loads_in_the_master(run_script):
    srv = run_script(str(APPS_DIR / "k_standalone.py"), "2", "preload")
    srv.wait_for_line(r"post_fork app=StandaloneApplication")
    srv.wait_for_line(rf"load\(\) in {srv.proc.pid}$")
    assert sum("load() in" in line for line in srv.lines) == 1


def test_bad_setting_value_exits_with_a_clear_error(run_script):
    srv = run_script(str(APPS_DIR / "k_standalone.py"), "abc", ready=False)
    assert srv.wait() == 1
    assert "Error: invalid value for workers: 'abc'" in srv.log
    assert "Traceback" not in srv.log


def test_ferrocorn_run(run_script):
    srv = run_script(str(APPS_DIR / "k_run.py"))
    srv.wait_for_line("Booting worker with pid")
    status, _, body = get(srv, "/")
    assert (status, body) == (200, b"run")
    assert srv.stop() == 0


def test_cfg_set_validates_with_the_settings_table():
    from ferrocorn.app.base import BaseApplication

    class App(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("workers", "3")
            self.cfg.set("bind", "127.0.0.1:9")

        def load(self):
            return lambda environ, start_response: []

    app = App()
    assert app.cfg.workers == 3
    assert app.cfg.bind == ["127.0.0.1:9"]
    assert app.cfg.address == [("127.0.0.1", 9)]
    assert app.cfg.worker_class_str == "sync"
    setting = app.cfg.settings["workers"]
    assert (setting.name, setting.value, setting.default) == ("workers", 3, 1)
    assert "timeout" in app.cfg.settings and "keepalive" in app.cfg.settings
    with pytest.raises(ValueError, match=r"invalid value for workers: 'abc'"):
        app.cfg.set("workers", "abc")
    with pytest.raises(AttributeError, match="No configuration setting for: nope"):
        app.cfg.set("nope", 1)
    with pytest.raises(ValueError, match=r"invalid value for post_fork"):
        app.cfg.set("post_fork", lambda only_one: None)
    assert callable(app.wsgi())
