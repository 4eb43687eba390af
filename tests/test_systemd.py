"""systemd protocol without systemd: the test binds the listening sockets and a notify socket
itself, starts the server with LISTEN_FDS/LISTEN_PID (the pid set by a tiny `sh` wrapper that
then execs the server) and NOTIFY_SOCKET, and reads the datagrams."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading

import pytest
from conftest import SERVER_COMMAND, Server, SocketReader, connect_to, server_env, wait_until

pytestmark = pytest.mark.timeout(60)


class Notifications:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                continue
            except OSError:
                return

    def wait_for(self, needle: str, timeout: float = 20) -> str:
        return wait_until(lambda: next((m for m in self.messages if needle in m), None), timeout,
                          message=f"notification {needle!r}; got {self.messages}")

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


class ActivatedServer(Server):
    """A server started the way systemd starts a socket-activated `Type=notify` service."""

    def __init__(self, args, cwd, env, fds: list[int]) -> None:
        self.args = args
        script = f'LISTEN_PID=$$ LISTEN_FDS={len(fds)} exec "$@"'
        targets = list(range(3, 3 + len(fds)))

        def move_fds() -> None:  # in the child: the sockets go to 3, 4, ... as systemd puts them
            for target, fd in zip(targets, fds):
                os.dup2(fd, target)

        self.proc = subprocess.Popen(["sh", "-c", script, "sh", *SERVER_COMMAND, *args], cwd=str(cwd),
                                     env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     pass_fds=tuple(fds) + tuple(targets), preexec_fn=move_fds)
        self.lines = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.addresses = []


def test_socket_activation_and_notify(tmp_path):
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(64)
    unix_path = str(tmp_path / "act.sock")
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(unix_path)
    unix.listen(64)
    fds = [tcp.fileno(), unix.fileno()]
    notify = Notifications(str(tmp_path / "notify.sock"))
    env = server_env({"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
    srv = ActivatedServer(["-w", "1", "p_apps:app"], tmp_path, env, fds)
    try:
        port = tcp.getsockname()[1]
        srv.wait_ready(2)
        assert srv.addresses == [f"http://127.0.0.1:{port}", f"unix:{unix_path}"], srv.log
        ready = notify.wait_for("READY=1")
        assert "STATUS=" in ready
        srv.wait_for_line("Booting worker")
        for address in srv.addresses:
            with connect_to(address) as s:
                s.sendall(b"GET /env/LISTEN_FDS HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                status, _, body, _ = SocketReader(s).response()
            # Served through the inherited socket; the variables are not passed on.
            assert (status, body) == (200, b"")
        srv.signal(signal.SIGHUP)
        notify.wait_for("RELOADING=1")
        srv.signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        assert srv.wait(30) == 0
        assert os.path.exists(unix_path), "systemd owns the socket file"
    finally:
        if srv.proc.poll() is None:
            srv.kill()
        notify.close()
        tcp.close()
        unix.close()


def test_listen_pid_of_another_process_is_ignored(run_server, tmp_path):
    srv = run_server("-w", "1", "p_apps:app", env={"LISTEN_PID": "1", "LISTEN_FDS": "2"})
    assert srv.address.startswith("http://127.0.0.1:")
