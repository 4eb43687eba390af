"""Raw ASGI applications for tests/test_asgi.py."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any


async def _body(receive: Any) -> tuple[bytes, int]:
    """The whole request body and the count of `http.request` events it came in."""
    data, events = b"", 0
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        events += 1
        data += message["body"]
        if not message.get("more_body"):
            return data, events


async def _answer(send: Any, status: int, body: bytes, headers: list | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": headers or [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


def _touch(name: str, text: str = "") -> None:
    """Leaves a marker file in MARKER_DIR for the test to wait on."""
    with open(os.path.join(os.environ["MARKER_DIR"], name), "w") as f:
        f.write(text)


async def app(scope: dict, receive: Any, send: Any) -> None:
    """Routes by path; supports lifespan (state["started"] is set at startup)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["started"] = "yes"
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if "MARKER_DIR" in os.environ:
                    _touch("shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path.startswith("/scope"):
        shown = {k: v for k, v in scope.items() if k not in ("headers", "state")}
        shown["headers"] = [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]]
        shown["state"] = dict(scope.get("state") or {})
        for key in ("raw_path", "query_string"):
            shown[key] = scope[key].decode("latin-1")
        shown["loop"] = type(asyncio.get_running_loop()).__module__
        shown["task"] = asyncio.current_task() is not None
        scope["state"]["mutated"] = True  # must not reach the next request
        await _answer(send, 200, json.dumps(shown).encode(), [(b"content-type", b"application/json")])
    elif path == "/echo":
        data, events = await _body(receive)
        await _answer(send, 200, data, [(b"x-events", str(events).encode())])
    elif path == "/boom":
        raise RuntimeError("boom before start")
    elif path.startswith("/status/"):
        await _answer(send, int(path.rsplit("/", 1)[1]), b"should not be sent")
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(3):
            await send({"type": "http.response.body", "body": b"part%d;" % i, "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b""})
    elif path == "/close":
        await _answer(send, 200, b"bye", [(b"connection", b"close")])
    elif path == "/slow":
        if "MARKER_DIR" in os.environ:
            _touch("slow")
        await asyncio.sleep(float(scope["query_string"] or b"1"))
        await _answer(send, 200, b"slow done")
    elif path == "/wait-disconnect":
        message = await receive()  # the (empty) body
        message = await receive()
        _touch("disconnect", message["type"])
    elif path == "/block":
        time.sleep(30)  # blocks the event loop: the heartbeat stops
    elif path == "/forever":
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            _touch("cancelled")
            raise
    else:
        await _answer(send, 200, b"hello")


async def failing_lifespan(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})
        return
    await _answer(send, 200, b"unreachable")


async def no_lifespan(scope: dict, receive: Any, send: Any) -> None:
    """An application that knows only HTTP, as many do."""
    assert scope["type"] == "http", f"unsupported scope {scope['type']}"
    await _answer(send, 200, b"plain")


class FactoryTask(asyncio.Task):
    """The kind of task task_app's factory makes (a name would not do: Python 3.13's
    create_task renames a factory's task)."""


async def task_app(scope: dict, receive: Any, send: Any) -> None:
    """Answers whether the request runs in a task, and in one the loop's task factory made;
    with TASK_FACTORY set, lifespan startup installs that factory."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if os.environ.get("TASK_FACTORY"):
                    loop = asyncio.get_running_loop()

                    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> Any:
                        return FactoryTask(coro, loop=loop, **kw)

                    loop.set_task_factory(factory)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    task = asyncio.current_task()
    before = {"in_task": task is not None, "kind": type(task).__name__}
    await asyncio.sleep(0)
    after = asyncio.current_task() is task
    await _answer(send, 200, json.dumps({**before, "same_after_wait": after}).encode())
