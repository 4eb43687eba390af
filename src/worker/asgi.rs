//! The `asgi` worker class: the asyncio loop (uvloop when installed) is the worker's outer
//! loop, on its main thread, and the worker's tokio runtime (the same connection driver as the
//! WSGI workers) runs inside it, in turns, from loop callbacks. No thread hop: a request is
//! read, handed to the application's task and answered on one thread.
//!
//! The loop learns that the runtime has work from the runtime's own poll descriptor, which it
//! watches like any reader: an epoll descriptor is readable while events wait in it, and tokio
//! wakes its poller (an event in it) whenever one of its tasks is woken from outside a turn,
//! as `receive` and `send` do. The runtime's timers (the connection timeouts, the heartbeat)
//! are not visible that way; a loop timer runs a turn every [`TICK`] for them, which is also
//! why timeouts are that much late at most. See docs/design.md for the options measured.

use std::cell::Cell;
use std::collections::HashSet;
use std::io;
use std::os::unix::io::RawFd;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokio::task::{JoinHandle, LocalSet};

use super::{spawn_serving, Mode, Worker};
use crate::asgi::cycle::{Context, Options};
use crate::asgi::scope::{ScopeBuilder, ServerAddr};
use crate::config::Settings;
use crate::exit_code;
use crate::log;
use crate::log::python::log_exception;
use crate::net::listeners::Listener;
use crate::process::lifecycle as signals;

/// How often the loop gives the runtime a turn for its timers.
const TICK: Duration = Duration::from_millis(20);
/// Rounds of polling and running tasks in one turn (see [`LoopDriver::turn`]).
const TURN_ROUNDS: usize = 2;

/// The worker's tokio runtime as the asyncio loop drives it.
#[pyclass(unsendable, module = "ferrocorn._ferrocorn")]
pub struct LoopDriver {
    runtime: tokio::runtime::Runtime,
    local: LocalSet,
    serve: Option<JoinHandle<io::Result<()>>>,
    /// The runtime's epoll descriptors, which the loop watches.
    #[pyo3(get)]
    fds: Vec<RawFd>,
    /// Seconds between timer turns.
    #[pyo3(get)]
    tick: f64,
    turning: Cell<bool>,
}

#[pymethods]
impl LoopDriver {
    /// Runs what is ready in the runtime, without waiting. True once the worker has finished
    /// serving (stopped and drained).
    fn turn(&self) -> bool {
        // A turn runs application code only through the loop, never itself: but a Python
        // callback that reached here from within a turn must not nest one.
        if self.turning.replace(true) {
            return false;
        }
        // Each yield lets the runtime poll its events without blocking, then run the tasks
        // they woke: the first round runs what was ready, the second what the events found
        // meanwhile woke (tokio marks such wakes on its poller, which would otherwise cost
        // the loop another round trip).
        self.local.block_on(&self.runtime, async {
            for _ in 0..TURN_ROUNDS {
                tokio::task::yield_now().await;
            }
        });
        self.turning.set(false);
        self.serve.as_ref().map_or(true, |s| s.is_finished())
    }
}

/// The epoll descriptors open in this process (Linux: `/proc/self/fd`).
fn epoll_fds() -> HashSet<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return HashSet::new();
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_link(e.path())
                .map(|t| t.to_string_lossy() == "anon_inode:[eventpoll]")
                .unwrap_or(false)
        })
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// A runtime and the descriptors of its poller: the epoll descriptors that appeared with it
/// (tokio duplicates its poller's descriptor for its registry: one open epoll, two numbers;
/// the loop watches one).
fn runtime_with_fds() -> io::Result<(tokio::runtime::Runtime, Vec<RawFd>)> {
    let before = epoll_fds();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match epoll_fds().difference(&before).min() {
        Some(&fd) => Ok((runtime, vec![fd])),
        None => Err(io::Error::other(
            "cannot find the event loop's poll descriptor (is /proc mounted?)",
        )),
    }
}

/// `server` of the scope for each listener.
fn servers(listeners: &[Listener]) -> Vec<ServerAddr> {
    listeners
        .iter()
        .map(|l| match l {
            Listener::Tcp(t) => match t.local_addr() {
                Ok(addr) => ServerAddr {
                    host: addr.ip().to_string(),
                    port: Some(addr.port()),
                },
                Err(_) => ServerAddr {
                    host: String::new(),
                    port: None,
                },
            },
            Listener::Unix(_, path) => ServerAddr {
                host: path.display().to_string(),
                port: None,
            },
        })
        .collect()
}

