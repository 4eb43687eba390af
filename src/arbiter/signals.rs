//! Master signals: handlers append the signal number to a self-pipe; the loop reads them in
//! order, so no work happens inside a handler.

use std::os::unix::io::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

static PIPE_READ: AtomicI32 = AtomicI32::new(-1);
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

const HANDLED: [libc::c_int; 11] = [
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGCHLD,
    libc::SIGPIPE,
];

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = PIPE_WRITE.load(Ordering::SeqCst);
    if fd >= 0 && sig != libc::SIGPIPE {
        let byte = sig as u8;
        // SAFETY: write(2) is async-signal-safe; if the pipe is full the loop is awake anyway.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
}

pub fn install() -> std::io::Result<()> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    PIPE_READ.store(fds[0], Ordering::SeqCst);
    PIPE_WRITE.store(fds[1], Ordering::SeqCst);
    for sig in HANDLED {
        // SAFETY: installing a handler that only writes to a pipe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
    Ok(())
}

/// The self-pipe's read end, for the master's poll.
pub fn pollfd() -> libc::pollfd {
    libc::pollfd {
        fd: PIPE_READ.load(Ordering::SeqCst),
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Waits up to `timeout` for signals and returns those that arrived, in order.
pub fn wait(timeout: Duration) -> Vec<libc::c_int> {
    super::poll::poll(&mut [pollfd()], timeout);
    drain()
}

/// The signals that arrived since the last call, in order.
pub fn drain() -> Vec<libc::c_int> {
    let fd = PIPE_READ.load(Ordering::SeqCst);
    let mut buf = [0u8; 64];
    let mut out = Vec::new();
    loop {
        // SAFETY: reading into a local buffer from our non-blocking pipe.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.extend(buf[..n as usize].iter().map(|&b| b as libc::c_int));
    }
    out
}

/// Blocks every signal; returns the previous mask for [`restore_mask`]. Held across fork so
/// the child can replace the master's handlers before any signal reaches it.
pub fn block_all() -> libc::sigset_t {
    // SAFETY: sigfillset/pthread_sigmask on local, initialised sets.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    }
}

pub fn restore_mask(old: &libc::sigset_t) {
    // SAFETY: restoring a mask obtained from pthread_sigmask.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut()) };
}

/// A forked worker does not use the master's pipe.
pub fn close_in_child() {
    for fd in [
        PIPE_READ.swap(-1, Ordering::SeqCst),
        PIPE_WRITE.swap(-1, Ordering::SeqCst),
    ] {
        if fd >= 0 {
            // SAFETY: closing our own pipe descriptors in the child.
            unsafe { libc::close(fd) };
        }
    }
}

pub fn name(sig: libc::c_int) -> String {
    match sig {
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGHUP => "SIGHUP".into(),
        other => format!("signal {other}"),
    }
}
