"""Import the WSGI application named by APP_MODULE (`module:variable` or `module:factory(...)`)."""

from __future__ import annotations

import ast
import importlib
import os
from typing import Any, Callable


class AppImportError(Exception):
    """APP_MODULE does not name a usable application. The message says what is wrong."""


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
        raise AppImportError(f"No module named {module!r}.{hint}") from None
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
