//! A worker process: loads the application, then serves connections from the shared listeners
//! until told to stop.
//!
//! Both worker classes run one single-threaded tokio event loop that owns every socket.
//! `sync` calls the application on that same thread, one request at a time, with no hand-off;
//! `gthread` hands complete requests to `--threads` Python threads. Either way a slow client
//! costs a little memory and a task, never a Python thread.

mod asgi;
mod burst;
#[cfg(test)]
mod corpus_tests;
mod pool;
mod reload;

use std::cell::Cell;
use std::io;
use std::os::unix::io::RawFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use tokio::sync::Notify;

use crate::asgi::cycle::Context as AsgiContext;
use crate::config::Value;
use crate::config::{Settings, StartError};
use crate::driver::body::BodyTarget;
use crate::driver::buffers::Lent;
use crate::driver::h1::{Conn, Handoff};
use crate::driver::h2;
use crate::driver::shed::Shedding;
use crate::driver::{self, ConnInfo, Outcome, Request, Service};
use crate::exit_code;
use crate::hooks;
use crate::http::forwarded::{AllowList, ForwardedPolicy, HeaderMap};
use crate::http::{proxy, HttpError, Limits, RequestHead};
use crate::log;
use crate::log::access::AccessFormat;
use crate::log::python::log_exception;
use crate::net::listeners::Listener;
use crate::net::tls::TlsAcceptor;
use crate::net::{Acceptor, Io, Socket, Transport};
use crate::process::heartbeat::HeartbeatSlot;
use crate::process::lifecycle as signals;
use crate::wsgi::app::{load_app, load_embedded, syntax_error_stand_in, LoadError};
use crate::wsgi::call::{self, AccessData, AppContext, Paused};
use crate::wsgi::environ::{EnvironBuilder, ListenerInfo};
use crate::wsgi::input::WholeBody;

/// What the master hands a freshly forked worker.
pub struct WorkerContext<'a> {
    pub settings: &'a Settings,
    pub listeners: &'a [Listener],
    pub heartbeat: HeartbeatSlot,
    /// Gunicorn's worker "age": a counter incremented for every spawn.
    pub age: u64,
    /// The application loaded by the master (`--preload`), else `None`.
    pub app: Option<Py<PyAny>>,
    /// The embedding application object (`BaseApplication`), whose `wsgi()` gives the
    /// application; `None` when APP_MODULE names it.
    pub application: Option<Py<PyAny>>,
    /// The TLS configuration the master loaded (at start or the last HUP); `None`: plain HTTP.
    pub tls: Option<TlsAcceptor>,
}

/// Timing and capacity settings of the worker (the connections' are [`driver::Options`]).
pub struct Options {
    pub graceful_timeout: Duration,
    /// Recycle the worker after this many requests; 0 = never.
    pub max_requests: u64,
    /// Most connections open at once (`--worker-connections`).
    pub max_connections: usize,
}

enum Mode {
    Sync,
    Threads(pool::Pool),
    /// ASGI on the asyncio loop that drives this worker's event loop (see [`asgi`]).
    Asgi(Arc<AsgiContext>),
}

/// The worker's shared state, owned by its event loop thread.
pub struct Worker {
    pub options: Options,
    connection_options: driver::Options,
    app: Arc<AppContext>,
    mode: Mode,
    heartbeat: HeartbeatSlot,
    /// Wakes whoever waits for the worker to stop taking connections (the stop itself is
    /// the process's [`signals::worker`] lifecycle).
    closed: Notify,
    /// Something observes finished requests: an access log (any destination), StatsD or the
    /// Prometheus counters. When false, a finished request costs nothing more.
    reports: bool,
    /// `--metrics-bind` is set: keep the status and latency counters.
    metrics: bool,
    connections: Cell<usize>,
    connection_closed: Notify,
    /// `sync`: responses written in bursts.
    burst: burst::Burst,
    /// Connections that have sent nothing, closed first at `--worker-connections`.
    shedding: Shedding,
    /// Every listener serves TLS with this configuration.
    tls: Option<TlsAcceptor>,
}

impl Worker {
    pub fn is_closing(&self) -> bool {
        signals::worker().is_stopping()
    }

