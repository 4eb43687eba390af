//! Logging through Python, for the two cases that need it:
//!
//! - a logging config (`--log-config`, `--log-config-dict`/`logconfig_dict`,
//!   `--log-config-json`): error and access lines go through the `logging` loggers
//!   `gunicorn.error` and `gunicorn.access` set up as Gunicorn sets them up
//!   (`ferrocorn._logging.Logger`), so handlers, formatters and levels from existing configs
//!   apply. Access records carry Gunicorn's atoms dict as their `args`.
//! - a custom `--logger-class`: an instance is made in the master with `cfg` and receives
//!   Gunicorn's calls (`info`, `error`, `exception`, ..., and `access(resp, req, environ,
//!   request_time)` for every request).
//!
//! Otherwise the error and access logs are written by Rust without the GIL, and only
//! [`log_exception`] runs here (a Python exception's traceback is Python's to format). The
//! logger object is made in the master and inherited by every worker through fork.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyTuple};

use super::access::AccessData;
use super::{latin1, Level, LoggedRequest};
use crate::config::{Settings, Value};

const RUST: u8 = 0;
/// `ferrocorn._logging.Logger` over Python's `logging`, for a logging config.
const LOGGING: u8 = 1;
/// A user's `--logger-class`.
const CUSTOM: u8 = 2;

static MODE: AtomicU8 = AtomicU8::new(RUST);
static LOGGER: RwLock<Option<Py<PyAny>>> = RwLock::new(None);

/// `--logger-class` values that name the built-in logger.
const BUILTIN_CLASSES: [&str; 6] = [
    "gunicorn.glogging.Logger",
    "gunicorn.instrument.statsd.Statsd",
    "simple",
    "egg:gunicorn#simple",
    "ferrocorn.glogging.Logger",
    "ferrocorn._logging.Logger",
];

/// Whether error lines go through Python.
#[inline]
pub fn active() -> bool {
    MODE.load(Ordering::Relaxed) != RUST
}

/// Whether `logger_class` names the built-in logger (directly or as Gunicorn's class).
pub fn builtin_class(py: Python<'_>, settings: &Settings) -> bool {
    match settings.get("logger_class") {
        Value::Str(s) => BUILTIN_CLASSES.contains(&s.trim()),
        Value::Py(cls) => {
            let cls = cls.bind(py);
            let module: String = cls
                .getattr("__module__")
                .and_then(|m| m.extract())
                .unwrap_or_default();
            let name: String = cls
                .getattr("__qualname__")
                .and_then(|m| m.extract())
                .unwrap_or_default();
            BUILTIN_CLASSES.contains(&format!("{module}.{name}").as_str())
        }
        _ => true,
    }
}

/// Whether any logging config setting is set.
pub fn has_logging_config(py: Python<'_>, settings: &Settings) -> bool {
    let dict_set = settings
        .py("logconfig_dict")
        .is_some_and(|d| d.bind(py).is_truthy().unwrap_or(false))
        || !settings.dict("logconfig_dict").is_empty();
    dict_set || settings.str("logconfig").is_some() || settings.str("logconfig_json").is_some()
}

fn module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    PyModule::import(py, "ferrocorn._logging")
}

fn current(py: Python<'_>) -> Option<Py<PyAny>> {
    LOGGER
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|l| l.clone_ref(py))
}

/// A Python exception with its traceback as `traceback.format_exception` writes it.
fn formatted(py: Python<'_>, err: &PyErr) -> PyResult<String> {
    py.import("traceback")
        .and_then(|tb| {
            tb.call_method1(
                "format_exception",
                (err.get_type(py), err.value(py), err.traceback(py)),
            )
        })
        .and_then(|lines| lines.extract::<Vec<String>>())
        .map(|lines| lines.concat())
}

/// Text of a Python exception with its traceback, for error messages.
fn describe(py: Python<'_>, err: &PyErr) -> String {
    let text = formatted(py, err).unwrap_or_else(|_| err.to_string());
    text.trim_end().to_string()
}

