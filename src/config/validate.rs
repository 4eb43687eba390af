//! Validation of one value against its setting's [`Validator`], with Gunicorn's semantics.
//!
//! Values arrive as [`Raw`]: from the command line as strings, flags or lists of strings; from
//! the config file as whatever Python object the file assigned, converted where it has a plain
//! shape and kept as an object otherwise. Validators that need Python (callables, classes,
//! imports) take the interpreter; the rest are plain Rust and unit-tested without it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyList, PyString, PyTuple};

use super::table::{py_repr_dict, py_repr_list, py_repr_str, Setting, Validator};
use super::{address, Value};

/// A value before validation.
#[derive(Debug)]
pub enum Raw {
    None,
    Bool(bool),
    Int(i64),
    Str(String),
    List(Vec<String>),
    Dict(Vec<(String, String)>),
    /// Any other Python object (a callable, a class, a float, a nested dict ...).
    Obj(Py<PyAny>),
}

impl Raw {
    /// Converts a Python object, keeping anything without a plain shape as an object.
    pub fn from_py(obj: &Bound<'_, PyAny>) -> Raw {
        if obj.is_none() {
            return Raw::None;
        }
        if let Ok(b) = obj.cast::<PyBool>() {
            return Raw::Bool(b.is_true());
        }
        if obj.is_instance_of::<PyInt>() {
            if let Ok(i) = obj.extract::<i64>() {
                return Raw::Int(i);
            }
        } else if let Ok(s) = obj.cast::<PyString>() {
            if let Ok(s) = s.to_str() {
                return Raw::Str(s.to_owned());
            }
        } else if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
            if let Ok(items) = obj.extract::<Vec<String>>() {
                return Raw::List(items);
            }
        } else if let Ok(d) = obj.cast::<PyDict>() {
            let pairs: Option<Vec<(String, String)>> = d
                .iter()
                .map(|(k, v)| Some((k.extract::<String>().ok()?, v.extract::<String>().ok()?)))
                .collect();
            if let Some(pairs) = pairs {
                return Raw::Dict(pairs);
            }
        }
        Raw::Obj(obj.clone().unbind())
    }

    /// Python's `repr()` of the value, for error messages.
    pub fn repr(&self) -> String {
        match self {
            Raw::None => "None".into(),
            Raw::Bool(b) => if *b { "True" } else { "False" }.into(),
            Raw::Int(i) => i.to_string(),
            Raw::Str(s) => py_repr_str(s),
            Raw::List(l) => py_repr_list(l.iter().map(String::as_str)),
            Raw::Dict(d) => py_repr_dict(d.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            Raw::Obj(o) => Python::attach(|py| {
                o.bind(py)
                    .repr()
                    .map(|r| r.to_string())
                    .unwrap_or_else(|_| "<object>".into())
            }),
        }
    }
}

/// Parses an integer the way Python's `int(s, 0)` does: optional sign, `0x`/`0o`/`0b`
/// prefixes, `_` between digits, surrounding whitespace; a decimal may not start with `0`.
pub fn parse_int_base0(s: &str) -> Option<i64> {
    let t = s.trim();
    let (neg, body) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d.strip_prefix('_').unwrap_or(d))
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d.strip_prefix('_').unwrap_or(d))
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d.strip_prefix('_').unwrap_or(d))
    } else {
        // A decimal literal: leading zeros only when the whole number is zero.
        if lower.len() > 1
            && lower.starts_with('0')
            && lower.bytes().any(|b| b != b'0' && b != b'_')
        {
            return None;
        }
        (10, lower.as_str())
    };
    parse_digits(digits, radix).and_then(|v| if neg { v.checked_neg() } else { Some(v) })
}

/// Parses an integer the way Python's `int(s)` does (base 10, `_` separators, whitespace).
pub fn parse_int_base10(s: &str) -> Option<i64> {
    let t = s.trim();
    let (neg, body) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    parse_digits(body, 10).and_then(|v| if neg { v.checked_neg() } else { Some(v) })
}

