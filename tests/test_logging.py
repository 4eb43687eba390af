"""Logging destinations and forms on a real server: --capture-output, logging configs (ini,
dict, json), a custom logger class, syslog over UDP and a unix datagram socket, StatsD over
UDP, and reopening every log on USR1 under load."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import textwrap
import threading
from pathlib import Path

import pytest
from conftest import SocketReader, booted_worker_pids, get, wait_until

pytestmark = pytest.mark.timeout(90)

TS = r"\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [+-]\d{4}\]"


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def wait_for_text(path: Path, pattern: str, timeout: float = 15.0) -> re.Match:
    regex = re.compile(pattern, re.M)

    def found():
        return regex.search(path.read_text()) if path.exists() else None

    return wait_until(found, timeout, message=f"{pattern!r} in {path}")


def ready_from_file(server, path: Path) -> None:
    """For servers whose error log is not on stderr: the address from `path`'s Listening line."""
    m = wait_for_text(path, r"Listening at: (\S+) \(\d+\)", timeout=30)
    server.addresses = [m.group(1)]


# --- --capture-output ------------------------------------------------------------------------


def test_capture_output_sends_app_output_to_the_error_log(run_server, worker_args, tmp_path):
    errlog = tmp_path / "error.log"
    server = run_server(*worker_args, "--capture-output", "--error-logfile", str(errlog),
                        "l_apps:printing", ready=False)
    ready_from_file(server, errlog)
    assert get(server, "/captured")[0] == 200
    text = wait_for_text(errlog, r"^fd1-write /captured$").string
    assert re.search(r"^stdout-print /captured$", text, re.M), text
    assert re.search(r"^stderr-write /captured$", text, re.M), text
    assert re.search(rf"^{TS} \[\d+\] \[INFO\] Booting worker with pid: \d+$", text, re.M)
    assert "stdout-print" not in server.log


def test_without_capture_output_app_output_stays_on_stdout(run_server, tmp_path):
    errlog = tmp_path / "error.log"
    server = run_server("--error-logfile", str(errlog), "l_apps:printing", ready=False)
    ready_from_file(server, errlog)
    assert get(server, "/free")[0] == 200
    server.wait_for_line(r"^stdout-print /free$")
    assert "stdout-print" not in errlog.read_text()


# --- logging configs --------------------------------------------------------------------------

CUSTOM_LINE = re.compile(r"^CUSTOM (?P<level>[A-Z]+) (?P<name>[\w.]+) (?P<msg>.*)$")


def check_custom_log(path: Path, marker: str) -> list[re.Match]:
    text = wait_for_text(path, rf"^CUSTOM INFO gunicorn\.access .*GET /{marker} HTTP/1\.1\" 200 ").string
    lines = [CUSTOM_LINE.match(line) for line in text.splitlines() if line]
    assert all(lines), text
    assert any(m["name"] == "gunicorn.error" and m["msg"].startswith("Booting worker with pid: ")
               for m in lines), text
    assert any(m["name"] == "gunicorn.error" and m["msg"].startswith("Listening at: ") for m in lines)
    return lines


def test_log_config_ini(run_server, worker_args, tmp_path):
    out = tmp_path / "custom.log"
    ini = tmp_path / "logging.ini"
    ini.write_text(textwrap.dedent(f"""\
        [loggers]
        keys=root,error,access

        [handlers]
        keys=file

        [formatters]
        keys=custom

        [logger_root]
        level=WARNING
        handlers=

        [logger_error]
        level=INFO
        handlers=file
        propagate=0
        qualname=gunicorn.error

        [logger_access]
        level=INFO
        handlers=file
        propagate=0
        qualname=gunicorn.access

        [handler_file]
        class=FileHandler
        formatter=custom
        args=({str(out)!r}, 'a')

        [formatter_custom]
        format=CUSTOM %(levelname)s %(name)s %(message)s
        """))
    server = run_server(*worker_args, "--log-config", str(ini), "l_apps:hello", ready=False)
    ready_from_file(server, out)
    assert get(server, "/ini")[0] == 200
    check_custom_log(out, "ini")
    assert "These settings have no effect" not in server.log


