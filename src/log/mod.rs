//! The error log: Gunicorn's line format, `[YYYY-MM-DD HH:MM:SS +ZZZZ] [pid] [LEVEL] message`.
//!
//! The access log lives in [`access`].
//!
//! One `write(2)` per line on an `O_APPEND` descriptor, so lines from the master and its workers
//! never interleave.

pub mod access;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

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

    fn label(self) -> &'static str {
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

fn open_append(path: &str) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open log file {path:?}: {e}"))
}

/// `[2026-11-23 02:31:00 +0000]`, in local time like Python's `time.strftime`.
pub fn timestamp() -> String {
    let mut now: libc::time_t = 0;
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let mut out = [0u8; 64];
    // SAFETY: time/localtime_r/strftime only write into the buffers we pass.
    let len = unsafe {
        libc::time(&mut now);
        libc::localtime_r(&now, &mut tm);
        libc::strftime(
            out.as_mut_ptr().cast(),
            out.len(),
            c"[%Y-%m-%d %H:%M:%S %z]".as_ptr(),
            &tm,
        )
    };
    String::from_utf8_lossy(&out[..len]).into_owned()
}

pub fn log(level: Level, message: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let line = format!(
        "{} [{}] [{}] {}\n",
        timestamp(),
        std::process::id(),
        level.label(),
        message
    );
    write_line(line.as_bytes());
}

/// Writes raw text (e.g. a Python traceback) to the error log as it is.
pub fn write_raw(text: &str) {
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
