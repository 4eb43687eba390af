//! One ASGI WebSocket connection (spec 2.4): the `websocket` scope, `websocket.connect` first,
//! the application's accept or refusal, then its `receive` and `send` mapped onto the
//! WebSocket driver's [`Session`] while the driver serves the connection.
//!
//! Like the HTTP cycle, everything runs on the event loop's thread: `receive` and `send`
//! answer at once with a completed awaitable when no wait is needed, and otherwise hand back a
//! loop future that this connection's Rust task resolves.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};
use tokio::sync::Notify;

use super::cycle::{
    forget_settled_receive, post_request, pre_request, record, resolve, uri, waiting, AccessData,
    Context, Ready,
};
use super::response::{Facts, Response, Stage};
use crate::driver::body::BodyState;
use crate::driver::output::{write_all, OutQueue, Then};
use crate::driver::ws::{self, Incoming, Outgoing, Session, WsOptions};
use crate::driver::{self, log_invalid_request, Outcome, Request};
use crate::hooks::ResponseView;
use crate::http::head::{Framing, H1Framing, Upgrade};
use crate::http::ws::close as ws_close;
use crate::http::ws::handshake::{self, Accepted, Offer};
use crate::http::{date, response, HttpError, RequestHead};
use crate::log;
use crate::log::python::log_exception;
use crate::net::Transport;

/// How long the client has to answer our close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the request asks to upgrade the connection to WebSocket (RFC 6455 section 4.1).
pub fn is_upgrade(head: &RequestHead) -> bool {
    head.headers().iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("upgrade")
            && value
                .split(|&b| b == b',')
                .any(|v| v.trim_ascii().eq_ignore_ascii_case(b"websocket"))
    })
}

/// Where the opening handshake stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// `websocket.connect` not yet answered.
    Connecting,
    /// The application accepted: the `101` goes out, then the driver serves.
    Accepted,
    /// The application closed before accepting: `403`.
    Refused,
    /// The application started an HTTP response instead (the `websocket.http.response`
    /// extension): its body follows.
    Denying,
    /// That response is complete.
    Denied,
}

impl Phase {
    /// No WebSocket connection will follow: `receive` tells the application so.
    fn is_over(self) -> bool {
        matches!(self, Phase::Refused | Phase::Denied)
    }
}

struct State {
    phase: Phase,
    connect_given: bool,
    /// The subprotocol and header lines of `websocket.accept`.
    accept: Option<(Option<String>, Vec<u8>)>,
    /// The application's end of the connection, once accepted; taken when the application
    /// ends, which tells the driver (it closes with 1011 unless the application closed).
    session: Option<Rc<Session>>,
    receiving: Option<Py<PyAny>>,
    sending: Option<Py<PyAny>>,
    app_done: bool,
    failure: Option<PyErr>,
    /// What the request's HTTP/1 response needs to know of it, for a denial response.
    facts: Facts,
    /// The denial response, from its `websocket.http.response.start`.
    denial: Option<Response>,
    /// Something reads the denial response's headers afterwards (hooks, the access log).
    keep_headers: bool,
    /// The denial response could not be written: the client left.
    gone: bool,
}

struct Exchange {
    state: RefCell<State>,
    wake: Notify,
}

fn event<'py>(py: Python<'py>, kind: &str) -> PyResult<Bound<'py, PyDict>> {
    let event = PyDict::new(py);
    event.set_item(pyo3::intern!(py, "type"), kind)?;
    Ok(event)
}

/// The ASGI event for what the driver gave.
fn incoming_event(py: Python<'_>, message: Incoming) -> PyResult<Py<PyAny>> {
    let ev = match message {
        Incoming::Text(text) => {
            let ev = event(py, "websocket.receive")?;
            ev.set_item(pyo3::intern!(py, "text"), text)?;
            ev
        }
        Incoming::Binary(data) => {
            let ev = event(py, "websocket.receive")?;
            ev.set_item(pyo3::intern!(py, "bytes"), PyBytes::new(py, &data))?;
            ev
        }
        Incoming::Closed { code, reason } => disconnect(py, code, &reason)?,
    };
    Ok(ev.into_any().unbind())
}

