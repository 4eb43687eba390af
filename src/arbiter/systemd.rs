//! systemd integration without libsystemd: socket activation (`LISTEN_FDS` / `LISTEN_PID`,
//! descriptors from 3 on) and `sd_notify` datagrams to `$NOTIFY_SOCKET`.

use std::os::unix::io::RawFd;

use pyo3::prelude::*;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// The descriptors systemd passed to this process, if `LISTEN_PID` names it. The variables are
/// removed so workers and re-executed masters do not take them for their own.
pub fn listen_fds() -> Vec<RawFd> {
    let pid = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok());
    if pid != Some(std::process::id()) {
        return Vec::new();
    }
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.trim().parse::<i32>().ok())
        .unwrap_or(0)
        .clamp(0, 1024);
    unset("LISTEN_PID");
    unset("LISTEN_FDS");
    unset("LISTEN_FDNAMES");
    (LISTEN_FDS_START..LISTEN_FDS_START + count).collect()
}

/// Removes a variable from the process environment (and Python's `os.environ` copy, which is
/// what a re-exec passes on).
pub fn unset(name: &str) {
    // SAFETY: the master is single-threaded when it edits its environment.
    unsafe { std::env::remove_var(name) };
    Python::attach(|py| {
        if let Ok(environ) = py.import("os").and_then(|os| os.getattr("environ")) {
            let _ = environ.call_method1("pop", (name, py.None()));
        }
    });
}

/// Sends `state` (e.g. `READY=1\nSTATUS=...`) to `$NOTIFY_SOCKET`; silently nothing without it.
pub fn notify(state: &str) {
    let Ok(addr) = std::env::var("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&addr, state) {
        crate::log::debug(format_args!("sd_notify to {addr} failed: {e}"));
    }
}

fn send(addr: &str, state: &str) -> std::io::Result<()> {
    use std::os::unix::net::UnixDatagram;
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = addr.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let target = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(state.as_bytes(), &target)?;
    } else {
        sock.send_to(state.as_bytes(), addr)?;
    }
    Ok(())
}
