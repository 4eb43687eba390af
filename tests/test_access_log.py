"""The access log: off by default, Gunicorn's default format, every atom, file and stdout,
reopening on USR1, and write failures reported in the error log."""

from __future__ import annotations

import os
import re
import select
import signal
import time
from pathlib import Path

from conftest import SocketReader, get

# Gunicorn's default line: %(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"
DEFAULT_LINE = re.compile(
    r'^(?P<h>\S+) - (?P<u>\S+) \[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] '
    r'"(?P<r>(?:[^"\\]|\\.)*)" (?P<s>\d{3}) (?P<b>\d+|-) "(?P<f>(?:[^"\\]|\\.)*)" '
    r'"(?P<a>(?:[^"\\]|\\.)*)"$'
)
# The error log: [YYYY-MM-DD HH:MM:SS +ZZZZ] [pid] [LEVEL] message
ERROR_LINE = re.compile(r"^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [+-]\d{4}\] \[\d+\] \[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\] .+$")


def wait_lines(path: Path, count: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            lines = path.read_text().splitlines()
            if len(lines) >= count:
                return lines
        time.sleep(0.05)
    raise AssertionError(f"{path} has fewer than {count} lines: {path.read_text() if path.exists() else None!r}")


def test_no_access_log_by_default(run_server, worker_args):
    server = run_server(*worker_args, "l_apps:hello")
    assert get(server, "/quiet")[0] == 200
    server.stop()
    assert "/quiet" not in server.log


def test_default_format_matches_gunicorn(run_server, worker_args, tmp_path):
    log = tmp_path / "access.log"
    server = run_server(*worker_args, "--access-logfile", str(log), "l_apps:hello")
    headers = {"Referer": "http://ref.example/", "User-Agent": 'agent "quoted"',
               "Authorization": "Basic dXNlcjpzZWNyZXQ="}
    assert get(server, "/path?x=1", headers)[0] == 200
    line = wait_lines(log, 1)[0]
    m = DEFAULT_LINE.match(line)
    assert m, line
    assert m["h"] == "127.0.0.1" and m["u"] == "user"
    assert m["r"] == "GET /path?x=1 HTTP/1.1" and m["s"] == "200" and m["b"] == "6"
    assert m["f"] == "http://ref.example/"
    assert 'agent \\"quoted\\"' in line


def test_every_atom(run_server, tmp_path):
    log = tmp_path / "access.log"
    fmt = ("h=%(h)s l=%(l)s u=%(u)s m=%(m)s U=%(U)s q=%(q)s H=%(H)s s=%(s)s B=%(B)s b=%(b)s "
           "f=%(f)s a=%(a)s T=%(T)s M=%(M)s D=%(D)s L=%(L)s p=%(p)s "
           "i=%({x-in}i)s o=%({x-out}o)s e=%({server_name}e)s none=%({absent}i)s t=%(t)s")
    server = run_server("--access-logfile", str(log), "--access-logformat", fmt, "l_apps:hello")
    assert get(server, "/a%20b?k=v", {"X-In": "in-value", "User-Agent": "ua"})[0] == 200
    line = wait_lines(log, 1)[0]
    pid = re.search(r"p=<(\d+)>", line)
    assert pid and int(pid.group(1)) != server.proc.pid, line  # written by the worker
    expect = ("h=127.0.0.1 l=- u=- m=GET U=/a b q=k=v H=HTTP/1.1 s=200 B=6 b=6 f=- a=ua ")
    assert line.startswith(expect), line
    assert re.search(r" T=\d+ M=\d+ D=\d+ L=\d+\.\d{6} ", line), line
    assert " i=in-value o=out-value e=127.0.0.1 none=- " in line, line
    assert re.search(r"t=\[\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\]$", line), line


def test_access_log_to_stdout(run_server, worker_args):
    server = run_server(*worker_args, "--access-logfile", "-", "l_apps:hello")
    assert get(server, "/to-stdout")[0] == 200
    server.wait_for_line(r'"GET /to-stdout HTTP/1.1" 200 6')


def test_one_lineper_request_on_keep_alive(run_server, worker_args, tmp_path):
    log = tmp_path / "access.log"
    server = run_server(*worker_args, "-w", "2", "--access-logfile", str(log), "l_apps:hello")
    with server.connect() as sock:
        reader = SocketReader(sock)
        for i in range(20):
            sock.sendall(f"GET /ka{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            assert reader.response()[0] == 200
    lines = wait_lines(log, 20)
    assert len(lines) == 20
    assert all(DEFAULT_LINE.match(line) for line in lines), lines
    assert [re.search(r"/ka(\d+)", line).group(1) for line in lines] == [str(i) for i in range(20)]


def test_usr1_reopens_the_access_log(run_server, tmp_path):
    log = tmp_path / "access.log"
    rotated = tmp_path / "access.log.1"
    server = run_server("--access-logfile", str(log), "l_apps:hello")
    assert get(server, "/before")[0] == 200
    wait_lines(log, 1)
    os.rename(log, rotated)
    server.signal(signal.SIGUSR1)
    server.wait_for_line(r"Handling signal: usr1")
    deadline = time.monotonic() + 10
    # The worker reopens when its event loop sees the signal; poll until a request lands anew.
    while time.monotonic() < deadline:
        assert get(server, "/after")[0] == 200
        if log.exists() and "/after" in log.read_text():
            break
        time.sleep(0.1)
    assert "/after" in log.read_text()
    assert "/before" in rotated.read_text()
    assert "/before" not in log.read_text()


def test_error_log_lines_have_gunicorns_format(run_server, worker_args):
    server = run_server(*worker_args, "l_apps:hello")
    server.stop()
    lines = [line for line in server.log.splitlines() if line.startswith("[")]
    assert lines and all(ERROR_LINE.match(line) for line in lines), lines
    for kind in (r"\[INFO\] Starting ferrocorn ", r"\[INFO\] Listening at: http://127\.0\.0\.1:\d+ \(\d+\)$",
                 r"\[INFO\] Using worker: (sync|gthread)$", r"\[INFO\] Booting worker with pid: \d+$",
                 r"\[INFO\] Handling signal: term$", r"\[INFO\] Worker exiting \(pid: \d+\)$",
                 r"\[INFO\] Shutting down: Master$"):
        assert any(re.search(kind, line) for line in lines), (kind, lines)


def test_error_log_line_kinds_match_gunicorn(run_server, tmp_path):
    """One regular expression per kind of line, as Gunicorn 27 writes them."""
    errlog = tmp_path / "error.log"
    server = run_server("--max-requests", "2", "--error-logfile", str(errlog), "--spew",
                        "l_apps:statuses", ready=False)
    deadline = time.monotonic() + 30
    while not (errlog.exists() and "Listening at:" in errlog.read_text()):
        assert time.monotonic() < deadline, server.log
        time.sleep(0.05)
    server.addresses = [re.search(r"Listening at: (\S+) ", errlog.read_text()).group(1)]
    assert get(server, "/boom")[0] == 500
    assert get(server, "/")[0] == 200
    server.signal(signal.SIGUSR1)
    server.signal(signal.SIGTTIN)
    deadline = time.monotonic() + 30
    while errlog.read_text().count("Booting worker") < 3:
        assert time.monotonic() < deadline, errlog.read_text()
        time.sleep(0.05)
    pid = int(re.findall(r"Booting worker with pid: (\d+)", errlog.read_text())[-1])
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while "was sent SIGKILL" not in errlog.read_text():
        assert time.monotonic() < deadline, errlog.read_text()
        time.sleep(0.05)
    server.stop()
    text = errlog.read_text()
    kinds = [
        r"\[WARNING\] These settings have no effect in ferrocorn \S+ yet: spew = True$",
        r"\[ERROR\] Error handling request GET /boom\nTraceback \(most recent call last\):\n(  .*\n)+"
        r"RuntimeError: boom from the app$",
        r"\[INFO\] Autorestarting worker after current request\.$",
        r"\[INFO\] Handling signal: usr1$",
        r"\[INFO\] Handling signal: ttin$",
        rf"\[ERROR\] Worker \(pid:{pid}\) was sent SIGKILL! Perhaps out of memory\?$",
        r"\[INFO\] Worker exiting \(pid: \d+\)$",
    ]
    for kind in kinds:
        assert re.search(r"^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [+-]\d{4}\] \[\d+\] " + kind, text, re.M), \
            (kind, text)
    # Apart from traceback lines, every line is an error log line.
    body = re.sub(r"Traceback \(most recent call last\):\n(  .*\n)+\w+Error: .*\n", "", text)
    assert all(ERROR_LINE.match(line) for line in body.splitlines()), body


ACCESS_WRITE_FAILED = r"\[ERROR\] Cannot write to access log "
ACCESS_WRITE_RECOVERED = r"\[WARNING\] Writing to access log "


def _lines_matching(server, pattern: str) -> list[str]:
    return [line for line in server.lines if re.search(pattern, line)]


def test_unwritable_access_log_reported_once(run_server, worker_args):
    server = run_server(*worker_args, "-w", "1", "--access-logfile", "/dev/full", "l_apps:hello")
    with server.connect() as sock:
        reader = SocketReader(sock)
        for i in range(50):
            sock.sendall(f"GET /full{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            assert reader.response()[0] == 200
    # Stopping the worker settles every line it was going to try.
    assert server.stop() == 0
    failed = _lines_matching(server, ACCESS_WRITE_FAILED)
    assert len(failed) == 1, server.log
    assert '"/dev/full"' in failed[0] and "No space left on device" in failed[0]
    assert not _lines_matching(server, ACCESS_WRITE_RECOVERED)


def _read_fifo(fd: int, want: str, timeout: float = 10.0) -> str:
    """Reads the FIFO until `want` appears in what was read."""
    got = ""
    deadline = time.monotonic() + timeout
    while want not in got:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{want!r} not written; got {got!r}"
        if select.select([fd], [], [], remaining)[0]:
            got += os.read(fd, 65536).decode()
    return got


def test_access_log_write_failure_and_recovery_reported(run_server, tmp_path):
    # A FIFO fails writes deterministically while it has no reader (EPIPE) and takes them
    # again once a reader is back.
    fifo = tmp_path / "access.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        server = run_server("-w", "1", "--access-logfile", str(fifo), "l_apps:hello")
        with server.connect() as sock:
            responses = SocketReader(sock)

            def request(path: str) -> None:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
                assert responses.response()[0] == 200

            request("/first")
            _read_fifo(reader, "/first")
            os.close(reader)
            reader = -1
            # A request's line is written after its response and before the connection's next
            # request is read: once /lost5 is answered, the lines up to /lost4 were tried.
            for i in range(6):
                request(f"/lost{i}")
            server.wait_for_line(ACCESS_WRITE_FAILED)
            reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
            request("/back")
            written = _read_fifo(reader, "/back")
        recovered = server.wait_for_line(ACCESS_WRITE_RECOVERED + r".*; (\d+) line\(s\) were lost")
        # /lost5's line went out before the reader was back or after.
        assert int(recovered.group(1)) == (5 if "/lost5" in written else 6), server.log
        assert not re.search(r"/lost[0-4]", written)
        failed = _lines_matching(server, ACCESS_WRITE_FAILED)
        assert len(failed) == 1 and str(fifo) in failed[0] and "Broken pipe" in failed[0], server.log
    finally:
        if reader >= 0:
            os.close(reader)


def test_malformed_request_is_logged_like_gunicorn(run_server, worker_args):
    # Gunicorn: `Invalid request from ip=ADDR: REASON` at WARNING for a request refused as
    # malformed, and an access line when the request line was read (a bad field value).
    # Before, the refusal left no trace in either log.
    server = run_server(*worker_args, "--access-logfile", "-", "l_apps:hello")
    # Gunicorn's access line for it shows `-` for the Referer and User-Agent atoms.
    raw = (b"POST / HTTP/1.1\r\nHost: x\r\nUser-Agent: ua\r\nContent-Length: 5\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    with server.connect() as s:
        s.sendall(raw)
        status, _, _, _ = SocketReader(s).response()
    assert status == 400
    server.wait_for_line(r"\[WARNING\] Invalid request from ip=127\.0\.0\.1: "
                         r"Invalid HTTP Header: 'CONTENT-LENGTH'$")
    line = server.wait_for_line(r'^127\.0\.0\.1 - - \[.*\] "POST / HTTP/1\.1" 400 0 "-" "-"$').string
    assert DEFAULT_LINE.match(line), line
    start = len(server.lines)
    with server.connect() as s:
        s.sendall(b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert SocketReader(s).response()[0] == 400
    server.wait_for_line(r"\[WARNING\] Invalid request from ip=127\.0\.0\.1: Invalid HTTP method: 'G@T'$")
    # No request line, no access line (as in Gunicorn).
    server.stop()
    assert not any('"G@T' in line or " 400 " in line for line in server.lines[start:]), server.lines[start:]


def test_malformed_body_is_logged_like_gunicorn(run_server, worker_args):
    # A chunked body that turns out malformed while the application reads it: Gunicorn's
    # warning, then the 400's access line.
    server = run_server(*worker_args, "--access-logfile", "-", "w_apps:echo_environ")
    with server.connect() as s:
        s.sendall(b"POST /body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
        assert SocketReader(s).response()[0] == 400
    server.wait_for_line(r"\[WARNING\] Invalid request from ip=127\.0\.0\.1: Invalid chunk size: ")
    server.wait_for_line(r'^127\.0\.0\.1 - - \[.*\] "POST /body HTTP/1\.1" 400 ')


def test_client_reset_is_a_debug_line(run_server, worker_args):
    # A client that resets its connection before the answer: Gunicorn's debug line, no error.
    import socket
    import struct

    server = run_server(*worker_args, "--log-level", "debug", "l_apps:statuses")
    with server.connect() as s:
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    server.wait_for_line(r"\[DEBUG\] Ignoring (connection reset|EPIPE)$")
    assert "[ERROR]" not in server.log, server.log
