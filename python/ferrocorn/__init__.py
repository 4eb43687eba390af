"""ferrocorn: a pre-fork WSGI HTTP server with a Rust core, drop-in compatible with Gunicorn."""

from ferrocorn._ferrocorn import __version__

__all__ = ["__version__"]