/// Gunicorn's `auto_int` for `--umask`: a leading `0` followed by a digit means octal.
pub fn parse_auto_int(s: &str) -> Option<i64> {
    let bytes = s.as_bytes();
    if bytes.len() >= 2 && bytes[0] == b'0' && bytes[1].is_ascii_digit() {
        return parse_int_base0(&format!("0o{}", &s[1..]));
    }
    parse_int_base0(s)
}

fn parse_digits(digits: &str, radix: u32) -> Option<i64> {
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let clean: String = digits.chars().filter(|c| *c != '_').collect();
    if !clean.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    i64::from_str_radix(&clean, radix).ok()
}

/// Checks `raw` against `setting`'s validator and returns the stored value, or the reason it
/// is invalid (the caller names the setting and the value).
pub fn validate(setting: &Setting, raw: Raw) -> Result<Value, String> {
    match setting.validator {
        Validator::PosInt => pos_int(raw).map(Value::Int),
        Validator::Http2StreamLimit => match pos_int(raw)? {
            0 => Err("expected an integer of at least 1".into()),
            n => Ok(Value::Int(n)),
        },
        Validator::Http2WindowSize => match pos_int(raw)? {
            n if n > i64::from(i32::MAX) => Err("expected an integer of at most 2147483647".into()),
            n => Ok(Value::Int(n)),
        },
        Validator::Http2FrameSize => match int(raw)? {
            n if (16_384..=16_777_215).contains(&n) => Ok(Value::Int(n)),
            _ => Err("expected an integer from 16384 to 16777215".into()),
        },
        Validator::Bool => match raw {
            Raw::None => Ok(Value::None),
            other => bool_value(other).map(Value::Bool),
        },
        Validator::String => string(raw).map(opt_str),
        Validator::StatsdAddress => {
            let value = string(raw)?;
            if let Some(v) = &value {
                address::parse_statsd(v)?;
            }
            Ok(opt_str(value))
        }
        Validator::ListString => list_string(raw).map(Value::List),
        Validator::FilesOrPatterns => {
            let items = list_string(raw)?;
            for item in &items {
                let glob = item.contains(['*', '?', '[']);
                if !glob && !Path::new(item).exists() {
                    return Err(format!("file {} does not exist", py_repr_str(item)));
                }
            }
            Ok(Value::List(items))
        }
        Validator::StringToList => string_to_list(raw).map(Value::List),
        Validator::AddrList => {
            let items = string_to_list(raw)?;
            for item in &items {
                if item != "*" && !is_ip_network(item) {
                    return Err(format!(
                        "{} is not an IP address or network",
                        py_repr_str(item)
                    ));
                }
            }
            Ok(Value::List(items))
        }
        Validator::Dict => match raw {
            Raw::Dict(d) => Ok(Value::Dict(d)),
            _ => Err("expected a dict of strings to strings".into()),
        },
        Validator::PyDict => match raw {
            Raw::Dict(d) => Python::attach(|py| {
                let dict = PyDict::new(py);
                for (k, v) in &d {
                    dict.set_item(k, v).map_err(|e| e.to_string())?;
                }
                Ok(Value::Py(dict.into_any().unbind()))
            }),
            Raw::Obj(o) if Python::attach(|py| o.bind(py).is_instance_of::<PyDict>()) => {
                Ok(Value::Py(o))
            }
            _ => Err("expected a dict".into()),
        },
        Validator::Callable(arity) => callable(raw, Some(arity)).map(Value::Py),
        Validator::PostRequest => post_request(raw).map(Value::Py),
        Validator::Class | Validator::WorkerClass => match raw {
            Raw::Obj(o) => class(o),
            other => string(other).map(opt_str),
        },
        Validator::Chdir => {
            let s = string(raw)?.unwrap_or_default();
            let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
            let path = normalize(&cwd.join(&s));
            if !path.exists() {
                return Err(format!("can't chdir to {}", py_repr_str(&s)));
            }
            Ok(Value::Str(path.to_string_lossy().into_owned()))
        }
        Validator::User => id_of(raw, true).map(Value::Int),
        Validator::Group => id_of(raw, false).map(Value::Int),
        Validator::ReloadEngine => match raw {
            Raw::Str(s) if ["auto", "poll", "inotify"].contains(&s.as_str()) => Ok(Value::Str(s)),
            _ => Err("expected one of 'auto', 'poll', 'inotify'".into()),
        },
        Validator::SslVersion => match raw {
            Raw::Int(i) => Ok(Value::Int(i)),
            Raw::Str(s) => Ok(Value::Str(s)),
            Raw::None => Ok(Value::None),
            _ => Err("expected an integer or a string".into()),
        },
        Validator::ProxyProtocol => {
            let v = match raw {
                Raw::None => "off".to_owned(),
                Raw::Bool(b) => if b { "auto" } else { "off" }.to_owned(),
                Raw::Str(s) => s.trim().to_ascii_lowercase(),
                _ => return Err("expected a string or a boolean".into()),
            };
            let mode = match v.as_str() {
                "false" | "off" | "0" | "none" => "off",
                "true" | "auto" | "1" => "auto",
                "v1" => "v1",
                "v2" => "v2",
                _ => return Err("expected one of 'off', 'v1', 'v2', 'auto'".into()),
            };
            Ok(Value::Str(mode.into()))
        }
        Validator::HttpProtocols => {
            let s = match raw {
                Raw::None => String::new(),
                Raw::Str(s) => s,
                _ => return Err("expected a comma-separated string".into()),
            };
            let mut protocols: Vec<String> = s
                .split(',')
                .map(|p| p.trim().to_ascii_lowercase())
                .filter(|p| !p.is_empty())
                .collect();
            if protocols.is_empty() {
                protocols.push("h1".into());
            }
            for (i, p) in protocols.iter().enumerate() {
                if p != "h1" && p != "h2" {
                    return Err(format!(
                        "unknown protocol {}; expected h1, h2",
                        py_repr_str(p)
                    ));
                }
                if protocols[..i].contains(p) {
                    return Err(format!("protocol {} is listed twice", py_repr_str(p)));
                }
            }
            Ok(Value::List(protocols))
        }
        Validator::Http2Cleartext => {
            let v = match raw {
                Raw::None => "off".to_owned(),
                Raw::Bool(b) => if b { "prior-knowledge" } else { "off" }.to_owned(),
                Raw::Str(s) => s.trim().to_ascii_lowercase(),
                _ => return Err("expected a string".into()),
            };
            match v.as_str() {
                "off" | "prior-knowledge" | "upgrade" | "both" => Ok(Value::Str(v)),
                _ => Err("expected one of 'off', 'prior-knowledge', 'upgrade', 'both'".into()),
            }
        }
        Validator::Choice(options) => match raw {
            Raw::None => Ok(match setting.default {
                super::table::DefaultValue::Str(d) => Value::Str(d.into()),
                _ => Value::None,
            }),
            Raw::Str(s) => {
                let v = s.trim().to_ascii_lowercase();
                if options.contains(&v.as_str()) {
                    Ok(Value::Str(v))
                } else {
                    let opts: Vec<String> = options.iter().map(|o| py_repr_str(o)).collect();
                    Err(format!("expected one of {}", opts.join(", ")))
                }
            }
            _ => Err("expected a string".into()),
        },
    }
}

