"""WSGI app for the TLS tests (tests/test_tls.py).

`app` routes on PATH_INFO:
  /file     the file named by the server's FILE environment variable, through
            `wsgi.file_wrapper` around a file object whose `read` raises: the server must send
            it from the descriptor, never through Python
  /upload   reads the whole body, answers its length and SHA-256
  /gen      8 MiB from a generator of 64 KiB pieces, byte i being i % 251
  anything else  JSON: `wsgi.url_scheme`, SERVER_PORT and every `SSL_*` and `HTTPS` key
"""

from __future__ import annotations

import hashlib
import io
import json
import os

GEN_PIECE = 251 * 256  # a multiple of 251, so every piece continues the pattern
GEN_PIECES = 128


class NoReadFile(io.FileIO):
    """A real file that refuses to be read from Python."""

    def read(self, size: int = -1) -> bytes:
        raise AssertionError("the file was read through Python")

    def readinto(self, buffer) -> int:
        raise AssertionError("the file was read through Python")


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/file":
        name = os.environ["FILE"]
        size = os.path.getsize(name)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(size))])
        return environ["wsgi.file_wrapper"](NoReadFile(name, "r"), 65536)
    if path == "/gen":
        piece = bytes(i % 251 for i in range(GEN_PIECE))
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(GEN_PIECE * GEN_PIECES))])
        return (piece for _ in range(GEN_PIECES))
    if path == "/upload":
        body = environ["wsgi.input"].read()
        out = f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
        return [out]
    info = {k: v for k, v in environ.items()
            if k.startswith("SSL_") or k in ("HTTPS", "wsgi.url_scheme", "SERVER_PORT")}
    out = json.dumps(info, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]
