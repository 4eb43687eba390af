"""`python -m ferrocorn.app.wsgiapp [OPTIONS] [APP_MODULE]`, as `gunicorn.app.wsgiapp`."""

from __future__ import annotations

import sys

from ferrocorn._ferrocorn import run as _run


def run(prog: str | None = None) -> None:
    """The `ferrocorn` command line: serves APP_MODULE with the options in `sys.argv`."""
    sys.exit(_run([prog or "ferrocorn"] + sys.argv[1:]))


if __name__ == "__main__":
    run()
