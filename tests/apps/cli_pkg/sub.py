"""A module inside a package, loaded as `cli_pkg.sub:app`."""


def app(environ, start_response):
    body = b"cli_pkg.sub:app"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
