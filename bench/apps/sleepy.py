"""Sleeps 10 ms per request (a stand-in for a database or upstream call), then says hello."""

import time

BODY = b"Hello, World!"


def app(environ, start_response):
    time.sleep(0.010)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]