    /// Resolves once the worker begins to stop.
    pub async fn closing_signal(&self) {
        // Created before the check: a `Notified` receives `notify_waiters` from its creation.
        let closed = self.closed.notified();
        if !self.is_closing() {
            closed.await;
        }
    }

    /// Stops taking connections once a stop is recorded in the lifecycle: wakes whoever
    /// waits in [`Worker::closing_signal`].
    fn begin_close(&self) {
        self.closed.notify_waiters();
        driver::ws::go_away();
    }

    fn access_format(&self) -> Option<&AccessFormat> {
        self.app.access.as_ref()
    }

    /// Counts a request as it starts, as Gunicorn does: the request that reaches
    /// `--max-requests` is served with `Connection: close` and the worker then stops.
    ///
    /// The count lives in the worker's shared-memory slot (a relaxed load and store: this
    /// thread is its only writer), where the master reads requests in flight from it.
    fn count_request(&self) {
        let started = &self.heartbeat.counters().started;
        let handled = started.load(Ordering::Relaxed) + 1;
        started.store(handled, Ordering::Relaxed);
        if self.options.max_requests > 0
            && handled >= self.options.max_requests
            && !self.is_closing()
        {
            log::info(format_args!("Autorestarting worker after current request."));
            self.heartbeat
                .counters()
                .exit_reason
                .store(log::metrics::EXIT_MAX_REQUESTS, Ordering::Relaxed);
            signals::worker().begin_retiring(signals::Retire::MaxRequests);
            self.begin_close();
        }
    }

    /// Runs `call` as an application call on the event loop's thread (`sync`): a fast stop
    /// requested meanwhile cannot wait for the event loop and happens right after it.
    fn in_app_call<R>(&self, call: impl FnOnce(Python<'_>) -> R) -> R {
        signals::IN_APP_CALL.store(true, Ordering::SeqCst);
        let result = Python::attach(call);
        signals::IN_APP_CALL.store(false, Ordering::SeqCst);
        if signals::worker().is_fast_stop() || signals::PY_HANDLER_PENDING.load(Ordering::SeqCst) {
            hooks::run_pending_signal_handlers();
            hooks::exit_now(0);
        }
        result
    }

    /// A request finished: its access line, StatsD metrics and Prometheus counters. Called
    /// only when reports are on. `status` 0: the request got no response.
    fn report_request(&self, status: u16, access: Option<Box<AccessData>>, elapsed: Duration) {
        if status == 0 {
            if self.metrics {
                self.heartbeat.counters().request_abandoned();
            }
            return;
        }
        if let (Some(data), Some(format)) = (access, self.access_format()) {
            log::access::emit(format, *data, elapsed);
        }
        if log::statsd::enabled() {
            log::statsd::request(status, elapsed);
        }
        if self.metrics {
            self.heartbeat.counters().request_done(status, elapsed);
        }
    }

    fn opened_connection(&self) {
        self.set_open_connections(self.connections.get() + 1);
    }

    fn closed_connection(&self) {
        self.set_open_connections(self.connections.get().saturating_sub(1));
        self.connection_closed.notify_waiters();
    }

    fn set_open_connections(&self, open: usize) {
        self.connections.set(open);
        if self.metrics {
            self.heartbeat
                .counters()
                .connections
                .store(open as u64, Ordering::Relaxed);
        }
    }
}

/// Runs the worker to completion in the forked child. Returns the exit status:
/// 0 after a stop, [`exit_code::WORKER_BOOT_ERROR`] or [`exit_code::APP_LOAD_ERROR`] when it
/// could not start.
pub fn run(py: Python<'_>, ctx: WorkerContext<'_>) -> i32 {
    let pid = std::process::id();
    log::info(format_args!("Booting worker with pid: {pid}"));
    steady_malloc();
    let listeners = ctx.listeners;
    let settings = ctx.settings;
    let (worker, wake_fd) = match boot(py, ctx) {
        Ok(booted) => booted,
        Err(err) => return log::start_failed(err),
    };
    if settings.worker_class() == "asgi" {
        let code = asgi::run(py, worker, settings, listeners, wake_fd);
        log::info(format_args!("Worker exiting (pid: {pid})"));
        return code;
    }
    let result = py.detach(move || -> io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let local = tokio::task::LocalSet::new();
        let serving = spawn_serving(&runtime, &local, worker, listeners, wake_fd)?;
        let outcome = local
            .block_on(&runtime, serving)
            .unwrap_or_else(|e| Err(io::Error::other(format!("the worker's loop failed: {e}"))));
        // Connections still open past the graceful timeout are abandoned with the runtime.
        drop(local);
        drop(runtime);
        outcome
    });
    if let Err(e) = result {
        log::error(format_args!("worker failed: {e}"));
    }
    log::info(format_args!("Worker exiting (pid: {pid})"));
    exit_code::OK
}

