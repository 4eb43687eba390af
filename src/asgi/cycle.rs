//! One ASGI HTTP request cycle: the scope, the application's task on the asyncio loop, and the
//! `receive` and `send` callables, all on the event loop's thread.
//!
//! The connection stays with the Rust task of the request ([`handle`]): it reads more of the
//! body when `receive` waits for it, writes what `send` queued, watches for the client leaving
//! and cancels the application once the grace period after that has passed. `receive` and
//! `send` hand back an already completed awaitable ([`Ready`]) whenever no wait is needed, so
//! the usual request touches the loop only to run its task.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyStopIteration, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use tokio::sync::Notify;
use tokio::time::{sleep_until, Instant};

use super::response::{Facts, Response, Stage};
use super::scope::ScopeBuilder;
use crate::driver::body::BodyState;
use crate::driver::output::{write_all, OutQueue, Then};
use crate::driver::{self, log_invalid_request, ConnInfo, Messages, Outcome, Request};
use crate::hooks::{self, ResponseView};
use crate::http::{HttpError, RequestHead};
use crate::log;
use crate::log::python::log_exception;
use crate::net::transport::read_into;
use crate::net::Transport;

/// Socket bytes read at once while a body streams to the application.
const READ_CHUNK: usize = 64 * 1024;
/// Connection bytes (a pipelined request) read ahead while watching for the client leaving;
/// past this the watch stops until the response is done.
const WATCH_LIMIT: usize = 64 * 1024;

/// A served request, kept for its access log line.
pub type AccessData = log::access::AccessData<RequestHead>;

/// Interned keys and values of the events `receive` gives.
struct Events {
    kind: Py<PyString>,
    body: Py<PyString>,
    more_body: Py<PyString>,
    request: Py<PyString>,
    disconnect: Py<PyString>,
}

/// What every request of the worker shares.
pub struct Context {
    pub app: Py<PyAny>,
    pub scope: ScopeBuilder,
    create_task: Py<PyAny>,
    /// `asyncio.Task` and its keyword arguments: the loop, and an eager start where Python
    /// has it (3.12 and later).
    task_class: (Py<PyAny>, Py<pyo3::types::PyDict>),
    /// The loop's `get_task_factory`: a task factory set by the application wins over
    /// making the task directly.
    task_factory: Py<PyAny>,
    create_future: Py<PyAny>,
    events: Events,
    /// The completed awaitable of no value that `send` returns: it holds no state, so one
    /// serves every call.
    done: Py<PyAny>,
    pub options: Options,
}

/// How the worker's requests are served.
pub struct Options {
    /// How long the application may run on after its client left
    /// (`--asgi-disconnect-grace-period`).
    pub grace: Duration,
    /// Longest stall while writing to a client.
    pub write_timeout: Duration,
    /// Unsent response bytes past which `send` waits for the client.
    pub output_bound: u64,
    /// Something reads the response headers after the response (the access log).
    pub keep_headers: bool,
    /// The largest WebSocket message taken (`--websocket-max-message-size`).
    pub ws_max_message: usize,
    /// Silence after which a WebSocket client is pinged, if ever (`--websocket-ping-interval`).
    pub ws_ping_interval: Option<Duration>,
    /// How long a pinged client has to answer (`--websocket-ping-timeout`).
    pub ws_ping_timeout: Option<Duration>,
}

impl Context {
    pub fn new(
        py: Python<'_>,
        app: Py<PyAny>,
        scope: ScopeBuilder,
        event_loop: &Bound<'_, PyAny>,
        mut options: Options,
    ) -> PyResult<Context> {
        options.output_bound = options.output_bound.max(1);
        let intern = |s: &str| PyString::intern(py, s).unbind();
        Ok(Context {
            app,
            scope,
            create_task: event_loop.getattr("create_task")?.unbind(),
            task_class: task_class(py, event_loop)?,
            task_factory: event_loop.getattr("get_task_factory")?.unbind(),
            create_future: event_loop.getattr("create_future")?.unbind(),
            events: Events {
                kind: intern("type"),
                body: intern("body"),
                more_body: intern("more_body"),
                request: intern("http.request"),
                disconnect: intern("http.disconnect"),
            },
            done: Ready::wrap(py, None)?,
            options,
        })
    }

