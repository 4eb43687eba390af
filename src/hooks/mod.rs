//! Server hooks (`on_starting`, `pre_fork`, `post_request`, ...), called at the moments and
//! with the arguments Gunicorn uses, with objects from `ferrocorn._hooks` standing in for
//! Gunicorn's `Arbiter`, `Worker`, `Request` and `Response`.
//!
//! Nothing here costs anything when no hook is set: the master builds no Python objects, and a
//! worker's request cycle checks one `Option` per request.
//!
//! A hook that raises is logged with its traceback and the server goes on, except where
//! Gunicorn treats the failure as fatal: `on_starting` and `when_ready` stop the master
//! (exit 1); `post_fork` and `post_worker_init` fail the worker's boot (exit 3, which stops
//! the master with `Reason: Worker failed to boot.`).
//!
//! Worker stop hooks (`worker_int`, `worker_abort`, and `worker_exit` on a fast stop) must run
//! Python in the worker's main thread, possibly while a `sync` worker's application holds it.
//! When one is set, the worker registers a Python-level handler for INT, QUIT and ABRT
//! (`_hooks.install_stop_handler`) and its Rust signal handler chains to Python's C handler
//! instead of exiting. Python runs the handler at its next signal check: inside the running
//! application (as in Gunicorn, where the handler interrupts the application), or when the
//! event loop wakes up and asks ([`run_pending_signal_handlers`]). The handler calls the hook,
//! then the worker's exit sequence ([`exit_now`]). An application stuck in C code that never
//! checks for signals is still killed by the master (`SIGKILL` on the next timeout).

use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

use crate::config::Settings;
use crate::log;
use crate::log::python::{log_exception, request_object};
use crate::log::LoggedRequest;

/// Every server hook ferrocorn calls (`ssl_context` is refused: rustls cannot use an
/// `SSLContext`).
pub const HOOKS: [&str; 15] = [
    "on_starting",
    "on_reload",
    "when_ready",
    "pre_fork",
    "post_fork",
    "post_worker_init",
    "worker_int",
    "worker_abort",
    "pre_exec",
    "pre_request",
    "post_request",
    "child_exit",
    "worker_exit",
    "nworkers_changed",
    "on_exit",
];

fn module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    PyModule::import(py, "ferrocorn._hooks")
}

/// Whether any server hook is set.
pub fn any_set(settings: &Settings) -> bool {
    HOOKS.iter().any(|name| settings.py(name).is_some())
}

/// Calls `hook` if it is set. `Err` carries the exception, not yet logged.
fn call<'py, A>(py: Python<'py>, hook: Option<&Py<PyAny>>, args: A) -> PyResult<()>
where
    A: pyo3::call::PyCallArgs<'py>,
{
    match hook {
        Some(hook) => hook.bind(py).call1(args).map(drop),
        None => Ok(()),
    }
}

fn logged(py: Python<'_>, name: &str, result: PyResult<()>) -> bool {
    match result {
        Ok(()) => true,
        Err(err) => {
            log_exception(py, &format!("Exception in {name} hook"), &err);
            false
        }
    }
}

/// The `cfg` object: every setting, plus Gunicorn's derived properties.
pub(crate) fn make_cfg<'py>(py: Python<'py>, settings: &Settings) -> PyResult<Bound<'py, PyAny>> {
    module(py)?.getattr("Config")?.call1((
        settings.to_py_dict(py)?,
        settings.worker_class(),
        settings.proc_name(),
    ))
}

/// The master's side: the `server` object and the master hooks.
pub struct Master {
    /// The hook callables, in the order of [`HOOKS`].
    hooks: Vec<Option<Py<PyAny>>>,
    /// `None` when no hook is set: then nothing is built and every call is a no-op.
    server: Option<Py<PyAny>>,
}

impl Master {
    /// Builds the `server` object if any hook is set. `application` is the embedding
    /// application object (`BaseApplication`), `None` for the command line.
    pub fn new(
        py: Python<'_>,
        settings: &Settings,
        application: Option<&Py<PyAny>>,
        num_workers: usize,
    ) -> PyResult<Master> {
        let mut master = Master {
            hooks: Vec::new(),
            server: None,
        };
        master.configure(py, settings, application, num_workers)?;
        Ok(master)
    }

