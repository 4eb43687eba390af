//! The response side of PEP 3333: `start_response`, the `write()` callable, and the framing of
//! the body on the wire (Content-Length, chunked, or close-delimited), decided like Gunicorn.

use std::borrow::Cow;
use std::cell::RefCell;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyAssertionError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};

use crate::driver::output::OutQueue;
use crate::driver::Messages;
use crate::http::date;
use crate::http::response::{self as h1, BodyFraming, H1Response, ResponseHead};
use crate::net::Io;

/// Headers a WSGI application must not set (PEP 3333: hop-by-hop).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
];

/// What the response needs to know about its request.
#[derive(Clone, Copy)]
pub struct RequestFacts {
    pub version: crate::http::head::Version,
    pub is_head: bool,
    /// The client allows the connection to stay open.
    pub keep_alive: bool,
    /// The worker is stopping or recycling: announce `Connection: close`.
    pub closing: bool,
}

pub struct ResponseState {
    pub facts: RequestFacts,
    pub status: Option<String>,
    pub status_code: u16,
    /// The application's headers as (name, value), kept only when something reads them after
    /// the response (the access log, `post_request`): see [`ResponseState::keep_headers`].
    pub headers: Vec<(String, String)>,
    /// The application's header lines, ready for the wire (`Name: value\r\n` each).
    rendered: Vec<u8>,
    /// Whether `headers` is filled.
    pub keep_headers: bool,
    pub headers_sent: bool,
    /// Content-Length given by the application.
    pub length: Option<u64>,
    /// How the body is delimited on the wire (none for HEAD, 1xx, 204 and 304 answers).
    pub framing: BodyFraming,
    /// Body bytes accepted so far (without chunk framing).
    pub sent: u64,
    /// Body bytes dropped because they went past the application's Content-Length.
    pub excess: u64,
    /// The connection ends after this response.
    pub must_close: bool,
    pub out: OutQueue,
    /// The connection, for a response that waits for the client while the application runs.
    pub io: Arc<dyn Io>,
    pub write_timeout: Duration,
    /// Writing to the client failed: it went away.
    pub broken: Option<io::Error>,
    /// Past this many unsent bytes, no more body is produced until the client has read.
    pub bound: u64,
    /// The request cycle pauses at the bound and lets the event loop write (the `sync`
    /// worker, where the event loop and the application share one thread) instead of
    /// writing with a blocking wait itself.
    pub pausable: bool,
    /// Where the heads go when the protocol frames them itself (HTTP/2); the body's bytes
    /// then go out unframed, the stream's end delimiting them.
    pub messages: Option<Arc<dyn Messages>>,
}

impl ResponseState {
    pub fn bounded(
        facts: RequestFacts,
        io: Arc<dyn Io>,
        write_timeout: Duration,
        bound: u64,
        pausable: bool,
    ) -> ResponseState {
        ResponseState {
            facts,
            status: None,
            status_code: 0,
            headers: Vec::new(),
            rendered: Vec::new(),
            keep_headers: false,
            headers_sent: false,
            length: None,
            framing: BodyFraming::Close,
            sent: 0,
            excess: 0,
            must_close: false,
            out: OutQueue::new(),
            io,
            write_timeout,
            broken: None,
            bound,
            pausable,
            messages: None,
        }
    }

    /// Whether the connection closes after this response (as announced in its head).
    pub fn will_close(&self) -> bool {
        self.must_close
            || !self.facts.keep_alive
            || self.facts.closing
            || crate::process::lifecycle::worker().is_stopping()
            || self.framing == BodyFraming::Close
    }

