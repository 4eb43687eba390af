//! PEP 3333: the environ, `wsgi.input`, `start_response`, response writing and the file wrapper.

use pyo3::prelude::*;

/// Registers the Python-visible WSGI types in the extension module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let _ = m;
    Ok(())
}
