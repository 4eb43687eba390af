"""Real frameworks behind the server: a Flask app and a Django project made by `startproject`.

Both are served with two workers over each worker class and driven with `requests` over real
sockets.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import requests
from conftest import booted_worker_pids

pytestmark = pytest.mark.timeout(90)


# --- Flask ---------------------------------------------------------------------------------------


@pytest.fixture
def flask_server(run_server, worker_args):
    srv = run_server(*worker_args, "-w", "2", "flask_app:app")
    return srv


def test_flask_json(flask_server):
    r = requests.get(f"{flask_server.url}/json?a=1&a=2&b=x", headers={"X-Test-Header": "hi"}, timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    data = r.json()
    assert data["framework"] == "flask"
    assert data["method"] == "GET"
    assert data["path"] == "/json"
    assert data["args"] == {"a": ["1", "2"], "b": ["x"]}
    assert data["scheme"] == "http"
    assert data["header"] == "hi"


def test_flask_form_post(flask_server):
    r = requests.post(f"{flask_server.url}/form", data={"name": "Zoë", "tags": ["a", "b"]}, timeout=10)
    assert r.status_code == 200
    data = r.json()
    assert data["form"] == {"name": ["Zoë"], "tags": ["a", "b"]}
    assert data["content_type"] == "application/x-www-form-urlencoded"


def test_flask_binary_post_roundtrip(flask_server):
    payload = bytes(range(256)) * 1024
    r = requests.post(f"{flask_server.url}/echo", data=payload, timeout=20)
    assert r.status_code == 200
    assert r.content == payload


def test_flask_chunked_upload(flask_server):
    parts = [b"alpha-", b"beta-" * 1000, b"gamma"]
    r = requests.post(f"{flask_server.url}/echo", data=iter(parts), timeout=20)
    assert r.status_code == 200
    assert r.content == b"".join(parts)


def test_flask_streaming_response(flask_server):
    with requests.get(f"{flask_server.url}/stream?n=50", stream=True, timeout=10) as r:
        assert r.status_code == 200
        assert "content-length" not in {k.lower() for k in r.headers}
        assert r.headers.get("Transfer-Encoding", "").lower() == "chunked"
        lines = [line for line in r.iter_lines() if line]
    assert lines == [f"chunk {i}".encode() for i in range(50)]


def test_flask_404(flask_server):
    r = requests.get(f"{flask_server.url}/missing", timeout=10)
    assert r.status_code == 404
    assert b"Not Found" in r.content


def test_flask_keep_alive_session(flask_server):
    with requests.Session() as session:
        for i in range(10):
            r = session.get(f"{flask_server.url}/json?i={i}", timeout=10)
            assert r.status_code == 200
            assert r.json()["args"] == {"i": [str(i)]}


# --- Django --------------------------------------------------------------------------------------


VIEWS = '''
import os

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt


def meta(request):
    keys = ["REQUEST_METHOD", "PATH_INFO", "SCRIPT_NAME", "QUERY_STRING", "SERVER_PROTOCOL",
            "HTTP_X_TEST_HEADER", "CONTENT_TYPE", "wsgi.url_scheme"]
    return JsonResponse({
        "framework": "django",
        "meta": {k: request.META.get(k) for k in keys},
        "get": {k: request.GET.getlist(k) for k in request.GET},
        "secure": request.is_secure(),
        "host": request.get_host(),
        "pid": os.getpid(),
    })


@csrf_exempt
def submit(request):
    if request.method != "POST":
        return JsonResponse({"error": "POST only"}, status=405)
    return JsonResponse({"post": {k: request.POST.getlist(k) for k in request.POST},
                         "length": len(request.body)})


@csrf_exempt
def upload(request):
    body = request.body
    return JsonResponse({"length": len(body), "head": body[:16].decode("latin-1")})


def protected(request):
    return JsonResponse({"reached": True})
'''

URLS = '''
from django.urls import path

from . import views

urlpatterns = [
    path("meta/", views.meta),
    path("submit/", views.submit),
    path("upload/", views.upload),
    path("protected/", views.protected),
]
'''


@pytest.fixture(scope="module")
def django_site(tmp_path_factory) -> Path:
    """A Django project made the way users make one: `django-admin startproject`."""
    site = tmp_path_factory.mktemp("django_site")
    subprocess.run([sys.executable, "-m", "django", "startproject", "myproject", str(site)],
                   check=True, timeout=60)
    package = site / "myproject"
    (package / "views.py").write_text(textwrap.dedent(VIEWS))
    (package / "urls.py").write_text(textwrap.dedent(URLS))
    with open(package / "settings.py", "a") as f:
        f.write('\nALLOWED_HOSTS = ["*"]\nDEBUG = False\n')
    return site


@pytest.fixture
def django_server(run_server, worker_args, django_site):
    return run_server(*worker_args, "-w", "2", "--chdir", str(django_site), "myproject.wsgi:application")


def test_django_meta(django_server):
    r = requests.get(f"{django_server.url}/meta/?q=1&q=2", headers={"X-Test-Header": "hello"}, timeout=10)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["framework"] == "django"
    meta = data["meta"]
    assert meta["REQUEST_METHOD"] == "GET"
    assert meta["PATH_INFO"] == "/meta/"
    assert meta["SCRIPT_NAME"] == ""
    assert meta["QUERY_STRING"] == "q=1&q=2"
    assert meta["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert meta["HTTP_X_TEST_HEADER"] == "hello"
    assert meta["wsgi.url_scheme"] == "http"
    assert data["get"] == {"q": ["1", "2"]}
    assert data["secure"] is False
    assert data["host"] == f"127.0.0.1:{django_server.port}"


def test_django_post_form(django_server):
    r = requests.post(f"{django_server.url}/submit/", data={"a": "1", "b": ["x", "y"]}, timeout=10)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["post"] == {"a": ["1"], "b": ["x", "y"]}
    assert data["length"] == len("a=1&b=x&b=y")


def test_django_large_upload(django_server):
    payload = b"0123456789abcdef" * 65536  # 1 MiB
    r = requests.post(f"{django_server.url}/upload/", data=payload,
                      headers={"Content-Type": "application/octet-stream"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"length": len(payload), "head": "0123456789abcdef"}


def test_django_csrf_protection_still_applies(django_server):
    r = requests.post(f"{django_server.url}/protected/", data={"a": "1"}, timeout=10)
    assert r.status_code == 403


def test_django_404(django_server):
    r = requests.get(f"{django_server.url}/nowhere/", timeout=10)
    assert r.status_code == 404


def test_django_many_requests_answered_by_workers(django_server):
    pids = set()
    with requests.Session() as session:
        for i in range(20):
            r = session.get(f"{django_server.url}/meta/?i={i}", timeout=10)
            assert r.status_code == 200
            assert r.json()["get"] == {"i": [str(i)]}
            pids.add(r.json()["pid"])
    # Every answer came from one of the two booted workers, never from the master.
    assert pids <= set(booted_worker_pids(django_server)), pids
    assert django_server.proc.pid not in pids