    fn start(
        &mut self,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        match exc_info {
            Some(info) if !info.is_none() => {
                if self.headers_sent {
                    let value = info.get_item(1)?;
                    return Err(PyErr::from_value(value));
                }
            }
            _ => {
                if self.status.is_some() {
                    return Err(PyAssertionError::new_err("Response headers already set!"));
                }
            }
        }
        let status = status
            .cast::<PyString>()
            .map_err(|_| {
                PyTypeError::new_err(format!(
                    "status {} is not a string",
                    status.repr().map(|r| r.to_string()).unwrap_or_default()
                ))
            })?
            .to_str()?
            .to_owned();
        let code = h1::parse_status(&status)
            .ok_or_else(|| PyValueError::new_err(format!("invalid status {status:?}")))?;

        let bodiless = h1::forbids_content_length(code);
        let mut parsed = Vec::new();
        let mut rendered = Vec::with_capacity(128);
        let mut length = None;
        for item in headers.try_iter()? {
            let item = item?;
            let pair = item.cast::<PyTuple>().map_err(|_| {
                PyTypeError::new_err(format!("header {item} is not a (name, value) tuple"))
            })?;
            if pair.len() != 2 {
                return Err(PyTypeError::new_err(format!(
                    "header {item} is not a (name, value) tuple"
                )));
            }
            let name = pair.get_item(0)?;
            let value = pair.get_item(1)?;
            let name = name
                .cast::<PyString>()
                .map_err(|_| PyTypeError::new_err(format!("header name {name} is not a string")))?
                .to_str()?;
            let value = value
                .cast::<PyString>()
                .map_err(|_| {
                    PyTypeError::new_err(format!(
                        "value of header {name:?} is not a string: {value}"
                    ))
                })?
                .to_str()?;
            let value = h1::checked_header(name, value).map_err(invalid_header)?;
            let is = |known: &str| name.eq_ignore_ascii_case(known);
            if let Some(hop) = HOP_BY_HOP.iter().find(|h| is(h)) {
                // PEP 3333 forbids them; the connection's framing is the server's. Like
                // Gunicorn, the header is not forwarded; the operator is told once.
                warn_hop_by_hop(hop);
                if *hop == "connection" && value.eq_ignore_ascii_case("close") {
                    self.must_close = true;
                }
                continue;
            }
            if is("server") || is("date") {
                // The server sets these itself.
                continue;
            }
            if is("content-length") {
                length = Some(value.parse::<u64>().map_err(|_| {
                    PyValueError::new_err(format!("invalid Content-Length {value:?}"))
                })?);
                if bodiless {
                    continue;
                }
            }
            h1::push_header_line(&mut rendered, name, value);
            if self.keep_headers {
                parsed.push((name.to_owned(), value.to_owned()));
            }
        }

        self.status_code = code;
        self.status = Some(status);
        if bodiless {
            length = None;
        }
        self.headers = parsed;
        self.rendered = rendered;
        self.length = length;
        self.framing = BodyFraming::choose(self.facts.version, self.facts.is_head, code, length);
        if self.messages.is_some() && self.framing == BodyFraming::Chunked {
            // The end of the stream delimits the body, as the close does on HTTP/1.0.
            self.framing = BodyFraming::Close;
        }
        Ok(())
    }

    /// Queues the status line and headers, once.
    pub fn send_headers(&mut self) {
        if self.headers_sent {
            return;
        }
        self.headers_sent = true;
        let head = match &self.status {
            Some(status) => ResponseHead {
                code: self.status_code,
                status,
                lines: &self.rendered,
            },
            None => ResponseHead {
                code: 500,
                status: "500 Internal Server Error",
                lines: &self.rendered,
            },
        };
        if let Some(messages) = &self.messages {
            messages.head(&head);
            return;
        }
        let close = self.will_close();
        let wire = H1Response {
            version: self.facts.version,
            close,
            body: self.framing,
        };
        let n = h1::push_head(self.out.tail_buf(), &head, &wire, &date::now());
        self.out.note_appended(n);
        if close {
            self.must_close = true;
        }
    }

