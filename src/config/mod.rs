//! Settings: one declarative table ([`table::SETTINGS`]) drives the command line, the config
//! file, the environment variables, `--print-config` and docs/settings.md.
//!
//! Sources, lowest precedence first: defaults < config file < `GUNICORN_CMD_ARGS` /
//! `FERROCORN_CMD_ARGS` < command line.

pub mod address;
pub mod cli;
pub mod error;
pub mod table;
pub mod validate;
pub mod value;

pub use error::{exit_code, StartError};
pub use value::Value;

use std::path::Path;

use pyo3::prelude::*;

use cli::{Parsed, Source};
use table::{DefaultValue, Setting, Support, SETTINGS};
use validate::{validate, Raw};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const SERVER_NAME: &str = "ferrocorn";

/// What the command line asked for.
pub enum Loaded {
    /// Serve with these settings.
    Run(Settings),
    /// `-h`, `--version`, `--print-config` and the like printed their answer: exit with this status.
    Exit(i32),
}

/// Effective settings, one [`Value`] per entry of [`table::SETTINGS`].
pub struct Settings {
    values: Vec<Value>,
    /// Which settings a source set explicitly (the rest hold their defaults).
    explicit: Vec<bool>,
    /// APP_MODULE from the command line, or `wsgi_app` from the config file.
    pub app_uri: Option<String>,
    /// `sync` or `gthread`, from `worker_class` before the `threads` rule.
    worker_base: &'static str,
    /// Warnings for the master to log once logging is set up (a worker class's keywords
    /// that have no meaning here).
    pub notes: Vec<String>,
}

/// Request-head limits after Gunicorn's clamping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Longest request line; `limit_request_line` above 8190 gives 8190, 0 ("no limit")
    /// gives 1 MiB, the bound Gunicorn's fast parser uses.
    pub line: usize,
    /// Most header fields; 0 or above 32768 gives 32768.
    pub fields: usize,
    /// Longest header field line; 0 gives 8190.
    pub field_size: usize,
}

/// The values set that ferrocorn does not act on yet (each differs from its default).
#[derive(Debug, Default)]
pub struct Unapplied {
    /// `name = value: why; what instead` for the first one that stops the start.
    pub refused: Option<String>,
    /// `name = value` for each one ignored with a warning.
    pub warned: Vec<String>,
}

/// Parses every source for `argv` (as `sys.argv`). Runs the config file in the interpreter.
pub fn load(py: Python<'_>, argv: &[String]) -> Result<Loaded, StartError> {
    let env = |name: &str| std::env::var(name).ok();
    let Some(cli) = parse_or_answer(argv.get(1..).unwrap_or(&[]))? else {
        return Ok(Loaded::Exit(exit_code::OK));
    };
    let mut env_sources = Vec::new();
    for var in ["GUNICORN_CMD_ARGS", "FERROCORN_CMD_ARGS"] {
        if let Some(text) = env(var) {
            let words = cli::shlex_split(&text)
                .map_err(|e| StartError::config(format!("cannot split {var}: {e}")))?;
            match parse_or_answer(&words)? {
                Some(src) => env_sources.push(src),
                None => return Ok(Loaded::Exit(exit_code::OK)),
            }
        }
    }

    let mut b = Builder::with_defaults(&env)?;
    b.app_specific(&cli)?;

    // The config file: -c on the command line, else in the env args, else the default files.
    let location = std::iter::once(&cli)
        .chain(env_sources.iter().rev())
        .find_map(|s| match s.get("config") {
            Some(Raw::Str(c)) => Some(c.trim().to_owned()),
            _ => None,
        })
        .or_else(|| default_config_file().map(|p| p.to_string_lossy().into_owned()));
    if let Some(location) = location {
        for (name, obj) in run_config_file(py, &location)? {
            if let Some(i) = table::index_of(&name) {
                b.set(i, Raw::from_py(obj.bind(py)))?;
            }
        }
    }
    for src in env_sources.into_iter().chain([cli]) {
        b.apply(src)?;
    }
    let settings = b.finish()?;

    if settings.bool("print_config") {
        println!("{}", print_config(py, &settings));
        return Ok(Loaded::Exit(exit_code::OK));
    }
    // Gunicorn's last step of loading: into `chdir`, which goes first on sys.path.
    if let Some(dir) = settings.str("chdir") {
        validate::helpers(py)
            .and_then(|h| h.getattr("enter_dir")?.call1((dir,)).map(drop))
            .map_err(|e| StartError::config(format!("can't chdir to {dir:?}: {e}")))?;
    }
    Ok(Loaded::Run(settings))
}

