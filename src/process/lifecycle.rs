//! A worker's lifecycle and its signals, as in Gunicorn: TERM = graceful stop, INT/QUIT =
//! stop now, USR1 = reopen log files, ABRT = the master found the worker silent. The
//! handlers only record the signal (atomic stores) and wake the event loop through a pipe.
//!
//! The stop state is one [`State`] in one atomic ([`worker`]); it only moves forward: running,
//! then retiring (stopping on its own), graceful stop (TERM), fast stop (INT/QUIT). The other
//! flags here are requests and markers, not stop states.

use std::os::unix::io::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, AtomicUsize, Ordering};

/// Why a worker stops on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retire {
    /// It served `--max-requests`.
    MaxRequests,
    /// `--reload` saw a file change.
    Reload,
    /// Its master is gone.
    ParentGone,
}

/// Where a worker is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Running,
    /// Stopping on its own: no new connections, open ones finish (`Connection: close`).
    Retiring(Retire),
    /// TERM: as retiring, because the master asked.
    GracefulStop,
    /// INT or QUIT: exit now, after the application call in progress.
    FastStop,
}

// The atomic's values, ordered so that a stop only ever moves to a later state.
const RUNNING: u8 = 0;
const RETIRING_MAX_REQUESTS: u8 = 1;
const RETIRING_RELOAD: u8 = 2;
const RETIRING_PARENT_GONE: u8 = 3;
const GRACEFUL_STOP: u8 = 4;
const FAST_STOP: u8 = 5;

/// A worker's stop state, readable from any thread and written by signal handlers (only
/// lock-free atomic operations, which are async-signal-safe).
pub struct Lifecycle(AtomicU8);

impl Lifecycle {
    pub const fn new() -> Lifecycle {
        Lifecycle(AtomicU8::new(RUNNING))
    }

    pub fn state(&self) -> State {
        match self.0.load(Ordering::SeqCst) {
            RUNNING => State::Running,
            RETIRING_MAX_REQUESTS => State::Retiring(Retire::MaxRequests),
            RETIRING_RELOAD => State::Retiring(Retire::Reload),
            RETIRING_PARENT_GONE => State::Retiring(Retire::ParentGone),
            GRACEFUL_STOP => State::GracefulStop,
            _ => State::FastStop,
        }
    }

    /// Whether any stop began: responses from now on announce `Connection: close`. Read by
    /// the request cycle on any thread, hence a relaxed load.
    pub fn is_stopping(&self) -> bool {
        self.0.load(Ordering::Relaxed) != RUNNING
    }

    pub fn is_fast_stop(&self) -> bool {
        self.0.load(Ordering::SeqCst) == FAST_STOP
    }

    /// Begins to stop on its own, unless a stop is already under way (the first reason stays).
    pub fn begin_retiring(&self, why: Retire) {
        let value = match why {
            Retire::MaxRequests => RETIRING_MAX_REQUESTS,
            Retire::Reload => RETIRING_RELOAD,
            Retire::ParentGone => RETIRING_PARENT_GONE,
        };
        let _ = self
            .0
            .compare_exchange(RUNNING, value, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// TERM: a graceful stop, unless a fast one began. Async-signal-safe.
    pub fn begin_graceful(&self) {
        self.0.fetch_max(GRACEFUL_STOP, Ordering::SeqCst);
    }

    /// INT or QUIT: a fast stop. Async-signal-safe.
    pub fn begin_fast(&self) {
        self.0.store(FAST_STOP, Ordering::SeqCst);
    }
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle::new()
    }
}

/// This process's lifecycle (a worker's; the master never changes it).
static WORKER: Lifecycle = Lifecycle::new();

pub fn worker() -> &'static Lifecycle {
    &WORKER
}

/// USR1 asked for the log files to be reopened; the event loop takes the request.
static REOPEN_LOGS: AtomicBool = AtomicBool::new(false);
/// Set while a `sync` worker runs the application on its only thread; a fast stop then
/// cannot wait for the event loop.
pub static IN_APP_CALL: AtomicBool = AtomicBool::new(false);
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// A signal was passed on to Python (see [`hand_to_python`]); its handler is waiting to run.
pub static PY_HANDLER_PENDING: AtomicBool = AtomicBool::new(false);
/// Python's own C handlers for SIGINT, SIGQUIT and SIGABRT, when hooks need them (else 0).
static PY_INT: AtomicUsize = AtomicUsize::new(0);
static PY_QUIT: AtomicUsize = AtomicUsize::new(0);
static PY_ABRT: AtomicUsize = AtomicUsize::new(0);

/// Whether USR1 asked for the log files to be reopened since the last call.
pub fn take_reopen_logs() -> bool {
    REOPEN_LOGS.swap(false, Ordering::SeqCst)
}

fn py_slot(sig: libc::c_int) -> Option<&'static AtomicUsize> {
    match sig {
        libc::SIGINT => Some(&PY_INT),
        libc::SIGQUIT => Some(&PY_QUIT),
        libc::SIGABRT => Some(&PY_ABRT),
        _ => None,
    }
}

/// Passes `sig` to Python's C handler, if one was recorded; true if it was.
fn chain_to_python(sig: libc::c_int) -> bool {
    let handler = py_slot(sig).map_or(0, |slot| slot.load(Ordering::SeqCst));
    if handler == 0 {
        return false;
    }
    // SAFETY: `handler` is the sa_handler Python's signal module installed for `sig` (recorded
    // by hand_to_python); it is async-signal-safe: it only flags the signal for the main thread.
    let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
    f(sig);
    PY_HANDLER_PENDING.store(true, Ordering::SeqCst);
    true
}