    pub(super) fn create_future(&self) -> &Py<PyAny> {
        &self.create_future
    }

    /// Starts the application's task for `coro`. Without a task factory the task is made
    /// directly, as the loop's `create_task` would make it, without the call through the loop.
    /// Where Python has eager tasks the coroutine then runs at once up to its first real wait:
    /// a request that never waits needs no loop iteration of its own.
    pub(super) fn start_task<'py>(
        &self,
        py: Python<'py>,
        coro: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if self.task_factory.bind(py).call0()?.is_none() {
            let (class, kwargs) = &self.task_class;
            return class.bind(py).call((coro,), Some(kwargs.bind(py)));
        }
        self.create_task.bind(py).call1((coro,))
    }

    /// The completed awaitable of no value.
    pub(super) fn done(&self, py: Python<'_>) -> Py<PyAny> {
        self.done.clone_ref(py)
    }
}

/// `asyncio.Task` with `loop`, and `eager_start=True` where Python has eager tasks.
fn task_class(
    py: Python<'_>,
    event_loop: &Bound<'_, PyAny>,
) -> PyResult<(Py<PyAny>, Py<pyo3::types::PyDict>)> {
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("loop", event_loop)?;
    if py.version_info() >= (3, 12) {
        kwargs.set_item("eager_start", true)?;
    }
    let class = py.import("asyncio")?.getattr("Task")?;
    Ok((class.unbind(), kwargs.unbind()))
}

/// An awaitable that is done already: awaiting it gives `value` without suspending.
#[pyclass(module = "ferrocorn._ferrocorn")]
pub struct Ready {
    value: Option<Py<PyAny>>,
}

impl Ready {
    pub(super) fn wrap(py: Python<'_>, value: Option<Py<PyAny>>) -> PyResult<Py<PyAny>> {
        Ok(Py::new(py, Ready { value })?.into_any())
    }
}

#[pymethods]
impl Ready {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self) -> PyResult<Option<Py<PyAny>>> {
        match self.value.take() {
            Some(value) => Err(PyStopIteration::new_err((value,))),
            None => Ok(None),
        }
    }
}

/// The state a request's Rust task shares with its `receive`, `send` and task callback.
struct Exchange {
    state: RefCell<State>,
    /// Wakes the Rust task: output queued, a `receive` waits, the application finished.
    wake: Notify,
}

struct State {
    body: BodyState,
    /// The last `http.request` event (no more body) was given.
    body_done: bool,
    /// The loop future a waiting `receive` returned.
    receiving: Option<Py<PyAny>>,
    /// The loop future a `send` past the output bound returned.
    sending: Option<Py<PyAny>>,
    /// The client went away (or its body broke off).
    disconnected: bool,
    response: Response,
    app_done: bool,
    /// What the application's task raised.
    failure: Option<PyErr>,
}

impl State {
    /// The event a `receive` gets now, if one is ready.
    fn next_event(&mut self, py: Python<'_>, ev: &Events) -> PyResult<Option<Py<PyAny>>> {
        if self.disconnected || (self.body_done && self.response.stage == Stage::Complete) {
            return disconnect_event(py, ev).map(Some);
        }
        if self.body_done {
            return Ok(None);
        }
        let body = &mut self.body;
        if !body.is_finished() && body.raw_pos < body.raw.len() {
            if let Err(err) = body.decode_buffered(READ_CHUNK) {
                body.error = Some(Box::new(err));
            }
        }
        let complete = body.is_complete();
        if body.available() > 0 || complete {
            let n = body.available();
            let chunk = PyBytes::new(py, body.take(n));
            self.body_done = complete;
            let event = PyDict::new(py);
            event.set_item(&ev.kind, &ev.request)?;
            event.set_item(&ev.body, chunk)?;
            event.set_item(&ev.more_body, !complete)?;
            return Ok(Some(event.into_any().unbind()));
        }
        if body.error.is_some() || body.truncated {
            self.disconnected = true;
            return disconnect_event(py, ev).map(Some);
        }
        Ok(None)
    }
}

fn disconnect_event(py: Python<'_>, ev: &Events) -> PyResult<Py<PyAny>> {
    let event = PyDict::new(py);
    event.set_item(&ev.kind, &ev.disconnect)?;
    Ok(event.into_any().unbind())
}

