"""An app inside `wsgiref.validate.validator`, serving several kinds of response and reading the
request body in several ways. Any PEP 3333 violation by the server becomes an AssertionError
(a 500, or `Exception ignored` on stderr for an iterator the server never closed)."""

import hashlib
from wsgiref.validate import validator

SOURCE = __file__


def _headers(body_len=None, content_type="text/plain"):
    headers = [("Content-Type", content_type)]
    if body_len is not None:
        headers.append(("Content-Length", str(body_len)))
    return headers


def _read_body(environ, how):
    """Reads the whole body: CONTENT_LENGTH bytes when given, else up to the end of the stream."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    length = int(length) if length else None

    def more(data):
        return length is None or len(data) < length

    if how in ("read", "readline"):
        data = b""
        while more(data):
            want = 4096 if length is None else min(4096, length - len(data))
            chunk = stream.read(want) if how == "read" else stream.readline()
            if not chunk:
                break
            data += chunk
        return data
    if how == "readlines":
        return b"".join(stream.readlines())
    if how == "iter":
        return b"".join(line for line in stream)
    raise ValueError(how)


def raw_app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/list":
        body = [b"hello", b" ", b"world"]
        start_response("200 OK", _headers(11))
        return body
    if path == "/generator":
        def generate():
            for i in range(10):
                yield b"line %d\n" % i
        start_response("200 OK", _headers())
        return generate()
    if path == "/write":
        write = start_response("200 OK", _headers(len(b"written, then returned")))
        write(b"written, ")
        return [b"then returned"]
    if path == "/file":
        f = open(SOURCE, "rb")
        start_response("200 OK", _headers(content_type="text/x-python"))
        return environ["wsgi.file_wrapper"](f, 1024)
    if path == "/empty":
        start_response("200 OK", _headers(0))
        return []
    if path.startswith("/body/"):
        data = _read_body(environ, path[len("/body/"):])
        out = b"%d %s" % (len(data), hashlib.sha256(data).hexdigest().encode())
        start_response("200 OK", _headers(len(out)))
        return [out]
    start_response("404 Not Found", _headers(9))
    return [b"not found"]


app = validator(raw_app)
