"""The objects server hooks receive: `server`, `worker`, `req`, `resp`, and their `cfg` and `log`.

They offer what Gunicorn's hooks use (Gunicorn's `Arbiter`, `Worker`, `Request`, `Response`,
`Config` and `Logger`), as plain classes. The server itself is Rust: these objects are built
only when a hook is set, and the master and workers keep them current (`WORKERS`,
`num_workers`, `worker.pid`).
"""

from __future__ import annotations

import sys
import traceback
from typing import Any, Callable, Union

from ferrocorn import _ferrocorn, _logging

# Log levels as Python's logging numbers them; crate::log uses the same values.
DEBUG, INFO, WARNING, ERROR, CRITICAL = 10, 20, 30, 40, 50

Address = Union[str, "tuple[str, int]"]


def _format(msg: object, args: tuple[Any, ...]) -> str:
    """`msg % args`, as the logging module formats a record."""
    text = str(msg)
    if not args:
        return text
    values: Any = args[0] if len(args) == 1 and isinstance(args[0], dict) and args[0] else args
    try:
        return text % values
    except (TypeError, ValueError, KeyError):
        return " ".join([text] + [str(a) for a in args])


class Logger:
    """`server.log` / `worker.log`: Gunicorn's logger methods, writing to ferrocorn's error log."""

    def log(self, lvl: int, msg: object, *args: Any, exc_info: object = None, **_kw: Any) -> None:
        if not _ferrocorn._log_enabled(lvl):
            return
        text = _format(msg, args)
        if exc_info:
            if isinstance(exc_info, BaseException):
                exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
            elif not isinstance(exc_info, tuple):
                exc_info = sys.exc_info()
            if exc_info[0] is not None:
                text += "\n" + "".join(traceback.format_exception(*exc_info)).rstrip("\n")
        _ferrocorn._log(lvl, text)

    def debug(self, msg: object, *args: Any, **kw: Any) -> None:
        self.log(DEBUG, msg, *args, **kw)

    def info(self, msg: object, *args: Any, **kw: Any) -> None:
        self.log(INFO, msg, *args, **kw)

    def warning(self, msg: object, *args: Any, **kw: Any) -> None:
        self.log(WARNING, msg, *args, **kw)

    warn = warning

    def error(self, msg: object, *args: Any, **kw: Any) -> None:
        self.log(ERROR, msg, *args, **kw)

    def critical(self, msg: object, *args: Any, **kw: Any) -> None:
        self.log(CRITICAL, msg, *args, **kw)

    def exception(self, msg: object, *args: Any, **kw: Any) -> None:
        kw.setdefault("exc_info", True)
        self.log(ERROR, msg, *args, **kw)

    def reopen_files(self) -> None:
        _ferrocorn._log_reopen()

    def close_on_exec(self) -> None:
        """Log descriptors are already close-on-exec."""

    def access(self, *_args: Any, **_kw: Any) -> None:
        """Access lines are written by the server itself."""


def _address(bind: str) -> Address:
    if bind.startswith("unix:"):
        return bind[len("unix:"):]
    if bind.startswith("fd://"):
        return bind
    host, _, port = bind.rpartition(":")
    if not host:
        host, port = bind, "8000"
    try:
        return (host.strip("[]"), int(port))
    except ValueError:
        return bind