def dict_config(out: Path, names: tuple[str, str] = ("gunicorn.error", "gunicorn.access")) -> dict:
    return {
        "version": 1,
        "formatters": {"custom": {"format": "CUSTOM %(levelname)s %(name)s %(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(out),
                              "formatter": "custom"}},
        "root": {"level": "WARNING", "handlers": []},
        "loggers": {name: {"level": "INFO", "handlers": ["file"], "propagate": False}
                    for name in names},
    }


def test_log_config_dict_from_config_file(run_server, worker_args, tmp_path):
    out = tmp_path / "custom.log"
    conf = tmp_path / "conf.py"
    conf.write_text(f"logconfig_dict = {dict_config(out)!r}\n")
    server = run_server(*worker_args, "-c", str(conf), "l_apps:hello", ready=False)
    ready_from_file(server, out)
    assert get(server, "/dict")[0] == 200
    check_custom_log(out, "dict")
    # Errors with tracebacks go through logger.exception: the formatter appends the traceback.


def test_log_config_json(run_server, tmp_path):
    out = tmp_path / "custom.log"
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(dict_config(out)))
    server = run_server("--log-config-json", str(path), "l_apps:statuses", ready=False)
    ready_from_file(server, out)
    assert get(server, "/json")[0] == 200
    check_custom_log(out, "json")
    assert get(server, "/boom")[0] == 500
    text = wait_for_text(out, r"RuntimeError: boom from the app").string
    assert re.search(r"^CUSTOM ERROR gunicorn\.error Error handling request GET /boom\nTraceback ", text,
                     re.M), text


def test_ferrocorn_logger_names_receive_the_lines(run_server, tmp_path):
    out = tmp_path / "custom.log"
    conf = tmp_path / "conf.py"
    config = dict_config(out, ("ferrocorn.error", "ferrocorn.access"))
    conf.write_text(f"logconfig_dict = {config!r}\naccesslog = None\n")
    server = run_server("-c", str(conf), "l_apps:hello", ready=False)
    ready_from_file(server, out)
    assert get(server, "/alias")[0] == 200
    text = wait_for_text(out, r"GET /alias HTTP/1\.1").string
    assert re.search(r"^CUSTOM INFO gunicorn\.error Booting worker with pid: \d+$", text, re.M), text
    assert re.search(r'^CUSTOM INFO gunicorn\.access 127\.0\.0\.1 - - \[.*\] "GET /alias HTTP/1\.1" 200 6 ',
                     text, re.M), text


def test_log_config_dict_default_handlers_write_gunicorns_format(run_server, tmp_path):
    # Gunicorn's default dict: gunicorn.error on stderr in the error log's format, access on stdout.
    conf = tmp_path / "conf.py"
    conf.write_text("logconfig_dict = {'root': {'level': 'INFO', 'handlers': []}}\n")
    server = run_server("-c", str(conf), "l_apps:hello")
    assert get(server, "/defaults")[0] == 200
    server.wait_for_line(r'"GET /defaults HTTP/1\.1" 200 6')
    server.wait_for_line(rf"^{TS} \[\d+\] \[INFO\] Booting worker with pid: \d+$")


def test_bad_log_config_fails_at_start(run_server, tmp_path):
    server = run_server("--log-config", str(tmp_path / "missing.ini"), "l_apps:hello", ready=False)
    assert server.wait(timeout=30) == 1
    assert "log config" in server.log and "not found" in server.log, server.log


# --- --logger-class ---------------------------------------------------------------------------


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in read_lines(path)]


