#!/usr/bin/env python3
"""The ferrocorn benchmark: runs ferrocorn and its peers on the same apps and the same machine.

Every server runs ONE worker process (master included) pinned to core 0 with `taskset -c 0`;
the load generator `wrk` runs pinned to core 1. Everything talks over 127.0.0.1 only.

For each scenario and each run, every server configuration is started afresh, warmed up, measured
and stopped (its whole process group is killed); runs are interleaved across servers so that a
slow moment of a shared machine does not land on one server only. Results go to
bench/results/results.md, results.json and chart.png.

Usually started through `bash bench/run.sh`, which installs what this needs first.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
APPS = BENCH / "apps"
RESULTS = BENCH / "results"
DOCS = ROOT / "docs" / "performance.md"
HOST = "127.0.0.1"
SERVER_CPU = "0"
CLIENT_CPU = "1"
FILE_SIZE = 10 * 1024 * 1024
IDEAL_SLEEP_RPS = 800.0  # 8 threads, each busy 10 ms per request
START_DEADLINE = 45.0
STOP_GRACE = 3.0
RSS_FLAT_KIB = 4 * 1024  # "flat": the worker grew by less than this over the measured run
# A connection with neither a byte received nor a byte sent for this long, while wrk keeps every
# connection busy, was left unanswered (for example never accepted): see stalled_connections().
STALL_MS = 3000
H2_CONNECTIONS, H2_STREAMS = 10, 10  # h2load -c and -m
WS_CONNECTIONS, WS_MESSAGE = 50, 32  # WebSocket echo clients and their message size in bytes
WSLOAD = BENCH / "wsload" / "target" / "release" / "wsload"  # built by bench/run.sh
DOCS_BEGIN = "<!-- results:begin (written by bench/run.py --update-docs) -->"
DOCS_END = "<!-- results:end -->"


# --------------------------------------------------------------------------------------------
# servers


@dataclass(frozen=True)
class Launch:
    """What a server configuration needs to know to build its command line."""

    port: int
    module: str  # module name in bench/apps, e.g. "hello"
    python: str  # the venv's python
    bindir: str  # the venv's bin directory
    tls: tuple[str, str] | None = None  # certificate and key files, for the TLS scenarios
    proto: str = "h1"  # the scenario's protocol: h1, h2 (TLS, ALPN) or h2c (prior knowledge)


@dataclass(frozen=True)
class Config:
    key: str  # unique id, e.g. "ferrocorn-sync"
    server: str  # gunicorn, granian, uwsgi, bjoern, ferrocorn
    label: str  # shown in tables, e.g. "gthread --threads 8"
    threaded: bool  # runs the app on 8 threads (the only ones used by the sleep scenario)
    argv: Callable[[Launch], list[str]]
    installed: Callable[[Launch], bool]
    # The options that serve TLS with a certificate and key file; None: no TLS scenarios.
    tls_flags: Callable[[str, str], list[str]] | None = None
    interface: str = "wsgi"  # the scenarios it runs: those of the same interface
    # The options that serve HTTP/2 over TLS (ALPN) and over cleartext with prior knowledge;
    # None: not in that scenario.
    h2_flags: tuple[str, ...] | None = None
    h2c_flags: tuple[str, ...] | None = None
    tls_only: bool = False  # in the HTTP/1 TLS scenarios only (a front for TLS, for example)

    def extra_flags(self, proto: str) -> tuple[str, ...]:
        return {"h2": self.h2_flags, "h2c": self.h2c_flags}.get(proto) or ()

    def serves(self, sc: Scenario) -> bool:
        """Whether this configuration takes part in a scenario."""
        if sc.interface != self.interface:
            return False
        if (sc.threaded_only and not self.threaded) or (sc.tls and not self.tls_flags):
            return False
        if sc.proto != "h1":
            return bool(self.extra_flags(sc.proto))
        return sc.tls or not self.tls_only


def _exe(name: str) -> Callable[[Launch], bool]:
    return lambda ln: os.access(os.path.join(ln.bindir, name), os.X_OK)


def _importable(module: str) -> Callable[[Launch], bool]:
    def check(ln: Launch) -> bool:
        probe = subprocess.run(
            [ln.python, "-c", f"import {module}"], check=False, capture_output=True, timeout=60
        )
        return probe.returncode == 0

    return check


def _gunicorn(extra: list[str]) -> Callable[[Launch], list[str]]:
    return lambda ln: [
        f"{ln.bindir}/gunicorn", "-w", "1", *extra, "-b", f"{HOST}:{ln.port}",
        "--log-level", "warning", f"{ln.module}:app",
    ]


def _ferrocorn(extra: list[str]) -> Callable[[Launch], list[str]]:
    return lambda ln: [
        f"{ln.bindir}/ferrocorn", "-w", "1", *extra, "-b", f"{HOST}:{ln.port}",
        "--log-level", "warning", f"{ln.module}:app",
    ]


def _granian(extra: list[str]) -> Callable[[Launch], list[str]]:
    return lambda ln: [
        f"{ln.bindir}/granian", "--interface", "wsgi", "--workers", "1", *extra,
        "--host", HOST, "--port", str(ln.port), "--no-access-log", "--log-level", "warning",
        f"{ln.module}:app",
    ]


def _uvicorn(ln: Launch) -> list[str]:
    return [f"{ln.bindir}/uvicorn", "--workers", "1", "--http", "httptools", "--loop", "uvloop",
            "--no-access-log", "--log-level", "warning", "--timeout-keep-alive", "600",
            "--host", HOST, "--port", str(ln.port), f"{ln.module}:app"]


def _hypercorn(ln: Launch) -> list[str]:
    return [f"{ln.bindir}/hypercorn", "--workers", "1", "--worker-class", "uvloop",
            "--log-level", "warning", "--keep-alive", "600", "--bind", f"{HOST}:{ln.port}",
            f"{ln.module}:app"]


def _uwsgi(extra: list[str]) -> Callable[[Launch], list[str]]:
    return lambda ln: [
        f"{ln.bindir}/uwsgi", "--http11-socket", f"{HOST}:{ln.port}", "--master",
        "--workers", "1", *extra, "--wsgi-file", f"{ln.module}.py", "--callable", "app",
        "--disable-logging", "--die-on-term", "--need-app", "--strict",
    ]


def _uvicorn_wsgi(ln: Launch) -> list[str]:
    return [
        f"{ln.bindir}/uvicorn", "--interface", "wsgi", "--host", HOST, "--port", str(ln.port),
        "--no-access-log", "--log-level", "warning", f"{ln.module}:app",
    ]


def _nginx_front(ln: Launch) -> list[str]:
    return [ln.python, str(BENCH / "nginx_front.py"), f"{ln.module}:app", HOST, str(ln.port)]


def _bjoern(ln: Launch) -> list[str]:
    return [ln.python, str(BENCH / "bjoern_runner.py"), f"{ln.module}:app", HOST, str(ln.port)]


def _certfile_flags(cert: str, key: str) -> list[str]:
    return ["--certfile", cert, "--keyfile", key]


def _granian_tls_flags(cert: str, key: str) -> list[str]:
    return ["--ssl-certificate", cert, "--ssl-keyfile", key]


def _uvicorn_tls_flags(cert: str, key: str) -> list[str]:
    return ["--ssl-certfile", cert, "--ssl-keyfile", key]


def _nginx_available(ln: Launch) -> bool:
    return _exe("ferrocorn")(ln) and shutil.which("nginx", path=NGINX_PATH) is not None


NGINX_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
FERRO_H2 = ("--http-protocols", "h2,h1")
FERRO_H2C = (*FERRO_H2, "--http2-cleartext", "prior-knowledge")
FERRO_KEYS = ("ferrocorn-sync", "ferrocorn-gthread", "ferrocorn-asgi")  # ratio columns


CONFIGS: list[Config] = [
    Config("gunicorn-sync", "gunicorn", "sync", False, _gunicorn(["-k", "sync"]),
           _exe("gunicorn"), _certfile_flags),
    Config("gunicorn-gthread", "gunicorn", "gthread --threads 8", True,
           _gunicorn(["-k", "gthread", "--threads", "8"]), _exe("gunicorn"), _certfile_flags,
           h2_flags=("--http-protocols", "h2,h1")),
    Config("granian", "granian", "wsgi, default blocking threads", False, _granian([]),
           _exe("granian"), _granian_tls_flags, h2_flags=("--http", "2"),
           h2c_flags=("--http", "2")),
    Config("granian-bt8", "granian", "wsgi --blocking-threads 8", True,
           _granian(["--blocking-threads", "8"]), _exe("granian"), _granian_tls_flags,
           h2_flags=("--http", "2"), h2c_flags=("--http", "2")),
    Config("uvicorn-wsgi", "uvicorn", "--interface wsgi (default thread pool)", False, _uvicorn_wsgi,
           _exe("uvicorn"), _uvicorn_tls_flags, tls_only=True),
    Config("nginx-ferrocorn", "nginx", "TLS → ferrocorn sync over a unix socket", False,
           _nginx_front, _nginx_available, _certfile_flags, tls_only=True),
    Config("uwsgi", "uwsgi", "http11-socket, 1 thread", False, _uwsgi([]), _exe("uwsgi")),
    Config("uwsgi-t8", "uwsgi", "http11-socket --threads 8", True, _uwsgi(["--threads", "8"]),
           _exe("uwsgi")),
    Config("bjoern", "bjoern", "bjoern.run", False, _bjoern, _importable("bjoern")),
    Config("ferrocorn-sync", "ferrocorn", "sync", False, _ferrocorn([]), _exe("ferrocorn"),
           _certfile_flags, h2_flags=FERRO_H2, h2c_flags=FERRO_H2C),
    Config("ferrocorn-gthread", "ferrocorn", "gthread --threads 8", True,
           _ferrocorn(["-k", "gthread", "--threads", "8"]), _exe("ferrocorn"), _certfile_flags,
           h2_flags=FERRO_H2, h2c_flags=FERRO_H2C),
    Config("uvicorn", "uvicorn", "httptools, uvloop", False, _uvicorn, _exe("uvicorn"),
           interface="asgi"),
    Config("granian-asgi", "granian", "asgi", False,
           lambda ln: [a if a != "wsgi" else "asgi" for a in _granian([])(ln)],
           _exe("granian"), interface="asgi"),
    Config("gunicorn-asgi", "gunicorn", "asgi, uvloop", False,
           _gunicorn(["-k", "asgi", "--asgi-loop", "uvloop"]), _exe("gunicorn"), interface="asgi"),
    Config("hypercorn", "hypercorn", "uvloop", False, _hypercorn, _exe("hypercorn"),
           interface="asgi"),
    Config("ferrocorn-asgi", "ferrocorn", "asgi, uvloop", False,
           _ferrocorn(["-k", "asgi", "--asgi-loop", "uvloop"]), _exe("ferrocorn"), interface="asgi"),
]


# --------------------------------------------------------------------------------------------
# scenarios


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    module: str
    connections: int
    wrk_extra: tuple[str, ...] = ()
    threaded_only: bool = False
    rss_before: bool = False  # also sample RSS before the measured run (file_wrapper)
    must_close: bool = False  # the server must close after each response (Connection: close)
    tls: bool = False  # HTTPS, for the servers that serve TLS themselves
    proto: str = "h1"  # h2: HTTP/2 over TLS (ALPN); h2c: cleartext, prior knowledge; h2load
    note: str = ""
    interface: str = "wsgi"  # the servers it runs on: those of the same interface
    load: str = "wrk"  # the load client: wrk (h2load for HTTP/2), or ws: bench/wsload

    @property
    def unit(self) -> str:
        return "msg/s" if self.load == "ws" else "req/s"


SCENARIOS: list[Scenario] = [
    Scenario("hello", "Hello world, keep-alive", "hello", 50,
             note="13-byte body; RSS is the whole process tree after this run"),
    Scenario("hello-close", "Hello world, Connection: close", "hello", 50,
             ("-H", "Connection: close"), must_close=True,
             note="a new TCP connection for every request"),
    Scenario("response-1mib", "1 MiB response", "big", 50),
    Scenario("post-64kib", "64 KiB POST read fully by the app", "upload", 50,
             ("-s", str(BENCH / "post64k.lua"))),
    Scenario("sleep-10ms", "App sleeping 10 ms, 8 threads", "sleepy", 8, threaded_only=True,
             note=f"8 connections; the ideal is {IDEAL_SLEEP_RPS:.0f} req/s"),
    Scenario("flask", "Flask hello route", "flask_hello", 50),
    Scenario("file-10mib", "10 MiB file through wsgi.file_wrapper", "filewrap", 10,
             rss_before=True, note="RSS column: process tree before → after the measured run"),
    Scenario("tls-hello", "Hello world over TLS, keep-alive", "hello", 50, tls=True,
             note="each server terminating TLS itself (ECDSA P-256 certificate)"),
    Scenario("tls-close", "Hello world over TLS, Connection: close", "hello", 50,
             ("-H", "Connection: close"), must_close=True, tls=True,
             note="a new TCP connection and a full TLS handshake for every request"),
    Scenario("asgi-hello", "ASGI hello world, keep-alive", "hello_asgi", 50, interface="asgi",
             note="ASGI servers only"),
    Scenario("asgi-post-64kib", "ASGI 64 KiB POST read fully by the app", "upload_asgi", 50,
             ("-s", str(BENCH / "post64k.lua")), interface="asgi",
             note="the app reads every `http.request` message until `more_body` is false"),
    Scenario("asgi-stream", "ASGI streaming response, 8 chunks of 1 KiB", "stream_asgi", 50,
             interface="asgi",
             note="eight `http.response.body` messages with `more_body`, no Content-Length: "
                  "chunked encoding"),
    Scenario("asgi-fastapi", "FastAPI route", "fastapi_hello", 50, interface="asgi",
             note="a FastAPI route answering a small JSON document"),
    Scenario("asgi-ws-echo", "WebSocket echo, 50 clients", "ws_echo", WS_CONNECTIONS,
             interface="asgi", load="ws",
             note=f"{WS_CONNECTIONS} connections, each sending a {WS_MESSAGE}-byte masked text "
                  "message and waiting for its echo, in a loop; messages per second, latency "
                  "is the round trip; every echo is checked"),
    Scenario("h2-hello", "Hello world over HTTP/2 (TLS, ALPN)", "hello", H2_CONNECTIONS,
             tls=True, proto="h2",
             note=f"{H2_CONNECTIONS} connections × {H2_STREAMS} concurrent streams; h2load "
                  "reports no percentiles, so p50 / p99 are left empty"),
    Scenario("h2c-hello", "Hello world over HTTP/2 cleartext (prior knowledge)", "hello",
             H2_CONNECTIONS, proto="h2c",
             note=f"{H2_CONNECTIONS} connections × {H2_STREAMS} concurrent streams, no TLS"),
]


# --------------------------------------------------------------------------------------------
# /proc helpers


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parens, so split after the last ')'
    return raw[raw.rindex(")") + 2:].split()


def process_tree(root: int) -> list[int]:
    """root and all its descendants that are alive now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if Path(f"/proc/{pid}").exists():
            out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(root: int) -> tuple[int, int]:
    """(RSS of root + descendants, RSS of the descendants only, or of root when it has none)."""
    pids = process_tree(root)
    total = sum(rss_kib(p) for p in pids)
    workers = [p for p in pids if p != root] or [root]
    return total, sum(rss_kib(p) for p in workers)


