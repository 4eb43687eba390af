"""Metrics on a real server: StatsD datagrams as Gunicorn sends them, and the Prometheus
endpoint the master serves (`--metrics-bind`)."""

from __future__ import annotations

import os
import re
import signal
import socket

import pytest
from conftest import booted_worker_pids, get, wait_until
from test_logging import Receiver, udp_receiver

pytestmark = pytest.mark.timeout(90)

# --- StatsD -----------------------------------------------------------------------------------

STATSD = re.compile(rb"^(?P<name>[\w.]+):(?P<value>-?[\d.]+)\|(?P<type>c|g|ms|h)(?:\|@(?P<rate>[\d.]+))?"
                    rb"(?:\|#(?P<tags>.*))?$")


def parse_statsd(datagrams: list[bytes]) -> list[re.Match]:
    out = []
    for d in datagrams:
        m = STATSD.match(d)
        assert m, d
        out.append(m)
    return out


def test_statsd_metrics_like_gunicorn(run_server, worker_args):
    rx, port = udp_receiver()
    try:
        server = run_server("-w", "2", *worker_args, "--statsd-host", f"127.0.0.1:{port}",
                            "--statsd-prefix", "web...", "--dogstatsd-tags", "env:test,team:a",
                            "l_apps:statuses")
        for path in ("/", "/status/404", "/status/404", "/slow"):
            get(server, path)
        assert get(server, "/boom")[0] == 500

        def complete():
            # A request's metrics follow its response, so wait for all three kinds of all five.
            ms = parse_statsd(list(rx.items))
            names = [m["name"] for m in ms]
            counted = (names.count(b"web.gunicorn.requests") >= 5
                       and names.count(b"web.gunicorn.request.duration") >= 5
                       and sum(n.startswith(b"web.gunicorn.request.status.") for n in names) >= 5)
            return ms if counted else None

        metrics = wait_until(complete, 15, message="five requests counted, timed and by status")
        for m in metrics:
            assert m["name"].startswith(b"web.gunicorn."), m.string
            assert m["tags"] == b"env:test,team:a", m.string
        by_name: dict[bytes, list[re.Match]] = {}
        for m in metrics:
            by_name.setdefault(m["name"], []).append(m)
        workers = by_name[b"web.gunicorn.workers"]
        assert workers[-1]["type"] == b"g" and workers[-1]["value"] == b"2"
        requests = by_name[b"web.gunicorn.requests"]
        assert all(m["type"] == b"c" and m["value"] == b"1" and m["rate"] == b"1.0" for m in requests)
        assert len(by_name[b"web.gunicorn.request.status.200"]) == 2
        assert len(by_name[b"web.gunicorn.request.status.404"]) == 2
        assert len(by_name[b"web.gunicorn.request.status.500"]) == 1
        durations = by_name[b"web.gunicorn.request.duration"]
        assert len(durations) == 5 and all(m["type"] == b"ms" for m in durations)
        # Milliseconds as Python prints a float; /slow sleeps 300 ms.
        values = [float(m["value"]) for m in durations]
        assert all(b"." in m["value"] for m in durations)
        assert max(values) >= 300 and min(values) < 300
        # The application error is logged with logger.exception: one exception counter.
        wait_until(lambda: any(d.startswith(b"web.gunicorn.log.exception:1|c|@1.0") for d in rx.items), 10,
                   message="log.exception counter")
    finally:
        rx.close()


