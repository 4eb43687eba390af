"""The deployment recipes of docs/deploy.md, run from the very files it shows (docs/deploy/,
docs/systemd/), with only addresses, ports and paths substituted: nginx in front over a unix
socket and over TCP, the systemd units under `systemd-socket-activate`, the Dockerfile's pip
steps and CMD, the Kubernetes manifest's command and probes."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import (
    SERVER_COMMAND,
    TESTS_DIR,
    Server,
    SocketReader,
    booted_worker_pids,
    connect_to,
    server_env,
    stop_all,
    wait_until,
)
from test_nginx import NGINX_CONF, Nginx
from test_systemd import Notifications

pytestmark = pytest.mark.timeout(120)

REPO = TESTS_DIR.parent
DEPLOY = REPO / "docs" / "deploy"
SYSTEMD = REPO / "docs" / "systemd"


def tool(name: str, package: str) -> str:
    found = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    assert found, f"{name} is not installed (Debian package {package})"
    return found


def render(text: str, substitutions: dict[str, str]) -> str:
    """`text` with each key replaced; a key missing from the recipe fails the test, so a
    changed recipe cannot silently stop being the thing tested."""
    for old, new in substitutions.items():
        assert old in text, f"{old!r} is no longer in the recipe"
        text = text.replace(old, new)
    return text


def http_request(sock: socket.socket, path: str, headers: dict[str, str]) -> tuple[int, dict, bytes]:
    head = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock.sendall((head + "Connection: close\r\n\r\n").encode("latin-1"))
    status, resp_headers, body, _ = SocketReader(sock).response()
    return status, resp_headers, body


# --- docs/deploy.md shows the files as they are -------------------------------------------------

SHOWN = re.compile(r"^`(docs/[^`]+)`:\n\n```[a-z]*\n(.*?)^```$", re.M | re.S)
LINK = re.compile(r"\]\(([^)#\s]*)(?:#([^)\s]+))?\)")


def test_deploy_md_shows_every_recipe_file_unchanged():
    shown = SHOWN.findall((REPO / "docs" / "deploy.md").read_text())
    files = sorted(str(p.relative_to(REPO)) for d in (DEPLOY, SYSTEMD) for p in d.iterdir() if p.is_file())
    assert sorted(path for path, _ in shown) == files
    for path, body in shown:
        assert body == (REPO / path).read_text(), f"docs/deploy.md shows an outdated {path}"


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    prose = re.sub(r"^```.*?^```$", "", markdown, flags=re.M | re.S)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.*)$", prose, re.M)}


@pytest.mark.parametrize("page", ["README.md", "docs/deploy.md", "docs/differences.md", "docs/migrating.md",
                                  "docs/operations.md"])
def test_links_between_pages_resolve(page):
    source = REPO / page
    text = source.read_text()
    for target, anchor in LINK.findall(text):
        if target.startswith(("http://", "https://")):
            continue
        path = (source.parent / target) if target else source
        assert path.exists(), f"{page} links to a missing {target}"
        if anchor:
            assert anchor in anchors(path.read_text()), f"{page} links to a missing #{anchor} in {path.name}"


# --- nginx ----------------------------------------------------------------------------------------

# test_nginx.py's main config (foreground, files in the test's directory) up to its own
# proxy settings, then the site file.
MAIN_CONF = NGINX_CONF.split("    client_max_body_size")[0] + "    include {d}/site.conf;\n}}\n"


def documented_commands(conf: str) -> dict[str, list[str]]:
    """The ferrocorn command lines in the comments of nginx.conf, keyed by listener kind."""
    commands = [shlex.split(m) for m in re.findall(r"^#\s+(ferrocorn .*)$", conf, re.M)]
    by_kind = {("unix" if any(a.startswith("unix:") for a in c) else "tcp"): c for c in commands}
    assert sorted(by_kind) == ["tcp", "unix"], commands
    return by_kind


class SiteNginx(Nginx):
    """nginx running docs/deploy/nginx.conf (rendered), included in a minimal main config."""

    def __init__(self, directory: Path, site: str) -> None:
        (directory / "site.conf").write_text(site)
        self._launch(directory, directory / "https.sock", MAIN_CONF.format(d=directory))


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "example.com.pem", directory / "example.com.key"
    subprocess.run([tool("openssl", "openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=example.com", "-addext", "subjectAltName=DNS:example.com",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class Deployment:
    """ferrocorn started with one of nginx.conf's documented commands, nginx with the file."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.server: Server | None = None
        self.nginx: SiteNginx | None = None

    def start(self, kind: str, allow_ips: str | None = None) -> Deployment:
        tmp = self.tmp
        conf = (DEPLOY / "nginx.conf").read_text()
        command = documented_commands(conf)[kind]
        assert command[0] == "ferrocorn"
        subs = {"-w 4": "-w 2", "myapp.wsgi:application": "proxy_app:app"}
        if kind == "unix":
            subs["unix:/run/ferrocorn.sock"] = f"unix:{tmp}/app.sock"
        else:
            subs["127.0.0.1:8000"] = "127.0.0.1:0"
        if allow_ips is not None:
            subs["--forwarded-allow-ips 127.0.0.1"] = f"--forwarded-allow-ips {allow_ips}"
        args = shlex.split(render(shlex.join(command[1:]), subs))
        self.server = Server(args, tmp, server_env())
        self.server.wait_ready()
        upstream = (f"server unix:{tmp}/app.sock;" if kind == "unix"
                    else f"server 127.0.0.1:{self.server.port};")
        self.cert, key = self_signed_certificate(tmp)
        static = tmp / "static"
        static.mkdir()
        (static / "hello.txt").write_text("a static file\n")
        site = render(conf, {
            "listen 80;": f"listen unix:{tmp}/http.sock;",
            "listen 443 ssl http2;": f"listen unix:{tmp}/https.sock ssl http2;",
            "/etc/ssl/certs/example.com.pem": str(self.cert),
            "/etc/ssl/private/example.com.key": str(key),
            "/srv/app/static/": f"{static}/",
            "server unix:/run/ferrocorn.sock;": upstream,
        })
        self.nginx = SiteNginx(tmp, site)
        return self

    def https(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
        context = ssl.create_default_context(cafile=str(self.cert))
        raw = self.nginx.connect()
        with context.wrap_socket(raw, server_hostname="example.com") as tls:
            return http_request(tls, path, {"Host": "example.com", **(headers or {})})

    def http(self, path: str) -> tuple[int, dict, bytes]:
        with connect_to(f"unix:{self.tmp}/http.sock") as s:
            return http_request(s, path, {"Host": "example.com"})

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        if self.server is not None:
            stop_all([self.server])


@pytest.fixture
def deployment(tmp_path):
    site = Deployment(tmp_path)
    yield site.start
    site.stop()


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_nginx_conf_passes_https_and_client_address_on(deployment, kind):
    site = deployment(kind)
    status, _, body = site.https("/some/path?x=1", {"X-Forwarded-For": "203.0.113.7"})
    assert status == 200, body
    info = json.loads(body)
    assert info["PATH_INFO"] == "/some/path" and info["QUERY_STRING"] == "x=1"
    assert info["headers"]["HTTP_HOST"] == "example.com"
    assert info["headers"]["HTTP_X_FORWARDED_PROTO"] == "https"
    # nginx appends its client's address ("unix:" for a client on a unix socket).
    assert info["headers"]["HTTP_X_FORWARDED_FOR"] == "203.0.113.7, unix:"
    # The proxy is trusted: a unix-socket peer, or 127.0.0.1 in --forwarded-allow-ips.
    assert info["wsgi.url_scheme"] == "https"
    assert info["REMOTE_ADDR"] == ("" if kind == "unix" else "127.0.0.1")
    # Upstream keep-alive: nginx's `Connection ""` reaches the server as no header at all.
    assert "HTTP_CONNECTION" not in info["headers"]

    status, headers, _ = site.http("/page")
    assert (status, headers["location"]) == (301, "https://example.com/page")
    status, _, body = site.https("/static/hello.txt")
    assert (status, body) == (200, b"a static file\n")


def test_nginx_over_tcp_untrusted_proxy_does_not_make_https(deployment):
    site = deployment("tcp", allow_ips="192.0.2.1")
    status, _, body = site.https("/")
    assert status == 200, body
    info = json.loads(body)
    assert info["headers"]["HTTP_X_FORWARDED_PROTO"] == "https"
    assert info["wsgi.url_scheme"] == "http"


# --- systemd --------------------------------------------------------------------------------------


def unit_values(text: str, key: str) -> list[str]:
    """The values of `key=` lines in a unit file (comments skipped)."""
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{key}=")]


def unit_value(text: str, key: str) -> str:
    values = unit_values(text, key)
    assert len(values) == 1, f"{key}= should be set once: {values}"
    return values[0]


def option(args: list[str], name: str, default: str) -> str:
    """The value of `--name VALUE` or `--name=VALUE` in a command line."""
    for i, arg in enumerate(args):
        if arg == name:
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return default


def rendered_units(tmp: Path) -> tuple[str, str, Path]:
    """The socket and service units, with their paths moved into `tmp`."""
    executable = shutil.which(SERVER_COMMAND[0])
    assert executable, SERVER_COMMAND
    sock = tmp / "ferrocorn.sock"
    socket_unit = render((SYSTEMD / "ferrocorn.socket").read_text(), {"/run/ferrocorn.sock": str(sock)})
    service = render((SYSTEMD / "ferrocorn.service").read_text(), {
        "/srv/app/venv/bin/ferrocorn": shlex.join([executable, *SERVER_COMMAND[1:]]),
        "/srv/app": str(tmp),
    })
    return socket_unit, service, sock


def test_systemd_units_verify(tmp_path):
    socket_unit, service, _ = rendered_units(tmp_path)
    (tmp_path / "ferrocorn.socket").write_text(socket_unit)
    (tmp_path / "ferrocorn.service").write_text(service)
    result = subprocess.run([tool("systemd-analyze", "systemd"), "verify", str(tmp_path / "ferrocorn.socket"),
                             str(tmp_path / "ferrocorn.service")],
                            capture_output=True, text=True, timeout=60)
    # Unknown keys and bad values are only warnings (exit 0): any output is a finding.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_systemd_units_run_with_socket_activation(tmp_path):
    socket_unit, service, sock = rendered_units(tmp_path)
    listen = unit_value(socket_unit, "ListenStream")
    assert listen == str(sock)
    assert unit_value(service, "Type") == "notify"
    exec_start = shlex.split(unit_value(service, "ExecStart"))
    args = render(shlex.join(exec_start[len(SERVER_COMMAND):]),
                  {"myapp.wsgi:application": "p_apps:app"})
    graceful = float(option(exec_start, "--graceful-timeout", "30"))
    stop_timeout = float(unit_value(service, "TimeoutStopSec"))
    assert stop_timeout > graceful, "systemd would kill requests the graceful stop is finishing"

    notify = Notifications(str(tmp_path / "notify.sock"))
    activate = [tool("systemd-socket-activate", "systemd"), "-l", listen, "-E", f"NOTIFY_SOCKET={tmp_path}/notify.sock"]
    for name in ("PYTHONPATH", "PYTHONUNBUFFERED"):  # systemd too starts from a bare environment
        activate += ["-E", f"{name}={server_env()[name]}"]
    srv = Server(shlex.split(args), Path(unit_value(service, "WorkingDirectory")), server_env(),
                 command=activate + SERVER_COMMAND)
    try:
        wait_until(sock.exists, 20, message="systemd-socket-activate listening")
        # Connected before the server runs: the connection waits in the socket, as under systemd.
        early = connect_to(f"unix:{sock}")
        early.sendall(b"GET /env/LISTEN_FDS HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        notify.wait_for("READY=1")
        status, _, body, _ = SocketReader(early).response()
        assert (status, body) == (200, b"")
        early.close()

        reload_cmd = shlex.split(render(unit_value(service, "ExecReload"), {"$MAINPID": str(srv.proc.pid)}))
        subprocess.run(reload_cmd, check=True, timeout=10)
        reloading = notify.messages.index(notify.wait_for("RELOADING=1"))
        wait_until(lambda: any("READY=1" in m for m in notify.messages[reloading + 1:]), 30,
                   message="READY=1 after the reload")

        # A request in flight when systemd stops the service is finished.
        slow = connect_to(f"unix:{sock}")
        start = len(srv.lines)
        slow.sendall(b"GET /sleep/1 HTTP/1.1\r\nHost: x\r\n\r\n")
        srv.wait_for_line("SLOW REQUEST STARTED", start=start)
        srv.signal(signal.SIGTERM)
        status, _, body, _ = SocketReader(slow).response()
        assert (status, body) == (200, b"slept")
        slow.close()
        notify.wait_for("STOPPING=1")
        assert srv.wait(stop_timeout) == 0
    finally:
        stop_all([srv])
        notify.close()


# --- Container image ------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [(word.upper(), rest.strip()) for line in joined.splitlines() if line.strip()
            for word, _, rest in [line.strip().partition(" ")]]


@pytest.mark.timeout(900)  # builds the wheel: quick after `pip install .`, minutes from cold
def test_dockerfile_build_steps_and_cmd(tmp_path):
    """Runs the Dockerfile's pip steps and CMD outside docker. The build stage's pip is the
    one of the Python running the tests; the runtime stage is a fresh virtualenv. Paths in the
    image map to: /src -> this checkout (the build context), others -> tmp_path."""
    steps = dockerfile_instructions((DEPLOY / "Dockerfile").read_text())
    image_paths = {"/src": REPO, "/wheels": tmp_path / "wheels", "/app": tmp_path / "app"}

    def host_path(image_path: str) -> Path:
        for prefix, path in image_paths.items():
            if image_path.rstrip("/") == prefix:
                return path
        raise AssertionError(f"the Dockerfile uses a path the test does not map: {image_path}")

    def on_host(command: str) -> str:
        return re.sub(r"(?<![\w.])/(src|wheels|app)\b", lambda m: str(host_path(m.group(0))), command)

    stages = 0
    path = os.environ["PATH"]
    cwd = tmp_path
    not_run: list[str] = []
    cmd: list[str] = []
    for instruction, args in steps:
        if instruction == "FROM":
            stages += 1
            if " AS " not in args.upper():  # the runtime image: a fresh Python of its own
                venv = tmp_path / "image-python"
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
                path = f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"
        elif instruction == "RUN" and args.startswith("pip "):
            subprocess.run(on_host(args), shell=True, check=True, cwd=cwd, timeout=600,
                           env={**os.environ, "PATH": path, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
        elif instruction == "COPY":
            *sources, dest = args.replace("--from=build ", "").split()
            for source in sources:
                origin = host_path(source) if source.startswith("/") else REPO / source
                if origin != host_path(dest):
                    shutil.copytree(origin, host_path(dest), dirs_exist_ok=True)
        elif instruction == "WORKDIR":
            cwd = host_path(args)
        elif instruction == "CMD":
            cmd = json.loads(args)
        else:
            not_run.append(f"{instruction} {args}")
    assert stages == 2
    # What the test leaves out: the toolchain install, the user switch, metadata.
    assert [s.split()[0] for s in not_run] == ["RUN", "ENV", "USER", "EXPOSE"], not_run
    assert "rustup" in not_run[0] and not_run[1].startswith("ENV PATH=/root/.cargo/bin")
    assert list((tmp_path / "wheels").glob("ferrocorn-*.whl")), "no wheel built"

    assert shutil.which(cmd[0], path=path) == str(tmp_path / "image-python" / "bin" / cmd[0])
    exposed = not_run[3].split()[1]
    args = render(shlex.join(cmd[1:]), {f"0.0.0.0:{exposed}": "127.0.0.1:0"})
    srv = Server(shlex.split(args), cwd, {**server_env(), "PATH": path}, command=[cmd[0]])
    try:
        srv.wait_ready()
        with srv.connect() as s:
            status, _, body = http_request(s, "/", {"Host": "localhost"})
        assert status == 200 and body.startswith(b"Hello, world!"), body
        srv.wait_for_line(r'"GET / HTTP/1.1" 200')  # the access log, on the container's output
        assert srv.stop() == 0
    finally:
        stop_all([srv])


# --- Kubernetes -----------------------------------------------------------------------------------


def test_kubernetes_manifest_probes_and_termination(tmp_path):
    documents = list(yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()))
    kinds = {d["kind"]: d for d in documents}
    assert sorted(kinds) == ["Deployment", "Service"]
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = container["command"]
    assert command[0] == "ferrocorn"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert kinds["Service"]["spec"]["ports"][0]["targetPort"] in ports

    def port_of(address: str) -> int:
        return int(address.rsplit(":", 1)[1])

    listeners = {port_of(option(command, "--bind", "")): "app",
                 port_of(option(command, "--metrics-bind", "")): "metrics"}
    probes = [container["readinessProbe"], container["livenessProbe"]]
    for probe in probes:
        port = probe["httpGet"]["port"]
        assert ports.get(port, port) in listeners, f"a probe asks port {port}, which nothing binds"

    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    graceful = float(option(command, "--graceful-timeout", "30"))
    grace_period = pod["terminationGracePeriodSeconds"]
    assert grace_period > float(pre_stop[1]) + graceful

    env = {e["name"]: e for e in container["env"]}
    assert env["WEB_CONCURRENCY"]["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"
    cpus = math.ceil(float(container["resources"]["limits"]["cpu"]))

    # The command as the image runs it (WORKDIR /app holds examples/), ports moved to 0.
    args = shlex.join(command[1:])
    args = render(args, {f"0.0.0.0:{port}": "127.0.0.1:0" for port in listeners})
    # The container's stdout goes to a file, its stderr is what the test reads.
    stdout = tmp_path / "stdout"
    srv = Server(shlex.split(args), REPO / "examples", server_env({"WEB_CONCURRENCY": str(cpus)}),
                 command=["sh", "-c", 'exec "$@" >"$0"', str(stdout), *SERVER_COMMAND])
    try:
        srv.wait_ready()
        metrics = srv.wait_for_line(r"Serving metrics at: (http://[\d.]+:\d+)/metrics").group(1)
        address = {"app": srv.address, "metrics": metrics}
        for probe in probes:
            get = probe["httpGet"]
            port = ports.get(get["port"], get["port"])
            with connect_to(address[listeners[port]]) as s:
                # What the kubelet sends.
                status, _, body = http_request(s, get["path"], {
                    "Host": f"10.1.2.3:{port}", "User-Agent": "kube-probe/1.30", "Accept": "*/*"})
            assert 200 <= status < 400, (get, status, body)
        wait_until(lambda: len(booted_worker_pids(srv)) == cpus, 30, message=f"{cpus} workers")
        # Access lines on stdout, the error log (read above) on stderr: both reach `kubectl logs`.
        access = wait_until(lambda: re.findall(r'"GET (\S+) HTTP/1.1" (\d+)', stdout.read_text()), 10,
                            message="access log lines on stdout")
        # (The master's metrics endpoint keeps no access log.)
        app_probes = [p["httpGet"]["path"] for p in probes
                      if listeners[ports.get(p["httpGet"]["port"], p["httpGet"]["port"])] == "app"]
        assert [path for path, _ in access] == app_probes
        assert "kube-probe" not in srv.log
        assert srv.stop(timeout=grace_period - float(pre_stop[1])) == 0
    finally:
        stop_all([srv])