def cpu_ticks(pid: int) -> int:
    """utime + stime of one process (all its threads, alive or exited), in clock ticks."""
    fields = _stat_fields(pid)
    return int(fields[11]) + int(fields[12]) if fields else 0


CLK_TCK = os.sysconf("SC_CLK_TCK")


def tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) used so far by root and its live descendants."""
    return sum(cpu_ticks(p) for p in process_tree(root)) / CLK_TCK


def core_ticks() -> dict[str, tuple[int, int]]:
    """Per core, from /proc/stat: (ticks in user, nice, system and steal; all ticks). Interrupt
    time is left out of the first figure: networking work there is not charged to any process."""
    out: dict[str, tuple[int, int]] = {}
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        name, *rest = line.split()
        if name in (f"cpu{SERVER_CPU}", f"cpu{CLIENT_CPU}"):
            v = [int(x) for x in rest[:8]]  # user nice system idle iowait irq softirq steal
            out[name] = (v[0] + v[1] + v[2] + v[7], sum(v))
    return out


def other_load(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]],
               core: str, own_s: float) -> float | None:
    """Share of one core used by anything but our own process(es) between two samples."""
    if core not in before or core not in after:
        return None
    busy = after[core][0] - before[core][0]
    total = after[core][1] - before[core][1]
    if total <= 0:
        return None
    return max(0.0, (busy - own_s * CLK_TCK) / total)


# --------------------------------------------------------------------------------------------
# starting and stopping servers


def stalled_connections(port: int) -> int | None:
    """How many of the server's established connections on `port` have neither received nor sent
    a byte for STALL_MS (from `ss`'s tcp_info), or None when `ss` is not available. wrk writes
    its next request as soon as an answer arrives, so such a connection is one the server is not
    serving: a server with fewer threads than connections may leave the rest in the listen queue,
    and its req/s then comes from the connections it did serve."""
    try:
        out = subprocess.run(
            ["ss", "-tniH", "state", "established", f"( sport = :{port} )"],
            check=True, capture_output=True, text=True, timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return sum(1 for sent, received in re.findall(r"lastsnd:(\d+) lastrcv:(\d+)", out)
               if min(int(sent), int(received)) >= STALL_MS)


def probe_during(seconds: float, probe: Callable[[], int | None]) -> Callable[[], int | None]:
    """Runs `probe` on a timer `seconds` from now; the returned function waits for its answer."""
    answer: list[int | None] = [None]
    timer = threading.Timer(seconds, lambda: answer.__setitem__(0, probe()))
    timer.daemon = True
    timer.start()

    def result() -> int | None:
        timer.join()
        return answer[0]

    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def make_certificate(directory: Path) -> tuple[str, str]:
    """A self-signed ECDSA P-256 certificate for 127.0.0.1 and its key, made with openssl."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return str(cert), str(key)


class ServerError(Exception):
    pass


class Server:
    """One running server configuration, in its own process group, pinned to SERVER_CPU."""

    def __init__(self, config: Config, launch: Launch, env: dict[str, str], logdir: Path):
        self.config = config
        self.launch = launch
        self.argv = config.argv(launch)
        if launch.tls and config.tls_flags:
            self.argv += config.tls_flags(*launch.tls)
        self.argv += config.extra_flags(launch.proto)
        self.log_path = logdir / f"{config.key}-{launch.module}-{launch.port}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *self.argv], cwd=APPS, env=env,
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_tail(self, lines: int = 6) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text[-lines:])

    def connect(self) -> socket.socket:
        """A connection to the server, over TLS (unverified) when it serves TLS."""
        s = socket.create_connection((HOST, self.launch.port), timeout=2)
        if not self.launch.tls:
            return s
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx.wrap_socket(s)

    def answers(self) -> bool:
        """Whether one GET / answers 200 now: over HTTP/1.1, or with h2load over HTTP/2."""
        if self.launch.proto != "h1":
            argv = ["h2load", "-n1", "-c1", self.url()]
            try:
                out = subprocess.run(argv, check=False, capture_output=True, text=True,
                                     timeout=10).stdout
            except (OSError, subprocess.SubprocessError):
                return False
            return re.search(r"status codes: 1 2xx", out) is not None
        request = f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
        try:
            with self.connect() as s:
                s.sendall(request)
                head = s.recv(64)
        except OSError:
            return False
        return head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))

    def url(self) -> str:
        return f"{'https' if self.launch.tls else 'http'}://{HOST}:{self.launch.port}/"

    def wait_ready(self, deadline: float = START_DEADLINE) -> None:
        """Polls until a GET / answers 200, with a deadline."""
        end = time.monotonic() + deadline
        while True:
            if self.proc.poll() is not None:
                raise ServerError(f"exited with {self.proc.returncode}: {self.log_tail()}")
            if self.answers():
                return
            if time.monotonic() > end:
                raise ServerError(f"not ready after {deadline:.0f}s: {self.log_tail()}")
            time.sleep(0.05)

    def closes_on_request(self) -> bool:
        """Whether the server closes the connection after answering a request that says
        `Connection: close` (RFC 9112 requires it)."""
        request = f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
        with self.connect() as s:
            s.sendall(request)
            s.settimeout(1.0)
            try:
                while s.recv(65536):
                    pass
            except socket.timeout:
                return False
        return True

    def stop(self) -> None:
        pgid = self.proc.pid
        for sig, grace in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            end = time.monotonic() + grace
            while time.monotonic() < end and _group_alive(pgid):
                if self.proc.poll() is None:
                    try:
                        self.proc.wait(0.05)
                    except subprocess.TimeoutExpired:
                        pass
                else:
                    time.sleep(0.05)
            if not _group_alive(pgid):
                break
        if self.proc.poll() is None:
            self.proc.wait(5)
        self._log.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # zombies still count for killpg; look for a live member
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields and int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


