"""ASGI WebSocket applications that answer the handshake with an HTTP response (the
`websocket.http.response` extension), for tests/test_asgi_ws_denial.py."""

from __future__ import annotations

import asyncio
from typing import Any


async def app(scope: dict, receive: Any, send: Any) -> None:
    """Paths pick the behaviour:

    /deny: 401 with a header and a body in two parts; /length: a body with its Content-Length;
    /extensions: accepts and sends the scope's extensions; /accept-after: starts a response,
    then accepts (an error); /twice: a complete response, then another body (an error);
    /raise: starts a response, then raises; /receive: waits on `receive` while denying and
    reports what it got in the body's second part; /echo accepts and echoes until the client
    leaves; /slow-echo does so after waiting half a second; /refuse closes before accepting;
    /interim starts a response with status 101 (an error); /bare answers 404 with neither
    headers nor body."""
    if scope["type"] == "lifespan":
        raise RuntimeError("no lifespan")
    assert (await receive())["type"] == "websocket.connect"
    path = scope["path"]
    if path in ("/echo", "/slow-echo"):
        await echo(path, receive, send)
        return
    if path == "/refuse":
        await send({"type": "websocket.close"})
        return
    if path == "/extensions":
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": repr(scope.get("extensions"))})
        await send({"type": "websocket.close"})
        return
    if path == "/interim":
        # Not a final status: refused by `send`.
        await send({"type": "websocket.http.response.start", "status": 101})
    if path == "/bare":
        await send({"type": "websocket.http.response.start", "status": 404})
        await send({"type": "websocket.http.response.body"})
        return
    headers = [(b"content-type", b"text/plain"), (b"x-why", b"token")]
    if path == "/length":
        headers.append((b"content-length", b"8"))
    await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
    if path == "/accept-after":
        await send({"type": "websocket.accept"})
    if path == "/raise":
        raise ValueError("broken denial")
    if path == "/length":
        await send({"type": "websocket.http.response.body", "body": b"no entry"})
        return
    await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
    if path == "/receive":
        # The response is not complete yet: `receive` waits until it is.
        await send({"type": "websocket.http.response.body", "body": b"entry"})
        got = await receive()
        print(f"after denial: {got}", flush=True)
        return
    await send({"type": "websocket.http.response.body", "body": b"entry"})
    if path == "/twice":
        await send({"type": "websocket.http.response.body", "body": b"more"})


async def echo(path: str, receive: Any, send: Any) -> None:
    await send({"type": "websocket.accept"})
    if path == "/slow-echo":
        await asyncio.sleep(0.5)
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message.get("text"),
                    "bytes": message.get("bytes")})
