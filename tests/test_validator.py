"""PEP 3333 cross-check: an app wrapped in `wsgiref.validate.validator`.

The validator turns each violation by the server into an AssertionError (a 500 for the request,
or `Exception ignored ... AssertionError` in the log when the server never closed a response
iterator). Every request here must be answered 200 with the right body, and the server's log must
hold no AssertionError once it has stopped.
"""

from __future__ import annotations

import hashlib

import pytest
from conftest import APPS_DIR, SocketReader

pytestmark = pytest.mark.timeout(60)


def exchange(server, raw: bytes, head_request: bool = False) -> tuple[int, dict, bytes]:
    with server.connect() as s:
        s.sendall(raw)
        status, headers, body, _ = SocketReader(s).response(head_request=head_request)
    return status, headers, body


def get_request(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()


def post_request(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def chunked_post_request(path: str, body: bytes, size: int = 1000) -> bytes:
    pieces = [body[i:i + size] for i in range(0, len(body), size)]
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode() + encoded


BODY = b"".join(b"line %05d of the request body\n" % i for i in range(2000)) + b"no newline at the end"
BODY_DIGEST = b"%d %s" % (len(BODY), hashlib.sha256(BODY).hexdigest().encode())


@pytest.fixture
def validated(run_server, worker_args):
    srv = run_server(*worker_args, "validator_app:app")
    yield srv
    # Once stopped, the whole log is in: no violation may have been reported.
    assert srv.stop() == 0, srv.log
    assert "AssertionError" not in srv.log, srv.log
    assert "Traceback" not in srv.log, srv.log


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/list", b"hello world"),
        ("/generator", b"".join(b"line %d\n" % i for i in range(10))),
        ("/write", b"written, then returned"),
        ("/file", (APPS_DIR / "validator_app.py").read_bytes()),
        ("/empty", b""),
    ],
    ids=["list", "generator", "write", "file_wrapper", "empty"],
)
def test_response_kinds(validated, path, expected):
    status, _, body = exchange(validated, get_request(path))
    assert status == 200, body
    assert body == expected


@pytest.mark.parametrize("path", ["/list", "/generator", "/write", "/file"])
def test_head(validated, path):
    status, headers, _ = exchange(validated, get_request(path, "HEAD"), head_request=True)
    assert status == 200
    assert headers.get("content-type")
    # Nothing follows the head of a HEAD response: the server closes right after it.
    with validated.connect() as s:
        s.sendall(get_request(path, "HEAD"))
        reader = SocketReader(s)
        reader.head()
        assert reader.read_to_close() == b""


@pytest.mark.parametrize("how", ["read", "readline", "readlines", "iter"])
def test_post_body_reading(validated, how):
    status, _, body = exchange(validated, post_request(f"/body/{how}", BODY))
    assert (status, body) == (200, BODY_DIGEST)


@pytest.mark.parametrize("how", ["read", "readline", "readlines", "iter"])
def test_chunked_post_body_reading(validated, how):
    # No CONTENT_LENGTH: the app reads until the stream ends (wsgi.input_terminated servers).
    status, _, body = exchange(validated, chunked_post_request(f"/body/{how}", BODY))
    assert (status, body) == (200, BODY_DIGEST)


def test_not_found_is_still_valid(validated):
    status, _, body = exchange(validated, get_request("/nothing-here"))
    assert (status, body) == (404, b"not found")
