//! The master ("arbiter"): parses settings, binds the listeners, forks the workers and keeps
//! their number, killing silent ones. Single-threaded: no runtime lives here, so forking is safe.

pub mod heartbeat;
pub mod listeners;

use pyo3::prelude::*;

/// The `ferrocorn` command. Returns the exit status in the master and in each worker.
pub fn main(py: Python<'_>, argv: Vec<String>) -> i32 {
    let _ = (py, argv);
    todo!("arbiter::main")
}
