"""The README's quick start, run as written: one shell line that creates a virtualenv, installs
this checkout into it and starts the server on the example app."""

from __future__ import annotations

import re

import pytest
from conftest import TESTS_DIR, Server, get, server_env, stop_all

REPO = TESTS_DIR.parent


def quick_start() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    lines = re.findall(r"^    (python3 -m venv .*)$", section, re.M)
    assert len(lines) == 1, "the quick start should be one command"
    return lines[0]


@pytest.mark.timeout(900)  # builds and installs ferrocorn: quick after `pip install .`, minutes from cold
def test_quick_start_installs_and_serves(tmp_path):
    line = quick_start()
    # Only where things go changes: the virtualenv outside the checkout, port 0 instead of 8000.
    venv = tmp_path / "venv"
    for old, new in ((".venv", str(venv)), ("hello:app", "-b 127.0.0.1:0 hello:app")):
        assert old in line, line
        line = line.replace(old, new)
    env = server_env({"PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    env.pop("VIRTUAL_ENV", None)
    srv = Server(["-c", line], REPO, env, command=["sh"])
    try:
        srv.wait_for_line(r"Listening at: ", timeout=840)  # after the build and install
        srv.wait_ready()
        assert (venv / "bin" / "ferrocorn").exists(), "ferrocorn was not installed in the new virtualenv"
        status, _, body = get(srv, "/")
        assert status == 200 and body.startswith(b"Hello, world!"), body
    finally:
        stop_all([srv])
