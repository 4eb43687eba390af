"""Gunicorn's documented standalone application, with only the import changed.

Usage: python k_standalone.py [WORKERS] [preload]
"""

import os
import sys

from ferrocorn.app.base import BaseApplication


def app(environ, start_response):
    body = b"standalone %d" % os.getpid()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def post_fork(server, worker):
    server.log.info("post_fork app=%s cfg.workers=%s", type(server.app).__name__, server.cfg.workers)


class StandaloneApplication(BaseApplication):

    def __init__(self, app, options=None):
        self.options = options or {}
        self.application = app
        super().__init__()

    def load_config(self):
        config = {key: value for key, value in self.options.items()
                  if key in self.cfg.settings and value is not None}
        for key, value in config.items():
            self.cfg.set(key.lower(), value)

    def load(self):
        print("load() in %d" % os.getpid(), file=sys.stderr, flush=True)
        return self.application


if __name__ == "__main__":
    options = {
        "bind": "127.0.0.1:0",
        "workers": sys.argv[1] if len(sys.argv) > 1 else 2,
        "preload_app": len(sys.argv) > 2 and sys.argv[2] == "preload",
        "post_fork": post_fork,
        "not_a_setting": "ignored by the pattern's filter",
    }
    StandaloneApplication(app, options).run()
