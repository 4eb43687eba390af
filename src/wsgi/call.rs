//! The request cycle, written once for every worker class: build the environ, call the
//! application, turn what it returns into response bytes, always call the iterable's `close()`.
//! Runs with the GIL; releases it only to wait on the socket.
//!
//! A `sync` worker's response may pause at the output bound ([`Paused`]): the event loop
//! writes what is queued, then [`resume`]s the body iterator. The end of the cycle (the access
//! log data, `post_request`) happens once, when the response is complete ([`Tail::finish`]).

use std::io::Seek;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::io::RawFd;
use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyIterator, PyList};

use super::environ::EnvironBuilder;
use super::file_wrapper::FileWrapper;
use super::input::InputStream;
use super::response::{HintsTarget, RequestFacts, ResponseState, StartResponse};
use crate::driver::body::BodyState;
use crate::driver::output::OutQueue;
use crate::driver::{self, log_invalid_request, Outcome, Request};
use crate::hooks::{self, RequestHooks, ResponseView};
use crate::http::response::{self as h1, BodyFraming};
use crate::http::{HttpError, RequestHead};
use crate::log;
use crate::log::access::AccessFormat;
use crate::log::python::log_exception;
use crate::net::Io;

/// A WSGI response as the connection driver gets it.
pub type Response = driver::Response<Paused, AccessData>;

/// What every request of a worker shares.
pub struct AppContext {
    pub app: Py<PyAny>,
    pub environ: EnvironBuilder,
    /// The compiled access log format, when requests are logged (an access log file, syslog,
    /// a logging config or a custom logger class).
    pub access: Option<AccessFormat>,
    /// A Python logger (logging config or custom class) gets the environ itself in
    /// `access()`, where Gunicorn's atoms are read from it: keep it.
    pub keep_environ: bool,
    /// Longest stall while writing to a client before it counts as gone.
    pub write_timeout: Duration,
    /// Unsent response bytes per connection before the body iterator waits for the client
    /// (`--response-buffer-size`).
    pub output_bound: u64,
    /// At that bound, pause the response and return to the event loop (the `sync` worker,
    /// whose event loop is the application's thread) instead of waiting on the socket.
    pub pause_output: bool,
}

/// A served request, kept for its access log line.
pub type AccessData = log::access::AccessData<RequestHead>;

/// What `post_request` will see: the environ and `start_response`, once they exist.
#[derive(Default)]
struct Capture {
    environ: Option<Py<PyAny>>,
    responder: Option<Py<StartResponse>>,
}

/// A response whose body iterator stopped at the output bound, to go on once the client has
/// read. Dropping it without [`resume`] or [`Paused::abandon`] would skip `close()`.
pub struct Paused {
    iter: Py<PyIterator>,
    iterable: Py<PyAny>,
    responder: Py<StartResponse>,
    input: Py<InputStream>,
    tail: Tail,
}

impl Paused {
    /// The client went away while the response was paused: end it, calling `close()` and
    /// `post_request`.
    pub fn abandon(self, py: Python<'_>) {
        if let Err(e) = close_iterable(self.iterable.bind(py)) {
            log_exception(
                py,
                &format!("Error handling request {}", uri(&self.tail.head)),
                &e,
            );
        }
        let status = self.responder.bind(py).borrow().state.status_code;
        self.tail.finish(
            py,
            Response::ended(OutQueue::new(), None, status),
            0,
            Vec::new(),
        );
    }
}

/// What the end of a request cycle needs, kept across a pause.
struct Tail {
    head: RequestHead,
    /// The client address for the access log; `None` when the access log is off.
    remote_addr: Option<String>,
    /// `{key}e` values the access log format asks for.
    environ: Vec<(String, String)>,
    /// The `req` object and what `post_request` will see, when request hooks are set.
    hook: Option<(Py<PyAny>, Capture)>,
    peer: Option<std::net::SocketAddr>,
    /// The environ and the status line, for a custom logger class.
    environ_obj: Option<Py<PyAny>>,
    status_line: Option<String>,
}

impl Tail {
    /// Ends the cycle: `post_request`, then the access log data.
    fn finish(
        self,
        py: Python<'_>,
        mut outcome: Response,
        sent: u64,
        response_headers: Vec<(String, String)>,
    ) -> Response {
        if let (Some((req, capture)), Some(hooks)) = (&self.hook, hooks::request_hooks(py)) {
            let response = || {
                capture.responder.as_ref().map(|r| {
                    let state = &r.borrow(py).state;
                    ResponseView {
                        status: state.status.clone(),
                        status_code: state.status_code,
                        headers: state.headers.clone(),
                        sent: state.sent,
                        headers_sent: state.headers_sent,
                    }
                })
            };
            hooks.post_request(py, req, capture.environ.as_ref(), response, outcome.status);
        }
        if let Some(remote_addr) = self.remote_addr {
            outcome.record = Some(Box::new(AccessData {
                head: self.head,
                remote_addr,
                status: outcome.status,
                sent,
                response_headers,
                environ: self.environ,
                peer: self.peer,
                status_line: self.status_line,
                environ_obj: self.environ_obj,
            }));
        }
        outcome
    }
}

