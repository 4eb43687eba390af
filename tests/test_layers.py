"""The layer rule of docs/design.md: each folder of src/ uses only the folders below it, and
socket system calls and HTTP/1 bytes stay in their layers."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

# Bottom first; a folder may use only the folders before it.
LAYERS = [
    "config",
    "log",
    "process",
    "hooks",
    "net",
    "http",
    "driver",
    "wsgi",
    "asgi",
    "worker",
    "arbiter",
]

USE = re.compile(r"crate::(\w+)")
SOCKET_CALLS = re.compile(
    r"libc::(recv|send|sendmsg|readv|writev|sendfile|accept4?|shutdown|setsockopt|getsockopt"
    r"|bind|listen|connect|FIONREAD)\b|AsyncFd::register|\b(Tcp|Unix)(Listener|Stream)\b"
    r"|UdpSocket|socket2::"
)
HTTP1_BYTES = re.compile(r'b"HTTP/1\.[01] |b"\\r\\n|Transfer-Encoding: chunked')


def sources(folder: str) -> list[Path]:
    return sorted((SRC / folder).rglob("*.rs"))


def without_tests(text: str) -> str:
    """The file without its `#[cfg(test)] mod tests { ... }` block at the foot."""
    return text.split("#[cfg(test)]\nmod tests", 1)[0]


def test_every_folder_is_a_known_layer() -> None:
    folders = {p.name for p in SRC.iterdir() if p.is_dir()}
    assert folders == set(LAYERS)


def test_each_layer_uses_only_the_layers_below_it() -> None:
    wrong = []
    for level, folder in enumerate(LAYERS):
        allowed = set(LAYERS[:level])
        for path in sources(folder):
            for used in set(USE.findall(path.read_text())):
                if used in LAYERS and used != folder and used not in allowed:
                    wrong.append(f"{path.relative_to(SRC)} uses {used}")
    assert wrong == []


def test_no_socket_call_above_net() -> None:
    wrong = []
    for folder in LAYERS[LAYERS.index("net") + 1 :]:
        for path in sources(folder):
            for call in SOCKET_CALLS.finditer(path.read_text()):
                wrong.append(f"{path.relative_to(SRC)}: {call.group(0)}")
    assert wrong == []


def test_http1_bytes_only_in_http() -> None:
    wrong = []
    for folder in LAYERS:
        if folder == "http":
            continue
        for path in sources(folder):
            if path.name.endswith("_tests.rs"):
                continue
            for found in HTTP1_BYTES.finditer(without_tests(path.read_text())):
                wrong.append(f"{path.relative_to(SRC)}: {found.group(0)}")
    assert wrong == []