/// Settings for an embedded application (`BaseApplication.run()`): the defaults, then
/// `values` (setting name, value as Python assigned it) validated like a config file's, with no
/// command line, config file or environment arguments. `chdir` is applied as in [`load`].
pub fn from_values(
    py: Python<'_>,
    values: Vec<(String, Py<PyAny>)>,
) -> Result<Settings, StartError> {
    let env = |name: &str| std::env::var(name).ok();
    let mut b = Builder::with_defaults(&env)?;
    for (name, obj) in values {
        let i = table::index_of(&name)
            .ok_or_else(|| StartError::config(format!("no configuration setting for: {name}")))?;
        b.set(i, Raw::from_py(obj.bind(py)))?;
    }
    let settings = b.finish_with(false)?;
    if let Some(dir) = settings.str("chdir") {
        if settings.is_set("chdir") {
            validate::helpers(py)
                .and_then(|h| h.getattr("enter_dir")?.call1((dir,)).map(drop))
                .map_err(|e| StartError::config(format!("can't chdir to {dir:?}: {e}")))?;
        }
    }
    Ok(settings)
}

/// Parses a command line; `None` when it was `-h` or `-v` and the answer has been printed.
fn parse_or_answer(args: &[String]) -> Result<Option<Source>, StartError> {
    match cli::parse(args)? {
        Parsed::Run(src) => Ok(Some(src)),
        Parsed::Help(text) => {
            print!("{text}");
            Ok(None)
        }
        Parsed::Version => {
            println!("{} (version {})", SERVER_NAME, VERSION);
            Ok(None)
        }
    }
}

/// `./ferrocorn.conf.py` if it exists, else `./gunicorn.conf.py` if it exists.
fn default_config_file() -> Option<std::path::PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    ["ferrocorn.conf.py", "gunicorn.conf.py"]
        .iter()
        .map(|f| cwd.join(f))
        .find(|p| p.exists())
}