/// Runs the request cycle for `req`, giving its connection back with the response.
pub fn handle<T: Io + 'static>(
    py: Python<'_>,
    ctx: &AppContext,
    req: Request<T>,
) -> Outcome<T, Paused, AccessData> {
    // The cycle lends the connection to the input stream and the response; this reference
    // comes back with the answer.
    let transport = Arc::clone(&req.transport);
    let response = match hooks::request_hooks(py) {
        None => cycle(py, ctx, req, None),
        Some(hooks) => with_hooks(py, ctx, req, hooks),
    };
    Outcome {
        transport,
        response,
    }
}

/// The request cycle between `pre_request(worker, req)` and
/// `post_request(worker, req, environ, resp)`, as Gunicorn's workers run it.
fn with_hooks<T: Io + 'static>(
    py: Python<'_>,
    ctx: &AppContext,
    req: Request<T>,
    hooks: &RequestHooks,
) -> Response {
    match hooks.pre_request(py, &req.head, req.conn.peer.socket_addr()) {
        Ok(hook_req) => cycle(py, ctx, req, Some((hook_req, Capture::default()))),
        Err(hook_req) => {
            let err = HttpError::internal(String::new());
            hooks.post_request(py, &hook_req, None, || None, err.status);
            Response::refuse(&err, Some(req.body))
        }
    }
}

fn cycle<T: Io + 'static>(
    py: Python<'_>,
    ctx: &AppContext,
    req: Request<T>,
    hook: Option<(Py<PyAny>, Capture)>,
) -> Response {
    let Request {
        head,
        body,
        conn,
        transport,
        keep_alive,
        closing,
        messages,
    } = req;
    let io: Arc<dyn Io> = transport;
    let mut tail = Tail {
        remote_addr: ctx.access.is_some().then(|| conn.remote_addr()),
        environ: Vec::new(),
        hook,
        head,
        peer: conn.peer.socket_addr(),
        environ_obj: None,
        status_line: None,
    };
    let facts = RequestFacts {
        version: tail.head.version,
        is_head: &*tail.head.method == "HEAD",
        keep_alive,
        closing,
    };
    let input = match Bound::new(py, InputStream::new(body, io.clone())) {
        Ok(input) => input,
        Err(e) => {
            log_exception(py, "Cannot create wsgi.input", &e);
            let refused = Response::refuse(&HttpError::internal(String::new()), None);
            return tail.finish(py, refused, 0, Vec::new());
        }
    };
    let environ = match ctx
        .environ
        .build(py, &tail.head, &conn, input.clone().into_any())
    {
        Ok(environ) => environ,
        Err(err) => {
            if err.status >= 500 {
                log::error(format_args!(
                    "Error handling request {}: {}",
                    uri(&tail.head),
                    err.message
                ));
            } else {
                log_invalid_request(tail.peer, &err);
            }
            let refused = Response::refuse(&err, take_body(&input));
            return tail.finish(py, refused, 0, Vec::new());
        }
    };
    if ctx.keep_environ {
        tail.environ_obj = Some(environ.clone().into_any().unbind());
    }
    if let Some(format) = &ctx.access {
        for key in format.environ_keys() {
            if let Ok(Some(value)) = environ
                .get_item(key.to_ascii_uppercase())
                .or_else(|_| environ.get_item(key))
            {
                let value = value.str().map(|s| s.to_string()).unwrap_or_default();
                tail.environ.push((key.clone(), value));
            }
        }
    }
    let mut state = ResponseState::bounded(
        facts,
        io,
        ctx.write_timeout,
        ctx.output_bound,
        ctx.pause_output,
    );
    state.messages = messages;
    // The access log and `post_request` read the response headers after the response.
    state.keep_headers = tail.remote_addr.is_some() || tail.hook.is_some();
    let responder = match Bound::new(py, StartResponse { state }) {
        Ok(r) => r,
        Err(e) => {
            log_exception(py, "Cannot create start_response", &e);
            let refused = Response::refuse(&HttpError::internal(String::new()), take_body(&input));
            return tail.finish(py, refused, 0, Vec::new());
        }
    };
    if let Some((_, capture)) = &mut tail.hook {
        capture.environ = Some(environ.clone().into_any().unbind());
        capture.responder = Some(responder.clone().unbind());
    }

    // Until the body's first bytes, which a paused response is past.
    let hints = HintsTarget::set(&responder);
    let result = ctx.app.bind(py).call1((environ, &responder));
    let failure = match result {
        Ok(iterable) => match send_body(py, &responder, &iterable) {
            Ok(Some(iter)) => return pause(&responder, iter, iterable, input, tail),
            sent => {
                let closed = close_iterable(&iterable);
                sent.err().or(closed.err())
            }
        },
        Err(e) => Some(e),
    };
    drop(hints);
    conclude(py, tail, &input, &responder, failure)
}

