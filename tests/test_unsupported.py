"""Settings ferrocorn does not act on yet.

Set to a value other than the default, those whose neglect would change security, the
protocol spoken or what the application can call stop the start, and fail `--check-config`,
with exit status 1 and one line naming the setting, the value and what to use instead. The
others are served anyway with one warning. Defaults spelled out, as boilerplate config files
do, pass silently.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import STARTUP_DEADLINE, get, run_command, wait_until

pytestmark = pytest.mark.timeout(120)

SSL_CONTEXT = "a Python SSLContext cannot drive ferrocorn's TLS, which runs in Rust (rustls); set certfile,"
UWSGI = "only HTTP is spoken yet, not the uwsgi protocol;"
DIRTY = "dirty workers are not supported yet;"

# (command-line arguments, the same in a config file, the start of the error line)
REFUSED = [
    (["--protocol", "uwsgi"], "protocol = 'uwsgi'", f"protocol = 'uwsgi': {UWSGI}"),
    (["--dirty-app", "tasks:Worker", "--dirty-workers", "2"], "dirty_apps = ['tasks:Worker']\ndirty_workers = 2",
     f"dirty_apps = ['tasks:Worker']: {DIRTY}"),
]
REFUSED_IDS = [" ".join(args) for args, _, _ in REFUSED]

# Every setting not applied yet, at Gunicorn 27.0.1's default as `--print-config` shows it,
# spelled as a config file would (`control_socket`'s default depends on the environment).
BOILERPLATE = """\
import ssl

spew = False
tmp_upload_dir = None
protocol = 'http'
uwsgi_allow_ips = '127.0.0.1,::1'
keyfile = None
certfile = None
ssl_version = ssl.PROTOCOL_TLS
cert_reqs = ssl.CERT_NONE
ca_certs = None
suppress_ragged_eofs = True
do_handshake_on_connect = False
ciphers = None
http_protocols = 'h1'
http2_cleartext = 'off'
http2_max_concurrent_streams = 100
http2_initial_window_size = 65535
http2_max_frame_size = 16384
http2_max_header_list_size = 65536
asgi_loop = 'auto'
asgi_lifespan = 'auto'
asgi_disconnect_grace_period = 3
websocket_max_message_size = 16777216
http_parser = 'auto'
root_path = ''
dirty_apps = []
dirty_workers = 0
dirty_timeout = 300
dirty_threads = 1
dirty_graceful_timeout = 30
control_socket_mode = 0o600
control_socket_disable = False
"""


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "settings.conf.py"
    path.write_text(text + "\n")
    return str(path)


def start_refused(run_server, *args: str) -> str:
    """Starts a server that should refuse to start; returns its whole output."""
    srv = run_server(*args, "cli_app:app", ready=False)
    wait_until(lambda: srv.proc.poll() is not None or "Listening at:" in srv.log, STARTUP_DEADLINE,
               message="exit or listen")
    assert srv.wait(timeout=10) == 1, srv.log
    return srv.log


def assert_one_error_line(output: str, expected: str) -> None:
    assert output.strip().splitlines() == [output.strip()], output
    assert output.startswith(f"Error: {expected}"), output
    assert "Traceback" not in output


@pytest.mark.parametrize(("args", "conf", "expected"), REFUSED, ids=REFUSED_IDS)
def test_refused_on_the_command_line(run_server, args, conf, expected):
    assert_one_error_line(start_refused(run_server, *args), expected)


@pytest.mark.parametrize(("args", "conf", "expected"), REFUSED, ids=REFUSED_IDS)
def test_refused_in_a_config_file(run_server, tmp_path, args, conf, expected):
    config = write_config(tmp_path, conf)
    assert_one_error_line(start_refused(run_server, "-c", config), expected)


@pytest.mark.parametrize(("args", "conf", "expected"), REFUSED, ids=REFUSED_IDS)
def test_check_config_fails(tmp_path, args, conf, expected):
    res = run_command(["--check-config", *args, "cli_app:app"])
    assert res.returncode == 1, res.stdout
    assert_one_error_line(res.stdout, expected)
    res = run_command(["--check-config", "-c", write_config(tmp_path, conf), "cli_app:app"])
    assert res.returncode == 1, res.stdout
    assert_one_error_line(res.stdout, expected)


def test_ssl_context_hook_is_refused(run_server, tmp_path):
    config = write_config(tmp_path, "def ssl_context(config, factory):\n    return factory()")
    assert_one_error_line(start_refused(run_server, "-c", config), f"ssl_context = <ssl_context()>: {SSL_CONTEXT}")


def test_defaults_spelled_out_pass_silently(run_server, tmp_path):
    config = write_config(tmp_path, BOILERPLATE)
    res = run_command(["--check-config", "-c", config, "cli_app:app"])
    assert (res.returncode, res.stdout) == (0, "")
    srv = run_server("-c", config, "--http-protocols", "h1", "--protocol", "http", "cli_app:app")
    assert srv.address.startswith("http://")
    assert get(srv, "/")[2] == b"cli_app:app"
    srv.wait_for_line(r"Booting worker with pid")
    assert "WARNING" not in srv.log, srv.log


def test_dirty_apps_without_dirty_workers_warn(run_server):
    srv = run_server("--dirty-app", "tasks:Worker", "cli_app:app")
    srv.wait_for_line(r"Booting worker with pid")
    warnings = [line for line in srv.lines if "WARNING" in line]
    assert len(warnings) == 1, srv.log
    assert "These settings have no effect in ferrocorn" in warnings[0], warnings[0]
    assert warnings[0].endswith(" yet: dirty_apps = ['tasks:Worker']"), warnings[0]


def test_other_settings_not_applied_warn_once(run_server, tmp_path):
    config = write_config(tmp_path, "spew = True\nasgi_loop = 'uvloop'\nroot_path = '/api'")
    srv = run_server("-c", config, "-k", "sync", "--asgi-lifespan", "off", "--dirty-workers", "1", "cli_app:app")
    assert get(srv, "/")[2] == b"cli_app:app"
    srv.wait_for_line(r"Booting worker with pid")
    warnings = [line for line in srv.lines if "WARNING" in line]
    assert len(warnings) == 1, srv.log
    assert warnings[0].endswith(
        " yet: spew = True, dirty_workers = 1"
    ), warnings[0]
