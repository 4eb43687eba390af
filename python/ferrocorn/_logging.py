"""Logging through Python's `logging`, used only when it is asked for.

With no logging config and the built-in logger class, the error and access logs, syslog and
StatsD are written by the server's Rust core and none of this runs. This module takes over when

- a logging config is set (`--log-config`, `logconfig_dict`, `--log-config-json`): `Logger`
  sets up the `gunicorn.error` and `gunicorn.access` loggers the way Gunicorn does (its
  handlers for `--error-logfile`, `--access-logfile` and `--log-syslog` first, then the config
  applied over Gunicorn's default dict), and the server hands it every error message and every
  request (`access()`, which logs `--access-logformat` with Gunicorn's atoms dict as `args`);
- a custom `--logger-class` is set: `make_logger` builds it with `cfg`, and the server calls
  its methods (`info`, `error`, `exception`, ..., `access(resp, req, environ, request_time)`).

Records go to `gunicorn.error` / `gunicorn.access`, the names existing configs use. Handlers
configured on `ferrocorn.error` / `ferrocorn.access` receive them too.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import importlib
import json
import logging
import logging.config
import logging.handlers
import os
import socket
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ferrocorn._hooks import Request

# The logger the server calls: a `Logger`, a custom class's instance, or None (Rust logs).
current: Any = None

LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}

SYSLOG_FACILITIES = {
    "auth": 4, "authpriv": 10, "cron": 9, "daemon": 3, "ftp": 11, "kern": 0, "lpr": 6,
    "mail": 2, "news": 7, "security": 4, "syslog": 5, "user": 1, "uucp": 8,
    "local0": 16, "local1": 17, "local2": 18, "local3": 19,
    "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

ERROR_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "[%Y-%m-%d %H:%M:%S %z]"
SYSLOG_FORMAT = "[%(process)d] %(message)s"


def default_config() -> dict[str, Any]:
    """The dict a logging config is laid over (one level deep), as in Gunicorn: the root logger
    and `gunicorn.access` on stdout, `gunicorn.error` on stderr, all at INFO, in the error log's
    line format; existing loggers stay enabled."""
    line = {
        "class": "logging.Formatter",
        "format": ERROR_FORMAT,
        "datefmt": DATE_FORMAT,
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"generic": line},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "generic",
                        "stream": "ext://sys.stdout"},
            "error_console": {"class": "logging.StreamHandler", "formatter": "generic",
                              "stream": "ext://sys.stderr"},
        },
        "root": {"level": "INFO", "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"],
                               "propagate": True, "qualname": "gunicorn.error"},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"],
                                "propagate": True, "qualname": "gunicorn.access"},
        },
    }


def _parse_syslog_address(addr: str) -> tuple[Any, Any]:
    """(socket type, address) for `SysLogHandler`, read as the Rust side reads it."""
    if addr.startswith("unix://"):
        path, _, kind = addr[len("unix://"):].partition("#")
        return (socket.SOCK_DGRAM if kind == "dgram" else None), path
    if addr.startswith("udp://"):
        socktype, rest = socket.SOCK_DGRAM, addr[len("udp://"):]
    elif addr.startswith("tcp://"):
        socktype, rest = socket.SOCK_STREAM, addr[len("tcp://"):]
    else:
        raise RuntimeError("invalid syslog address")
    if "[" in rest and "]" in rest:
        host = rest.split("]")[0][1:].lower()
    elif ":" in rest:
        host = rest.split(":")[0].lower()
    else:
        host = rest.lower() or "localhost"
    tail = rest.split("]")[-1]
    port = 514
    if ":" in tail:
        text = tail.split(":", 1)[1]
        if not text.isdigit():
            raise RuntimeError(f"{text!r} is not a valid port number.")
        port = int(text)
    return socktype, (host, port)


class Logger:
    """Gunicorn's logger interface over `logging`, for servers run with a logging config."""

    def __init__(self, cfg: Any) -> None:
        self.error_log = logging.getLogger("gunicorn.error")
        self.error_log.propagate = False
        self.access_log = logging.getLogger("gunicorn.access")
        self.access_log.propagate = False
        self.cfg = cfg
        self.setup(cfg)

    # -- set-up ---------------------------------------------------------------------------------

    def setup(self, cfg: Any) -> None:
        """Applies `cfg`; run again with the new `cfg` after a HUP."""
        self.cfg = cfg
        self.error_log.setLevel(LEVELS.get(str(cfg.loglevel).lower(), logging.INFO))
        self.access_log.setLevel(logging.INFO)
        for logger in (self.error_log, self.access_log):
            for handler in list(logger.handlers):
                if getattr(handler, "_gunicorn", False):
                    logger.removeHandler(handler)
        self._add_output(self.error_log, cfg.errorlog,
                         logging.Formatter(ERROR_FORMAT, DATE_FORMAT), sys.stderr)
        if cfg.accesslog is not None:
            self._add_output(self.access_log, cfg.accesslog, logging.Formatter("%(message)s"),
                             sys.stdout)
        if cfg.syslog:
            self._add_syslog(self.error_log, cfg, "error")
            if not cfg.disable_redirect_access_to_syslog:
                self._add_syslog(self.access_log, cfg, "access")
        self._apply_config(cfg)

    def _apply_config(self, cfg: Any) -> None:
        if cfg.logconfig_dict:
            config = default_config()
            config.update(copy.deepcopy(dict(cfg.logconfig_dict)))
            self._dict_config(config)
        elif cfg.logconfig_json:
            if os.path.exists(cfg.logconfig_json):
                config = default_config()
                try:
                    with open(cfg.logconfig_json) as f:
                        config.update(json.load(f))
                except json.JSONDecodeError as exc:
                    raise RuntimeError(str(exc)) from exc
                self._dict_config(config)
        elif cfg.logconfig:
            if not os.path.exists(cfg.logconfig):
                raise RuntimeError(f"Error: log config '{cfg.logconfig}' not found")
            defaults: dict[str, Any] = {
                "__file__": cfg.logconfig,
                "here": os.path.dirname(cfg.logconfig),
            }
            logging.config.fileConfig(cfg.logconfig, defaults=defaults,
                                      disable_existing_loggers=False)

    @staticmethod
    def _dict_config(config: dict[str, Any]) -> None:
        try:
            logging.config.dictConfig(config)
        except (AttributeError, ImportError, ValueError, TypeError) as exc:
            raise RuntimeError(str(exc)) from exc

    def _add_output(self, logger: logging.Logger, output: str, formatter: logging.Formatter,
                    stream: Any) -> None:
        if output == "-":
            handler: logging.Handler = logging.StreamHandler(stream)
        else:
            handler = logging.FileHandler(output)
            try:
                os.chown(handler.baseFilename, self.cfg.user, self.cfg.group)
            except (OSError, TypeError):
                pass  # e.g. /dev/null, or not ours to give away: the file still works
        handler.setFormatter(formatter)
        handler._gunicorn = True  # type: ignore[attr-defined]
        logger.addHandler(handler)

    @staticmethod
    def _add_syslog(logger: logging.Logger, cfg: Any, kind: str) -> None:
        prefix = cfg.syslog_prefix or cfg.proc_name.replace(":", ".")
        formatter = logging.Formatter(f"gunicorn.{prefix}.{kind}: {SYSLOG_FORMAT}")
        try:
            facility = SYSLOG_FACILITIES[str(cfg.syslog_facility).lower()]
        except KeyError as exc:
            raise RuntimeError("unknown facility name") from exc
        socktype, address = _parse_syslog_address(cfg.syslog_addr)
        handler = logging.handlers.SysLogHandler(address=address, facility=facility,
                                                 socktype=socktype)
        handler.setFormatter(formatter)
        handler._gunicorn = True  # type: ignore[attr-defined]
        logger.addHandler(handler)

    # -- records --------------------------------------------------------------------------------

    def _emit(self, logger: logging.Logger, alias: str, level: int, msg: object,
              args: tuple[Any, ...], exc_info: Any = None, extra: Any = None) -> None:
        other = logging.getLogger(alias)
        to_other = bool(other.handlers) and not other.disabled and other.isEnabledFor(level)
        if not (logger.isEnabledFor(level) or to_other):
            return
        if exc_info:
            if isinstance(exc_info, BaseException):
                exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
            elif not isinstance(exc_info, tuple):
                exc_info = sys.exc_info()
        record = logger.makeRecord(logger.name, level, "(server)", 0, msg, args or (),
                                   exc_info, extra=extra)
        if logger.isEnabledFor(level):
            logger.handle(record)
        if to_other:
            for handler in other.handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)

    def log(self, lvl: Any, msg: object, *args: Any, exc_info: Any = None, extra: Any = None,
            **_kw: Any) -> None:
        if isinstance(lvl, str):
            lvl = LEVELS.get(lvl.lower(), logging.INFO)
        self._emit(self.error_log, "ferrocorn.error", lvl, msg, args, exc_info, extra)

    def critical(self, msg: object, *args: Any, **kw: Any) -> None:
        self.log(logging.CRITICAL, msg, *args, **kw)

    def error(self, msg: object, *args: Any, **kw: Any) -> None:
        self.log(logging.ERROR, msg, *args, **kw)

    def warning(self, msg: object, *args: Any, **kw: Any) -> None:
        self.log(logging.WARNING, msg, *args, **kw)

    warn = warning

    def info(self, msg: object, *args: Any, **kw: Any) -> None:
        self.log(logging.INFO, msg, *args, **kw)

    def debug(self, msg: object, *args: Any, **kw: Any) -> None:
        self.log(logging.DEBUG, msg, *args, **kw)

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kw: Any) -> None:
        self.log(logging.ERROR, msg, *args, exc_info=exc_info, **kw)

    @property
    def access_log_enabled(self) -> bool:
        cfg = self.cfg
        return bool(cfg.accesslog or cfg.logconfig or cfg.logconfig_dict or cfg.logconfig_json
                    or (cfg.syslog and not cfg.disable_redirect_access_to_syslog))

    def now(self) -> str:
        """The `t` atom: local time in Apache's common log format."""
        return time.strftime("[%d/%b/%Y:%H:%M:%S %z]")

    def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> dict[str, Any]:
        """Gunicorn's access log atoms, with its keys and value types."""
        return access_atoms(resp, req, environ, request_time, self.now())

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        """One request through `gunicorn.access`, as Gunicorn logs it: the record's `msg` is
        `--access-logformat` and its `args` the atoms (a `SafeAtoms`), so formatters that read
        `record.args["s"]` work and `%(message)s` is the formatted line."""
        if not self.access_log_enabled:
            return
        atoms = SafeAtoms(self.atoms(resp, req, environ, request_time))
        try:
            self._emit(self.access_log, "ferrocorn.access", logging.INFO,
                       self.cfg.access_log_format, (atoms,))
        except Exception:
            self.error(traceback.format_exc())

    # -- files ----------------------------------------------------------------------------------

    def reopen_files(self) -> None:
        """Reopens every `FileHandler` (after logrotate moved the files away)."""
        for handler in _file_handlers():
            handler.acquire()
            try:
                if handler.stream:
                    handler.close()
                    handler.stream = handler._open()
            finally:
                handler.release()

    def close_on_exec(self) -> None:
        """Log files are not passed on to programs the application runs."""
        import fcntl

        for handler in _file_handlers():
            stream = handler.stream
            if stream:
                fd = stream.fileno()
                fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.fcntl(fd, fcntl.F_GETFD) | fcntl.FD_CLOEXEC)


