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

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};
use tokio::sync::Notify;

use super::cycle::{record, resolve, uri, waiting, AccessData, Context, Ready};
use crate::driver::output::{write_all, OutQueue, Then};
use crate::driver::ws::{self, Incoming, Outgoing, Session, WsOptions};
use crate::driver::{self, log_invalid_request, Outcome, Request};
use crate::http::head::{Framing, H1Framing, Upgrade};
use crate::http::ws::close as ws_close;
use crate::http::ws::handshake::{self, Accepted};
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
        if let Some(earlier) = &st.receiving {
            if waiting(earlier.bind(py)) {
                return Err(PyRuntimeError::new_err(
                    "receive() called while another receive() is waiting",
                ));
            }
            st.receiving = None;
        }
        if !st.connect_given {
            st.connect_given = true;
            let ev = event(py, "websocket.connect")?;
            return Ready::wrap(py, Some(ev.into_any().unbind()));
        }
        match st.phase {
            Phase::Refused => {
                let ev = disconnect(py, ws_close::ABNORMAL, "")?;
                return Ready::wrap(py, Some(ev.into_any().unbind()));
            }
            Phase::Accepted => {
                if let Some(message) = st.session.as_ref().and_then(|s| s.try_receive()) {
                    return Ready::wrap(py, Some(incoming_event(py, message)?));
                }
            }
            Phase::Connecting => {}
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

/// Serves a request that asks for a WebSocket upgrade, until the connection ends.
pub async fn handle<T: Transport, P>(
    ctx: &Arc<Context>,
    req: Request<T>,
    reports: bool,
) -> Outcome<T, P, AccessData> {
    let Request {
        head,
        mut body,
        conn,
        transport,
        keep_alive,
        ..
    } = req;
    let io = &*transport;
    let answer = |bytes: Vec<u8>, status: u16, head: RequestHead| {
        let mut out = OutQueue::new();
        out.push_slice(&bytes);
        let mut response = driver::Response::ended(out, None, status);
        if reports {
            response.record = Some(record(head, &conn, status, 0, Vec::new(), None));
        }
        response
    };
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
    let offer = match handshake::check(&head, &framing) {
        Ok(offer) => offer,
        Err(refusal) => {
            let err = HttpError {
                status: refusal.status,
                reason: refusal.reason,
                message: refusal.message.clone(),
            };
            log_invalid_request(conn.peer.socket_addr(), &err);
            let response = answer(refusal.answer(), refusal.status, head);
            return Outcome {
                transport,
                response,
            };
        }
    };
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
        }),
        wake: Notify::new(),
    });
    let task = match Python::attach(|py| start(py, ctx, &ex, &head, &conn, &offer.subprotocols)) {
        Ok(task) => task,
        Err(err) => {
            let response = answer(response::error_answer(&err), err.status, head);
            return Outcome {
                transport,
                response,
            };
        }
    };
    // Until the application accepts or refuses.
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
    let accepted = match (phase, accept) {
        (Phase::Accepted, Some(accept)) => accept,
        (Phase::Refused, _) => {
            finish(&ex).await;
            let response = answer(handshake::forbidden(), 403, head);
            return Outcome {
                transport,
                response,
            };
        }
        _ => {
            let failure = ex.state.borrow_mut().failure.take();
            log_ended_early(&head, failure);
            let err = HttpError::internal(String::new());
            let response = answer(response::error_answer(&err), 500, head);
            return Outcome {
                transport,
                response,
            };
        }
    };
    let (subprotocol, lines) = accepted;
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
            uri(&head)
        ));
        cancel(&task);
        let err = HttpError::internal(String::new());
        let response = answer(response::error_answer(&err), 500, head);
        return Outcome {
            transport,
            response,
        };
    }
    let mut out = OutQueue::new();
    out.push_slice(&hello);
    let sent = hello.len() as u64;
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
        tokio::join!(serve, bridge(&ex, session, ctx.options.grace, &task));
    } else {
        drop(link);
        drop(session);
        finish(&ex).await;
    }
    if let Some(err) = ex.state.borrow_mut().failure.take() {
        Python::attach(|py| {
            log_exception(
                py,
                &format!("Exception in ASGI application {}", uri(&head)),
                &err,
            )
        });
    }
    let mut response = driver::Response::ended(OutQueue::new(), None, 101);
    if reports {
        response.record = Some(record(head, &conn, 101, sent, Vec::new(), None));
    }
    Outcome {
        transport,
        response,
    }
}

fn log_ended_early(head: &RequestHead, failure: Option<PyErr>) {
    match failure {
        Some(err) => Python::attach(|py| {
            log_exception(
                py,
                &format!("Exception in ASGI application {}", uri(head)),
                &err,
            )
        }),
        None => log::error(format_args!(
            "ASGI callable returned without accepting or closing the WebSocket (request {})",
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
        let task = ctx.create_task().bind(py).call1((coro,))?;
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