    /// Takes the hooks and `server.cfg` from `settings`, as after a HUP re-read the config.
    pub fn configure(
        &mut self,
        py: Python<'_>,
        settings: &Settings,
        application: Option<&Py<PyAny>>,
        num_workers: usize,
    ) -> PyResult<()> {
        self.hooks = HOOKS
            .iter()
            .map(|name| settings.py(name).map(|h| h.clone_ref(py)))
            .collect();
        if !any_set(settings) {
            return Ok(());
        }
        let m = module(py)?;
        let cfg = make_cfg(py, settings)?;
        if let Some(server) = &self.server {
            let server = server.bind(py);
            server.setattr("cfg", &cfg)?;
            server.setattr("proc_name", settings.proc_name())?;
            return Ok(());
        }
        let app = match application {
            Some(app) => app.bind(py).clone(),
            None => m
                .getattr("CommandLineApp")?
                .call1((&cfg, settings.app_uri.as_deref()))?,
        };
        let server = m
            .getattr("Server")?
            .call1((std::process::id(), cfg, app, num_workers))?;
        self.server = Some(server.unbind());
        Ok(())
    }

    fn hook(&self, name: &str) -> Option<&Py<PyAny>> {
        let i = HOOKS.iter().position(|h| *h == name)?;
        self.hooks.get(i)?.as_ref()
    }

    fn with_server(&self, f: impl FnOnce(Python<'_>, &Bound<'_, PyAny>)) {
        if let Some(server) = &self.server {
            Python::attach(|py| f(py, server.bind(py)));
        }
    }

    /// `on_starting(server)` / `when_ready(server)`: `false` when the hook raised (logged);
    /// the master then exits, as Gunicorn does.
    pub fn fatal(&self, name: &str) -> bool {
        let mut ok = true;
        self.with_server(|py, server| {
            ok = logged(py, name, call(py, self.hook(name), (server,)));
        });
        ok
    }

    /// A master hook taking only `server`: `on_reload`, `on_exit`, `pre_exec`.
    pub fn notify(&self, name: &str) {
        self.with_server(|py, server| {
            logged(py, name, call(py, self.hook(name), (server,)));
        });
    }

    /// `nworkers_changed(server, new_value, old_value)`; `old` is `None` on the first call.
    pub fn num_workers_changed(&self, new: usize, old: Option<usize>) {
        self.with_server(|py, server| {
            let set = server.setattr("num_workers", new);
            logged(py, "nworkers_changed", set);
            let result = call(py, self.hook("nworkers_changed"), (server, new, old));
            logged(py, "nworkers_changed", result);
        });
    }

    /// `pre_fork(server, worker)`: builds the worker object a new worker will carry.
    pub fn pre_fork(&self, age: u64) -> Option<Py<PyAny>> {
        let mut made = None;
        self.with_server(|py, server| {
            let worker = module(py).and_then(|m| {
                m.getattr("Worker")?
                    .call1((age, std::process::id(), server))
            });
            match worker {
                Ok(worker) => {
                    let _ = server.setattr("worker_age", age);
                    let result = call(py, self.hook("pre_fork"), (server, &worker));
                    logged(py, "pre_fork", result);
                    made = Some(worker.unbind());
                }
                Err(err) => log_exception(py, "Cannot create the worker object", &err),
            }
        });
        made
    }

    /// In the master after fork: the worker is known by its pid in `server.WORKERS`.
    pub fn forked(&self, pid: libc::pid_t, worker: Option<&Py<PyAny>>) {
        let Some(worker) = worker else { return };
        self.with_server(|py, server| {
            let result = worker
                .bind(py)
                .setattr("pid", pid)
                .and_then(|_| server.getattr("WORKERS")?.set_item(pid, worker.bind(py)));
            logged(py, "pre_fork", result);
        });
    }