def test_custom_logger_class_receives_the_calls(run_server, worker_args, tmp_path):
    calls = tmp_path / "calls.jsonl"
    server = run_server(*worker_args, "--logger-class", "l_logger.RecordingLogger",
                        "l_apps:statuses", env={"L_LOGGER_FILE": str(calls)}, ready=False)

    def address():
        for r in records(calls):
            m = re.match(r"Listening at: (\S+) ", r.get("msg", ""))
            if m:
                return m.group(1)
        return None

    server.addresses = [wait_until(address, 30, message="Listening at")]
    assert get(server, "/status/201?q=1", {"X-Custom": "yes"})[0] == 201
    assert get(server, "/boom")[0] == 500

    def accessed():
        got = [r for r in records(calls) if r["kind"] == "access"]
        return got if len(got) >= 2 else None

    access = wait_until(accessed, 15, message="two access calls")
    first = access[0]
    assert first["status"] == "201 Whatever" and first["method"] == "GET"
    assert first["path"] == "/status/201" and first["query"] == "q=1"
    assert first["uri"] == "/status/201?q=1" and first["path_info"] == "/status/201"
    assert ["X-CUSTOM", "yes"] in first["req_headers"]
    assert ["Content-Length", "3"] in first["resp_headers"] and first["sent"] == 3
    assert 0 <= first["micros"] < 10_000_000
    all_records = records(calls)
    kinds = {r["kind"] for r in all_records}
    assert {"init", "info", "access", "exception"} <= kinds, kinds
    assert all_records[0]["kind"] == "init" and all_records[0]["loglevel"] == "info"
    boom = [r for r in all_records if r["kind"] == "exception"]
    assert boom[0]["msg"] == "Error handling request GET /boom"
    assert boom[0]["exc_type"] == "RuntimeError" and boom[0]["exc_value"] == "boom from the app"
    assert any(r["kind"] == "info" and r["msg"].startswith("Booting worker with pid: ")
               for r in all_records)
    server.signal(signal.SIGUSR1)
    wait_until(lambda: sum(r["kind"] == "reopen_files" for r in records(calls)) >= 2, 15,
               message="reopen_files in master and worker")
    # Nothing went to the built-in error log.
    assert "Booting worker" not in server.log


def test_gunicorn_logger_class_is_the_builtin_logger(run_server):
    server = run_server("--logger-class", "gunicorn.glogging.Logger", "l_apps:hello")
    assert get(server, "/")[0] == 200
    server.wait_for_line(r"\[INFO\] Booting worker with pid: ")
    assert "These settings have no effect" not in server.log


# --- syslog -----------------------------------------------------------------------------------

# RFC 3164 as Gunicorn frames it through Python's SysLogHandler.
SYSLOG = re.compile(rb"^<(?P<pri>\d{1,3})>(?P<prog>gunicorn\.[\w.-]+\.(?:error|access)): "
                    rb"\[(?P<pid>\d+)\] (?P<msg>.*)\x00$", re.S)
SEVERITY = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "INFO": 6, "DEBUG": 7}


