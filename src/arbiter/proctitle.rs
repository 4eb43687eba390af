//! Process titles (`ferrocorn: master [app]`, `ferrocorn: worker [app]`) as `ps` shows them,
//! without the `setproctitle` package.
//!
//! `ps -o args` reads `/proc/PID/cmdline`, which is the memory between the `arg_start` and
//! `arg_end` addresses of `/proc/self/stat`: the argv strings the kernel copied onto the initial
//! stack. CPython copied them into its own objects at startup, so the area is free to
//! overwrite: the title goes there, NUL-padded (truncated if the original command line was
//! shorter). `prctl(PR_SET_NAME)` sets the short name `top` and `ps -o comm` show.

use std::sync::atomic::{AtomicUsize, Ordering};

static AREA_START: AtomicUsize = AtomicUsize::new(0);
static AREA_LEN: AtomicUsize = AtomicUsize::new(0);

/// Finds the argv area; call once in the master before the first fork.
pub fn init() {
    if AREA_START.load(Ordering::SeqCst) != 0 {
        return;
    }
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name, which is in parentheses and may itself hold spaces.
    let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 1..)) else {
        return;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // arg_start and arg_end are fields 48 and 49 of proc(5); `rest` begins at field 3.
    let parse = |field: usize| fields.get(field - 3).and_then(|v| v.parse::<usize>().ok());
    let (Some(start), Some(end)) = (parse(48), parse(49)) else {
        return;
    };
    if start == 0 || end <= start + 1 {
        return;
    }
    AREA_START.store(start, Ordering::SeqCst);
    AREA_LEN.store(end - start, Ordering::SeqCst);
}

/// Sets the title to `ferrocorn: {title}`.
pub fn set(title: &str) {
    let full = format!("{}: {title}", crate::SERVER_NAME);
    let start = AREA_START.load(Ordering::SeqCst);
    let len = AREA_LEN.load(Ordering::SeqCst);
    if start != 0 && len > 1 {
        let bytes = full.as_bytes();
        let n = bytes.len().min(len - 1);
        // SAFETY: [start, start+len) is this process's argv area as the kernel reports it;
        // nothing reads it after interpreter startup, and the master forks single-threaded.
        unsafe {
            let area = start as *mut u8;
            std::ptr::write_bytes(area, 0, len);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), area, n);
        }
    }
    let mut comm = [0u8; 16];
    let short = full.as_bytes();
    let n = short.len().min(15);
    comm[..n].copy_from_slice(&short[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, comm.as_ptr() as libc::c_ulong, 0, 0, 0) };
}
