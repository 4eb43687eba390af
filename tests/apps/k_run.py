"""`ferrocorn.run(app, **settings)`."""

import ferrocorn


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"run"]


if __name__ == "__main__":
    ferrocorn.run(app, bind="127.0.0.1:0", workers=1)