class Receiver:
    """Collects datagrams on a bound socket from a thread."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(0.2)
        self.items: list[bytes] = []
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped:
            try:
                self.items.append(self.sock.recv(65536))
            except socket.timeout:
                continue
            except OSError:
                return

    def wait_for(self, pattern: bytes, timeout: float = 15.0) -> bytes:
        regex = re.compile(pattern, re.S)
        return wait_until(lambda: next((d for d in list(self.items) if regex.search(d)), None),
                          timeout, message=f"datagram matching {pattern!r}")

    def close(self) -> None:
        self.stopped = True
        self.thread.join(timeout=2)
        self.sock.close()


def udp_receiver() -> tuple[Receiver, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return Receiver(sock), sock.getsockname()[1]


def check_syslog(rx: Receiver, facility: int, prog: str, server, worker_pid: int) -> None:
    """Every datagram is framed right; one line of each kind has the right priority."""
    started = rx.wait_for(rb"\] Starting ferrocorn ")
    m = SYSLOG.match(started)
    assert m, started
    assert int(m["pri"]) == facility * 8 + SEVERITY["INFO"]
    assert m["prog"].decode() == f"{prog}.error" and int(m["pid"]) == server.proc.pid
    access = rx.wait_for(rb'"GET /status/404 HTTP/1\.1" 404 ')
    m = SYSLOG.match(access)
    assert m and m["prog"].decode() == f"{prog}.access", access
    assert int(m["pri"]) == facility * 8 + SEVERITY["INFO"] and int(m["pid"]) == worker_pid
    assert re.match(rb'^127\.0\.0\.1 - - \[[^\]]+\] "GET /status/404 HTTP/1\.1" 404 3 "-" "-"$',
                    m["msg"]), m["msg"]
    error = rx.wait_for(rb"Error handling request GET /boom")
    m = SYSLOG.match(error)
    assert m and int(m["pri"]) == facility * 8 + SEVERITY["ERROR"], error
    assert m["prog"].decode() == f"{prog}.error" and int(m["pid"]) == worker_pid
    assert m["msg"].startswith(b"Error handling request GET /boom\nTraceback (most recent call last):\n")
    assert m["msg"].endswith(b"RuntimeError: boom from the app")
    for datagram in list(rx.items):
        assert SYSLOG.match(datagram), datagram


def exercise(server) -> int:
    """A 404 and an application error; returns the worker's pid."""
    worker = wait_until(lambda: booted_worker_pids(server), 15, message="worker")[0]
    assert get(server, "/status/404")[0] == 404
    assert get(server, "/boom")[0] == 500
    return worker


def test_syslog_over_udp(run_server, worker_args):
    rx, port = udp_receiver()
    try:
        server = run_server("-w", "1", *worker_args, "--log-syslog", "--log-syslog-to",
                            f"udp://127.0.0.1:{port}", "--log-syslog-prefix", "myapp",
                            "--log-syslog-facility", "local3", "l_apps:statuses")
        worker = exercise(server)
        check_syslog(rx, 19, "gunicorn.myapp", server, worker)
        # The error log keeps going to stderr as well; no access log file was asked for.
        server.wait_for_line(r"\[INFO\] Booting worker with pid: ")
        assert "GET /status/404" not in server.log
        assert "These settings have no effect" not in server.log
    finally:
        rx.close()


def test_syslog_over_a_unix_datagram_socket(run_server, tmp_path):
    path = tmp_path / "log.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    rx = Receiver(sock)
    try:
        server = run_server("-n", "my:app", "--log-syslog", "--log-syslog-to", f"unix://{path}#dgram",
                            "--log-syslog-facility", "DAEMON", "l_apps:statuses")
        worker = exercise(server)
        # No prefix: the process name, with ':' turned into '.'.
        check_syslog(rx, 3, "gunicorn.my.app", server, worker)
    finally:
        rx.close()


def test_access_lines_can_stay_out_of_syslog(run_server, tmp_path):
    rx, port = udp_receiver()
    access = tmp_path / "access.log"
    try:
        server = run_server("--log-syslog", "--log-syslog-to", f"udp://127.0.0.1:{port}",
                            "--disable-redirect-access-to-syslog", "--access-logfile", str(access),
                            "l_apps:statuses")
        exercise(server)
        rx.wait_for(rb"Error handling request GET /boom")
        wait_for_text(access, r'"GET /boom HTTP/1\.1" 500 ')
        assert not [d for d in rx.items if b".access: " in d]
    finally:
        rx.close()


# --- USR1 under load --------------------------------------------------------------------------


