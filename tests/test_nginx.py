"""A real nginx in front of the server, the way it is deployed.

nginx runs in the foreground with a config written to the test's tmp_path (pid file, logs and
temp folders there too), listens on a unix socket, and proxies to the server's unix socket
(`-b unix:PATH`) with upstream keep-alive. The test talks HTTP to nginx over its unix socket.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from conftest import SocketReader, wait_until

pytestmark = pytest.mark.timeout(90)

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size 16m;

    upstream app {{
        server unix:{app_sock};
        keepalive 4;
    }}

    server {{
        listen unix:{nginx_sock};

        proxy_http_version 1.1;

        # (proxy_set_header is inherited only by levels that set none, hence the include.)
        location / {{
            include {d}/proxy_headers.conf;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_pass http://app;
        }}
        # As if nginx had terminated TLS for this location.
        location /secure/ {{
            include {d}/proxy_headers.conf;
            proxy_set_header X-Forwarded-Proto https;
            proxy_pass http://app;
        }}
        # The request body streams through to the server as it arrives (chunked upstream).
        location /unbuffered/ {{
            include {d}/proxy_headers.conf;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_request_buffering off;
            proxy_pass http://app;
        }}
    }}
}}
"""

PROXY_HEADERS = """
proxy_set_header Connection "";
proxy_set_header Host $host;
proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
"""


def nginx_binary() -> str:
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    found = shutil.which("nginx", path=search)
    assert found, "nginx is not installed (scripts/test.sh installs it)"
    return found


