"""Shared fixtures: start a real ferrocorn process and talk to it over real sockets.

A server is started with `-b 127.0.0.1:0` (or a unix socket); its address is read back from
the `Listening at:` line of its error log, never guessed. Every process a test starts is
stopped when the test ends, by the fixture, whatever the test's outcome.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
APPS_DIR = TESTS_DIR / "apps"
# The command under test; FERROCORN_TEST_COMMAND lets the suite run against another build.
SERVER_COMMAND = os.environ.get("FERROCORN_TEST_COMMAND", "ferrocorn").split()
STARTUP_DEADLINE = 30.0
LISTENING = re.compile(r"Listening at: (\S+) \(\d+\)")


class Server:
    """A running server process whose error log is collected line by line."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], *,
                 command: list[str] | None = None, pass_fds: tuple[int, ...] = ()) -> None:
        """`command` replaces the `ferrocorn` command (e.g. a Python script that embeds it);
        `pass_fds` are inherited by the process (for `--bind fd://N`)."""
        self.args = args
        self.proc = subprocess.Popen(
            (SERVER_COMMAND if command is None else command) + args,
            cwd=str(cwd),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=pass_fds,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.addresses: list[str] = []

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def log(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = STARTUP_DEADLINE, start: int = 0) -> re.Match:
        """Waits until a log line (from index `start` on) matches `pattern`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    m = regex.search(line)
                    if m:
                        return m
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"no log line matching {pattern!r} within {timeout}s; log:\n" + "\n".join(self.lines)
                    )
                self._cond.wait(min(remaining, 0.2))

    def wait_ready(self, listeners: int = 1) -> None:
        deadline = time.monotonic() + STARTUP_DEADLINE
        while len(self.addresses) < listeners:
            with self._cond:
                # One line lists every listener, comma-separated, as Gunicorn prints it.
                found = [addr for line in self.lines for m in [LISTENING.search(line)] if m
                         for addr in m.group(1).split(",")]
            self.addresses = found
            if len(found) >= listeners:
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._reader.join(timeout=2)
                raise AssertionError(f"server did not start (exit {self.proc.poll()}); log:\n{self.log}")
            time.sleep(0.02)

    @property
    def address(self) -> str:
        return self.addresses[0]

    @property
    def host_port(self) -> tuple[str, int]:
        m = re.match(r"https?://\[?([^\]]+?)\]?:(\d+)$", self.address)
        assert m, f"not a TCP listener: {self.address}"
        return m.group(1), int(m.group(2))

    @property
    def port(self) -> int:
        return self.host_port[1]

    @property
    def url(self) -> str:
        return self.address

    def connect(self, timeout: float = 10.0) -> socket.socket:
        """A fresh connection to the first listener."""
        if self.address.startswith("unix:"):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(self.address[len("unix:"):])
            return s
        host, port = self.host_port
        s = socket.create_connection((host, port), timeout=timeout)
        return s

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def stop(self, sig: int | None = None, timeout: float = 30.0) -> int:
        """Stops the server (SIGTERM unless `sig`) and returns its exit status; kills the group if it hangs."""
        # (`signal` in this class body is the method above, hence no `signal.SIGTERM` default.)
        sig = signal.SIGTERM if sig is None else sig
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
        return self.wait(timeout)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PORT", None)
    env.pop("WEB_CONCURRENCY", None)
    env.pop("GUNICORN_CMD_ARGS", None)
    env.pop("FERROCORN_CMD_ARGS", None)
    env["PYTHONPATH"] = os.pathsep.join([str(APPS_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


@pytest.fixture
def run_server(tmp_path: Path) -> Iterator:
    """`run_server(*args, cwd=..., env=..., ready=True)` starts ferrocorn and returns a Server.

    Without a `-b`, the server binds 127.0.0.1:0. The fixture stops every server it started.
    """
    started: list[Server] = []

    def start(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
              ready: bool = True, listeners: int = 1) -> Server:
        argv = list(args)
        if not any(a in ("-b", "--bind") or a.startswith("--bind=") or (a.startswith("-b") and len(a) > 2)
                   for a in argv):
            argv = ["-b", "127.0.0.1:0"] + argv
        srv = Server(argv, cwd or tmp_path, server_env(env))
        started.append(srv)
        if ready:
            srv.wait_ready(listeners)
        return srv

    yield start
    stop_all(started)


def stop_all(servers: list[Server]) -> None:
    """Stops each server gracefully (TERM, up to 15 s), then kills whatever is left."""
    for srv in servers:
        if srv.proc.poll() is None:
            try:
                srv.stop(signal.SIGTERM, timeout=15)
            except subprocess.TimeoutExpired:
                pass
        srv.kill()


@pytest.fixture(params=["sync", "gthread"])
def worker_class(request) -> str:
    return request.param


@pytest.fixture
def worker_args(worker_class: str) -> list[str]:
    """Command-line arguments selecting the worker class under test."""
    if worker_class == "gthread":
        return ["-k", "gthread", "--threads", "4"]
    return ["-k", "sync"]


def req(method: str = "GET", path: str = "/", headers: dict | list | None = None, body: bytes = b"",
        version: str = "HTTP/1.1", host: str | None = "localhost") -> bytes:
    """Raw request bytes; `headers` may be a dict or a list of pairs (repeats allowed)."""
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    if host is not None and not any(k.lower() == "host" for k, _ in pairs):
        pairs.insert(0, ("Host", host))
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in pairs):
        pairs.append(("Content-Length", str(len(body))))
    head = f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in pairs) + "\r\n"
    return head.encode("latin-1") + body


def http_request(sock: socket.socket, raw: bytes) -> None:
    sock.sendall(raw)


def read_response(sock: socket.socket, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes, bytes]:
    """Reads one HTTP/1.x response: (status, headers lower-cased, body, raw head).

    Handles Content-Length, chunked and close-delimited bodies. Bodies of responses to HEAD
    cannot be told apart here; use `read_head` for those.
    """
    reader = SocketReader(sock, timeout)
    return reader.response()


class SocketReader:
    """Buffered reader for one connection; keeps bytes that belong to the next response."""

    def __init__(self, sock: socket.socket, timeout: float = 10.0) -> None:
        self.sock = sock
        self.buf = b""
        self.deadline_span = timeout
        sock.settimeout(timeout)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def read_until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            if not self._fill():
                raise ConnectionError(f"closed before {marker!r}; got {self.buf[:200]!r}")
        idx = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:idx], self.buf[idx:]
        return out

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionError(f"closed after {len(self.buf)} of {n} bytes")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_to_close(self) -> bytes:
        while self._fill():
            pass
        out, self.buf = self.buf, b""
        return out

    def head(self) -> tuple[int, dict[str, str], bytes]:
        raw = self.read_until(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return status, headers, raw

    def response(self, head_request: bool = False) -> tuple[int, dict[str, str], bytes, bytes]:
        status, headers, raw = self.head()
        if head_request or status in (204, 304) or 100 <= status < 200:
            return status, headers, b"", raw
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = b""
            while True:
                size_line = self.read_until(b"\r\n")
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    self.read_until(b"\r\n")  # no trailers expected from the server
                    break
                body += self.read_exact(size)
                self.read_exact(2)
            return status, headers, body, raw
        if "content-length" in headers:
            return status, headers, self.read_exact(int(headers["content-length"])), raw
        return status, headers, self.read_to_close(), raw


def read_all(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything until the peer closes (a reset counts as a close); fails after `timeout`."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        except socket.timeout:
            break
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"connection still open after {timeout}s; got {data[:300]!r}")


def get(server: Server, path: str = "/", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One GET on a fresh connection with `Connection: close`."""
    hdrs = {"Host": "localhost", "Connection": "close"}
    hdrs.update(headers or {})
    raw = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    with server.connect() as s:
        s.sendall(raw.encode("latin-1"))
        status, h, body, _ = SocketReader(s).response()
    return status, h, body


# --- Helpers for the CLI, master, framework and proxy tests -------------------------------------


def script_server(args: list[str], cwd: Path) -> Server:
    """A Python script that ends up running ferrocorn, watched like the `ferrocorn` command."""
    return Server(args, cwd, server_env(), command=[sys.executable])


def run_command(args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
                timeout: float = STARTUP_DEADLINE) -> subprocess.CompletedProcess:
    """Runs the server command to completion (for commands that exit by themselves)."""
    return subprocess.run(  # noqa: PLW1510 - the exit status is checked by the caller
        SERVER_COMMAND + args,
        cwd=str(cwd) if cwd else None,
        env=server_env(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
        text=True,
    )


def booted_worker_pids(server: Server, start: int = 0) -> list[int]:
    """Pids from the `Booting worker with pid: N` lines logged so far (from line `start` on)."""
    with server._cond:
        lines = list(server.lines[start:])
    return [int(m.group(1)) for line in lines for m in [re.search(r"Booting worker with pid: (\d+)", line)] if m]


def wait_until(predicate, timeout: float, interval: float = 0.05, message: str = "condition"):
    """Polls `predicate` until it returns a truthy value or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met within {timeout}s")
        time.sleep(interval)


def listener_addresses(server: Server, count: int, timeout: float = STARTUP_DEADLINE) -> list[str]:
    """Every listener address logged, whether one `Listening at:` line names several
    (Gunicorn joins them with commas) or each has its own line."""

    def found() -> list[str]:
        with server._cond:
            lines = list(server.lines)
        return [a for line in lines for m in [LISTENING.search(line)] if m for a in m.group(1).split(",")]

    return wait_until(lambda: len(found()) >= count and found(), timeout, message=f"{count} listeners")


def connect_to(address: str, timeout: float = 10.0) -> socket.socket:
    """A connection to a logged listener address (`http://HOST:PORT`, `http://[V6]:PORT`, `unix:PATH`)."""
    if address.startswith("unix:"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(address[len("unix:"):])
        return s
    m = re.match(r"https?://\[?([^\]]+?)\]?:(\d+)$", address)
    assert m, f"not a listener address: {address}"
    return socket.create_connection((m.group(1), int(m.group(2))), timeout=timeout)
