"""nginx terminating TLS in front of ferrocorn over a unix socket, the way many deployments run:

    python nginx_front.py MODULE:ATTR HOST PORT --certfile CERT --keyfile KEY

Starts `ferrocorn -w 1` (sync) on a unix socket in a temporary directory, then nginx in the
foreground (one process: master_process off) listening with TLS on HOST:PORT and proxying to
that socket with upstream keep-alive. Both are children of this process, in its process group;
on SIGTERM or SIGINT it stops them and removes the directory. Run from the app's directory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

START_DEADLINE = 30.0

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    # the default (1000) would add a handshake every 1000 requests on a keep-alive connection
    keepalive_requests 1000000;

    upstream app {{
        server unix:{sock};
        keepalive 64;
    }}

    server {{
        listen {host}:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;

        location / {{
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto https;
            proxy_pass http://app;
        }}
    }}
}}
"""


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("app")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--certfile", required=True)
    p.add_argument("--keyfile", required=True)
    args = p.parse_args()
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    nginx = shutil.which("nginx", path=search)
    ferrocorn = shutil.which("ferrocorn", path=os.path.dirname(sys.executable)) or shutil.which(
        "ferrocorn")
    if nginx is None or ferrocorn is None:
        print("nginx_front: needs nginx and ferrocorn", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    d = Path(tempfile.mkdtemp(prefix="ferrocorn-nginx-"))
    sock = d / "app.sock"
    children: list[subprocess.Popen[bytes]] = []
    try:
        children.append(subprocess.Popen(
            [ferrocorn, "-w", "1", "-b", f"unix:{sock}", "--log-level", "warning", args.app]))
        end = time.monotonic() + START_DEADLINE
        while not sock.exists():
            if children[0].poll() is not None or time.monotonic() > end:
                print("nginx_front: ferrocorn did not bind its socket", file=sys.stderr)
                return 1
            time.sleep(0.02)
        conf = d / "nginx.conf"
        conf.write_text(NGINX_CONF.format(d=d, sock=sock, host=args.host, port=args.port,
                                          cert=args.certfile, key=args.keyfile))
        children.append(subprocess.Popen([nginx, "-e", str(d / "error.log"), "-c", str(conf)]))
        os.wait()  # either one exiting ends the pair
        if (d / "error.log").exists():
            sys.stderr.write((d / "error.log").read_text(errors="replace")[-2000:])
        return 1
    finally:
        for c in children:
            if c.poll() is None:
                c.terminate()
        for c in children:
            try:
                c.wait(5)
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait(5)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
