"""PasteDeploy: `--paste FILE[#NAME]` with `--paste-global`, the ini file's logging config, load
failures, and the `egg:ferrocorn#main` server runner started by PasteDeploy itself."""

from __future__ import annotations

import json
import os
import re
import signal
import textwrap
from pathlib import Path

import pytest
from conftest import APPS_DIR, Server, get, run_command, script_server, wait_until

pytestmark = pytest.mark.timeout(90)

TRACEBACK = "Traceback (most recent call last)"

APPS = """\
[DEFAULT]
shared = from-defaults

[app:main]
use = call:paste_apps:factory
name = main
greeting = hello %(shared)s

[app:other]
use = call:paste_apps:factory
name = other
"""

LOGGING = """\
[loggers]
keys = root, error, access

[handlers]
keys = file

[formatters]
keys = marked

[logger_root]
level = WARNING
handlers =

[logger_error]
level = INFO
handlers = file
propagate = 0
qualname = gunicorn.error

[logger_access]
level = INFO
handlers = file
propagate = 0
qualname = gunicorn.access

[handler_file]
class = FileHandler
formatter = marked
args = ('%(here)s/paste-error.log', 'a')

[formatter_marked]
format = PASTELOG %(levelname)s %(name)s %(message)s
"""


def write_ini(tmp_path: Path, text: str = APPS, name: str = "development.ini") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def answer(server: Server, path: str = "/") -> dict:
    status, _, body = get(server, path)
    assert status == 200, body
    return json.loads(body)


@pytest.mark.parametrize("preload", [False, True], ids=["per-worker", "preload"])
def test_paste_serves_the_main_app(run_server, tmp_path, preload):
    ini = write_ini(tmp_path)
    conf = tmp_path / "hooks.py"
    conf.write_text("def when_ready(server):\n"
                    "    server.log.info('hook sees %s', callable(server.app.wsgi()))\n")
    extra = ["--preload"] if preload else []
    # A relative path, resolved against the working directory.
    srv = run_server("-c", str(conf), *extra, "--paste", "development.ini", cwd=tmp_path)
    got = answer(srv)
    assert got["local"] == {"name": "main", "greeting": "hello from-defaults"}
    assert got["global"] == {"shared": "from-defaults"}
    assert got["file"] == str(ini)
    srv.wait_for_line(r"hook sees True")
    assert "These settings have no effect" not in srv.log
    assert srv.stop() == 0


def test_paste_section_after_hash(run_server, tmp_path):
    write_ini(tmp_path)
    srv = run_server("--paster", "development.ini#other", cwd=tmp_path)
    assert answer(srv)["local"] == {"name": "other"}


def test_paste_global_reaches_the_factory(run_server, tmp_path):
    ini = write_ini(tmp_path)
    srv = run_server("--paste", str(ini), "--paste-global", "FOO=1",
                     "--paste-global", "shared=from-cli", "--paste-global", r"A\=B=C=D")
    got = answer(srv)
    # In global_conf the command line's variables win over the file's [DEFAULT] ones, while
    # %(...)s in the file still sees the file's own (PasteDeploy's rules, the same with Gunicorn).
    assert got["global"] == {"FOO": "1", "shared": "from-cli", "A=B": "C=D"}
    assert got["local"]["greeting"] == "hello from-defaults"


def test_paste_sets_default_proc_name_and_logconfig(tmp_path):
    plain = write_ini(tmp_path)
    res = run_command(["--paste", "development.ini", "--print-config"], cwd=tmp_path)
    assert res.returncode == 0, res.stdout
    assert re.search(rf"^default_proc_name\s+= {re.escape(str(plain))}$", res.stdout, re.M)
    assert re.search(r"^logconfig\s+= None$", res.stdout, re.M), res.stdout
    logged = write_ini(tmp_path, APPS + LOGGING, "logged.ini")
    res = run_command(["--paste", "logged.ini#other", "--print-config"], cwd=tmp_path)
    assert res.returncode == 0, res.stdout
    assert re.search(rf"^logconfig\s+= {re.escape(str(logged))}$", res.stdout, re.M)
    # An explicit --log-config still wins.
    res = run_command(["--paste", "logged.ini", "--log-config", "x.ini", "--print-config"],
                      cwd=tmp_path)
    assert re.search(r"^logconfig\s+= x\.ini$", res.stdout, re.M), res.stdout


def test_paste_ini_logging_config_takes_effect(run_server, tmp_path):
    ini = write_ini(tmp_path, APPS + LOGGING)
    out = tmp_path / "paste-error.log"
    srv = run_server("--paste", str(ini), ready=False)

    def listening():
        m = re.search(r"^PASTELOG INFO gunicorn\.error Listening at: (\S+) \(\d+\)$",
                      out.read_text(), re.M) if out.exists() else None
        return m

    srv.addresses = [wait_until(listening, 30, message="Listening line in the ini's log").group(1)]
    assert answer(srv, "/logged")["local"]["name"] == "main"
    wait_until(lambda: re.search(r"^PASTELOG INFO gunicorn\.access .*GET /logged HTTP/1\.1\" 200",
                                 out.read_text(), re.M), 15, message="access line")
    assert re.search(r"^PASTELOG INFO gunicorn\.error Booting worker with pid: \d+$",
                     out.read_text(), re.M)
    assert "Listening at" not in srv.log