/// Everything before serving: signal handlers, the application, `post_worker_init`.
fn boot(py: Python<'_>, ctx: WorkerContext<'_>) -> Result<(Worker, RawFd), StartError> {
    let boot_error = exit_code::WORKER_BOOT_ERROR;
    let wake_fd = signals::install().map_err(|e| {
        StartError::logged(boot_error, format!("cannot install signal handlers: {e}"))
    })?;
    hooks::install_stop_handlers(py).map_err(|err| {
        log_exception(py, "Exception in worker process", &err);
        StartError::reported(boot_error)
    })?;
    let settings = ctx.settings;
    // Before the application loads, where Gunicorn's worker says it.
    if settings.bool("reload") {
        log::warning(format_args!("Reloader is on. Use in development only!"));
    }
    let (app, broken) = match ctx.app {
        Some(app) => (app, None),
        None => load(py, settings, ctx.application.as_ref())?,
    };
    reload::start(settings, broken);
    if !hooks::post_worker_init(py, &app) {
        return Err(StartError::reported(boot_error));
    }
    let worker = build_worker(py, settings, ctx.listeners, app, ctx.heartbeat)
        .map_err(|e| StartError::logged(boot_error, format!("Exception in worker process: {e}")))?;
    let worker = Worker {
        tls: ctx.tls,
        ..worker
    };
    Ok((worker, wake_fd))
}

/// The application, and with `--reload` the file whose syntax error it stands in for.
fn load(
    py: Python<'_>,
    settings: &Settings,
    application: Option<&Py<PyAny>>,
) -> Result<(Py<PyAny>, Option<PathBuf>), StartError> {
    let loaded = match application {
        Some(obj) => load_embedded(py, obj),
        None => load_app(py, settings),
    };
    match loaded {
        Ok(app) => Ok((app, None)),
        Err(LoadError::NotFound(message)) => {
            Err(StartError::logged(exit_code::APP_LOAD_ERROR, message))
        }
        Err(LoadError::Missing(message)) => {
            Err(StartError::logged(exit_code::WORKER_BOOT_ERROR, message))
        }
        Err(LoadError::Raised(err)) => {
            let stand_in = if settings.bool("reload") {
                syntax_error_stand_in(py, &err)
            } else {
                None
            };
            match stand_in {
                Some(Ok(loaded)) => {
                    // Gunicorn's `log.exception(e)`: the error itself is the message.
                    log_exception(py, &err.value(py).to_string(), &err);
                    Ok(loaded)
                }
                failed => {
                    let raised = failed.and_then(Result::err);
                    log_exception(
                        py,
                        "Exception in worker process",
                        raised.as_ref().unwrap_or(&err),
                    );
                    Err(StartError::reported(exit_code::WORKER_BOOT_ERROR))
                }
            }
        }
    }
}

/// The request-head parser's limits and strictness rules from the settings.
pub(crate) fn request_limits(settings: &Settings) -> Limits {
    let clamped = settings.request_limits();
    let mut limits = Limits::new(clamped.line, clamped.fields, clamped.field_size);
    limits.permit_unconventional_http_method = settings.bool("permit_unconventional_http_method");
    limits.permit_unconventional_http_version = settings.bool("permit_unconventional_http_version");
    limits.casefold_http_method = settings.bool("casefold_http_method");
    limits.permit_obsolete_folding = settings.bool("permit_obsolete_folding");
    limits.strip_header_spaces = settings.bool("strip_header_spaces");
    limits
}

fn secs(settings: &Settings, name: &str) -> Duration {
    Duration::from_secs(settings.uint(name))
}

/// How the ASGI interface reaches a connection: with the event loop's waits, which a socket,
/// a TLS connection and an HTTP/2 stream all offer.
#[allow(async_fn_in_trait)] // Used through generics on one thread; no `Send` bound wanted.
pub trait AsgiIo: Io + Sized + 'static {
    async fn call_asgi(
        ctx: &Arc<AsgiContext>,
        request: Request<Self>,
        reports: bool,
    ) -> Option<Outcome<Self, Paused, AccessData>>;
}

