"""Applications for tests/test_hooks.py and tests/test_embedding.py."""

import time


def application(environ, start_response):
    if environ["PATH_INFO"] == "/sleep":
        time.sleep(60)
    body = ("{} {}".format(environ["REQUEST_METHOD"], environ["PATH_INFO"])).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
