"""The ASGI worker (`-k asgi`) over raw sockets: the scope, bodies, responses, disconnects,
lifespan and stops, on asyncio and on uvloop."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import pytest
from conftest import SocketReader, booted_worker_pids, read_all, req, run_command, wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["asyncio", "uvloop"])
def asgi_loop(request) -> str:
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    return request.param


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    path = tmp_path / "markers"
    path.mkdir()
    return path


@pytest.fixture
def server(run_server, asgi_loop, markers):
    return run_server("-k", "asgi", "--asgi-loop", asgi_loop, "asgi_apps:app",
                      env={"MARKER_DIR": str(markers)})


def exchange(sock: socket.socket, raw: bytes, head_request: bool = False):
    sock.sendall(raw)
    return SocketReader(sock).response(head_request)


def test_scope(server, asgi_loop):
    with server.connect() as s:
        raw = req("GET", "/scope/caf%C3%A9%2Fx?a=1&b=%20", headers={"X-Thing": "One", "x-thing": "two"})
        status, headers, body, _ = exchange(s, raw)
    assert status == 200
    assert headers["content-type"] == "application/json"
    scope = json.loads(body)
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/scope/café/x"
    assert scope["raw_path"] == "/scope/caf%C3%A9%2Fx"
    assert scope["query_string"] == "a=1&b=%20"
    assert scope["root_path"] == ""
    assert ["x-thing", "One"] in scope["headers"] and ["x-thing", "two"] in scope["headers"]
    assert ["host", "localhost"] in scope["headers"]
    host, port = server.host_port
    assert scope["server"] == [host, port]
    assert scope["client"][0] == "127.0.0.1" and scope["client"][1] > 0
    assert scope["state"] == {"started": "yes"}
    assert scope["loop"].startswith(asgi_loop)
    assert scope["task"] is True


def test_state_is_copied_per_request(server):
    with server.connect() as s:
        first = json.loads(exchange(s, req("GET", "/scope"))[2])
        second = json.loads(exchange(s, req("GET", "/scope"))[2])
    assert first["state"] == second["state"] == {"started": "yes"}


def test_keep_alive_and_pipelining(server):
    with server.connect() as s:
        s.sendall(req("GET", "/") + req("POST", "/echo", body=b"abc") + req("GET", "/"))
        reader = SocketReader(s)
        answers = [reader.response() for _ in range(3)]
    assert [a[0] for a in answers] == [200, 200, 200]
    assert [a[2] for a in answers] == [b"hello", b"abc", b"hello"]
    assert answers[0][1]["connection"] == "keep-alive"
    assert answers[0][1]["content-length"] == "5"


def test_connection_close_when_asked_and_by_app(server):
    with server.connect() as s:
        status, headers, body, _ = exchange(s, req("GET", "/", headers={"Connection": "close"}))
        assert (status, body, headers["connection"]) == (200, b"hello", "close")
        assert read_all(s) == b""
    with server.connect() as s:
        status, headers, body, _ = exchange(s, req("GET", "/close"))
        assert (status, body, headers["connection"]) == (200, b"bye", "close")
        assert read_all(s) == b""


def test_chunked_upload_streams_in_events(server):
    parts = [b"a" * 70000, b"b" * 100000, b"c"]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    with server.connect() as s:
        raw = req("POST", "/echo", headers={"Transfer-Encoding": "chunked"}) + chunked
        status, headers, body, _ = exchange(s, raw)
    assert status == 200
    assert body == b"".join(parts)
    assert int(headers["x-events"]) >= 1


def test_large_content_length_body(server):
    payload = bytes(range(256)) * 4096 * 3  # 3 MiB: more than the driver buffers ahead
    with server.connect() as s:
        status, headers, body, _ = exchange(s, req("POST", "/echo", body=payload))
    assert status == 200 and body == payload
    assert int(headers["x-events"]) > 1


def test_malformed_chunked_body_never_reaches_app(server):
    with server.connect() as s:
        raw = req("POST", "/echo", headers={"Transfer-Encoding": "chunked"}) + b"zz\r\nhello\r\n0\r\n\r\n"
        status, _, _, _ = exchange(s, raw)
    assert status == 400


def test_streaming_response_is_chunked(server):
    with server.connect() as s:
        status, headers, body, _ = exchange(s, req("GET", "/stream"))
    assert status == 200
    assert headers["transfer-encoding"] == "chunked"
    assert body == b"part0;part1;part2;"


def test_http_1_0_streaming_closes(server):
    with server.connect() as s:
        s.sendall(req("GET", "/stream", version="HTTP/1.0"))
        data = read_all(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK")
    assert b"Connection: close" in head
    assert body == b"part0;part1;part2;"


@pytest.mark.parametrize("status", [204, 304])
def test_bodiless_statuses(server, status):
    with server.connect() as s:
        got, headers, body, raw = exchange(s, req("GET", f"/status/{status}"))
        assert got == status and body == b""
        assert "content-length" not in headers and "transfer-encoding" not in headers
        # Nothing left over on the connection: the next response follows directly.
        assert exchange(s, req("GET", "/"))[2] == b"hello"


def test_head_has_no_body(server):
    with server.connect() as s:
        status, _, _, _ = exchange(s, req("HEAD", "/"), head_request=True)
        assert status == 200
        assert exchange(s, req("GET", "/"))[2] == b"hello"


def test_exception_before_start_is_500_and_logged(server):
    with server.connect() as s:
        status, headers, _, _ = exchange(s, req("GET", "/boom"))
    assert status == 500
    server.wait_for_line(r"Exception in ASGI application GET /boom")
    server.wait_for_line(r"RuntimeError: boom before start")


def test_disconnect_event_when_client_leaves(server, markers):
    with server.connect() as s:
        s.sendall(req("GET", "/wait-disconnect"))
    wait_until(lambda: (markers / "disconnect").exists(), 10, message="http.disconnect seen")
    assert (markers / "disconnect").read_text() == "http.disconnect"


def test_app_cancelled_after_grace_period(run_server, markers):
    srv = run_server("-k", "asgi", "--asgi-disconnect-grace-period", "1", "asgi_apps:app",
                     env={"MARKER_DIR": str(markers)})
    with srv.connect() as s:
        s.sendall(req("GET", "/forever"))
    wait_until(lambda: (markers / "cancelled").exists(), 10, message="application cancelled")


def test_graceful_stop_waits_for_request_and_runs_shutdown(run_server, markers):
    srv = run_server("-k", "asgi", "asgi_apps:app", env={"MARKER_DIR": str(markers)})
    with srv.connect() as s:
        s.sendall(req("GET", "/slow?1"))
        # The request is in the application before the stop begins.
        wait_until(lambda: (markers / "slow").exists(), 10, message="request in the application")
        srv.signal(signal.SIGTERM)
        status, headers, body, _ = SocketReader(s, timeout=20).response()
    assert (status, body) == (200, b"slow done")
    assert headers["connection"] == "close"
    assert srv.wait(30) == 0
    assert (markers / "shutdown").exists()


def test_lifespan_failure_halts(run_server):
    srv = run_server("-k", "asgi", "asgi_apps:failing_lifespan", ready=False)
    assert srv.wait(30) == 3
    assert "ASGI lifespan startup failed: no database" in srv.log
    assert "Reason: Worker failed to boot." in srv.log


def test_lifespan_auto_tolerates_apps_without_it(run_server):
    srv = run_server("-k", "asgi", "asgi_apps:no_lifespan")
    with srv.connect() as s:
        assert exchange(s, req("GET", "/"))[2] == b"plain"


def test_lifespan_on_requires_it(run_server):
    srv = run_server("-k", "asgi", "--asgi-lifespan", "on", "asgi_apps:no_lifespan", ready=False)
    assert srv.wait(30) == 3
    assert "ASGI lifespan startup failed" in srv.log


@pytest.mark.parametrize("name", ["uvicorn.workers.UvicornWorker", "uvicorn_worker.UvicornWorker"])
def test_uvicorn_worker_names_run_natively(run_server, name):
    srv = run_server("-k", name, "asgi_apps:app")
    with srv.connect() as s:
        assert exchange(s, req("GET", "/"))[2] == b"hello"


def test_threads_warn_like_gunicorn(run_server):
    srv = run_server("-k", "asgi", "--threads", "4", "asgi_apps:app")
    srv.wait_for_line("ASGI worker does not use threads configuration. Use worker_connections instead.")


def test_uvicorn_subclass_by_name_maps_config_kwargs(run_server):
    srv = run_server("-k", "asgi_worker_conf.ConfigurableWorker", "asgi_apps:app")
    srv.wait_for_line(r"""CONFIG_KWARGS "proxy_headers" has no meaning in ferrocorn; ignored""")
    with srv.connect() as s:
        scope = json.loads(exchange(s, req("GET", "/scope"))[2])
    assert scope["root_path"] == "/mounted"
    assert scope["loop"].startswith("asyncio")
    assert scope["state"] == {}  # lifespan off: startup never ran


def test_subclass_needing_a_missing_package_suggests_asgi(run_server):
    srv = run_server("-k", "asgi_missing_dep.Worker", "asgi_apps:app", ready=False)
    assert srv.wait(30) != 0
    assert "'not_installed_anywhere_pkg' it needs is missing" in srv.log
    assert "-k asgi" in srv.log


def test_request_hooks(run_server, tmp_path):
    hook_log = tmp_path / "hooks.log"
    conf = Path(__file__).parent / "apps" / "asgi_hooks_conf.py"
    srv = run_server("-k", "asgi", "-c", str(conf), "asgi_apps:app", env={"HOOK_LOG": str(hook_log)})
    with srv.connect() as s:
        assert exchange(s, req("GET", "/"))[2] == b"hello"
        assert exchange(s, req("GET", "/boom"))[0] == 500
    wait_until(lambda: hook_log.exists() and hook_log.read_text().count("post") == 2, 10,
               message="post_request ran twice")
    assert hook_log.read_text().splitlines() == [
        "pre GET /", "post GET / 200 OK sent=5", "pre GET /boom", "post GET /boom 500 sent=0"]


def test_websocket_upgrade_to_an_http_only_app_is_500(server):
    # The app fails on the websocket scope before accepting: an error answer, then the close.
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    with server.connect() as s:
        status, headers, _, _ = exchange(s, req("GET", "/scope", headers=upgrade))
    assert status == 500
    assert headers["connection"] == "close"


def test_forwarded_scheme_and_underscore_headers_as_for_wsgi(server):
    headers = {"X-Forwarded-Proto": "https", "X_Under": "dropped"}
    with server.connect() as s:
        scope = json.loads(exchange(s, req("GET", "/scope", headers=headers))[2])
    assert scope["scheme"] == "https"  # 127.0.0.1 is a trusted forwarder by default
    assert "x_under" not in [name for name, _ in scope["headers"]]


def test_proxy_protocol_gives_the_client(run_server):
    srv = run_server("-k", "asgi", "--proxy-protocol", "v1", "asgi_apps:app")
    with srv.connect() as s:
        raw = b"PROXY TCP4 192.0.2.7 198.51.100.1 4321 80\r\n" + req("GET", "/scope")
        scope = json.loads(exchange(s, raw)[2])
    assert scope["client"] == ["192.0.2.7", 4321]


def test_access_log(run_server):
    srv = run_server("-k", "asgi", "--access-logfile", "-", "--access-logformat",
                     "%(h)s %(r)s %(s)s %(b)s %({content-type}o)s", "asgi_apps:app")
    with srv.connect() as s:
        assert exchange(s, req("GET", "/?x=1"))[2] == b"hello"
        assert exchange(s, req("GET", "/boom"))[0] == 500
    srv.wait_for_line(r"^127\.0\.0\.1 GET /\?x=1 HTTP/1\.1 200 5 text/plain$")
    srv.wait_for_line(r"^127\.0\.0\.1 GET /boom HTTP/1\.1 500 ")


def test_blocked_event_loop_is_detected_and_worker_replaced(run_server):
    srv = run_server("-k", "asgi", "--timeout", "2", "asgi_apps:app")
    first = srv.wait_for_line(r"Booting worker with pid: (\d+)").group(1)
    with srv.connect() as s:
        s.sendall(req("GET", "/block"))
        srv.wait_for_line(rf"WORKER TIMEOUT \(pid:{first}\)", timeout=20)
    wait_until(lambda: len(booted_worker_pids(srv)) == 2, 20, message="a new worker")
    with srv.connect() as s:
        assert exchange(s, req("GET", "/"))[2] == b"hello"


def test_max_requests_retires_worker(run_server):
    srv = run_server("-k", "asgi", "--max-requests", "2", "asgi_apps:app")
    with srv.connect() as s:
        assert exchange(s, req("GET", "/"))[1]["connection"] == "keep-alive"
        status, headers, _, _ = exchange(s, req("GET", "/"))
    assert (status, headers["connection"]) == (200, "close")
    srv.wait_for_line("Autorestarting worker after current request.")
    wait_until(lambda: len(booted_worker_pids(srv)) == 2, 20, message="a new worker")


def test_preload_and_hup(run_server):
    srv = run_server("-k", "asgi", "--preload", "asgi_apps:app")
    with srv.connect() as s:
        assert json.loads(exchange(s, req("GET", "/scope"))[2])["state"] == {"started": "yes"}
    srv.signal(signal.SIGHUP)
    wait_until(lambda: len(booted_worker_pids(srv)) == 2, 20, message="a worker after HUP")
    with srv.connect() as s:
        assert exchange(s, req("GET", "/"))[2] == b"hello"


def test_worker_connections_enforced(run_server):
    srv = run_server("-k", "asgi", "--worker-connections", "2", "--keep-alive", "30", "asgi_apps:app")
    held = [srv.connect(), srv.connect()]
    for sock in held:
        assert exchange(sock, req("GET", "/"))[0] == 200
    with srv.connect() as third:
        status, headers, body, _ = exchange(third, req("GET", "/"))
    assert (status, headers["connection"]) == (503, "close")
    for sock in held:
        assert exchange(sock, req("GET", "/"))[2] == b"hello"
        sock.close()


def test_http2_with_the_asgi_worker_passes_the_config_check():
    out = run_command(["-k", "asgi", "--http-protocols", "h2,h1", "--check-config", "asgi_apps:app"])
    assert out.returncode == 0, out.stdout
    assert "Traceback" not in out.stdout


@pytest.mark.parametrize("factory", [False, True])
def test_application_runs_in_its_task(run_server, asgi_loop, factory):
    """The application sees its own task from its first line (also where tasks start eagerly),
    and a task factory the application installs makes that task."""
    env = {"TASK_FACTORY": "1"} if factory else {}
    srv = run_server("-k", "asgi", "--asgi-loop", asgi_loop, "asgi_apps:task_app", env=env)
    with srv.connect() as s:
        status, _, body, _ = exchange(s, req("GET", "/"))
    assert status == 200
    seen = json.loads(body)
    assert seen["in_task"] and seen["same_after_wait"]
    assert (seen["kind"] == "FactoryTask") == factory
