//! The master ("arbiter"): parses settings, binds the listeners, forks the workers and keeps
//! their number, killing silent ones. Single-threaded: no runtime lives here, so forking is safe.
//!
//! The loop sleeps in `poll(2)` on a self-pipe the signal handlers write to, at most a second
//! at a time, then handles queued signals, reaps children, murders silent workers and spawns or
//! retires workers to keep their number.

pub mod daemon;
pub mod embed;
pub mod pidfile;
pub mod proctitle;
mod reexec;
pub mod scrape;
mod signals;
pub mod systemd;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::io::RawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::config::{self, Loaded, Settings};
use crate::exit_code;
use crate::hooks;
use crate::log;
use crate::log::metrics::{Restart, Snapshot, Totals};
use crate::log::python::log_exception;
use crate::net::listeners::{self, BindAddr, BindOptions, Listener};
use crate::process::heartbeat::{monotonic_millis, Heartbeat};
use crate::wsgi::app::{load_app, load_embedded, LoadError};

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
    /// The master told it to stop: its exit is not a restart.
    retiring: bool,
}

/// What the master remembers from its start, for HUP (re-read the config) and USR2 (re-exec).
pub struct StartContext {
    /// The command line; HUP loads the settings from it again (unless embedded).
    argv: Vec<String>,
    cwd: Option<PathBuf>,
    /// The environment before `--env` was applied (Gunicorn's `env_orig`).
    env: Vec<(OsString, OsString)>,
}

struct Arbiter {
    settings: Settings,
    start: StartContext,
    listeners: Vec<Listener>,
    heartbeat: Heartbeat,
    workers: BTreeMap<libc::pid_t, WorkerProc>,
    num_workers: usize,
    worker_age: u64,
    preloaded: Option<Py<PyAny>>,
    pidfile: Option<pidfile::Pidfile>,
    /// "Master", or "Master.2" for a master started by USR2 until the old one exits.
    master_name: String,
    /// The master that re-executed us (`GUNICORN_PID`), while it lives; 0 otherwise.
    parent_master: libc::pid_t,
    /// The new master forked by USR2, while it lives; 0 otherwise.
    reexec_pid: libc::pid_t,
    /// Listeners came from systemd socket activation.
    systemd: bool,
    /// The embedding application object (`BaseApplication`), `None` for the command line.
    application: Option<Py<PyAny>>,
    hooks: hooks::Master,
    /// The Prometheus endpoint (`--metrics-bind`).
    metrics: Option<scrape::MetricsServer>,
    /// Request counts of workers gone, and restarts.
    totals: Totals,
    /// The worker count last sent to StatsD (`gunicorn.workers`).
    reported_workers: Option<usize>,
}

/// The `ferrocorn` command. Returns the exit status in the master and in each worker.
pub fn main(py: Python<'_>, argv: Vec<String>) -> i32 {
    let start = StartContext::now(argv.clone());
    let settings = match config::load(py, &argv) {
        Ok(Loaded::Run(settings)) => settings,
        Ok(Loaded::Exit(code)) => return code,
        Err(err) => {
            eprintln!("{}", err.message);
            return err.exit_code;
        }
    };
    serve(py, settings, start, None)
}

impl StartContext {
    /// The command line, working directory and environment as they are now.
    pub fn now(argv: Vec<String>) -> StartContext {
        StartContext {
            argv,
            cwd: std::env::current_dir().ok(),
            env: std::env::vars_os().collect(),
        }
    }
}