def test_statsd_counts_warnings_and_worker_changes(run_server, tmp_path):
    rx, port = udp_receiver()
    try:
        server = run_server("-w", "1", "--statsd-host", f"127.0.0.1:{port}", "l_apps:hello")
        rx.wait_for(rb"^gunicorn\.workers:1\|g$")
        # Per request, in Gunicorn's order: duration, requests, status.
        assert get(server, "/")[0] == 200
        rx.wait_for(rb"^gunicorn\.request\.status\.200:1\|c\|@1\.0$")
        names = [d.split(b":")[0] for d in rx.items if d.startswith(b"gunicorn.request")]
        assert names == [b"gunicorn.request.duration", b"gunicorn.requests",
                         b"gunicorn.request.status.200"], names
        server.signal(signal.SIGTTIN)
        rx.wait_for(rb"^gunicorn\.workers:2\|g$")
        # A worker killed from outside is an error in the master's log: counted.
        pid = wait_until(lambda: booted_worker_pids(server), 10, message="worker")[0]
        os.kill(pid, signal.SIGKILL)
        rx.wait_for(rb"^gunicorn\.log\.error:1\|c\|@1\.0$")
        for d in list(rx.items):
            assert STATSD.match(d) and not d.startswith(b"."), d
    finally:
        rx.close()


def test_statsd_to_a_unix_socket(run_server, tmp_path):
    path = tmp_path / "statsd.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    rx = Receiver(sock)
    try:
        server = run_server("--statsd-host", f"unix://{path}", "l_apps:hello")
        assert get(server, "/")[0] == 200
        rx.wait_for(rb"^gunicorn\.request\.status\.200:1\|c\|@1\.0$")
    finally:
        rx.close()


def test_bad_statsd_host_is_refused(run_server):
    server = run_server("--statsd-host", "localhost:port", "l_apps:hello", ready=False)
    assert server.wait(timeout=30) == 1
    assert "statsd_host" in server.log and "host:port" in server.log, server.log


# --- Prometheus -------------------------------------------------------------------------------

SAMPLE = re.compile(r'^(?P<name>ferrocorn_[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>[0-9.e+Inf-]+)$')


def metrics_url(server) -> tuple[str, int]:
    m = server.wait_for_line(r"Serving metrics at: http://([\d.]+):(\d+)/metrics")
    return m.group(1), int(m.group(2))


def scrape(addr: tuple[str, int], timeout: float = 5.0) -> dict[str, float]:
    """GET /metrics; checks the exposition format and returns {name{labels}: value}."""
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
    assert b"Content-Type: text/plain; version=0.0.4" in head
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
    assert len(body) == length
    out: dict[str, float] = {}
    typed: dict[str, str] = {}
    for line in body.decode().splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            typed[name] = kind
            continue
        m = SAMPLE.match(line)
        assert m, line
        base = re.sub(r"_(bucket|sum|count)$", "", m["name"])
        assert m["name"] in typed or base in typed, line
        key = m["name"] + (f"{{{m['labels']}}}" if m["labels"] else "")
        out[key] = float(m["value"])
    assert typed == {
        "ferrocorn_requests_total": "counter",
        "ferrocorn_request_duration_seconds": "histogram",
        "ferrocorn_requests_in_flight": "gauge",
        "ferrocorn_connections_open": "gauge",
        "ferrocorn_workers": "gauge",
        "ferrocorn_worker_restarts_total": "counter",
    }, typed
    return out


