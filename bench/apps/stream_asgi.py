"""ASGI: a streamed response, CHUNKS bodies of 1 KiB sent with more_body and no Content-Length,
so HTTP/1.1 servers answer with chunked encoding."""

CHUNKS = 8
PIECE = b"x" * 1023 + b"\n"
HEADERS = [(b"content-type", b"text/plain")]


async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    for _ in range(CHUNKS - 1):
        await send({"type": "http.response.body", "body": PIECE, "more_body": True})
    await send({"type": "http.response.body", "body": PIECE})
