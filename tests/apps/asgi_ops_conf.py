"""Worker hooks for the ASGI worker: each appends `<hook> <pid>` to the file named by
$HOOK_LOG."""

import os


def _w(hook):
    with open(os.environ["HOOK_LOG"], "a") as f:
        f.write("%s %d\n" % (hook, os.getpid()))


def post_worker_init(worker):
    _w("post_worker_init")


def worker_int(worker):
    _w("worker_int")


def worker_abort(worker):
    _w("worker_abort")


def worker_exit(server, worker):
    _w("worker_exit")
