//! ferrocorn: a pre-fork WSGI HTTP server with a Rust core.
//!
//! The Python package `ferrocorn` calls [`run`] from its console script; everything from the
//! command line to the last byte on the wire happens here. Python runs only the application,
//! the config file and the hooks.

pub mod arbiter;
pub mod config;
pub mod driver;
pub mod hooks;
pub mod http;
pub mod log;
pub mod net;
pub mod process;
pub mod worker;
pub mod wsgi;

use pyo3::prelude::*;

/// Gunicorn's exit statuses, which operators and supervisors know.
pub mod exit_code {
    pub const OK: i32 = 0;
    pub const CONFIG_ERROR: i32 = 1;
    pub const USAGE_ERROR: i32 = 2;
    pub const WORKER_BOOT_ERROR: i32 = 3;
    pub const APP_LOAD_ERROR: i32 = 4;
}

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const SERVER_NAME: &str = "ferrocorn";

/// Runs the server with `argv` (as `sys.argv`) and returns the process exit status.
///
/// Returns in the master and, after fork, in every worker: the Python caller exits with the
/// status, so both kinds of process finish through the interpreter's normal shutdown.
#[pyfunction]
fn run(py: Python<'_>, argv: Vec<String>) -> i32 {
    arbiter::main(py, argv)
}

#[pymodule]
fn _ferrocorn(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", VERSION)?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(arbiter::embed::run_application, m)?)?;
    hooks::register(m)?;
    wsgi::register(m)?;
    config::register(m)?;
    Ok(())
}
