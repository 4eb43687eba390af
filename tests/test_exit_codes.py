"""Exit statuses, case by case, as Gunicorn 27.0.1 gives them (docs/operations.md has the table).

Supervisors and monitoring act on these codes: 1 for a command that cannot start (a bad
setting, config file, log file, pidfile, address, a failed --preload), 2 for a bad command
line, 3 when a worker fails to boot, 4 when a worker finds no usable application. Each case
also checks the line that says why. FERROCORN_TEST_COMMAND=gunicorn runs the same cases
against Gunicorn.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from conftest import run_command

pytestmark = pytest.mark.timeout(90)

FILES = {
    "raising_app.py": "raise RuntimeError('boom at import')\n",
    "syntax_app.py": "def app(environ, start_response:\n    pass\n",
    "not_callable_app.py": "app = 42\n",
    "syntax.conf.py": "workers = = 2\n",
    "badvalue.conf.py": "workers = 'abc'\n",
    "post_fork.conf.py": "def post_fork(server, worker):\n    raise RuntimeError('post_fork boom')\n",
    "post_worker_init.conf.py": "def post_worker_init(worker):\n    raise RuntimeError('pwi boom')\n",
    "on_starting.conf.py": "def on_starting(server):\n    raise RuntimeError('on_starting boom')\n",
    "when_ready.conf.py": "def when_ready(server):\n    raise RuntimeError('when_ready boom')\n",
}
B = ["-b", "127.0.0.1:0"]
APP = "l_apps:hello"

# (id, arguments, exit status, a line that says why)
CASES = [
    ("module-missing", B + ["no_such_module_xyz:app"], 3, r"No module named 'no_such_module_xyz'"),
    ("attribute-missing", B + ["l_apps:nope"], 4, r"Failed to find attribute 'nope' in 'l_apps'"),
    ("not-callable", B + ["not_callable_app:app"], 4, r"Application object must be callable"),
    ("app-raises", B + ["raising_app:app"], 3, r"RuntimeError: boom at import"),
    ("app-syntax-error", B + ["syntax_app:app"], 3, r"SyntaxError"),
    ("preload-app-raises", B + ["--preload", "raising_app:app"], 1, r"boom at import"),
    ("preload-module-missing", B + ["--preload", "no_such_module_xyz:app"], 1,
     r"No module named 'no_such_module_xyz'"),
    ("preload-not-callable", B + ["--preload", "not_callable_app:app"], 1,
     r"Application object must be callable"),
    ("no-app-module", B, 1, r"No application module specified"),
    ("unknown-option", B + ["--no-such-option", APP], 2, r"unrecognized arguments: --no-such-option"),
    ("bad-cli-value", B + ["-w", "abc", APP], 2, r"argument -w/--workers: invalid int value: 'abc'"),
    ("bad-config-value", B + ["-c", "badvalue.conf.py", APP], 1, r"(?i)invalid value for workers"),
    ("config-syntax-error", B + ["-c", "syntax.conf.py", APP], 1, r"SyntaxError"),
    ("config-missing", B + ["-c", "missing.conf.py", APP], 1, r"missing\.conf\.py['\"] doesn't exist"),
    ("chdir-missing", B + ["--chdir", "/nonexistent-dir", APP], 1, r"can't chdir to '/nonexistent-dir'"),
    ("no-such-user", B + ["-u", "no-such-user-xyz", APP], 1, r"(?i)no such user"),
    ("pidfile-unwritable", B + ["-p", "/nonexistent-dir/app.pid", APP], 1,
     r"/nonexistent-dir doesn't exist\. Can't create pidfile\."),
    ("access-log-missing-dir", B + ["--access-logfile", "/nonexistent-dir/a.log", APP], 1,
     r"Error: '/nonexistent-dir/a\.log' isn't writable \[FileNotFoundError\(2, 'No such file or directory'\)\]"),
    ("error-log-missing-dir", B + ["--error-logfile", "/nonexistent-dir/e.log", APP], 1,
     r"Error: '/nonexistent-dir/e\.log' isn't writable \[FileNotFoundError\(2, 'No such file or directory'\)\]"),
    ("log-config-missing", B + ["--log-config", "/nonexistent-dir/l.ini", APP], 1,
     r"Error: log config '/nonexistent-dir/l\.ini' not found"),
    ("on-starting-raises", B + ["-c", "on_starting.conf.py", APP], 1, r"on_starting boom"),
    ("when-ready-raises", B + ["-c", "when_ready.conf.py", APP], 1, r"when_ready boom"),
    ("post-fork-raises", B + ["-c", "post_fork.conf.py", APP], 3, r"Reason: Worker failed to boot\."),
    ("post-worker-init-raises", B + ["-c", "post_worker_init.conf.py", APP], 3,
     r"Reason: Worker failed to boot\."),
    ("check-config-module-missing", B + ["--check-config", "no_such_module_xyz:app"], 1,
     r"No module named 'no_such_module_xyz'"),
    ("check-config-ok", B + ["--check-config", APP], 0, r"^$"),
]
# Before binding: the command stops before it listens.
UNBOUND = {"access-log-missing-dir", "error-log-missing-dir", "log-config-missing", "pidfile-unwritable",
           "preload-app-raises", "preload-module-missing", "preload-not-callable", "on-starting-raises"}


@pytest.mark.parametrize("args, code, line", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_exit_code(tmp_path: Path, request, args, code, line):
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    res = run_command(args, cwd=tmp_path)
    assert res.returncode == code, f"exit {res.returncode}, want {code}; output:\n{res.stdout}"
    assert re.search(line, res.stdout, re.M), f"no {line!r} in:\n{res.stdout}"
    if request.node.callspec.id in UNBOUND:
        assert "Listening at" not in res.stdout, res.stdout


def test_exit_code_bind_in_use(tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        res = run_command(["-b", f"127.0.0.1:{port}", APP], cwd=tmp_path)
    assert res.returncode == 1, res.stdout
    assert re.search(r"\[ERROR\] Connection in use: ", res.stdout), res.stdout
    assert re.search(r"\[ERROR\] Can't connect to ", res.stdout), res.stdout
