"""An idle kept-alive connection costs its worker little memory: between requests it holds no
read buffer and no request state, only what waiting for its next request needs."""

from __future__ import annotations

import resource
import socket
from pathlib import Path

from conftest import SocketReader, booted_worker_pids, req, wait_until

CONNECTIONS = 2000
# About 1.8 KiB each is measured; a connection that kept its 16 KiB read buffer or its
# request's state while idle costs about 7 KiB.
BOUND_KIB = 4.0


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            return int(line.split()[1])
    raise AssertionError(f"no Rss for {pid}")


def _get(sock: socket.socket, path: str) -> bytes:
    sock.sendall(req(path=path))
    status, _, body, _ = SocketReader(sock).response()
    assert status == 200
    return body


def test_idle_keep_alive_connections_hold_no_buffers(run_server, worker_args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * CONNECTIONS + 500
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            raise AssertionError(f"the open-file limit ({hard}) is below {want}")
        # The server inherits the raised limit.
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    socks: list[socket.socket] = []
    try:
        server = run_server(*worker_args, "-w", "1", "--worker-connections", str(want),
                            "--keep-alive", "120", "h_apps:fixed")
        pid = wait_until(lambda: booted_worker_pids(server), timeout=30, message="worker")[0]
        # What the first requests allocate once is not the connections' cost.
        for _ in range(100):
            with server.connect() as s:
                _get(s, "/warm")
        before = _rss_kib(pid)
        for i in range(CONNECTIONS):
            s = server.connect()
            socks.append(s)
            _get(s, f"/{i}")
        per_connection = (_rss_kib(pid) - before) / CONNECTIONS
        assert per_connection < BOUND_KIB, f"{per_connection:.2f} KiB per idle connection"
        # Idle connections take a buffer again when their next request arrives.
        for i in range(0, CONNECTIONS, 97):
            assert _get(socks[i], f"/again{i}")
    finally:
        for s in socks:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
