"""Starlette and FastAPI applications for tests/test_asgi_frameworks.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import BackgroundTasks, Depends, FastAPI, UploadFile
from fastapi.responses import StreamingResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
    yield {"greeting": "hello from lifespan"}


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.state.greeting)


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"length": len(body), "path": request.url.path,
                         "query": dict(request.query_params), "client": request.client.host})


starlette_app = Starlette(routes=[Route("/", home), Route("/echo", echo, methods=["POST"])],
                          lifespan=lifespan)

api = FastAPI()


def settings() -> dict[str, str]:
    return {"name": "dependency"}


@api.get("/items/{item_id}")
async def item(item_id: int, cfg: Annotated[dict[str, str], Depends(settings)]) -> dict[str, Any]:
    return {"item_id": item_id, "from": cfg["name"]}


@api.get("/stream")
async def stream() -> StreamingResponse:
    async def parts() -> AsyncIterator[bytes]:
        for i in range(5):
            await asyncio.sleep(0)
            yield f"line {i}\n".encode()

    return StreamingResponse(parts(), media_type="text/plain")


def _record(text: str) -> None:
    with open(os.path.join(os.environ["MARKER_DIR"], "background"), "w") as f:
        f.write(text)


@api.post("/background")
async def background(tasks: BackgroundTasks) -> dict[str, bool]:
    tasks.add_task(_record, "ran after the response")
    return {"queued": True}


@api.post("/upload")
async def upload(file: UploadFile) -> dict[str, Any]:
    data = await file.read()
    return {"filename": file.filename, "size": len(data), "head": data[:4].decode()}