# --------------------------------------------------------------------------------------------
# wrk


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"bad wrk duration {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class WrkResult:
    rps: float = 0.0
    requests: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    non2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    client_cpu_s: float | None = None  # CPU time wrk itself used

    @property
    def errors(self) -> int:
        return self.non2xx + sum(self.socket_errors.values())


def parse_wrk(out: str) -> WrkResult:
    r = WrkResult()
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise ValueError("no Requests/sec in wrk output")
    r.rps = float(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    r.requests = int(m.group(1)) if m else 0
    for pct, attr in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}(?:\.0+)?%\s+(\S+)", out, re.MULTILINE)
        if m:
            setattr(r, attr, _ms(m.group(1)))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    r.non2xx = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        r.socket_errors = dict(zip(("connect", "read", "write", "timeout"),
                                   (int(g) for g in m.groups())))
    return r


def parse_h2load(out: str) -> WrkResult:
    """h2load's summary: rate, requests done, failures and status classes (no percentiles)."""
    r = WrkResult()
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    if not m:
        raise ValueError("no req/s in h2load output")
    r.rps = float(m.group(1))
    m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored", out)
    if not m:
        raise ValueError("no request counts in h2load output")
    succeeded, failed, errored = (int(g) for g in m.groups())
    # "failed" counts the HTTP-level failures and the "errored" ones (timeouts among them)
    r.requests = succeeded
    r.non2xx = failed - errored
    r.socket_errors = {"errored": errored}
    return r


def parse_wsload(out: str) -> WrkResult:
    """bench/wsload's summary: messages echoed and per second, latency percentiles, errors."""
    r = WrkResult()
    m = re.search(r"messages: (\d+) echoed, ([\d.]+) messages/s", out)
    if not m:
        raise ValueError("no messages/s in wsload output")
    r.requests, r.rps = int(m.group(1)), float(m.group(2))
    m = re.search(r"latency: p50 ([\d.]+) ms, p99 ([\d.]+) ms", out)
    if m:
        r.p50_ms, r.p99_ms = float(m.group(1)), float(m.group(2))
    m = re.search(r"errors: handshake (\d+), read (\d+), write (\d+), mismatch (\d+)", out)
    if not m:
        raise ValueError("no error counts in wsload output")
    r.socket_errors = dict(zip(("handshake", "read", "write", "mismatch"),
                               (int(g) for g in m.groups())))
    return r


def load_argv(sc: Scenario, port: int, seconds: float) -> list[str]:
    if sc.load == "ws":
        return ["taskset", "-c", CLIENT_CPU, str(WSLOAD), "-c", str(sc.connections),
                "-d", f"{seconds:g}", "-s", str(WS_MESSAGE), f"ws://{HOST}:{port}/"]
    url = f"{'https' if sc.tls else 'http'}://{HOST}:{port}/"
    if sc.proto != "h1":
        return ["taskset", "-c", CLIENT_CPU, "h2load", "-t1", f"-c{sc.connections}",
                f"-m{H2_STREAMS}", f"-D{seconds:g}", url]
    return [
        "taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{sc.connections}", f"-d{seconds:g}s",
        "--timeout", "5s", "--latency", *sc.wrk_extra, url,
    ]


