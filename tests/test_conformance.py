"""The HTTP/1.1 + WSGI conformance harness (`../shared/conformance`) run against the server.

Each worker class gets one harness run over both case sets. The test asserts that Gunicorn's own
request corpus (`cases/gunicorn`) passes whole — at least 142 passed, none failed, as Gunicorn
itself scores — and prints the harness's score line for the full run so it shows in the log.
The one exception: cases that send an HTTP/1.1 request without `Host` expect it served, and
RFC 9112 section 3.2 requires a 400 (docs/security.md); such a case must fail exactly that way.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SERVER_COMMAND, server_env

REPO_ROOT = Path(__file__).resolve().parent.parent
HARNESS_DIR = REPO_ROOT.parent / "shared" / "conformance"
GUNICORN_CORPUS_MIN_PASSED = 142

pytestmark = pytest.mark.timeout(600)

COMMANDS = {
    "sync": "-b 127.0.0.1:{port} echo_app:app",
    "gthread": "-k gthread --threads 4 -b 127.0.0.1:{port} echo_app:app",
}


ESCAPES = {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"0": b"\0", b"\\": b"\\"}


def sends_http11_without_host(case_file: Path) -> bool:
    """Whether a case's byte stream holds an HTTP/1.1 request head without a Host field."""
    # The harness's `.http` format: real newlines are layout; escapes stand for bytes.
    layout = case_file.read_bytes().replace(b"\n", b"")
    data = re.sub(rb"\\(x[0-9a-fA-F]{2}|[rnt0\\])",
                  lambda m: bytes([int(m[1][1:], 16)]) if m[1][:1] == b"x" else ESCAPES[m[1]], layout)
    heads = re.finditer(rb"[!-~]+ [!-~]+ HTTP/1\.1\r\n((?:[^\r\n]+\r\n)*)\r\n", data)
    return any(not re.search(rb"(?im)^host:", head[1]) for head in heads)


@pytest.mark.parametrize("worker_class", list(COMMANDS))
def test_conformance(worker_class, tmp_path, capsys):
    assert (HARNESS_DIR / "run.py").is_file(), f"conformance harness not found at {HARNESS_DIR}"
    harness = tmp_path / "conformance"
    shutil.copytree(HARNESS_DIR, harness)
    server = " ".join(shlex.quote(part) for part in SERVER_COMMAND) + " " + COMMANDS[worker_class]
    results = tmp_path / "results.json"
    proc = subprocess.run(  # noqa: PLW1510 - the exit status is checked by the caller
        [sys.executable, "run.py", "--server", server, "--cases", "cases/gunicorn", "cases/extra",
         "--json", str(results), "--log", str(tmp_path / "server.log")],
        cwd=harness, env=server_env(), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=540,
    )
    output = proc.stdout.strip()
    assert proc.returncode == 0, f"harness broke (exit {proc.returncode}):\n{output}"
    last_line = output.splitlines()[-1] if output else ""
    assert re.match(r"conformance: \d+ passed, \d+ failed", last_line), output

    cases = json.loads(results.read_text())["results"]
    corpus = [c for c in cases if c["case"].startswith("gunicorn/")]
    passed = sum(c["outcome"] == "pass" for c in corpus)
    failed = [c for c in corpus if c["outcome"] == "fail"]
    no_host = [c for c in failed if re.match(r"request #\d+ answered 400 ", c["reason"])
               and sends_http11_without_host(harness / "cases" / f"{c['case']}.http")]
    failed = [c for c in failed if c not in no_host]
    corpus_line = (f"gunicorn corpus: {passed} passed, {len(failed)} failed, "
                   f"{len(no_host)} refused for lack of Host")

    with capsys.disabled():
        print(f"\n[{worker_class}] {last_line}\n[{worker_class}] {corpus_line}", flush=True)

    failures = "\n".join(f"FAIL {c['case']}: {c['reason']}" for c in failed)
    assert not failed and passed + len(no_host) >= GUNICORN_CORPUS_MIN_PASSED, \
        f"{corpus_line}\n{failures}\n\n{output}"
