"""TLS on the listeners (`certfile`, `keyfile`, `ca_certs`, `cert_reqs`, `ciphers`).

Certificates are made per test with trustme. Clients: Python's `ssl`, httpx, curl, and a real
nginx proxying with `proxy_pass https://`.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import trustme
from conftest import SocketReader, booted_worker_pids, run_command, wait_until
from test_nginx import NGINX_CONF, Nginx

pytestmark = pytest.mark.timeout(120)

APP = "t_apps:app"
PLAIN_HTTP_ANSWER = b"The plain HTTP request was sent to HTTPS port"


class Certs:
    """A CA, a server certificate for localhost and 127.0.0.1, and a client certificate, as
    PEM files in `directory`."""

    def __init__(self, directory: Path, name: str = "tls") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        self.server = self.ca.issue_cert("localhost", "127.0.0.1")
        self.client = self.ca.issue_cert("client@example.org", common_name="client@example.org")
        self.ca_file = directory / f"{name}-ca.pem"
        self.cert_file = directory / f"{name}-cert.pem"
        self.key_file = directory / f"{name}-key.pem"
        self.client_cert = directory / f"{name}-client-cert.pem"
        self.client_key = directory / f"{name}-client-key.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.server.private_key_pem.write_to_path(str(self.key_file))
        with open(self.cert_file, "wb") as f:
            for blob in self.server.cert_chain_pems:
                f.write(blob.bytes())
        self.client.cert_chain_pems[0].write_to_path(str(self.client_cert))
        self.client.private_key_pem.write_to_path(str(self.client_key))

    def args(self) -> list[str]:
        return ["--certfile", str(self.cert_file), "--keyfile", str(self.key_file)]

    def client_context(self, *, client_cert: bool = False, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if client_cert:
            ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        if maximum is not None:
            ctx.maximum_version = maximum
        return ctx


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs(tmp_path / "certs")


def tls_connect(srv, ctx: ssl.SSLContext, server_name: str = "localhost") -> ssl.SSLSocket:
    raw = srv.connect()
    return ctx.wrap_socket(raw, server_hostname=server_name)


def request(sock: socket.socket, path: str = "/", *, close: bool = False, body: bytes = b"",
            method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n"
    if close:
        head += "Connection: close\r\n"
    sock.sendall(head.encode() + b"\r\n" + body)
    status, headers, data, _ = SocketReader(sock, timeout=30).response()
    return status, headers, data


def environ_over_tls(srv, ctx: ssl.SSLContext, server_name: str = "localhost") -> dict:
    with tls_connect(srv, ctx, server_name) as s:
        status, _, data = request(s, close=True)
    assert status == 200, data
    return json.loads(data)


def test_https_keeps_connections_alive_and_tells_the_app(run_server, certs, worker_args):
    srv = run_server(*certs.args(), *worker_args, APP)
    assert srv.address.startswith("https://127.0.0.1:")
    with tls_connect(srv, certs.client_context()) as s:
        for _ in range(3):
            status, _, data = request(s)
            assert status == 200
        env = json.loads(data)
        assert s.version() == "TLSv1.3"
    assert env["wsgi.url_scheme"] == "https"
    assert env["SSL_PROTOCOL"] == "TLSv1.3"
    assert env["SSL_CIPHER"].startswith("TLS13_")
    assert env["SSL_CLIENT_VERIFY"] == "NONE"
    assert env["SSL_TLS_SNI"] == "localhost"
    assert "SSL_CLIENT_CERT" not in env and "HTTPS" not in env


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls12_and_tls13_are_negotiated(run_server, certs, version):
    srv = run_server(*certs.args(), APP)
    ctx = certs.client_context(maximum=version)
    expected = version.name.replace("v1_", "v1.")
    with tls_connect(srv, ctx) as s:
        assert s.version() == expected
        status, _, data = request(s, close=True)
    assert status == 200
    assert json.loads(data)["SSL_PROTOCOL"] == expected


def test_one_certificate_whatever_the_server_name(run_server, certs):
    srv = run_server(*certs.args(), APP)
    ctx = certs.client_context()
    ctx.check_hostname = False
    with tls_connect(srv, ctx, server_name="other.example") as s:
        der = s.getpeercert(binary_form=True)
        status, _, data = request(s, close=True)
    assert status == 200 and json.loads(data)["SSL_TLS_SNI"] == "other.example"
    assert der == ssl.PEM_cert_to_DER_cert(certs.server.cert_chain_pems[0].bytes().decode())


def test_alpn_offers_http11(run_server, certs):
    srv = run_server(*certs.args(), APP)
    ctx = certs.client_context()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with tls_connect(srv, ctx) as s:
        assert s.selected_alpn_protocol() == "http/1.1"
        assert request(s, close=True)[0] == 200


def test_alpn_h2_serves_http2_over_tls(run_server, certs, worker_args):
    srv = run_server(*certs.args(), "--http-protocols", "h2,h1", *worker_args, APP)
    ctx = certs.client_context()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with tls_connect(srv, ctx) as s:
        assert s.selected_alpn_protocol() == "h2"
    port = srv.port
    with httpx.Client(verify=certs.client_context(), http1=False, http2=True, timeout=20) as client:
        for _ in range(3):
            r = client.get(f"https://localhost:{port}/")
            assert r.status_code == 200 and r.http_version == "HTTP/2"
            env = r.json()
            assert env["wsgi.url_scheme"] == "https" and env["SSL_PROTOCOL"] == "TLSv1.3"
        body = os.urandom(300_000)
        r = client.post(f"https://localhost:{port}/upload", content=body)
        assert r.status_code == 200 and r.http_version == "HTTP/2"
        assert hashlib.sha256(body).hexdigest() in r.text
    out = subprocess.run(
        ["curl", "-sS", "--http2", "--max-time", "20", "--cacert", str(certs.ca_file),
         "-o", "/dev/null", "-w", "%{http_version}", "--resolve", f"localhost:{port}:127.0.0.1",
         f"https://localhost:{port}/"],
        capture_output=True, timeout=30, check=True,
    )
    assert out.stdout == b"2"
    load = subprocess.run(
        ["h2load", "-n", "200", "-c", "4", "-m", "5", f"https://127.0.0.1:{port}/"],
        capture_output=True, timeout=60, text=True,
    )
    assert "200 succeeded, 0 failed, 0 errored" in load.stdout, load.stdout


def test_http11_clients_still_served_when_h2_is_offered(run_server, certs):
    srv = run_server(*certs.args(), "--http-protocols", "h2,h1", APP)
    ctx = certs.client_context()
    ctx.set_alpn_protocols(["http/1.1"])
    with tls_connect(srv, ctx) as s:
        assert s.selected_alpn_protocol() == "http/1.1"
        assert request(s, close=True)[0] == 200
    with tls_connect(srv, certs.client_context()) as s:
        assert s.selected_alpn_protocol() is None
        assert request(s, close=True)[0] == 200


def test_asgi_scope_says_https_over_tls(run_server, certs):
    srv = run_server(*certs.args(), "-k", "asgi", "asgi_apps:app")
    with httpx.Client(verify=certs.client_context(), timeout=20) as client:
        scope = client.get(f"https://localhost:{srv.port}/scope").json()
    assert scope["scheme"] == "https" and scope["type"] == "http"


def test_curl_and_httpx(run_server, certs):
    srv = run_server(*certs.args(), APP)
    port = srv.port
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "--cacert", str(certs.ca_file),
         "--resolve", f"localhost:{port}:127.0.0.1", f"https://localhost:{port}/"],
        capture_output=True, timeout=30, check=True,
    )
    assert json.loads(out.stdout)["wsgi.url_scheme"] == "https"
    with httpx.Client(verify=certs.client_context(), timeout=20) as client:
        for _ in range(2):
            r = client.get(f"https://localhost:{port}/")
            assert r.status_code == 200 and r.json()["SERVER_PORT"] == str(port)


def curl_client_cert(certs: Certs, port: int, *, with_cert: bool) -> subprocess.CompletedProcess:
    cmd = ["curl", "-sS", "--max-time", "20", "--cacert", str(certs.ca_file),
           "--resolve", f"localhost:{port}:127.0.0.1"]
    if with_cert:
        cmd += ["--cert", str(certs.client_cert), "--key", str(certs.client_key)]
    return subprocess.run([*cmd, f"https://localhost:{port}/"], capture_output=True, timeout=30)


def test_required_client_certificate(run_server, certs):
    srv = run_server(*certs.args(), "--ca-certs", str(certs.ca_file), "--cert-reqs", "2", APP)
    res = curl_client_cert(certs, srv.port, with_cert=True)
    assert res.returncode == 0, res.stderr
    env = json.loads(res.stdout)
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
    # RFC 4514 order: the last RDN (the CN trustme adds after O and OU) first.
    assert env["SSL_CLIENT_S_DN"].startswith("CN=client@example.org,OU=Testing cert"), env["SSL_CLIENT_S_DN"]
    assert env["SSL_CLIENT_I_DN"] and env["SSL_CLIENT_I_DN"] != env["SSL_CLIENT_S_DN"]
    pem = certs.client.cert_chain_pems[0].bytes().decode()
    assert ssl.PEM_cert_to_DER_cert(env["SSL_CLIENT_CERT"]) == ssl.PEM_cert_to_DER_cert(pem)
    # Without a certificate: refused in the handshake (curl) or at the first read (TLS 1.3
    # reports the refusal after the client's side of the handshake is done).
    res = curl_client_cert(certs, srv.port, with_cert=False)
    assert res.returncode != 0 and not res.stdout
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with tls_connect(srv, certs.client_context()) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            if not s.recv(1024):
                raise ConnectionError("closed")


def test_optional_client_certificate(run_server, certs, tmp_path):
    srv = run_server(*certs.args(), "--ca-certs", str(certs.ca_file), "--cert-reqs", "1", APP)
    assert environ_over_tls(srv, certs.client_context())["SSL_CLIENT_VERIFY"] == "NONE"
    env = environ_over_tls(srv, certs.client_context(client_cert=True))
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS" and "client@example.org" in env["SSL_CLIENT_S_DN"]
    # A certificate from a CA not in ca_certs is refused, even when optional.
    stranger = Certs(tmp_path / "stranger", "stranger")
    ctx = certs.client_context()
    ctx.load_cert_chain(str(stranger.client_cert), str(stranger.client_key))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with tls_connect(srv, ctx) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            if not s.recv(1024):
                raise ConnectionError("closed")


def test_client_certificate_not_asked_for_by_default(run_server, certs):
    srv = run_server(*certs.args(), "--ca-certs", str(certs.ca_file), APP)
    env = environ_over_tls(srv, certs.client_context(client_cert=True))
    assert env["SSL_CLIENT_VERIFY"] == "NONE" and "SSL_CLIENT_CERT" not in env


def test_ciphers_choose_the_tls12_suites(run_server, certs):
    # trustme's keys are ECDSA.
    srv = run_server(*certs.args(), "--ciphers", "ECDHE-ECDSA-CHACHA20-POLY1305", APP)
    ctx = certs.client_context(maximum=ssl.TLSVersion.TLSv1_2)
    with tls_connect(srv, ctx) as s:
        assert s.cipher()[0] == "ECDHE-ECDSA-CHACHA20-POLY1305"
        assert request(s, close=True)[0] == 200
    ctx = certs.client_context(maximum=ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    with pytest.raises(ssl.SSLError):
        tls_connect(srv, ctx).close()
    # TLS 1.3's suites are not governed by the string, as with OpenSSL.
    assert environ_over_tls(srv, certs.client_context())["SSL_PROTOCOL"] == "TLSv1.3"


def test_server_order_picks_the_suites(run_server, certs):
    # OpenSSL's clients list AES-256-GCM first; the server's order puts the cheaper TLS 1.3
    # suite first, and the `ciphers` order decides among TLS 1.2 suites, as with Gunicorn.
    srv = run_server(*certs.args(), "--ciphers",
                     "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384", APP)
    with tls_connect(srv, certs.client_context()) as s:
        assert s.cipher()[0] == "TLS_AES_128_GCM_SHA256"
        assert request(s, close=True)[0] == 200
    ctx = certs.client_context(maximum=ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256")
    with tls_connect(srv, ctx) as s:
        assert s.cipher()[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"


def config_error(args: list[str], expected: str) -> None:
    """The start and `--check-config` both fail with exit 1 and one line starting `expected`."""
    for extra in ([], ["--check-config"]):
        res = run_command([*extra, *args, APP])
        assert res.returncode == 1, res.stdout
        lines = res.stdout.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: {expected}"), res.stdout
        assert "Traceback" not in res.stdout and "panicked" not in res.stdout


def test_bad_certificate_settings_stop_the_start(certs, tmp_path):
    missing = tmp_path / "missing.pem"
    config_error(["--certfile", str(missing), "--keyfile", str(certs.key_file)],
                 f"certfile = '{missing}': cannot read it: No such file or directory")
    config_error(["--certfile", str(certs.cert_file), "--keyfile", str(missing)],
                 f"keyfile = '{missing}': cannot read it: No such file or directory")
    config_error(["--certfile", str(certs.cert_file), "--keyfile", str(certs.cert_file)],
                 f"keyfile = '{certs.cert_file}': no PEM private key in it")
    config_error(["--certfile", str(certs.key_file), "--keyfile", str(certs.key_file)],
                 f"certfile = '{certs.key_file}': no PEM certificate in it")
    other = Certs(tmp_path / "other", "other")
    config_error(["--certfile", str(certs.cert_file), "--keyfile", str(other.key_file)],
                 f"keyfile = '{other.key_file}': the key does not match the certificate in "
                 f"'{certs.cert_file}'")
    config_error([*certs.args(), "--cert-reqs", "2"], "cert_reqs = 2: client certificates are checked against "
                 "ca_certs, which is not set")
    config_error([*certs.args(), "--ca-certs", str(missing), "--cert-reqs", "1"],
                 f"ca_certs = '{missing}': cannot read it")
    config_error([*certs.args(), "--cert-reqs", "3", "--ca-certs", str(certs.ca_file)],
                 "cert_reqs = 3: expected 0 (none), 1 (optional) or 2 (required)")
    config_error([*certs.args(), "--ciphers", "RC4-SHA:!ALL"],
                 "ciphers = 'RC4-SHA:!ALL': names no cipher suite that can be offered")


def test_the_certificate_may_hold_the_key(run_server, certs, tmp_path):
    both = tmp_path / "both.pem"
    both.write_bytes(certs.cert_file.read_bytes() + certs.key_file.read_bytes())
    srv = run_server("--certfile", str(both), APP)
    assert environ_over_tls(srv, certs.client_context())["wsgi.url_scheme"] == "https"


def test_ssl_version_is_ignored_with_gunicorns_warning(run_server, certs):
    srv = run_server(*certs.args(), "--ssl-version", "TLSv1_2", APP)
    srv.wait_for_line(r"^Warning: option `ssl_version` is deprecated and it is ignored\. "
                      r"Use ssl_context instead\.$")
    assert environ_over_tls(srv, certs.client_context())["SSL_PROTOCOL"] == "TLSv1.3"


def test_plain_http_to_the_tls_port_gets_a_plain_400(run_server, certs, tmp_path):
    srv = run_server(*certs.args(), APP)
    with srv.connect() as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        reader = SocketReader(s, timeout=10)
        status, _, body, _ = reader.response()
        assert status == 400 and PLAIN_HTTP_ANSWER in body
        assert reader.read_to_close() == b""


def client_hello(certs: Certs) -> bytes:
    """The bytes of a real ClientHello, made without a connection."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = certs.client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("sent", ["nothing", "half a ClientHello"])