fn disconnect<'py>(py: Python<'py>, code: u16, reason: &str) -> PyResult<Bound<'py, PyDict>> {
    let ev = event(py, "websocket.disconnect")?;
    ev.set_item(pyo3::intern!(py, "code"), code)?;
    ev.set_item(pyo3::intern!(py, "reason"), reason)?;
    Ok(ev)
}

/// The `receive` callable of one WebSocket connection.
#[pyclass(unsendable, name = "WebSocketReceive", module = "ferrocorn._ferrocorn")]
pub struct WsReceiver {
    ex: Rc<Exchange>,
    ctx: Arc<Context>,
}

#[pymethods]
impl WsReceiver {
    fn __call__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut st = self.ex.state.borrow_mut();
        forget_settled_receive(py, &mut st.receiving)?;
        if !st.connect_given {
            st.connect_given = true;
            let ev = event(py, "websocket.connect")?;
            return Ready::wrap(py, Some(ev.into_any().unbind()));
        }
        match st.phase {
            phase if phase.is_over() => {
                let ev = disconnect(py, ws_close::ABNORMAL, "")?;
                return Ready::wrap(py, Some(ev.into_any().unbind()));
            }
            Phase::Accepted => {
                if let Some(message) = st.session.as_ref().and_then(|s| s.try_receive()) {
                    return Ready::wrap(py, Some(incoming_event(py, message)?));
                }
            }
            _ => {}
        }
        let future = self.ctx.create_future().call0(py)?;
        st.receiving = Some(future.clone_ref(py));
        self.ex.wake.notify_one();
        Ok(future)
    }
}

/// The `send` callable of one WebSocket connection.
#[pyclass(unsendable, name = "WebSocketSend", module = "ferrocorn._ferrocorn")]
pub struct WsSender {
    ex: Rc<Exchange>,
    ctx: Arc<Context>,
}

/// `message[key]` as a string, when it is there and not None.
fn opt_str(message: &Bound<'_, PyDict>, key: &str) -> PyResult<Option<String>> {
    match message.get_item(key)? {
        Some(v) if !v.is_none() => Ok(Some(v.extract()?)),
        _ => Ok(None),
    }
}

/// The header lines of `websocket.accept`'s `headers`.
fn accept_lines(headers: Option<Bound<'_, PyAny>>) -> PyResult<Vec<u8>> {
    let mut lines = Vec::new();
    let Some(headers) = headers.filter(|h| !h.is_none()) else {
        return Ok(lines);
    };
    for pair in headers.try_iter()? {
        let (name, value): (Vec<u8>, Vec<u8>) = pair?.extract()?;
        let name = String::from_utf8(name)
            .ok()
            .filter(|n| !n.is_empty() && n.bytes().all(crate::http::head::is_token));
        let value = String::from_utf8(value)
            .ok()
            .filter(|v| !v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0));
        match (name, value) {
            (Some(name), Some(value)) => response::push_header_line(&mut lines, &name, &value),
            _ => {
                return Err(PyRuntimeError::new_err(
                    "invalid header in websocket.accept",
                ))
            }
        }
    }
    Ok(lines)
}

