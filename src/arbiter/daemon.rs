//! `-D/--daemon` and `-u/-g/--initgroups`.

use std::ffi::CString;

/// Forks through CPython's fork protocol; returns the child's pid in the parent, 0 in the child.
pub fn py_fork() -> libc::pid_t {
    // SAFETY: CPython's before/after-fork protocol around fork(2); the master is single-threaded.
    unsafe {
        pyo3::ffi::PyOS_BeforeFork();
        let pid = libc::fork();
        if pid == 0 {
            pyo3::ffi::PyOS_AfterFork_Child();
        } else {
            pyo3::ffi::PyOS_AfterFork_Parent();
        }
        pid
    }
}

/// Detaches like Gunicorn's `daemonize`: fork (the parent exits 0), `setsid`, fork again (the
/// session leader exits 0), umask 022. Standard input, output and error go to /dev/null unless
/// `keep_stdio` (`--enable-stdio-inheritance`): then standard input does, and output and error
/// only if they are a terminal.
pub fn daemonize(keep_stdio: bool) -> Result<(), String> {
    for round in 0..2 {
        match py_fork() {
            -1 => return Err(format!("fork failed: {}", std::io::Error::last_os_error())),
            0 => {}
            // SAFETY: the parent leaves at once, without running interpreter shutdown twice.
            _ => unsafe { libc::_exit(0) },
        }
        if round == 0 {
            // SAFETY: setsid in the fresh child, which is not a group leader.
            if unsafe { libc::setsid() } < 0 {
                return Err(format!(
                    "setsid failed: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe { libc::umask(0o22) };
    let devnull = CString::new("/dev/null").map_err(|e| e.to_string())?;
    // SAFETY: open/dup2/close on the standard descriptors of this process.
    unsafe {
        let fd = libc::open(devnull.as_ptr(), libc::O_RDWR);
        if fd < 0 {
            return Err(format!(
                "cannot open /dev/null: {}",
                std::io::Error::last_os_error()
            ));
        }
        libc::dup2(fd, 0);
        for out in [1, 2] {
            // Kept only with stdio inheritance, and then not if it is the terminal we detach
            // from (Gunicorn's rule).
            if !keep_stdio || libc::isatty(out) == 1 {
                libc::dup2(fd, out);
            }
        }
        if fd > 2 {
            libc::close(fd);
        }
    }
    Ok(())
}

/// Drops privileges in a worker: groups first, then the user (Gunicorn's `set_owner_process`).
/// Nothing changes when the ids are already ours.
pub fn set_owner(uid: u32, gid: u32, initgroups: bool) -> Result<(), String> {
    // SAFETY: plain id queries and changes on this process.
    unsafe {
        if gid != libc::getegid() || initgroups {
            if initgroups {
                let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name);
                if let Some(name) = name.and_then(|n| CString::new(n).ok()) {
                    if libc::initgroups(name.as_ptr(), gid) != 0 {
                        return Err(format!(
                            "initgroups failed: {}",
                            std::io::Error::last_os_error()
                        ));
                    }
                }
            }
            if libc::setgid(gid) != 0 {
                return Err(format!(
                    "setgid({gid}) failed: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        if uid != libc::geteuid() && libc::setuid(uid) != 0 {
            return Err(format!(
                "setuid({uid}) failed: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}
