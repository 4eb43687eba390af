"""Apps for the command-line tests: each answers with text naming which object served it."""

import json
import os


def _text(start_response, body: bytes, status: str = "200 OK"):
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    return _text(start_response, b"cli_app:app")


def application(environ, start_response):
    return _text(start_response, b"cli_app:application")


def create_app(*args, **kwargs):
    """A factory: the app it builds answers with the arguments it was created with."""
    created = json.dumps({"args": list(args), "kwargs": kwargs}, sort_keys=True).encode()

    def factory_app(environ, start_response):
        return _text(start_response, created)

    return factory_app


def env_app(environ, start_response):
    """Answers with the value of the process environment variable named by the path."""
    name = environ["PATH_INFO"].lstrip("/")
    return _text(start_response, json.dumps({name: os.environ.get(name)}).encode())


def pid_app(environ, start_response):
    """Answers with the pid of the worker process that served the request."""
    return _text(start_response, str(os.getpid()).encode())


notcallable = 42
