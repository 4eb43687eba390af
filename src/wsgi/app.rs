//! Loading the application: named by APP_MODULE, by `--paste` from a PasteDeploy file, or
//! given by an embedding application object.

use std::path::PathBuf;

use pyo3::exceptions::PySyntaxError;
use pyo3::prelude::*;

use crate::config::Settings;

/// Why the application could not be loaded, mapped to Gunicorn's exit statuses.
pub enum LoadError {
    /// APP_MODULE (or the PasteDeploy file) names nothing usable: a one-line reason, exit 4
    /// ("App failed to load.").
    NotFound(String),
    /// APP_MODULE's module (or what a PasteDeploy file names) does not exist: a one-line
    /// reason, exit 3 ("Worker failed to boot."), as Gunicorn treats the error.
    Missing(String),
    /// The application's own code raised while importing: logged with its traceback, exit 3.
    Raised(PyErr),
}

/// The application the settings name: through PasteDeploy when `paste` is set (as Gunicorn
/// decides), else by importing APP_MODULE.
pub fn load_app(py: Python<'_>, settings: &Settings) -> Result<Py<PyAny>, LoadError> {
    let uri = settings.app_uri.as_deref().unwrap_or_default();
    let loader = py.import("ferrocorn._loader").map_err(LoadError::Raised)?;
    let loaded = if settings.str("paste").is_some() {
        loader.call_method1("load_paste", (uri, settings.list("raw_paste_global_conf")))
    } else {
        loader.call_method1("import_app", (uri,))
    };
    loaded
        .map(Bound::unbind)
        .map_err(|err| LoadError::from_loading(py, err))
}

/// The WSGI callable of an embedding application object: `application.wsgi()`, Gunicorn's
/// `BaseApplication.wsgi` (calls `load()` once). An `AppImportError` from ferrocorn's loader
/// is "App failed to load." (exit 4); anything else the application raised is a boot error.
pub fn load_embedded(py: Python<'_>, application: &Py<PyAny>) -> Result<Py<PyAny>, LoadError> {
    match application.bind(py).call_method0("wsgi") {
        Ok(app) if app.is_callable() => Ok(app.unbind()),
        Ok(app) => Err(LoadError::NotFound(format!(
            "Application object must be callable, not {}",
            app.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))),
        Err(err) => Err(LoadError::from_loading(py, err)),
    }
}

impl LoadError {
    /// An exception raised while loading: ferrocorn's loader raises `AppImportError` when
    /// what was named is not there; anything else came from the application's own code.
    pub fn from_loading(py: Python<'_>, err: PyErr) -> LoadError {
        let is = |class: &str| {
            py.import("ferrocorn._loader")
                .and_then(|m| m.getattr(class))
                .map(|cls| err.get_type(py).is_subclass(&cls).unwrap_or(false))
                .unwrap_or(false)
        };
        if is("AppMissing") {
            LoadError::Missing(err.value(py).to_string())
        } else if is("AppImportError") {
            LoadError::NotFound(err.value(py).to_string())
        } else {
            LoadError::Raised(err)
        }
    }
}

/// With `--reload`, what stands in for an application whose code does not compile (Gunicorn's
/// behaviour): every request is answered 500 with the traceback, and the file holding the error
/// is watched so that fixing it restarts the worker. `None` when `err` is not a `SyntaxError`
/// (those still stop the worker).
pub fn syntax_error_stand_in(
    py: Python<'_>,
    err: &PyErr,
) -> Option<PyResult<(Py<PyAny>, Option<PathBuf>)>> {
    if !err.is_instance_of::<PySyntaxError>(py) {
        return None;
    }
    let value = err.value(py);
    let file = value
        .getattr("filename")
        .and_then(|f| f.extract::<Option<String>>())
        .ok()
        .flatten()
        .map(PathBuf::from);
    let app = py
        .import("ferrocorn._loader")
        .and_then(|m| m.call_method1("syntax_error_app", (value,)))
        .map(|app| (app.unbind(), file));
    Some(app)
}