fn opt_str(s: Option<String>) -> Value {
    s.map_or(Value::None, Value::Str)
}

fn int(raw: Raw) -> Result<i64, String> {
    match raw {
        Raw::Int(i) => Ok(i),
        Raw::Bool(b) => Ok(i64::from(b)),
        Raw::Str(s) => parse_int_base0(&s).ok_or_else(|| "expected an integer".to_string()),
        _ => Err("expected an integer".into()),
    }
}

fn pos_int(raw: Raw) -> Result<i64, String> {
    match int(raw) {
        Ok(i) if i >= 0 => Ok(i),
        _ => Err("expected a positive integer".into()),
    }
}

/// Gunicorn's `validate_bool` for a non-`None` value.
pub fn bool_value(raw: Raw) -> Result<bool, String> {
    match raw {
        Raw::Bool(b) => Ok(b),
        Raw::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err("expected True or False".into()),
        },
        _ => Err("expected True or False".into()),
    }
}

fn string(raw: Raw) -> Result<Option<String>, String> {
    match raw {
        Raw::None => Ok(None),
        Raw::Str(s) => Ok(Some(s.trim().to_owned())),
        _ => Err("expected a string".into()),
    }
}

fn list_string(raw: Raw) -> Result<Vec<String>, String> {
    match raw {
        Raw::None | Raw::Bool(false) | Raw::Int(0) => Ok(Vec::new()),
        Raw::Str(s) if s.is_empty() => Ok(Vec::new()),
        Raw::Str(s) => Ok(vec![s.trim().to_owned()]),
        Raw::List(l) => Ok(l.into_iter().map(|s| s.trim().to_owned()).collect()),
        _ => Err("expected a list of strings".into()),
    }
}

