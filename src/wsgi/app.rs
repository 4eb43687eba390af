//! Loading the application named by APP_MODULE.

use pyo3::prelude::*;

/// Why the application could not be loaded, mapped to Gunicorn's exit statuses.
pub enum LoadError {
    /// APP_MODULE names nothing usable: a one-line reason, exit 4 ("App failed to load.").
    NotFound(String),
    /// The application's own code raised while importing: logged with its traceback, exit 3.
    Raised(PyErr),
}

pub fn load_app(py: Python<'_>, uri: &str) -> Result<Py<PyAny>, LoadError> {
    let loader = py.import("ferrocorn._loader").map_err(LoadError::Raised)?;
    match loader.call_method1("import_app", (uri,)) {
        Ok(app) => Ok(app.unbind()),
        Err(err) => {
            let not_found = loader
                .getattr("AppImportError")
                .map(|cls| err.get_type(py).is_subclass(&cls).unwrap_or(false))
                .unwrap_or(false);
            if not_found {
                Err(LoadError::NotFound(err.value(py).to_string()))
            } else {
                Err(LoadError::Raised(err))
            }
        }
    }
}
