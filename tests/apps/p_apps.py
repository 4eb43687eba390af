"""Apps for the process-management tests (tests/test_procs*.py, tests/test_zero_downtime.py).

Routes: /pid (the worker's pid), /ppid, /import-pid (the pid that imported this module: the
master with --preload), /env/NAME, /sleep/SECONDS (logs SLOW REQUEST STARTED on wsgi.errors),
/uid, anything else: "ok".
"""

import os
import time

IMPORT_PID = os.getpid()


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/pid":
        body = str(os.getpid())
    elif path == "/ppid":
        body = str(os.getppid())
    elif path == "/import-pid":
        body = str(IMPORT_PID)
    elif path == "/uid":
        body = f"{os.getuid()}:{os.getgid()}"
    elif path.startswith("/env/"):
        body = os.environ.get(path[len("/env/"):], "")
    elif path.startswith("/sleep/"):
        environ["wsgi.errors"].write("SLOW REQUEST STARTED\n")
        environ["wsgi.errors"].flush()
        time.sleep(float(path[len("/sleep/"):]))
        body = "slept"
    else:
        body = "ok"
    data = body.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]
