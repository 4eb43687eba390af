"""Small WSGI apps for the HTTP/1.1 integration tests (tests/test_http.py).

Select one with APP_MODULE, e.g. `h_apps:echo`. When the server's environment has MARKER
(set with `-e MARKER=path`), `echo` appends one line per request it fully handled to that file,
so a test can prove a request never reached the application.
"""

import os
import time


def _mark(line):
    path = os.environ.get("MARKER")
    if path:
        with open(path, "a", encoding="latin-1") as f:
            f.write(line + "\n")


def echo(environ, start_response):
    """Answers `METHOD PATH?QUERY len=N\\n` followed by the request body it read.

    The marker line is written only after the whole body was read, so a request whose
    framing is refused (even while the body is read) leaves no trace in the marker file.
    """
    body = environ["wsgi.input"].read()
    target = environ.get("PATH_INFO", "")
    if environ.get("QUERY_STRING"):
        target += "?" + environ["QUERY_STRING"]
    _mark(f"{environ['REQUEST_METHOD']} {target}")
    out = f"{environ['REQUEST_METHOD']} {target} len={len(body)}\n".encode("latin-1") + body
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(out)))])
    return [out]


def spin(environ, start_response):
    """Answers its path after 150 µs of busy work: fast enough that the sync worker writes
    the responses of concurrent connections in bursts, slow enough that a burst fills up."""
    end = time.perf_counter() + 150e-6
    while time.perf_counter() < end:
        pass
    out = environ.get("PATH_INFO", "").encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]


def fixed(environ, start_response):
    """A fixed body with a Content-Length; the body is returned for HEAD as well."""
    body = b"0123456789abcdef" * 4
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body))),
                              ("X-App", "fixed")])
    return [body]


def streaming(environ, start_response):
    """Several chunks and no Content-Length: the server picks the framing."""
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        for i in range(5):
            yield b"part-%d;" % i
    return gen()


def ignore_body(environ, start_response):
    """Answers `METHOD PATH` without reading the request body (the server must skip it)."""
    _mark(f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '')}")
    out = f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '')}".encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]