impl<T: Transport + 'static> AsgiIo for T {
    async fn call_asgi(
        ctx: &Arc<AsgiContext>,
        request: Request<T>,
        reports: bool,
    ) -> Option<Outcome<T, Paused, AccessData>> {
        Some(crate::asgi::cycle::handle(ctx, request, reports).await)
    }
}

/// The worker as the connection driver sees it: WSGI, called on the event loop's thread
/// (`sync`) or on the thread pool (`gthread`); ASGI on the event loop's thread.
impl<T: AsgiIo> Service<T> for Worker {
    type Paused = Paused;
    type Record = AccessData;

    fn options(&self) -> &driver::Options {
        &self.connection_options
    }

    fn shedding(&self) -> &Shedding {
        &self.shedding
    }

    fn is_stopping(&self) -> bool {
        self.is_closing()
    }

    fn reports(&self) -> bool {
        self.reports
    }

    fn report(&self, status: u16, record: Option<Box<AccessData>>, elapsed: Duration) {
        self.report_request(status, record, elapsed);
    }

    fn refused_record(
        &self,
        head: RequestHead,
        conn: &ConnInfo,
        err: &HttpError,
    ) -> Box<AccessData> {
        Box::new(AccessData {
            head,
            remote_addr: conn.remote_addr(),
            status: err.status,
            sent: 0,
            response_headers: Vec::new(),
            environ: Vec::new(),
            peer: conn.peer.socket_addr(),
            status_line: Some(format!("{} {}", err.status, err.reason)),
            environ_obj: None,
        })
    }

    /// A `sync` worker reads a Content-Length body straight into the `bytes` object a read
    /// returns: its event loop takes the GIL to make it, which a `gthread` event loop must
    /// never wait for.
    fn body_target(&self, len: usize) -> Option<Box<dyn BodyTarget>> {
        if !matches!(self.mode, Mode::Sync) {
            return None;
        }
        let whole = Python::attach(|py| WholeBody::new(py, len))?;
        Some(Box::new(whole))
    }

    async fn call(&self, request: Request<T>) -> Option<Outcome<T, Paused, AccessData>> {
        self.heartbeat.beat();
        self.count_request();
        match &self.mode {
            Mode::Sync => {
                let timed = self.burst.before_call().await;
                let outcome = self.in_app_call(|py| call::handle(py, &self.app, request));
                self.burst.call_done(timed);
                Some(outcome)
            }
            Mode::Threads(pool) => pool.run(Arc::clone(&self.app), request).await,
            // Lent, not inline: the driver's request future holds this one, and its size
            // (several times the rest) would otherwise be copied and carried for every
            // request of every worker class.
            Mode::Asgi(ctx) => Lent::new(|| T::call_asgi(ctx, request, self.reports)).await,
        }
    }

    /// Only a `sync` worker pauses responses.
    fn resume(&self, paused: Paused, transport: Arc<T>) -> Outcome<T, Paused, AccessData> {
        self.heartbeat.beat();
        let response = self.in_app_call(|py| call::resume(py, paused));
        Outcome {
            transport,
            response,
        }
    }

    fn abandon(&self, paused: Paused) {
        Python::attach(|py| paused.abandon(py));
    }

    fn request_done(&self) {
        self.heartbeat.beat();
    }

    /// Holds a finished response to write it in a burst with others (`sync`; see
    /// [`burst`]).
    async fn hold_response(&self) {
        if matches!(self.mode, Mode::Sync) {
            self.burst.hold(self.connections.get()).await;
        }
    }
}

