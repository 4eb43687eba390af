"""ASGI applications for tests/test_asgi_http2.py: HTTP/2 streams, informational responses
and trailers."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

# Requests of this worker running at once, the most seen, and the disconnects seen.
_state = {"in_flight": 0, "peak": 0, "disconnects": 0}


async def _read_body(receive: Any) -> bytes:
    data = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return data
        data += message.get("body", b"")
        if not message.get("more_body"):
            return data


async def _json(send: Any, value: object, status: int = 200) -> None:
    body = json.dumps(value).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _sleep(scope: dict, send: Any) -> None:
    """Holds the request for `?ms` milliseconds, counting the requests held at once."""
    ms = int(scope["query_string"].decode().partition("=")[2] or "200")
    _state["in_flight"] += 1
    _state["peak"] = max(_state["peak"], _state["in_flight"])
    try:
        await asyncio.sleep(ms / 1000)
    finally:
        _state["in_flight"] -= 1
    await _json(send, {"peak": _state["peak"]})


async def _trailers(scope: dict, send: Any) -> None:
    offered = "http.response.trailers" in scope.get("extensions", {})
    await send({"type": "http.response.start", "status": 200, "trailers": offered,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"part one, ", "more_body": True})
    await send({"type": "http.response.body", "body": b"part two"})
    # Sent whether offered or not: where they are not, they are dropped.
    await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc123")],
                "more_trailers": True})
    await send({"type": "http.response.trailers", "headers": [(b"x-status", b"done")]})


async def _hints(scope: dict, receive: Any, send: Any) -> None:
    await send({"type": "http.response.informational", "status": 103,
                "headers": [(b"link", b"</s.css>; rel=preload; as=style")]})
    # The client reads the hint while the application still waits for the body.
    body = await _read_body(receive)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hinted " + body})


async def _bad_hint(scope: dict, send: Any) -> None:
    """An informational response refused: a 101, or one after the start; the application
    then answers normally if it can."""
    kind = scope["query_string"].decode()
    try:
        if kind == "late":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.informational", "status": 103, "headers": []})
        else:
            await send({"type": "http.response.informational", "status": 101, "headers": []})
    except (RuntimeError, ValueError) as e:
        if kind != "late":
            await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": f"refused: {e}".encode()})


async def _wait_disconnect(receive: Any, send: Any) -> None:
    """Starts a streamed response, then waits for the client to leave."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"waiting", "more_body": True})
    while (await receive())["type"] != "http.disconnect":
        pass
    _state["disconnects"] += 1


async def _cut(scope: dict, send: Any) -> None:
    """A response that does not reach its end: the application raises, returns early, or
    gives fewer bytes than its Content-Length; or starts and never sends the head."""
    kind = scope["query_string"].decode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]})
    if kind == "unsent":
        return
    await send({"type": "http.response.body", "body": b"partial", "more_body": kind != "short"})
    if kind == "raise":
        raise RuntimeError("cut short")


async def app(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path == "/scope":
        await _json(send, {"http_version": scope["http_version"], "scheme": scope["scheme"],
                           "extensions": scope.get("extensions")})
    elif path == "/sleep":
        await _sleep(scope, send)
    elif path == "/echo":
        body = await _read_body(receive)
        await _json(send, {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()})
    elif path == "/stream":
        # No Content-Length: the end of the stream ends the body.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(50):
            await send({"type": "http.response.body", "body": b"%d," % i * 1000, "more_body": True})
        await send({"type": "http.response.body", "body": b"end"})
    elif path == "/trailers":
        await _trailers(scope, send)
    elif path == "/hints":
        await _hints(scope, receive, send)
    elif path == "/bad-hint":
        await _bad_hint(scope, send)
    elif path == "/cut":
        await _cut(scope, send)
    elif path == "/wait-disconnect":
        await _wait_disconnect(receive, send)
    elif path == "/disconnects":
        await _json(send, {"disconnects": _state["disconnects"]})
    else:
        await _json(send, {"error": "not found"}, 404)


def wsgi_app(environ: dict, start_response: Any) -> list[bytes]:
    """Gunicorn's HTTP/2 trailers for WSGI: `gunicorn.http2.send_trailers`, HTTP/2 only."""
    send_trailers = environ.get("gunicorn.http2.send_trailers")
    start_response("200 OK", [("Content-Type", "text/plain")])
    if send_trailers is None:
        return [b"not offered"]
    send_trailers([("x-checksum", "abc123"), ("x-status", "done")])
    return [b"offered"]
