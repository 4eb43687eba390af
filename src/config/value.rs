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
