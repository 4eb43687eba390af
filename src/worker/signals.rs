//! Signals in a worker, as in Gunicorn: TERM = graceful stop, INT/QUIT = stop now, USR1 =
//! reopen log files, ABRT = the master found the worker silent. The handlers only record the
//! signal and wake the event loop through a pipe.

use std::os::unix::io::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// A graceful stop began (TERM, max-requests, parent gone): responses from now on announce
/// `Connection: close`.
pub static GRACEFUL: AtomicBool = AtomicBool::new(false);
pub static FAST: AtomicBool = AtomicBool::new(false);
pub static REOPEN: AtomicBool = AtomicBool::new(false);
/// Set while a `sync` worker runs the application on its only thread; a fast stop then
/// cannot wait for the event loop.
pub static IN_APP_CALL: AtomicBool = AtomicBool::new(false);
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    match sig {
        libc::SIGTERM => GRACEFUL.store(true, Ordering::SeqCst),
        libc::SIGINT | libc::SIGQUIT => {
            FAST.store(true, Ordering::SeqCst);
            if IN_APP_CALL.load(Ordering::SeqCst) {
                // SAFETY: _exit is async-signal-safe.
                unsafe { libc::_exit(0) };
            }
        }
        libc::SIGUSR1 => REOPEN.store(true, Ordering::SeqCst),
        libc::SIGABRT => {
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

/// Installs the worker's handlers and returns the read end of the wake-up pipe.
pub fn install() -> std::io::Result<RawFd> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    WAKE_FD.store(fds[1], Ordering::SeqCst);
    // The master's handlers are inherited through fork: a worker starts from the defaults.
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
    Ok(fds[0])
}

fn set_handler(sig: libc::c_int, handler: libc::sighandler_t) {
    // SAFETY: a zeroed sigaction with a handler and an empty mask is valid.
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
    // SAFETY: reading into a local buffer from our own non-blocking pipe.
    while unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}
