"""Real ASGI frameworks on `-k asgi`: Starlette with lifespan state, FastAPI (a dependency, a
streaming response, a background task, an upload) and Django's ASGI handler."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import requests
from conftest import wait_until

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_args(request) -> list[str]:
    return ["-k", "asgi", "--asgi-loop", request.param]


def test_starlette_lifespan_state_and_body(run_server, loop_args):
    srv = run_server(*loop_args, "asgi_frameworks:starlette_app")
    r = requests.get(srv.url + "/", timeout=10)
    assert (r.status_code, r.text) == (200, "hello from lifespan")
    payload = b"x" * 300_000
    r = requests.post(srv.url + "/echo?a=1", data=payload, timeout=10)
    assert r.json() == {"length": len(payload), "path": "/echo", "query": {"a": "1"}, "client": "127.0.0.1"}


def test_fastapi(run_server, loop_args, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    srv = run_server(*loop_args, "asgi_frameworks:api", env={"MARKER_DIR": str(markers)})
    with requests.Session() as s:
        r = s.get(srv.url + "/items/7", timeout=10)
        assert r.json() == {"item_id": 7, "from": "dependency"}
        r = s.get(srv.url + "/items/seven", timeout=10)
        assert r.status_code == 422
        r = s.get(srv.url + "/stream", timeout=10)
        assert r.headers["transfer-encoding"] == "chunked"
        assert r.text == "".join(f"line {i}\n" for i in range(5))
        r = s.post(srv.url + "/background", timeout=10)
        assert r.json() == {"queued": True}
        wait_until(lambda: (markers / "background").exists(), 10, message="background task")
        files = {"file": ("data.bin", b"DATA" + b"\0" * 200_000, "application/octet-stream")}
        r = s.post(srv.url + "/upload", files=files, timeout=10)
        assert r.json() == {"filename": "data.bin", "size": 200_004, "head": "DATA"}


def test_django_asgi(run_server, tmp_path):
    subprocess.run([sys.executable, "-m", "django", "startproject", "site_asgi", str(tmp_path)], check=True)
    (tmp_path / "site_asgi" / "views.py").write_text(textwrap.dedent("""
        from django.http import JsonResponse

        async def hello(request):
            return JsonResponse({"path": request.path, "method": request.method,
                                 "q": request.GET.get("q")})
    """))
    urls = tmp_path / "site_asgi" / "urls.py"
    urls.write_text(urls.read_text() + "\nfrom . import views\nurlpatterns.append(path('hello/', views.hello))\n")
    settings = tmp_path / "site_asgi" / "settings.py"
    settings.write_text(settings.read_text().replace("ALLOWED_HOSTS = []", "ALLOWED_HOSTS = ['*']"))
    srv = run_server("-k", "asgi", "site_asgi.asgi:application", cwd=tmp_path)
    r = requests.get(srv.url + "/hello/?q=zoë", timeout=10)
    assert r.status_code == 200
    assert r.json() == {"path": "/hello/", "method": "GET", "q": "zoë"}
    srv.wait_for_line(r"ASGI lifespan not supported by app|Booting worker")