def run_load(sc: Scenario, port: int, seconds: float) -> WrkResult:
    """Drives the scenario's load (wrk, or h2load for HTTP/2) for `seconds`."""
    argv = load_argv(sc, port, seconds)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    # h2load has no per-request timeout: it waits for a connection that is never answered
    # (a server with a thread per HTTP/2 connection and fewer threads than connections)
    grace = 30 if sc.proto == "h1" else 10
    try:
        proc = subprocess.run(argv, check=False, capture_output=True, text=True,
                              timeout=seconds + grace)
    except subprocess.TimeoutExpired as exc:
        raise ServerError(f"{argv[3]} had not finished {grace} s after the end of the run: "
                          f"the server left some of the {sc.connections} connections "
                          "unanswered") from exc
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        msg = (proc.stderr.strip() or proc.stdout.strip())[-300:]
        raise ServerError(f"{Path(argv[3]).name} exited {proc.returncode}: {msg}")
    if sc.load == "ws":
        res = parse_wsload(proc.stdout)
    else:
        res = parse_wrk(proc.stdout) if sc.proto == "h1" else parse_h2load(proc.stdout)
    # wrk is the only child reaped meanwhile (servers are reaped when they are stopped)
    res.client_cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return res


# --------------------------------------------------------------------------------------------
# one cell: a scenario on a server configuration, several runs


@dataclass
class Cell:
    scenario: str
    config: str
    server: str
    label: str
    command: str
    keep: int = 2  # how many runs the summary uses: the quietest ones when there are more
    status: str = "ok"  # ok, not installed, failed, skipped
    error: str = ""
    runs: list[dict[str, Any]] = field(default_factory=list)

    def ok_runs(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if r.get("rps") is not None]

    def used_runs(self) -> list[dict[str, Any]]:
        """The `keep` successful runs with the least other load on the two cores."""
        runs = self.ok_runs()
        if len(runs) > self.keep:
            runs = sorted(runs, key=lambda r: r.get("other_load_pct") or 0.0)[: self.keep]
        return runs

    def noisy(self, threshold: float) -> bool:
        runs = self.used_runs()
        return any((r.get("other_load_pct") or 0.0) > threshold for r in runs)

    def summary(self) -> dict[str, Any] | None:
        runs = self.used_runs()
        if not runs:
            return None
        rps = [r["rps"] for r in runs]
        med = statistics.median(rps)

        def med_of(key: str) -> float | None:
            vals = [r[key] for r in runs if r.get(key) is not None]
            return statistics.median(vals) if vals else None

        return {
            "runs": len(runs),
            "runs_measured": len(self.ok_runs()),
            "other_load_pct": med_of("other_load_pct"),
            "rps_median": med,
            "rps_min": min(rps),
            "rps_max": max(rps),
            "spread_pct": (max(rps) - min(rps)) / 2 / med * 100 if med else 0.0,
            "p50_ms": med_of("p50_ms"),
            "p99_ms": med_of("p99_ms"),
            "errors": sum(r["errors"] for r in runs),
            "cpu_pct": med_of("cpu_pct"),
            "client_cpu_pct": med_of("client_cpu_pct"),
            "cpu_us_per_req": med_of("cpu_us_per_req"),
            "closes": (None if not any("closes" in r for r in runs)
                       else all(r.get("closes", True) for r in runs)),
            "stalled": max((r["stalled"] for r in runs if r.get("stalled") is not None),
                           default=None),
            "rss_kib": med_of("rss_kib"),
            "rss_before_kib": med_of("rss_before_kib"),
            "worker_rss_before_kib": med_of("worker_rss_before_kib"),
            "worker_rss_after_kib": med_of("worker_rss_after_kib"),
            "worker_rss_growth_kib": max(
                (r["worker_rss_after_kib"] - r["worker_rss_before_kib"] for r in runs
                 if r.get("worker_rss_before_kib") is not None), default=None),
        }


def measure_once(
    cell: Cell, config: Config, sc: Scenario, launch_base: Launch, env: dict[str, str],
    logdir: Path, warmup: float, duration: float,
) -> None:
    launch = dataclasses.replace(launch_base, port=free_port(), module=sc.module,
                                 tls=launch_base.tls if sc.tls else None, proto=sc.proto)
    run: dict[str, Any] = {"rps": None}
    server: Server | None = None
    try:
        server = Server(config, launch, env, logdir)
        server.wait_ready()
        root = server.proc.pid
        if warmup > 0:
            run_load(sc, launch.port, warmup)
        if sc.must_close:
            run["closes"] = server.closes_on_request()
        if sc.rss_before:
            run["rss_before_kib"], run["worker_rss_before_kib"] = tree_rss_kib(root)
        cpu0, cores0 = tree_cpu_s(root), core_ticks()
        # Late in the run, so that a connection left waiting since the start has waited STALL_MS.
        probe_at = duration - 1.5
        stalled = (probe_during(probe_at, lambda: stalled_connections(launch.port))
                   if probe_at >= STALL_MS / 1000 + 1 else None)
        res = run_load(sc, launch.port, duration)
        if stalled is not None:
            run["stalled"] = stalled()
        cpu, cores1 = tree_cpu_s(root) - cpu0, core_ticks()
        loads = [other_load(cores0, cores1, f"cpu{SERVER_CPU}", cpu),
                 other_load(cores0, cores1, f"cpu{CLIENT_CPU}", res.client_cpu_s or 0.0)]
        if None not in loads:
            run["other_load_pct"] = round(max(x for x in loads if x is not None) * 100, 1)
        run["cpu_s"] = round(cpu, 3)
        run["cpu_pct"] = round(cpu / duration * 100, 1)
        run["cpu_us_per_req"] = round(cpu / res.requests * 1e6, 1) if res.requests else None
        if res.client_cpu_s is not None:
            run["client_cpu_pct"] = round(res.client_cpu_s / duration * 100, 1)
        run["rss_kib"], run["worker_rss_after_kib"] = tree_rss_kib(root)
        if not sc.rss_before:
            run.pop("worker_rss_after_kib")
        run["processes"] = len(process_tree(root))
        if server.proc.poll() is not None:
            raise ServerError(f"server died during the run: {server.log_tail()}")
        run.update(
            rps=res.rps, requests=res.requests, p50_ms=res.p50_ms, p99_ms=res.p99_ms,
            non2xx=res.non2xx, socket_errors=res.socket_errors, errors=res.errors,
        )
        if res.requests == 0:
            run["rps"] = None
            run["error"] = "no request completed"
    except (ServerError, ValueError, OSError, subprocess.TimeoutExpired) as exc:
        run["rps"] = None
        run["error"] = str(exc)[:400]
    finally:
        if server is not None:
            server.stop()
    cell.runs.append(run)
    if run["rps"] is None:
        cell.status = "failed" if not cell.ok_runs() else cell.status
        cell.error = run.get("error", "")


# --------------------------------------------------------------------------------------------
# reporting


def fmt_rps(s: dict[str, Any]) -> str:
    text = f"{s['rps_median']:,.0f}"
    if s["runs"] > 1:
        text += f" ± {s['spread_pct']:.1f}%"
    return text


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


def fmt_mib(kib: float | None) -> str:
    return "–" if kib is None else f"{kib / 1024:.1f}"


def ratio_text(num: float | None, den: float | None) -> str:
    if not num or not den:
        return "–"
    return f"{num / den:.2f}×"


def scenario_table(sc: Scenario, cells: list[Cell]) -> list[str]:
    by_key = {c.config: c for c in cells}
    ferro = {k: by_key[k].summary() for k in FERRO_KEYS if k in by_key}
    ferro_rps = {k: (v["rps_median"] if v else None) for k, v in ferro.items()}
    rss_head = "RSS before → after MiB" if sc.rss_before else "RSS MiB"
    cols = ["server", "config", f"{sc.unit} (median ± spread)", "p50 ms", "p99 ms", "errors",
            "CPU µs/msg" if sc.load == "ws" else "CPU µs/req",
            f"busy: server / {'client' if sc.load == 'ws' else 'wrk'}", "other load", rss_head]
    ratio_cols = [k for k in FERRO_KEYS if k in ferro_rps]
    cols += [f"{k.replace('ferrocorn-', 'ferrocorn ')} ÷ this" for k in ratio_cols]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    kept_open = False
    stalls: list[str] = []
    for c in cells:
        s = c.summary()
        if s is None:
            why = c.status if c.status != "ok" else "failed"
            detail = f"{why}: {c.error}" if c.error else why
            row = [c.server, c.label, detail.replace("|", "/")[:160]] + ["–"] * (len(cols) - 3)
        else:
            rss = (f"{fmt_mib(s['rss_before_kib'])} → {fmt_mib(s['rss_kib'])}" if sc.rss_before
                   else fmt_mib(s["rss_kib"]))
            label = c.label + markers(s)
            if s["closes"] is False:
                kept_open = True
            if s["stalled"]:
                stalls.append(f"{c.server} {c.label}: {s['stalled']}")
            cpu_us = "–" if s["cpu_us_per_req"] is None else f"{s['cpu_us_per_req']:,.1f}"
            cpu_pct = " / ".join("–" if v is None else f"{v:.0f}%"
                                 for v in (s["cpu_pct"], s["client_cpu_pct"]))
            other = "–" if s["other_load_pct"] is None else f"{s['other_load_pct']:.0f}%"
            row = [c.server, label, fmt_rps(s), fmt_ms(s["p50_ms"]), fmt_ms(s["p99_ms"]),
                   str(s["errors"]), cpu_us, cpu_pct, other, rss]
            row += ["–" if k == c.config else ratio_text(ferro_rps[k], s["rps_median"])
                    for k in ratio_cols]
            if c.server == "ferrocorn":
                row[0] = "**ferrocorn**"
        lines.append("| " + " | ".join(row) + " |")
    if kept_open:
        lines += ["", ("† kept the connection open after answering a request with `Connection: "
                       "close` (checked before each run), so its row measures keep-alive, not a "
                       "new connection per request; the bar leaves it out.")]
    if stalls:
        lines += ["", (f"‡ left some of the {sc.connections} connections without a byte sent or "
                       f"received for {STALL_MS / 1000:g} s or more late in the measured run "
                       f"({'; '.join(stalls)}): it served the others only (a server with fewer "
                       "threads than connections leaves the rest in the listen queue), so its "
                       "req/s is not comparable and the bar leaves it out.")]
    return lines


