"""ferrocorn: a pre-fork WSGI HTTP server with a Rust core, drop-in compatible with Gunicorn."""

from __future__ import annotations

from typing import Any, Callable

from ferrocorn._ferrocorn import __version__

__all__ = ["__version__", "run"]


def run(app: Callable[..., Any], **settings: Any) -> None:
    """Serves the WSGI application `app` with `settings` (names as in a config file, e.g.
    `bind="127.0.0.1:8000", workers=4`). Returns only by exiting, in the master and in every
    worker. An invalid setting prints `Error: ...` naming it and exits 1."""
    from ferrocorn.app.base import BaseApplication

    class _Application(BaseApplication):
        def load_config(self) -> None:
            for name, value in settings.items():
                self.cfg.set(name, value)

        def load(self) -> Callable[..., Any]:
            return app

    _Application().run()
