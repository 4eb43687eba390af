"""A config file defining every server hook. Each appends `<hook> <pid> <summary>` to the file
named by $HOOK_LOG; $HOOK_RAISE names hooks that raise instead (comma-separated). The hooks
check the objects they receive with asserts: a failed check is logged as an exception."""

import os

_RAISE = set(filter(None, os.environ.get("HOOK_RAISE", "").split(",")))


def _w(hook, summary=""):
    with open(os.environ["HOOK_LOG"], "a") as f:
        f.write("%s %d %s\n" % (hook, os.getpid(), summary))
    if hook in _RAISE:
        raise RuntimeError(f"{hook} failed on purpose")


def on_starting(server):
    assert server.pid == os.getpid()
    assert server.cfg.workers == int(os.environ.get("HOOK_WORKERS", "1"))
    assert server.cfg.worker_class_str in ("sync", "gthread")
    assert isinstance(server.cfg.address, list)
    assert server.WORKERS == {}
    server.log.info("on_starting says %s", "hi")
    _w("on_starting", "workers=%d" % server.num_workers)


def when_ready(server):
    assert server.WORKERS == {}
    _w("when_ready", f"bind={server.cfg.bind}")


def on_reload(server):
    _w("on_reload")


def nworkers_changed(server, new_value, old_value):
    assert server.num_workers == new_value
    _w("nworkers_changed", f"{new_value} {old_value}")


def pre_fork(server, worker):
    assert worker.pid == "[booting]"
    assert worker.ppid == server.pid == os.getpid()
    _w("pre_fork", "age=%d workers=%d" % (worker.age, len(server.WORKERS)))


def post_fork(server, worker):
    assert worker.pid == os.getpid()
    assert worker.ppid == server.pid == os.getppid()
    worker.from_post_fork = "kept"
    _w("post_fork", "age=%d worker_pid=%s" % (worker.age, worker.pid))


def post_worker_init(worker):
    assert worker.from_post_fork == "kept"
    assert worker.alive
    assert callable(worker.wsgi)
    assert worker.cfg.workers >= 1
    worker.log.info("post_worker_init in %s", worker.pid)
    _w("post_worker_init", "age=%d nr=%d" % (worker.age, worker.nr))


def worker_int(worker):
    _w("worker_int", f"worker_pid={worker.pid}")


def worker_abort(worker):
    _w("worker_abort", f"worker_pid={worker.pid}")


def pre_request(worker, req):
    assert req.version == (1, 1)
    assert ("HOST", "localhost") in req.headers
    assert isinstance(req.peer_addr, tuple)
    # Gunicorn's `uri` is the target as sent; path, query and fragment are its parts.
    assert req.uri == req.path + ("?" + req.query if req.query else "") + (
        "#" + req.fragment if req.fragment else ""), (req.uri, req.fragment)
    _w("pre_request", "%s %s %s nr=%d" % (req.method, req.path, req.query, worker.nr))


def post_request(worker, req, environ, resp):
    assert environ["PATH_INFO"] == req.path
    _w("post_request", "%s %s %s %d sent=%d" % (req.method, req.path, resp.status_code,
                                                 resp.status_code, resp.sent))


def pre_exec(server):
    # Runs in the forked child that is about to exec the new master (USR2).
    assert os.getppid() == server.pid
    _w("pre_exec", "master=%d" % server.pid)


def child_exit(server, worker):
    assert worker.pid not in server.WORKERS
    _w("child_exit", f"worker_pid={worker.pid}")


def worker_exit(server, worker):
    assert worker.pid == os.getpid()
    _w("worker_exit", f"worker_pid={worker.pid}")


def on_exit(server):
    _w("on_exit")
