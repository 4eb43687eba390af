//! Why the server, or one worker, cannot start, and the exit status that says so.
//!
//! Every start-up failure travels as one [`StartError`] to the one place that tells the
//! operator and ends the process (`start_failed` in the log layer); the statuses are Gunicorn's,
//! which supervisors and the master read.

/// Gunicorn's exit statuses, which operators and supervisors know.
pub mod exit_code {
    pub const OK: i32 = 0;
    pub const CONFIG_ERROR: i32 = 1;
    pub const USAGE_ERROR: i32 = 2;
    pub const WORKER_BOOT_ERROR: i32 = 3;
    pub const APP_LOAD_ERROR: i32 = 4;
}

/// Where the operator learns of a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Told {
    /// On stderr, as is: the error log may not exist yet (a bad setting, a bad command line).
    Stderr,
    /// In the error log.
    Log,
    /// Already, where it happened (a traceback logged with its context).
    Already,
}

/// A failure to start and its exit status.
#[derive(Debug)]
pub struct StartError {
    /// What to say, complete (for a bad setting it names the setting and the value).
    pub message: String,
    pub exit_code: i32,
    pub told: Told,
}

impl StartError {
    /// A bad setting, config file or environment, said on stderr as `Error: ...` (exit 1).
    pub fn config(message: impl Into<String>) -> Self {
        StartError {
            message: format!("Error: {}", message.into()),
            exit_code: exit_code::CONFIG_ERROR,
            told: Told::Stderr,
        }
    }

    /// A bad command line: the usage text and the error, said on stderr as is (exit 2).
    pub fn usage(text: String) -> Self {
        StartError {
            message: text,
            exit_code: exit_code::USAGE_ERROR,
            told: Told::Stderr,
        }
    }

    /// A failure once logging is set up, said in the error log.
    pub fn logged(exit_code: i32, message: impl Into<String>) -> Self {
        StartError {
            message: message.into(),
            exit_code,
            told: Told::Log,
        }
    }

    /// A failure already said where it happened; only its status is left.
    pub fn reported(exit_code: i32) -> Self {
        StartError {
            message: String::new(),
            exit_code,
            told: Told::Already,
        }
    }
}
