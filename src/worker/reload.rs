//! `--reload`: a thread in each worker watches the source files of every loaded module
//! (`sys.modules`) and the `--reload-extra-file` paths; when one changes, the worker logs
//! `Worker reloading: FILE modified` and stops gracefully, and the master starts a fresh
//! worker that imports the new code. This is Gunicorn's design (its reloader also runs in
//! each worker); the master never imports the application, so it could not know the files.
//!
//! Engines: `inotify` watches the directories holding those files and reacts to events naming
//! one of them (writes, renames over it, deletion); `poll` compares modification times every
//! second; `auto` is inotify when the kernel offers it, else poll. The file list is refreshed
//! every second, so modules imported later are watched too.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use pyo3::prelude::*;

use crate::config::Settings;
use crate::log;

/// Starts the watcher thread when `--reload` is on. `broken` is the file whose syntax error
/// stopped the application from loading: it is not among the loaded modules, yet fixing it is
/// what must restart the worker.
///
/// The first scan happens here, before the worker serves: a change made after the worker's
/// first response is always seen.
pub fn start(settings: &Settings, broken: Option<PathBuf>) {
    if !settings.bool("reload") {
        return;
    }
    let engine = settings.str("reload_engine").unwrap_or("auto");
    let watch = Watch {
        patterns: settings.list("reload_extra_files").to_vec(),
        broken,
    };
    let watcher = match engine {
        "poll" => Watcher::Poll(Poll::new(watch)),
        _ => match Inotify::new(watch) {
            Ok(inotify) => Watcher::Inotify(inotify),
            Err((e, watch)) => {
                if engine == "inotify" {
                    log::error(format_args!("inotify unavailable ({e}); polling instead"));
                }
                Watcher::Poll(Poll::new(watch))
            }
        },
    };
    let spawned = std::thread::Builder::new()
        .name("ferrocorn-reloader".into())
        .spawn(move || {
            let changed = match watcher {
                Watcher::Poll(poll) => poll.run(),
                Watcher::Inotify(inotify) => inotify.run(),
            };
            log::info(format_args!(
                "Worker reloading: {} modified",
                changed.display()
            ));
            crate::process::lifecycle::retire_from_any_thread(
                crate::process::lifecycle::Retire::Reload,
            );
        });
    if let Err(e) = spawned {
        log::error(format_args!("cannot start the reloader: {e}"));
    }
}

enum Watcher {
    Poll(Poll),
    Inotify(Inotify),
}

/// What is watched besides the loaded modules.
struct Watch {
    /// `--reload-extra-file` paths and glob patterns.
    patterns: Vec<String>,
    broken: Option<PathBuf>,
}

impl Watch {
    fn files(&self) -> BTreeSet<PathBuf> {
        let mut files = watched_files(&self.patterns);
        files.extend(self.broken.iter().cloned());
        files
    }
}

