"""PROXY protocol v1 and v2 over raw sockets: `--proxy-protocol off|v1|v2|auto` and
`--proxy-allow-from`, with REMOTE_ADDR/REMOTE_PORT taken from the header of an allowed peer;
a malformed or disallowed header ends the connection with an error and the application never
sees the request."""

from __future__ import annotations

import ipaddress
import json
import struct
import time
from pathlib import Path

import pytest
from conftest import SocketReader

pytestmark = pytest.mark.timeout(60)

APP = "s_apps:app"
GET = b"GET /e HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src: str = "203.0.113.7", dst: str = "198.51.100.1", sport: int = 4711, dport: int = 443) -> bytes:
    proto = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {proto} {src} {dst} {sport} {dport}\r\n".encode()


def v2(src: str = "203.0.113.7", dst: str = "198.51.100.1", sport: int = 4711, dport: int = 443,
       command: int = 0x21) -> bytes:
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    fam = 0x11 if a.version == 4 else 0x21
    addrs = a.packed + b.packed + struct.pack(">HH", sport, dport)
    return V2_SIG + bytes([command, fam]) + struct.pack(">H", len(addrs)) + addrs


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "marker.log"


def seen(marker: Path) -> list[str]:
    return marker.read_text().splitlines() if marker.exists() else []


def served(srv, raw: bytes) -> dict:
    with srv.connect() as s:
        s.sendall(raw)
        status, _, body, _ = SocketReader(s).response()
    assert status == 200, body
    return json.loads(body)


def rejected(srv, raw: bytes, marker: Path) -> bytes:
    """The connection ends with an error answer (or a bare close); the app sees nothing."""
    with srv.connect() as s:
        try:
            s.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        s.settimeout(10)
        data = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        else:
            raise AssertionError(f"connection still open: {data[:200]!r}")
    assert not data or data.startswith(b"HTTP/1.1 4"), data[:200]
    assert b" 200 " not in data
    assert seen(marker) == [], seen(marker)
    return data


@pytest.mark.parametrize("mode,header", [
    ("v1", v1()), ("auto", v1()), ("v2", v2()), ("auto", v2()),
])
def test_proxy_header_sets_remote_addr(run_server, worker_args, mode, header):
    srv = run_server(*worker_args, "--proxy-protocol", mode, APP)
    env = served(srv, header + GET)
    assert env["REMOTE_ADDR"] == "203.0.113.7" and env["REMOTE_PORT"] == "4711"


@pytest.mark.parametrize("header", [v1("2001:db8::7", "2001:db8::1", 5555, 80),
                                    v2("2001:db8::7", "2001:db8::1", 5555, 80)])
def test_proxy_header_ipv6(run_server, worker_args, header):
    srv = run_server(*worker_args, "--proxy-protocol", "auto", APP)
    env = served(srv, header + GET)
    assert env["REMOTE_ADDR"] == "2001:db8::7" and env["REMOTE_PORT"] == "5555"


def test_bare_flag_means_auto(run_server, worker_args):
    srv = run_server(*worker_args, APP, "--proxy-protocol")
    assert served(srv, v2() + GET)["REMOTE_ADDR"] == "203.0.113.7"


def test_auto_without_header_uses_socket_peer(run_server, worker_args):
    srv = run_server(*worker_args, "--proxy-protocol", "auto", APP)
    assert served(srv, GET)["REMOTE_ADDR"] == "127.0.0.1"


def test_v2_local_command_keeps_socket_peer(run_server, worker_args):
    srv = run_server(*worker_args, "--proxy-protocol", "v2", APP)
    local = V2_SIG + bytes([0x20, 0x00]) + struct.pack(">H", 0)
    assert served(srv, local + GET)["REMOTE_ADDR"] == "127.0.0.1"


def test_header_in_pieces(run_server, worker_args):
    srv = run_server(*worker_args, "--proxy-protocol", "auto", APP)
    raw = v2() + GET
    with srv.connect() as s:
        for i in range(0, len(raw), 5):
            s.sendall(raw[i:i + 5])
            time.sleep(0.01)
        status, _, body, _ = SocketReader(s).response()
    assert status == 200 and json.loads(body)["REMOTE_ADDR"] == "203.0.113.7"