class SafeAtoms(dict):  # type: ignore[type-arg]
    """The atoms as a format reads them: `"` in text escaped, `{header}i`-style keys looked up
    case-insensitively, and `-` for any atom that is missing."""

    def __init__(self, atoms: dict[str, Any]) -> None:
        super().__init__(
            (k, v.replace('"', '\\"') if isinstance(v, str) else v) for k, v in atoms.items()
        )

    def __getitem__(self, key: str) -> Any:
        if key.startswith("{"):
            key = key.lower()
        return super().__getitem__(key) if key in self else "-"


def _basic_auth_user(environ: Any) -> str | None:
    """The user name of an `Authorization: Basic` header, if it decodes."""
    value = environ.get("HTTP_AUTHORIZATION")
    if not value or not value.lower().startswith("basic"):
        return None
    scheme_and_token = value.split(" ", 1)
    if len(scheme_and_token) != 2:
        return None
    try:
        decoded = base64.b64decode(scheme_and_token[1].strip().encode("utf-8")).decode("utf-8")
    except (TypeError, binascii.Error, UnicodeDecodeError):
        return None
    user, sep, _password = decoded.partition(":")
    return user if sep else None


def access_atoms(resp: Any, req: Any, environ: Any, request_time: datetime.timedelta,
                 now: str) -> dict[str, Any]:
    """Gunicorn's atoms for one request: the same keys and value types (`T`, `D`, `M`, `B` are
    numbers, the rest text) plus `{name}i`, `{name}o` and `{key}e` for every request header,
    response header and environ key (lower-cased names)."""
    status = resp.status
    if isinstance(status, str):
        status = status.split(None, 1)[0]
    sent = getattr(resp, "sent", None)
    secs, micros = request_time.seconds, request_time.microseconds
    atoms: dict[str, Any] = {
        "h": environ.get("REMOTE_ADDR", "-"),
        "l": "-",
        "u": _basic_auth_user(environ) or "-",
        "t": now,
        "r": f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}",
        "s": status,
        "m": environ.get("REQUEST_METHOD"),
        "U": environ.get("PATH_INFO"),
        "q": environ.get("QUERY_STRING"),
        "H": environ.get("SERVER_PROTOCOL"),
        "b": str(sent) if sent is not None else "-",
        "B": sent,
        "f": environ.get("HTTP_REFERER", "-"),
        "a": environ.get("HTTP_USER_AGENT", "-"),
        "T": secs,
        "D": secs * 1_000_000 + micros,
        "M": secs * 1000 + micros // 1000,
        "L": "%d.%06d" % (secs, micros),
        "p": f"<{os.getpid()}>",
    }
    headers = getattr(req, "headers", req)
    for name, value in headers.items() if hasattr(headers, "items") else headers:
        atoms[f"{{{name.lower()}}}i"] = value
    resp_headers = resp.headers
    for name, value in resp_headers.items() if hasattr(resp_headers, "items") else resp_headers:
        atoms[f"{{{name.lower()}}}o"] = value
    for key, value in environ.items():
        atoms[f"{{{key.lower()}}}e"] = value
    return atoms


