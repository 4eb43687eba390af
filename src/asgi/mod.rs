//! ASGI 3 (spec version 2.4), the application side of the driver's seam beside WSGI: the HTTP
//! scope, `receive` and `send`, run on the asyncio loop's own thread.
//!
//! - [`scope`]: the per-request scope dict.
//! - [`cycle`]: one request's cycle: the application's task, `receive`, `send`.
//! - [`response`]: `http.response.*` messages turned into HTTP/1 bytes.
//! - [`websocket`]: one WebSocket connection: its scope, handshake and messages.
//!
//! Lifespan events are Python (`ferrocorn._asgi`): they run once per worker.

pub mod cycle;
pub mod response;
pub mod scope;
pub mod websocket;

use pyo3::exceptions::PyBaseException;
use pyo3::prelude::*;

use crate::log;

/// The error log, for the Python side of the ASGI worker: `level` is `debug`, `info`,
/// `warning` or `error`; with `exc`, its traceback follows the message.
#[pyfunction]
#[pyo3(signature = (level, message, exc = None))]
fn asgi_log(py: Python<'_>, level: &str, message: &str, exc: Option<Bound<'_, PyBaseException>>) {
    if let Some(exc) = exc {
        let err = PyErr::from_value(exc.into_any());
        return log::python::log_exception(py, message, &err);
    }
    match level {
        "debug" => log::debug(format_args!("{message}")),
        "info" => log::info(format_args!("{message}")),
        "warning" => log::warning(format_args!("{message}")),
        _ => log::error(format_args!("{message}")),
    }
}

/// Registers the Python-visible ASGI types in the extension module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(asgi_log, m)?)?;
    m.add_class::<cycle::Ready>()?;
    m.add_class::<cycle::Receiver>()?;
    m.add_class::<cycle::Sender>()?;
    m.add_class::<cycle::Done>()?;
    m.add_class::<websocket::WsReceiver>()?;
    m.add_class::<websocket::WsSender>()?;
    m.add_class::<websocket::WsDone>()?;
    Ok(())
}
