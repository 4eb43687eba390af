"""Small WSGI apps for the PEP 3333 integration tests (tests/test_wsgi.py).

Select one with APP_MODULE, e.g. `w_apps:echo_environ`. Apps that leave traces append lines to
the file named by the MARKER environment variable of the server (`-e MARKER=path`).
"""

import hashlib
import io
import json
import os
import sys
import time
import tracemalloc
from urllib.parse import parse_qs


def _mark(line):
    path = os.environ.get("MARKER")
    if path:
        with open(path, "a", encoding="latin-1") as f:
            f.write(line + "\n")


def _query(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _json(start_response, obj, status="200 OK"):
    body = json.dumps(obj).encode("utf-8")
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _describe(value):
    """[type name, value] with the value kept as is when JSON can carry it, repr otherwise."""
    name = type(value).__name__
    if isinstance(value, (str, bool, int, float)) or value is None:
        return [name, value]
    if isinstance(value, tuple) and all(isinstance(v, (int, str)) for v in value):
        return [name, list(value)]
    return [name, repr(value)]


def echo_environ(environ, start_response):
    """JSON `{key: [type_name, value]}` of the whole environ, plus `_pid` and `_body`."""
    out = {key: _describe(value) for key, value in environ.items()}
    out["_pid"] = ["int", os.getpid()]
    out["_file_wrapper_callable"] = ["bool", callable(environ.get("wsgi.file_wrapper"))]
    out["_body"] = ["str", environ["wsgi.input"].read().decode("latin-1")]
    return _json(start_response, out)


def errors(environ, start_response):
    """Writes `?token=` to wsgi.errors (the server's error log)."""
    token = _query(environ).get("token", "no-token")
    stream = environ["wsgi.errors"]
    stream.write(token + "\n")
    stream.flush()
    return _json(start_response, {"written": token})


def input_ops(environ, start_response):
    """Applies `?ops=read:5,readline,readline:2,readlines,readlines:4,iter,read` to wsgi.input.

    Answers a JSON list with one result per operation (bytes decoded as latin-1).
    """
    stream = environ["wsgi.input"]
    results = []
    for op in _query(environ).get("ops", "read").split(","):
        name, _, arg = op.partition(":")
        args = (int(arg),) if arg else ()
        if name == "iter":
            results.append([line.decode("latin-1") for line in stream])
        elif name == "readlines":
            results.append([line.decode("latin-1") for line in stream.readlines(*args)])
        else:
            results.append(getattr(stream, name)(*args).decode("latin-1"))
    return _json(start_response, results)


def _peak_rss():
    """Peak resident set size of this process in bytes."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def upload(environ, start_response):
    """Streams wsgi.input through read(64 KiB); reports length, md5 and the peak RSS."""
    stream = environ["wsgi.input"]
    digest = hashlib.md5()
    total = 0
    largest = 0
    while True:
        chunk = stream.read(65536)
        if not chunk:
            break
        largest = max(largest, len(chunk))
        total += len(chunk)
        digest.update(chunk)
    return _json(start_response, {"length": total, "md5": digest.hexdigest(), "largest_read": largest,
                                  "peak_rss": _peak_rss(), "pid": os.getpid()})


def input_copy(environ, start_response):
    """Reads the whole body with one read(); reports how many bytes of memory that read took."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        data = environ["wsgi.input"].read()
        allocated = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return _json(start_response, {"length": len(data), "md5": hashlib.md5(data).hexdigest(),
                                  "allocated": allocated})


class Tracked:
    """A body iterable that records its close() in the marker file."""

    def __init__(self, tag, chunks, fail_after=None, duration=None):
        self.tag = tag
        self.chunks = chunks
        self.fail_after = fail_after
        self.duration = duration

    def __iter__(self):
        if self.duration is not None:
            end = time.monotonic() + self.duration
            while time.monotonic() < end:
                yield b"x" * 65536
            return
        for i, chunk in enumerate(self.chunks):
            if self.fail_after is not None and i == self.fail_after:
                raise RuntimeError("tracked-iteration-failure")
            yield chunk

    def close(self):
        _mark(f"closed {self.tag}")


def responses(environ, start_response):
    """One behaviour per PATH_INFO; see the branches."""
    path = environ["PATH_INFO"]
    q = _query(environ)

    if path == "/pid":
        return _json(start_response, {"pid": os.getpid()})

    if path == "/raise-before-body":
        start_response("200 OK", [("Content-Type", "text/plain")])
        raise RuntimeError("raised after start_response, before any body")

    if path == "/raise-in-generator-before-body":
        def gen():
            start_response("200 OK", [("Content-Type", "text/plain")])
            raise RuntimeError("raised in the body iterable before its first item")
            yield b"never"  # pragma: no cover
        return gen()

    if path == "/raise-after-body":
        def gen():
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
            yield b"partial-body;"
            raise RuntimeError("raised-after-response-started " + q.get("token", ""))
        return gen()

    if path == "/boom":
        raise RuntimeError("boom-before-response " + q.get("token", ""))

    if path == "/exc-info-after-headers":
        def gen():
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"first-chunk;"
            try:
                raise ValueError("late failure")
            except ValueError:
                start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
            yield b"must-not-be-sent"
        return gen()

    if path == "/exc-info-before-body":
        start_response("200 OK", [("Content-Type", "text/html"), ("X-First-Attempt", "yes")])
        try:
            raise ValueError("failure before the body")
        except ValueError:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain"),
                                                        ("Content-Length", "8")], sys.exc_info())
        return [b"replaced"]

    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        write(b"through ")
        write(b"write()")
        return []

    if path == "/write-and-iterable":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"from-write;")
        return [b"from-iterable"]

    if path == "/hop":
        body = b"hop-by-hop body"
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                                  (q["name"], q["value"])])
        return [body]

    if path == "/bad-header-value":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Number", 5)])
        return [b"must-not-be-sent"]

    if path == "/bad-header-name":
        start_response("200 OK", [("Content-Type", "text/plain"), (b"X-Bytes", "v")])
        return [b"must-not-be-sent"]

    if path == "/bad-status":
        start_response(200, [("Content-Type", "text/plain")])
        return [b"must-not-be-sent"]

    if path == "/cl":
        # Content-Length `cl`, then `send` bytes in pieces of at most 7.
        cl, send = int(q["cl"]), int(q["send"])
        data = bytes(ord("a") + i % 26 for i in range(send))
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(cl))])
        return [data[i:i + 7] for i in range(0, len(data), 7)]

    if path == "/nocl":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"one;", b"", b"two;", b"three;"]

    if path == "/status":
        # Any status with a body the server must drop for 204/304 (and for HEAD).
        code = q["code"]
        headers = [("Content-Type", "text/plain")]
        if "cl" in q:
            headers.append(("Content-Length", q["cl"]))
        start_response(f"{code} Status {code}", headers)
        return [b"body-that-must-not-be-sent"]

    if path == "/filewrap":
        f = open(q["path"], "rb")
        if "offset" in q:
            f.seek(int(q["offset"]))
        headers = [("Content-Type", "application/octet-stream")]
        if "cl" in q:
            headers.append(("Content-Length", q["cl"]))
        start_response("200 OK", headers)
        return environ["wsgi.file_wrapper"](f, 8192)

    if path == "/bytes":
        data = b"b" * int(q["n"])
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(data)))])
        return [data]

    if path == "/filewrap-bytesio":
        data = bytes(range(256)) * 40
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(data)))])
        return environ["wsgi.file_wrapper"](io.BytesIO(data), 100)

    if path == "/tracked":
        tag = q["tag"]
        mode = q.get("mode", "normal")
        start_response("200 OK", [("Content-Type", "text/plain")])
        if mode == "raise":
            return Tracked(tag, [b"one;", b"two;", b"three;"], fail_after=1)
        if mode == "forever":
            # Far longer than any test waits: only the disconnect can end it in time.
            return Tracked(tag, None, duration=120)
        return Tracked(tag, [b"one;", b"two;", b"three;"])

    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
    return [b"not found"]
