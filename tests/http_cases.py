"""Reader for the request cases in `tests/cases/*.cases` (the format is in tests/cases/README.md).

Used by tests/test_conformance.py and fuzz/seed.py; src/worker/corpus_tests.rs reads the same
files in Rust.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

CASES_DIR = Path(__file__).resolve().parent / "cases"
ESCAPE = re.compile(rb"\\(x[0-9A-Fa-f]{2}|[rnt0\\])")
SIMPLE_ESCAPES = {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"0": b"\0", b"\\": b"\\"}


def unescape(text: bytes) -> bytes:
    """The bytes `text` stands for: `\\r \\n \\t \\0 \\\\ \\xHH` decoded, any other backslash an error."""
    if re.search(rb"\\(?!x[0-9A-Fa-f]{2}|[rnt0\\])", text):
        raise ValueError(f"unknown escape in {text!r}")
    return ESCAPE.sub(lambda m: SIMPLE_ESCAPES.get(m.group(1)) or bytes([int(m.group(1)[1:], 16)]),
                      text)


@dataclass
class Served:
    method: str
    target: bytes
    version: str
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    body: bytes = b""


@dataclass
class Case:
    name: str
    data: bytes = b""
    settings: dict[str, int | bool | str] = field(default_factory=dict)
    served: list[Served] = field(default_factory=list)
    # "open", "close", or the status of the refusal.
    end: str | int = "open"


def setting_value(text: str) -> int | bool | str:
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return {"true": True, "false": False}.get(text, text)


def read_file(path: Path) -> list[Case]:
    cases: list[Case] = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        where = f"{path.name}:{number}"
        line = raw.rstrip(b"\r")
        if not line.strip() or line.startswith(b"#"):
            continue
        if line.startswith(b"=== "):
            cases.append(Case(line[4:].strip().decode()))
            continue
        if not cases:
            raise ValueError(f"{where}: a case starts with '=== NAME'")
        case = cases[-1]
        if case.end != "open":
            raise ValueError(f"{where}: nothing may follow '{case.end}'")
        word, _, rest = line.strip().partition(b" ")
        if line.startswith(b">"):
            case.data += unescape(line[2:] if line.startswith(b"> ") else line[1:])
        elif word == b"set":
            name, _, value = rest.decode().partition(" ")
            case.settings[name] = setting_value(value.strip())
        elif word == b"serve":
            method, target, version = rest.split()
            case.served.append(Served(method.decode(), target, version.decode()))
        elif word == b"header" and line.startswith(b" ") and case.served:
            name, colon, value = rest.partition(b":")
            if not colon:
                raise ValueError(f"{where}: 'header NAME: VALUE'")
            case.served[-1].headers.append((name.decode("latin-1"), unescape(value.strip())))
        elif word == b"body" and line.startswith(b" ") and case.served:
            case.served[-1].body = unescape(rest)
        elif word == b"refuse":
            case.end = int(rest)
        elif line.strip() == b"close":
            case.end = "close"
        else:
            raise ValueError(f"{where}: cannot read {line!r}")
    for case in cases:
        if not case.data:
            raise ValueError(f"{path.name}: case {case.name} sends nothing")
    return cases


def read_all(folder: Path = CASES_DIR) -> list[tuple[str, Case]]:
    """Every case as (`file stem`/`name`, case), in file order."""
    out = []
    for path in sorted(folder.glob("*.cases")):
        out.extend((f"{path.stem}/{case.name}", case) for case in read_file(path))
    return out
