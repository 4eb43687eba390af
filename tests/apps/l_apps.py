"""Apps for the logging tests."""


def hello(environ, start_response):
    body = b"hello\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                              ("X-Out", "out-value")])
    return [body]


def printing(environ, start_response):
    """Prints to stdout and stderr (for --capture-output)."""
    import os
    import sys

    path = environ["PATH_INFO"]
    print(f"stdout-print {path}", flush=True)
    sys.stderr.write(f"stderr-write {path}\n")
    sys.stderr.flush()
    os.write(1, f"fd1-write {path}\n".encode())
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]


def marked(environ, start_response):
    """Writes the query string to wsgi.errors: one error log line per request."""
    environ["wsgi.errors"].write(f"mark {environ['QUERY_STRING']}\n")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]


def statuses(environ, start_response):
    """`/status/NNN` answers NNN; `/boom` raises; `/slow` sleeps a little."""
    import time

    path = environ["PATH_INFO"]
    if path == "/boom":
        raise RuntimeError("boom from the app")
    if path == "/slow":
        time.sleep(0.3)
    code = path.rsplit("/", 1)[-1] if path.startswith("/status/") else "200"
    start_response(f"{code} Whatever", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]


class AtomsJsonFormatter:
    """A JSON access-log formatter of the kind deployed behind Gunicorn: it reads the fields
    from the record's atoms dict (`record.args`), not from the rendered message."""

    def __init__(self, *args, **kwargs):
        import logging

        self._base = logging.Formatter()

    def format(self, record):
        import json

        atoms = record.args
        if not isinstance(atoms, dict):  # error log records: the plain message
            return json.dumps({"msg": record.getMessage()})
        return json.dumps({
            "status": atoms["s"], "method": atoms["m"], "path": atoms["U"], "query": atoms["q"],
            "remote": atoms["h"], "request": atoms["r"], "protocol": atoms["H"],
            "bytes": atoms["B"], "bytes_text": atoms["b"], "seconds": atoms["T"],
            "micros": atoms["D"], "millis": atoms["M"], "decimal": atoms["L"], "pid": atoms["p"],
            "user": atoms["u"], "referer": atoms["f"], "agent": atoms["a"],
            "req_header": atoms["{X-Req}i"], "resp_header": atoms["{x-out}o"],
            "environ": atoms["{REQUEST_METHOD}e"], "missing": atoms["{nope}i"],
            "message": record.getMessage(), "msg_is_format": record.msg,
        })
