"""ASGI WebSocket applications for tests/test_asgi_websocket.py and the Autobahn run."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket


async def echo(scope: dict, receive: Any, send: Any) -> None:
    """Echoes every message; paths pick other behaviours:

    /refuse closes before accepting; /scope sends the scope as text; /close/CODE closes with
    CODE after the first message; /return returns after accepting without closing."""
    if scope["type"] == "lifespan":
        raise RuntimeError("no lifespan")
    assert (await receive())["type"] == "websocket.connect"
    path = scope["path"]
    if path == "/refuse":
        await send({"type": "websocket.close"})
        return
    subprotocol = scope["subprotocols"][0] if scope["subprotocols"] else None
    await send({"type": "websocket.accept", "subprotocol": subprotocol,
                "headers": [(b"x-accepted", b"yes")]})
    if path == "/scope":
        shown = {k: v for k, v in scope.items() if k not in ("headers", "state")}
        shown = {k: v.decode() if isinstance(v, bytes) else v for k, v in shown.items()}
        await send({"type": "websocket.send", "text": repr(sorted(shown.items()))})
    if path == "/return":
        return
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if path.startswith("/close/"):
            await send({"type": "websocket.close", "code": int(path.rsplit("/", 1)[1]),
                        "reason": "bye"})
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def starlette_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(f"starlette: {text}")


starlette_app = Starlette(routes=[WebSocketRoute("/ws", starlette_echo)])