fn string_to_list(raw: Raw) -> Result<Vec<String>, String> {
    let s = string(raw)?.unwrap_or_default();
    Ok(s.split(',')
        .filter(|v| !v.is_empty())
        .map(|v| v.trim().to_owned())
        .collect())
}

/// An IP address, or a network `ADDR/PREFIX` with no host bits set (Python's strict
/// `ipaddress.ip_network`).
pub fn is_ip_network(s: &str) -> bool {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let Ok(ip) = addr.parse::<IpAddr>() else {
        return false;
    };
    let Some(prefix) = prefix else {
        return true;
    };
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Ok(len) = prefix.parse::<u32>() else {
        return false;
    };
    match ip {
        IpAddr::V4(v4) => {
            len <= 32 && {
                let bits = u32::from(v4);
                let host = if len == 32 { 0 } else { u32::MAX >> len };
                bits & host == 0
            }
        }
        IpAddr::V6(v6) => {
            len <= 128 && {
                let bits = u128::from(v6);
                let host = if len == 128 { 0 } else { u128::MAX >> len };
                bits & host == 0
            }
        }
    }
}

/// Lexical normalisation like `os.path.normpath` on an absolute path.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn id_of(raw: Raw, user: bool) -> Result<i64, String> {
    match raw {
        Raw::None => Ok(i64::from(if user {
            nix::unistd::geteuid().as_raw()
        } else {
            nix::unistd::getegid().as_raw()
        })),
        Raw::Int(i) => Ok(i),
        Raw::Str(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<i64>().map_err(|_| "id out of range".to_string())
        }
        Raw::Str(s) => {
            let found = if user {
                nix::unistd::User::from_name(&s)
                    .ok()
                    .flatten()
                    .map(|u| i64::from(u.uid.as_raw()))
            } else {
                nix::unistd::Group::from_name(&s)
                    .ok()
                    .flatten()
                    .map(|g| i64::from(g.gid.as_raw()))
            };
            found.ok_or_else(|| format!("no such {}", if user { "user" } else { "group" }))
        }
        _ => Err(format!(
            "expected a {} name or id",
            if user { "user" } else { "group" }
        )),
    }
}

// Compiled from source rather than imported, so that it also works where the package is not
// installed (the unit tests).
const HELPERS: &str = include_str!("../../python/ferrocorn/_config.py");

/// The Python side of config loading (python/ferrocorn/_config.py), compiled once per
/// interpreter.
pub fn helpers(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    use pyo3::sync::PyOnceLock;
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let m = MODULE.get_or_try_init(py, || -> PyResult<Py<PyModule>> {
        let code = std::ffi::CString::new(HELPERS)?;
        Ok(PyModule::from_code(
            py,
            &code,
            c"ferrocorn_config_helpers.py",
            c"_ferrocorn_config",
        )?
        .unbind())
    })?;
    Ok(m.bind(py).clone())
}