@dataclass
class BarLine:
    text: str
    status: str  # PASS, FAIL, SKIP
    detail: str


def _s(cells: dict[str, dict[str, Cell]], sc: str, key: str) -> dict[str, Any] | None:
    cell = cells.get(sc, {}).get(key)
    return cell.summary() if cell else None


def _best_peer(cells: dict[str, dict[str, Cell]], sc: str,
               servers: Sequence[str] | None = None) -> tuple[str, float] | None:
    best: tuple[str, float] | None = None
    for key, cell in cells.get(sc, {}).items():
        if cell.server == "ferrocorn" or (servers and cell.server not in servers):
            continue
        s = cell.summary()
        if s and comparable(s) and (best is None or s["rps_median"] > best[1]):
            best = (key, s["rps_median"])
    return best


def markers(s: dict[str, Any]) -> str:
    """A row's footnote marks: † kept connections open, ‡ left connections unanswered."""
    return (" †" if s["closes"] is False else "") + (" ‡" if s["stalled"] else "")


def comparable(s: dict[str, Any]) -> bool:
    """Whether a cell measured what its scenario asks: it closed connections when told to, and
    it answered every connection (see stalled_connections)."""
    return s["closes"] is not False and not s["stalled"]


def _left_out(cells: dict[str, dict[str, Cell]], sc: str) -> str:
    why = []
    for key, cell in cells.get(sc, {}).items():
        s = cell.summary()
        if s and s["closes"] is False:
            why.append(f"{key}, which kept connections open")
        elif s and s["stalled"]:
            why.append(f"{key}, which left {s['stalled']} connections unanswered")
    return f" (left out: {'; '.join(why)})" if why else ""


def _best_ferro(cells: dict[str, dict[str, Cell]], sc: str) -> tuple[str, float] | None:
    best: tuple[str, float] | None = None
    for key in ("ferrocorn-sync", "ferrocorn-gthread"):
        s = _s(cells, sc, key)
        if s and (best is None or s["rps_median"] > best[1]):
            best = (key, s["rps_median"])
    return best


def _cpu_note(cells: dict[str, dict[str, Cell]], sc: str, a: str, b: str) -> str:
    sa, sb = _s(cells, sc, a), _s(cells, sc, b)
    if not sa or not sb or not sa["cpu_us_per_req"] or not sb["cpu_us_per_req"]:
        return ""
    r = sb["cpu_us_per_req"] / sa["cpu_us_per_req"]
    return (f"; server CPU per request {sa['cpu_us_per_req']:,.1f} µs vs "
            f"{sb['cpu_us_per_req']:,.1f} µs ("
            + (f"{r:.2f}× less)" if r >= 1 else f"{1 / r:.2f}× more)"))


def _client_ceiling_note(summary: dict[str, Any], peer: tuple[str, float]) -> str:
    """When wrk was nearly saturated, the rate it could drive at most, and that rate as a
    multiple of `peer`: a ratio above this cannot be measured with this client."""
    busy = summary.get("client_cpu_pct")
    if not busy or busy < 85:
        return ""
    ceiling = summary["rps_median"] / (busy / 100)
    return (f"; wrk was busy {busy:.0f}% of its core, so no server can be measured above about "
            f"{ceiling:,.0f} req/s here ({ceiling / peer[1]:.2f}× {peer[0]})")


def check_bar(cells: dict[str, dict[str, Cell]], sleep_ms: float | None = None) -> list[BarLine]:
    out: list[BarLine] = []

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    def skip(text: str, why: str) -> None:
        out.append(BarLine(text, "SKIP", why))

    # hello keep-alive: sync >= 1.5x granian's best, >= bjoern
    text = "hello keep-alive: ferrocorn sync ≥ 1.5× granian's best config and ≥ bjoern"
    fs = _s(cells, "hello", "ferrocorn-sync")
    gran = _best_peer(cells, "hello", ["granian"])
    bj = _s(cells, "hello", "bjoern")
    if not fs or not gran or not bj:
        skip(text, "ferrocorn sync, granian or bjoern not measured")
    else:
        r1, r2 = fs["rps_median"] / gran[1], fs["rps_median"] / bj["rps_median"]
        out.append(BarLine(text, verdict(r1 >= 1.5 and r2 >= 1.0),
                           f"ferrocorn sync {fs['rps_median']:,.0f} req/s = {r1:.2f}× "
                           f"{gran[0]} ({gran[1]:,.0f}), {r2:.2f}× bjoern "
                           f"({bj['rps_median']:,.0f})"
                           + _cpu_note(cells, "hello", "ferrocorn-sync", gran[0])
                           + _client_ceiling_note(fs, gran)))

    for sc, factor, label in (("hello-close", 1.0, "hello Connection: close"),
                              ("post-64kib", 1.2, "64 KiB POST"),
                              ("response-1mib", 1.2, "1 MiB response")):
        text = f"{label}: ferrocorn ≥ {factor:g}× the best peer"
        f, p = _best_ferro(cells, sc), _best_peer(cells, sc)
        if not f or not p:
            skip(text, "ferrocorn or every peer not measured")
            continue
        r = f[1] / p[1]
        note = _left_out(cells, sc)
        if sc == "response-1mib":
            note += _cpu_note(cells, sc, f[0], p[0])
        out.append(BarLine(text, verdict(r >= factor),
                           f"{f[0]} {f[1]:,.0f} req/s = {r:.2f}× best peer {p[0]} "
                           f"({p[1]:,.0f}){note}"))

    text = (f"sleep 10 ms: ferrocorn gthread --threads 8 ≥ 97% of {IDEAL_SLEEP_RPS:.0f} req/s "
            "and p99 < 15 ms")
    fg = _s(cells, "sleep-10ms", "ferrocorn-gthread")
    if not fg:
        skip(text, "ferrocorn gthread not measured")
    else:
        frac = fg["rps_median"] / IDEAL_SLEEP_RPS
        p99 = fg["p99_ms"] or float("inf")
        note = ""
        if sleep_ms:
            note = (f"; time.sleep(0.010) alone takes {sleep_ms:.2f} ms on this machine, which "
                    f"caps 8 threads at {8000 / sleep_ms:,.0f} req/s")
        out.append(BarLine(text, verdict(frac >= 0.97 and p99 < 15.0),
                           f"{fg['rps_median']:,.1f} req/s = {frac * 100:.1f}% of ideal, "
                           f"p99 {p99:.2f} ms{note}"))

    text = "Flask hello: ferrocorn ≥ bjoern"
    f, bj = _best_ferro(cells, "flask"), _s(cells, "flask", "bjoern")
    if not f or not bj:
        skip(text, "ferrocorn or bjoern not measured")
    else:
        r = f[1] / bj["rps_median"]
        out.append(BarLine(text, verdict(r >= 1.0),
                           f"{f[0]} {f[1]:,.0f} req/s = {r:.2f}× bjoern "
                           f"({bj['rps_median']:,.0f})"))

    text = ("10 MiB file_wrapper: ferrocorn ≥ 1.5× gunicorn, worker RSS flat "
            f"(grows < {RSS_FLAT_KIB // 1024} MiB over the run)")
    f, g = _best_ferro(cells, "file-10mib"), _best_peer(cells, "file-10mib", ["gunicorn"])
    if not f or not g:
        skip(text, "ferrocorn or gunicorn not measured")
    else:
        s = _s(cells, "file-10mib", f[0])
        growth = s["worker_rss_growth_kib"] if s else None
        r = f[1] / g[1]
        flat = growth is not None and growth < RSS_FLAT_KIB
        gtxt = "?" if growth is None else f"{growth / 1024:+.1f} MiB"
        out.append(BarLine(text, verdict(r >= 1.5 and flat),
                           f"{f[0]} {f[1]:,.0f} req/s = {r:.2f}× {g[0]} ({g[1]:,.0f}); "
                           f"worker RSS growth {gtxt} (worst run)"
                           + _cpu_note(cells, "file-10mib", f[0], g[0])))

    # TLS and HTTP/2: ferrocorn's best config against Granian's best, or against every peer
    for sc, label, peers in (("tls-hello", "TLS hello keep-alive", ["granian"]),
                             ("h2-hello", "HTTP/2 hello over TLS", ["granian"]),
                             ("h2c-hello", "HTTP/2 cleartext hello", ["granian"]),
                             ("tls-close", "TLS handshakes per second (Connection: close)", None)):
        text = f"{label}: ferrocorn ≥ {'granian' if peers else 'the best peer'}"
        f, p = _best_ferro(cells, sc), _best_peer(cells, sc, peers)
        if not f or not p:
            skip(text, "ferrocorn or its peers not measured")
            continue
        r = f[1] / p[1]
        out.append(BarLine(text, verdict(r >= 1.0),
                           f"{f[0]} {f[1]:,.0f} req/s = {r:.2f}× {p[0]} ({p[1]:,.0f})"
                           + _left_out(cells, sc) + _cpu_note(cells, sc, f[0], p[0])))

    out.extend(asgi_bar(cells))

    text = "every ferrocorn run answered all of its connections"
    checked = [(sc, key, s["stalled"]) for sc, by_key in cells.items()
               for key, cell in by_key.items()
               if cell.server == "ferrocorn" and (s := cell.summary()) and s["stalled"] is not None]
    if not checked:
        skip(text, "not checked (needs `ss` and runs of 5 s or more)")
    else:
        bad = [f"{sc} {key}: {n}" for sc, key, n in checked if n]
        out.append(BarLine(text, verdict(not bad),
                           "connections left unanswered: " + ("; ".join(bad) if bad else "none")))

    for fk, gk in (("ferrocorn-sync", "gunicorn-sync"), ("ferrocorn-gthread", "gunicorn-gthread")):
        text = f"RSS master+worker after hello: {fk.replace('-', ' ')} ≤ {gk.replace('-', ' ')}"
        fs, gs = _s(cells, "hello", fk), _s(cells, "hello", gk)
        if not fs or not gs or fs["rss_kib"] is None or gs["rss_kib"] is None:
            skip(text, "not measured")
            continue
        out.append(BarLine(text, verdict(fs["rss_kib"] <= gs["rss_kib"]),
                           f"{fs['rss_kib'] / 1024:.1f} MiB vs {gs['rss_kib'] / 1024:.1f} MiB"))
    return out


