"""PasteDeploy support, as `gunicorn.app.pasterapp`: loading an application from an ini file
(`--paste`), and the server runner `egg:ferrocorn#main` for `[server:main]` sections::

    [server:main]
    use = egg:ferrocorn#main
    host = 127.0.0.1
    port = 8000
    workers = 4

`host` and `port` make the `bind` address (`host` alone may list several, comma-separated),
`config` names a ferrocorn/Gunicorn config file to read first, and every other key is a setting
name. Needs the PasteDeploy package.
"""

from __future__ import annotations

import configparser
import os
from typing import Any, Callable

from ferrocorn.app.base import Application, get_default_config_file

WSGIApp = Callable[..., Any]


def get_wsgi_app(config_uri: str, name: str | None = None,
                 defaults: dict[str, str] | None = None) -> WSGIApp:
    """The application of a PasteDeploy file (`FILE`, `FILE#NAME` or any `scheme:...` URI),
    relative to the working directory, with `defaults` as the global configuration."""
    from paste.deploy import loadapp

    if ":" not in config_uri:
        config_uri = f"config:{config_uri}"
    return loadapp(config_uri, name=name, relative_to=os.getcwd(), global_conf=defaults)


def has_logging_config(config_file: str) -> bool:
    """Whether the ini file configures logging (has a `[loggers]` section)."""
    parser = configparser.ConfigParser()
    parser.read([config_file])
    return parser.has_section("loggers")


def serve(app: WSGIApp, global_conf: dict[str, Any], **local_conf: Any) -> None:
    """PasteDeploy server runner: serves `app` with the settings of the `[server:...]`
    section (`local_conf`); returns only by exiting."""
    config_file = global_conf["__file__"]
    settings_file = local_conf.pop("config", None)
    host = local_conf.pop("host", "")
    port = local_conf.pop("port", "")
    if host and port:
        local_conf["bind"] = f"{host}:{port}"
    elif host:
        local_conf["bind"] = host.split(",")

    class ServerSection(Application):
        def load_config(self) -> None:
            self.cfg.set("default_proc_name", config_file)
            if has_logging_config(config_file):
                self.cfg.set("logconfig", config_file)
            location = settings_file or get_default_config_file()
            if location:
                self.load_config_from_file(location)
            # The section's own keys win over the config file.
            for name, value in local_conf.items():
                if value is not None:
                    self.cfg.set(name.lower(), value)

        def load(self) -> WSGIApp:
            return app

    ServerSection().run()