/// Goes on with a paused response after its queued output was written.
pub fn resume(py: Python<'_>, paused: Paused) -> Response {
    let Paused {
        iter,
        iterable,
        responder,
        input,
        tail,
    } = paused;
    let responder = responder.into_bound(py);
    let iterable = iterable.into_bound(py);
    let iter = iter.into_bound(py);
    let sent = match pump(py, &responder, &iter) {
        Ok(true) => return pause(&responder, iter, iterable, input.into_bound(py), tail),
        Ok(false) => Ok(()),
        Err(e) => Err(e),
    };
    let closed = close_iterable(&iterable);
    let failure = sent.err().or(closed.err());
    conclude(py, tail, &input.into_bound(py), &responder, failure)
}

/// Hands the queued output to the event loop, keeping the iterator for [`resume`].
fn pause(
    responder: &Bound<'_, StartResponse>,
    iter: Bound<'_, PyIterator>,
    iterable: Bound<'_, PyAny>,
    input: Bound<'_, InputStream>,
    tail: Tail,
) -> Response {
    let mut guard = responder.borrow_mut();
    let out = std::mem::take(&mut guard.state.out);
    let mut outcome = Response::ended(out, None, guard.state.status_code);
    outcome.paused = Some(Box::new(Paused {
        iter: iter.unbind(),
        iterable: iterable.unbind(),
        responder: responder.clone().unbind(),
        input: input.unbind(),
        tail,
    }));
    outcome
}

/// The end of the request cycle once the body iterator is exhausted (or failed).
fn conclude(
    py: Python<'_>,
    mut tail: Tail,
    input: &Bound<'_, InputStream>,
    responder: &Bound<'_, StartResponse>,
    failure: Option<PyErr>,
) -> Response {
    let outcome = settle(py, &tail, input, responder, failure);
    let state = &responder.borrow().state;
    let headers = if tail.remote_addr.is_some() {
        state.headers.clone()
    } else {
        Vec::new()
    };
    if tail.environ_obj.is_some() {
        tail.status_line = state.status.clone();
    }
    tail.finish(py, outcome, state.sent, headers)
}

/// The response's final framing, or the error answer when the application failed.
fn settle(
    py: Python<'_>,
    tail: &Tail,
    input: &Bound<'_, InputStream>,
    responder: &Bound<'_, StartResponse>,
    failure: Option<PyErr>,
) -> Response {
    let body = take_body(input);
    let mut guard = responder.borrow_mut();
    let state = &mut guard.state;
    if let Some(err) = failure {
        if state.broken.is_some() {
            // The client went away; nothing left to answer.
            return Response::ended(OutQueue::new(), body, state.status_code);
        }
        let body_error = body.as_ref().and_then(|b| b.error.as_deref().cloned());
        if !state.headers_sent {
            return match body_error {
                Some(http_err) => {
                    // The body was malformed (the application's read raised because of it).
                    log_invalid_request(tail.peer, &http_err);
                    Response::refuse(&http_err, body)
                }
                None => {
                    log_exception(
                        py,
                        &format!("Error handling request {}", uri(&tail.head)),
                        &err,
                    );
                    Response::refuse(&HttpError::internal(String::new()), body)
                }
            };
        }
        // Gunicorn names no request once the head is out.
        log_exception(py, "Error handling request", &err);
        // The head is out: all that is left is to end the connection where it stands.
        return Response::ended(std::mem::take(&mut state.out), body, state.status_code);
    }
    if state.status.is_none() {
        log::error(format_args!(
            "Error handling request {}: the application returned without calling start_response",
            uri(&tail.head)
        ));
        return Response::refuse(&HttpError::internal(String::new()), body);
    }
    if let Some(complaint) = state.finish() {
        log::warning(format_args!("{complaint} (request {})", uri(&tail.head)));
    }
    let body_ok = body
        .as_ref()
        .is_some_and(|b| b.error.is_none() && !b.truncated);
    let mut outcome = Response::ended(std::mem::take(&mut state.out), body, state.status_code);
    // What the head announced (`finish` sent it), not the stop flag read again: a stop that
    // began after a head said keep-alive must not close under the client's next request.
    outcome.keep_alive = !state.must_close && state.broken.is_none() && body_ok;
    outcome
}

fn take_body(input: &Bound<'_, InputStream>) -> Option<BodyState> {
    input
        .try_borrow_mut()
        .ok()
        .and_then(|mut i| i.take_state(input.py()))
}