/// Serves with loaded settings. `application` is the embedding application object
/// (`BaseApplication`, whose `wsgi()` gives the WSGI callable); `None` when APP_MODULE names
/// the application. Returns the exit status in the master and in each worker.
pub fn serve(
    py: Python<'_>,
    settings: Settings,
    start: StartContext,
    application: Option<Py<PyAny>>,
) -> i32 {
    proctitle::init();
    // Before anything starts: serving while ignoring these would mislead the operator.
    let unapplied = settings.unapplied(py);
    if let Some(refused) = &unapplied.refused {
        eprintln!("Error: {refused}");
        return exit_code::CONFIG_ERROR;
    }
    if let Err(message) = setup_logging(&settings) {
        eprintln!("Error: {message}");
        return exit_code::CONFIG_ERROR;
    }
    if let Err(message) = prepare_environment(py, &settings) {
        eprintln!("Error: {message}");
        return exit_code::CONFIG_ERROR;
    }
    if application.is_none() && settings.app_uri.is_none() {
        eprintln!("usage: ferrocorn [OPTIONS] [APP_MODULE]");
        eprintln!("ferrocorn: error: No application module specified.");
        return exit_code::USAGE_ERROR;
    }
    let load = || match &application {
        Some(obj) => load_embedded(py, obj),
        None => load_app(py, &settings),
    };
    if settings.bool("check_config") {
        return match load() {
            Ok(_) => exit_code::OK,
            Err(LoadError::NotFound(message)) | Err(LoadError::Missing(message)) => {
                eprintln!("Error: {message}");
                exit_code::CONFIG_ERROR
            }
            Err(LoadError::Raised(err)) => {
                log_exception(py, "Failed to load the application", &err);
                exit_code::CONFIG_ERROR
            }
        };
    }
    if !unapplied.warned.is_empty() {
        log::warning(format_args!(
            "These settings have no effect in ferrocorn {} yet: {}",
            crate::VERSION,
            unapplied.warned.join(", ")
        ));
    }
    // A master started by USR2 stays where its parent is (Gunicorn skips daemonizing then).
    if settings.bool("daemon") && reexec::inherited_fds().is_none() {
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            log::warning(format_args!(
                "Warning: you shouldn't specify `daemon = True` when launching by systemd with `Type = notify`"
            ));
        }
        if let Err(message) = daemon::daemonize(settings.bool("enable_stdio_inheritance")) {
            eprintln!("Error: {message}");
            return exit_code::CONFIG_ERROR;
        }
    }
    // After daemonizing, as Gunicorn makes its logger only then.
    if let Err(message) = setup_outputs(py, &settings) {
        eprintln!("Error: {message}");
        return exit_code::CONFIG_ERROR;
    }
    if log::enabled(log::Level::Debug) {
        log::debug(format_args!(
            "{}",
            config::current_configuration(py, &settings)
        ));
    }
    // With --preload a load failure ends the command before the arbiter starts: exit 1, as
    // in Gunicorn, where it is an error of the command rather than of a worker.
    let preloaded = if settings.bool("preload_app") {
        match load() {
            Ok(app) => Some(app),
            Err(LoadError::NotFound(message)) | Err(LoadError::Missing(message)) => {
                log::error(format_args!("{message}"));
                return exit_code::CONFIG_ERROR;
            }
            Err(LoadError::Raised(err)) => {
                log_exception(py, "Exception while loading the application", &err);
                return exit_code::CONFIG_ERROR;
            }
        }
    } else {
        None
    };
    match run(py, settings, start, preloaded, application) {
        Exit::Worker(code) | Exit::Master(code) => code,
    }
}

fn setup_logging(settings: &Settings) -> Result<(), String> {
    if let Some(level) = settings.str("loglevel") {
        let level =
            log::Level::parse(level).ok_or_else(|| format!("invalid loglevel {level:?}"))?;
        log::set_level(level);
    }
    if let Some(path) = settings.str("errorlog").filter(|p| *p != "-") {
        log::check_writable(path)?;
    }
    if let Some(path) = settings.str("errorlog") {
        log::set_error_logfile(path)?;
    }
    // Workers open the access log; a file they could not open is refused here, before
    // binding, as Gunicorn's master does.
    if let Some(path) = settings.str("accesslog").filter(|p| *p != "-") {
        log::check_writable(path)?;
    }
    Ok(())
}

