"""PasteDeploy application factories for the --paste tests (`use = call:paste_apps:NAME`)."""

import json
import os


def factory(global_conf, **local_conf):
    """An app answering with what it was configured with, as JSON."""
    conf = {
        "global": {k: v for k, v in global_conf.items() if k not in ("__file__", "here")},
        "local": local_conf,
        "file": global_conf.get("__file__"),
    }

    def app(environ, start_response):
        body = json.dumps(dict(conf, pid=os.getpid())).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    return app


def broken(global_conf, **local_conf):
    raise RuntimeError("the paste factory broke")
