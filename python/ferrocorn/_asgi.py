"""The ASGI worker's Python side: its event loop, and the lifespan protocol.

The loop is the worker's outer loop. The Rust runtime that serves the connections runs in
turns from loop callbacks: when its poll descriptor is readable, and on a short timer for its
own timers (see src/worker/asgi.rs). Requests never pass through here.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from ._ferrocorn import asgi_log

WORKER_BOOT_ERROR = 3


def new_loop(choice: str) -> asyncio.AbstractEventLoop:
    """The loop `asgi_loop` names: uvloop when installed (`auto`) or asked for, else asyncio."""
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            asyncio.set_event_loop(loop)
            return loop
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


class Lifespan:
    """The lifespan protocol: startup before serving, shutdown after the connections drained.

    The application runs as one task for the worker's life, receiving `lifespan.startup`
    and, at the end, `lifespan.shutdown`.
    """

    def __init__(self, app: Any, mode: str, state: dict[str, Any]) -> None:
        self.app = app
        self.mode = mode
        self.state = state
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()
        self.failure: str | None = None
        self.raised: BaseException | None = None
        self.task: asyncio.Task[None] | None = None

    async def startup(self) -> bool:
        """Runs startup. False: the worker must not serve (the reason is logged)."""
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "state": self.state,
        }
        await self.inbox.put({"type": "lifespan.startup"})
        self.task = asyncio.get_running_loop().create_task(self._main(scope))
        await self.started.wait()
        if self.failure is None:
            asgi_log("debug", "ASGI lifespan startup complete")
            return True
        self.task.cancel()
        if self.raised is not None and self.mode == "auto":
            # An application without lifespan support raises on the unknown scope type.
            asgi_log("debug", f"ASGI lifespan not supported by app: {self.failure}")
            self.task = None
            return True
        if self.raised is not None:
            asgi_log("error", "ASGI lifespan startup failed", self.raised)
        else:
            asgi_log("error", f"ASGI lifespan startup failed: {self.failure}")
        return False

    async def shutdown(self) -> None:
        """Runs shutdown, if startup ran and the application is still there."""
        task = self.task
        if task is None or task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self.stopped.wait()
        if self.failure is not None:
            asgi_log("error", f"ASGI lifespan shutdown failed: {self.failure}")
        if not task.done():
            task.cancel()
        asgi_log("debug", "ASGI lifespan shutdown complete")

    async def _main(self, scope: dict[str, Any]) -> None:
        try:
            await self.app(scope, self._receive, self._send)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.raised = exc
            self.failure = str(exc) or type(exc).__name__
        finally:
            if not self.started.is_set():
                if self.failure is None:
                    self.failure = "the application returned before startup completed"
                self.started.set()
            self.stopped.set()

    async def _receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "lifespan.startup.complete":
            self.started.set()
        elif kind == "lifespan.startup.failed":
            self.failure = message.get("message") or "lifespan.startup.failed"
            self.started.set()
        elif kind == "lifespan.shutdown.complete":
            self.stopped.set()
        elif kind == "lifespan.shutdown.failed":
            self.failure = message.get("message") or "lifespan.shutdown.failed"
            self.stopped.set()
        else:
            raise RuntimeError(f"Unexpected ASGI message '{kind}' sent in lifespan.")


def run(loop: asyncio.AbstractEventLoop, app: Any, driver: Any, lifespan: str,
        state: dict[str, Any]) -> int:
    """Serves until the worker stops; returns its exit status."""
    life = Lifespan(app, lifespan, state) if lifespan != "off" else None
    if life is not None and not loop.run_until_complete(life.startup()):
        return WORKER_BOOT_ERROR
    # What exists now (modules, the application) lives as long as the worker: out of the
    # collector's way, a full collection no longer walks it (every request allocates
    # containers: scope, messages, a task), and copy-on-write pages stay shared.
    gc.freeze()

    timer: list[asyncio.TimerHandle] = []

    def turn() -> None:
        if driver.turn():
            loop.stop()

    def tick() -> None:
        turn()
        timer[:] = [loop.call_later(driver.tick, tick)]

    for fd in driver.fds:
        loop.add_reader(fd, turn)
    loop.call_soon(tick)
    try:
        loop.run_forever()
    finally:
        for fd in driver.fds:
            loop.remove_reader(fd)
        for handle in timer:
            handle.cancel()
    if life is not None:
        loop.run_until_complete(life.shutdown())
    return 0
