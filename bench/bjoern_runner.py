"""Runs a WSGI app under bjoern: python bjoern_runner.py MODULE:ATTR HOST PORT.

bjoern has no command line of its own; it serves in this one process (no master). MODULE is
imported from the current directory."""

import importlib
import os
import sys

import bjoern


def main() -> None:
    sys.path.insert(0, os.getcwd())
    target, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    module_name, _, attr = target.partition(":")
    app = getattr(importlib.import_module(module_name), attr or "app")
    bjoern.run(app, host, port)


if __name__ == "__main__":
    main()
