"""App for the master/signal tests.

`/sleep/<seconds>` logs `SLOW REQUEST STARTED <pid>` on wsgi.errors, sleeps, then answers;
`/pid` answers with the worker's pid; anything else answers `ok`.
"""

import os
import time


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path.startswith("/sleep/"):
        seconds = float(path[len("/sleep/"):])
        errors = environ["wsgi.errors"]
        errors.write(f"SLOW REQUEST STARTED {os.getpid()}\n")
        errors.flush()
        time.sleep(seconds)
        body = f"slept {seconds}".encode()
    elif path == "/pid":
        body = str(os.getpid()).encode()
    else:
        body = b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
