"""`wsgi.early_hints`: each call sends a `103 Early Hints` response with the given headers
ahead of the final one, on HTTP/1.1; nothing for HTTP/1.0 clients or once the response head
is out. Read off a raw socket, so the order of the responses on the wire is what is checked.
Apps in tests/apps/e_hints.py."""

from __future__ import annotations

import pytest
from conftest import SocketReader, read_all, req

pytestmark = pytest.mark.timeout(60)

APP = "e_hints:app"


@pytest.fixture
def hints_server(run_server, worker_args):
    # Bodies past one byte stream through wsgi.input, so the app runs before the body is in.
    srv = run_server(*worker_args, "--body-buffer-size", "1", APP)
    srv.wait_ready()
    return srv


def test_each_call_sends_a_103_before_the_response(hints_server):
    with hints_server.connect() as s:
        s.sendall(req("POST", "/two", {"Content-Length": "3"}) + b"b")
        r = SocketReader(s)
        status, headers, raw = r.head()
        assert (status, headers) == (103, {"link": "</s.css>; rel=preload; as=style"}), raw
        assert raw.startswith(b"HTTP/1.1 103 Early Hints\r\n")
        status, headers, raw = r.head()
        assert status == 103, raw
        assert raw == (b"HTTP/1.1 103 Early Hints\r\nLink: </a.js>; rel=preload; as=script\r\n"
                       b"X-Hint: caf\xe9\r\n\r\n")
        # The application is still running, waiting for this: the hints were sent at once.
        s.sendall(b"ye")
        status, headers, body, _ = r.response()
    assert status == 200
    assert body == b"None None bye"


def test_http_10_client_gets_no_hint(hints_server):
    with hints_server.connect() as s:
        s.sendall(req("GET", "/one", version="HTTP/1.0"))
        data = read_all(s)
    assert data.startswith(b"HTTP/1.0 200 OK\r\n"), data[:200]
    assert b"103" not in data.split(b"\r\n\r\n", 1)[0]
    assert data.endswith(b"\r\n\r\nNone")


@pytest.mark.parametrize("path", ["/invalid", "/started"])
def test_invalid_or_late_hints_send_nothing(hints_server, path):
    with hints_server.connect() as s:
        s.sendall(req("GET", path, {"Connection": "close"}))
        r = SocketReader(s)
        status, _, body, raw = r.response()
        rest = r.read_to_close()
    assert status == 200, raw
    assert rest == b""
    if path == "/invalid":
        # Invalid names and values are refused as start_response refuses them, and a list
        # holding one sends none of the others.
        assert body == b"ValueError ValueError ValueError ValueError"
    else:
        assert body == b"started None"