fn build_worker(
    py: Python<'_>,
    settings: &Settings,
    listeners: &[Listener],
    app: Py<PyAny>,
    heartbeat: HeartbeatSlot,
) -> Result<Worker, String> {
    let threaded = settings.worker_class() == "gthread";
    let mut forwarded = ForwardedPolicy::new(
        settings.list("forwarded_allow_ips"),
        settings.dict("secure_scheme_headers"),
        settings.list("forwarder_headers"),
    )
    .map_err(|e| format!("forwarded_allow_ips: {e}"))?;
    let header_map = settings.str("header_map").unwrap_or("drop");
    forwarded.header_map =
        HeaderMap::parse(header_map).ok_or_else(|| format!("invalid header_map {header_map:?}"))?;
    let infos = listeners
        .iter()
        .map(|l| {
            let (server_name, server_port) = l.server_name_port();
            ListenerInfo {
                server_name,
                server_port,
                is_unix: matches!(l, Listener::Unix(..)),
            }
        })
        .collect();
    let environ = EnvironBuilder::new(py, threaded, settings.uint("workers") > 1, forwarded, infos)
        .map_err(|e| e.to_string())?;
    let timeout = settings.uint("timeout");
    // A client gets at least as long as the application would to make progress.
    let io_timeout = Duration::from_secs(if timeout == 0 { 60 } else { timeout.max(10) });
    let options = Options {
        graceful_timeout: secs(settings, "graceful_timeout"),
        max_requests: max_requests(settings),
        max_connections: (settings.uint("worker_connections") as usize).max(1),
    };
    let mode = if threaded {
        Mode::Threads(
            pool::Pool::new(settings.uint("threads").max(1) as usize).map_err(|e| e.to_string())?,
        )
    } else {
        Mode::Sync
    };
    let proxy_setting = match settings.get("proxy_protocol") {
        Value::Bool(true) => "auto".to_string(),
        Value::Str(s) => s.clone(),
        _ => "off".to_string(),
    };
    let proxy_mode = proxy::Mode::parse(&proxy_setting)
        .ok_or_else(|| format!("invalid proxy_protocol {proxy_setting:?}"))?;
    let proxy_allow = AllowList::new(settings.list("proxy_allow_ips"))
        .map_err(|e| format!("proxy_allow_ips: {e}"))?;
    let access = access_format(settings)?;
    let metrics = settings.str("metrics_bind").is_some();
    let connection_options = driver::Options {
        keepalive: secs(settings, "keepalive"),
        head_timeout: secs(settings, "header_timeout").max(Duration::from_secs(1)),
        body_timeout: secs(settings, "body_timeout").max(Duration::from_secs(1)),
        body_buffer: settings.uint("body_buffer_size") as usize,
        write_timeout: io_timeout,
        limits: request_limits(settings),
        proxy_mode,
        proxy_allow,
        // The ASGI worker runs each stream's application task on the event loop.
        h2: h2_options(settings, threaded || settings.worker_class() == "asgi")?,
    };
    Ok(Worker {
        options,
        connection_options,
        reports: access.is_some() || log::statsd::enabled() || metrics,
        metrics,
        app: Arc::new(AppContext {
            access,
            keep_environ: log::python::active(),
            app,
            environ,
            write_timeout: io_timeout,
            output_bound: settings.uint("response_buffer_size"),
            pause_output: !threaded,
        }),
        mode,
        heartbeat,
        closed: Notify::new(),
        connections: Cell::new(0),
        connection_closed: Notify::new(),
        burst: burst::Burst::new(),
        shedding: Shedding::new(),
        tls: None,
    })
}

/// HTTP/2's settings. Cleartext HTTP/2 is spoken only when `h2` is among `--http-protocols`
/// and only to the peers trusted with forwarded headers (and over unix sockets), as in
/// Gunicorn: it is meant for a TLS-terminating proxy in front.
fn h2_options(settings: &Settings, concurrent: bool) -> Result<h2::Options, String> {
    let offered = settings.list("http_protocols").iter().any(|p| p == "h2");
    let cleartext = settings.str("http2_cleartext").unwrap_or("off");
    let prior_knowledge = offered && matches!(cleartext, "prior-knowledge" | "both");
    let upgrade = offered && matches!(cleartext, "upgrade" | "both");
    let uint = |name: &str| u32::try_from(settings.uint(name)).unwrap_or(u32::MAX);
    Ok(h2::Options {
        prior_knowledge,
        upgrade,
        // With `both`, a connection without the preface may still upgrade.
        preface_required: prior_knowledge && !upgrade,
        trusted: AllowList::new(settings.list("forwarded_allow_ips"))
            .map_err(|e| format!("forwarded_allow_ips: {e}"))?,
        max_concurrent_streams: uint("http2_max_concurrent_streams"),
        initial_window_size: uint("http2_initial_window_size"),
        max_frame_size: uint("http2_max_frame_size"),
        max_header_list_size: uint("http2_max_header_list_size"),
        concurrent,
    })
}