def asgi_bar(cells: dict[str, dict[str, Cell]]) -> list[BarLine]:
    out: list[BarLine] = []
    text = ("ASGI hello: ferrocorn ≥ granian asgi and ≥ 2× uvicorn, server CPU per request below "
            "both")
    fa, ga, uv = (_s(cells, "asgi-hello", k) for k in ("ferrocorn-asgi", "granian-asgi",
                                                       "uvicorn"))
    if not fa or not ga or not uv:
        out.append(BarLine(text, "SKIP", "ferrocorn asgi, granian asgi or uvicorn not measured"))
    else:
        r1, r2 = fa["rps_median"] / ga["rps_median"], fa["rps_median"] / uv["rps_median"]
        cpu = [x["cpu_us_per_req"] or float("inf") for x in (fa, ga, uv)]
        out.append(BarLine(
            text, "PASS" if r1 >= 1.0 and r2 >= 2.0 and cpu[0] < min(cpu[1:]) else "FAIL",
            f"ferrocorn asgi {fa['rps_median']:,.0f} req/s = {r1:.2f}× granian asgi "
            f"({ga['rps_median']:,.0f}), {r2:.2f}× uvicorn ({uv['rps_median']:,.0f}); server "
            f"CPU per request {cpu[0]:,.1f} µs vs {cpu[1]:,.1f} µs (granian) and {cpu[2]:,.1f} µs "
            "(uvicorn)" + _client_ceiling_note(fa, ("granian-asgi", ga["rps_median"]))))

    text = "WebSocket echo: ferrocorn messages/s ≥ granian's, every echo correct"
    fw, gw = _s(cells, "asgi-ws-echo", "ferrocorn-asgi"), _s(cells, "asgi-ws-echo", "granian-asgi")
    if not fw or not gw:
        out.append(BarLine(text, "SKIP", "ferrocorn asgi or granian asgi not measured"))
    else:
        r = fw["rps_median"] / gw["rps_median"]
        out.append(BarLine(text, "PASS" if r >= 1.0 and fw["errors"] == 0 else "FAIL",
                           f"ferrocorn asgi {fw['rps_median']:,.0f} msg/s = {r:.2f}× granian asgi "
                           f"({gw['rps_median']:,.0f}), {fw['errors']} echo errors"
                           + _cpu_note(cells, "asgi-ws-echo", "ferrocorn-asgi", "granian-asgi")
                           .replace("per request", "per message")))
    return out


def sleep_calibration(python: str) -> float | None:
    """Mean wall time of time.sleep(0.010) in ms, in a Python pinned to the server core."""
    code = ("import time\nn = 100\nt = time.perf_counter()\nfor _ in range(n):\n"
            "    time.sleep(0.010)\nprint((time.perf_counter() - t) / n * 1000)\n")
    try:
        out = subprocess.run(["taskset", "-c", SERVER_CPU, python, "-c", code], check=False,
                             capture_output=True, text=True, timeout=30)
        return round(float(out.stdout), 3)
    except (ValueError, subprocess.SubprocessError, OSError):
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions(python: str, bindir: str) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {'python': sys.version.split()[0]}\n"
        "for name in ('ferrocorn', 'gunicorn', 'granian', 'uWSGI', 'bjoern', 'uvicorn', 'h2',"
        " 'flask', 'matplotlib', 'hypercorn', 'uvloop', 'httptools', 'websockets',"
        " 'fastapi'):\n"
        "    try:\n"
        "        out[name.lower()] = m.version(name)\n"
        "    except m.PackageNotFoundError:\n"
        "        out[name.lower()] = 'not installed'\n"
        "print(json.dumps(out))\n"
    )
    vers: dict[str, str] = {}
    try:
        probe = subprocess.run([python, "-c", code], check=False, capture_output=True,
                               text=True, timeout=60)
        vers = json.loads(probe.stdout)
    except (ValueError, subprocess.SubprocessError, OSError):
        pass
    for tool, flag, pattern in (("wrk", "-v", r"wrk (\S+)"),
                                ("h2load", "--version", r"nghttp2/(\S+)"),
                                ("nginx", "-v", r"nginx/(\S+)")):
        exe = shutil.which(tool, path=NGINX_PATH)
        try:
            found = subprocess.run([exe or tool, flag], check=False, capture_output=True,
                                   text=True, timeout=10)
            m = re.search(pattern, found.stdout + found.stderr)
            vers[tool] = m.group(1) if m else "unknown"
        except (subprocess.SubprocessError, OSError):
            vers[tool] = "missing"
    return vers