def test_paste_missing_file(tmp_path):
    res = run_command(["--paste", "missing.ini"], cwd=tmp_path)
    assert res.returncode == 1, res.stdout
    assert f"Error: '{tmp_path / 'missing.ini'}' not found" in res.stdout
    assert TRACEBACK not in res.stdout


@pytest.mark.parametrize(
    "ini, args, message",
    [
        (APPS, ["#nosuch"], r"LookupError: No section 'nosuch' .* found in config "),
        ("[app:main]\nuse = call:no_such_module_xyz:factory\n", [],
         r"ModuleNotFoundError: No module named 'no_such_module_xyz'"),
        ("[app:main]\nuse = call:paste_apps:nope\n", [],
         r"AttributeError: module 'paste_apps' has no attribute 'nope'"),
        ("[app:main]\nuse = nosuch:thing\n", [], r"LookupError: URI scheme not known: 'nosuch'"),
    ],
    ids=["missing-section", "missing-module", "missing-factory", "bad-use"],
)
def test_paste_load_errors_exit_3(run_server, tmp_path, ini, args, message):
    # Gunicorn 27.0.1 lets these errors through in the worker: a boot failure, exit 3.
    path = write_ini(tmp_path, ini)
    srv = run_server("--paste", str(path) + "".join(args), ready=False)
    code = srv.wait(timeout=30)
    assert code == 3, f"exit {code}; log:\n{srv.log}"
    assert re.search(rf"Failed to load the application from {re.escape(str(path))}\S*: {message}",
                     srv.log), srv.log
    assert "Reason: Worker failed to boot." in srv.log
    assert TRACEBACK not in srv.log


def test_paste_factory_raising_is_a_boot_error_with_traceback(run_server, tmp_path):
    path = write_ini(tmp_path, "[app:main]\nuse = call:paste_apps:broken\n")
    srv = run_server("--paste", str(path), ready=False)
    code = srv.wait(timeout=30)
    assert code == 3, f"exit {code}; log:\n{srv.log}"
    assert TRACEBACK in srv.log and "RuntimeError: the paste factory broke" in srv.log


def test_paste_bad_global_is_a_config_error(tmp_path):
    write_ini(tmp_path)
    res = run_command(["--paste", "development.ini", "--paste-global", "NOVALUE"], cwd=tmp_path)
    assert res.returncode == 1, res.stdout
    assert "Error: invalid value for raw_paste_global_conf: 'NOVALUE' (expected KEY=VALUE)" \
        in res.stdout


def test_paste_without_pastedeploy_fails_at_start(tmp_path):
    ini = write_ini(tmp_path)
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['paste.deploy'] = None\n")
    res = run_command(["--paste", str(ini)], cwd=tmp_path,
                      env={"PYTHONPATH": f"{hide}{os.pathsep}{APPS_DIR}"})
    assert res.returncode == 1, res.stdout
    assert "Error: PasteDeploy is not installed" in res.stdout, res.stdout
    assert "pip install PasteDeploy" in res.stdout
    assert TRACEBACK not in res.stdout


def test_paste_without_pastedeploy_in_the_worker(run_server, tmp_path):
    ini = write_ini(tmp_path)
    # The config file runs after the start-up check and before any worker loads the app.
    conf = tmp_path / "hide.py"
    conf.write_text("import sys\nsys.modules['paste.deploy'] = None\n")
    srv = run_server("-c", str(conf), "--paste", str(ini), ready=False)
    code = srv.wait(timeout=30)
    assert code == 4, f"exit {code}; log:\n{srv.log}"
    assert "PasteDeploy is not installed" in srv.log and "pip install PasteDeploy" in srv.log
    assert "Reason: App failed to load." in srv.log
    assert TRACEBACK not in srv.log


# --- the server runner -------------------------------------------------------------------------

RUNNER = """\
import sys

from paste.deploy import loadapp, loadserver

uri = "config:" + sys.argv[1]
server = loadserver(uri)
server(loadapp(uri))
"""


def test_server_runner_from_pastedeploy(tmp_path):
    conf = tmp_path / "settings.py"
    conf.write_text("workers = 3\n"
                    "def when_ready(server):\n"
                    "    server.log.info('config file read, workers=%s', server.cfg.workers)\n")
    ini = write_ini(tmp_path, APPS + textwrap.dedent(f"""\
        [server:main]
        use = egg:ferrocorn#main
        host = 127.0.0.1
        port = 0
        config = {conf}
        workers = 2
        """))
    (tmp_path / "run.py").write_text(RUNNER)
    srv = script_server(["run.py", str(ini)], tmp_path)
    try:
        srv.wait_ready()
        # `host` and `port` made the bind: port 0 is bound to a port the kernel picks.
        assert re.fullmatch(r"http://127\.0\.0\.1:[1-9]\d*", srv.address), srv.address
        assert answer(srv)["local"]["name"] == "main"
        # The section's keys win over the config file it names.
        srv.wait_for_line(r"config file read, workers=2$")
        wait_until(lambda: len(re.findall(r"Booting worker with pid", srv.log)) >= 2, 15,
                   message="two workers")
        assert srv.stop(signal.SIGTERM) == 0
        assert "Shutting down: Master" in srv.log
    finally:
        if srv.proc.poll() is None:
            srv.kill()