/// The access log format when requests are logged anywhere: an access log file, syslog
/// (unless `--disable-redirect-access-to-syslog`), a logging config, or a custom logger class
/// (which gets every request). Opens the access log file.
fn access_format(settings: &Settings) -> Result<Option<AccessFormat>, String> {
    let file = settings.str("accesslog");
    let python = log::python::active();
    crate::log::access::set_logfile(if python { None } else { file })?;
    if file.is_none() && !python && !log::syslog::access_enabled() {
        return Ok(None);
    }
    let format = settings.str("access_log_format").unwrap_or_default();
    Ok(Some(AccessFormat::parse(format)))
}

/// `--max-requests` plus this worker's share of `--max-requests-jitter`.
fn max_requests(settings: &Settings) -> u64 {
    let base = settings.uint("max_requests");
    if base == 0 {
        return 0;
    }
    let jitter = settings.uint("max_requests_jitter");
    if jitter == 0 {
        return base;
    }
    // Spread recycling over workers without a random source: the pid and the clock suffice.
    let seed = (std::process::id() as u64) ^ crate::process::heartbeat::monotonic_millis();
    base + seed.wrapping_mul(6364136223846793005) % (jitter + 1)
}

/// Queues the worker's loop ([`serve_on`]) on `local` as a task of its own, on acceptors
/// registered with `runtime`. As a task it is polled only when its own events fire; the
/// future given to `block_on` is polled again on every wake-up of any connection.
fn spawn_serving(
    runtime: &tokio::runtime::Runtime,
    local: &tokio::task::LocalSet,
    worker: Worker,
    listeners: &[Listener],
    wake_fd: RawFd,
) -> io::Result<tokio::task::JoinHandle<io::Result<()>>> {
    let acceptors = {
        let _entered = runtime.enter();
        listeners
            .iter()
            .map(Acceptor::new)
            .collect::<io::Result<Vec<_>>>()?
    };
    Ok(local.spawn_local(serve_on(Rc::new(worker), acceptors, wake_fd)))
}

/// The event loop: accept on every listener, watch signals and the parent, stop gracefully.
async fn serve_on(worker: Rc<Worker>, acceptors: Vec<Acceptor>, wake_fd: RawFd) -> io::Result<()> {
    let ppid = std::os::unix::process::parent_id();
    for (index, listener) in acceptors.into_iter().enumerate() {
        tokio::task::spawn_local(accept_loop(Rc::clone(&worker), listener, index));
    }
    let wake = signals::Wakeup::new(wake_fd)?;
    let tick = HEARTBEAT_INTERVAL;
    loop {
        tokio::select! {
            woken = wake.signalled() => {
                woken?;
                hooks::run_pending_signal_handlers();
                if signals::worker().is_fast_stop() {
                    hooks::exit_now(0);
                }
                if signals::take_reopen_logs() {
                    for e in log::reopen_all() {
                        log::error(format_args!("{e}"));
                    }
                }
                if signals::worker().is_stopping() {
                    break;
                }
            }
            _ = worker.closing_signal() => break,
            _ = tokio::time::sleep(tick) => {
                worker.heartbeat.beat();
                if std::os::unix::process::parent_id() != ppid {
                    log::info(format_args!("Parent changed, shutting down: {}", std::process::id()));
                    signals::worker().begin_retiring(signals::Retire::ParentGone);
                    break;
                }
            }
        }
    }
    // A fast stop may end the loop through `closing_signal` before the wake-up is read.
    if signals::worker().is_fast_stop() {
        hooks::run_pending_signal_handlers();
        hooks::exit_now(0);
    }
    worker.begin_close();
    if worker.connections.get() > 0 && std::os::unix::process::parent_id() == ppid {
        // Open connections may keep this worker for up to --keep-alive: let the master start
        // the replacement now. SIGCHLD wakes its loop, which then reads the slot.
        worker.heartbeat.announce_leaving();
        // SAFETY: kill(2) with a valid signal number on our master; a failure only delays the
        // replacement to the master's next tick.
        unsafe { libc::kill(ppid as libc::pid_t, libc::SIGCHLD) };
    }
    let deadline = tokio::time::Instant::now() + worker.options.graceful_timeout;
    while worker.connections.get() > 0 {
        worker.heartbeat.beat();
        // Beats on the running tick too: connections may idle for up to --keep-alive, longer
        // than --timeout, and a worker waiting on them is not stuck.
        let wait = worker.connection_closed.notified();
        let until = deadline.min(tokio::time::Instant::now() + tick);
        if tokio::time::timeout_at(until, wait).await.is_err()
            && tokio::time::Instant::now() >= deadline
        {
            break;
        }
    }
    Ok(())
}