#[pymethods]
impl WsSender {
    fn __call__(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let message = message
            .cast::<PyDict>()
            .map_err(|_| PyTypeError::new_err("an ASGI message must be a dict"))?;
        let kind: String = match message.get_item(pyo3::intern!(py, "type"))? {
            Some(kind) => kind.extract()?,
            None => return Err(PyTypeError::new_err("an ASGI message needs a 'type'")),
        };
        let mut st = self.ex.state.borrow_mut();
        let outgoing = match (kind.as_str(), st.phase) {
            ("websocket.accept", Phase::Connecting) => {
                let sub = opt_str(message, "subprotocol")?;
                let lines = accept_lines(message.get_item("headers")?)?;
                st.accept = Some((sub, lines));
                st.phase = Phase::Accepted;
                self.ex.wake.notify_one();
                return Ok(self.ctx.done(py));
            }
            ("websocket.close", Phase::Connecting) => {
                st.phase = Phase::Refused;
                self.ex.wake.notify_one();
                return Ok(self.ctx.done(py));
            }
            ("websocket.http.response.start", Phase::Connecting) => {
                let status = match message.get_item(pyo3::intern!(py, "status"))? {
                    Some(status) => status.extract::<u16>()?,
                    None => {
                        return Err(PyTypeError::new_err(
                            "websocket.http.response.start needs a 'status'",
                        ))
                    }
                };
                // A final answer: no interim one, and no upgrade without an accept.
                if !(200..=599).contains(&status) {
                    return Err(PyValueError::new_err(format!(
                        "invalid status {status} for a WebSocket denial response"
                    )));
                }
                let mut response = Response::new(st.facts, st.keep_headers);
                response.start(status, message.get_item("headers")?.as_ref())?;
                st.denial = Some(response);
                st.phase = Phase::Denying;
                self.ex.wake.notify_one();
                return Ok(self.ctx.done(py));
            }
            ("websocket.http.response.body", Phase::Denying) => {
                return self.deny_body(py, &mut st, message);
            }
            (other, Phase::Connecting) => {
                return Err(PyRuntimeError::new_err(format!(
                    "Expected ASGI message 'websocket.accept', 'websocket.close' or \
                     'websocket.http.response.start', but got '{other}'."
                )))
            }
            (other, Phase::Denying) => {
                return Err(PyRuntimeError::new_err(format!(
                    "Expected ASGI message 'websocket.http.response.body', but got '{other}'."
                )))
            }
            (other, Phase::Refused | Phase::Denied) => {
                return Err(PyRuntimeError::new_err(format!(
                    "Unexpected ASGI message '{other}', after sending 'websocket.close' or \
                     response already completed."
                )))
            }
            ("websocket.send", Phase::Accepted) => {
                let text = opt_str(message, "text")?;
                match (text, message.get_item("bytes")?) {
                    (Some(text), _) => Outgoing::Text(text),
                    (None, Some(data)) if !data.is_none() => Outgoing::Binary(
                        data.cast::<PyBytes>()
                            .map_err(|_| {
                                PyTypeError::new_err("'bytes' of websocket.send must be bytes")
                            })?
                            .as_bytes()
                            .to_vec(),
                    ),
                    _ => {
                        return Err(PyTypeError::new_err(
                            "websocket.send needs 'bytes' or 'text'",
                        ))
                    }
                }
            }
            ("websocket.close", Phase::Accepted) => {
                let code = match message.get_item("code")? {
                    Some(code) if !code.is_none() => code.extract::<u16>()?,
                    _ => ws_close::NORMAL,
                };
                if !ws_close::is_valid(code) {
                    return Err(PyRuntimeError::new_err(format!(
                        "invalid WebSocket close code {code}"
                    )));
                }
                let reason = opt_str(message, "reason")?.unwrap_or_default();
                Outgoing::Close { code, reason }
            }
            (other, _) => {
                return Err(PyRuntimeError::new_err(format!(
                    "Unexpected ASGI message '{other}' sent."
                )))
            }
        };
        let Some(session) = st.session.clone() else {
            return Err(PyOSError::new_err("the WebSocket connection is closed"));
        };
        match session.try_send(outgoing) {
            Ok(true) => Ok(self.ctx.done(py)),
            Ok(false) => {
                let future = self.ctx.create_future().call0(py)?;
                st.sending = Some(future.clone_ref(py));
                self.ex.wake.notify_one();
                Ok(future)
            }
            Err(ws::Closed) => Err(PyOSError::new_err("the WebSocket connection is closed")),
        }
    }
}

impl WsSender {
    /// `websocket.http.response.body`: queued for the connection's task, which writes it;
    /// past the output bound, the application waits until it is written.
    fn deny_body(
        &self,
        py: Python<'_>,
        st: &mut State,
        message: &Bound<'_, PyDict>,
    ) -> PyResult<Py<PyAny>> {
        let body = match message.get_item(pyo3::intern!(py, "body"))? {
            Some(b) => Some(b.cast_into::<PyBytes>().map_err(|_| {
                PyTypeError::new_err("the 'body' of websocket.http.response.body must be bytes")
            })?),
            None => None,
        };
        let more = match message.get_item(pyo3::intern!(py, "more_body"))? {
            Some(more) => more.is_truthy()?,
            None => false,
        };
        if st.gone {
            // The client left: nothing is written any more, quietly.
            return Ok(self.ctx.done(py));
        }
        let Some(response) = st.denial.as_mut() else {
            return Err(PyRuntimeError::new_err(
                "no WebSocket denial response started",
            ));
        };
        response.body(body.as_ref(), more)?;
        if !more {
            st.phase = Phase::Denied;
        }
        self.ex.wake.notify_one();
        if more && response.out.pending() >= self.ctx.options.output_bound {
            let future = self.ctx.create_future().call0(py)?;
            st.sending = Some(future.clone_ref(py));
            return Ok(future);
        }
        Ok(self.ctx.done(py))
    }
}

