"""A custom logger class that records every call as a JSON line in $L_LOGGER_FILE."""

import json
import os


class RecordingLogger:
    def __init__(self, cfg):
        self.cfg = cfg
        self.path = os.environ["L_LOGGER_FILE"]
        self._record("init", loglevel=cfg.loglevel, errorlog=cfg.errorlog)

    def _record(self, kind, **data):
        data["kind"] = kind
        data["pid"] = os.getpid()
        with open(self.path, "a") as f:
            f.write(json.dumps(data) + "\n")

    def _msg(self, kind, msg, *args, **kwargs):
        text = msg % args if args else str(msg)
        exc = kwargs.get("exc_info")
        extra = {}
        if isinstance(exc, tuple) and exc[0] is not None:
            extra["exc_type"] = exc[0].__name__
            extra["exc_value"] = str(exc[1])
        self._record(kind, msg=text, **extra)

    def critical(self, msg, *args, **kwargs):
        self._msg("critical", msg, *args, **kwargs)

    def error(self, msg, *args, **kwargs):
        self._msg("error", msg, *args, **kwargs)

    def warning(self, msg, *args, **kwargs):
        self._msg("warning", msg, *args, **kwargs)

    def info(self, msg, *args, **kwargs):
        self._msg("info", msg, *args, **kwargs)

    def debug(self, msg, *args, **kwargs):
        self._msg("debug", msg, *args, **kwargs)

    def exception(self, msg, *args, **kwargs):
        self._msg("exception", msg, *args, **kwargs)

    def log(self, lvl, msg, *args, **kwargs):
        self._msg(f"log{lvl}", msg, *args, **kwargs)

    def access(self, resp, req, environ, request_time):
        self._record(
            "access",
            status=resp.status,
            sent=resp.sent,
            resp_headers=[list(h) for h in resp.headers],
            method=req.method,
            path=req.path,
            query=req.query,
            uri=req.uri,
            req_headers=[list(h) for h in req.headers],
            path_info=environ.get("PATH_INFO"),
            micros=request_time.seconds * 1_000_000 + request_time.microseconds,
        )

    def reopen_files(self):
        self._record("reopen_files")

    def close_on_exec(self):
        pass