/// Whether a loop future still waits for its result (the application may have cancelled it).
/// Refuses a second `receive` while an earlier one still waits; forgets an earlier one that
/// settled (or that the application cancelled).
pub(super) fn forget_settled_receive(
    py: Python<'_>,
    receiving: &mut Option<Py<PyAny>>,
) -> PyResult<()> {
    if receiving
        .as_ref()
        .is_some_and(|earlier| waiting(earlier.bind(py)))
    {
        return Err(PyRuntimeError::new_err(
            "receive() called while another receive() is waiting",
        ));
    }
    *receiving = None;
    Ok(())
}

pub(super) fn waiting(future: &Bound<'_, PyAny>) -> bool {
    is_done(future).map(|done| !done).unwrap_or(false)
}

/// `done()` of a loop future or task.
fn is_done(future: &Bound<'_, PyAny>) -> PyResult<bool> {
    future
        .call_method0(pyo3::intern!(future.py(), "done"))?
        .is_truthy()
}

/// Gives a waiting loop future its result.
pub(super) fn resolve(py: Python<'_>, future: Py<PyAny>, value: Py<PyAny>) {
    let future = future.bind(py);
    if waiting(future) {
        if let Err(e) = future.call_method1(pyo3::intern!(py, "set_result"), (value,)) {
            log_exception(py, "cannot wake the ASGI application", &e);
        }
    }
}

/// The `receive` callable of one request.
#[pyclass(unsendable, name = "Receive", module = "ferrocorn._ferrocorn")]
pub struct Receiver {
    ex: Rc<Exchange>,
    ctx: Arc<Context>,
}

#[pymethods]
impl Receiver {
    fn __call__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut st = self.ex.state.borrow_mut();
        forget_settled_receive(py, &mut st.receiving)?;
        if let Some(event) = st.next_event(py, &self.ctx.events)? {
            return Ready::wrap(py, Some(event));
        }
        let future = self.ctx.create_future.call0(py)?;
        st.receiving = Some(future.clone_ref(py));
        self.ex.wake.notify_one();
        Ok(future)
    }
}

/// The `send` callable of one request.
#[pyclass(unsendable, name = "Send", module = "ferrocorn._ferrocorn")]
pub struct Sender {
    ex: Rc<Exchange>,
    ctx: Arc<Context>,
}

#[pymethods]
impl Sender {
    fn __call__(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let message = message
            .cast::<PyDict>()
            .map_err(|_| PyTypeError::new_err("an ASGI message must be a dict"))?;
        // Keys interned once: a lookup then costs no new string and no hashing.
        let kind = match message.get_item(pyo3::intern!(py, "type"))? {
            Some(kind) => kind,
            None => return Err(PyTypeError::new_err("an ASGI message needs a 'type'")),
        };
        let kind = kind
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err("an ASGI message's 'type' must be a string"))?;
        let mut st = self.ex.state.borrow_mut();
        match kind.to_str()? {
            "http.response.start" => {
                if st.response.stage != Stage::Waiting {
                    return Err(PyRuntimeError::new_err(
                        "Unexpected ASGI message 'http.response.start' sent, after response \
                         already started.",
                    ));
                }
                let status = match message.get_item(pyo3::intern!(py, "status"))? {
                    Some(status) => status.extract::<u16>()?,
                    None => {
                        return Err(PyTypeError::new_err("http.response.start needs a 'status'"))
                    }
                };
                let headers = message.get_item(pyo3::intern!(py, "headers"))?;
                st.response.start(status, headers.as_ref())?;
                if st.response.messages.is_some() {
                    st.response.expects_trailers =
                        match message.get_item(pyo3::intern!(py, "trailers"))? {
                            Some(trailers) => trailers.is_truthy()?,
                            None => false,
                        };
                }
            }
            "http.response.informational" => {
                let status = match message.get_item(pyo3::intern!(py, "status"))? {
                    Some(status) => status.extract::<u16>()?,
                    None => {
                        return Err(PyTypeError::new_err(
                            "http.response.informational needs a 'status'",
                        ))
                    }
                };
                let headers = message.get_item(pyo3::intern!(py, "headers"))?;
                st.response.informational(status, headers.as_ref())?;
                self.ex.wake.notify_one();
            }
            "http.response.body" => {
                if st.disconnected {
                    // The client left: nothing is written any more, quietly.
                    return Ok(self.ctx.done.clone_ref(py));
                }
                let body = message.get_item(pyo3::intern!(py, "body"))?;
                let body = match &body {
                    Some(b) => Some(b.cast::<PyBytes>().map_err(|_| {
                        PyTypeError::new_err("the 'body' of http.response.body must be bytes")
                    })?),
                    None => None,
                };
                let more = match message.get_item(pyo3::intern!(py, "more_body"))? {
                    Some(more) => more.is_truthy()?,
                    None => false,
                };
                st.response.body(body, more)?;
                self.ex.wake.notify_one();
                if more && st.response.out.pending() >= self.ctx.options.output_bound {
                    let future = self.ctx.create_future.call0(py)?;
                    st.sending = Some(future.clone_ref(py));
                    return Ok(future);
                }
            }
            // Sent on HTTP/2; declined on HTTP/1 (the scope does not offer them there).
            "http.response.trailers" => {
                let headers = message.get_item(pyo3::intern!(py, "headers"))?;
                let more = match message.get_item(pyo3::intern!(py, "more_trailers"))? {
                    Some(more) => more.is_truthy()?,
                    None => false,
                };
                st.response.trailers(headers.as_ref(), more)?;
            }
            other => {
                return Err(PyRuntimeError::new_err(format!(
                    "Unexpected ASGI message '{other}' sent."
                )))
            }
        }
        Ok(self.ctx.done.clone_ref(py))
    }
}