def test_stalled_handshake_is_closed_within_the_header_timeout(run_server, certs, sent):
    srv = run_server(*certs.args(), "--header-timeout", "2", APP)
    hello = client_hello(certs)
    with srv.connect(timeout=15) as s:
        started = time.monotonic()
        if sent != "nothing":
            s.sendall(hello[: len(hello) // 2])
        assert s.recv(1024) == b""
        elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 6, elapsed
    # The worker goes on serving.
    assert environ_over_tls(srv, certs.client_context())["wsgi.url_scheme"] == "https"


def test_file_wrapper_over_tls_sends_the_file_from_rust(run_server, certs, tmp_path, worker_args):
    data = os.urandom(5 * 1024 * 1024 + 123)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    srv = run_server(*certs.args(), *worker_args, "--keep-alive", "30", "-e", f"FILE={path}", APP)
    with tls_connect(srv, certs.client_context()) as s:
        for _ in range(2):
            status, headers, body = request(s, "/file")
            assert status == 200 and len(body) == len(data)
            assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()


def test_streamed_response_larger_than_the_socket_buffers(run_server, certs, worker_args):
    """The writes block on a full socket and resume on the session (from the application's
    thread with gthread), and every byte arrives once, in order. (The client may take longer
    to read it than the default --keep-alive allows after the server's last write.)"""
    srv = run_server(*certs.args(), *worker_args, "--keep-alive", "30", APP)
    with tls_connect(srv, certs.client_context()) as s:
        s.sendall(b"GET /gen HTTP/1.1\r\nHost: localhost\r\n\r\n")
        status, _, body = SocketReader(s, timeout=30).response()[:3]
        assert status == 200 and len(body) == 251 * 256 * 128
        assert body == bytes(i % 251 for i in range(251)) * (len(body) // 251)
        assert request(s, close=True)[0] == 200


def test_large_upload_over_tls(run_server, certs, worker_args):
    body = os.urandom(3 * 1024 * 1024 + 7)
    srv = run_server(*certs.args(), *worker_args, APP)
    with tls_connect(srv, certs.client_context()) as s:
        status, _, answer = request(s, "/upload", method="POST", body=body)
        assert status == 200
        assert answer.decode() == f"{len(body)} {hashlib.sha256(body).hexdigest()}"
        assert request(s, close=True)[0] == 200


def test_hup_reloads_the_certificate_for_new_connections(run_server, certs, tmp_path):
    srv = run_server(*certs.args(), "--keep-alive", "60", "--graceful-timeout", "60", APP)
    ctx = certs.client_context()
    old = tls_connect(srv, ctx)
    old_der = old.getpeercert(binary_form=True)
    assert request(old)[0] == 200
    first_pids = wait_until(lambda: booted_worker_pids(srv), 30, message="the first worker")
    # Same CA (clients keep trusting it), a new certificate and key, written in place.
    renewed = certs.ca.issue_cert("localhost", "127.0.0.1")
    renewed.private_key_pem.write_to_path(str(certs.key_file))
    with open(certs.cert_file, "wb") as f:
        for blob in renewed.cert_chain_pems:
            f.write(blob.bytes())
    new_der = ssl.PEM_cert_to_DER_cert(renewed.cert_chain_pems[0].bytes().decode())
    assert new_der != old_der
    srv.signal(signal.SIGHUP)
    wait_until(lambda: len(booted_worker_pids(srv)) > len(first_pids), 30, message="a new worker")

    def served_new() -> bool:
        with tls_connect(srv, ctx) as s:
            der = s.getpeercert(binary_form=True)
            assert request(s, close=True)[0] == 200
        return der == new_der

    wait_until(served_new, 30, message="the new certificate on a new connection")
    # The connection made before the HUP goes on with its own session.
    status, headers, _ = request(old)
    assert status == 200
    old.close()


def test_broken_files_at_hup_keep_the_current_certificate(run_server, certs):
    srv = run_server(*certs.args(), APP)
    assert environ_over_tls(srv, certs.client_context())["wsgi.url_scheme"] == "https"
    first_pids = wait_until(lambda: booted_worker_pids(srv), 30, message="the first worker")
    certs.key_file.write_text("not a key\n")
    srv.signal(signal.SIGHUP)
    srv.wait_for_line(r"Reloading TLS failed, keeping the current certificates: keyfile = ")
    wait_until(lambda: len(booted_worker_pids(srv)) > len(first_pids), 30, message="a new worker")
    assert environ_over_tls(srv, certs.client_context())["wsgi.url_scheme"] == "https"


# test_nginx.py's main config (foreground, files in the test's directory) up to its own proxy
# settings, then a server proxying to ferrocorn over TLS, verifying its certificate.
NGINX_TLS_UPSTREAM = NGINX_CONF.split("    client_max_body_size")[0] + """
    server {{
        listen unix:{nginx_sock};
        location / {{
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass https://127.0.0.1:{port};
            proxy_ssl_server_name on;
            proxy_ssl_name localhost;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_session_reuse on;
        }}
    }}
}}
"""


class NginxTls(Nginx):
    def __init__(self, directory: Path, port: int, ca: Path) -> None:
        sock = directory / "nginx.sock"
        self._launch(directory, sock, NGINX_TLS_UPSTREAM.format(d=directory, nginx_sock=sock, port=port, ca=ca))


def test_nginx_proxies_with_proxy_pass_https(run_server, certs, tmp_path):
    srv = run_server(*certs.args(), "-k", "gthread", "--threads", "4", APP)
    directory = tmp_path / "nginx"
    directory.mkdir()
    nginx = NginxTls(directory, srv.port, certs.ca_file)
    try:
        for _ in range(3):
            with nginx.connect() as s:
                status, _, data = request(s, close=True)
            assert status == 200, nginx.error_log()
            env = json.loads(data)
            assert env["wsgi.url_scheme"] == "https" and env["SSL_TLS_SNI"] == "localhost"
    finally:
        nginx.stop()
