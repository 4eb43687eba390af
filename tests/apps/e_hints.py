"""Apps for tests/test_early_hints.py: `wsgi.early_hints` called in different states of the
response. Each answers with what the calls returned or raised."""

from __future__ import annotations

from typing import Any, Callable

PRELOAD_CSS = ("Link", "</s.css>; rel=preload; as=style")
PRELOAD_JS = ("Link", "</a.js>; rel=preload; as=script")


def _outcome(call: Callable[[], Any]) -> str:
    try:
        return repr(call())
    except Exception as exc:  # noqa: BLE001 - the test reads which exception it was
        return type(exc).__name__


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    hints = environ["wsgi.early_hints"]
    path = environ["PATH_INFO"]
    outcomes = []
    if path == "/two":
        # One hint before start_response and one after it, while the head is still unsent;
        # then wait for the rest of the body, which the client sends only once it has both.
        outcomes.append(_outcome(lambda: hints([PRELOAD_CSS])))
        start_response("200 OK", [("Content-Type", "text/plain")])
        outcomes.append(_outcome(lambda: hints([PRELOAD_JS, (b"X-Hint", b"caf\xe9")])))
        outcomes.append(environ["wsgi.input"].read().decode())
        return [" ".join(outcomes).encode()]
    if path == "/one":
        outcomes.append(_outcome(lambda: hints([PRELOAD_CSS])))
    elif path == "/invalid":
        for headers in ([("Bad Name", "x")], [("X-Ok", "a\r\nInjected: 1")], [PRELOAD_CSS, ("", "x")],
                        [("X-Wide", "\u0100")]):
            outcomes.append(_outcome(lambda h=headers: hints(h)))
    elif path == "/started":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"started ")
        outcomes.append(_outcome(lambda: hints([PRELOAD_CSS])))
        return [" ".join(outcomes).encode()]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [" ".join(outcomes).encode()]
