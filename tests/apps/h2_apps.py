"""Apps for tests/test_http2.py, routed by path."""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any, Callable

# Two requests that must be in the application at the same time to finish (see /meet).
_meeting = threading.Barrier(2)
# Requests that reached the application, for the tests that check a refused one did not.
_calls = 0


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
    global _calls
    _calls += 1
    path = environ["PATH_INFO"]
    text = [("Content-Type", "text/plain")]
    if path == "/env":
        keys = ("SERVER_PROTOCOL", "REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "HTTP_HOST",
                "HTTP_X_TEST", "wsgi.url_scheme", "CONTENT_LENGTH", "REMOTE_ADDR", "REMOTE_PORT")
        start_response("200 OK", text)
        return ["\n".join(f"{k}={environ.get(k, '')}" for k in keys).encode()]
    if path == "/echo":
        # The body's length and digest, read in pieces as an application streaming it would.
        digest = hashlib.sha256()
        size = 0
        stream = environ["wsgi.input"]
        while chunk := stream.read(65536):
            digest.update(chunk)
            size += len(chunk)
        start_response("200 OK", text)
        return [f"{size} {digest.hexdigest()}".encode()]
    if path == "/big":
        # `n` bytes in 64 KiB pieces from a generator, so a `sync` response pauses.
        n = int(environ["QUERY_STRING"] or "0")
        start_response("200 OK", text + [("Content-Length", str(n))])
        return _pieces(n)
    if path == "/write":
        write = start_response("200 OK", text)
        for _ in range(4):
            write(b"w" * 100_000)
        return []
    if path == "/file":
        name = environ["QUERY_STRING"]
        start_response("200 OK", [("Content-Length", str(os.path.getsize(name)))])
        return environ["wsgi.file_wrapper"](open(name, "rb"))  # noqa: SIM115 - closed by the server
    if path == "/meet":
        # Finishes only if another request reaches the application meanwhile.
        try:
            _meeting.wait(timeout=10)
        except threading.BrokenBarrierError:
            _meeting.reset()
            start_response("504 Gateway Timeout", text)
            return [b"alone"]
        start_response("200 OK", text)
        return [b"met"]
    if path == "/hints":
        environ["wsgi.early_hints"]([("Link", "</s.css>; rel=preload; as=style")])
        start_response("200 OK", text)
        return [b"hinted"]
    if path == "/calls":
        start_response("200 OK", text)
        return [str(_calls).encode()]
    if path == "/fail":
        raise RuntimeError("the application failed")
    start_response("200 OK", text + [("Connection", "keep-alive")])
    return [b"Hello, World!"]


def _pieces(n: int):
    while n > 0:
        take = min(n, 65536)
        n -= take
        yield b"x" * take
