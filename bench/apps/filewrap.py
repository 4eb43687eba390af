"""Serves the file named by $BENCH_FILE (10 MiB in the benchmark) through wsgi.file_wrapper,
falling back to a plain 64 KiB block iterator when the server offers no file_wrapper."""

import os

PATH = os.environ.get("BENCH_FILE", "")
BLOCK = 65536


def _blocks(f):
    try:
        while True:
            block = f.read(BLOCK)
            if not block:
                return
            yield block
    finally:
        f.close()


def app(environ, start_response):
    f = open(PATH, "rb")  # noqa: SIM115 - the server closes it through the file_wrapper
    size = os.fstat(f.fileno()).st_size
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))],
    )
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        return wrapper(f, BLOCK)
    return _blocks(f)
