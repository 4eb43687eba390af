//! ferrocorn: a pre-fork WSGI HTTP server with a Rust core.
//!
//! The Python package `ferrocorn` calls [`run`] from its console script; everything from the
//! command line to the last byte on the wire happens here. Python runs only the application,
//! the config file and the hooks.

pub mod arbiter;
pub mod asgi;
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

// At the bottom layer (config), where every layer can reach them.
pub use config::{exit_code, SERVER_NAME, VERSION};

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
    asgi::register(m)?;
    config::register(m)?;
    Ok(())
}
