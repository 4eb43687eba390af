"""HTTP/1.1 conformance against the real server, in two parts.

The project's own request cases (tests/cases, read by tests/http_cases.py) always run: each
case's bytes go to a real `ferrocorn` of each worker class on one connection, and every request
the case says is served must reach `cases_echo:app` with exactly the expected environ, every
refusal must be answered with its status and close the connection, and nothing else may reach
the application (its MARKER file lists what did).

The shared HTTP/1.1 + WSGI conformance harness runs in addition when it is found beside the
repository (`../shared/conformance`, or FERROCORN_CONFORMANCE_DIR): Gunicorn's own request
corpus (`cases/gunicorn`) must pass whole — at least 142 passed, none failed, as Gunicorn itself
scores, except that a case sending an HTTP/1.1 request without `Host` must be refused with 400
(RFC 9112 section 3.2; docs/security.md) — and the harness's score line for the full run is
printed so it shows in the log. When it is not found, the test says so in the output and is skipped.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote_to_bytes

import http_cases
import pytest
from conftest import SERVER_COMMAND, SocketReader, server_env

REPO_ROOT = Path(__file__).resolve().parent.parent
HARNESS_DIR = Path(os.environ.get("FERROCORN_CONFORMANCE_DIR")
                   or REPO_ROOT.parent / "shared" / "conformance")
GUNICORN_CORPUS_MIN_PASSED = 142

pytestmark = pytest.mark.timeout(600)

WORKER_ARGS = {
    "sync": ["-k", "sync"],
    "gthread": ["-k", "gthread", "--threads", "4"],
}
CASES = http_cases.read_all()
RULE_CLASSES = sorted({name.split("/")[0] for name, _ in CASES})


# --- the project's own request cases ------------------------------------------------------------


def expected_environ(want: http_cases.Served) -> dict:
    """What `cases_echo:app` reports for a request served as `want` says."""
    target = want.target.decode("latin-1")
    path = target.split("?", 1)[0]
    if "://" in path:
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    headers: dict[str, str] = {}
    for name, value in want.headers:
        key = name.upper().replace("-", "_")
        key = key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]},{text}" if key in headers else text
    return {
        "method": want.method,
        "raw_uri": target,
        "protocol": want.version,
        "path_info": unquote_to_bytes(path).decode("latin-1"),
        "query_string": target.split("?", 1)[1] if "?" in target else "",
        "headers": headers,
        "body": want.body.decode("latin-1"),
    }


def rest_of_stream(reader: SocketReader) -> bytes:
    """What arrives until the server closes (a reset counts as a close)."""
    try:
        return reader.read_to_close()
    except ConnectionResetError:
        return reader.buf


def run_case(server, marker: Path, case: http_cases.Case) -> str | None:
    """Sends one case on a fresh connection; the reason it failed, or None."""
    before = marker.read_text("latin-1").splitlines() if marker.exists() else []
    with server.connect() as s:
        s.sendall(case.data)
        reader = SocketReader(s, timeout=10)
        for i, want in enumerate(case.served, 1):
            status, headers, body, _ = reader.response()
            if status != 200:
                return f"request #{i}: answered {status}: {body[:200]!r}"
            got, expected = json.loads(body), expected_environ(want)
            if got != expected:
                diff = {k: (got.get(k), v) for k, v in expected.items() if got.get(k) != v}
                return f"request #{i}: (got, want) {diff}"
            closing = headers.get("connection", "").lower() == "close"
            last_of_close = case.end == "close" and i == len(case.served)
            if closing != last_of_close:
                return f"request #{i}: Connection: {headers.get('connection')!r}"
        if isinstance(case.end, int):
            status, headers, body, _ = reader.response()
            if status != case.end:
                return f"refused with {status}, want {case.end}: {body[:200]!r}"
        elif case.end == "open":
            # The server is between requests: our end of the stream closes the connection.
            s.shutdown(socket.SHUT_WR)
        rest = rest_of_stream(reader)
        if rest:
            return f"unexpected bytes after the last answer: {rest[:200]!r}"
    after = marker.read_text("latin-1").splitlines() if marker.exists() else []
    reached = after[len(before):]
    want = [f"{w.method} {w.target.decode('latin-1')}" for w in case.served]
    if reached != want:
        return f"the application got {reached}, want {want}"
    return None


def config_file(folder: Path, settings: dict) -> Path:
    """A config file setting `settings` (Python literals, as Gunicorn config files take)."""
    path = folder / f"settings-{abs(hash(frozenset(settings.items())))}.py"
    path.write_text("".join(f"{name} = {value!r}\n" for name, value in settings.items()))
    return path


@pytest.mark.parametrize("rule_class", RULE_CLASSES)
@pytest.mark.parametrize("worker_class", list(WORKER_ARGS))
def test_request_cases(run_server, tmp_path, capsys, worker_class, rule_class):
    cases = [(name, case) for name, case in CASES if name.startswith(rule_class + "/")]
    assert cases, f"no cases for {rule_class} in {http_cases.CASES_DIR}"
    servers = {}
    failures = []
    for name, case in cases:
        key = tuple(sorted(case.settings.items()))
        if key not in servers:
            marker = tmp_path / f"marker-{len(servers)}"
            args = ["-c", str(config_file(tmp_path, case.settings))] if case.settings else []
            server = run_server(*WORKER_ARGS[worker_class], *args, "cases_echo:app",
                                env={"MARKER": str(marker)})
            servers[key] = (server, marker)
        server, marker = servers[key]
        reason = run_case(server, marker, case)
        if reason:
            failures.append(f"FAIL {name}: {reason}")
    with capsys.disabled():
        print(f"\n[{worker_class}] request cases {rule_class}: {len(cases) - len(failures)} passed, "
              f"{len(failures)} failed", flush=True)
    assert not failures, "\n".join(failures)


# --- the shared harness, when present -----------------------------------------------------------


ESCAPES = {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"0": b"\0", b"\\": b"\\"}


def sends_http11_without_host(case_file: Path) -> bool:
    """Whether a shared case's byte stream holds an HTTP/1.1 request head without a Host field,
    which RFC 9112 section 3.2 requires refused with 400 (docs/security.md)."""
    # The harness's `.http` format: real newlines are layout; escapes stand for bytes.
    layout = case_file.read_bytes().replace(b"\n", b"")
    data = re.sub(rb"\\(x[0-9a-fA-F]{2}|[rnt0\\])",
                  lambda m: bytes([int(m[1][1:], 16)]) if m[1][:1] == b"x" else ESCAPES[m[1]], layout)
    heads = re.finditer(rb"[!-~]+ [!-~]+ HTTP/1\.1\r\n((?:[^\r\n]+\r\n)*)\r\n", data)
    return any(not re.search(rb"(?im)^host:", head[1]) for head in heads)


@pytest.mark.parametrize("worker_class", list(WORKER_ARGS))
def test_shared_conformance_harness(worker_class, tmp_path, capsys):
    if not (HARNESS_DIR / "run.py").is_file():
        message = (f"shared conformance harness not found at {HARNESS_DIR}: not run "
                   "(the request cases in tests/cases ran)")
        with capsys.disabled():
            print(f"\n[{worker_class}] {message}", flush=True)
        pytest.skip(message)
    harness = tmp_path / "conformance"
    shutil.copytree(HARNESS_DIR, harness)
    server = " ".join(shlex.quote(part) for part in SERVER_COMMAND + WORKER_ARGS[worker_class])
    server += " -b 127.0.0.1:{port} echo_app:app"
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