def hold_wakeup_latency() -> tuple[int | None, str]:
    """Ask the kernel for 0 µs CPU wake-up latency for as long as the returned fd stays open.

    The cpuidle governor then polls instead of halting an idle core. On a virtual machine whose
    host does not poll for a halted guest, waking from a halt costs tens to hundreds of µs (the
    sleep scenario loses about 3 % of its rate to it, for every server alike); the PM QoS
    request is the kernel's interface for this, and closing the fd (also by exiting) ends it.
    """
    path = "/dev/cpu_dma_latency"
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as exc:
        return None, f"system default (could not open {path}: {exc.strerror})"
    try:
        os.write(fd, (0).to_bytes(4, sys.byteorder, signed=True))
    except OSError as exc:
        os.close(fd)
        return None, f"system default (could not write {path}: {exc.strerror})"
    return fd, f"polling (wake-up latency held at 0 µs through {path} for the whole run)"


def machine_info() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def render_markdown(meta: dict[str, Any], scenarios: list[Scenario],
                    cells: dict[str, dict[str, Cell]], bar: list[BarLine],
                    heading_level: int = 1) -> str:
    h = "#" * heading_level
    mach, vers, opts = meta["machine"], meta["versions"], meta["options"]
    out = [f"{h} ferrocorn benchmark results", ""]
    out.append(f"- date: {meta['started']} (took {meta['elapsed_s'] / 60:.1f} min)")
    out.append(f"- machine: {mach['cpu']}, {mach['cores']} cores, {mach['memory_gib']} GiB, "
               f"Linux {mach['kernel']}")
    if "cpu_idle" in mach:
        out.append(f"- idle cores: {mach['cpu_idle']}")
    out.append("- versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()))
    out.append(f"- server pinned to core {SERVER_CPU} (one worker process, master included), "
               f"wrk pinned to core {CLIENT_CPU}, {HOST} only")
    out.append(f"- per cell: {opts['warmup']:g} s warm-up, {opts['duration']:g} s measured, "
               f"{opts['runs']} run(s); req/s is the median, ± half the range (max − min) "
               "relative to it; p50/p99 are medians over runs; errors are summed over runs")
    out.append(f"- other load: the share of core {SERVER_CPU} or {CLIENT_CPU} (the larger) taken "
               "by other work on the machine during the measured run (median); a run above "
               f"{opts['noise_threshold']:g}% is measured again (up to {opts['retries']} more "
               f"times) and the {opts['runs']} quietest runs are kept")
    out.append(f"- command: `{meta['command']}`")
    spreads = [s["spread_pct"] for per in cells.values() for c in per.values()
               if (s := c.summary()) and s["runs"] > 1]
    if spreads and max(spreads) > 5:
        out.append(f"- noise: the largest spread is ±{max(spreads):.1f}% (the machine is shared "
                   "with other work; compare ratios within one run rather than absolute figures)")
    out.append("")
    out.append(f"{h}# The bar")
    out.append("")
    if not bar:
        out.append("Nothing to check (no scenario measured).")
    for b in bar:
        out.append(f"- **{b.status}** {b.text}: {b.detail}")
    out.append("")
    for sc in scenarios:
        if sc.key not in cells:
            continue
        wrk = " ".join(shlex.quote(a) for a in load_argv(sc, 0, opts["duration"]))
        wrk = wrk.replace(str(BENCH), "bench").replace(f"{HOST}:0", f"{HOST}:PORT")
        out.append(f"{h}# {sc.title} (`{sc.key}`)")
        out.append("")
        out.append(f"App `bench/apps/{sc.module}.py`; load `{wrk}`."
                   + (f" {sc.note[0].upper()}{sc.note[1:]}." if sc.note else ""))
        out.append("")
        out.extend(scenario_table(sc, list(cells[sc.key].values())))
        out.append("")
    out.append(f"{h}# Server commands")
    out.append("")
    out.append(f"Each runs as `taskset -c {SERVER_CPU} COMMAND` in `bench/apps`, MODULE being the "
               "scenario's app:")
    out.append("")
    measured = {key for per in cells.values() for key in per}
    for c, cmd in meta["commands"].items():
        if c.split(",")[0] in measured:
            out.append(f"- {c}: `{cmd}`")
    out.append("")
    return "\n".join(out)


def render_chart(scenarios: list[Scenario], cells: dict[str, dict[str, Cell]],
                 path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [sc for sc in scenarios if sc.key in cells]
    if not shown:
        return
    height = 2.6 * len(shown) + 0.6
    fig, axes = plt.subplots(len(shown), 2, figsize=(13, height), squeeze=False)
    for row, sc in enumerate(shown):
        cl = list(cells[sc.key].values())
        sums = [c.summary() for c in cl]
        names = [c.config + (markers(s) if s else "") for c, s in zip(cl, sums)]
        colors = ["#c0392b" if c.server == "ferrocorn" else "#7f8c8d" for c in cl]
        ys = list(range(len(cl)))
        rps = [s["rps_median"] if s else 0.0 for s in sums]
        lo = [s["rps_median"] - s["rps_min"] if s else 0.0 for s in sums]
        hi = [s["rps_max"] - s["rps_median"] if s else 0.0 for s in sums]
        ax = axes[row][0]
        ax.barh(ys, rps, xerr=[lo, hi], color=colors, capsize=2)
        ax.set_yticks(ys, names, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"{sc.title}: {sc.unit} (higher is better)", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        if sc.key == "sleep-10ms":
            ax.axvline(IDEAL_SLEEP_RPS, color="k", linestyle="--", linewidth=0.8)
        for y, s in zip(ys, sums):
            ax.text(s["rps_max"] if s else 0, y, " " + (f"{s['rps_median']:,.0f}" if s else
                    f"n/a ({cl[y].status})"), va="center", fontsize=7)
        ax.margins(x=0.15)
        ax = axes[row][1]
        p99 = [s["p99_ms"] if s and s["p99_ms"] is not None else 0.0 for s in sums]
        ax.barh(ys, p99, color=colors)
        ax.set_yticks(ys, [""] * len(ys))
        ax.invert_yaxis()
        ax.set_title(f"{sc.title}: p99 latency ms (lower is better)", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        for y, s, v in zip(ys, sums, p99):
            ax.text(v, y, " " + (fmt_ms(s["p99_ms"]) if s else "n/a"), va="center", fontsize=7)
        ax.margins(x=0.15)
    fig.suptitle("ferrocorn (red) vs peers: one worker on core 0, wrk on core 1; "
                 "bars: median, whiskers: min–max; † ignored Connection: close; "
                 "‡ left connections unanswered", fontsize=10)
    # tight_layout does not see the figure title: keep the top half inch for it.
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / height))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def update_docs(markdown: str) -> bool:
    try:
        text = DOCS.read_text()
    except OSError:
        return False
    start, end = text.find(DOCS_BEGIN), text.find(DOCS_END)
    if start < 0 or end < start:
        return False
    DOCS.write_text(text[: start + len(DOCS_BEGIN)] + "\n\n" + markdown.strip() + "\n\n"
                    + text[end:])
    return True


# --------------------------------------------------------------------------------------------
# main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="1 s warm-up, 3 s measured, 1 run: to try the harness out")
    p.add_argument("--only", default="",
                   help="comma-separated scenarios: " + ",".join(s.key for s in SCENARIOS))
    p.add_argument("--servers", default="",
                   help="comma-separated servers or configs: "
                        + ",".join(sorted({c.server for c in CONFIGS} | {c.key for c in CONFIGS})))
    p.add_argument("--runs", type=int, default=None, help="measured runs per cell (default 2)")
    p.add_argument("--warmup", type=int, default=None,
                   help="warm-up seconds, whole (default 3; 0 skips it)")
    p.add_argument("--duration", type=int, default=None,
                   help="measured seconds, whole (default 10)")
    p.add_argument("--max-minutes", type=float, default=60.0,
                   help="hard bound on the whole run; cells past it are skipped (default 60)")
    p.add_argument("--noise-threshold", type=float, default=15.0,
                   help="a run during which other work took more than this %% of core 0 or 1 "
                        "is measured again (default 15)")
    p.add_argument("--retries", type=int, default=None,
                   help="rounds of measuring disturbed runs again (default 2, 0 with --quick)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    p.add_argument("--update-docs", action="store_true",
                   help="also write the results into docs/performance.md")
    p.add_argument("--system-idle", action="store_true",
                   help="leave idle cores to the system's idle policy instead of holding the "
                        "wake-up latency at 0 µs (see hold_wakeup_latency)")
    p.add_argument("--python", default=sys.executable, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    quick = args.quick
    args.runs = args.runs or (1 if quick else 2)
    args.retries = args.retries if args.retries is not None else (0 if quick else 2)
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 3)
    args.duration = args.duration or (3 if quick else 10)
    if args.runs < 1 or args.duration <= 0 or args.warmup < 0:
        p.error("--runs must be ≥ 1, --duration > 0, --warmup ≥ 0")
    names = {s.key for s in SCENARIOS}
    args.scenarios = [s for s in SCENARIOS
                      if not args.only or s.key in args.only.split(",")]
    unknown = [x for x in args.only.split(",") if x and x not in names]
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(unknown)}")
    wanted = [x for x in args.servers.split(",") if x]
    known = {c.server for c in CONFIGS} | {c.key for c in CONFIGS}
    if bad := [x for x in wanted if x not in known]:
        p.error(f"unknown server(s): {', '.join(bad)}")
    args.configs = [c for c in CONFIGS if not wanted or c.server in wanted or c.key in wanted]
    if args.update_docs and (args.only or wanted):
        # The page's results section is written as a whole: a partial run would drop the rest.
        p.error("--update-docs needs a run of every scenario and server (no --only, --servers)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tools = ["wrk", "taskset"] + (["h2load"] if any(s.proto != "h1" for s in args.scenarios)
                                  else [])
    for tool in tools:
        if shutil.which(tool) is None:
            print(f"{tool} is missing: run bash bench/run.sh, which installs it", file=sys.stderr)
            return 1
    if (os.cpu_count() or 1) < 2:
        print("this benchmark needs 2 cores (server on core 0, wrk on core 1)", file=sys.stderr)
        return 1
    if args.system_idle:
        idle_fd, idle_policy = None, "system default (--system-idle)"
    else:
        idle_fd, idle_policy = hold_wakeup_latency()
    try:
        return run_all(args, idle_policy, argv)
    finally:
        if idle_fd is not None:
            os.close(idle_fd)


def run_all(args: argparse.Namespace, idle_policy: str, argv: Sequence[str] | None) -> int:
    python = args.python
    bindir = str(Path(python).parent)
    base = Launch(port=0, module="", python=python, bindir=bindir)
    started = time.monotonic()
    deadline = started + args.max_minutes * 60

    plan = [(sc, [c for c in args.configs if c.serves(sc)]) for sc in args.scenarios]
    n_meas = sum(len(cfgs) for _, cfgs in plan) * args.runs
    estimate = n_meas * (args.warmup + args.duration + 2.5)
    print(f"{len(plan)} scenario(s), {n_meas} measured runs, about {estimate / 60:.0f} min "
          f"(bounded at {args.max_minutes:g} min)", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="ferrocorn-bench-"))
    data_file = tmp / "file-10mib.bin"
    with data_file.open("wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(FILE_SIZE // len(block)):
            f.write(block)
    logdir = tmp / "logs"
    logdir.mkdir()
    if any(sc.tls for sc, _ in plan):
        base = dataclasses.replace(base, tls=make_certificate(tmp))
    env = dict(os.environ, BENCH_FILE=str(data_file), PYTHONDONTWRITEBYTECODE="1")
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")

    installed = {c.key: c.installed(base) for c in args.configs}
    commands = {c.key: " ".join(shlex.quote(a) for a in c.argv(
        dataclasses.replace(base, port=0, module="MODULE")))
        .replace(bindir + "/", "").replace(python, "python").replace(str(BENCH), "bench")
        .replace(f"{HOST}:0", f"{HOST}:PORT").replace("--port 0", "--port PORT")
        .replace(f"{HOST} 0", f"{HOST} PORT")
        for c in args.configs}
    for c in args.configs:
        for proto, name in (("h2", "HTTP/2 over TLS"), ("h2c", "HTTP/2 cleartext")):
            if c.extra_flags(proto):
                commands[f"{c.key}, {name}"] = " ".join([commands[c.key], *c.extra_flags(proto)])
    cells: dict[str, dict[str, Cell]] = {}
    try:
        for sc, cfgs in plan:
            cells[sc.key] = {c.key: Cell(sc.key, c.key, c.server, c.label, commands[c.key],
                                         keep=args.runs) for c in cfgs}
            for c in cfgs:
                if not installed[c.key]:
                    cells[sc.key][c.key].status = "not installed"
                elif sc.load == "ws" and not WSLOAD.exists():
                    cells[sc.key][c.key].status = "skipped"
                    cells[sc.key][c.key].error = (
                        "the WebSocket client is not built: cargo build --release "
                        "--manifest-path bench/wsload/Cargo.toml (bench/run.sh does it)")

            def measure(c: Config, tag: str, sc: Scenario = sc) -> None:
                cell = cells[sc.key][c.key]
                if time.monotonic() + args.warmup + args.duration + 10 > deadline:
                    cell.status = "skipped" if not cell.ok_runs() else cell.status
                    cell.error = cell.error or f"time bound of {args.max_minutes:g} min"
                    return
                measure_once(cell, c, sc, base, env, logdir, args.warmup, args.duration)
                last = cell.runs[-1]
                if last["rps"] is None:
                    msg = f"FAILED {last.get('error', '')[:200]}"
                else:
                    msg = (f"{last['rps']:>10,.0f} {sc.unit}  p99 {fmt_ms(last['p99_ms']):>6} ms  "
                           f"err {last['errors']}  rss {fmt_mib(last['rss_kib'])} MiB  "
                           f"other load {last.get('other_load_pct', '?')}%")
                print(f"[{(time.monotonic() - started) / 60:5.1f} min] {sc.key:<14} "
                      f"{tag:<9} {c.key:<18} {msg}", flush=True)

            live = [c for c in cfgs if cells[sc.key][c.key].status == "ok"]
            for run in range(args.runs):
                # rotate the order each run so that no server always goes first or last
                k = run % len(live) if live else 0
                for c in live[k:] + live[:k]:
                    measure(c, f"run {run + 1}/{args.runs}")
            # runs disturbed by other work on the machine are measured again, a bounded
            # number of times; the summary then uses the quietest runs
            for retry in range(args.retries):
                noisy = [c for c in live if cells[sc.key][c.key].noisy(args.noise_threshold)
                         and cells[sc.key][c.key].ok_runs()]
                for c in noisy:
                    measure(c, f"retry {retry + 1}")
    except KeyboardInterrupt:
        print("interrupted: writing what was measured", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    elapsed = time.monotonic() - started
    cmd = "bash bench/run.sh" + "".join(
        f" {shlex.quote(a)}" for a in (sys.argv[1:] if argv is None else argv))
    meta = {
        "started": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "elapsed_s": round(elapsed, 1),
        "machine": dict(machine_info(), cpu_idle=idle_policy),
        "versions": versions(python, bindir),
        "options": {"warmup": args.warmup, "duration": args.duration, "runs": args.runs,
                    "retries": args.retries, "noise_threshold": args.noise_threshold,
                    "quick": args.quick, "max_minutes": args.max_minutes},
        "command": cmd,
        "commands": commands,
    }
    sleep_ms = (sleep_calibration(python) if any(sc.key == "sleep-10ms" for sc in args.scenarios)
                else None)
    meta["sleep_10ms_actual_ms"] = sleep_ms
    bar = check_bar(cells, sleep_ms)
    args.out.mkdir(parents=True, exist_ok=True)
    md = render_markdown(meta, args.scenarios, cells, bar)
    (args.out / "results.md").write_text(md)
    payload = {
        "meta": meta,
        "scenarios": {
            sc.key: {
                "title": sc.title, "app": f"bench/apps/{sc.module}.py",
                "connections": sc.connections,
                "cells": [dict(dataclasses.asdict(c), summary=c.summary())
                          for c in cells[sc.key].values()],
            } for sc in args.scenarios if sc.key in cells
        },
        "bar": [dataclasses.asdict(b) for b in bar],
    }
    (args.out / "results.json").write_text(json.dumps(payload, indent=1) + "\n")
    try:
        render_chart(args.scenarios, cells, args.out / "chart.png")
    except ImportError as exc:
        print(f"no chart: {exc}", file=sys.stderr)
    if args.update_docs:
        body = render_markdown(meta, args.scenarios, cells, bar, heading_level=2)
        body = body.split("\n", 2)[2]  # the docs page has its own title
        if not update_docs(body):
            print(f"could not find the results markers in {DOCS}", file=sys.stderr)
    print()
    for b in bar:
        print(f"{b.status}  {b.text}: {b.detail}")
    print(f"\nwrote {args.out / 'results.md'}, results.json, chart.png "
          f"in {elapsed / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