def test_prometheus_endpoint_counts_requests_and_restarts(run_server, worker_args):
    server = run_server("-w", "2", *worker_args, "--metrics-bind", "127.0.0.1:0", "l_apps:statuses")
    addr = metrics_url(server)
    wait_until(lambda: len(booted_worker_pids(server)) >= 2, 15, message="two workers")
    before = scrape(addr)
    assert before['ferrocorn_requests_total{status="2xx"}'] == 0
    assert wait_until(lambda: scrape(addr)["ferrocorn_workers"] == 2, 10, message="workers gauge")
    for path in ("/", "/", "/status/404", "/status/302", "/slow"):
        get(server, path)
    assert get(server, "/boom")[0] == 500
    # A request is counted just after its response is written.
    after = wait_until(lambda: (m := scrape(addr))["ferrocorn_request_duration_seconds_count"] == 6
                       and m, 10, message="six requests counted")
    assert after['ferrocorn_requests_total{status="2xx"}'] == 3
    assert after['ferrocorn_requests_total{status="3xx"}'] == 1
    assert after['ferrocorn_requests_total{status="4xx"}'] == 1
    assert after['ferrocorn_requests_total{status="5xx"}'] == 1
    assert after["ferrocorn_request_duration_seconds_count"] == 6
    assert after['ferrocorn_request_duration_seconds_bucket{le="+Inf"}'] == 6
    assert after['ferrocorn_request_duration_seconds_bucket{le="0.25"}'] == 5
    assert after['ferrocorn_request_duration_seconds_bucket{le="0.5"}'] == 6
    assert 0.3 <= after["ferrocorn_request_duration_seconds_sum"] < 5
    assert after["ferrocorn_requests_in_flight"] == 0

    # An open connection and a request in flight show up while they last.
    with server.connect() as s:
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        during = wait_until(lambda: (m := scrape(addr))["ferrocorn_requests_in_flight"] == 1 and m,
                            10, interval=0.01, message="a request in flight")
        assert during["ferrocorn_connections_open"] >= 1
        s.recv(1024)
    # Counted once the response is written.
    wait_until(lambda: scrape(addr)['ferrocorn_requests_total{status="2xx"}'] == 4, 10,
               message="the slow request counted")

    # A worker killed from outside is a restart; its counts are kept.
    pid = booted_worker_pids(server)[0]
    os.kill(pid, signal.SIGKILL)
    restarted = wait_until(
        lambda: (m := scrape(addr))['ferrocorn_worker_restarts_total{reason="exit"}'] == 1 and m,
        15, message="restart counted")
    assert restarted['ferrocorn_requests_total{status="2xx"}'] == 4
    wait_until(lambda: scrape(addr)["ferrocorn_workers"] == 2, 15, message="worker replaced")
    # Retiring workers on purpose (TTOU) is not a restart.
    server.signal(signal.SIGTTOU)
    wait_until(lambda: scrape(addr)["ferrocorn_workers"] == 1, 15, message="one worker left")
    final = scrape(addr)
    assert sum(v for k, v in final.items() if k.startswith("ferrocorn_worker_restarts_total")) == 1


def test_prometheus_counts_max_requests_restarts(run_server):
    server = run_server("-w", "1", "--max-requests", "2", "--metrics-bind", "127.0.0.1:0",
                        "l_apps:hello")
    addr = metrics_url(server)
    for _ in range(4):
        assert get(server, "/")[0] == 200
    m = wait_until(lambda: (m := scrape(addr))['ferrocorn_worker_restarts_total{reason="max_requests"}'] >= 1
                   and m['ferrocorn_requests_total{status="2xx"}'] == 4 and m, 15,
                   message="max_requests restart")
    assert m['ferrocorn_worker_restarts_total{reason="exit"}'] == 0


def test_a_silent_scraper_cannot_hold_up_the_master(run_server, tmp_path):
    sock_path = tmp_path / "metrics.sock"
    server = run_server("--metrics-bind", f"unix:{sock_path}", "l_apps:hello")
    server.wait_for_line(rf"Serving metrics at: unix:{re.escape(str(sock_path))}")
    silent = []
    for _ in range(12):  # more than the endpoint serves at once
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(sock_path))
        try:
            s.sendall(b"GET /metr")  # never finished
        except (BrokenPipeError, ConnectionResetError):
            pass  # past its limit the endpoint closes a connection on accept, maybe already
        silent.append(s)
    try:
        # The master still handles signals and the server still serves...
        server.signal(signal.SIGTTIN)
        wait_until(lambda: len(booted_worker_pids(server)) >= 2, 15, message="TTIN handled")
        assert get(server, "/")[0] == 200
        # ...and once the silent ones time out, scrapes are answered again.
        def answered():
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(2)
                    s.connect(str(sock_path))
                    s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
                    return s.recv(100).startswith(b"HTTP/1.1 200 OK")
            except OSError:
                return False

        wait_until(answered, 20, interval=0.2, message="a scrape answered")
    finally:
        for s in silent:
            s.close()
    server.stop()
    assert not sock_path.exists()


def test_metrics_are_off_by_default(run_server):
    server = run_server("l_apps:hello")
    assert get(server, "/")[0] == 200
    server.stop()
    assert "Serving metrics" not in server.log
