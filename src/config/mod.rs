//! Settings: one declarative table ([`table::SETTINGS`]) drives the command line, the config
//! file, the environment variables, `--print-config` and docs/settings.md.
//!
//! Sources, lowest precedence first: defaults < config file < `GUNICORN_CMD_ARGS` /
//! `FERROCORN_CMD_ARGS` < command line.

pub mod table;
pub mod value;

pub use value::Value;

use pyo3::prelude::*;

/// Why the server cannot start with the given settings. `message` names the setting and the
/// value; the caller prints it and exits with `exit_code`.
#[derive(Debug)]
pub struct ConfigError {
    pub message: String,
    pub exit_code: i32,
}

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
}

/// Parses every source for `argv` (as `sys.argv`). Runs the config file in the interpreter.
pub fn load(py: Python<'_>, argv: &[String]) -> Result<Loaded, ConfigError> {
    let _ = (py, argv);
    todo!("config::load")
}

impl Settings {
    /// The value of setting `name`. Names are the table's; an unknown name is a programming error.
    pub fn get(&self, name: &str) -> &Value {
        let _ = (&self.values, &self.explicit);
        todo!("Settings::get {name}")
    }
    pub fn uint(&self, name: &str) -> u64 {
        todo!("Settings::uint {name}")
    }
    pub fn bool(&self, name: &str) -> bool {
        todo!("Settings::bool {name}")
    }
    pub fn str(&self, name: &str) -> Option<&str> {
        todo!("Settings::str {name}")
    }
    pub fn list(&self, name: &str) -> &[String] {
        todo!("Settings::list {name}")
    }
    pub fn dict(&self, name: &str) -> &[(String, String)] {
        todo!("Settings::dict {name}")
    }
    /// A Python object setting (hooks, callables); `None` when unset.
    pub fn py(&self, name: &str) -> Option<&Py<PyAny>> {
        todo!("Settings::py {name}")
    }
    /// Whether a source set `name` explicitly.
    pub fn is_set(&self, name: &str) -> bool {
        todo!("Settings::is_set {name}")
    }
    /// `sync` or `gthread`, after Gunicorn's rule that `--threads` > 1 turns `sync` into `gthread`.
    pub fn worker_class(&self) -> &str {
        todo!("Settings::worker_class")
    }
}