/// Logs `message` and the Python traceback of `err` to the error log (Gunicorn's
/// `log.exception(message)`), through the Python logger when one is in use.
pub fn log_exception(py: Python<'_>, message: &str, err: &PyErr) {
    if active() {
        super::statsd::increment("gunicorn.log.exception", 1);
        if super::enabled(Level::Error) {
            exception(py, message, err);
        }
        return;
    }
    match formatted(py, err) {
        Ok(text) => super::exception(message, &text),
        Err(_) => super::exception(message, &format!("{err}\n")),
    }
}

/// The exception's message alone (`str(exc)`), as Gunicorn reports a bad logging setup.
fn message(py: Python<'_>, err: &PyErr) -> String {
    err.value(py)
        .str()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| err.to_string())
}

/// Sets up (or, after a HUP, sets up again) the logger for `settings`. In the master.
/// `cfg` is the `cfg` object hooks see. Returns whether the built-in logger is in use (StatsD
/// metrics are the built-in logger's business, as in Gunicorn).
pub fn configure(
    py: Python<'_>,
    settings: &Settings,
    cfg: &Bound<'_, PyAny>,
) -> Result<bool, String> {
    let builtin = builtin_class(py, settings);
    let wanted = if !builtin {
        CUSTOM
    } else if has_logging_config(py, settings) {
        LOGGING
    } else {
        RUST
    };
    let m = module(py).map_err(|e| message(py, &e))?;
    let mode = MODE.load(Ordering::Relaxed);
    let existing = current(py);
    let logger = match (wanted, existing) {
        (RUST, _) => None,
        // Gunicorn keeps its logger object across reloads and runs its `setup(cfg)` again.
        (w, Some(logger)) if w == mode => {
            let bound = logger.bind(py);
            if bound.hasattr("setup").unwrap_or(false) {
                bound
                    .call_method1("setup", (cfg,))
                    .map_err(|e| message(py, &e))?;
            }
            Some(logger)
        }
        (LOGGING, _) => Some(
            m.getattr("Logger")
                .and_then(|cls| cls.call1((cfg,)))
                .map_err(|e| message(py, &e))?
                .unbind(),
        ),
        (_, _) => {
            let class = settings
                .get("logger_class")
                .to_py(py)
                .map_err(|e| message(py, &e))?;
            Some(
                m.getattr("make_logger")
                    .and_then(|make| make.call1((class, cfg)))
                    .map_err(|e| message(py, &e))?
                    .unbind(),
            )
        }
    };
    if wanted == LOGGING {
        // The `logging` config decides what passes; ask it once, not per message.
        let level: i64 = m
            .getattr("error_level")
            .and_then(|f| f.call0())
            .and_then(|l| l.extract())
            .unwrap_or(Level::Info as i64);
        super::set_level(level_of(level));
    } else if wanted == CUSTOM {
        // The class decides what to keep: it gets every message.
        super::set_level(Level::Debug);
    }
    if let Some(logger) = &logger {
        m.setattr("current", logger.bind(py))
            .map_err(|e| message(py, &e))?;
    } else {
        let _ = m.setattr("current", py.None());
    }
    *LOGGER.write().unwrap_or_else(|e| e.into_inner()) = logger;
    MODE.store(wanted, Ordering::Relaxed);
    Ok(builtin)
}

/// The nearest level at or below a Python level number.
fn level_of(n: i64) -> Level {
    match n {
        i64::MIN..=10 => Level::Debug,
        11..=20 => Level::Info,
        21..=30 => Level::Warning,
        31..=40 => Level::Error,
        _ => Level::Critical,
    }
}

fn method(level: Level) -> &'static str {
    match level {
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warning => "warning",
        Level::Error => "error",
        Level::Critical => "critical",
    }
}

/// Reports a failure of the Python logger itself on standard error: it has nowhere else to go.
fn report_failure(py: Python<'_>, what: &str, err: &PyErr) {
    eprintln!(
        "{} [{}] [ERROR] {what}: {}",
        super::timestamp(),
        std::process::id(),
        describe(py, err)
    );
}

/// `logger.<level>(message)`.
pub fn log(level: Level, message: &str) {
    Python::attach(|py| {
        let Some(logger) = current(py) else { return };
        if let Err(err) = logger.bind(py).call_method1(method(level), (message,)) {
            report_failure(py, "Logging failed", &err);
        }
    });
}