/// How often an idle or stopping worker beats and checks its parent.
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);

/// Fixes glibc malloc's thresholds for this worker, unless the operator set them
/// (`GLIBC_TUNABLES`, `MALLOC_*_`). By default glibc returns free memory at the top of the heap
/// past 128 KiB and adjusts that threshold only after the process happens to free a large
/// mapped block, so the same worker may give a request's buffers (a 64 KiB body and the
/// `bytes` read from it) back to the kernel after every request and fault them in again on the
/// next: 64 KiB POSTs ran at about 48k or 69k req/s depending on the run. Blocks up to 1 MiB
/// now come from the heap, and up to 4 MiB of free heap is kept.
fn steady_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set_by_operator = std::env::vars_os().any(|(k, v)| {
            (k == "GLIBC_TUNABLES" && v.to_string_lossy().contains("malloc"))
                || k.to_string_lossy().starts_with("MALLOC_")
        });
        if !set_by_operator {
            // SAFETY: mallopt only changes allocator parameters; called before the worker
            // starts its threads.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 4 << 20);
            }
        }
    }
}

/// A TLS connection: the handshake, then HTTP/1 or, as ALPN decided, HTTP/2.
async fn serve_tls(conn: Conn<Worker>, sock: Socket, tls: &TlsAcceptor, worker: &Rc<Worker>) {
    serve_as_h2(conn.serve_tls(sock, tls).await, worker).await;
}

/// Goes on with a connection the HTTP/1 driver handed over as HTTP/2 (ALPN or the preface).
async fn serve_as_h2<T: Transport>(handoff: Option<Handoff<T>>, worker: &Rc<Worker>) {
    if let Some(h) = handoff {
        // Boxed: the HTTP/2 future is large and rare beside the HTTP/1 one.
        Box::pin(h2::serve(
            h.transport,
            h.read_ahead,
            h.info,
            Rc::clone(worker),
        ))
        .await;
    }
}

async fn accept_loop(worker: Rc<Worker>, listener: Acceptor, index: usize) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = worker.closing_signal() => return,
        };
        match accepted {
            Ok((sock, peer)) => {
                let limit = worker.options.max_connections;
                let mut full = worker.connections.get() >= limit;
                if full {
                    // Connections accepted just before have yet to look for their first
                    // bytes, and closed ones to leave the count: let them, then make room.
                    tokio::task::yield_now().await;
                    full = worker.connections.get() >= limit && !worker.shedding.make_room(limit);
                }
                worker.opened_connection();
                let w = Rc::clone(&worker);
                if full && w.tls.is_some() {
                    // A plain-text 503 would mean nothing to a TLS client: close at once.
                    drop(sock);
                    w.closed_connection();
                    continue;
                }
                if full {
                    // Every open connection has sent something: refuse at once rather than
                    // leave the client in the queue.
                    tokio::task::spawn_local(async move {
                        Conn::new(peer, index, Rc::clone(&w)).shed(sock).await;
                        w.closed_connection();
                    });
                    continue;
                }
                tokio::task::spawn_local(async move {
                    let conn = Conn::new(peer, index, Rc::clone(&w));
                    // Decided once per connection: a plain connection's requests run the same
                    // code as without TLS. HTTP/2 comes through ALPN on TLS, or through the
                    // preface on a cleartext connection allowed to speak it.
                    match &w.tls {
                        // Boxed: a plain connection's task stays as small as without TLS
                        // (an idle kept-alive connection costs the size of its task).
                        Some(tls) => Box::pin(serve_tls(conn, sock, tls, &w)).await,
                        None => serve_as_h2(conn.serve(sock).await, &w).await,
                    }
                    w.closed_connection();
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on a ready listener.
                log::error(format_args!("accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