def _file_handlers() -> list[logging.FileHandler]:
    loggers = [logging.getLogger()] + [
        lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    seen: set[int] = set()
    out = []
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler) and id(handler) not in seen:
                seen.add(id(handler))
                out.append(handler)
    return out


def error_level() -> int:
    """The least severe level `gunicorn.error` (or `ferrocorn.error`) lets through."""
    levels = [logging.getLogger("gunicorn.error").getEffectiveLevel()]
    alias = logging.getLogger("ferrocorn.error")
    if alias.handlers:
        levels.append(alias.getEffectiveLevel())
    return max(min(levels), logging.root.manager.disable + 1)


def load_class(spec: Any) -> type:
    """A class object, or the class a `module.Class` string names."""
    if isinstance(spec, type):
        return spec
    text = str(spec).strip()
    module_name, _, class_name = text.rpartition(".")
    if not module_name:
        raise RuntimeError(f"logger_class {text!r} is not of the form module.Class")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, class_name)
    except (ImportError, AttributeError) as exc:
        raise RuntimeError(f"cannot load logger_class {text!r}: {exc}") from exc


def make_logger(spec: Any, cfg: Any) -> Any:
    """Builds a custom `--logger-class` with `cfg`, calling its `install()` first if it has one."""
    cls = load_class(spec)
    if hasattr(cls, "install"):
        cls.install()
    return cls(cfg)


