"""The command line: version and help, APP_MODULE forms, load errors, binds, workers, settings.

Everything here is observable from outside: exit status, log lines, and what the app answers
over a real socket.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    SERVER_COMMAND,
    Server,
    SocketReader,
    booted_worker_pids,
    connect_to,
    get,
    listener_addresses,
    run_command,
    server_env,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

# The program name as it prints itself: `ferrocorn` (or `gunicorn` when the suite is pointed
# at Gunicorn to cross-check the tests).
PROGRAM = Path(SERVER_COMMAND[0]).name
TRACEBACK = "Traceback (most recent call last)"


def body_of(server, path: str = "/") -> bytes:
    status, _, body = get(server, path)
    assert status == 200, body
    return body


# --- version and help ----------------------------------------------------------------------------


def test_version():
    res = run_command(["--version"])
    assert res.returncode == 0, res.stdout
    assert re.search(rf"^{PROGRAM} \(version \d+\.\d+[^)]*\)$", res.stdout.strip(), re.MULTILINE), res.stdout


def test_help_lists_key_flags():
    res = run_command(["-h"])
    assert res.returncode == 0, res.stdout
    for flag in ("--bind", "--workers", "--worker-class", "--threads", "--timeout", "--chdir"):
        assert flag in res.stdout, f"{flag} missing from help:\n{res.stdout}"


@pytest.mark.parametrize("columns", ["", "80", "120"])
def test_help_fits_the_terminal_width(columns):
    # An empty COLUMNS counts as unset; with no terminal on stdout either, the width is 80.
    res = run_command(["--help"], env={"COLUMNS": columns})
    assert res.returncode == 0, res.stdout
    width = int(columns or 80)
    lines = res.stdout.splitlines()
    assert max(map(len, lines)) <= width, "\n".join(line for line in lines if len(line) > width)
    # The width is used, not merely respected: long help texts fill it.
    assert max(map(len, lines)) > width - 10, res.stdout
    assert "--permit-unconventional-http-version" in res.stdout
    assert "Not applied yet: a value other than the default stops the start." in " ".join(res.stdout.split())


def test_python_dash_m_version():
    res = subprocess.run(  # noqa: PLW1510 - the exit status is checked by the caller
        [sys.executable, "-m", PROGRAM, "--version"],
        env=server_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=30,
    )
    assert res.returncode == 0, res.stdout
    assert f"{PROGRAM} (version" in res.stdout


# --- APP_MODULE forms ----------------------------------------------------------------------------


def test_starting_line_names_the_program(run_server):
    srv = run_server("cli_app:app")
    srv.wait_for_line(rf"\[INFO\] Starting {PROGRAM} \d+\.\d+")
    srv.wait_for_line(r"\[INFO\] Using worker: sync")
    assert body_of(srv) == b"cli_app:app"


def test_module_and_variable(run_server):
    assert body_of(run_server("cli_app:app")) == b"cli_app:app"


def test_module_alone_uses_application(run_server):
    assert body_of(run_server("cli_app")) == b"cli_app:application"


def test_dotted_package_path(run_server):
    assert body_of(run_server("cli_pkg.sub:app")) == b"cli_pkg.sub:app"


def test_factory_without_arguments(run_server):
    srv = run_server("cli_app:create_app()")
    assert json.loads(body_of(srv)) == {"args": [], "kwargs": {}}


def test_factory_with_literal_arguments(run_server):
    srv = run_server("cli_app:create_app('x', debug=True)")
    assert json.loads(body_of(srv)) == {"args": ["x"], "kwargs": {"debug": True}}


@pytest.mark.parametrize(
    "app_module, message",
    [
        # A missing module is a boot failure (exit 3), as in Gunicorn: see test_exit_codes.py.
        ("cli_app:nope", r"Failed to find attribute 'nope' in 'cli_app'"),
        ("cli_app:create_app(x)", r"Failed to parse arguments as literal values"),
        ("cli_app:notcallable", r"Application object must be callable"),
    ],
    ids=["missing-variable", "non-literal-args", "not-callable"],
)
def test_app_load_errors_exit_4(run_server, app_module, message):
    srv = run_server(app_module, ready=False)
    code = srv.wait(timeout=30)
    log = srv.log
    assert code == 4, f"exit {code}; log:\n{log}"
    assert re.search(message, log), log
    assert "Reason: App failed to load." in log, log
    assert TRACEBACK not in log, log


# --- binds ---------------------------------------------------------------------------------------


def test_bind_host_port(run_server):
    srv = run_server("-b", "127.0.0.1:0", "cli_app:app")
    assert srv.address.startswith("http://127.0.0.1:")
    assert srv.port > 0
    assert body_of(srv) == b"cli_app:app"


def get_on(address: str, path: str = "/") -> tuple[int, bytes]:
    with connect_to(address) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        status, _, body, _ = SocketReader(s).response()
    return status, body


def test_repeated_bind_tcp_and_unix_both_answer(run_server, tmp_path):
    sock_path = tmp_path / "second.sock"
    srv = run_server("-b", "127.0.0.1:0", "-b", f"unix:{sock_path}", "cli_app:app")
    addresses = listener_addresses(srv, 2)
    assert len(addresses) == 2 and f"unix:{sock_path}" in addresses, addresses
    for address in addresses:
        assert get_on(address) == (200, b"cli_app:app"), address


def test_repeated_bind_two_tcp_listeners_both_answer(run_server):
    srv = run_server("-b", "127.0.0.1:0", "-b", "127.0.0.1:0", "cli_app:app")
    addresses = listener_addresses(srv, 2)
    assert len(set(addresses)) == 2, addresses
    for address in addresses:
        assert re.match(r"http://127\.0\.0\.1:\d+$", address), address
        assert get_on(address) == (200, b"cli_app:app"), address


def test_bind_ipv6_loopback(run_server):
    srv = run_server("-b", "[::1]:0", "cli_app:app")
    assert srv.address.startswith("http://[::1]:"), srv.address
    assert srv.host_port[0] == "::1"
    with socket.create_connection(("::1", srv.port), timeout=10) as s:
        assert s.family == socket.AF_INET6
    assert body_of(srv) == b"cli_app:app"


def test_bind_unix_socket(run_server, tmp_path):
    sock_path = tmp_path / "app.sock"
    srv = run_server("-b", f"unix:{sock_path}", "cli_app:app")
    assert srv.address == f"unix:{sock_path}", srv.address
    assert sock_path.is_socket()
    assert body_of(srv) == b"cli_app:app"


def test_bind_fd(tmp_path):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    fd = listener.fileno()
    srv = Server(["-b", f"fd://{fd}", "cli_app:app"], tmp_path, server_env(), pass_fds=(fd,))
    try:
        srv.wait_ready()
        assert srv.port == port, srv.address
        listener.close()  # the server holds its own copy
        assert body_of(srv) == b"cli_app:app"
    finally:
        listener.close()
        if srv.proc.poll() is None:
            srv.stop()
        srv.kill()


def print_config(*args: str, env: dict[str, str] | None = None) -> str:
    res = run_command(["--print-config", *args, "cli_app:app"], env=env)
    assert res.returncode == 0, res.stdout
    return res.stdout


def config_value(output: str, name: str) -> str:
    m = re.search(rf"^{name}\s*=\s*(.*)$", output, re.MULTILINE)
    assert m, f"{name} not in --print-config output:\n{output}"
    return m.group(1).strip()


def test_default_bind_is_localhost_8000():
    assert config_value(print_config(), "bind") == "['127.0.0.1:8000']"


def test_port_environment_variable_sets_default_bind():
    assert config_value(print_config(env={"PORT": "5123"}), "bind") == "['0.0.0.0:5123']"


def test_explicit_bind_wins_over_port_environment_variable():
    out = print_config("-b", "127.0.0.1:7001", env={"PORT": "5123"})
    assert config_value(out, "bind") == "['127.0.0.1:7001']"


def test_backlog(run_server):
    assert config_value(print_config(), "backlog") == "2048"
    assert config_value(print_config("--backlog", "7"), "backlog") == "7"
    srv = run_server("--backlog", "7", "cli_app:app")
    assert body_of(srv) == b"cli_app:app"


# --- workers -------------------------------------------------------------------------------------


def test_three_workers(run_server):
    srv = run_server("-w", "3", "cli_app:pid_app")
    srv.wait_for_line(r"Booting worker with pid")
    pids = wait_until(lambda: (p := booted_worker_pids(srv)) and len(p) >= 3 and p, 30, message="3 workers")
    assert len(pids) == 3 and len(set(pids)) == 3, pids
    assert srv.proc.pid not in pids
    assert int(body_of(srv)) in pids


def test_web_concurrency_sets_default_workers(run_server):
    assert config_value(print_config(env={"WEB_CONCURRENCY": "2"}), "workers") == "2"
    assert config_value(print_config(), "workers") == "1"
    srv = run_server("cli_app:app", env={"WEB_CONCURRENCY": "2"})
    pids = wait_until(lambda: (p := booted_worker_pids(srv)) and len(p) >= 2 and p, 30, message="2 workers")
    assert len(set(pids)) == 2, pids


@pytest.mark.parametrize("worker_class", ["gevent", "eventlet"])
def test_unsupported_worker_class_fails_clearly(worker_class):
    res = run_command(["-b", "127.0.0.1:0", "-k", worker_class, "cli_app:app"])
    assert res.returncode != 0, res.stdout
    assert worker_class in res.stdout, res.stdout


def test_threads_with_sync_uses_gthread(run_server):
    srv = run_server("--threads", "4", "cli_app:app")
    srv.wait_for_line(r"\[INFO\] Using worker: gthread")
    assert body_of(srv) == b"cli_app:app"


def test_explicit_gthread(run_server):
    srv = run_server("-k", "gthread", "--threads", "2", "cli_app:app")
    srv.wait_for_line(r"\[INFO\] Using worker: gthread")
    assert body_of(srv) == b"cli_app:app"


# --- where the app comes from, and its environment ----------------------------------------------


def write_module(directory: Path, name: str, text: bytes) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.py").write_text(
        "def app(environ, start_response):\n"
        f"    body = {text!r}\n"
        "    start_response('200 OK', [('Content-Length', str(len(body)))])\n"
        "    return [body]\n"
    )


def test_chdir(run_server, tmp_path):
    site = tmp_path / "site"
    write_module(site, "chdir_only_app", b"from chdir")
    srv = run_server("--chdir", str(site), "chdir_only_app:app", cwd=tmp_path)
    assert body_of(srv) == b"from chdir"


def test_pythonpath(run_server, tmp_path):
    lib = tmp_path / "lib"
    write_module(lib, "pythonpath_only_app", b"from pythonpath")
    srv = run_server("--pythonpath", str(lib), "pythonpath_only_app:app", cwd=tmp_path)
    assert body_of(srv) == b"from pythonpath"


def test_env_flag_reaches_the_app(run_server):
    srv = run_server("-e", "FERRO_TEST_KEY=some value", "--env", "FERRO_OTHER=2", "cli_app:env_app")
    assert json.loads(body_of(srv, "/FERRO_TEST_KEY")) == {"FERRO_TEST_KEY": "some value"}
    assert json.loads(body_of(srv, "/FERRO_OTHER")) == {"FERRO_OTHER": "2"}


# --- bad values ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, flag, value",
    [
        (["-w", "abc"], "workers", "abc"),
        (["--threads", "many"], "threads", "many"),
        (["--timeout", "soon"], "timeout", "soon"),
    ],
    ids=["workers", "threads", "timeout"],
)
def test_bad_value_is_refused_clearly(args, flag, value):
    res = run_command(["-b", "127.0.0.1:0", *args, "cli_app:app"])
    assert res.returncode != 0, res.stdout
    assert flag in res.stdout and value in res.stdout, res.stdout
    assert TRACEBACK not in res.stdout, res.stdout
    assert "Listening at" not in res.stdout, res.stdout
