"""Request hooks around ASGI requests: each appends a line to $HOOK_LOG."""

import os


def _w(line):
    with open(os.environ["HOOK_LOG"], "a") as f:
        f.write(line + "\n")


def pre_request(worker, req):
    _w(f"pre {req.method} {req.path}")


def post_request(worker, req, environ, resp):
    _w(f"post {req.method} {req.path} {resp.status} sent={resp.sent}")
