//! The master ("arbiter"): parses settings, binds the listeners, forks the workers and keeps
//! their number, killing silent ones. Single-threaded: no runtime lives here, so forking is safe.
//!
//! The loop sleeps in `poll(2)` on its poll sources (the self-pipe the signal handlers write
//! to, the metrics endpoint), at most a second at a time, then handles queued signals, reaps
//! children, murders silent workers and spawns or retires workers to keep each pool at its
//! target.
//!
//! - [`pool`]: worker pools as data (spawn function, target count, reap policy, workers).
//! - `workers`: forking, reaping, timing out and retiring the pools' workers.
//! - `control`: what each signal asks (stop, scale, reload, re-exec).
//! - `poll`: the loop's poll sources.

mod control;
pub mod daemon;
pub mod embed;
pub mod pidfile;
mod poll;
mod pool;
pub mod proctitle;
mod reexec;
pub mod scrape;
mod signals;
pub mod systemd;
mod workers;

use std::ffi::OsString;
use std::os::unix::io::RawFd;
use std::path::PathBuf;

use pyo3::prelude::*;

use crate::config::{self, Loaded, Settings};
use crate::exit_code;
use crate::hooks;
use crate::log;
use crate::log::metrics::Totals;
use crate::log::python::log_exception;
use crate::net::listeners::{self, BindAddr, BindOptions, Listener};
use crate::process::heartbeat::Heartbeat;
use crate::wsgi::app::{load_app, load_embedded, LoadError};
use pool::Pool;

/// Heartbeat slots: enough for any worker count a machine runs, plus replacements in flight.
const HEARTBEAT_SLOTS: usize = 4096;

/// Why the master loop ends: in a forked worker (with its exit status) or in the master.
enum Exit {
    Worker(i32),
    Master(i32),
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
    /// The worker pools; [`pool::WEB`] first.
    pools: Vec<Pool>,
    /// Gunicorn's worker "age": incremented for every spawn, in any pool.
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
    for note in &settings.notes {
        log::warning(format_args!("{note}"));
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
    if settings.worker_class() == "asgi" && settings.uint("threads") > 1 {
        // Gunicorn's words: the event loop, not threads, serves many clients at once.
        log::warning(format_args!(
            "ASGI worker does not use threads configuration. Use worker_connections instead."
        ));
    }
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
        pools: vec![Pool::new(
            num_workers,
            workers::spawn_web,
            pool::ReapPolicy::WEB,
        )],
        settings,
        start,
        listeners: bound,
        heartbeat,
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
}
