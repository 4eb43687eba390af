"""A WebSocket echo that reports how each connection ended, for tests/test_asgi_ws_stop.py."""

from __future__ import annotations

import sys
from typing import Any


async def echo(scope: dict, receive: Any, send: Any) -> None:
    """Echoes text messages; on `websocket.disconnect` prints its code to stderr."""
    if scope["type"] == "lifespan":
        raise RuntimeError("no lifespan")
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            print(f"disconnect code {message['code']}", file=sys.stderr, flush=True)
            return
        await send({"type": "websocket.send", "text": message.get("text") or ""})