/// A callable, or a `module.name` string imported to one; checks the positional arity.
fn callable(raw: Raw, arity: Option<u8>) -> Result<Py<PyAny>, String> {
    Python::attach(|py| {
        let h = helpers(py).map_err(|e| e.to_string())?;
        let obj: Bound<'_, PyAny> = match raw {
            Raw::Obj(o) => o.into_bound(py),
            Raw::Str(s) => h
                .getattr("import_object")
                .and_then(|f| f.call1((s,)))
                .map_err(|e| exception_text(py, &e))?,
            Raw::None => return Err("expected a callable".into()),
            other => return Err(format!("{} is not callable", other.repr())),
        };
        if !obj.is_callable() {
            return Err("expected a callable".into());
        }
        if let Some(want) = arity {
            let got: i64 = h
                .getattr("arity")
                .and_then(|f| f.call1((&obj,)))
                .and_then(|n| n.extract())
                .map_err(|e| exception_text(py, &e))?;
            if got != i64::from(want) {
                return Err(format!(
                    "expected a callable taking {want} arguments, not {got}"
                ));
            }
        }
        Ok(obj.unbind())
    })
}

/// `post_request` may take 2, 3 or 4 arguments; it is wrapped to always take 4.
fn post_request(raw: Raw) -> Result<Py<PyAny>, String> {
    let f = callable(raw, None)?;
    Python::attach(|py| {
        let h = helpers(py).map_err(|e| e.to_string())?;
        let wrapped = h
            .getattr("wrap_post_request")
            .and_then(|w| w.call1((f.bind(py),)))
            .map_err(|e| exception_text(py, &e))?;
        if wrapped.is_none() {
            return Err("expected a callable taking 2, 3 or 4 arguments".into());
        }
        Ok(wrapped.unbind())
    })
}

/// A class is kept; a function is called for the class it returns (Gunicorn's rule).
fn class(o: Py<PyAny>) -> Result<Value, String> {
    Python::attach(|py| {
        let obj = o.bind(py);
        let h = helpers(py).map_err(|e| e.to_string())?;
        let resolved = h
            .getattr("resolve_class")
            .and_then(|f| f.call1((obj,)))
            .map_err(|e| exception_text(py, &e))?;
        if let Ok(s) = resolved.extract::<String>() {
            return Ok(Value::Str(s.trim().to_owned()));
        }
        if resolved.is_none() {
            return Err("expected a class or a string".into());
        }
        Ok(Value::Py(resolved.unbind()))
    })
}