/// Called by the loop when the application's task ends.
#[pyclass(unsendable, name = "WebSocketDone", module = "ferrocorn._ferrocorn")]
pub struct WsDone {
    ex: Rc<Exchange>,
}

#[pymethods]
impl WsDone {
    fn __call__(&self, task: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut st = self.ex.state.borrow_mut();
        st.app_done = true;
        if let Some(err) = super::cycle::task_failure(task)? {
            st.failure = Some(err);
        }
        self.ex.wake.notify_one();
        Ok(())
    }
}

/// How a WebSocket request ended, for its hooks and its access log line.
struct Ended {
    /// An answer still to write (the `403`, a `500`).
    out: OutQueue,
    status: u16,
    /// Bytes written after the response's head: the WebSocket frames, or the body of a
    /// denial response.
    sent: u64,
    /// The status line and headers of a response the application made.
    made: Option<(String, Vec<(String, String)>)>,
}

impl Ended {
    /// An answer of the server's (`bytes`), `status` and `reason` its status line; its body
    /// is not counted as sent, as for the HTTP cycle's error answers.
    fn answer(bytes: &[u8], status: u16, reason: &str) -> Ended {
        let mut out = OutQueue::new();
        out.push_slice(bytes);
        Ended {
            out,
            status,
            sent: 0,
            made: Some((format!("{status} {reason}"), Vec::new())),
        }
    }

    fn internal_error() -> Ended {
        let err = HttpError::internal(String::new());
        Ended::answer(&response::error_answer(&err), err.status, err.reason)
    }
}

/// Serves a request that asks for a WebSocket upgrade, until the connection ends. The
/// request hooks run around the whole connection, and its access log line (the time it
/// took, the bytes sent) covers it too.
pub async fn handle<T: Transport, P>(
    ctx: &Arc<Context>,
    req: Request<T>,
    reports: bool,
) -> Outcome<T, P, AccessData> {
    let Request {
        head,
        body,
        conn,
        transport,
        keep_alive,
        ..
    } = req;
    // The parser's framing is not in the request: what the handshake needs of it is known.
    let framing = H1Framing {
        body: if body.is_finished() && body.available() == 0 {
            Framing::None
        } else {
            Framing::Chunked
        },
        keep_alive,
        expect_continue: false,
        upgrade: Some(Upgrade::WebSocket),
    };
    let (ended, hook) = match handshake::check(&head, &framing) {
        Ok(offer) => match Python::attach(|py| pre_request(py, &head, &conn)) {
            Ok(hook) => {
                let keep_headers = (ctx.options.keep_headers && reports) || hook.is_some();
                let io = &*transport;
                let ended = connect(ctx, io, &head, &conn, body, offer, keep_headers).await;
                (ended, hook)
            }
            Err(()) => (Ended::internal_error(), None),
        },
        Err(refusal) => {
            let err = HttpError {
                status: refusal.status,
                reason: refusal.reason,
                message: refusal.message.clone(),
            };
            log_invalid_request(conn.peer.socket_addr(), &err);
            let ended = Ended::answer(&refusal.answer(), refusal.status, refusal.reason);
            (ended, None)
        }
    };
    let Ended {
        out,
        status,
        sent,
        made,
    } = ended;
    if let Some(req) = &hook {
        let view = made.as_ref().map(|(line, headers)| ResponseView {
            status: Some(line.clone()),
            status_code: status,
            headers: headers.clone(),
            sent,
            headers_sent: true,
        });
        Python::attach(|py| post_request(py, req, status, view));
    }
    let mut response = driver::Response::ended(out, None, status);
    if reports {
        let (line, headers) = made.map_or((None, Vec::new()), |(l, h)| (Some(l), h));
        response.record = Some(record(head, &conn, status, sent, headers, line));
    }
    Outcome {
        transport,
        response,
    }
}

