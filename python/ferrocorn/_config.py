"""Python side of ferrocorn's settings loading: running the config file, importing hooks.

Compiled from source by src/config/validate.rs into a private module, so that it also works
where the package is not installed (the unit tests); not part of the public API.
"""

from __future__ import annotations

import configparser
import importlib
import inspect
import math
import os
import sys
import traceback
import types
from typing import Any, Callable

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _failure(exc: BaseException) -> str:
    """The last traceback line of `exc` with its file and line, and the exception itself."""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = '  File "%s", line %s\n' % (exc.filename, exc.lineno)
    else:
        frames = traceback.extract_tb(exc.__traceback__)
        if frames:
            last = frames[-1]
            where = '  File "%s", line %s, in %s\n' % (last.filename, last.lineno, last.name)
        else:
            where = ""
    what = "".join(traceback.format_exception_only(type(exc), exc)).rstrip("\n")
    return where + what


def load_file(path: str) -> tuple[dict[str, Any] | None, str | None]:
    """Runs the config file at `path` as module `__config__`: (namespace, None) or (None, error)."""
    try:
        with open(path, "rb") as f:
            source = f.read()
        code = compile(source, path, "exec")
        mod = types.ModuleType("__config__")
        mod.__file__ = path
        sys.modules["__config__"] = mod
        exec(code, mod.__dict__)
        return dict(vars(mod)), None
    except BaseException as exc:  # noqa: BLE001 - SystemExit in a config file is an error too
        return None, _failure(exc)


def load_module(name: str) -> tuple[dict[str, Any] | None, str | None]:
    """Imports module `name` for `-c python:NAME`: (namespace, None) or (None, error)."""
    try:
        return dict(vars(importlib.import_module(name))), None
    except BaseException as exc:  # noqa: BLE001
        return None, _failure(exc)


def paste_config(location: str) -> tuple[str, str, bool, bool]:
    """`--paste FILE[#NAME]` -> (absolute URI, absolute FILE, whether FILE exists, whether FILE
    has a `[loggers]` section), reading the file as Gunicorn does. Raises `RuntimeError` when
    PasteDeploy is missing: Gunicorn imports it at this point too, so it fails before starting."""
    try:
        importlib.import_module("paste.deploy")
    except ModuleNotFoundError as exc:
        if exc.name not in ("paste", "paste.deploy"):
            raise
        raise RuntimeError(
            "PasteDeploy is not installed; --paste needs it to load the application "
            "(pip install PasteDeploy).") from None
    uri = os.path.abspath(location)
    path = uri.split("#")[0]
    if not os.path.exists(path):
        return uri, path, False, False
    parser = configparser.ConfigParser()
    parser.read([path])
    return uri, path, True, parser.has_section("loggers")


def import_object(spec: str) -> Any:
    """`package.module.name` -> the object."""
    if "." not in spec:
        raise TypeError("%r is not an import string of the form module.object" % spec)
    mod_name, obj_name = spec.rsplit(".", 1)
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise TypeError(str(exc)) from None
    try:
        return getattr(mod, obj_name)
    except AttributeError:
        raise TypeError("cannot load %r from %r" % (obj_name, mod_name)) from None


def arity(f: Callable[..., Any]) -> int:
    """How many positional parameters `f` declares."""
    return sum(1 for p in inspect.signature(f).parameters.values() if p.kind in _POSITIONAL)


def wrap_post_request(f: Callable[..., Any]) -> Callable[..., Any] | None:
    """`post_request` taking 2, 3 or 4 arguments, as a function of 4; None for other arities."""
    n = arity(f)
    if n == 4:
        return f
    if n == 3:
        return lambda worker, req, environ, _resp: f(worker, req, environ)
    if n == 2:
        return lambda worker, req, _environ, _resp: f(worker, req)
    return None


def resolve_class(obj: Any) -> Any:
    """A class stays; a function is called for its class; a string passes; else None."""
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        obj = obj()
    if inspect.isclass(obj) or isinstance(obj, str):
        return obj
    return None


def describe(obj: Any) -> str:
    """How --print-config shows a Python object."""
    if callable(obj):
        return "<%s()>" % getattr(obj, "__qualname__", type(obj).__qualname__)
    return str(obj)


def enter_dir(path: str) -> None:
    """Gunicorn's chdir: change directory and put it first on sys.path."""
    os.chdir(path)
    if path not in sys.path:
        sys.path.insert(0, path)


# uvicorn's workers for Gunicorn, whose subclasses run on the native ASGI worker.
UVICORN_WORKERS = frozenset({
    "uvicorn.workers.UvicornWorker",
    "uvicorn.workers.UvicornH11Worker",
    "uvicorn_worker._workers.UvicornWorker",
    "uvicorn_worker._workers.UvicornH11Worker",
})
# uvicorn.Config keywords with a meaning here, and the setting each becomes.
UVICORN_KWARGS = {
    "loop": "asgi_loop",
    "lifespan": "asgi_lifespan",
    "root_path": "root_path",
    "ws_max_size": "websocket_max_message_size",
    "ws_ping_interval": "websocket_ping_interval",
    "ws_ping_timeout": "websocket_ping_timeout",
    "timeout_keep_alive": "keepalive",
    "forwarded_allow_ips": "forwarded_allow_ips",
    "limit_concurrency": "worker_connections",
    "limit_max_requests": "max_requests",
    "backlog": "backlog",
}
# uvicorn's keywords in float seconds, None for never; the settings count whole seconds, 0 for
# never.
UVICORN_SECONDS = frozenset({"ws_ping_interval", "ws_ping_timeout"})
# Choices of implementation ferrocorn makes itself (its parser is Rust's).
UVICORN_IMPLEMENTATION = frozenset({"http", "ws"})


def whole_seconds(value: Any) -> Any:
    """A duration in seconds rounded up to whole ones, so a short one does not become 0 (never);
    None is 0. Anything else is left for the setting's check to refuse."""
    if value is None:
        return 0
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return math.ceil(value)
    return value


def uvicorn_subclass(name: str) -> tuple[list[tuple[str, Any]], list[str]] | str | None:
    """For a worker class named `name` that subclasses a uvicorn worker: the settings its
    `CONFIG_KWARGS` give and the keywords without a meaning here. A message when it cannot be
    imported for a missing package; None when it is no uvicorn worker."""
    module, _, attr = name.rpartition(".")
    if not module:
        return None
    try:
        cls = getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            return None
        return (f"worker class {name!r} cannot be imported: the package {exc.name!r} it needs is "
                f"missing; ferrocorn serves ASGI applications natively with -k asgi")
    except Exception:
        return None
    mro = getattr(cls, "__mro__", ())
    if not any(f"{c.__module__}.{c.__qualname__}" in UVICORN_WORKERS for c in mro):
        return None
    settings: list[tuple[str, Any]] = []
    ignored: list[str] = []
    for key, value in dict(getattr(cls, "CONFIG_KWARGS", None) or {}).items():
        setting = UVICORN_KWARGS.get(key)
        if key == "loop" and value == "none":
            continue
        if setting is not None:
            settings.append((setting, whole_seconds(value) if key in UVICORN_SECONDS else value))
        elif key not in UVICORN_IMPLEMENTATION:
            ignored.append(key)
    return settings, ignored
