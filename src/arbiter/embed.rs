//! The embedding API's entry into the master: `ferrocorn.app.base.BaseApplication.run()`
//! calls [`run_application`] with the application object and the settings it set. Workers get
//! the WSGI callable from the object through [`crate::wsgi::app::load_embedded`].

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Runs the server for an embedding application: the settings are the defaults plus
/// `settings` (name -> value, validated like a config file's), with no command line; the
/// workers get their WSGI callable from `application.wsgi()`. Returns the exit status in the
/// master and in each worker, like `run`.
#[pyfunction]
pub fn run_application(
    py: Python<'_>,
    application: Py<PyAny>,
    settings: &Bound<'_, PyDict>,
) -> PyResult<i32> {
    let settings = match crate::config::from_values(py, explicit_values(settings)?) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("{}", err.message);
            return Ok(err.exit_code);
        }
    };
    let start = super::StartContext::now(std::env::args().collect());
    Ok(super::serve(py, settings, start, Some(application)))
}

fn explicit_values(settings: &Bound<'_, PyDict>) -> PyResult<Vec<(String, Py<PyAny>)>> {
    let mut values = Vec::with_capacity(settings.len());
    for (name, value) in settings.iter() {
        values.push((name.extract::<String>()?, value.unbind()));
    }
    Ok(values)
}

/// HUP for an embedding application: `application.reload()` (Gunicorn's: `load_config()`
/// again), then the settings it set.
pub fn reload_settings(
    py: Python<'_>,
    application: &Py<PyAny>,
) -> Result<crate::config::Settings, crate::config::StartError> {
    let explicit = application
        .bind(py)
        .call_method0("reload")
        .and_then(|_| application.bind(py).getattr("cfg")?.getattr("explicit"))
        .and_then(|d| explicit_values(d.cast::<PyDict>()?));
    match explicit {
        Ok(values) => crate::config::from_values(py, values),
        Err(err) => Err(crate::config::StartError::config(err.value(py).to_string())),
    }
}