/// Runs the application on a checked handshake: its accept, refusal or denial response,
/// then the connection, until both end.
async fn connect<T: Transport>(
    ctx: &Arc<Context>,
    io: &T,
    head: &RequestHead,
    conn: &driver::ConnInfo,
    mut body: BodyState,
    offer: Offer,
    keep_headers: bool,
) -> Ended {
    let options = WsOptions {
        max_message: ctx.options.ws_max_message,
        output_bound: ctx.options.output_bound as usize,
        close_timeout: CLOSE_TIMEOUT,
        ping_interval: ctx.options.ws_ping_interval,
        ping_timeout: ctx.options.ws_ping_timeout,
        write_timeout: ctx.options.write_timeout,
    };
    // Made now: the application may send right after its accept, before the `101` is out.
    let (session, link) = ws::pair(options.output_bound);
    let session = Rc::new(session);
    let ex = Rc::new(Exchange {
        state: RefCell::new(State {
            phase: Phase::Connecting,
            connect_given: false,
            accept: None,
            session: Some(Rc::clone(&session)),
            receiving: None,
            sending: None,
            app_done: false,
            failure: None,
            // The connection ends after a denial response, as after the `403`.
            facts: Facts {
                version: head.version,
                is_head: false,
                keep_alive: false,
                closing: true,
            },
            denial: None,
            keep_headers,
            gone: false,
        }),
        wake: Notify::new(),
    });
    let task = match Python::attach(|py| start(py, ctx, &ex, head, conn, &offer.subprotocols)) {
        Ok(task) => task,
        Err(err) => return Ended::answer(&response::error_answer(&err), err.status, err.reason),
    };
    // Until the application accepts, refuses or answers.
    loop {
        let woken = ex.wake.notified();
        let decided = {
            let st = ex.state.borrow();
            st.phase != Phase::Connecting || st.app_done
        };
        if decided {
            break;
        }
        woken.await;
    }
    let (phase, accept) = {
        let mut st = ex.state.borrow_mut();
        (st.phase, st.accept.take())
    };
    let (subprotocol, lines) = match (phase, accept) {
        (Phase::Accepted, Some(accept)) => accept,
        (Phase::Denying | Phase::Denied, _) => {
            let response = deny(ctx, &ex, io, &task, head).await;
            return Ended {
                out: OutQueue::new(),
                status: response.status,
                sent: response.sent,
                made: Some((response.status_line().to_owned(), response.headers)),
            };
        }
        (Phase::Refused, _) => {
            finish(&ex).await;
            return Ended::answer(&handshake::forbidden(), 403, "Forbidden");
        }
        _ => {
            let failure = ex.state.borrow_mut().failure.take();
            log_ended_early(head, failure, "accepting or closing the WebSocket");
            return Ended::internal_error();
        }
    };
    let mut hello = Vec::new();
    let fields = Accepted {
        accept: &offer.accept,
        subprotocol: subprotocol.as_deref(),
        deflate: offer.deflate.as_ref(),
        lines: &lines,
    };
    if let Err(e) = handshake::push_accept(&mut hello, &fields, &date::now()) {
        log::error(format_args!(
            "Invalid websocket.accept for {}: {e:?}",
            uri(head)
        ));
        cancel(&task);
        return Ended::internal_error();
    }
    let mut out = OutQueue::new();
    out.push_slice(&hello);
    let mut sent = 0;
    if write_all(io, &mut out, Then::Continue, ctx.options.write_timeout)
        .await
        .is_ok()
    {
        let buffered = body.raw.split_off(body.raw_pos.min(body.raw.len()));
        let serve = ws::serve(
            io,
            buffered,
            offer.deflate.as_ref(),
            &options,
            link,
            ws::going_away(),
        );
        (sent, ()) = tokio::join!(serve, bridge(&ex, session, ctx.options.grace, &task));
    } else {
        drop(link);
        drop(session);
        finish(&ex).await;
    }
    if let Some(err) = ex.state.borrow_mut().failure.take() {
        Python::attach(|py| {
            log_exception(
                py,
                &format!("Exception in ASGI application {}", uri(head)),
                &err,
            )
        });
    }
    Ended {
        out: OutQueue::new(),
        status: 101,
        sent,
        made: Some(("101 Switching Protocols".to_owned(), Vec::new())),
    }
}

