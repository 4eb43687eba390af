"""ASGI WebSocket applications that answer the handshake with an HTTP response (the
`websocket.http.response` extension), for tests/test_asgi_ws_denial.py."""

from __future__ import annotations

from typing import Any


async def app(scope: dict, receive: Any, send: Any) -> None:
    """Paths pick the behaviour:

    /deny: 401 with a header and a body in two parts; /length: a body with its Content-Length;
    /extensions: accepts and sends the scope's extensions; /accept-after: starts a response,
    then accepts (an error); /twice: a complete response, then another body (an error);
    /raise: starts a response, then raises; /receive: waits on `receive` while denying and
    reports what it got in the body's second part."""
    if scope["type"] == "lifespan":
        raise RuntimeError("no lifespan")
    assert (await receive())["type"] == "websocket.connect"
    path = scope["path"]
    if path == "/extensions":
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": repr(scope.get("extensions"))})
        await send({"type": "websocket.close"})
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
