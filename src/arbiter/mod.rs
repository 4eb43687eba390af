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

use crate::config::{self, Loaded, Settings, StartError};
use crate::exit_code;
use crate::hooks;
use crate::log;
use crate::log::metrics::Totals;
use crate::log::python::log_exception;
use crate::net::listeners::{self, BindAddr, BindOptions, Listener};
use crate::net::tls::TlsAcceptor;
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
    /// The TLS configuration workers are forked with: loaded at start and on each HUP, so
    /// certificate files are read once per reload, not per worker or connection.
    tls: Option<TlsAcceptor>,
}

/// The `ferrocorn` command. Returns the exit status in the master and in each worker.
pub fn main(py: Python<'_>, argv: Vec<String>) -> i32 {
    let start = StartContext::now(argv.clone());
    let settings = match config::load(py, &argv) {
        Ok(Loaded::Run(settings)) => settings,
        Ok(Loaded::Exit(code)) => return code,
        Err(err) => return log::start_failed(err),
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
    match prepare(py, &settings, application.as_ref()) {
        Err(err) => log::start_failed(err),
        Ok(Prepared::Checked) => exit_code::OK,
        Ok(Prepared::Serve { preloaded, tls }) => {
            match run(py, settings, start, preloaded, application, tls) {
                Exit::Worker(code) | Exit::Master(code) => code,
            }
        }
    }
}

/// How far the master got before the arbiter starts.
enum Prepared {
    /// `--check-config`: the settings and the application are fine.
    Checked,
    /// Start the arbiter; with `--preload`, the application is loaded; with a certificate,
    /// the TLS configuration the workers inherit.
    Serve {
        preloaded: Option<Py<PyAny>>,
        tls: Option<TlsAcceptor>,
    },
}

/// Everything the master does before binding: refuse what it cannot honour, set up the logs
/// and the environment, daemonize, and load the application when asked to.
fn prepare(
    py: Python<'_>,
    settings: &Settings,
    application: Option<&Py<PyAny>>,
) -> Result<Prepared, StartError> {
    // Before anything starts: serving while ignoring these would mislead the operator.
    let unapplied = settings.unapplied(py);
    if let Some(refused) = &unapplied.refused {
        return Err(StartError::config(refused.as_str()));
    }
    setup_logging(settings).map_err(StartError::config)?;
    prepare_environment(py, settings).map_err(StartError::config)?;
    if !matches!(
        settings.get("ssl_version"),
        config::Value::Int(SSL_VERSION_DEFAULT)
    ) {
        // Gunicorn's words, though ferrocorn takes no ssl_context either (see docs/tls.md).
        eprintln!(
            "Warning: option `ssl_version` is deprecated and it is ignored. Use ssl_context instead."
        );
    }
    // A certificate that cannot be used stops the start, and fails --check-config.
    let tls = TlsAcceptor::from_settings(settings).map_err(StartError::config)?;
    if application.is_none() && settings.app_uri.is_none() {
        return Err(StartError::usage(
            "usage: ferrocorn [OPTIONS] [APP_MODULE]\nferrocorn: error: No application module specified."
                .into(),
        ));
    }
    let offers_h2 = settings.list("http_protocols").iter().any(|p| p == "h2");
    if offers_h2 && tls.is_none() && settings.str("http2_cleartext") == Some("off") {
        // Gunicorn's words, on standard error as Gunicorn writes them.
        eprintln!(
            "Warning: http_protocols includes h2 but there is no TLS and http2_cleartext is \
             off, so HTTP/2 will never be negotiated."
        );
    }
    let load = || match application {
        Some(obj) => load_embedded(py, obj),
        None => load_app(py, settings),
    };
    if settings.bool("check_config") {
        return match load() {
            Ok(_) => Ok(Prepared::Checked),
            Err(LoadError::NotFound(message)) | Err(LoadError::Missing(message)) => {
                Err(StartError::config(message))
            }
            Err(LoadError::Raised(err)) => {
                log_exception(py, "Failed to load the application", &err);
                Err(StartError::reported(exit_code::CONFIG_ERROR))
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
        daemon::daemonize(settings.bool("enable_stdio_inheritance")).map_err(StartError::config)?;
    }
    // After daemonizing, as Gunicorn makes its logger only then.
    setup_outputs(py, settings).map_err(StartError::config)?;
    if log::enabled(log::Level::Debug) {
        log::debug(format_args!(
            "{}",
            config::current_configuration(py, settings)
        ));
    }
    // With --preload a load failure ends the command before the arbiter starts: exit 1, as
    // in Gunicorn, where it is an error of the command rather than of a worker.
    let preloaded = if settings.bool("preload_app") {
        match load() {
            Ok(app) => Some(app),
            Err(LoadError::NotFound(message)) | Err(LoadError::Missing(message)) => {
                return Err(StartError::logged(exit_code::CONFIG_ERROR, message));
            }
            Err(LoadError::Raised(err)) => {
                log_exception(py, "Exception while loading the application", &err);
                return Err(StartError::reported(exit_code::CONFIG_ERROR));
            }
        }
    } else {
        None
    };
    Ok(Prepared::Serve { preloaded, tls })
}

/// `ssl_version`'s default, Python's `ssl.PROTOCOL_TLS`.
const SSL_VERSION_DEFAULT: i64 = 2;

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
    tls: Option<TlsAcceptor>,
) -> Exit {
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
    let pidfile = match settings.str("pidfile") {
        None => None,
        Some(path) => {
            let path = if parent_master != 0 {
                format!("{path}.2")
            } else {
                path.to_string()
            };
            let pid = std::process::id() as libc::pid_t;
            match pidfile::Pidfile::create(std::path::Path::new(&path), pid) {
                Ok(pf) => Some(pf),
                Err(message) => {
                    return Exit::Master(log::start_failed(StartError::logged(
                        exit_code::CONFIG_ERROR,
                        message,
                    )))
                }
            }
        }
    };
    let Opened {
        listeners,
        systemd,
        heartbeat,
        metrics,
    } = match open(&settings, parent_master, tls.is_some()) {
        Ok(opened) => opened,
        Err(err) => {
            if let Some(pf) = &pidfile {
                pf.unlink();
            }
            return Exit::Master(log::start_failed(err));
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
        listeners,
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
        systemd,
        application,
        hooks,
        metrics,
        totals: Totals::default(),
        reported_workers: None,
        tls,
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

/// What the master opens before forking: the listeners, the heartbeat region, the signal
/// handlers and the metrics endpoint.
struct Opened {
    listeners: Vec<Listener>,
    /// The listeners came from systemd socket activation.
    systemd: bool,
    heartbeat: Heartbeat,
    metrics: Option<scrape::MetricsServer>,
}

fn open(settings: &Settings, parent_master: libc::pid_t, tls: bool) -> Result<Opened, StartError> {
    let failed = |message: String| StartError::logged(exit_code::CONFIG_ERROR, message);
    let opts = bind_options(settings);
    let activated = systemd::listen_fds();
    let systemd = !activated.is_empty();
    let listeners = if systemd {
        adopt_fds(&activated, &opts)
    } else if let Some(fds) = reexec::inherited_fds() {
        reexec::forget_inherited_fds();
        adopt_fds(&fds, &opts)
    } else {
        bind_all(settings)
    }
    .map_err(failed)?;
    let shown: Vec<String> = listeners.iter().map(|l| l.display_scheme(tls)).collect();
    log::debug(format_args!("Arbiter booted"));
    log::info(format_args!(
        "Listening at: {} ({})",
        shown.join(","),
        std::process::id()
    ));
    log::info(format_args!("Using worker: {}", settings.worker_class()));
    if settings.worker_class() == "asgi" && settings.uint("threads") > 1 {
        // Gunicorn's words: the event loop, not threads, serves many clients at once.
        log::warning(format_args!(
            "ASGI worker does not use threads configuration. Use worker_connections instead."
        ));
    }
    let heartbeat = Heartbeat::new(HEARTBEAT_SLOTS)
        .map_err(|e| failed(format!("cannot map the heartbeat region: {e}")))?;
    signals::install().map_err(|e| failed(format!("cannot install signal handlers: {e}")))?;
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
        Some(Err(message)) => return Err(failed(message)),
    };
    Ok(Opened {
        listeners,
        systemd,
        heartbeat,
        metrics,
    })
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
