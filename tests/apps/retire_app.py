"""App for tests/test_retirement.py.

Every request names an id in its path (`/r/ID`). The app appends the id to the file named by
RETIRE_LOG (one short O_APPEND write, so lines from several workers never mix) before it
answers, so a request run twice shows as a repeated line. The answer is `PID SHA256`: the
worker's pid and the checksum of the request body it read.
"""

import hashlib
import os


def record(request_id: str) -> None:
    fd = os.open(os.environ["RETIRE_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{request_id}\n".encode())
    finally:
        os.close(fd)


def app(environ, start_response):
    body = environ["wsgi.input"].read()
    path = environ.get("PATH_INFO", "/")
    if path.startswith("/r/"):
        record(path[len("/r/"):])
    data = f"{os.getpid()} {hashlib.sha256(body).hexdigest()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]