fn log_ended_early(head: &RequestHead, failure: Option<PyErr>, what: &str) {
    match failure {
        Some(err) => Python::attach(|py| {
            log_exception(
                py,
                &format!("Exception in ASGI application {}", uri(head)),
                &err,
            )
        }),
        None => log::error(format_args!(
            "ASGI callable returned without {what} (request {})",
            uri(head)
        )),
    }
}

fn cancel(task: &Py<PyAny>) {
    Python::attach(|py| {
        if let Err(e) = task.bind(py).call_method0("cancel") {
            log_exception(py, "cannot cancel the ASGI application", &e);
        }
    });
}

/// Writes the application's denial response as it comes, until its task ends (cancelled
/// `grace` after the client left); a task that failed before the response's head went out
/// gets a 500 instead. Gives back the response, for the access log.
async fn deny<T: Transport>(
    ctx: &Context,
    ex: &Exchange,
    io: &T,
    task: &Py<PyAny>,
    head: &RequestHead,
) -> Response {
    let mut grace: Option<tokio::time::Instant> = None;
    loop {
        let woken = ex.wake.notified();
        let out = {
            let mut st = ex.state.borrow_mut();
            let st = &mut *st;
            match st.denial.as_mut() {
                Some(r) if !r.out.is_empty() && !st.gone => Some(std::mem::take(&mut r.out)),
                _ => None,
            }
        };
        if let Some(mut out) = out {
            if write_all(io, &mut out, Then::Continue, ctx.options.write_timeout)
                .await
                .is_err()
            {
                ex.state.borrow_mut().gone = true;
            }
            continue;
        }
        let done = Python::attach(|py| {
            let mut st = ex.state.borrow_mut();
            if let Some(future) = st.sending.take() {
                resolve(py, future, py.None());
            }
            if st.phase == Phase::Denied || st.gone {
                if let Some(future) = st.receiving.take() {
                    if let Ok(ev) = disconnect(py, ws_close::ABNORMAL, "") {
                        resolve(py, future, ev.into_any().unbind());
                    }
                }
            }
            st.app_done
        });
        if done {
            break;
        }
        if ex.state.borrow().gone && grace.is_none() {
            grace = Some(tokio::time::Instant::now() + ctx.options.grace);
        }
        let sleep_to = grace.unwrap_or_else(tokio::time::Instant::now);
        tokio::select! {
            biased;
            _ = woken => {}
            _ = tokio::time::sleep_until(sleep_to), if grace.is_some() => {
                cancel(task);
                grace = Some(tokio::time::Instant::now() + Duration::from_secs(3600));
            }
        }
    }
    let (denial, failure, gone) = {
        let mut st = ex.state.borrow_mut();
        st.receiving = None;
        st.sending = None;
        let denial = st.denial.take().ok_or(st.facts);
        (denial, st.failure.take(), st.gone)
    };
    let mut response = match denial {
        Ok(response) => response,
        Err(facts) => return Response::new(facts, false),
    };
    let complete = response.stage == Stage::Complete;
    if failure.is_some() || !complete {
        log_ended_early(head, failure, "completing its WebSocket denial response");
        if !response.head_sent() && !gone {
            // Nothing of it went out: the error answer replaces it.
            let err = HttpError::internal(String::new());
            let mut out = OutQueue::new();
            out.push_slice(&response::error_answer(&err));
            let _ = write_all(io, &mut out, Then::Continue, ctx.options.write_timeout).await;
            response.status = err.status;
        }
    }
    response
}