class Config:
    """`cfg`: every setting as an attribute (`cfg.workers`, `cfg.bind`, ...), read-only."""

    def __init__(self, values: dict[str, Any], worker_class: str, proc_name: str) -> None:
        self._values = values
        self._worker_class = worker_class
        self._proc_name = proc_name

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(f"No configuration setting for: {name}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._values

    @property
    def worker_class_str(self) -> str:
        return self._worker_class

    @property
    def proc_name(self) -> str:
        return self._proc_name

    @property
    def env(self) -> dict[str, str]:
        pairs = (e.split("=", 1) for e in self._values.get("raw_env") or [] if "=" in e)
        return {k: v for k, v in pairs}

    @property
    def address(self) -> list[Address]:
        return [_address(b) for b in self._values.get("bind") or []]

    @property
    def uid(self) -> Any:
        return self._values.get("user")

    @property
    def gid(self) -> Any:
        return self._values.get("group")

    @property
    def is_ssl(self) -> bool:
        return bool(self._values.get("certfile") or self._values.get("keyfile"))

    @property
    def reuse_port(self) -> bool:
        return bool(self._values.get("reuse_port"))

    def __repr__(self) -> str:
        return "<ferrocorn Config {}>".format(", ".join("{}={!r}".format(*kv) for kv in sorted(self._values.items())))


class CommandLineApp:
    """`server.app` when started from the command line: holds `cfg` and loads APP_MODULE (or
    the `--paste` file)."""

    def __init__(self, cfg: Config, app_uri: str | None) -> None:
        self.cfg = cfg
        self.app_uri = app_uri
        self.callable: Callable[..., Any] | None = None

    def wsgi(self) -> Callable[..., Any]:
        if self.callable is None:
            from ferrocorn import _loader

            if self.cfg.paste is not None:
                self.callable = _loader.load_paste(
                    self.app_uri or "", list(self.cfg.raw_paste_global_conf or []))
            else:
                self.callable = _loader.import_app(self.app_uri or "")
        return self.callable


class Server:
    """`server`: the master ("arbiter")."""

    def __init__(self, pid: int, cfg: Config, app: Any, num_workers: int) -> None:
        self.pid = pid
        self.cfg = cfg
        self.log = _logging.hook_logger(Logger())
        self.app = app
        self.num_workers = num_workers
        self.WORKERS: dict[int, Worker] = {}
        self.worker_age = 0
        self.proc_name = cfg.proc_name
        self.master_name = "Master"
        self.address = cfg.address
        self.timeout = cfg._values.get("timeout")

    def __repr__(self) -> str:
        return f"<ferrocorn Arbiter {self.pid}>"


class Worker:
    """`worker`: one worker process. `pid` is "[booting]" until forked, as in Gunicorn."""

    def __init__(self, age: int, ppid: int, server: Server) -> None:
        self.age = age
        self.pid: int | str = "[booting]"
        self.ppid = ppid
        self.cfg = server.cfg
        self.log = server.log
        self.app = server.app
        self.timeout = server.timeout
        self.booted = False
        self.aborted = False
        self.wsgi: Callable[..., Any] | None = None

    @property
    def nr(self) -> int:
        """Requests handled by this worker so far."""
        return _ferrocorn._worker_requests()

    @property
    def alive(self) -> bool:
        """False once the worker has begun to stop."""
        return not _ferrocorn._worker_stopping()

    def __str__(self) -> str:
        return f"<Worker {self.pid}>"


class Request:
    """`req` in pre_request / post_request: the parsed request head."""

    __slots__ = (
        "fragment",
        "headers",
        "method",
        "path",
        "peer_addr",
        "query",
        "scheme",
        "uri",
        "version",
    )

    def __init__(self, method: str, uri: str, path: str, query: str, fragment: str,
                 version: tuple[int, int], headers: list[tuple[str, str]], scheme: str,
                 peer_addr: Any) -> None:
        self.method = method
        self.uri = uri
        self.path = path
        self.query = query
        self.fragment = fragment
        self.version = version
        self.headers = headers
        self.scheme = scheme
        self.peer_addr = peer_addr

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response:
    """`resp` in post_request: what was answered."""

    __slots__ = ("headers", "headers_sent", "sent", "status", "status_code")

    def __init__(self, status: str | None, status_code: int, headers: list[tuple[str, str]],
                 sent: int, headers_sent: bool) -> None:
        self.status = status
        self.status_code = status_code
        self.headers = headers
        self.sent = sent
        self.headers_sent = headers_sent

    def __repr__(self) -> str:
        return f"<Response {self.status}>"


def install_stop_handler(sig: int, hook: Callable[[Worker], Any] | None, worker: Worker,
                         name: str, code: int) -> None:
    """Registers the Python-level handler that a worker's Rust signal handler hands `sig` to.

    It runs in the main thread at the next point Python checks for signals (inside a running
    application, or when the event loop asks): `hook(worker)`, then the worker's exit sequence.
    """
    import signal

    def handler(_signum: int, _frame: object) -> None:
        if name == "worker_abort":
            worker.aborted = True
        if hook is not None:
            try:
                hook(worker)
            except Exception:
                worker.log.exception("Exception in %s hook", name)
        _ferrocorn._worker_exit_now(code)

    signal.signal(sig, handler)
