//! PEP 3333: the environ, `wsgi.input`, `start_response`, response writing and the file wrapper.
//!
//! - [`call`]: the request cycle, shared by every worker class.
//! - [`environ`]: the per-request dict.
//! - [`input`]: the `wsgi.input` stream.
//! - [`response`]: `start_response`, `write()` and body framing.

pub mod app;
pub mod call;
pub mod environ;
pub mod errors;
pub mod file_wrapper;
pub mod input;
pub mod response;

use pyo3::prelude::*;

/// Registers the Python-visible WSGI types in the extension module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<file_wrapper::FileWrapper>()?;
    m.add_class::<input::InputStream>()?;
    m.add_class::<response::StartResponse>()?;
    m.add_class::<response::EarlyHints>()?;
    m.add_class::<response::SendTrailers>()?;
    m.add_class::<errors::ErrorStream>()?;
    Ok(())
}
