"""A WebSocket request on `-k asgi` is reported as an HTTP request is: the access log line
(its status, the bytes sent over the connection's life, the time of the whole session), the
pre_request and post_request hooks around it, and StatsD."""

from __future__ import annotations

import base64
import os
import re

import pytest
from conftest import APPS_DIR, SocketReader, wait_until
from test_logging import udp_receiver
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

pytestmark = pytest.mark.timeout(60)

APP = "ws_deny_apps:app"


def ws_url(server, path: str) -> str:
    host, port = server.host_port
    return f"ws://{host}:{port}{path}"


def echo_once(server, path: str = "/echo") -> None:
    """One message and its echo (a 7-byte frame from the server), then a normal close (the
    server's close frame echoes 1000: 4 bytes)."""
    with connect(ws_url(server, path), compression=None) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"


def deny(server) -> None:
    with pytest.raises(InvalidStatus):
        connect(ws_url(server, "/deny"), open_timeout=10)


def refuse(server) -> None:
    """A close before accepting: the server's 403 (its body not counted as sent, as for the
    server's error answers to HTTP requests)."""
    key = base64.b64encode(os.urandom(16)).decode()
    with server.connect() as s:
        s.sendall((f"GET /refuse HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                   f"Sec-WebSocket-Key: {key}\r\n\r\n").encode())
        assert SocketReader(s).response()[0] == 403


def test_access_log_line_covers_the_whole_session(run_server):
    srv = run_server("-k", "asgi", "--access-logfile", "-",
                     "--access-logformat", "access %(r)s %(s)s %(b)s %(D)s", APP)
    echo_once(srv, "/slow-echo")
    m = srv.wait_for_line(r"access GET /slow-echo HTTP/1\.1 (\d+) (\d+) (\d+)")
    status, sent, micros = (int(g) for g in m.groups())
    assert (status, sent) == (101, 7 + 4)
    # The application waited half a second inside the session.
    assert micros >= 500_000
    deny(srv)
    srv.wait_for_line(r"access GET /deny HTTP/1\.1 401 8 \d+")
    refuse(srv)
    srv.wait_for_line(r"access GET /refuse HTTP/1\.1 403 0 \d+")


def test_request_hooks_around_a_websocket(run_server, tmp_path):
    hook_log = tmp_path / "hooks.log"
    srv = run_server("-k", "asgi", "-c", str(APPS_DIR / "ws_hooks_conf.py"), APP,
                     env={"HOOK_LOG": str(hook_log)})
    echo_once(srv)
    deny(srv)
    refuse(srv)

    def lines() -> list[str] | None:
        found = hook_log.read_text().splitlines() if hook_log.exists() else []
        return found if len(found) >= 6 else None

    found = wait_until(lines, 15, message="six hook lines")
    # A client may have its answer, and start the next request, before post_request runs.
    for path, end in (("/echo", "101 sent=11"), ("/deny", "401 sent=8"),
                      ("/refuse", "403 sent=0")):
        pre = found.index(f"pre_request GET {path} upgrade=websocket")
        assert found.index(f"post_request GET {path} {end}") > pre, found
    assert "Exception in" not in srv.log, srv.log


def test_statsd_counts_websocket_requests(run_server):
    rx, port = udp_receiver()
    try:
        srv = run_server("-k", "asgi", "--statsd-host", f"127.0.0.1:{port}", APP)
        echo_once(srv)
        deny(srv)
        rx.wait_for(rb"^gunicorn\.request\.status\.101:1\|c")
        rx.wait_for(rb"^gunicorn\.request\.status\.401:1\|c")
        durations = wait_until(
            lambda: [d for d in list(rx.items) if re.match(rb"^gunicorn\.request\.duration:", d)],
            15, message="request durations")
        assert len(durations) >= 1
        requests = [d for d in list(rx.items) if d.startswith(b"gunicorn.requests:")]
        assert requests, list(rx.items)
    finally:
        rx.close()
