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

/// Python objects are equal when they are the same object (`is`), as a hook is the default
/// only when it is the default object.
impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::None, Value::None) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::List(a), Value::List(b)) => a == b,
            (Value::Dict(a), Value::Dict(b)) => a == b,
            (Value::Py(a), Value::Py(b)) => a.as_ptr() == b.as_ptr(),
            _ => false,
        }
    }
}