/// Writes what the application returned, by the cheapest route its type allows.
/// `Some(iterator)`: the output bound was reached in a pausable response; go on later.
fn send_body<'py>(
    py: Python<'py>,
    responder: &Bound<'py, StartResponse>,
    iterable: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyIterator>>> {
    let mut guard = responder.borrow_mut();
    let state = &mut guard.state;
    if let Ok(list) = iterable.cast::<PyList>() {
        // A list's items are in memory already: queuing them (by reference when large)
        // adds little, so a list is never paused.
        drop(guard);
        for item in list.iter() {
            write_item(py, responder, &item)?;
            if responder.borrow().state.broken.is_some() {
                break;
            }
        }
        return Ok(None);
    }
    if let Ok(wrapper) = iterable.cast::<FileWrapper>() {
        if state.status.is_some() && send_file(state, &wrapper.borrow())? {
            return Ok(None);
        }
    }
    drop(guard);
    let iter = iterable.try_iter()?;
    Ok(pump(py, responder, &iter)?.then_some(iter))
}

/// Writes items from `iter` until it ends (false) or, in a pausable response, until the
/// unsent output reaches its bound (true).
fn pump(
    py: Python<'_>,
    responder: &Bound<'_, StartResponse>,
    iter: &Bound<'_, PyIterator>,
) -> PyResult<bool> {
    for item in iter.clone() {
        write_item(py, responder, &item?)?;
        let r = responder.borrow();
        if r.state.broken.is_some() {
            break;
        }
        if r.state.pausable && r.state.over_bound() {
            return Ok(true);
        }
    }
    Ok(false)
}

fn write_item(
    py: Python<'_>,
    responder: &Bound<'_, StartResponse>,
    item: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let data = item.cast::<PyBytes>().map_err(|_| {
        pyo3::exceptions::PyTypeError::new_err(format!(
            "the response body must yield bytes, not {}",
            item.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })?;
    let mut guard = responder.borrow_mut();
    if guard.state.status.is_none() {
        return Err(pyo3::exceptions::PyAssertionError::new_err(
            "the response body started before start_response() was called",
        ));
    }
    match guard.state.write_body(py, data) {
        // A client that went away ends the iteration quietly; close() still runs.
        Err(_) if guard.state.broken.is_some() => Ok(()),
        other => other,
    }
}

/// Queues a real file for `sendfile(2)`. Returns false when the object is not a plain file,
/// in which case the caller iterates it.
fn send_file(state: &mut ResponseState, wrapper: &FileWrapper) -> PyResult<bool> {
    let py_fd = Python::attach(|py| -> Option<RawFd> {
        wrapper
            .filelike
            .bind(py)
            .call_method0("fileno")
            .ok()?
            .extract::<RawFd>()
            .ok()
    });
    let Some(fd) = py_fd.filter(|&fd| fd >= 0) else {
        return Ok(false);
    };
    // SAFETY: the file object owns `fd` and keeps it open while this runs: the application
    // holds the wrapper, which holds the file, until the response ends.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    // The application closes its file after we return; the queue keeps its own descriptor
    // (which shares the file's offset, read below).
    let Ok(dup) = borrowed.try_clone_to_owned() else {
        return Ok(false);
    };
    let mut file = std::fs::File::from(dup);
    let Ok(meta) = file.metadata() else {
        return Ok(false);
    };
    if !meta.is_file() {
        return Ok(false);
    }
    let Ok(offset) = file.stream_position() else {
        return Ok(false);
    };
    let available = meta.len().saturating_sub(offset);
    let count = match state.length {
        Some(len) => len.min(available),
        None => available,
    };
    let dup = OwnedFd::from(file);
    state.send_headers();
    if state.framing == BodyFraming::None || count == 0 {
        return Ok(true);
    }
    if state.framing == BodyFraming::Chunked {
        state.out.push_slice(h1::ChunkSize::new(count).as_bytes());
        state.out.push_file(dup, offset, count);
        state.out.push_slice(h1::CHUNK_END);
    } else {
        state.out.push_file(dup, offset, count);
    }
    state.sent += count;
    Ok(true)
}

fn close_iterable(iterable: &Bound<'_, PyAny>) -> PyResult<()> {
    if iterable.cast::<PyList>().is_ok() {
        return Ok(());
    }
    match iterable.getattr(pyo3::intern!(iterable.py(), "close")) {
        Ok(close) => close.call0().map(|_| ()),
        Err(_) => Ok(()),
    }
}

/// The request line as it appears in log messages.
/// `GET /path?query`, as Gunicorn names a request in `Error handling request ...`.
fn uri(head: &RequestHead) -> String {
    format!("{} {}", head.method, String::from_utf8_lossy(head.target()))
}