/// Source files of the loaded modules plus the extra files (glob patterns expanded).
fn watched_files(extra: &[String]) -> BTreeSet<PathBuf> {
    Python::attach(|py| {
        let mut files = BTreeSet::new();
        if let Ok(modules) = py.import("sys").and_then(|sys| sys.getattr("modules")) {
            let values = modules
                .call_method0("copy")
                .and_then(|m| m.call_method0("values"))
                .and_then(|v| v.try_iter().map(|it| it.flatten().collect::<Vec<_>>()));
            for module in values.unwrap_or_default() {
                let Ok(file) = module
                    .getattr("__file__")
                    .and_then(|f| f.extract::<String>())
                else {
                    continue;
                };
                let file = file
                    .strip_suffix(".pyc")
                    .map(|f| format!("{f}.py"))
                    .unwrap_or(file);
                files.insert(PathBuf::from(file));
            }
        }
        let glob = py.import("glob").ok();
        for pattern in extra {
            if pattern.contains(['*', '?', '[']) {
                let found = glob
                    .as_ref()
                    .and_then(|g| g.call_method1("glob", (pattern,)).ok())
                    .and_then(|r| r.extract::<Vec<String>>().ok())
                    .unwrap_or_default();
                files.extend(found.into_iter().map(PathBuf::from));
            } else {
                files.insert(PathBuf::from(pattern));
            }
        }
        files
    })
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

struct Poll {
    watch: Watch,
    known: BTreeMap<PathBuf, Option<SystemTime>>,
}

impl Poll {
    fn new(watch: Watch) -> Poll {
        let mut poll = Poll {
            watch,
            known: BTreeMap::new(),
        };
        poll.scan();
        poll
    }

    /// Records the files not seen before; returns the first known one that changed.
    fn scan(&mut self) -> Option<PathBuf> {
        for file in self.watch.files() {
            let now = mtime(&file);
            match self.known.get(&file) {
                Some(before) if *before != now => return Some(file),
                Some(_) => {}
                None => {
                    self.known.insert(file, now);
                }
            }
        }
        None
    }

    fn run(mut self) -> PathBuf {
        loop {
            std::thread::sleep(Duration::from_secs(1));
            if let Some(changed) = self.scan() {
                return changed;
            }
        }
    }
}

struct Inotify {
    fd: libc::c_int,
    watch: Watch,
    /// The files of the last scan.
    files: BTreeSet<PathBuf>,
    /// Watch descriptor → directory.
    dirs: BTreeMap<libc::c_int, PathBuf>,
    watched_dirs: BTreeSet<PathBuf>,
}

impl Inotify {
    /// A watcher with the directories of the current files watched; gives `watch` back when
    /// the kernel offers no inotify descriptor.
    fn new(watch: Watch) -> Result<Inotify, (std::io::Error, Watch)> {
        // SAFETY: creates a new inotify descriptor.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if fd < 0 {
            return Err((std::io::Error::last_os_error(), watch));
        }
        let mut inotify = Inotify {
            fd,
            watch,
            files: BTreeSet::new(),
            dirs: BTreeMap::new(),
            watched_dirs: BTreeSet::new(),
        };
        inotify.scan();
        Ok(inotify)
    }

    /// Refreshes the file list and watches the directories of new files.
    fn scan(&mut self) {
        self.files = self.watch.files();
        let dirs: Vec<PathBuf> = self
            .files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        for dir in dirs {
            self.watch_dir(&dir);
        }
    }

    fn run(mut self) -> PathBuf {
        loop {
            if let Some(changed) = self
                .read_events()
                .into_iter()
                .find(|changed| self.files.contains(changed))
            {
                return changed;
            }
            self.scan();
        }
    }

    fn watch_dir(&mut self, dir: &Path) {
        if self.watched_dirs.contains(dir) {
            return;
        }
        let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
            return;
        };
        let mask = libc::IN_MODIFY
            | libc::IN_CLOSE_WRITE
            | libc::IN_MOVED_TO
            | libc::IN_MOVED_FROM
            | libc::IN_CREATE
            | libc::IN_DELETE
            | libc::IN_ATTRIB;
        // SAFETY: a valid descriptor and a NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(self.fd, c.as_ptr(), mask) };
        self.watched_dirs.insert(dir.to_path_buf());
        if wd >= 0 {
            self.dirs.insert(wd, dir.to_path_buf());
        }
    }

    /// Waits up to a second; returns the changed paths named by the events.
    fn read_events(&mut self) -> Vec<PathBuf> {
        let mut pfd = libc::pollfd {
            fd: self.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 1000) } <= 0 {
            return Vec::new();
        }
        let mut buf = [0u8; 8192];
        // SAFETY: reading events into a local buffer.
        let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return Vec::new();
        }
        let n = n as usize;
        let header = std::mem::size_of::<libc::inotify_event>();
        let mut out = Vec::new();
        let mut off = 0;
        while off + header <= n {
            // SAFETY: the kernel wrote a whole event header at `off`.
            let event: libc::inotify_event =
                unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
            let len = event.len as usize;
            let name_bytes = buf.get(off + header..off + header + len).unwrap_or(&[]);
            let name_end = name_bytes
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(name_bytes.len());
            let name = std::ffi::OsStr::from_bytes(&name_bytes[..name_end]);
            if let Some(dir) = self.dirs.get(&event.wd) {
                out.push(dir.join(name));
            }
            off += header + len;
        }
        out
    }
}

impl Drop for Inotify {
    fn drop(&mut self) {
        // SAFETY: closing our own descriptor.
        unsafe { libc::close(self.fd) };
    }
}
