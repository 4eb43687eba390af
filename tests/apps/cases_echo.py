"""The application behind the request cases (tests/cases, tests/test_conformance.py).

`app` answers 200 with a JSON object describing the request as the environ gave it: method,
`RAW_URI`, protocol, `PATH_INFO`, `QUERY_STRING`, every `HTTP_*` key plus `CONTENT_TYPE` and
`CONTENT_LENGTH` (under `headers`), and the body read from `wsgi.input`, all as latin-1
text. With MARKER in the environment it appends `METHOD RAW_URI` to that file once the body is
read, so a test can tell which requests reached the application.
"""

import json
import os


def app(environ, start_response):
    body = environ["wsgi.input"].read()
    headers = {k: v for k, v in environ.items()
               if k.startswith("HTTP_") or k in ("CONTENT_TYPE", "CONTENT_LENGTH")}
    marker = os.environ.get("MARKER")
    if marker:
        with open(marker, "a", encoding="latin-1") as f:
            f.write(f"{environ['REQUEST_METHOD']} {environ.get('RAW_URI', '')}\n")
    out = json.dumps({
        "method": environ["REQUEST_METHOD"],
        "raw_uri": environ.get("RAW_URI"),
        "protocol": environ["SERVER_PROTOCOL"],
        "path_info": environ.get("PATH_INFO"),
        "query_string": environ.get("QUERY_STRING"),
        "headers": headers,
        "body": body.decode("latin-1"),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(out)))])
    return [out]