    /// `child_exit(server, worker)` after the master reaped `pid`.
    pub fn child_exit(&self, pid: libc::pid_t) {
        self.with_server(|py, server| {
            let popped = server
                .getattr("WORKERS")
                .and_then(|w| w.call_method1("pop", (pid, py.None())));
            match popped {
                Ok(worker) if !worker.is_none() => {
                    let result = call(py, self.hook("child_exit"), (server, worker));
                    logged(py, "child_exit", result);
                }
                Ok(_) => {}
                Err(err) => log_exception(py, "Exception in child_exit hook", &err),
            }
        });
    }

    /// In a freshly forked worker: records the objects its hooks receive, then runs
    /// `post_fork(server, worker)`. `false` when `post_fork` raised (logged): the worker fails
    /// to boot, as in Gunicorn.
    pub fn post_fork(&self, py: Python<'_>, worker: Option<&Py<PyAny>>) -> bool {
        let (Some(server), Some(worker)) = (&self.server, worker) else {
            return true;
        };
        let worker = worker.bind(py);
        if let Err(err) = worker.setattr("pid", std::process::id()) {
            log_exception(py, "Exception in worker process", &err);
        }
        let hook = |name: &str| self.hook(name).map(|h| h.clone_ref(py));
        let state = WorkerHooks {
            server: server.clone_ref(py),
            worker: worker.clone().unbind(),
            post_worker_init: hook("post_worker_init"),
            worker_int: hook("worker_int"),
            worker_abort: hook("worker_abort"),
            worker_exit: hook("worker_exit"),
            requests: RequestHooks::new(py, hook("pre_request"), hook("post_request")),
        };
        let _ = WORKER.set(py, state);
        match call(py, self.hook("post_fork"), (server.bind(py), worker)) {
            Ok(()) => true,
            Err(err) => {
                log_exception(py, "Exception in worker process", &err);
                false
            }
        }
    }
}

/// A worker's hooks and the objects they receive; set once, right after fork.
struct WorkerHooks {
    server: Py<PyAny>,
    worker: Py<PyAny>,
    post_worker_init: Option<Py<PyAny>>,
    worker_int: Option<Py<PyAny>>,
    worker_abort: Option<Py<PyAny>>,
    worker_exit: Option<Py<PyAny>>,
    requests: Option<RequestHooks>,
}

static WORKER: PyOnceLock<WorkerHooks> = PyOnceLock::new();

/// Requests handled by this worker (`worker.nr`).
static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// `post_worker_init(worker)`, once the application is loaded. `false` when it raised
/// (logged): the worker fails to boot, as in Gunicorn.
pub fn post_worker_init(py: Python<'_>, app: &Py<PyAny>) -> bool {
    let Some(h) = WORKER.get(py) else { return true };
    let worker = h.worker.bind(py);
    let _ = worker.setattr("wsgi", app.bind(py));
    let result = match &h.post_worker_init {
        Some(hook) => hook.bind(py).call1((worker,)).map(drop),
        None => Ok(()),
    };
    let _ = worker.setattr("booted", true);
    match result {
        Ok(()) => true,
        Err(err) => {
            log_exception(py, "Exception in worker process", &err);
            false
        }
    }
}

/// Hands INT, QUIT and ABRT to Python when `worker_int`, `worker_abort` or `worker_exit` is
/// set, so that the hooks can run (see the module doc). Call after the worker's Rust signal
/// handlers are installed.
pub fn install_stop_handlers(py: Python<'_>) -> PyResult<()> {
    let Some(h) = WORKER.get(py) else {
        return Ok(());
    };
    if h.worker_int.is_none() && h.worker_abort.is_none() && h.worker_exit.is_none() {
        return Ok(());
    }
    let install = module(py)?.getattr("install_stop_handler")?;
    for (sig, hook, name, code) in [
        (libc::SIGINT, &h.worker_int, "worker_int", 0),
        (libc::SIGQUIT, &h.worker_int, "worker_int", 0),
        (libc::SIGABRT, &h.worker_abort, "worker_abort", 1),
    ] {
        let hook = hook.as_ref().map(|f| f.bind(py).clone());
        install.call1((sig, hook, h.worker.bind(py), name, code))?;
        crate::process::lifecycle::hand_to_python(sig);
    }
    Ok(())
}

