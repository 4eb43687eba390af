//! The error log: Gunicorn's line format, `[YYYY-MM-DD HH:MM:SS +ZZZZ] [pid] [LEVEL] message`.
//!
//! One `write(2)` per line on an `O_APPEND` descriptor, so lines from the master and its workers
//! never interleave. Beside the file (or standard error) a line may also go to syslog
//! ([`syslog`]) and count in StatsD ([`statsd`]); with a logging config or a custom logger class
//! every line goes through Python instead ([`python`]). The access log lives in [`access`],
//! the shared-memory request counters behind the Prometheus endpoint in [`metrics`].

pub mod access;
pub mod metrics;
pub mod python;
mod request;
pub mod statsd;
pub mod syslog;

pub use request::{latin1, LoggedRequest};

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

use crate::config::error::{StartError, Told};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Debug = 10,
    Info = 20,
    Warning = 30,
    Error = 40,
    Critical = 50,
}

impl Level {
    pub fn parse(name: &str) -> Option<Level> {
        match name.to_ascii_lowercase().as_str() {
            "debug" => Some(Level::Debug),
            "info" => Some(Level::Info),
            "warning" | "warn" => Some(Level::Warning),
            "error" => Some(Level::Error),
            "critical" => Some(Level::Critical),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
/// `None` means stderr.
static SINK: Mutex<Option<(String, File)>> = Mutex::new(None);

pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 >= LEVEL.load(Ordering::Relaxed)
}

/// Sends the error log to `path` (`-` = stderr). Errors name the path.
pub fn set_error_logfile(path: &str) -> Result<(), String> {
    let mut sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
    if path == "-" {
        *sink = None;
        return Ok(());
    }
    let file = open_append(path)?;
    *sink = Some((path.to_string(), file));
    Ok(())
}

/// Reopens the error log file (after a logrotate-style rename).
pub fn reopen() -> Result<(), String> {
    let mut sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((path, file)) = sink.as_mut() {
        *file = open_append(path)?;
    }
    Ok(())
}

/// `--capture-output`: the file descriptors 1 and 2 point at this file (the error log).
static CAPTURE: Mutex<Option<String>> = Mutex::new(None);

/// Points standard output and error (descriptors 1 and 2, which workers inherit) at `path`,
/// as Gunicorn does with `--capture-output` and an error log file; `None` stops capturing
/// (the descriptors stay where they are).
pub fn capture_output(path: Option<&str>) -> Result<(), String> {
    let mut capture = CAPTURE.lock().unwrap_or_else(|e| e.into_inner());
    *capture = path.map(str::to_string);
    match capture.as_deref() {
        Some(path) => redirect_stdio(path),
        None => Ok(()),
    }
}

fn redirect_stdio(path: &str) -> Result<(), String> {
    python::flush_stdio();
    let file = open_append(path)?;
    for fd in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        // SAFETY: dup2 onto the standard descriptors; `file` stays open until after the calls.
        if unsafe { libc::dup2(file.as_raw_fd(), fd) } < 0 {
            return Err(format!(
                "cannot redirect descriptor {fd} to {path:?}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// USR1 (and HUP): reopens every log file this process writes, so that after a
/// logrotate-style rename the next line lands in a fresh file. Each line is written whole to
/// either the old or the new file: writers hold the sink's lock for the length of a line.
/// Returns the errors, each naming its file.
pub fn reopen_all() -> Vec<String> {
    let mut errors = Vec::new();
    let capture = CAPTURE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let results = [
        reopen(),
        access::reopen(),
        capture.as_deref().map_or(Ok(()), redirect_stdio),
        python::reopen(),
    ];
    for result in results {
        if let Err(e) = result {
            errors.push(e);
        }
    }
    errors
}

/// Refuses a log file that cannot be opened for appending, in Gunicorn's words (it checks
/// both log files as the master sets up its logger, before binding):
/// `Error: '/var/log/x.log' isn't writable [FileNotFoundError(2, 'No such file or directory')]`.
pub fn check_writable(path: &str) -> Result<(), String> {
    match OpenOptions::new().create(true).append(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "Error: '{path}' isn't writable [{}]",
            python_os_error(&e)
        )),
    }
}

/// An `OSError` as Python's `repr()` shows it, e.g. `PermissionError(13, 'Permission denied')`.
fn python_os_error(e: &std::io::Error) -> String {
    let Some(errno) = e.raw_os_error() else {
        return format!("OSError({e:?})");
    };
    let class = match errno {
        libc::ENOENT => "FileNotFoundError",
        libc::EACCES | libc::EPERM => "PermissionError",
        libc::EISDIR => "IsADirectoryError",
        libc::ENOTDIR => "NotADirectoryError",
        libc::EEXIST => "FileExistsError",
        _ => "OSError",
    };
    // std's message is strerror's text followed by ` (os error N)`.
    let shown = e.to_string();
    let text = shown
        .strip_suffix(&format!(" (os error {errno})"))
        .unwrap_or(&shown);
    format!("{class}({errno}, '{text}')")
}

fn open_append(path: &str) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open log file {path:?}: {e}"))
}

/// `[2026-11-23 02:31:00 +0000]`, in local time like Python's `time.strftime`.
pub fn timestamp() -> String {
    local_time(c"[%Y-%m-%d %H:%M:%S %z]")
}

/// The current local time formatted by `strftime(3)`; `format` must produce under 64 bytes.
fn local_time(format: &std::ffi::CStr) -> String {
    let mut now: libc::time_t = 0;
    // SAFETY: `tm` is a C struct of integers and (on glibc) a `const char *` zone name, for
    // which all-zero bytes are a valid value; localtime_r overwrites it before it is read.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let mut out = [0u8; 64];
    // SAFETY: each call gets valid pointers to our own locals: time writes `now`, localtime_r
    // reads `now` and writes `tm`, strftime reads the NUL-terminated `format` and `tm` and
    // writes at most `out.len()` bytes into `out`, returning how many (0 if it did not fit).
    let len = unsafe {
        libc::time(&mut now);
        libc::localtime_r(&now, &mut tm);
        libc::strftime(out.as_mut_ptr().cast(), out.len(), format.as_ptr(), &tm)
    };
    String::from_utf8_lossy(&out[..len]).into_owned()
}

/// Logs one message: counted in StatsD whatever the level (as Gunicorn's StatsD logger does),
/// then, if `--log-level` lets it through, written to the error log and syslog, or handed to
/// the Python logger.
pub fn log(level: Level, message: fmt::Arguments<'_>) {
    statsd::count_log(level);
    if !enabled(level) {
        return;
    }
    if python::active() {
        python::log(level, &message.to_string());
        return;
    }
    let message = message.to_string();
    let line = format!(
        "{} [{}] [{}] {}\n",
        timestamp(),
        std::process::id(),
        level.label(),
        message
    );
    write_line(line.as_bytes());
    syslog::error_line(level, &message);
}

/// An error with a Python exception (`logger.exception(...)` in Gunicorn): the message line,
/// then the traceback. `traceback` is the formatted exception, newline-terminated.
pub fn exception(message: &str, traceback: &str) {
    statsd::increment("gunicorn.log.exception", 1);
    if !enabled(Level::Error) {
        return;
    }
    let line = format!(
        "{} [{}] [{}] {}\n{}",
        timestamp(),
        std::process::id(),
        Level::Error.label(),
        message,
        traceback
    );
    write_line(line.as_bytes());
    syslog::error_line(
        Level::Error,
        &format!("{message}\n{}", traceback.trim_end_matches('\n')),
    );
}

/// Writes raw text (`wsgi.errors`) to the error log as it is: to the file or standard error,
/// or to the streams of the Python error logger's handlers. Not to syslog, as in Gunicorn.
pub fn write_raw(text: &str) {
    if python::active() {
        python::write_raw(text);
        return;
    }
    write_line(text.as_bytes());
}

fn write_line(bytes: &[u8]) {
    let sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
    let fd = match sink.as_ref() {
        Some((_, file)) => file.as_raw_fd(),
        None => libc::STDERR_FILENO,
    };
    let mut out = FdWriter(fd);
    // A log line that cannot be written has nowhere else to go.
    let _ = out.write_all(bytes);
}

struct FdWriter(i32);

impl Write for FdWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // SAFETY: writing from a valid slice to a descriptor we do not own or close.
        let n = unsafe { libc::write(self.0, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Tells the operator why the server or a worker cannot start, where the error says, and
/// gives the exit status.
pub fn start_failed(err: StartError) -> i32 {
    match err.told {
        Told::Stderr => eprintln!("{}", err.message),
        Told::Log => error(format_args!("{}", err.message)),
        Told::Already => {}
    }
    err.exit_code
}

pub fn debug(message: fmt::Arguments<'_>) {
    log(Level::Debug, message)
}
pub fn info(message: fmt::Arguments<'_>) {
    log(Level::Info, message)
}
pub fn warning(message: fmt::Arguments<'_>) {
    log(Level::Warning, message)
}
pub fn error(message: fmt::Arguments<'_>) {
    log(Level::Error, message)
}
pub fn critical(message: fmt::Arguments<'_>) {
    log(Level::Critical, message)
}
