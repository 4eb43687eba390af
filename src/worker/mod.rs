//! A worker process: loads the application, then serves connections from the shared listeners
//! until told to stop.

use pyo3::prelude::*;

use crate::arbiter::heartbeat::HeartbeatSlot;
use crate::arbiter::listeners::Listener;
use crate::config::Settings;

/// What the master hands a freshly forked worker.
pub struct WorkerContext<'a> {
    pub settings: &'a Settings,
    pub listeners: &'a [Listener],
    pub heartbeat: HeartbeatSlot,
    /// Gunicorn's worker "age": a counter incremented for every spawn.
    pub age: u64,
    /// The application loaded by the master (`--preload`), else `None`.
    pub app: Option<Py<PyAny>>,
}

/// Runs the worker to completion in the forked child. Returns the exit status:
/// 0 after a stop, [`crate::exit_code::WORKER_BOOT_ERROR`] or
/// [`crate::exit_code::APP_LOAD_ERROR`] when it could not start.
pub fn run(py: Python<'_>, ctx: WorkerContext<'_>) -> i32 {
    let _ = (py, ctx);
    todo!("worker::run")
}