/// After Python registered a handler for `sig` (INT, QUIT or ABRT) with `signal.signal`:
/// records Python's C handler and puts ours back in front of it. Ours then chains to Python's
/// instead of exiting, so the Python handler (which runs the worker_int / worker_abort hooks)
/// runs at the main thread's next signal check.
pub fn hand_to_python(sig: libc::c_int) {
    let Some(slot) = py_slot(sig) else { return };
    // SAFETY: sigaction is integers, a handler address and a signal set, all valid as zero
    // bytes; with a null new action, sigaction(2) only writes the current one into `old`.
    let current = unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old);
        old
    };
    let handler = current.sa_sigaction;
    if current.sa_flags & libc::SA_SIGINFO != 0
        || handler == libc::SIG_DFL
        || handler == libc::SIG_IGN
        || handler == on_signal as *const () as usize
    {
        return;
    }
    slot.store(handler, Ordering::SeqCst);
    set_handler(sig, on_signal as *const () as usize);
}

extern "C" fn on_signal(sig: libc::c_int) {
    match sig {
        libc::SIGTERM => WORKER.begin_graceful(),
        libc::SIGINT | libc::SIGQUIT => {
            WORKER.begin_fast();
            if !chain_to_python(sig) && IN_APP_CALL.load(Ordering::SeqCst) {
                // SAFETY: _exit is async-signal-safe.
                unsafe { libc::_exit(0) };
            }
        }
        libc::SIGUSR1 => REOPEN_LOGS.store(true, Ordering::SeqCst),
        // With a worker_abort/worker_exit hook, Python runs it and exits with status 1.
        libc::SIGABRT if !chain_to_python(sig) => {
            // SAFETY: _exit is async-signal-safe; exit status 1 like Gunicorn's aborted worker.
            unsafe { libc::_exit(1) };
        }
        _ => {}
    }
    wake();
}

/// Wakes the event loop. Async-signal-safe.
fn wake() {
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; a full pipe already holds a wake-up.
        unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
    }
}

/// Begins to stop on its own from any thread, and wakes the event loop to act on it.
pub fn retire_from_any_thread(why: Retire) {
    WORKER.begin_retiring(why);
    wake();
}

/// Creates the wake-up pipe and returns its read end. A signal that arrived since fork (only
/// recorded, see [`install_handlers`]) leaves a wake-up in it.
pub fn install() -> std::io::Result<RawFd> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    WAKE_FD.store(fds[1], Ordering::SeqCst);
    install_handlers();
    if WORKER.is_stopping() {
        // SAFETY: writing one byte to our own non-blocking pipe.
        unsafe { libc::write(fds[1], [1u8].as_ptr().cast(), 1) };
    }
    Ok(fds[0])
}

/// Replaces the master's inherited handlers with the worker's. Called in the child right after
/// fork, while signals are still blocked, so that a TERM sent to a worker that is still
/// booting is recorded rather than lost.
pub fn install_handlers() {
    for sig in [
        libc::SIGHUP,
        libc::SIGCHLD,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGUSR2,
        libc::SIGWINCH,
    ] {
        set_handler(sig, libc::SIG_DFL);
    }
    set_handler(libc::SIGPIPE, libc::SIG_IGN);
    for sig in [
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGABRT,
    ] {
        set_handler(sig, on_signal as *const () as usize);
    }
}

fn set_handler(sig: libc::c_int, handler: libc::sighandler_t) {
    // SAFETY: a zeroed sigaction is a valid value (see hand_to_python); it gets a handler that
    // is a plain `extern "C" fn(c_int)` (SA_SIGINFO is not set) and an emptied mask, and
    // sigaction(2) only reads it.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(sig, &action, std::ptr::null_mut());
    }
}

/// Empties the wake-up pipe.
/// The read end of the wake-up pipe, on the worker's event loop.
pub struct Wakeup {
    pipe: tokio::io::unix::AsyncFd<RawFd>,
}

impl Wakeup {
    /// Watches the pipe [`install`] returned, which stays open for the worker's whole life.
    pub fn new(fd: RawFd) -> std::io::Result<Wakeup> {
        // SAFETY: the wake-up pipe is never closed.
        let pipe = unsafe { tokio::io::unix::AsyncFd::register(fd) }?;
        Ok(Wakeup { pipe })
    }

    /// Waits until a signal handler wrote to the pipe, and empties it.
    pub async fn signalled(&self) -> std::io::Result<()> {
        let mut guard = self.pipe.readable().await?;
        drain(*self.pipe.get_ref());
        guard.clear_ready();
        Ok(())
    }
}

fn drain(fd: RawFd) {
    let mut buf = [0u8; 64];
    // SAFETY: read(2) writes at most `buf.len()` bytes into the local buffer; the pipe is
    // non-blocking, so the loop ends when it is empty.
    while unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_only_moves_forward() {
        let life = Lifecycle::new();
        assert_eq!(life.state(), State::Running);
        assert!(!life.is_stopping());
        life.begin_retiring(Retire::MaxRequests);
        assert_eq!(life.state(), State::Retiring(Retire::MaxRequests));
        assert!(life.is_stopping());
        life.begin_retiring(Retire::ParentGone);
        assert_eq!(life.state(), State::Retiring(Retire::MaxRequests));
        life.begin_graceful();
        assert_eq!(life.state(), State::GracefulStop);
        life.begin_retiring(Retire::Reload);
        assert_eq!(life.state(), State::GracefulStop);
        assert!(!life.is_fast_stop());
        life.begin_fast();
        assert!(life.is_fast_stop());
        life.begin_graceful();
        assert_eq!(life.state(), State::FastStop);
    }

    #[test]
    fn a_fast_stop_overrides_running() {
        let life = Lifecycle::new();
        life.begin_fast();
        assert_eq!(life.state(), State::FastStop);
        assert!(life.is_stopping());
    }
}
