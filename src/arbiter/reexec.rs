//! USR2: the running master forks a child that executes the original command line; the child
//! becomes a second master serving the same listening sockets, passed as open descriptors
//! named in `GUNICORN_FD` (systemd-activated sockets are passed as `LISTEN_FDS` instead), with
//! the old master's pid in `GUNICORN_PID`. `FERROCORN_FD` is accepted as a synonym.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::RawFd;
use std::path::Path;

use pyo3::prelude::*;

const FD_VARS: [&str; 2] = ["GUNICORN_FD", "FERROCORN_FD"];

/// The listening descriptors a previous master handed over, if any.
pub fn inherited_fds() -> Option<Vec<RawFd>> {
    FD_VARS.iter().find_map(|var| {
        let text = std::env::var(var).ok()?;
        let fds: Vec<RawFd> = text
            .split(',')
            .filter_map(|f| f.trim().parse::<RawFd>().ok())
            .filter(|fd| *fd >= 0)
            .collect();
        (!fds.is_empty()).then_some(fds)
    })
}

/// Removes the descriptor variables so workers and later re-execs do not see them.
pub fn forget_inherited_fds() {
    for var in FD_VARS {
        super::systemd::unset(var);
    }
}

/// The command line to execute: the interpreter and its original arguments
/// (`sys.orig_argv`, or `sys.executable` + `sys.argv` before Python 3.10).
fn command(py: Python<'_>) -> PyResult<(String, Vec<String>)> {
    let sys = py.import("sys")?;
    let exe: String = sys.getattr("executable")?.extract()?;
    let args: Vec<String> = match sys.getattr("orig_argv") {
        Ok(orig) => orig.extract()?,
        Err(_) => {
            let mut args = vec![exe.clone()];
            args.extend(sys.getattr("argv")?.extract::<Vec<String>>()?);
            args
        }
    };
    Ok((exe, args))
}

fn cstring(bytes: &[u8]) -> Result<CString, String> {
    CString::new(bytes).map_err(|_| "a NUL byte in the command line or environment".to_string())
}

/// Forks and executes the new master; returns its pid.
pub fn spawn(
    py: Python<'_>,
    env: &[(OsString, OsString)],
    cwd: Option<&Path>,
    fds: &[RawFd],
    systemd: bool,
    pre_exec: impl FnOnce(),
) -> Result<libc::pid_t, String> {
    let (exe, args) = command(py).map_err(|e| e.to_string())?;
    let master_pid = std::process::id();
    // Everything the child needs is prepared before fork.
    let skip = [
        "GUNICORN_FD",
        "FERROCORN_FD",
        "GUNICORN_PID",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
    ];
    let mut envp: Vec<CString> = Vec::new();
    for (k, v) in env {
        if skip.iter().any(|s| k.as_bytes() == s.as_bytes()) {
            continue;
        }
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        envp.push(cstring(&kv)?);
    }
    envp.push(cstring(format!("GUNICORN_PID={master_pid}").as_bytes())?);
    let fd_list: Vec<String> = fds.iter().map(|fd| fd.to_string()).collect();
    if !systemd {
        envp.push(cstring(
            format!("GUNICORN_FD={}", fd_list.join(",")).as_bytes(),
        )?);
    }
    let exe_c = cstring(exe.as_bytes())?;
    let args_c = args
        .iter()
        .map(|a| cstring(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let cwd_c = match cwd {
        Some(dir) => Some(cstring(dir.as_os_str().as_bytes())?),
        None => None,
    };
    let count = fds.len();
    let pid = super::daemon::py_fork();
    if pid < 0 {
        return Err(format!("fork failed: {}", std::io::Error::last_os_error()));
    }
    if pid > 0 {
        return Ok(pid);
    }
    // The `pre_exec` hook runs in the child, as in Gunicorn; the child is single-threaded and
    // went through CPython's after-fork protocol, so Python may run here.
    pre_exec();
    // The child: only async-signal-safe work from here, apart from the two strings below,
    // which a single-threaded child may allocate.
    if systemd {
        // SAFETY: getpid in the child; LISTEN_PID must name the process that execs.
        let me = unsafe { libc::getpid() };
        if let Ok(v) = cstring(format!("LISTEN_PID={me}").as_bytes()) {
            envp.push(v);
        }
        if let Ok(v) = cstring(format!("LISTEN_FDS={count}").as_bytes()) {
            envp.push(v);
        }
    }
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|c| c.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    let mut argv_ptrs: Vec<*const libc::c_char> = args_c.iter().map(|c| c.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    // SAFETY: fcntl/chdir/execve/_exit on this process with NUL-terminated arrays built above.
    unsafe {
        for &fd in fds {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            }
        }
        if let Some(dir) = &cwd_c {
            libc::chdir(dir.as_ptr());
        }
        libc::execve(exe_c.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr());
        let msg = b"ferrocorn: USR2 re-exec failed: execve\n";
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(1);
    }
}