/// `Type: message` of a Python exception.
pub fn exception_text(py: Python<'_>, e: &PyErr) -> String {
    let name = e
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".into());
    format!("{name}: {}", e.value(py))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::table::{index_of, SETTINGS};

    fn check(name: &str, raw: Raw) -> Result<Value, String> {
        let i = index_of(name).expect("known setting");
        validate(&SETTINGS[i], raw)
    }

    #[test]
    fn ints_like_python() {
        assert_eq!(parse_int_base0("10"), Some(10));
        assert_eq!(parse_int_base0(" 0x1F "), Some(31));
        assert_eq!(parse_int_base0("0o17"), Some(15));
        assert_eq!(parse_int_base0("1_000"), Some(1000));
        assert_eq!(parse_int_base0("010"), None);
        assert_eq!(parse_int_base0("000"), Some(0));
        assert_eq!(parse_int_base0("abc"), None);
        assert_eq!(parse_int_base0("-3"), Some(-3));
        assert_eq!(parse_int_base10("010"), Some(10));
        assert_eq!(parse_int_base10("0x10"), None);
        assert_eq!(parse_auto_int("022"), Some(0o22));
        assert_eq!(parse_auto_int("0o22"), Some(0o22));
        assert_eq!(parse_auto_int("18"), Some(18));
    }

    #[test]
    fn pos_int_validator() {
        assert!(matches!(
            check("workers", Raw::Str("4".into())),
            Ok(Value::Int(4))
        ));
        assert!(matches!(
            check("workers", Raw::Bool(true)),
            Ok(Value::Int(1))
        ));
        assert_eq!(
            check("workers", Raw::Str("abc".into())).unwrap_err(),
            "expected a positive integer"
        );
        assert!(check("workers", Raw::Int(-1)).is_err());
        assert!(check("workers", Raw::None).is_err());
        assert!(check("http2_max_frame_size", Raw::Int(100)).is_err());
        assert!(check("http2_max_concurrent_streams", Raw::Int(0)).is_err());
        assert!(check("http2_initial_window_size", Raw::Int(1 << 31)).is_err());
    }

    #[test]
    fn bool_validator() {
        assert!(matches!(
            check("preload_app", Raw::Str(" TRUE ".into())),
            Ok(Value::Bool(true))
        ));
        assert!(matches!(
            check("preload_app", Raw::Str("false".into())),
            Ok(Value::Bool(false))
        ));
        assert!(check("preload_app", Raw::Str("yes".into())).is_err());
        assert!(check("preload_app", Raw::Int(1)).is_err());
        assert!(matches!(check("sendfile", Raw::None), Ok(Value::None)));
    }

    #[test]
    fn lists_and_strings() {
        match check("bind", Raw::Str(" 127.0.0.1:9000 ".into())) {
            Ok(Value::List(l)) => assert_eq!(l, ["127.0.0.1:9000"]),
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(check("bind", Raw::Str(String::new())), Ok(Value::List(l)) if l.is_empty())
        );
        assert!(check("bind", Raw::Int(3)).is_err());
        assert!(
            matches!(check("pidfile", Raw::Str(" /x ".into())), Ok(Value::Str(s)) if s == "/x")
        );
        assert!(check("pidfile", Raw::Int(3)).is_err());
        match check("forwarder_headers", Raw::Str("A, B,,C".into())) {
            Ok(Value::List(l)) => assert_eq!(l, ["A", "B", "C"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn addr_lists() {
        assert!(is_ip_network("10.0.0.0/8"));
        assert!(!is_ip_network("10.0.0.1/8"));
        assert!(is_ip_network("::1"));
        assert!(is_ip_network("fd00::/8"));
        assert!(!is_ip_network("example.com"));
        assert!(check("forwarded_allow_ips", Raw::Str("*".into())).is_ok());
        assert!(check("forwarded_allow_ips", Raw::Str("10.0.0.1,bad".into())).is_err());
    }

    #[test]
    fn choices_and_modes() {
        assert!(
            matches!(check("header_map", Raw::Str("Refuse".into())), Ok(Value::Str(s)) if s == "refuse")
        );
        assert!(check("header_map", Raw::Str("keep".into())).is_err());
        assert!(
            matches!(check("proxy_protocol", Raw::Bool(true)), Ok(Value::Str(s)) if s == "auto")
        );
        assert!(
            matches!(check("proxy_protocol", Raw::Str("0".into())), Ok(Value::Str(s)) if s == "off")
        );
        assert!(
            matches!(check("http_protocols", Raw::Str("H2, h1".into())), Ok(Value::List(l)) if l == ["h2", "h1"])
        );
        assert!(check("http_protocols", Raw::Str("h1,h1".into())).is_err());
        assert!(check("http_protocols", Raw::Str("h3".into())).is_err());
        assert!(check("reload_engine", Raw::Str("magic".into())).is_err());
    }

    #[test]
    fn chdir_user_group() {
        assert!(
            matches!(check("chdir", Raw::Str("/tmp/../tmp".into())), Ok(Value::Str(s)) if s == "/tmp")
        );
        assert!(check("chdir", Raw::Str("/no/such/dir/ferrocorn".into())).is_err());
        assert!(matches!(
            check("user", Raw::Str("0".into())),
            Ok(Value::Int(0))
        ));
        assert!(matches!(
            check("user", Raw::Str("root".into())),
            Ok(Value::Int(0))
        ));
        assert!(check("user", Raw::Str("no-such-user-ferrocorn".into())).is_err());
        assert!(check("group", Raw::Str("no-such-group-ferrocorn".into())).is_err());
    }
}