/// Runs the ASGI worker until it stops. Returns the exit status (3 when lifespan startup
/// failed).
pub(super) fn run<'py>(
    py: Python<'py>,
    mut worker: Worker,
    settings: &Settings,
    listeners: &[Listener],
    wake_fd: RawFd,
) -> i32 {
    let started = (|| -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyDict>)> {
        let module = py.import("ferrocorn._asgi")?;
        let choice = settings.str("asgi_loop").unwrap_or("auto");
        let event_loop = module.call_method1("new_loop", (choice,))?;
        let state = PyDict::new(py);
        let scope = ScopeBuilder::new(
            py,
            worker.app.environ.forwarded.clone(),
            &servers(listeners),
            settings.str("root_path").unwrap_or(""),
            Some(state.clone().unbind()),
        )?;
        let ctx = Context::new(
            py,
            worker.app.app.clone_ref(py),
            scope,
            &event_loop,
            Options {
                grace: Duration::from_secs(settings.uint("asgi_disconnect_grace_period")),
                write_timeout: worker.app.write_timeout,
                output_bound: worker.app.output_bound,
                keep_headers: worker.app.access.is_some(),
                ws_max_message: settings.uint("websocket_max_message_size") as usize,
                ws_ping_interval: match settings.uint("websocket_ping_interval") {
                    0 => None,
                    secs => Some(Duration::from_secs(secs)),
                },
                ws_ping_timeout: match settings.uint("websocket_ping_timeout") {
                    0 => None,
                    secs => Some(Duration::from_secs(secs)),
                },
            },
        )?;
        worker.mode = Mode::Asgi(std::sync::Arc::new(ctx));
        Ok((module.into_any(), event_loop, state))
    })();
    let app = worker.app.app.clone_ref(py);
    let (module, event_loop, state) = match started {
        Ok(parts) => parts,
        Err(e) => {
            log_exception(py, "Exception in worker process", &e);
            return exit_code::WORKER_BOOT_ERROR;
        }
    };
    let driver = match driver(worker, listeners, wake_fd) {
        Ok(driver) => driver,
        Err(e) => {
            log::error(format_args!("Exception in worker process: {e}"));
            return exit_code::WORKER_BOOT_ERROR;
        }
    };
    let driver = match Py::new(py, driver) {
        Ok(d) => d,
        Err(e) => {
            log_exception(py, "Exception in worker process", &e);
            return exit_code::WORKER_BOOT_ERROR;
        }
    };
    let lifespan = settings.str("asgi_lifespan").unwrap_or("auto");
    // The loop runs application code all the time: a fast stop cannot wait for a turn.
    signals::IN_APP_CALL.store(true, std::sync::atomic::Ordering::SeqCst);
    let ran = module.call_method1("run", (&event_loop, app, &driver, lifespan, state));
    signals::IN_APP_CALL.store(false, std::sync::atomic::Ordering::SeqCst);
    let code = match ran.and_then(|c| c.extract::<i32>()) {
        Ok(code) => code,
        Err(e) => {
            log_exception(py, "Exception in worker process", &e);
            exit_code::WORKER_BOOT_ERROR
        }
    };
    let mut d = driver.borrow_mut(py);
    if let Some(serve) = d.serve.take() {
        if serve.is_finished() {
            if let Ok(Err(e)) = d.local.block_on(&d.runtime, serve) {
                log::error(format_args!("worker failed: {e}"));
            }
        }
    }
    code
}

/// The runtime with the worker's serving task queued on it (it first runs in the loop's
/// first turn, after lifespan startup).
fn driver(worker: Worker, listeners: &[Listener], wake_fd: RawFd) -> io::Result<LoopDriver> {
    let (runtime, fds) = runtime_with_fds()?;
    let local = LocalSet::new();
    let serve = spawn_serving(&runtime, &local, worker, listeners, wake_fd)?;
    Ok(LoopDriver {
        runtime,
        local,
        serve: Some(serve),
        fds,
        tick: TICK.as_secs_f64(),
        turning: Cell::new(false),
    })
}
