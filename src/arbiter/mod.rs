//! The master ("arbiter"): parses settings, binds the listeners, forks the workers and keeps
//! their number, killing silent ones. Single-threaded: no runtime lives here, so forking is safe.
//!
//! The loop sleeps in `poll(2)` on a self-pipe the signal handlers write to, at most a second
//! at a time, then handles queued signals, reaps children, murders silent workers and spawns or
//! retires workers to keep their number.

pub mod embed;
pub mod heartbeat;
pub mod hooks;
pub mod listeners;
mod signals;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::config::{self, Loaded, Settings};
use crate::exit_code;
use crate::log;
use crate::wsgi::app::{load_app, LoadError};
use crate::wsgi::call::log_exception;
use heartbeat::{monotonic_millis, Heartbeat};
use listeners::{BindAddr, BindOptions, Listener};

/// Heartbeat slots: enough for any worker count a machine runs, plus replacements in flight.
const HEARTBEAT_SLOTS: usize = 4096;

/// Why the master loop ends: in a forked worker (with its exit status) or in the master.
enum Exit {
    Worker(i32),
    Master(i32),
}

struct WorkerProc {
    slot: usize,
    age: u64,
    /// SIGABRT already sent for a missed heartbeat; the next miss gets SIGKILL.
    aborted: bool,
}

struct Arbiter<'a> {
    settings: &'a Settings,
    listeners: Vec<Listener>,
    heartbeat: Heartbeat,
    workers: BTreeMap<libc::pid_t, WorkerProc>,
    num_workers: usize,
    worker_age: u64,
    preloaded: Option<Py<PyAny>>,
    /// The embedding application object (`BaseApplication`), `None` for the command line.
    application: Option<Py<PyAny>>,
    hooks: hooks::Master<'a>,
}

/// The `ferrocorn` command. Returns the exit status in the master and in each worker.
pub fn main(py: Python<'_>, argv: Vec<String>) -> i32 {
    let settings = match config::load(py, &argv) {
        Ok(Loaded::Run(settings)) => settings,
        Ok(Loaded::Exit(code)) => return code,
        Err(err) => {
            eprintln!("{}", err.message);
            return err.exit_code;
        }
    };
    start(py, &settings, None)
}

/// Serves with loaded settings. `application` is the embedding application object
/// (`BaseApplication`, whose `wsgi()` gives the WSGI callable); `None` when APP_MODULE names
/// the application. Returns the exit status in the master and in each worker.
pub fn start(py: Python<'_>, settings: &Settings, application: Option<Py<PyAny>>) -> i32 {
    if let Err(message) = setup_logging(settings) {
        eprintln!("Error: {message}");
        return exit_code::CONFIG_ERROR;
    }
    if let Err(message) = prepare_environment(py, settings) {
        eprintln!("Error: {message}");
        return exit_code::CONFIG_ERROR;
    }
    if application.is_none() && settings.app_uri.is_none() {
        eprintln!("usage: ferrocorn [OPTIONS] [APP_MODULE]");
        eprintln!("ferrocorn: error: No application module specified.");
        return exit_code::USAGE_ERROR;
    }
    let load = || match &application {
        Some(obj) => embed::wsgi(py, obj),
        None => load_app(py, settings.app_uri.as_deref().unwrap_or_default()),
    };
    if settings.bool("check_config") {
        return match load() {
            Ok(_) => exit_code::OK,
            Err(LoadError::NotFound(message)) => {
                eprintln!("Error: {message}");
                exit_code::CONFIG_ERROR
            }
            Err(LoadError::Raised(err)) => {
                log_exception(py, "Failed to load the application", &err);
                exit_code::CONFIG_ERROR
            }
        };
    }
    let ignored = config::table::ineffective_set(settings);
    if !ignored.is_empty() {
        log::warning(format_args!(
            "These settings have no effect in ferrocorn {} yet: {}",
            crate::VERSION,
            ignored.join(", ")
        ));
    }
    let preloaded = if settings.bool("preload_app") {
        match load() {
            Ok(app) => Some(app),
            Err(LoadError::NotFound(message)) => {
                log::error(format_args!("{message}"));
                return halt_message("App failed to load.", exit_code::APP_LOAD_ERROR);
            }
            Err(LoadError::Raised(err)) => {
                log_exception(py, "Exception while loading the application", &err);
                return halt_message("App failed to load.", exit_code::APP_LOAD_ERROR);
            }
        }
    } else {
        None
    };
    match run(py, settings, preloaded, application) {
        Exit::Worker(code) | Exit::Master(code) => code,
    }
}