def test_off_by_default_header_is_a_bad_request(run_server, worker_args, marker):
    srv = run_server(*worker_args, "-e", f"MARKER={marker}", APP)
    data = rejected(srv, v1() + GET, marker)
    assert data.startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 999.0.0.1 198.51.100.1 4711 443\r\n",
    b"PROXY TCP4 203.0.113.7 198.51.100.1 99999 443\r\n",
    b"PROXY TCP4 203.0.113.7 198.51.100.1 4711\r\n",
    b"PROXY TCP4 2001:db8::7 198.51.100.1 4711 443\r\n",
    b"PROXY SCTP 203.0.113.7 198.51.100.1 4711 443\r\n",
    b"PROXY TCP4 203.0.113.7 198.51.100.1 4711 443 " + b"x" * 120 + b"\r\n",
    V2_SIG + bytes([0x31, 0x11]) + struct.pack(">H", 12) + bytes(12),  # version 3
    V2_SIG + bytes([0x21, 0x11]) + struct.pack(">H", 4) + bytes(4),  # address block too short
], ids=["bad-ip", "bad-port", "missing-field", "v6-in-tcp4", "unknown-proto", "too-long",
        "v2-version", "v2-short"])
def test_malformed_header_closes_connection(run_server, worker_args, marker, header):
    srv = run_server(*worker_args, "--proxy-protocol", "auto", "-e", f"MARKER={marker}", APP)
    rejected(srv, header + GET, marker)


def test_v1_mode_refuses_v2_header(run_server, worker_args, marker):
    srv = run_server(*worker_args, "--proxy-protocol", "v1", "-e", f"MARKER={marker}", APP)
    rejected(srv, v2() + GET, marker)


def test_v2_mode_refuses_v1_header(run_server, worker_args, marker):
    srv = run_server(*worker_args, "--proxy-protocol", "v2", "-e", f"MARKER={marker}", APP)
    rejected(srv, v1() + GET, marker)


def test_second_header_on_connection_is_refused(run_server, worker_args, marker):
    srv = run_server(*worker_args, "--proxy-protocol", "v1", "-e", f"MARKER={marker}", APP)
    with srv.connect() as s:
        reader = SocketReader(s)
        s.sendall(v1() + b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reader.response()[0] == 200
        s.sendall(v1("192.0.2.66") + GET)
        status, headers, _, _ = reader.response()
        assert status == 400 and headers["connection"] == "close"
    assert seen(marker) == ["GET /first"]


@pytest.mark.parametrize("allow", ["10.0.0.0/8,192.168.0.0/16", "192.0.2.1", "::1"])
def test_disallowed_peer_is_forbidden(run_server, worker_args, marker, allow):
    srv = run_server(*worker_args, "--proxy-protocol", "auto", "--proxy-allow-from", allow,
                     "-e", f"MARKER={marker}", APP)
    data = rejected(srv, v1() + GET, marker)
    assert data.startswith(b"HTTP/1.1 403 Forbidden")


@pytest.mark.parametrize("allow", ["*", "127.0.0.0/8", "10.0.0.0/8,127.0.0.1/32", "127.0.0.1"])
def test_allowed_peer_by_cidr_list(run_server, worker_args, allow):
    srv = run_server(*worker_args, "--proxy-protocol", "auto", "--proxy-allow-from", allow, APP)
    assert served(srv, v1() + GET)["REMOTE_ADDR"] == "203.0.113.7"


def test_disallowed_peer_without_header_is_served(run_server, worker_args):
    # The allow list governs who may send a header, not who may connect.
    srv = run_server(*worker_args, "--proxy-protocol", "auto", "--proxy-allow-from", "10.0.0.0/8", APP)
    assert served(srv, GET)["REMOTE_ADDR"] == "127.0.0.1"


def test_proxy_address_does_not_grant_forwarded_trust(run_server, worker_args):
    # Forwarded-header trust follows the socket peer; a PROXY header naming a trusted address
    # does not make forged X-Forwarded-Proto count.
    srv = run_server(*worker_args, "--proxy-protocol", "auto", "--forwarded-allow-ips", "10.0.0.0/8", APP)
    raw = v1("10.1.1.1") + b"GET /e HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n"
    env = served(srv, raw)
    assert env["REMOTE_ADDR"] == "10.1.1.1" and env["wsgi.url_scheme"] == "http"