/// Where log lines and metrics go besides the error log file: captured stdout/stderr, a
/// Python logger (logging config or custom class), syslog, StatsD. In the master, before the
/// workers are forked (they inherit all of it); again after a HUP.
fn setup_outputs(py: Python<'_>, settings: &Settings) -> Result<(), String> {
    let errorlog = settings.str("errorlog").filter(|p| *p != "-");
    log::capture_output(errorlog.filter(|_| settings.bool("capture_output")))?;
    let cfg = hooks::make_cfg(py, settings).map_err(|e| e.to_string())?;
    let builtin = log::python::configure(py, settings, &cfg)?;
    log::syslog::configure(settings, !log::python::active())?;
    log::statsd::configure(settings, builtin)?;
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

fn bind_options(settings: &Settings) -> BindOptions {
    BindOptions {
        backlog: settings.uint("backlog").min(i32::MAX as u64) as i32,
        reuse_port: settings.bool("reuse_port"),
        umask: settings
            .is_set("umask")
            .then(|| settings.uint("umask") as u32),
    }
}

/// Binds every `--bind` address.
fn bind_all(settings: &Settings) -> Result<Vec<Listener>, String> {
    let opts = bind_options(settings);
    let mut bound = Vec::new();
    for value in settings.list("bind") {
        let addr: BindAddr = listeners::parse_bind(value)?;
        bound.push(listeners::bind(&addr, &opts)?);
    }
    Ok(bound)
}

/// Listeners from descriptors handed over by systemd or by the master that re-executed us.
fn adopt_fds(fds: &[RawFd], opts: &BindOptions) -> Result<Vec<Listener>, String> {
    fds.iter()
        .map(|&fd| listeners::bind(&BindAddr::Fd(fd), opts))
        .collect()
}

fn run(
    py: Python<'_>,
    settings: Settings,
    start: StartContext,
    preloaded: Option<Py<PyAny>>,
    application: Option<Py<PyAny>>,
) -> Exit {
    let pid = std::process::id() as libc::pid_t;
    let num_workers = settings.uint("workers").max(1) as usize;
    let hooks = match hooks::Master::new(py, &settings, application.as_ref(), num_workers) {
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
    let parent_master = std::env::var("GUNICORN_PID")
        .ok()
        .and_then(|p| p.trim().parse::<libc::pid_t>().ok())
        .filter(|p| *p > 0)
        .unwrap_or(0);
    let mut pidfile = None;
    if let Some(path) = settings.str("pidfile") {
        let mut path = path.to_string();
        if parent_master != 0 {
            path.push_str(".2");
        }
        match pidfile::Pidfile::create(std::path::Path::new(&path), pid) {
            Ok(pf) => pidfile = Some(pf),
            Err(message) => {
                log::error(format_args!("{message}"));
                return Exit::Master(exit_code::CONFIG_ERROR);
            }
        }
    }
    let opts = bind_options(&settings);
    let activated = systemd::listen_fds();
    let systemd_mode = !activated.is_empty();
    let bound = if systemd_mode {
        adopt_fds(&activated, &opts)
    } else if let Some(fds) = reexec::inherited_fds() {
        reexec::forget_inherited_fds();
        adopt_fds(&fds, &opts)
    } else {
        bind_all(&settings)
    };
    let bound = match bound {
        Ok(bound) => bound,
        Err(message) => {
            log::error(format_args!("{message}"));
            if let Some(pf) = &pidfile {
                pf.unlink();
            }
            return Exit::Master(exit_code::CONFIG_ERROR);
        }
    };
    let shown: Vec<String> = bound.iter().map(Listener::display).collect();
    log::debug(format_args!("Arbiter booted"));
    log::info(format_args!("Listening at: {} ({pid})", shown.join(",")));
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
    let metrics = match settings
        .str("metrics_bind")
        .map(scrape::MetricsServer::bind)
    {
        None => None,
        Some(Ok(server)) => {
            log::info(format_args!("Serving metrics at: {}", server.display()));
            Some(server)
        }
        // A master started by USR2 shares the address with the old one until that one
        // exits; it binds the endpoint once promoted.
        Some(Err(message)) if parent_master != 0 => {
            log::warning(format_args!(
                "{message}; retrying once the old master exits"
            ));
            None
        }
        Some(Err(message)) => {
            log::error(format_args!("{message}"));
            if let Some(pf) = &pidfile {
                pf.unlink();
            }
            return Exit::Master(exit_code::CONFIG_ERROR);
        }
    };
    let mut arbiter = Arbiter {
        num_workers,
        settings,
        start,
        listeners: bound,
        heartbeat,
        workers: BTreeMap::new(),
        worker_age: 0,
        preloaded,
        pidfile,
        master_name: if parent_master != 0 {
            "Master.2".into()
        } else {
            "Master".into()
        },
        parent_master,
        reexec_pid: 0,
        systemd: systemd_mode,
        application,
        hooks,
        metrics,
        totals: Totals::default(),
        reported_workers: None,
    };
    arbiter.set_title();
    let exit = if arbiter.hooks.fatal("when_ready") {
        arbiter.run_loop(py)
    } else {
        Exit::Master(exit_code::CONFIG_ERROR)
    };
    if let Exit::Master(_) = exit {
        if arbiter.unlinks_sockets() {
            for listener in &arbiter.listeners {
                listener.cleanup();
            }
        }
        if let Some(pf) = &arbiter.pidfile {
            pf.unlink();
        }
        if let Some(m) = &arbiter.metrics {
            m.cleanup();
        }
    }
    exit
}

impl Arbiter {
    fn run_loop(&mut self, py: Python<'_>) -> Exit {
        if let Err(exit) = self.manage_workers(py) {
            return exit;
        }
        systemd::notify(&format!(
            "READY=1\nSTATUS={} arbiter booted\nMAINPID={}",
            crate::SERVER_NAME,
            std::process::id()
        ));
        loop {
            let pending = self.wait();
            for sig in pending {
                if let Some(exit) = self.handle_signal(py, sig) {
                    return exit;
                }
            }
            self.maybe_promote_master();
            if let Err(exit) = self.reap_workers() {
                return exit;
            }
            self.murder_workers();
            if let Err(exit) = self.manage_workers(py) {
                return exit;
            }
        }
    }

    /// Sleeps until a signal arrives, a scrape connection is ready, or a second passes (the
    /// loop's tick); serves the scrape connections that are ready. Returns the signals.
    fn wait(&mut self) -> Vec<libc::c_int> {
        let mut timeout = Duration::from_secs(1);
        let Some(metrics) = &self.metrics else {
            return signals::wait(timeout);
        };
        let mut fds = metrics.pollfds();
        if let Some(deadline) = metrics.next_deadline() {
            timeout = timeout.min(deadline.saturating_duration_since(Instant::now()));
        }
        let pending = signals::wait_with(timeout, &mut fds);
        let ready: Vec<scrape::Ready> = fds
            .iter()
            .map(|f| scrape::Ready {
                fd: f.fd,
                revents: f.revents,
            })
            .collect();
        let mut metrics = self.metrics.take();
        if let Some(m) = metrics.as_mut() {
            let render = || self.snapshot().render();
            m.service(&ready, &render);
        }
        self.metrics = metrics;
        pending
    }

    /// The counters of every worker, dead or alive.
    fn snapshot(&self) -> Snapshot {
        Snapshot::collect(
            &self.totals,
            self.workers
                .values()
                .map(|w| self.heartbeat.slot(w.slot).counters()),
        )
    }

    /// `master [NAME]`, NAME being `proc_name` (with `.2` for a master started by USR2).
    fn set_title(&self) {
        proctitle::set(&format!("master [{}]", self.proc_name()));
    }

    fn proc_name(&self) -> String {
        if self.parent_master != 0 {
            format!("{}.2", self.settings.proc_name())
        } else {
            self.settings.proc_name().to_string()
        }
    }

    /// Unix socket files are removed on exit unless another master shares them.
    fn unlinks_sockets(&self) -> bool {
        self.reexec_pid == 0
            && self.parent_master == 0
            && !self.systemd
            && !self.settings.bool("reuse_port")
    }

    /// A master started by USR2 becomes the master when the old one is gone.
    fn maybe_promote_master(&mut self) {
        if self.parent_master == 0 {
            return;
        }
        // SAFETY: getppid never fails.
        if self.parent_master == unsafe { libc::getppid() } {
            return;
        }
        log::info(format_args!("Master has been promoted."));
        if self.metrics.is_none() {
            self.rebind_metrics(None);
        }
        self.master_name = "Master".into();
        self.parent_master = 0;
        systemd::unset("GUNICORN_PID");
        if let (Some(pf), Some(path)) = (self.pidfile.take(), self.settings.str("pidfile")) {
            match pf.rename(std::path::Path::new(path)) {
                Ok(pf) => self.pidfile = Some(pf),
                Err(message) => log::error(format_args!("{message}")),
            }
        }
        self.set_title();
    }

    fn handle_signal(&mut self, py: Python<'_>, sig: libc::c_int) -> Option<Exit> {
        match sig {
            libc::SIGCHLD => None,
            libc::SIGTERM => {
                log::info(format_args!("Handling signal: term"));
                Some(self.stop(true, None))
            }
            libc::SIGUSR2 => {
                log::info(format_args!("Handling signal: usr2"));
                self.reexec(py);
                None
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
                systemd::notify(&format!("STATUS={} workers", self.num_workers));
                self.manage_workers(py).err()
            }
            libc::SIGTTOU => {
                log::info(format_args!("Handling signal: ttou"));
                if self.num_workers > 1 {
                    self.num_workers -= 1;
                    self.hooks
                        .num_workers_changed(self.num_workers, Some(self.num_workers + 1));
                }
                systemd::notify(&format!("STATUS={} workers", self.num_workers));
                self.manage_workers(py).err()
            }
            libc::SIGHUP => {
                log::info(format_args!("Handling signal: hup"));
                log::info(format_args!("Hang up: {}", self.master_name));
                self.reload(py).err()
            }
            libc::SIGUSR1 => {
                log::info(format_args!("Handling signal: usr1"));
                for e in log::reopen_all() {
                    log::error(format_args!("{e}"));
                }
                self.kill_workers(libc::SIGUSR1);
                None
            }
            libc::SIGWINCH => {
                log::info(format_args!("Handling signal: winch"));
                if self.settings.bool("daemon") {
                    log::info(format_args!("graceful stop of workers"));
                    self.num_workers = 0;
                    self.kill_workers(libc::SIGTERM);
                } else {
                    log::debug(format_args!("SIGWINCH ignored. Not daemonized"));
                }
                None
            }
            _ => None,
        }
    }

    /// HUP: re-read the configuration, start a fresh set of workers with it (and the
    /// application re-imported, unless it was preloaded), then retire the old ones gracefully.
    fn reload(&mut self, py: Python<'_>) -> Result<(), Exit> {
        systemd::notify(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}",
            monotonic_millis().saturating_mul(1000)
        ));
        self.restore_environment(py);
        if let Some(dir) = &self.start.cwd {
            let _ = std::env::set_current_dir(dir);
        }
        let reloaded = match &self.application {
            Some(app) => embed::reload_settings(py, app).map(Loaded::Run),
            None => config::load(py, &self.start.argv),
        };
        match reloaded {
            Ok(Loaded::Run(new)) => self.apply_settings(py, new),
            Ok(Loaded::Exit(_)) => {}
            Err(err) => log::error(format_args!(
                "Reloading the configuration failed, keeping the current one: {}",
                err.message
            )),
        }
        if let Err(message) = prepare_environment(py, &self.settings) {
            log::error(format_args!("{message}"));
        }
        for e in log::reopen_all() {
            log::error(format_args!("{e}"));
        }
        self.set_title();
        let old: Vec<libc::pid_t> = self.workers.keys().copied().collect();
        self.hooks.notify("on_reload");
        for _ in 0..self.num_workers {
            self.spawn_worker(py)?;
        }
        for pid in old {
            self.retire(pid, libc::SIGTERM);
        }
        systemd::notify("READY=1");
        Ok(())
    }

    /// Puts back the variables `--env` changed, as Gunicorn does before re-reading the config.
    fn restore_environment(&self, py: Python<'_>) {
        let Ok(environ) = py.import("os").and_then(|os| os.getattr("environ")) else {
            return;
        };
        for (key, _) in self.settings.env() {
            let orig = self
                .start
                .env
                .iter()
                .find(|(k, _)| k.to_str() == Some(key.as_str()))
                .and_then(|(_, v)| v.to_str());
            let _ = match orig {
                Some(value) => environ.set_item(&key, value),
                None => environ.call_method1("pop", (&key, py.None())).map(drop),
            };
        }
    }

    /// Takes the re-read settings: logging, worker count, pidfile and, when `bind` changed,
    /// new listeners.
    fn apply_settings(&mut self, py: Python<'_>, new: Settings) {
        if let Err(message) = setup_logging(&new) {
            log::error(format_args!("{message}"));
        }
        if let Err(message) = setup_outputs(py, &new) {
            log::error(format_args!(
                "reloading the logger configuration failed: {message}"
            ));
        }
        if new.str("metrics_bind") != self.settings.str("metrics_bind") {
            self.rebind_metrics(new.str("metrics_bind"));
        }
        if new.list("bind") != self.settings.list("bind") && !self.systemd {
            match bind_all(&new) {
                Ok(bound) => {
                    let old = std::mem::replace(&mut self.listeners, bound);
                    if self.unlinks_sockets() {
                        for listener in &old {
                            listener.cleanup();
                        }
                    }
                    drop(old);
                    let shown: Vec<String> = self.listeners.iter().map(Listener::display).collect();
                    log::info(format_args!(
                        "Listening at: {} ({})",
                        shown.join(","),
                        std::process::id()
                    ));
                }
                Err(message) => log::error(format_args!("{message}")),
            }
        }
        if new.str("pidfile") != self.settings.str("pidfile") || self.pidfile.is_none() {
            if let Some(pf) = self.pidfile.take() {
                pf.unlink();
            }
            if let Some(path) = new.str("pidfile") {
                let mut path = path.to_string();
                if self.parent_master != 0 {
                    path.push_str(".2");
                }
                let pid = std::process::id() as libc::pid_t;
                match pidfile::Pidfile::create(std::path::Path::new(&path), pid) {
                    Ok(pf) => self.pidfile = Some(pf),
                    Err(message) => log::error(format_args!("{message}")),
                }
            }
        }
        let num_workers = new.uint("workers").max(1) as usize;
        if let Err(err) =
            self.hooks
                .configure(py, &new, self.application.as_ref(), self.num_workers)
        {
            log_exception(py, "Cannot set up the server hooks", &err);
        }
        if num_workers != self.num_workers {
            self.hooks
                .num_workers_changed(num_workers, Some(self.num_workers));
        }
        self.num_workers = num_workers;
        self.settings = new;
    }

    /// Binds the metrics endpoint at `value` (the current setting when `None`), replacing
    /// the current one.
    fn rebind_metrics(&mut self, value: Option<&str>) {
        let value = match value {
            Some(v) => Some(v.to_string()),
            None => self.settings.str("metrics_bind").map(str::to_string),
        };
        if let Some(old) = self.metrics.take() {
            old.cleanup();
        }
        let Some(value) = value else { return };
        match scrape::MetricsServer::bind(&value) {
            Ok(server) => {
                log::info(format_args!("Serving metrics at: {}", server.display()));
                self.metrics = Some(server);
            }
            Err(message) => log::error(format_args!("{message}")),
        }
    }

    /// USR2: fork a child that executes the original command line with the listening sockets
    /// (`GUNICORN_FD`), the new master; this one keeps serving until told to stop.
    fn reexec(&mut self, py: Python<'_>) {
        if self.reexec_pid != 0 {
            log::warning(format_args!("USR2 signal ignored. Child exists."));
            return;
        }
        if self.parent_master != 0 {
            log::warning(format_args!("USR2 signal ignored. Parent exists."));
            return;
        }
        let fds: Vec<RawFd> = self
            .listeners
            .iter()
            .map(std::os::unix::io::AsRawFd::as_raw_fd)
            .collect();
        match reexec::spawn(
            py,
            &self.start.env,
            self.start.cwd.as_deref(),
            &fds,
            self.systemd,
            || self.hooks.notify("pre_exec"),
        ) {
            Ok(pid) => self.reexec_pid = pid,
            Err(message) => log::error(format_args!("USR2 re-exec failed: {message}")),
        }
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
            if pid == self.reexec_pid {
                self.reexec_pid = 0;
                continue;
            }
            let Some(worker) = self.workers.remove(&pid) else {
                continue;
            };
            let _ = worker.age;
            self.count_exit(&worker, status);
            if libc::WIFEXITED(status) {
                let code = libc::WEXITSTATUS(status);
                if code != 0 {
                    log::error(format_args!("Worker (pid:{pid}) exited with code {code}."));
                }
                if code == exit_code::WORKER_BOOT_ERROR {
                    return Err(self.halt("Worker failed to boot.", exit_code::WORKER_BOOT_ERROR));
                }
                if code == exit_code::APP_LOAD_ERROR {
                    return Err(self.halt("App failed to load.", exit_code::APP_LOAD_ERROR));
                }
            } else if libc::WIFSIGNALED(status) {
                let sig = libc::WTERMSIG(status);
                let name = signals::name(sig);
                // Gunicorn's levels: a kill suggests the OOM killer, TERM is a normal stop,
                // anything else is unexpected.
                match sig {
                    libc::SIGKILL => log::error(format_args!(
                        "Worker (pid:{pid}) was sent SIGKILL! Perhaps out of memory?"
                    )),
                    libc::SIGTERM => log::info(format_args!("Worker (pid:{pid}) was sent {name}!")),
                    _ => log::warning(format_args!("Worker (pid:{pid}) was sent {name}!")),
                }
            }
            self.hooks.child_exit(pid);
        }
    }

    /// Folds a dead worker's request counts into the totals and, unless the master retired
    /// it, counts the restart with its reason.
    fn count_exit(&mut self, worker: &WorkerProc, status: libc::c_int) {
        let counters = self.heartbeat.slot(worker.slot).counters();
        self.totals.add(counters);
        if worker.retiring {
            return;
        }
        let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        let why = if worker.aborted {
            Restart::Timeout
        } else if code == Some(exit_code::WORKER_BOOT_ERROR)
            || code == Some(exit_code::APP_LOAD_ERROR)
        {
            Restart::BootFailure
        } else if counters
            .exit_reason
            .load(std::sync::atomic::Ordering::Relaxed)
            == log::metrics::EXIT_MAX_REQUESTS
        {
            Restart::MaxRequests
        } else {
            Restart::Exit
        };
        self.totals.restarted(why);
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

    /// Whether a worker still takes new connections: neither told to stop nor stopping on its
    /// own (`--max-requests`, `--reload`) while it finishes its open connections.
    fn serving(&self, worker: &WorkerProc) -> bool {
        !worker.retiring && !self.heartbeat.slot(worker.slot).leaving()
    }

    /// Spawns or retires workers until `num_workers` of them take new connections.
    fn manage_workers(&mut self, py: Python<'_>) -> Result<(), Exit> {
        let mut serving = self.workers.values().filter(|w| self.serving(w)).count();
        while serving < self.num_workers {
            self.spawn_worker(py)?;
            serving += 1;
        }
        let extra = serving.saturating_sub(self.num_workers);
        if extra > 0 {
            let mut by_age: Vec<(u64, libc::pid_t)> = self
                .workers
                .iter()
                .filter(|(_, w)| self.serving(w))
                .map(|(p, w)| (w.age, *p))
                .collect();
            by_age.sort();
            for (_, pid) in by_age.into_iter().take(extra) {
                self.retire(pid, libc::SIGTERM);
            }
        }
        // Gunicorn's `gunicorn.workers` gauge, sent when the count changes.
        let count = self.workers.len();
        if self.reported_workers != Some(count) {
            self.reported_workers = Some(count);
            log::statsd::gauge("gunicorn.workers", count as u64);
            log::debug(format_args!("{count} workers"));
        }
        if self.settings.bool("enable_backlog_metric") && log::statsd::enabled() {
            let backlog: i64 = self.listeners.iter().map(Listener::backlog).sum();
            if backlog >= 0 {
                log::statsd::histogram("gunicorn.backlog", backlog as u64);
                log::debug(format_args!("socket backlog: {backlog}"));
            }
        }
        Ok(())
    }

    /// Tells a worker to stop; its exit is then not counted as a restart.
    fn retire(&mut self, pid: libc::pid_t, sig: libc::c_int) {
        if let Some(w) = self.workers.get_mut(&pid) {
            w.retiring = true;
        }
        kill(pid, sig);
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
        self.heartbeat.slot(slot).clear_leaving();
        self.heartbeat.slot(slot).counters().reset();
        let hook_worker = self.hooks.pre_fork(self.worker_age);
        let mask = signals::block_all();
        let pid = daemon::py_fork();
        if pid == 0 {
            signals::close_in_child();
            crate::process::lifecycle::install_handlers();
        }
        signals::restore_mask(&mask);
        if pid < 0 {
            log::error(format_args!(
                "fork failed: {}",
                std::io::Error::last_os_error()
            ));
            return Ok(());
        }
        if pid == 0 {
            // The worker does not serve the master's metrics endpoint.
            self.metrics = None;
            proctitle::set(&format!("worker [{}]", self.proc_name()));
            if self.settings.is_set("user")
                || self.settings.is_set("group")
                || self.settings.bool("initgroups")
            {
                let uid = self.settings.uint("user") as u32;
                let gid = self.settings.uint("group") as u32;
                if let Err(message) = daemon::set_owner(uid, gid, self.settings.bool("initgroups"))
                {
                    log::error(format_args!("{message}"));
                    return Err(Exit::Worker(exit_code::WORKER_BOOT_ERROR));
                }
            }
            // post_fork raising fails the worker's boot, as in Gunicorn; worker_exit runs anyway.
            let code = if self.hooks.post_fork(py, hook_worker.as_ref()) {
                let ctx = crate::worker::WorkerContext {
                    settings: &self.settings,
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
                retiring: false,
            },
        );
        Ok(())
    }

    /// Sends `sig` to every worker; a stop signal marks them retiring.
    fn kill_workers(&mut self, sig: libc::c_int) {
        let stopping = matches!(
            sig,
            libc::SIGTERM | libc::SIGQUIT | libc::SIGINT | libc::SIGKILL
        );
        for (&pid, w) in self.workers.iter_mut() {
            w.retiring |= stopping;
            kill(pid, sig);
        }
    }

    /// Stops every worker: TERM and wait up to the graceful timeout (or QUIT for a fast stop),
    /// then KILL what is left.
    fn stop(&mut self, graceful: bool, reason: Option<(&str, i32)>) -> Exit {
        systemd::notify("STOPPING=1");
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
        // Gunicorn logs a halt with a non-zero status at ERROR, so `--log-level warning` keeps it.
        let level = match reason {
            Some((_, code)) if code != exit_code::OK => log::Level::Error,
            _ => log::Level::Info,
        };
        log::log(level, format_args!("Shutting down: {}", self.master_name));
        let exit = match reason {
            Some((reason, code)) => {
                log::log(level, format_args!("Reason: {reason}"));
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
