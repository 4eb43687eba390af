"""The smallest useful WSGI app: `ferrocorn --chdir examples hello:app`, then open
http://127.0.0.1:8000/ (or /anything?name=you)."""

import os
from urllib.parse import parse_qs


def app(environ, start_response):
    name = parse_qs(environ.get("QUERY_STRING", "")).get("name", ["world"])[0]
    body = f"Hello, {name}! (served by worker {os.getpid()}, path {environ['PATH_INFO']})\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]
