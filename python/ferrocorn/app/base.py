"""The embedding API, as `gunicorn.app.base`: subclass `BaseApplication`, set settings in
`load_config()` with `self.cfg.set(name, value)`, return the WSGI application from `load()`,
then call `run()`.

Settings are validated by ferrocorn's settings table (the same rules as the command line and
config files) as they are set; `run()` enters ferrocorn's master with them. Workers obtain the
application from `wsgi()`, which calls `load()` once: in each worker, or in the master before
forking with `preload_app`.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

from ferrocorn import _ferrocorn
from ferrocorn._hooks import Config as _HookConfig

WSGIApp = Callable[..., Any]


class Setting:
    """One setting: `name`, `section`, `value`, `default` and `desc` (its documentation)."""

    def __init__(self, name: str, section: str, default: Any, desc: str) -> None:
        self.name = name
        self.section = section
        self.default = default
        self.value = default
        self.desc = desc

    def get(self) -> Any:
        return self.value

    def set(self, value: Any) -> None:
        self.value = _ferrocorn.validate_setting(self.name, value)

    def __repr__(self) -> str:
        return f"<Setting {self.name}={self.value!r}>"


class Config:
    """`self.cfg` of an application: every setting by name in `settings`, readable as
    attributes (`cfg.workers`), set with `set(name, value)`."""

    def __init__(self, usage: str | None = None, prog: str | None = None) -> None:
        self.usage = usage
        self.prog = prog or "ferrocorn"
        self.settings: dict[str, Setting] = {
            name: Setting(name, section, default, doc)
            for name, section, default, doc in _ferrocorn.setting_table()
        }
        # What set() was given, by name: run() hands these to the server, which validates them
        # again with the same rules.
        self.explicit: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        settings = self.__dict__.get("settings", {})
        if name not in settings:
            raise AttributeError(f"No configuration setting for: {name}")
        return settings[name].get()

    def set(self, name: str, value: Any) -> None:
        """Sets a setting; raises `AttributeError` for an unknown name and `ValueError`
        naming the setting for a value its validator refuses."""
        if name not in self.settings:
            raise AttributeError(f"No configuration setting for: {name}")
        self.settings[name].set(value)
        self.explicit[name] = value

    def _view(self) -> _HookConfig:
        values = {name: s.value for name, s in self.settings.items()}
        return _HookConfig(values, str(values.get("worker_class")), str(
            values.get("proc_name") or values.get("default_proc_name") or "ferrocorn"))

    @property
    def worker_class_str(self) -> str:
        return self._view().worker_class_str

    @property
    def address(self) -> list[Any]:
        return self._view().address

    @property
    def env(self) -> dict[str, str]:
        return self._view().env

    @property
    def proc_name(self) -> str:
        return self._view().proc_name


class BaseApplication:
    """An application that configures and runs ferrocorn from Python (Gunicorn's
    `gunicorn.app.base.BaseApplication`)."""

    def __init__(self, usage: str | None = None, prog: str | None = None) -> None:
        self.usage = usage
        self.cfg: Config = None  # type: ignore[assignment]  # set by do_load_config
        self.callable: WSGIApp | None = None
        self.prog = prog
        self.logger = None
        self.do_load_config()

    def do_load_config(self) -> None:
        """Loads the configuration; a bad setting prints `Error: ...` and exits 1."""
        try:
            self.load_default_config()
            self.load_config()
        except Exception as e:
            print(f"\nError: {str(e)}", file=sys.stderr)
            sys.stderr.flush()
            sys.exit(1)

    def load_default_config(self) -> None:
        self.cfg = Config(self.usage, prog=self.prog)

    def init(self, parser: Any, opts: Any, args: Any) -> None:
        raise NotImplementedError

    def load(self) -> WSGIApp:
        """Returns the WSGI application. Override."""
        raise NotImplementedError

    def load_config(self) -> None:
        """Sets settings with `self.cfg.set(name, value)`. Override."""
        raise NotImplementedError

    def reload(self) -> None:
        self.do_load_config()

    def wsgi(self) -> WSGIApp:
        if self.callable is None:
            self.callable = self.load()
        return self.callable

    def run(self) -> None:
        """Runs the server; returns only by exiting, in the master and in every worker."""
        sys.exit(_ferrocorn.run_application(self, dict(self.cfg.explicit)))


def get_default_config_file() -> str | None:
    """The config file the command line reads without `-c`: `./ferrocorn.conf.py`, else
    `./gunicorn.conf.py`, else None."""
    for name in ("ferrocorn.conf.py", "gunicorn.conf.py"):
        path = os.path.join(os.getcwd(), name)
        if os.path.exists(path):
            return path
    return None


class Application(BaseApplication):
    """Gunicorn's `Application` layer: config files and `chdir()`."""

    def load_config_from_module_name_or_filename(self, location: str) -> dict[str, Any]:
        """Runs a config file (`PATH`, `file:PATH` or `python:MODULE`) as `-c` does and sets
        the settings it assigns; returns everything it assigned."""
        namespace = dict(_ferrocorn.read_config_file(location))
        for name, value in namespace.items():
            if name in self.cfg.settings:
                self.cfg.set(name.lower(), value)
        return namespace

    def load_config_from_file(self, filename: str) -> dict[str, Any]:
        return self.load_config_from_module_name_or_filename(filename)

    def chdir(self) -> None:
        os.chdir(self.cfg.chdir)
        if self.cfg.chdir not in sys.path:
            sys.path.insert(0, self.cfg.chdir)