class Nginx:
    def __init__(self, directory: Path, app_sock: Path) -> None:
        sock = directory / "nginx.sock"
        (directory / "proxy_headers.conf").write_text(PROXY_HEADERS)
        self._launch(directory, sock, NGINX_CONF.format(d=directory, app_sock=app_sock, nginx_sock=sock))

    def _launch(self, directory: Path, sock: Path, main_conf: str) -> None:
        """Starts nginx with `main_conf` as its nginx.conf in `directory`; returns once it
        accepts connections on the unix socket `sock`."""
        self.dir = directory
        self.sock = sock
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (directory / sub).mkdir(exist_ok=True)
        conf = directory / "nginx.conf"
        conf.write_text(main_conf)
        self.proc = subprocess.Popen(
            [nginx_binary(), "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._ready, 20, message=f"nginx listening on {self.sock}")

    def _ready(self) -> bool:
        assert self.proc.poll() is None, f"nginx exited {self.proc.returncode}:\n{self.error_log()}"
        try:
            with self.connect():
                return True
        except OSError:
            return False

    def error_log(self) -> str:
        out = self.proc.stdout.read().decode() if self.proc.poll() is not None and self.proc.stdout else ""
        path = self.dir / "error.log"
        return out + (path.read_text() if path.exists() else "")

    def connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        try:
            s.connect(str(self.sock))
        except OSError:
            s.close()
            raise
        return s

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


@pytest.fixture
def proxied(run_server, worker_args, tmp_path):
    app_sock = tmp_path / "app.sock"
    server = run_server(*worker_args, "-w", "2", "-b", f"unix:{app_sock}", "proxy_app:app")
    nginx = Nginx(tmp_path, app_sock)
    yield nginx, server
    nginx.stop()


def request(sock: socket.socket, reader: SocketReader, method: str, path: str, body: bytes = b"",
            headers: dict[str, str] | None = None, close: bool = False) -> tuple[int, dict, dict]:
    hdrs = {"Host": "example.test"}
    if body:
        hdrs["Content-Length"] = str(len(body))
    if close:
        hdrs["Connection"] = "close"
    hdrs.update(headers or {})
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    sock.sendall(head.encode("latin-1") + body)
    status, resp_headers, resp_body, _ = reader.response()
    info = json.loads(resp_body) if status == 200 else {"raw": resp_body.decode("latin-1")}
    return status, resp_headers, info


def one(nginx: Nginx, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None):
    with nginx.connect() as s:
        return request(s, SocketReader(s), method, path, body, headers, close=True)


def test_get_through_nginx(proxied):
    nginx, _ = proxied
    status, headers, info = one(nginx, "GET", "/some/path?x=1&y=%20")
    assert status == 200, info
    assert headers["content-type"] == "application/json"
    assert info["REQUEST_METHOD"] == "GET"
    assert info["PATH_INFO"] == "/some/path"
    assert info["QUERY_STRING"] == "x=1&y=%20"
    assert info["wsgi.url_scheme"] == "http"
    assert info["headers"]["HTTP_HOST"] == "example.test"
    assert info["headers"]["HTTP_X_FORWARDED_PROTO"] == "http"
    # nginx's $remote_addr for a unix-socket client is "unix:".
    assert info["headers"]["HTTP_X_FORWARDED_FOR"] == "unix:"


def test_post_body_through_nginx(proxied):
    nginx, _ = proxied
    payload = os.urandom(300_000)
    status, _, info = one(nginx, "POST", "/upload", payload, {"Content-Type": "application/octet-stream"})
    assert status == 200, info
    assert info["REQUEST_METHOD"] == "POST"
    assert info["CONTENT_LENGTH"] == str(len(payload))
    assert info["body_len"] == len(payload)
    assert info["body_sha256"] == hashlib.sha256(payload).hexdigest()


@pytest.mark.parametrize("prefix", ["/", "/unbuffered/"], ids=["buffered", "unbuffered"])
def test_chunked_upload_through_nginx(proxied, prefix):
    nginx, _ = proxied
    chunks = [os.urandom(n) for n in (1, 100, 4096, 65536, 7)]
    payload = b"".join(chunks)
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    head = (f"POST {prefix}chunked HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n"
            "Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n").encode()
    with nginx.connect() as s:
        s.sendall(head)
        for piece in (encoded[:10], encoded[10:5000], encoded[5000:]):
            s.sendall(piece)
        status, _, body, _ = SocketReader(s).response()
    info = json.loads(body)
    assert status == 200, info
    assert info["body_len"] == len(payload)
    assert info["body_sha256"] == hashlib.sha256(payload).hexdigest()
    if prefix == "/":
        # nginx buffered the whole body and sent it on with a Content-Length. (Under
        # /unbuffered/ it streams it on chunked; the server may or may not show that in environ.)
        assert info["CONTENT_LENGTH"] == str(len(payload)), info


def test_keep_alive_client_and_upstream(proxied):
    nginx, _ = proxied
    with nginx.connect() as s:
        reader = SocketReader(s)
        for i in range(12):
            body = f"request {i}".encode()
            status, headers, info = request(s, reader, "POST", f"/ka/{i}", body)
            assert status == 200, info
            assert "close" not in headers.get("connection", "").lower()
            assert info["PATH_INFO"] == f"/ka/{i}"
            assert info["body_len"] == len(body)
            # nginx speaks HTTP/1.1 upstream with keep-alive (no Connection header sent).
            assert info["SERVER_PROTOCOL"] == "HTTP/1.1"
            assert "HTTP_CONNECTION" not in info["headers"]


def test_forwarded_proto_https_sets_url_scheme(proxied):
    nginx, _ = proxied
    status, _, info = one(nginx, "GET", "/secure/page")
    assert status == 200, info
    assert info["headers"]["HTTP_X_FORWARDED_PROTO"] == "https"
    # The peer is a unix socket, trusted like Gunicorn trusts it for forwarded headers.
    assert info["wsgi.url_scheme"] == "https"


def test_spoofed_forwarded_proto_from_nginx_location_is_what_counts(proxied):
    # nginx overwrites the client's X-Forwarded-Proto with its own $scheme (http).
    nginx, _ = proxied
    status, _, info = one(nginx, "GET", "/plain", headers={"X-Forwarded-Proto": "https"})
    assert status == 200, info
    assert info["headers"]["HTTP_X_FORWARDED_PROTO"] == "http"
    assert info["wsgi.url_scheme"] == "http"