def custom_access(logger: Any, req: Request, response: tuple[Any, ...], environ: Any,
                  micros: int) -> None:
    """`logger.access(resp, req, environ, request_time)` for a custom logger class.

    `req` is the request hooks' `Request`; `response` is (status line, status code, headers,
    body bytes sent).
    """
    from ferrocorn._hooks import Response

    status, status_code, resp_headers, sent = response
    peer = req.peer_addr
    if not environ:
        # A request answered before it had an environ (refused for a field's value): the keys
        # Gunicorn's error path gives it.
        environ = {
            "REQUEST_METHOD": req.method, "QUERY_STRING": req.query, "RAW_URI": req.uri,
            "SERVER_PROTOCOL": "HTTP/%d.%d" % tuple(req.version),
            "REMOTE_ADDR": peer[0] if isinstance(peer, tuple) else "",
            "REMOTE_PORT": str(peer[1]) if isinstance(peer, tuple) else "-1",
        }
    if isinstance(environ, dict):
        req.scheme = environ.get("wsgi.url_scheme", "http")
    resp = Response(status, status_code, resp_headers, sent, True)
    logger.access(resp, req, environ, datetime.timedelta(microseconds=micros))


def errors_write(text: str) -> None:
    """`wsgi.errors`: the text goes to the streams of the `gunicorn.error` handlers."""
    streams = [h.stream for h in logging.getLogger("gunicorn.error").handlers
               if getattr(h, "stream", None) is not None]
    for stream in streams or [sys.stderr]:
        stream.write(text)
        stream.flush()


def hook_logger(fallback: Any) -> Any:
    """`server.log` for hooks: a custom logger class's instance, else `fallback`."""
    if current is not None and not isinstance(current, Logger):
        return current
    return fallback