/// `logger.exception(message, exc_info=(type, value, traceback))`.
pub fn exception(py: Python<'_>, message: &str, err: &PyErr) {
    let Some(logger) = current(py) else { return };
    let result = (|| -> PyResult<()> {
        let exc_info = PyTuple::new(
            py,
            [
                err.get_type(py).into_any(),
                err.value(py).clone().into_any(),
                err.traceback(py)
                    .map(|t| t.into_any())
                    .unwrap_or_else(|| py.None().into_bound(py)),
            ],
        )?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("exc_info", exc_info)?;
        logger
            .bind(py)
            .call_method("exception", (message,), Some(&kwargs))?;
        Ok(())
    })();
    if let Err(e) = result {
        report_failure(py, "Logging failed", &e);
    }
}

/// `wsgi.errors` text: to the streams of the `gunicorn.error` handlers.
pub fn write_raw(text: &str) {
    Python::attach(|py| {
        let result = module(py).and_then(|m| m.getattr("errors_write")?.call1((text,)));
        if let Err(err) = result {
            report_failure(py, "Writing to wsgi.errors failed", &err);
        }
    });
}

/// Gunicorn's `req` for a request (`ferrocorn._hooks.Request`), as the request hooks and a
/// Python logger's `access()` receive it.
pub fn request_object<'py, R: LoggedRequest>(
    py: Python<'py>,
    request: &R,
    peer: Option<std::net::SocketAddr>,
) -> PyResult<Bound<'py, PyAny>> {
    static CLASS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let class = CLASS.import(py, "ferrocorn._hooks", "Request")?;
    let headers = PyList::empty(py);
    for (name, value) in request.fields() {
        headers.append((name.to_ascii_uppercase(), latin1(value)))?;
    }
    let peer: Bound<'_, PyAny> = match peer {
        Some(addr) => (addr.ip().to_string(), addr.port())
            .into_pyobject(py)?
            .into_any(),
        None => "".into_pyobject(py)?.into_any(),
    };
    let args = PyTuple::new(
        py,
        [
            request.method().into_pyobject(py)?.into_any(),
            latin1(request.target()).into_pyobject(py)?.into_any(),
            latin1(request.path()).into_pyobject(py)?.into_any(),
            latin1(request.query()).into_pyobject(py)?.into_any(),
            latin1(request.fragment()).into_pyobject(py)?.into_any(),
            request.version().into_pyobject(py)?.into_any(),
            headers.into_any(),
            "http".into_pyobject(py)?.into_any(),
            peer,
        ],
    )?;
    class.call1(args)
}

/// Calls the Python logger's `access(resp, req, environ, request_time)`: a custom class's, or
/// the logging-config `Logger`'s, which logs Gunicorn's atoms through `gunicorn.access`.
pub fn access_call<R: LoggedRequest>(data: AccessData<R>, duration: Duration) {
    Python::attach(|py| {
        let Some(logger) = current(py) else { return };
        let result = (|| -> PyResult<()> {
            let request = request_object(py, &data.head, data.peer)?;
            let environ = match data.environ_obj {
                Some(e) => e.into_bound(py),
                None => PyDict::new(py).into_any(),
            };
            let status = data.status_line.unwrap_or_else(|| data.status.to_string());
            let response = (status, data.status, data.response_headers, data.sent);
            let args = (
                logger,
                request,
                response,
                environ,
                duration.as_micros() as u64,
            );
            module(py)?.getattr("custom_access")?.call1(args)?;
            Ok(())
        })();
        if let Err(err) = result {
            report_failure(py, "Access logging failed", &err);
        }
    });
}

/// `logger.reopen_files()` (USR1, HUP), when a Python logger is in use.
pub fn reopen() -> Result<(), String> {
    if !active() {
        return Ok(());
    }
    Python::attach(|py| {
        let Some(logger) = current(py) else {
            return Ok(());
        };
        logger
            .bind(py)
            .call_method0("reopen_files")
            .map(drop)
            .map_err(|e| format!("reopening the log files failed: {}", describe(py, &e)))
    })
}

/// Flushes Python's `sys.stdout` and `sys.stderr` (before their descriptors are redirected).
pub fn flush_stdio() {
    Python::attach(|py| {
        if let Ok(sys) = py.import("sys") {
            for name in ["stdout", "stderr"] {
                if let Ok(stream) = sys.getattr(name) {
                    let _ = stream.call_method0("flush");
                }
            }
        }
    });
}
