//! Signals in a worker, as in Gunicorn: TERM = graceful stop, INT/QUIT = stop now, USR1 =
//! reopen log files, ABRT = the master found the worker silent. The handlers only record the
//! signal and wake the event loop through a pipe.

use std::os::unix::io::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

/// A graceful stop began (TERM, max-requests, parent gone): responses from now on announce
/// `Connection: close`.
pub static GRACEFUL: AtomicBool = AtomicBool::new(false);
pub static FAST: AtomicBool = AtomicBool::new(false);
pub static REOPEN: AtomicBool = AtomicBool::new(false);
/// Set while a `sync` worker runs the application on its only thread; a fast stop then
/// cannot wait for the event loop.
pub static IN_APP_CALL: AtomicBool = AtomicBool::new(false);
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// A signal was passed on to Python (see [`hand_to_python`]); its handler is waiting to run.
pub static PY_PENDING: AtomicBool = AtomicBool::new(false);
/// Python's own C handlers for SIGINT, SIGQUIT and SIGABRT, when hooks need them (else 0).
static PY_INT: AtomicUsize = AtomicUsize::new(0);
static PY_QUIT: AtomicUsize = AtomicUsize::new(0);
static PY_ABRT: AtomicUsize = AtomicUsize::new(0);

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
    PY_PENDING.store(true, Ordering::SeqCst);
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
        libc::SIGTERM => GRACEFUL.store(true, Ordering::SeqCst),
        libc::SIGINT | libc::SIGQUIT => {
            FAST.store(true, Ordering::SeqCst);
            if !chain_to_python(sig) && IN_APP_CALL.load(Ordering::SeqCst) {
                // SAFETY: _exit is async-signal-safe.
                unsafe { libc::_exit(0) };
            }
        }
        libc::SIGUSR1 => REOPEN.store(true, Ordering::SeqCst),
        // With a worker_abort/worker_exit hook, Python runs it and exits with status 1.
        libc::SIGABRT if !chain_to_python(sig) => {
            // SAFETY: _exit is async-signal-safe; exit status 1 like Gunicorn's aborted worker.
            unsafe { libc::_exit(1) };
        }
        _ => {}
    }
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; a full pipe already holds a wake-up.
        unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
    }
}

/// Whether the worker is stopping; read by the request cycle on any thread.
pub fn stopping() -> bool {
    GRACEFUL.load(Ordering::Relaxed)
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
    if GRACEFUL.load(Ordering::SeqCst) || FAST.load(Ordering::SeqCst) {
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
pub fn drain(fd: RawFd) {
    let mut buf = [0u8; 64];
    // SAFETY: read(2) writes at most `buf.len()` bytes into the local buffer; the pipe is
    // non-blocking, so the loop ends when it is empty.
    while unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}
