"""Load the WSGI application: import the one APP_MODULE names (`module:variable` or
`module:factory(...)`), or load it from a PasteDeploy ini file (`--paste FILE[#NAME]`)."""

from __future__ import annotations

import ast
import importlib
import os
import re
import sysconfig
import traceback
from typing import Any, Callable


class AppImportError(Exception):
    """APP_MODULE does not name a usable application. The message says what is wrong."""


class AppMissing(AppImportError):
    """APP_MODULE's module, or what a PasteDeploy file names (section, module, factory), does
    not exist. Gunicorn lets those errors through, which makes them a failed worker boot
    (exit 3) rather than a failed app load (exit 4)."""


def _parse_target(target: str) -> tuple[str, tuple[Any, ...], dict[str, Any], bool]:
    """`name` or `name(literal args)` -> (name, args, kwargs, is_call)."""
    try:
        expr = ast.parse(target.strip(), mode="eval").body
    except SyntaxError:
        raise AppImportError(f"Failed to parse {target!r} as an attribute name or function call.") from None
    if isinstance(expr, ast.Name):
        return expr.id, (), {}, False
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name):
        try:
            args = tuple(ast.literal_eval(arg) for arg in expr.args)
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in expr.keywords if kw.arg}
        except ValueError:
            raise AppImportError(f"Failed to parse arguments as literal values: {target!r}.") from None
        if any(kw.arg is None for kw in expr.keywords):
            raise AppImportError(f"Failed to parse arguments as literal values: {target!r}.") from None
        return expr.func.id, args, kwargs, True
    raise AppImportError(f"Failed to parse {target!r} as an attribute name or function call.")


def _is_missing(module: str, exc: ModuleNotFoundError) -> bool:
    """Whether the import failed because `module` (or a package above it) does not exist,
    rather than because something the module imports is missing."""
    parts = module.split(".")
    prefixes = {".".join(parts[: i + 1]) for i in range(len(parts))}
    return exc.name in prefixes


def import_app(uri: str) -> Callable[..., Any]:
    module, _, target = uri.partition(":")
    target = target or "application"
    if not module:
        raise AppImportError(f"No module given in {uri!r}; expected MODULE:VARIABLE.")
    name, args, kwargs, is_call = _parse_target(target)
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if not _is_missing(module, exc):
            raise
        hint = ""
        if module.endswith(".py") and os.path.exists(module):
            hint = f" Did you mean '{module[:-3]}:{target}'?"
        raise AppMissing(f"No module named {module!r}.{hint}") from None
    try:
        app = getattr(mod, name)
    except AttributeError:
        raise AppImportError(f"Failed to find attribute {name!r} in {module!r}.") from None
    if is_call:
        if not callable(app):
            raise AppImportError(f"{name!r} in {module!r} is not callable, so it cannot be called.")
        app = app(*args, **kwargs)
    if app is None:
        raise AppImportError(f"Failed to find application object: {target!r}")
    if not callable(app):
        raise AppImportError("Application object must be callable.")
    return app


def paste_global_conf(raw: list[str]) -> dict[str, str]:
    """`--paste-global` entries -> PasteDeploy's `global_conf`. An entry splits at its first `=`
    not preceded by a backslash; `\\=` then stands for `=` in the key and the value."""
    conf = {}
    for entry in raw:
        parts = re.split(r"(?<!\\)=", entry, maxsplit=1)
        if len(parts) != 2:
            raise AppImportError(
                f"invalid value for raw_paste_global_conf: {entry!r} (expected KEY=VALUE)")
        key, value = (p.replace("\\=", "=") for p in parts)
        conf[key] = value
    return conf


def _outside_app(exc: BaseException, paste_dir: str) -> bool:
    """Whether `exc` was raised with no frame of the application's code on the stack: only
    ferrocorn, PasteDeploy, the standard library and the import system. Such an error means
    the ini file names something missing or wrong, not that the application failed."""
    paths = sysconfig.get_paths()
    stdlib = [os.path.abspath(paths[k]) for k in ("stdlib", "platstdlib")]
    # site-packages may sit inside the standard library's directory; what is there is not it.
    installed = [os.path.abspath(paths[k]) for k in ("purelib", "platlib")]

    def under(path: str, dirs: list[str]) -> bool:
        return any(path.startswith(d + os.sep) for d in dirs)

    ours = [os.path.dirname(os.path.abspath(__file__)), paste_dir]
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
        if name.startswith("<frozen "):
            continue
        path = os.path.abspath(name)
        if under(path, ours):
            continue
        if under(path, stdlib) and not under(path, installed):
            continue
        return False
    return True


def load_paste(uri: str, raw_global_conf: list[str]) -> Callable[..., Any]:
    """The application of a PasteDeploy file: `uri` is `/abs/FILE` or `/abs/FILE#NAME` (any
    `scheme:...` URI is passed on as is), loaded relative to the working directory with the
    `--paste-global` variables."""
    try:
        import paste.deploy
    except ModuleNotFoundError as exc:
        if exc.name not in ("paste", "paste.deploy"):
            raise
        raise AppImportError(
            f"PasteDeploy is not installed; it is needed to load the application from {uri} "
            "(pip install PasteDeploy).") from None

    from ferrocorn.app.pasterapp import get_wsgi_app

    global_conf = paste_global_conf(raw_global_conf)
    try:
        app = get_wsgi_app(uri, defaults=global_conf)
    except Exception as exc:
        paste_dir = os.path.dirname(os.path.abspath(paste.deploy.__file__))
        if not _outside_app(exc, paste_dir):
            raise
        raise AppMissing(
            f"Failed to load the application from {uri}: {type(exc).__name__}: {exc}"
        ) from None
    if not callable(app):
        raise AppImportError("Application object must be callable.")
    return app


def syntax_error_app(exc: SyntaxError) -> Callable[..., Any]:
    """With --reload, the application served while the code has a syntax error: 500 and the
    traceback for every request, until fixing the file restarts the worker."""
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    body = "".join(lines).encode("utf-8", "replace")
    headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("500 Internal Server Error", headers)
        return [body]

    return app