def test_usr1_reopens_every_log_under_load(run_server, tmp_path):
    """logrotate's way: rename the files, send USR1, and every line lands exactly once."""
    access, errors = tmp_path / "access.log", tmp_path / "error.log"
    server = run_server("-w", "2", "--access-logfile", str(access), "--error-logfile", str(errors),
                        "l_apps:marked", ready=False)
    ready_from_file(server, errors)
    wait_until(lambda: errors.read_text().count("Booting worker") >= 2, 15, message="workers")
    # Load runs until lines show up in the new files (bounded in count and time), so the
    # rotation always happens mid-load however fast the machine is.
    cap, threads = 20000, 4
    next_id = [0]
    done = [0]
    stop = threading.Event()
    lock = threading.Lock()
    failures: list[BaseException] = []

    def client() -> None:
        try:
            with server.connect() as s:
                reader = SocketReader(s)
                while not stop.is_set():
                    with lock:
                        if next_id[0] >= cap:
                            return
                        i = next_id[0]
                        next_id[0] += 1
                    s.sendall(f"GET /m?id={i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                    assert reader.response()[0] == 200
                    with lock:
                        done[0] += 1
        except BaseException as e:  # noqa: B036 - reported below
            failures.append(e)

    def ids(paths: list[Path], pattern: str) -> list[int]:
        regex = re.compile(pattern)
        return [int(m.group(1)) for p in paths for line in read_lines(p) for m in [regex.search(line)] if m]

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for t in workers:
        t.start()
    try:
        wait_until(lambda: done[0] >= 300, 60, message="load under way")
        os.rename(access, tmp_path / "access.log.1")
        os.rename(errors, tmp_path / "error.log.1")
        server.signal(signal.SIGUSR1)
        wait_until(lambda: ids([access], r"GET /m\?id=(\d+) ") and ids([errors], r"^mark id=(\d+)$"),
                   30, message="lines in the reopened files")
    finally:
        stop.set()
        for t in workers:
            t.join(timeout=60)
    assert not failures, failures
    total = next_id[0]
    assert done[0] == total

    access_files = [tmp_path / "access.log.1", access]
    error_files = [tmp_path / "error.log.1", errors]
    wait_until(lambda: len(ids(access_files, r"GET /m\?id=(\d+) ")) >= total, 15, message="access lines")
    got = ids(access_files, r"GET /m\?id=(\d+) ")
    assert sorted(got) == list(range(total))
    marks = ids(error_files, r"^mark id=(\d+)$")
    assert sorted(marks) == list(range(total))
    assert ids([tmp_path / "access.log.1"], r"GET /m\?id=(\d+) ")
    # The master logs the signal, then reopens.
    assert "Handling signal: usr1" in (tmp_path / "error.log.1").read_text()
    for line in read_lines(errors) + read_lines(tmp_path / "error.log.1"):
        assert re.match(rf"^({TS} \[\d+\] \[[A-Z]+\] .+|mark id=\d+)$", line), line


# --- what Python formatters see ----------------------------------------------------------------


ATOMS_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %({x-req}i)s'


@pytest.mark.parametrize("kind", ["dict", "json"])
def test_access_records_carry_gunicorns_atoms(run_server, worker_args, tmp_path, kind):
    # Gunicorn logs `access_log_format % atoms` with the atoms dict as `record.args`; JSON
    # formatters read fields from it. Before: `record.args == ()` and every access line was lost.
    out = tmp_path / "access.jsonl"
    config = {
        "version": 1,
        "formatters": {"atoms": {"()": "l_apps.AtomsJsonFormatter"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(out),
                              "formatter": "atoms"}},
        "root": {"level": "WARNING", "handlers": []},
        "loggers": {"gunicorn.access": {"level": "INFO", "handlers": ["file"], "propagate": False}},
    }
    if kind == "dict":
        conf = tmp_path / "conf.py"
        conf.write_text(f"logconfig_dict = {config!r}\n")
        args = ["-c", str(conf)]
    else:
        path = tmp_path / "logging.json"
        path.write_text(json.dumps(config))
        args = ["--log-config-json", str(path)]
    server = run_server(*worker_args, *args, "--access-logformat", ATOMS_FORMAT, "l_apps:hello")
    headers = {"X-Req": "in", "Authorization": "Basic dXNlcjpwYXNz", "User-Agent": 'ua "q"'}
    assert get(server, "/a%20b?x=1", headers)[0] == 200
    line = wait_for_text(out, r"^\{.*\}$").group(0)
    rec = json.loads(line)
    assert rec["status"] == "200" and rec["method"] == "GET" and rec["path"] == "/a b"
    assert rec["query"] == "x=1" and rec["remote"] == "127.0.0.1" and rec["protocol"] == "HTTP/1.1"
    assert rec["request"] == "GET /a%20b?x=1 HTTP/1.1"
    assert rec["bytes"] == 6 and rec["bytes_text"] == "6"
    assert all(isinstance(rec[k], int) for k in ("seconds", "micros", "millis")), rec
    assert re.fullmatch(r"\d+\.\d{6}", rec["decimal"]) and re.fullmatch(r"<\d+>", rec["pid"])
    assert rec["user"] == "user" and rec["referer"] == "-" and rec["agent"] == 'ua \\"q\\"'
    assert rec["req_header"] == "in" and rec["resp_header"] == "out-value"
    assert rec["environ"] == "GET" and rec["missing"] == "-"
    assert rec["msg_is_format"] == ATOMS_FORMAT
    assert rec["message"] == '127.0.0.1 "GET /a%20b?x=1 HTTP/1.1" 200 6 in'
    # A request refused for a field's value has its record too, with the atoms Gunicorn's error
    # path gives it.
    with server.connect() as s:
        s.sendall(b"POST /r?y=1 HTTP/1.1\r\nHost: x\r\nX-Req: in\r\nUser-Agent: ua\r\nContent-Length: 5\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        assert SocketReader(s).response()[0] == 400
    line = wait_until(lambda: (lines := read_lines(out)) and len(lines) >= 2 and lines[1], 15,
                      message="the refused request's record")
    rec = json.loads(line)
    assert (rec["status"], rec["request"], rec["query"], rec["bytes"]) == ("400", "POST /r?y=1 HTTP/1.1", "y=1", 0)
    assert rec["req_header"] == "in" and rec["agent"] == "-", rec
    assert "Logging error" not in server.log, server.log


# --- Gunicorn's lines at start, stop and with --reload -------------------------------------------


def test_halt_is_logged_at_error(run_server):
    # `--log-level warning` must keep why the master stopped (Gunicorn logs it at ERROR).
    server = run_server("--log-level", "warning", "no_such_module_xyz:app", ready=False)
    assert server.wait(timeout=30) == 3, server.log
    log = server.log
    for line in (r"\[ERROR\] Worker \(pid:\d+\) exited with code 3\.$", r"\[ERROR\] Shutting down: Master$",
                 r"\[ERROR\] Reason: Worker failed to boot\.$"):
        assert re.search(line, log, re.M), (line, log)
    assert "[INFO]" not in log, log


def test_debug_level_logs_the_configuration_and_boot(run_server):
    server = run_server("--log-level", "debug", "-w", "2", "l_apps:hello")
    server.wait_for_line(r"\[DEBUG\] Arbiter booted$")
    log = server.log
    m = re.search(rf"^{TS} \[\d+\] \[DEBUG\] Current configuration:\n((?:  \w+: .*\n)+)", log, re.M)
    assert m, log
    settings = {name: value for line in m.group(1).splitlines()
                for name, _, value in [line[2:].partition(": ")]}
    assert settings["workers"] == "2" and settings["bind"] == "['127.0.0.1:0']", settings
    assert settings["loglevel"] == "debug"
    assert log.index("Arbiter booted") < log.index("Listening at:")


def test_reload_warns(run_server):
    server = run_server("--reload", "l_apps:hello")
    server.wait_for_line(r"\[WARNING\] Reloader is on\. Use in development only!$")