/// Lets Python run the signal handlers a Rust handler passed on (INT, QUIT, ABRT with a hook
/// set). Those handlers end the process; returns if none was pending. Main thread only.
pub fn run_pending_signal_handlers() {
    if !crate::process::lifecycle::PY_HANDLER_PENDING.swap(false, Ordering::SeqCst) {
        return;
    }
    Python::attach(|py| {
        // SAFETY: called on the main thread with the GIL held.
        if unsafe { pyo3::ffi::PyErr_CheckSignals() } != 0 {
            if let Some(err) = PyErr::take(py) {
                log_exception(py, "Exception in a signal handler", &err);
            }
        }
    });
}

/// `worker_exit(server, worker)`, in the worker just before it exits.
pub fn worker_exit(py: Python<'_>) {
    let Some(h) = WORKER.get(py) else { return };
    let Some(hook) = &h.worker_exit else { return };
    if let Err(err) = hook.bind(py).call1((h.server.bind(py), h.worker.bind(py))) {
        log_exception(py, "Exception during worker exit", &err);
    }
}

/// A fast stop (INT, QUIT, ABRT, or after a `worker_int`/`worker_abort` hook): logs,
/// runs `worker_exit` and ends the process now, with `code`.
pub fn exit_now(code: i32) -> ! {
    log::info(format_args!("Worker exiting (pid: {})", std::process::id()));
    Python::attach(worker_exit);
    std::process::exit(code)
}

#[pyfunction]
#[pyo3(name = "_worker_exit_now")]
fn py_worker_exit_now(code: i32) {
    exit_now(code)
}

#[pyfunction]
#[pyo3(name = "_worker_requests")]
fn py_worker_requests() -> u64 {
    REQUESTS.load(Ordering::Relaxed)
}

#[pyfunction]
#[pyo3(name = "_worker_stopping")]
fn py_worker_stopping() -> bool {
    crate::process::lifecycle::worker().is_stopping()
}

fn level(n: i64) -> log::Level {
    match n {
        i64::MIN..=10 => log::Level::Debug,
        11..=20 => log::Level::Info,
        21..=30 => log::Level::Warning,
        31..=40 => log::Level::Error,
        _ => log::Level::Critical,
    }
}

#[pyfunction]
#[pyo3(name = "_log")]
fn py_log(lvl: i64, message: &str) {
    log::log(level(lvl), format_args!("{message}"));
}

#[pyfunction]
#[pyo3(name = "_log_enabled")]
fn py_log_enabled(lvl: i64) -> bool {
    log::enabled(level(lvl))
}

#[pyfunction]
#[pyo3(name = "_log_reopen")]
fn py_log_reopen() -> PyResult<()> {
    match log::reopen_all().into_iter().next() {
        Some(e) => Err(pyo3::exceptions::PyOSError::new_err(e)),
        None => Ok(()),
    }
}

/// Adds the functions `ferrocorn._hooks` uses to the `_ferrocorn` module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_worker_exit_now, m)?)?;
    m.add_function(wrap_pyfunction!(py_worker_requests, m)?)?;
    m.add_function(wrap_pyfunction!(py_worker_stopping, m)?)?;
    m.add_function(wrap_pyfunction!(py_log, m)?)?;
    m.add_function(wrap_pyfunction!(py_log_enabled, m)?)?;
    m.add_function(wrap_pyfunction!(py_log_reopen, m)?)?;
    Ok(())
}

/// `pre_request` and `post_request` in a worker, with the class of `resp`.
pub struct RequestHooks {
    pre: Option<Py<PyAny>>,
    post: Option<Py<PyAny>>,
    response_class: Py<PyAny>,
}

