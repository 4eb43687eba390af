//! The value of one setting.

use pyo3::prelude::*;

#[derive(Debug)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Str(String),
    List(Vec<String>),
    /// Ordered `(key, value)` pairs, e.g. `secure_scheme_headers`.
    Dict(Vec<(String, String)>),
    /// A Python object: hooks and other callables.
    Py(Py<PyAny>),
}

impl Value {
    /// The value as the Python object a config file would have assigned (`cfg.<name>` in hooks).
    pub fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        use pyo3::types::{PyDict, PyList};
        Ok(match self {
            Value::None => py.None().into_bound(py),
            Value::Bool(b) => pyo3::types::PyBool::new(py, *b).to_owned().into_any(),
            Value::Int(i) => i.into_pyobject(py)?.into_any(),
            Value::Str(s) => s.into_pyobject(py)?.into_any(),
            Value::List(l) => PyList::new(py, l)?.into_any(),
            Value::Dict(d) => {
                let dict = PyDict::new(py);
                for (k, v) in d {
                    dict.set_item(k, v)?;
                }
                dict.into_any()
            }
            Value::Py(obj) => obj.bind(py).clone(),
        })
    }
}