fn halt_message(reason: &str, code: i32) -> i32 {
    log::info(format_args!("Shutting down: Master"));
    log::info(format_args!("Reason: {reason}"));
    code
}

fn setup_logging(settings: &Settings) -> Result<(), String> {
    if let Some(level) = settings.str("loglevel") {
        let level =
            log::Level::parse(level).ok_or_else(|| format!("invalid loglevel {level:?}"))?;
        log::set_level(level);
    }
    if let Some(path) = settings.str("errorlog") {
        log::set_error_logfile(path)?;
    }
    Ok(())
}

/// `--env` and `--pythonpath`, applied in the master so workers inherit them. (`--chdir` was
/// applied while loading the settings, as Gunicorn does.)
fn prepare_environment(py: Python<'_>, settings: &Settings) -> Result<(), String> {
    let environ = py
        .import("os")
        .and_then(|os| os.getattr("environ"))
        .map_err(|e| e.to_string())?;
    for (key, value) in settings.env() {
        environ
            .set_item(&key, &value)
            .map_err(|e| format!("cannot set {key}: {e}"))?;
    }
    let sys_path = py
        .import("sys")
        .and_then(|sys| sys.getattr("path"))
        .map_err(|e| e.to_string())?;
    if let Some(paths) = settings.str("pythonpath") {
        for path in paths.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            sys_path
                .call_method1("insert", (0, path))
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn run(
    py: Python<'_>,
    settings: &Settings,
    preloaded: Option<Py<PyAny>>,
    application: Option<Py<PyAny>>,
) -> Exit {
    let pid = std::process::id() as libc::pid_t;
    let num_workers = settings.uint("workers").max(1) as usize;
    let hooks = match hooks::Master::new(py, settings, application.as_ref(), num_workers) {
        Ok(hooks) => hooks,
        Err(err) => {
            log_exception(py, "Cannot set up the server hooks", &err);
            return Exit::Master(exit_code::CONFIG_ERROR);
        }
    };
    // Gunicorn's order: the worker count is set (nworkers_changed with old value None), then
    // on_starting before the listeners are bound; a raising on_starting stops the master.
    hooks.num_workers_changed(num_workers, None);
    if !hooks.fatal("on_starting") {
        return Exit::Master(exit_code::CONFIG_ERROR);
    }
    log::info(format_args!("Starting ferrocorn {}", crate::VERSION));
    let opts = BindOptions {
        backlog: settings.uint("backlog").min(i32::MAX as u64) as i32,
        reuse_port: settings.bool("reuse_port"),
        umask: settings
            .is_set("umask")
            .then(|| settings.uint("umask") as u32),
    };
    let mut bound = Vec::new();
    for value in settings.list("bind") {
        let addr = match listeners::parse_bind(value) {
            Ok(addr) => addr,
            Err(message) => {
                log::error(format_args!("{message}"));
                return Exit::Master(exit_code::CONFIG_ERROR);
            }
        };
        match listeners::bind(&addr, &opts) {
            Ok(listener) => bound.push(listener),
            Err(message) => {
                log::error(format_args!("{message}"));
                return Exit::Master(exit_code::CONFIG_ERROR);
            }
        }
        let _: &BindAddr = &addr;
    }
    for listener in &bound {
        log::info(format_args!("Listening at: {} ({pid})", listener.display()));
    }
    log::info(format_args!("Using worker: {}", settings.worker_class()));
    let heartbeat = match Heartbeat::new(HEARTBEAT_SLOTS) {
        Ok(hb) => hb,
        Err(e) => {
            log::error(format_args!("cannot map the heartbeat region: {e}"));
            return Exit::Master(exit_code::CONFIG_ERROR);
        }
    };
    if let Err(e) = signals::install() {
        log::error(format_args!("cannot install signal handlers: {e}"));
        return Exit::Master(exit_code::CONFIG_ERROR);
    }
    let mut arbiter = Arbiter {
        settings,
        listeners: bound,
        heartbeat,
        workers: BTreeMap::new(),
        num_workers,
        worker_age: 0,
        preloaded,
        application,
        hooks,
    };
    let exit = if arbiter.hooks.fatal("when_ready") {
        arbiter.run_loop(py)
    } else {
        Exit::Master(exit_code::CONFIG_ERROR)
    };
    if let Exit::Master(_) = exit {
        for listener in &arbiter.listeners {
            listener.cleanup();
        }
    }
    exit
}

impl Arbiter<'_> {
    fn run_loop(&mut self, py: Python<'_>) -> Exit {
        if let Err(exit) = self.manage_workers(py) {
            return exit;
        }
        loop {
            let pending = signals::wait(Duration::from_secs(1));
            for sig in pending {
                if let Some(exit) = self.handle_signal(py, sig) {
                    return exit;
                }
            }
            if let Err(exit) = self.reap_workers() {
                return exit;
            }
            self.murder_workers();
            if let Err(exit) = self.manage_workers(py) {
                return exit;
            }
        }
    }

    fn handle_signal(&mut self, py: Python<'_>, sig: libc::c_int) -> Option<Exit> {
        match sig {
            libc::SIGCHLD => None,
            libc::SIGTERM => {
                log::info(format_args!("Handling signal: term"));
                Some(self.stop(true, None))
            }
            libc::SIGINT => {
                log::info(format_args!("Handling signal: int"));
                Some(self.stop(false, None))
            }
            libc::SIGQUIT => {
                log::info(format_args!("Handling signal: quit"));
                Some(self.stop(false, None))
            }
            libc::SIGTTIN => {
                log::info(format_args!("Handling signal: ttin"));
                self.num_workers += 1;
                self.hooks
                    .num_workers_changed(self.num_workers, Some(self.num_workers - 1));
                self.manage_workers(py).err()
            }
            libc::SIGTTOU => {
                log::info(format_args!("Handling signal: ttou"));
                if self.num_workers > 1 {
                    self.num_workers -= 1;
                    self.hooks
                        .num_workers_changed(self.num_workers, Some(self.num_workers + 1));
                }
                self.manage_workers(py).err()
            }
            libc::SIGHUP => {
                log::info(format_args!("Handling signal: hup"));
                log::info(format_args!("Hang up: Master"));
                self.reload(py).err()
            }
            libc::SIGUSR1 => {
                log::info(format_args!("Handling signal: usr1"));
                if let Err(e) = log::reopen() {
                    log::error(format_args!("{e}"));
                }
                self.kill_workers(libc::SIGUSR1);
                None
            }
            libc::SIGWINCH => {
                log::info(format_args!("Handling signal: winch"));
                None
            }
            _ => None,
        }
    }

    /// HUP: start a fresh set of workers, then retire the old ones gracefully.
    fn reload(&mut self, py: Python<'_>) -> Result<(), Exit> {
        let old: Vec<libc::pid_t> = self.workers.keys().copied().collect();
        self.hooks.notify("on_reload");
        for _ in 0..self.num_workers {
            self.spawn_worker(py)?;
        }
        for pid in old {
            kill(pid, libc::SIGTERM);
        }
        Ok(())
    }

    /// Collects exited workers. A worker that could not boot stops the master, as in Gunicorn.
    fn reap_workers(&mut self) -> Result<(), Exit> {
        loop {
            let mut status = 0;
            // SAFETY: waitpid with WNOHANG on our own children.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return Ok(());
            }
            let Some(worker) = self.workers.remove(&pid) else {
                continue;
            };
            let _ = worker.age;
            if libc::WIFEXITED(status) {
                let code = libc::WEXITSTATUS(status);
                if code == exit_code::WORKER_BOOT_ERROR {
                    return Err(self.halt("Worker failed to boot.", exit_code::WORKER_BOOT_ERROR));
                }
                if code == exit_code::APP_LOAD_ERROR {
                    return Err(self.halt("App failed to load.", exit_code::APP_LOAD_ERROR));
                }
                if code != 0 {
                    log::error(format_args!("Worker (pid:{pid}) exited with code {code}"));
                }
            } else if libc::WIFSIGNALED(status) {
                let sig = libc::WTERMSIG(status);
                if sig == libc::SIGKILL {
                    log::error(format_args!(
                        "Worker (pid:{pid}) was sent SIGKILL! Perhaps out of memory?"
                    ));
                } else {
                    log::error(format_args!(
                        "Worker (pid:{pid}) was sent {}!",
                        signals::name(sig)
                    ));
                }
            }
            self.hooks.child_exit(pid);
        }
    }

    /// Aborts workers whose heartbeat is older than `--timeout`, then kills them.
    fn murder_workers(&mut self) {
        let timeout = self.settings.uint("timeout");
        if timeout == 0 {
            return;
        }
        let now = monotonic_millis();
        for (&pid, worker) in self.workers.iter_mut() {
            let last = self.heartbeat.slot(worker.slot).last();
            if now.saturating_sub(last) <= timeout * 1000 {
                continue;
            }
            if !worker.aborted {
                log::critical(format_args!("WORKER TIMEOUT (pid:{pid})"));
                worker.aborted = true;
                kill(pid, libc::SIGABRT);
            } else {
                kill(pid, libc::SIGKILL);
            }
        }
    }

    /// Spawns or retires workers until there are `num_workers`.
    fn manage_workers(&mut self, py: Python<'_>) -> Result<(), Exit> {
        while self.workers.len() < self.num_workers {
            self.spawn_worker(py)?;
        }
        let extra = self.workers.len().saturating_sub(self.num_workers);
        if extra > 0 {
            let mut by_age: Vec<(u64, libc::pid_t)> =
                self.workers.iter().map(|(p, w)| (w.age, *p)).collect();
            by_age.sort();
            for (_, pid) in by_age.into_iter().take(extra) {
                kill(pid, libc::SIGTERM);
            }
        }
        Ok(())
    }

    fn free_slot(&self) -> usize {
        let used: std::collections::BTreeSet<usize> =
            self.workers.values().map(|w| w.slot).collect();
        (0..self.heartbeat.slots())
            .find(|s| !used.contains(s))
            .unwrap_or(0)
    }

    fn spawn_worker(&mut self, py: Python<'_>) -> Result<(), Exit> {
        self.worker_age += 1;
        let slot = self.free_slot();
        self.heartbeat.slot(slot).beat();
        let hook_worker = self.hooks.pre_fork(self.worker_age);
        // SAFETY: CPython's fork protocol around fork(2); the master is single-threaded.
        let pid = unsafe {
            pyo3::ffi::PyOS_BeforeFork();
            let pid = libc::fork();
            if pid == 0 {
                pyo3::ffi::PyOS_AfterFork_Child();
            } else {
                pyo3::ffi::PyOS_AfterFork_Parent();
            }
            pid
        };
        if pid < 0 {
            log::error(format_args!(
                "fork failed: {}",
                std::io::Error::last_os_error()
            ));
            return Ok(());
        }
        if pid == 0 {
            signals::close_in_child();
            // post_fork raising fails the worker's boot, as in Gunicorn; worker_exit runs anyway.
            let code = if self.hooks.post_fork(py, hook_worker.as_ref()) {
                let ctx = crate::worker::WorkerContext {
                    settings: self.settings,
                    listeners: &self.listeners,
                    heartbeat: self.heartbeat.slot(slot),
                    age: self.worker_age,
                    app: self.preloaded.as_ref().map(|app| app.clone_ref(py)),
                    application: self.application.as_ref().map(|app| app.clone_ref(py)),
                };
                crate::worker::run(py, ctx)
            } else {
                exit_code::WORKER_BOOT_ERROR
            };
            hooks::worker_exit(py);
            return Err(Exit::Worker(code));
        }
        self.hooks.forked(pid, hook_worker.as_ref());
        self.workers.insert(
            pid,
            WorkerProc {
                slot,
                age: self.worker_age,
                aborted: false,
            },
        );
        Ok(())
    }

    fn kill_workers(&self, sig: libc::c_int) {
        for &pid in self.workers.keys() {
            kill(pid, sig);
        }
    }

    /// Stops every worker: TERM and wait up to the graceful timeout (or QUIT for a fast stop),
    /// then KILL what is left.
    fn stop(&mut self, graceful: bool, reason: Option<(&str, i32)>) -> Exit {
        self.kill_workers(if graceful {
            libc::SIGTERM
        } else {
            libc::SIGQUIT
        });
        let limit = Instant::now() + Duration::from_secs(self.settings.uint("graceful_timeout"));
        while !self.workers.is_empty() && Instant::now() < limit {
            let _ = signals::wait(Duration::from_millis(100));
            self.reap_quietly();
        }
        self.kill_workers(libc::SIGKILL);
        while !self.workers.is_empty() {
            let mut status = 0;
            // SAFETY: blocking waitpid on our own children, all of which were just killed.
            let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
            if pid < 0 {
                break;
            }
            if self.workers.remove(&pid).is_some() {
                self.hooks.child_exit(pid);
            }
        }
        log::info(format_args!("Shutting down: Master"));
        let exit = match reason {
            Some((reason, code)) => {
                log::info(format_args!("Reason: {reason}"));
                Exit::Master(code)
            }
            None => Exit::Master(exit_code::OK),
        };
        self.hooks.notify("on_exit");
        exit
    }

    fn reap_quietly(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: non-blocking waitpid on our own children.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if self.workers.remove(&pid).is_some() {
                self.hooks.child_exit(pid);
            }
        }
    }

    fn halt(&mut self, reason: &str, code: i32) -> Exit {
        self.stop(true, Some((reason, code)))
    }
}

fn kill(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill(2) on a child pid we track; ESRCH for an already-gone child is harmless.
    unsafe { libc::kill(pid, sig) };
}