/// Called by the loop when the application's task ends.
#[pyclass(unsendable, module = "ferrocorn._ferrocorn")]
pub struct Done {
    ex: Rc<Exchange>,
}

#[pymethods]
impl Done {
    fn __call__(&self, task: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut st = self.ex.state.borrow_mut();
        if st.app_done {
            // The request's task saw the end first.
            return Ok(());
        }
        st.app_done = true;
        if let Some(err) = task_failure(task)? {
            st.failure = Some(err);
        }
        self.ex.wake.notify_one();
        Ok(())
    }
}

/// What a finished application task raised, if anything (a cancelled task raised nothing).
pub(super) fn task_failure(task: &Bound<'_, PyAny>) -> PyResult<Option<PyErr>> {
    let py = task.py();
    // One call: `exception()` of a cancelled task raises CancelledError.
    match task.call_method0(pyo3::intern!(py, "exception")) {
        Ok(raised) => Ok((!raised.is_none()).then(|| PyErr::from_value(raised))),
        Err(e) if e.is_instance_of::<pyo3::exceptions::asyncio::CancelledError>(py) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Why a request never reached the application's task.
enum NotStarted {
    /// The scope refused it (a header name, the scheme headers): answered with the error.
    Refused(HttpError),
    /// Calling the application raised: logged, answered 500.
    Failed,
}

/// Runs the ASGI cycle of `req` until the application's task ends, giving the connection
/// back with what is left to write.
pub async fn handle<T: Transport, P>(
    ctx: &Arc<Context>,
    req: Request<T>,
    reports: bool,
) -> Outcome<T, P, AccessData> {
    if super::websocket::is_upgrade(&req.head) {
        return super::websocket::handle(ctx, req, reports).await;
    }
    let Request {
        head,
        body,
        conn,
        transport,
        keep_alive,
        closing,
        messages,
    } = req;
    let facts = Facts {
        version: head.version,
        is_head: &*head.method == "HEAD",
        keep_alive,
        closing,
    };
    let ex = Rc::new(Exchange {
        state: RefCell::new(State {
            body,
            body_done: false,
            receiving: None,
            sending: None,
            disconnected: false,
            response: Response::new(facts, ctx.options.keep_headers && reports)
                .with_messages(messages.clone()),
            app_done: false,
            failure: None,
        }),
        wake: Notify::new(),
    });
    // Gunicorn's request hooks, around the whole cycle.
    let hook = match Python::attach(|py| pre_request(py, &head, &conn)) {
        Ok(hook) => hook,
        Err(()) => {
            let err = HttpError::internal(String::new());
            let body = ex.state.borrow_mut().body_take();
            return refused(transport, &err, body, head, &conn, reports);
        }
    };
    if hook.is_some() {
        ex.state.borrow_mut().response.keep_headers = true;
    }
    let task = Python::attach(|py| start(py, ctx, &ex, &head, &conn));
    let task = match task {
        Ok(task) => task,
        Err(not_started) => {
            let body = ex.state.borrow_mut().body_take();
            let err = match not_started {
                NotStarted::Refused(err) => {
                    if err.status >= 500 {
                        log::error(format_args!(
                            "Error handling request {}: {}",
                            uri(&head),
                            err.message
                        ));
                    } else {
                        log_invalid_request(conn.peer.socket_addr(), &err);
                    }
                    err
                }
                NotStarted::Failed => HttpError::internal(String::new()),
            };
            if let Some(req) = &hook {
                Python::attach(|py| post_request(py, req, err.status, None));
            }
            return refused(transport, &err, body, head, &conn, reports);
        }
    };
    run(ctx, &ex, &*transport, messages.as_deref(), &task).await;
    let response = conclude(&ex, head, &conn, reports, hook);
    Outcome {
        transport,
        response,
    }
}

/// The request answered with `err` before its application ran.
fn refused<T, P>(
    transport: Arc<T>,
    err: &HttpError,
    body: BodyState,
    head: RequestHead,
    conn: &ConnInfo,
    reports: bool,
) -> Outcome<T, P, AccessData> {
    let mut response = driver::Response::refuse(err, Some(body));
    if reports {
        response.record = Some(record(head, conn, err.status, 0, Vec::new(), None));
    }
    Outcome {
        transport,
        response,
    }
}

impl State {
    /// The body, leaving an empty one in its place.
    fn body_take(&mut self) -> BodyState {
        let empty = BodyState::new(
            crate::http::BodyDecoder::new(crate::http::head::Framing::None),
            Vec::new(),
            self.body.timeout,
        );
        std::mem::replace(&mut self.body, empty)
    }
}

/// Builds the scope and starts the application's task.
fn start(
    py: Python<'_>,
    ctx: &Arc<Context>,
    ex: &Rc<Exchange>,
    head: &RequestHead,
    conn: &ConnInfo,
) -> Result<Py<PyAny>, NotStarted> {
    let scope = ctx
        .scope
        .build(py, head, conn)
        .map_err(NotStarted::Refused)?;
    let started = || -> PyResult<Py<PyAny>> {
        let receive = Py::new(
            py,
            Receiver {
                ex: Rc::clone(ex),
                ctx: Arc::clone(ctx),
            },
        )?;
        let send = Py::new(
            py,
            Sender {
                ex: Rc::clone(ex),
                ctx: Arc::clone(ctx),
            },
        )?;
        let coro = ctx.app.bind(py).call1((scope, receive, send))?;
        let task = ctx.start_task(py, coro)?;
        task.call_method1(
            pyo3::intern!(py, "add_done_callback"),
            (Py::new(py, Done { ex: Rc::clone(ex) })?,),
        )?;
        Ok(task.unbind())
    };
    started().map_err(|e| {
        log_exception(
            py,
            &format!("Exception in ASGI application {}", uri(head)),
            &e,
        );
        NotStarted::Failed
    })
}

/// What the Rust task waits for next.
enum Wait {
    Woken,
    Read(std::io::Result<usize>, Vec<u8>),
    BodyTimeout,
    GraceOver,
}

/// Serves the application's task until it ends: writes what it sends, reads the body it
/// asks for, tells it when the client left. `messages`: the HTTP/2 stream's, which tells
/// when the client reset it (its reads say nothing once the body ended).
async fn run<T: Transport>(
    ctx: &Context,
    ex: &Exchange,
    io: &T,
    messages: Option<&dyn Messages>,
    task: &Py<PyAny>,
) {
    let mut grace: Option<Instant> = None;
    let mut cancelled = false;
    loop {
        // Output first: what the application sent goes out while it runs on.
        let out = {
            let mut st = ex.state.borrow_mut();
            if st.response.out.is_empty() || st.disconnected {
                None
            } else {
                Some(std::mem::take(&mut st.response.out))
            }
        };
        if let Some(mut out) = out {
            if write_all(io, &mut out, Then::Continue, ctx.options.write_timeout)
                .await
                .is_err()
            {
                let mut st = ex.state.borrow_mut();
                st.disconnected = true;
                st.response.must_close = true;
            }
            continue;
        }
        let (need_body, watch, done) = Python::attach(|py| {
            let mut st = ex.state.borrow_mut();
            let st = &mut *st;
            if st.response.out.pending() < ctx.options.output_bound || st.disconnected {
                if let Some(future) = st.sending.take() {
                    resolve(py, future, py.None());
                }
            }
            let mut need_body = false;
            if st.receiving.as_ref().is_some_and(|f| !waiting(f.bind(py))) {
                // Cancelled: whatever it would have got stays for the next `receive`.
                st.receiving = None;
            }
            if st.receiving.is_some() {
                match st.next_event(py, &ctx.events) {
                    Ok(Some(event)) => {
                        if let Some(future) = st.receiving.take() {
                            resolve(py, future, event);
                        }
                    }
                    Ok(None) => need_body = !st.body_done,
                    Err(e) => log_exception(py, "cannot make an ASGI event", &e),
                }
            }
            let watch = !need_body
                && !st.disconnected
                && st.body.is_finished()
                && st.body.raw.len() < WATCH_LIMIT;
            // A task that finished in the step that woke this one (the usual end: the last
            // `send`, then return) is seen at once, without waiting a loop iteration for its
            // done callback.
            if !st.app_done && is_done(task.bind(py)).unwrap_or(false) {
                st.app_done = true;
                st.failure = task_failure(task.bind(py)).unwrap_or_else(Some);
            }
            (need_body, watch, st.app_done)
        });
        if done {
            return;
        }
        if ex.state.borrow().disconnected && grace.is_none() && !cancelled {
            grace = Some(Instant::now() + ctx.options.grace);
        }
        let body_deadline = Instant::now() + ex.state.borrow().body.timeout;
        let woken = ex.wake.notified();
        let reading = async {
            let mut buf = Vec::new();
            if let (false, Some(messages)) = (need_body, messages) {
                messages.abandoned().await;
                return (Ok(0), buf);
            }
            let read = read_into(io, &mut buf, READ_CHUNK, None).await;
            (read, buf)
        };
        let waited = tokio::select! {
            biased;
            _ = woken => Wait::Woken,
            (read, buf) = reading, if need_body || watch => Wait::Read(read, buf),
            _ = sleep_until(body_deadline), if need_body => Wait::BodyTimeout,
            _ = sleep_until(grace.unwrap_or(body_deadline)), if grace.is_some() => Wait::GraceOver,
        };
        let mut st = ex.state.borrow_mut();
        match waited {
            Wait::Woken => {}
            Wait::Read(Ok(n), buf) if n > 0 => st.body.raw.extend_from_slice(&buf),
            Wait::Read(..) => {
                // The client closed (or the connection failed).
                if !st.body.is_finished() {
                    st.body.truncated = true;
                }
                st.disconnected = true;
                st.response.must_close = true;
            }
            Wait::BodyTimeout => {
                st.body.error = Some(Box::new(HttpError::body_timeout()));
                st.disconnected = true;
                st.response.must_close = true;
            }
            Wait::GraceOver => {
                drop(st);
                grace = None;
                cancelled = true;
                Python::attach(|py| {
                    if let Err(e) = task.bind(py).call_method0(pyo3::intern!(py, "cancel")) {
                        log_exception(py, "cannot cancel the ASGI application", &e);
                    }
                });
            }
        }
    }
}

/// The end of the cycle once the task ended: an error answer if it failed before its
/// response started, the connection's fate, the access log data.
fn conclude<P>(
    ex: &Exchange,
    head: RequestHead,
    conn: &ConnInfo,
    reports: bool,
    hook: Option<Py<PyAny>>,
) -> driver::Response<P, AccessData> {
    let mut st = ex.state.borrow_mut();
    // The application's callables may outlive the request (kept by the application): they
    // must not keep its loop futures alive too.
    st.receiving = None;
    st.sending = None;
    let failure = st.failure.take();
    let failed = failure.is_some();
    let body = st.body_take();
    let disconnected = st.disconnected;
    let response = &mut st.response;
    let mut error_answer: Option<HttpError> = None;
    if let Some(err) = failure {
        Python::attach(|py| {
            log_exception(
                py,
                &format!("Exception in ASGI application {}", uri(&head)),
                &err,
            )
        });
        if !response.head_sent() && !disconnected {
            error_answer = Some(HttpError::internal(String::new()));
        }
        response.must_close = true;
    } else if !disconnected {
        match response.stage {
            Stage::Waiting => {
                // A malformed body the application gave up on is the client's error.
                error_answer = Some(match body.error.as_deref() {
                    Some(err) => {
                        log_invalid_request(conn.peer.socket_addr(), err);
                        err.clone()
                    }
                    None => {
                        log::error(format_args!(
                            "ASGI callable returned without starting response (request {})",
                            uri(&head)
                        ));
                        HttpError::internal(String::new())
                    }
                });
            }
            Stage::Started => {
                log::error(format_args!(
                    "ASGI callable returned without completing response (request {})",
                    uri(&head)
                ));
                response.must_close = true;
            }
            Stage::Complete => {}
        }
    }
    if let Some(req) = &hook {
        let view = ResponseView {
            status: (response.stage != Stage::Waiting).then(|| response.status_line().to_owned()),
            status_code: response.status,
            headers: response.headers.clone(),
            sent: response.sent,
            headers_sent: response.head_sent(),
        };
        let status = error_answer.as_ref().map_or(response.status, |e| e.status);
        Python::attach(|py| post_request(py, req, status, Some(view)));
    }
    if let Some(err) = error_answer {
        let mut answer = driver::Response::refuse(&err, Some(body));
        if reports {
            answer.record = Some(record(head, conn, err.status, 0, Vec::new(), None));
        }
        return answer;
    }
    let cut_short = response.stage == Stage::Started
        || (response.head_sent() && (failed || response.is_short()));
    if cut_short {
        // HTTP/1 closes the connection; an HTTP/2 stream is reset.
        if let Some(messages) = &response.messages {
            messages.abort();
        }
    }
    let body_ok = body.error.is_none() && !body.truncated;
    let keep_alive = !response.must_close
        && !disconnected
        && response.stage == Stage::Complete
        && response.head_sent()
        && body_ok;
    let status = response.status;
    let out = if disconnected {
        OutQueue::new()
    } else {
        std::mem::take(&mut response.out)
    };
    let mut outcome = driver::Response::ended(out, Some(body), status);
    outcome.keep_alive = keep_alive;
    if reports {
        let headers = std::mem::take(&mut response.headers);
        let line = Some(response.status_line().to_owned());
        let sent = response.sent;
        outcome.record = Some(record(head, conn, status, sent, headers, line));
    }
    outcome
}

/// `pre_request(worker, req)` when request hooks are set: `Ok(Some(req))` for
/// `post_request`, `Err` when the hook raised (answered 500).
pub(super) fn pre_request(
    py: Python<'_>,
    head: &RequestHead,
    conn: &ConnInfo,
) -> Result<Option<Py<PyAny>>, ()> {
    let Some(hooks) = hooks::request_hooks(py) else {
        return Ok(None);
    };
    match hooks.pre_request(py, head, conn.peer.socket_addr()) {
        Ok(req) => Ok(Some(req)),
        Err(req) => {
            post_request(py, &req, 500, None);
            Err(())
        }
    }
}

/// `post_request(worker, req, environ, resp)`; an ASGI request has no environ, so it gets an
/// empty dict, as the logs' atoms read it.
pub(super) fn post_request(
    py: Python<'_>,
    req: &Py<PyAny>,
    status: u16,
    view: Option<ResponseView>,
) {
    if let Some(hooks) = hooks::request_hooks(py) {
        hooks.post_request(py, req, None, || view, status);
    }
}

pub(super) fn record(
    head: RequestHead,
    conn: &ConnInfo,
    status: u16,
    sent: u64,
    response_headers: Vec<(String, String)>,
    status_line: Option<String>,
) -> Box<AccessData> {
    Box::new(AccessData {
        head,
        remote_addr: conn.remote_addr(),
        status,
        sent,
        response_headers,
        environ: Vec::new(),
        peer: conn.peer.socket_addr(),
        status_line,
        environ_obj: None,
    })
}

/// `GET /path?query`, as requests are named in error messages.
pub(super) fn uri(head: &RequestHead) -> String {
    format!("{} {}", head.method, String::from_utf8_lossy(head.target()))
}
