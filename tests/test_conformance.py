"""The HTTP/1.1 + WSGI conformance harness (`../shared/conformance`) run against the server.

Each worker class gets one harness run over both case sets. The test asserts that Gunicorn's own
request corpus (`cases/gunicorn`) passes whole — at least 142 passed, none failed, as Gunicorn
itself scores — and prints the harness's score line for the full run so it shows in the log.
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
    corpus_line = f"gunicorn corpus: {passed} passed, {len(failed)} failed"

    with capsys.disabled():
        print(f"\n[{worker_class}] {last_line}\n[{worker_class}] {corpus_line}", flush=True)

    failures = "\n".join(f"FAIL {c['case']}: {c['reason']}" for c in failed)
    assert not failed and passed >= GUNICORN_CORPUS_MIN_PASSED, f"{corpus_line}\n{failures}\n\n{output}"