/// What `resp` in `post_request` shows of the response, once it is complete: a copy, so that
/// the hook may call into the response's objects freely.
pub struct ResponseView {
    /// The status line the application gave, if it called `start_response`.
    pub status: Option<String>,
    pub status_code: u16,
    pub headers: Vec<(String, String)>,
    /// Body bytes sent.
    pub sent: u64,
    pub headers_sent: bool,
}

impl RequestHooks {
    fn new(py: Python<'_>, pre: Option<Py<PyAny>>, post: Option<Py<PyAny>>) -> Option<Self> {
        if pre.is_none() && post.is_none() {
            return None;
        }
        match module(py).and_then(|m| m.getattr("Response")) {
            Ok(response_class) => Some(RequestHooks {
                pre,
                post,
                response_class: response_class.unbind(),
            }),
            Err(err) => {
                log_exception(py, "Cannot set up pre_request/post_request", &err);
                None
            }
        }
    }
}

/// The worker's request hooks; `None` (the common case) when neither is set.
pub fn request_hooks(py: Python<'_>) -> Option<&'static RequestHooks> {
    WORKER.get(py).and_then(|h| h.requests.as_ref())
}

impl RequestHooks {
    /// Builds `req` and runs `pre_request(worker, req)`. `Err` when the hook raised (logged):
    /// the request is answered 500, as in Gunicorn.
    pub fn pre_request<R: LoggedRequest>(
        &self,
        py: Python<'_>,
        request: &R,
        peer: Option<std::net::SocketAddr>,
    ) -> Result<Py<PyAny>, Py<PyAny>> {
        let req = match request_object(py, request, peer) {
            Ok(req) => req.unbind(),
            Err(err) => {
                log_exception(py, "Cannot create the request object", &err);
                return Err(py.None());
            }
        };
        if let (Some(pre), Some(h)) = (&self.pre, WORKER.get(py)) {
            if let Err(err) = pre.bind(py).call1((h.worker.bind(py), req.bind(py))) {
                log_exception(py, "Exception in pre_request hook", &err);
                return Err(req);
            }
        }
        // Gunicorn counts the request (`worker.nr`) after pre_request, before the app runs.
        REQUESTS.fetch_add(1, Ordering::Relaxed);
        Ok(req)
    }

    /// `post_request(worker, req, environ, resp)` once the response is complete; `response`
    /// is asked for only when the hook is set, and `status` stands for the application's when
    /// it gave none. A hook that raises is logged and the connection carries on.
    pub fn post_request(
        &self,
        py: Python<'_>,
        req: &Py<PyAny>,
        environ: Option<&Py<PyAny>>,
        response: impl FnOnce() -> Option<ResponseView>,
        status: u16,
    ) {
        let (Some(post), Some(h)) = (&self.post, WORKER.get(py)) else {
            return;
        };
        let environ = match environ {
            Some(environ) => environ.bind(py).clone(),
            None => PyDict::new(py).into_any(),
        };
        let resp = match response() {
            Some(r) => {
                let (status_line, code) = match r.status {
                    Some(line) => (line, r.status_code),
                    None => (status.to_string(), status),
                };
                self.response_class.bind(py).call1((
                    status_line,
                    code,
                    r.headers,
                    r.sent,
                    r.headers_sent,
                ))
            }
            None => Ok(py.None().into_bound(py)),
        };
        let result = resp.and_then(|resp| {
            post.bind(py)
                .call1((h.worker.bind(py), req.bind(py), environ, resp))
                .map(drop)
        });
        if let Err(err) = result {
            log_exception(py, "Exception in post_request hook", &err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels_follow_python_numbers() {
        assert_eq!(level(10), log::Level::Debug);
        assert_eq!(level(20), log::Level::Info);
        assert_eq!(level(30), log::Level::Warning);
        assert_eq!(level(40), log::Level::Error);
        assert_eq!(level(50), log::Level::Critical);
        assert_eq!(level(0), log::Level::Debug);
        assert_eq!(level(99), log::Level::Critical);
    }

    #[test]
    fn every_hook_is_a_setting() {
        for name in HOOKS {
            assert!(crate::config::table::index_of(name).is_some(), "{name}");
        }
    }
}