    /// `wsgi.early_hints(headers)`: sends a `103 Early Hints` response with `headers` at once,
    /// as Gunicorn does. Nothing for an HTTP/1.0 client (no informational responses there) or
    /// once the head is queued (a 103 after it would land inside the response). The headers
    /// are checked as `start_response` checks them, all before any is sent.
    pub fn early_hints(&mut self, py: Python<'_>, headers: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.headers_sent || !self.facts.version.is_1_1_or_later() {
            return Ok(());
        }
        let lines = field_lines(headers, "early hint")?;
        if let Some(messages) = &self.messages {
            messages.informational(&ResponseHead {
                code: 103,
                status: "103 Early Hints",
                lines: &lines,
            });
            return Ok(());
        }
        self.queue_early_hints(&lines);
        self.flush(py)
    }

    /// `gunicorn.http2.send_trailers(trailers)` (HTTP/2 only): the (name, value) fields go
    /// in a HEADERS frame that ends the stream after the body, as in Gunicorn. The fields are
    /// checked as `start_response` checks them; a later call replaces an earlier one.
    pub fn trailers(&mut self, headers: &Bound<'_, PyAny>) -> PyResult<()> {
        let Some(messages) = &self.messages else {
            return Ok(());
        };
        let lines = field_lines(headers, "trailer")?;
        messages.trailers(&lines);
        Ok(())
    }

    /// Queues a `103 Early Hints` informational response carrying the header `lines`.
    fn queue_early_hints(&mut self, lines: &[u8]) {
        let n = h1::push_early_hints(self.out.tail_buf(), lines);
        self.out.note_appended(n);
    }

    /// Queues body bytes `data` (a `bytes` object), with the framing decided in `start`.
    pub fn write_body(&mut self, py: Python<'_>, data: &Bound<'_, PyBytes>) -> PyResult<()> {
        self.send_headers();
        let len = data.as_bytes().len() as u64;
        if self.framing == BodyFraming::None || self.broken.is_some() {
            return Ok(());
        }
        let mut take = len;
        if let Some(limit) = self.length {
            take = take.min(limit.saturating_sub(self.sent));
            if take < len {
                self.excess += len - take;
                self.must_close = true;
                if take == 0 {
                    return Ok(());
                }
            }
        }
        if take == 0 {
            return Ok(());
        }
        if self.framing == BodyFraming::Chunked {
            self.out.push_slice(h1::ChunkSize::new(take).as_bytes());
            self.out.push_bytes(data, take as usize);
            self.out.push_slice(h1::CHUNK_END);
        } else {
            self.out.push_bytes(data, take as usize);
        }
        self.sent += take;
        if !self.pausable && self.over_bound() {
            self.flush(py)?;
        }
        Ok(())
    }

    /// Whether the unsent output reached the bound.
    pub fn over_bound(&self) -> bool {
        self.out.pending() >= self.bound.max(1)
    }

    /// Writes the queue to the socket now, without the GIL.
    pub fn flush(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.broken.is_some() {
            return Err(PyOSError::new_err("client disconnected"));
        }
        let timeout = self.write_timeout;
        let (out, io) = (&mut self.out, &*self.io);
        match py.detach(|| out.flush_blocking(io, timeout)) {
            Ok(()) => Ok(()),
            Err(e) => {
                let msg = format!("client disconnected: {e}");
                self.broken = Some(e);
                self.must_close = true;
                Err(PyOSError::new_err(msg))
            }
        }
    }

    /// Ends the response: head if nothing was sent, the last chunk, length bookkeeping.
    /// Returns a complaint to log when the body did not match its Content-Length.
    pub fn finish(&mut self) -> Option<String> {
        self.send_headers();
        if self.framing == BodyFraming::Chunked && self.broken.is_none() {
            self.out.push_slice(h1::LAST_CHUNK);
        }
        match self.length {
            Some(limit) if self.excess > 0 => Some(format!(
                "response body longer than its Content-Length of {limit} bytes ({} bytes not sent); closing the connection",
                self.excess
            )),
            Some(limit) if self.framing != BodyFraming::None && self.sent < limit => {
                self.must_close = true;
                Some(format!(
                    "response body shorter than its Content-Length ({} of {} bytes); closing the connection",
                    self.sent, limit
                ))
            }
            _ => None,
        }
    }
}

/// Logs, once per worker and header name, that the application set a hop-by-hop header.
fn warn_hop_by_hop(name: &str) {
    static WARNED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if warned.iter().any(|n| n == name) || warned.len() >= HOP_BY_HOP.len() {
        return;
    }
    warned.push(name.to_owned());
    crate::log::warning(format_args!(
        "the application set the hop-by-hop header {name:?}; it is not forwarded (PEP 3333)"
    ));
}