/// Runs the config file (`PATH`, `file:PATH` or `python:MODULE`) and returns its namespace.
fn run_config_file(py: Python<'_>, location: &str) -> Result<Vec<(String, Py<PyAny>)>, StartError> {
    let h = validate::helpers(py).map_err(|e| StartError::config(e.to_string()))?;
    let (func, arg) = if let Some(module) = location.strip_prefix("python:") {
        ("load_module", module)
    } else {
        let path = location.strip_prefix("file:").unwrap_or(location);
        if !Path::new(path).exists() {
            return Err(StartError::config(format!(
                "config file {path:?} doesn't exist"
            )));
        }
        ("load_file", path)
    };
    let result = h
        .getattr(func)
        .and_then(|f| f.call1((arg,)))
        .and_then(|r| r.extract::<(Option<Bound<'_, pyo3::types::PyDict>>, Option<String>)>())
        .map_err(|e| StartError::config(validate::exception_text(py, &e)))?;
    match result {
        (Some(ns), _) => Ok(ns
            .iter()
            .filter_map(|(k, v)| Some((k.extract::<String>().ok()?, v.unbind())))
            .collect()),
        (None, failure) => Err(StartError::config(format!(
            "failed to read config file {location}\n{}",
            failure.unwrap_or_default()
        ))),
    }
}

/// Merges sources over the defaults, validating each value as it is set.
struct Builder {
    values: Vec<Value>,
    explicit: Vec<bool>,
    app_uri: Option<String>,
}

impl Builder {
    fn with_defaults(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, StartError> {
        let values = SETTINGS
            .iter()
            .map(|s| default_value(s, env))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Builder {
            values,
            explicit: vec![false; SETTINGS.len()],
            app_uri: None,
        })
    }

    /// Gunicorn's application-specific step: the APP_MODULE, or the `--paste` file, names the
    /// default process title; a `--paste` file with a `[loggers]` section is the default
    /// `logconfig`.
    fn app_specific(&mut self, cli: &Source) -> Result<(), StartError> {
        let paste = match cli.get("paste") {
            Some(Raw::Str(p)) => Some(p.trim().to_owned()),
            _ => None,
        };
        if let Some(paste) = paste {
            let (uri, file, exists, has_loggers) = Python::attach(|py| {
                validate::helpers(py)
                    .and_then(|h| h.getattr("paste_config")?.call1((&paste,)))
                    .and_then(|r| r.extract::<(String, String, bool, bool)>())
                    .map_err(|e| StartError::config(e.value(py).to_string()))
            })?;
            if !exists {
                return Err(StartError::config(format!(
                    "{} not found",
                    table::py_repr_str(&file)
                )));
            }
            // Config files and the command line can still choose another logconfig.
            if has_loggers {
                self.set_default("logconfig", Value::Str(file.clone()));
            }
            self.set_default("default_proc_name", Value::Str(file));
            self.app_uri = Some(uri);
        } else if let Some(app) = cli.args.first() {
            self.set_default("default_proc_name", Value::Str(app.clone()));
            self.app_uri = Some(app.clone());
        }
        Ok(())
    }

    /// A worker class named by dotted path that subclasses one of uvicorn's workers runs on
    /// the native ASGI worker, its `CONFIG_KWARGS` applied as the settings they mean here
    /// (`notes` names each keyword that has no meaning here). True for such a class.
    fn uvicorn_subclass(&mut self, notes: &mut Vec<String>) -> Result<bool, StartError> {
        let Some(i) = table::index_of("worker_class") else {
            return Ok(false);
        };
        let name = match &self.values[i] {
            // Gunicorn's own classes are never uvicorn's; importing them could patch the
            // master (gevent).
            Value::Str(name)
                if name.contains('.')
                    && !name.starts_with("gunicorn.")
                    && normalize_worker_class(&self.values[i]).is_err() =>
            {
                name.clone()
            }
            _ => return Ok(false),
        };
        type Found = (Vec<(String, Py<PyAny>)>, Vec<String>);
        let found = Python::attach(|py| -> Result<Option<Found>, StartError> {
            let answer = validate::helpers(py)
                .and_then(|h| h.getattr("uvicorn_subclass")?.call1((&name,)))
                .map_err(|e| StartError::config(e.value(py).to_string()))?;
            if answer.is_none() {
                return Ok(None);
            }
            if let Ok(message) = answer.extract::<String>() {
                return Err(StartError::config(message));
            }
            answer
                .extract::<Found>()
                .map(Some)
                .map_err(|e| StartError::config(e.value(py).to_string()))
        })?;
        let Some((kwargs, ignored)) = found else {
            return Ok(false);
        };
        for (setting, value) in kwargs {
            if let Some(at) = table::index_of(&setting) {
                let raw = Python::attach(|py| Raw::from_py(value.bind(py)));
                self.set(at, raw)?;
            }
        }
        for key in ignored {
            notes.push(format!(
                "worker class {}: CONFIG_KWARGS {key:?} has no meaning in ferrocorn; ignored",
                table::py_repr_str(&name)
            ));
        }
        Ok(true)
    }

    fn set_default(&mut self, name: &str, value: Value) {
        if let Some(i) = table::index_of(name) {
            self.values[i] = value;
        }
    }

    /// Sets setting `i` from a source, naming the setting and the value when it is invalid.
    fn set(&mut self, i: usize, raw: Raw) -> Result<(), StartError> {
        let s: &Setting = &SETTINGS[i];
        let shown = raw.repr();
        let value = validate(s, raw).map_err(|why| {
            StartError::config(format!("invalid value for {}: {shown} ({why})", s.name))
        })?;
        self.values[i] = value;
        self.explicit[i] = true;
        Ok(())
    }

    fn apply(&mut self, src: Source) -> Result<(), StartError> {
        for (i, raw) in src.values {
            self.set(i, raw)?;
        }
        Ok(())
    }

    fn finish(self) -> Result<Settings, StartError> {
        self.finish_with(true)
    }

    /// The merged settings; `need_app`: an APP_MODULE (or `wsgi_app`) is required.
    fn finish_with(mut self, need_app: bool) -> Result<Settings, StartError> {
        let mut notes = Vec::new();
        let subclass = self.uvicorn_subclass(&mut notes)?;
        let mut settings = Settings {
            values: self.values,
            explicit: self.explicit,
            app_uri: self.app_uri,
            worker_base: "sync",
            notes,
        };
        if settings.app_uri.is_none() {
            settings.app_uri = settings.str("wsgi_app").map(str::to_owned);
        }
        if need_app && settings.app_uri.is_none() {
            return Err(StartError::config("No application module specified."));
        }
        settings.worker_base = if subclass {
            "asgi"
        } else {
            normalize_worker_class(settings.get("worker_class")).map_err(StartError::config)?
        };
        // Only a `--paste` application reads these, so only then are they checked (before
        // any worker starts, where a bad one would otherwise stop the load).
        if settings.str("paste").is_some() {
            for entry in settings.list("raw_paste_global_conf") {
                if !has_unescaped_equals(entry) {
                    return Err(StartError::config(format!(
                        "invalid value for raw_paste_global_conf: {} (expected KEY=VALUE)",
                        table::py_repr_str(entry)
                    )));
                }
            }
        }
        for entry in settings.list("raw_env") {
            if !entry.contains('=') {
                return Err(StartError::config(format!(
                    "invalid value for raw_env: {} (expected KEY=VALUE)",
                    table::py_repr_str(entry)
                )));
            }
        }
        // sendfile: `--no-sendfile` (or an explicit value) decides, else $SENDFILE, else on.
        let sendfile = match settings.get("sendfile") {
            Value::Bool(b) => *b,
            _ => std::env::var("SENDFILE")
                .map(|v| matches!(v.to_ascii_lowercase().as_str(), "y" | "1" | "yes" | "true"))
                .unwrap_or(true),
        };
        if let Some(i) = table::index_of("sendfile") {
            settings.values[i] = Value::Bool(sendfile);
        }
        Ok(settings)
    }
}

/// The default of setting `s`, validated as a source's value is; some defaults come from the
/// environment (`env`).
fn default_value(s: &Setting, env: &dyn Fn(&str) -> Option<String>) -> Result<Value, StartError> {
    let raw = match s.default {
        DefaultValue::None => Raw::None,
        DefaultValue::Bool(b) => Raw::Bool(b),
        DefaultValue::Int(i) => Raw::Int(i),
        DefaultValue::Str(v) => Raw::Str(v.into()),
        DefaultValue::List(l) => Raw::List(l.iter().map(|v| (*v).to_owned()).collect()),
        DefaultValue::Dict(d) => Raw::Dict(
            d.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        DefaultValue::Hook => return Ok(Value::None),
        DefaultValue::BindPort => Raw::Str(match env("PORT") {
            Some(port) => format!("0.0.0.0:{port}"),
            None => "127.0.0.1:8000".into(),
        }),
        DefaultValue::WebConcurrency => match env("WEB_CONCURRENCY") {
            Some(n) => Raw::Int(validate::parse_int_base10(&n).ok_or_else(|| {
                StartError::config(format!(
                    "invalid value for workers: WEB_CONCURRENCY={} (expected a positive \
                     integer)",
                    table::py_repr_str(&n)
                ))
            })?),
            None => Raw::Int(1),
        },
        DefaultValue::Cwd => Raw::Str(".".into()),
        DefaultValue::Euid | DefaultValue::Egid => Raw::None,
        DefaultValue::ControlSocket => Raw::Str(control_socket_default(env)),
    };
    validate(s, raw)
        .map_err(|why| StartError::config(format!("invalid default for {}: {why}", s.name)))
}

/// Whether `entry` has a `=` not preceded by a backslash (`\=` is a literal `=`).
fn has_unescaped_equals(entry: &str) -> bool {
    let bytes = entry.as_bytes();
    let before = std::iter::once(0).chain(bytes.iter().copied());
    before
        .zip(bytes)
        .any(|(prev, &b)| b == b'=' && prev != b'\\')
}

fn control_socket_default(env: &dyn Fn(&str) -> Option<String>) -> String {
    if let Some(dir) = env("XDG_RUNTIME_DIR").filter(|d| !d.is_empty() && Path::new(d).is_dir()) {
        return format!("{}/gunicorn.ctl", dir.trim_end_matches('/'));
    }
    let home = env("HOME").unwrap_or_else(|| "~".into());
    format!("{}/.gunicorn/gunicorn.ctl", home.trim_end_matches('/'))
}

/// Maps a `worker_class` value to `sync`, `gthread` or `asgi`; any other worker class is refused
/// with a message naming the value and what to use instead.
pub fn normalize_worker_class(value: &Value) -> Result<&'static str, String> {
    let name = match value {
        Value::Str(s) => s.as_str(),
        Value::Py(obj) => {
            let shown = Python::attach(|py| {
                obj.bind(py)
                    .repr()
                    .map(|r| r.to_string())
                    .unwrap_or_else(|_| "<class>".into())
            });
            return Err(format!(
                "worker class {shown} is not supported: ferrocorn runs its own workers in Rust; \
                 use -k sync or -k gthread"
            ));
        }
        _ => "sync",
    };
    match name {
        "sync" | "gunicorn.workers.sync.SyncWorker" | "egg:gunicorn#sync" => return Ok("sync"),
        "gthread" | "gunicorn.workers.gthread.ThreadWorker" | "egg:gunicorn#gthread" => {
            return Ok("gthread")
        }
        "asgi" | "gunicorn.workers.gasgi.ASGIWorker" | "egg:gunicorn#asgi" => return Ok("asgi"),
        // uvicorn's workers for Gunicorn serve ASGI applications: the native worker does.
        "uvicorn.workers.UvicornWorker"
        | "uvicorn.workers.UvicornH11Worker"
        | "uvicorn_worker.UvicornWorker"
        | "uvicorn_worker.UvicornH11Worker" => return Ok("asgi"),
        _ => {}
    }
    let lower = name.to_ascii_lowercase();
    let shown = table::py_repr_str(name);
    if ["gevent", "eventlet", "tornado"]
        .iter()
        .any(|k| lower.contains(k))
    {
        Err(format!(
            "worker class {shown} is not supported: ferrocorn's gthread worker (--threads N) \
             keeps thousands of idle connections cheaply in Rust; use -k gthread"
        ))
    } else {
        Err(format!(
            "worker class {shown} is not supported: ferrocorn runs only its built-in workers; \
             use -k sync, -k gthread or -k asgi"
        ))
    }
}

/// What `--print-config` prints: `name = value` for every setting, sorted by name.
pub fn print_config(py: Python<'_>, settings: &Settings) -> String {
    let width = SETTINGS.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let mut lines: Vec<(&str, String)> = SETTINGS
        .iter()
        .zip(&settings.values)
        .map(|(s, v)| (s.name, display(py, v)))
        .collect();
    lines.sort_unstable_by(|a, b| a.0.cmp(b.0));
    lines
        .iter()
        .map(|(name, v)| format!("{name:width$} = {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A value as Python's `repr()` shows it (a callable as `--print-config` shows it).
fn repr(py: Python<'_>, v: &Value) -> String {
    match v {
        Value::Str(s) => table::py_repr_str(s),
        v => display(py, v),
    }
}

/// Gunicorn's `Current configuration:` debug message: `  name: value` for every setting, in
/// the table's order.
pub fn current_configuration(py: Python<'_>, settings: &Settings) -> String {
    let mut text = String::from("Current configuration:");
    for (s, v) in SETTINGS.iter().zip(&settings.values) {
        text.push_str(&format!("\n  {}: {}", s.name, display(py, v)));
    }
    text
}

/// A value as Python's `str()` shows it.
fn display(py: Python<'_>, v: &Value) -> String {
    match v {
        Value::None => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Int(i) => i.to_string(),
        Value::Str(s) => s.clone(),
        Value::List(l) => table::py_repr_list(l.iter().map(String::as_str)),
        Value::Dict(d) => table::py_repr_dict(d.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        Value::Py(obj) => validate::helpers(py)
            .and_then(|h| {
                h.getattr("describe")?
                    .call1((obj.bind(py),))?
                    .extract::<String>()
            })
            .unwrap_or_else(|_| "<object>".into()),
    }
}

impl Settings {
    fn index(name: &str) -> usize {
        match table::index_of(name) {
            Some(i) => i,
            None => panic!("unknown setting {name:?}: not in config::table::SETTINGS"),
        }
    }

    /// The value of setting `name`. Names are the table's; an unknown name is a programming error.
    pub fn get(&self, name: &str) -> &Value {
        &self.values[Self::index(name)]
    }
    /// An integer setting (validated non-negative); 0 when it holds no integer.
    pub fn uint(&self, name: &str) -> u64 {
        match self.get(name) {
            Value::Int(i) => u64::try_from(*i).unwrap_or(0),
            Value::Bool(b) => u64::from(*b),
            _ => 0,
        }
    }
    /// A boolean setting; `false` when unset.
    pub fn bool(&self, name: &str) -> bool {
        matches!(self.get(name), Value::Bool(true))
    }
    pub fn str(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn list(&self, name: &str) -> &[String] {
        match self.get(name) {
            Value::List(l) => l,
            _ => &[],
        }
    }
    pub fn dict(&self, name: &str) -> &[(String, String)] {
        match self.get(name) {
            Value::Dict(d) => d,
            _ => &[],
        }
    }
    /// A Python object setting (hooks, callables); `None` when unset.
    pub fn py(&self, name: &str) -> Option<&Py<PyAny>> {
        match self.get(name) {
            Value::Py(obj) => Some(obj),
            _ => None,
        }
    }
    /// Whether a source set `name` explicitly.
    pub fn is_set(&self, name: &str) -> bool {
        self.explicit[Self::index(name)]
    }
    /// Whether a source set `name` to something other than its default.
    fn differs_from_default(&self, name: &str) -> bool {
        let i = Self::index(name);
        let env = |name: &str| std::env::var(name).ok();
        self.explicit[i] && default_value(&SETTINGS[i], &env).map_or(true, |d| d != self.values[i])
    }
    /// The settings ferrocorn does not act on yet that hold a value other than their default,
    /// sorted by what becomes of them (see [`Support`]).
    pub fn unapplied(&self, py: Python<'_>) -> Unapplied {
        let mut out = Unapplied::default();
        for (s, v) in SETTINGS.iter().zip(&self.values) {
            if s.support == Support::Applied || !self.differs_from_default(s.name) {
                continue;
            }
            let shown = format!("{} = {}", s.name, repr(py, v));
            match s.support {
                Support::Refused { instead, only_with }
                    if out.refused.is_none()
                        && only_with.map_or(true, |o| self.differs_from_default(o)) =>
                {
                    out.refused = Some(format!("{shown}: {instead}"));
                }
                Support::Refused { .. } if out.refused.is_some() => {}
                _ => out.warned.push(shown),
            }
        }
        out
    }
    /// `sync` or `gthread`, after Gunicorn's rule that `--threads` > 1 turns `sync` into `gthread`.
    pub fn worker_class(&self) -> &str {
        if self.worker_base == "sync" && self.uint("threads") > 1 {
            "gthread"
        } else {
            self.worker_base
        }
    }
    /// `raw_env` as `(KEY, VALUE)` pairs (every entry was checked to hold `=`).
    pub fn env(&self) -> Vec<(String, String)> {
        self.list("raw_env")
            .iter()
            .filter_map(|e| e.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect()
    }
    /// `proc_name`, else `default_proc_name`.
    pub fn proc_name(&self) -> &str {
        self.str("proc_name")
            .or_else(|| self.str("default_proc_name"))
            .unwrap_or(SERVER_NAME)
    }
    /// Every setting as a Python dict, name -> value (`cfg` in hooks).
    pub fn to_py_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let dict = pyo3::types::PyDict::new(py);
        for (s, v) in SETTINGS.iter().zip(&self.values) {
            dict.set_item(s.name, v.to_py(py)?)?;
        }
        Ok(dict)
    }
    /// The request-head limits, clamped as Gunicorn clamps them.
    pub fn request_limits(&self) -> RequestLimits {
        let get = |n| usize::try_from(self.uint(n)).unwrap_or(usize::MAX);
        let line = match get("limit_request_line") {
            0 => 1024 * 1024,
            n => n.min(8190),
        };
        let fields = match get("limit_request_fields") {
            0 => 32768,
            n => n.min(32768),
        };
        let field_size = match get("limit_request_field_size") {
            0 => 8190,
            n => n,
        };
        RequestLimits {
            line,
            fields,
            field_size,
        }
    }
}

/// The settings reference as Markdown (docs/settings.md).
#[pyfunction]
fn settings_markdown() -> String {
    table::render_markdown()
}

/// Validates `value` for setting `name` as a config file's value would be, and returns the
/// value as stored. Raises `AttributeError` for an unknown name and `ValueError` naming the
/// setting and the value otherwise (`BaseApplication.cfg.set`).
#[pyfunction]
fn validate_setting<'py>(
    py: Python<'py>,
    name: &str,
    value: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let setting = table::index_of(name).map(|i| &SETTINGS[i]).ok_or_else(|| {
        pyo3::exceptions::PyAttributeError::new_err(format!("No configuration setting for: {name}"))
    })?;
    let raw = Raw::from_py(value);
    let shown = raw.repr();
    let stored = validate(setting, raw).map_err(|why| {
        pyo3::exceptions::PyValueError::new_err(format!(
            "invalid value for {name}: {shown} ({why})"
        ))
    })?;
    stored.to_py(py)
}

/// The namespace of a config file (`PATH`, `file:PATH` or `python:MODULE`), run as `-c` runs
/// it (`Application.load_config_from_file`). Raises `RuntimeError` saying why when the file
/// does not exist or raises.
#[pyfunction]
fn read_config_file(py: Python<'_>, location: &str) -> PyResult<Vec<(String, Py<PyAny>)>> {
    run_config_file(py, location).map_err(|e| {
        let message = e.message.strip_prefix("Error: ").unwrap_or(&e.message);
        pyo3::exceptions::PyRuntimeError::new_err(message.to_owned())
    })
}

/// `(name, section, default, doc)` of one setting.
type SettingRow = (&'static str, &'static str, Py<PyAny>, &'static str);

/// `(name, section, default, doc)` for every setting, in table order, with the defaults the
/// current environment gives (`BaseApplication.cfg.settings`).
#[pyfunction]
fn setting_table(py: Python<'_>) -> PyResult<Vec<SettingRow>> {
    let env = |name: &str| std::env::var(name).ok();
    let defaults = Builder::with_defaults(&env)
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.message))?;
    SETTINGS
        .iter()
        .zip(&defaults.values)
        .map(|(s, v)| Ok((s.name, s.section, v.to_py(py)?.unbind(), s.doc)))
        .collect()
}

/// Adds the settings functions to the `_ferrocorn` module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(settings_markdown, m)?)?;
    m.add_function(wrap_pyfunction!(validate_setting, m)?)?;
    m.add_function(wrap_pyfunction!(setting_table, m)?)?;
    m.add_function(wrap_pyfunction!(read_config_file, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests;
