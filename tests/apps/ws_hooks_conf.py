"""pre_request and post_request for WebSocket requests on `-k asgi`: each appends a line to
the file named by $HOOK_LOG."""

import os


def _w(line):
    with open(os.environ["HOOK_LOG"], "a") as f:
        f.write(line + "\n")


def pre_request(worker, req):
    headers = dict(req.headers)
    _w("pre_request %s %s upgrade=%s" % (req.method, req.path, headers.get("UPGRADE")))


def post_request(worker, req, environ, resp):
    _w("post_request %s %s %d sent=%d" % (req.method, req.path, resp.status_code, resp.sent))
