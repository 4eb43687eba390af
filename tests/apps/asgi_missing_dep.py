"""A worker class whose module needs a package that is not installed."""

import not_installed_anywhere_pkg  # noqa: F401


class Worker:
    pass