/// The (name, value) pairs of `fields` as header lines, each checked as `start_response`
/// checks them; `what` names one in the error.
fn field_lines(fields: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u8>> {
    let mut lines = Vec::with_capacity(128);
    for item in fields.try_iter()? {
        let item = item?;
        let (name, value) = item
            .extract::<(Bound<'_, PyAny>, Bound<'_, PyAny>)>()
            .map_err(|_| {
                PyTypeError::new_err(format!("{what} {item} is not a (name, value) tuple"))
            })?;
        let (name, value) = (header_text(&name)?, header_text(&value)?);
        let value = h1::checked_header(&name, &value).map_err(invalid_header)?;
        h1::push_header_line(&mut lines, &name, value);
    }
    Ok(lines)
}

/// `start_response` and `wsgi.early_hints` refuse a header that cannot go on the wire.
fn invalid_header(err: h1::InvalidHeader) -> PyErr {
    PyValueError::new_err(err.to_string())
}

/// An early hint's name or value: a `str`, or `bytes` read as latin-1 (as Gunicorn reads them).
fn header_text<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, str>> {
    if let Ok(bytes) = obj.cast::<PyBytes>() {
        return Ok(Cow::Owned(crate::http::latin1(bytes.as_bytes())));
    }
    match obj.cast::<PyString>() {
        Ok(text) => text.to_str().map(Cow::Borrowed),
        Err(_) => Err(PyTypeError::new_err(format!(
            "early hint {obj} is not a string"
        ))),
    }
}

/// The `start_response` callable handed to the application; also provides `write`.
#[pyclass(module = "ferrocorn._ferrocorn")]
pub struct StartResponse {
    pub state: ResponseState,
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        slf.borrow_mut().state.start(status, headers, exc_info)?;
        slf.getattr(pyo3::intern!(slf.py(), "write"))
    }

    /// PEP 3333's `write(data)` callable.
    fn write(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.state.status.is_none() {
            return Err(PyAssertionError::new_err(
                "write() called before start_response()",
            ));
        }
        let data = data.cast::<PyBytes>().map_err(|_| {
            PyTypeError::new_err(format!(
                "write() argument must be bytes, not {}",
                data.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        self.state.write_body(py, data)?;
        // A write() call cannot be paused: past the bound it waits for the client here.
        if self.state.pausable && self.state.over_bound() {
            self.state.flush(py)?;
        }
        if self.state.broken.is_some() {
            return Err(PyOSError::new_err("client disconnected"));
        }
        Ok(())
    }
}

thread_local! {
    /// The response of the request whose application runs on this thread, for
    /// [`EarlyHints`].
    static HINTED: RefCell<Option<Py<StartResponse>>> = const { RefCell::new(None) };
}

/// While alive, `wsgi.early_hints` calls made on this thread go to one response.
pub struct HintsTarget(());

impl HintsTarget {
    pub fn set(responder: &Bound<'_, StartResponse>) -> HintsTarget {
        let target = Some(responder.clone().unbind());
        HINTED.with(|hinted| *hinted.borrow_mut() = target);
        HintsTarget(())
    }
}

impl Drop for HintsTarget {
    fn drop(&mut self) {
        let _released = HINTED.with(|hinted| hinted.borrow_mut().take());
    }
}

/// `wsgi.early_hints`: one object for the worker, in the environ template, so a request pays
/// for no callable of its own. It hints the response of the request being served on the
/// calling thread (see [`HintsTarget`]); called from another thread, or when no request is
/// being served there, it does nothing, as it would for a response already started. (An
/// environ kept past its request and called during a later one on the same thread hints that
/// later request.)
#[pyclass(module = "ferrocorn._ferrocorn", frozen)]
pub struct EarlyHints;

impl EarlyHints {
    /// Runs `act` on the response of the request served on this thread, if there is one.
    fn with_target(
        py: Python<'_>,
        act: impl FnOnce(&mut ResponseState) -> PyResult<()>,
    ) -> PyResult<()> {
        let target = HINTED.with(|hinted| hinted.borrow().as_ref().map(|r| r.clone_ref(py)));
        match target {
            Some(responder) => act(&mut responder.bind(py).try_borrow_mut()?.state),
            None => Ok(()),
        }
    }
}

#[pymethods]
impl EarlyHints {
    fn __call__(&self, py: Python<'_>, headers: &Bound<'_, PyAny>) -> PyResult<()> {
        EarlyHints::with_target(py, |state| state.early_hints(py, headers))
    }
}

/// `gunicorn.http2.send_trailers`, in the environ of HTTP/2 requests: sets the trailers of
/// the response being served on the calling thread, as `wsgi.early_hints` finds it.
#[pyclass(module = "ferrocorn._ferrocorn", frozen)]
pub struct SendTrailers;

#[pymethods]
impl SendTrailers {
    fn __call__(&self, py: Python<'_>, trailers: &Bound<'_, PyAny>) -> PyResult<()> {
        EarlyHints::with_target(py, |state| state.trailers(trailers))
    }
}