/// Lets the application's task run to its end, its `receive` told the connection is gone.
async fn finish(ex: &Exchange) {
    ex.state.borrow_mut().phase = Phase::Refused;
    loop {
        let woken = ex.wake.notified();
        let done = Python::attach(|py| {
            let mut st = ex.state.borrow_mut();
            if let Some(future) = st.receiving.take() {
                if let Ok(ev) = disconnect(py, ws_close::ABNORMAL, "") {
                    resolve(py, future, ev.into_any().unbind());
                }
            }
            if let Some(future) = st.sending.take() {
                resolve(py, future, py.None());
            }
            st.app_done
        });
        if done {
            return;
        }
        woken.await;
    }
}

/// Serves the application's waiting `receive` and `send` from the session until its task
/// ends; once the connection is over, it has `grace` to end before it is cancelled.
async fn bridge(ex: &Exchange, session: Rc<Session>, grace: Duration, task: &Py<PyAny>) {
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let woken = ex.wake.notified();
        let (receiving, sending, done) = Python::attach(|py| {
            let mut st = ex.state.borrow_mut();
            if st.receiving.as_ref().is_some_and(|f| !waiting(f.bind(py))) {
                st.receiving = None;
            }
            if st.sending.as_ref().is_some_and(|f| !waiting(f.bind(py))) {
                st.sending = None;
            }
            (st.receiving.is_some(), st.sending.is_some(), st.app_done)
        });
        if done {
            // The driver closes with 1011 unless the application closed.
            let mut st = ex.state.borrow_mut();
            st.session = None;
            st.receiving = None;
            st.sending = None;
            return;
        }
        if deadline.is_none() && session.closed().is_some() {
            deadline = Some(tokio::time::Instant::now() + grace);
        }
        let sleep_to = deadline.unwrap_or_else(tokio::time::Instant::now);
        tokio::select! {
            biased;
            _ = woken => {}
            message = session.receive(), if receiving => Python::attach(|py| {
                let future = ex.state.borrow_mut().receiving.take();
                match (future, incoming_event(py, message)) {
                    (Some(future), Ok(ev)) => resolve(py, future, ev),
                    (_, Err(e)) => log_exception(py, "cannot make an ASGI event", &e),
                    _ => {}
                }
            }),
            _ = session.room(), if sending => Python::attach(|py| {
                if let Some(future) = ex.state.borrow_mut().sending.take() {
                    resolve(py, future, py.None());
                }
            }),
            _ = tokio::time::sleep_until(sleep_to), if deadline.is_some() => {
                cancel(task);
                deadline = Some(tokio::time::Instant::now() + Duration::from_secs(3600));
            }
        }
    }
}

/// Builds the `websocket` scope and starts the application's task.
fn start(
    py: Python<'_>,
    ctx: &Arc<Context>,
    ex: &Rc<Exchange>,
    head: &RequestHead,
    conn: &driver::ConnInfo,
    subprotocols: &[String],
) -> Result<Py<PyAny>, HttpError> {
    let scope = ctx.scope.build(py, head, conn)?;
    let started = || -> PyResult<Py<PyAny>> {
        scope.set_item("type", "websocket")?;
        scope.del_item("method")?;
        let https = scope
            .get_item("scheme")?
            .is_some_and(|s| s.cast::<PyString>().is_ok_and(|s| s == "https"));
        scope.set_item("scheme", if https { "wss" } else { "ws" })?;
        scope.set_item("subprotocols", PyList::new(py, subprotocols)?)?;
        let extensions = PyDict::new(py);
        extensions.set_item("websocket.http.response", PyDict::new(py))?;
        scope.set_item("extensions", extensions)?;
        let receive = Py::new(
            py,
            WsReceiver {
                ex: Rc::clone(ex),
                ctx: Arc::clone(ctx),
            },
        )?;
        let send = Py::new(
            py,
            WsSender {
                ex: Rc::clone(ex),
                ctx: Arc::clone(ctx),
            },
        )?;
        let coro = ctx.app.bind(py).call1((scope, receive, send))?;
        let task = ctx.start_task(py, coro)?;
        task.call_method1(
            "add_done_callback",
            (Py::new(py, WsDone { ex: Rc::clone(ex) })?,),
        )?;
        Ok(task.unbind())
    };
    started().map_err(|e| {
        log_exception(
            py,
            &format!("Exception in ASGI application {}", uri(head)),
            &e,
        );
        HttpError::internal(String::new())
    })
}
