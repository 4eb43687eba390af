# A config file written the way Gunicorn's documentation shows one.
import multiprocessing
import os

workers = 2
bind = ["127.0.0.1:0"]
raw_env = ["A=B"]
timeout = max(30, multiprocessing.cpu_count())


def when_ready(server):
    server.log.info("Server is ready. Spawning workers")
    with open(os.environ["HOOK_LOG"], "a") as f:
        f.write("when_ready %d env=%s workers=%d\n" % (os.getpid(), server.cfg.env, server.cfg.workers))


def post_fork(server, worker):
    server.log.info("Worker spawned (pid: %s)", worker.pid)


def post_worker_init(worker):
    with open(os.environ["HOOK_LOG"], "a") as f:
        f.write("post_worker_init %d A=%s\n" % (os.getpid(), os.environ.get("A")))


def pre_request(worker, req):
    worker.log.debug("%s %s", req.method, req.path)


def worker_int(worker):
    worker.log.info("worker received INT or QUIT signal")


def worker_abort(worker):
    worker.log.info("worker received SIGABRT signal")
