"""App behind the reverse-proxy tests: answers with JSON describing what reached it."""

import hashlib
import json


def app(environ, start_response):
    body = b""
    stream = environ["wsgi.input"]
    while True:
        chunk = stream.read(65536)
        if not chunk:
            break
        body += chunk
    keys = ["REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL", "CONTENT_LENGTH",
            "REMOTE_ADDR", "wsgi.url_scheme"]
    info = {k: environ.get(k) for k in keys}
    info["headers"] = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
    info["body_len"] = len(body)
    info["body_sha256"] = hashlib.sha256(body).hexdigest()
    out = json.dumps(info, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]
