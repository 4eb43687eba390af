"""WSGI apps for the safety tests (tests/test_safety*.py, tests/test_proxy*.py,
tests/test_slow_clients.py).

`app` routes on PATH_INFO:
  /big?n=N       N bytes as a list of one bytes object
  /gen?n=N       N bytes from a generator of 64 KiB pieces
  /upload        reads the whole body, answers its length
  anything else  JSON: the CGI keys, `wsgi.url_scheme`, REMOTE_*, and every HTTP_* key

When the server's environment has MARKER (`-e MARKER=path`), each request the application
sees appends `METHOD PATH` to that file, so a test can prove a request never reached it.
"""

import json
import os


def _mark(environ):
    path = os.environ.get("MARKER")
    if path:
        with open(path, "a", encoding="latin-1") as f:
            f.write(f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '')}\n")


def _size(environ):
    for part in environ.get("QUERY_STRING", "").split("&"):
        if part.startswith("n="):
            return int(part[2:])
    return 0


def app(environ, start_response):
    _mark(environ)
    path = environ.get("PATH_INFO", "")
    if path == "/big":
        n = _size(environ)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(n))])
        return [b"x" * n]
    if path == "/gen":
        n = _size(environ)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(n))])

        def pieces():
            left = n
            while left > 0:
                step = min(left, 65536)
                left -= step
                yield b"y" * step

        return pieces()
    if path == "/upload":
        body = environ["wsgi.input"].read()
        out = str(len(body)).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
        return [out]
    keys = ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "RAW_URI",
            "REMOTE_ADDR", "REMOTE_PORT", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL",
            "wsgi.url_scheme")
    info = {k: environ[k] for k in keys if k in environ}
    info["headers"] = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
    info["body"] = environ["wsgi.input"].read().decode("latin-1")
    out = json.dumps(info, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]
