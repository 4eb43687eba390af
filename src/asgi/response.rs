//! The response side of an ASGI HTTP cycle: `http.response.start` and `http.response.body`
//! turned into HTTP/1 bytes by the encoder of `http::response`, with the framing chosen as
//! for WSGI (the application's Content-Length, else chunked on HTTP/1.1, else close), and no
//! body for HEAD, 1xx, 204 and 304. On HTTP/2 the heads and trailers go to the stream as
//! messages of their own ([`Messages`]) and the body as plain bytes.

use std::borrow::Cow;
use std::sync::Arc;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::driver::output::OutQueue;
use crate::driver::Messages;
use crate::http::date;
use crate::http::head::Version;
use crate::http::response::{self as h1, BodyFraming, H1Response, ResponseHead};

/// Headers whose meaning is the connection's, which the server frames itself.
const HOP_BY_HOP: [&str; 5] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
];

/// What the response needs to know about its request.
#[derive(Clone, Copy)]
pub struct Facts {
    pub version: Version,
    pub is_head: bool,
    /// The client allows the connection to stay open.
    pub keep_alive: bool,
    /// The worker is stopping or keeps no connection alive: announce `Connection: close`.
    pub closing: bool,
}

/// Where the response stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stage {
    /// No `http.response.start` yet.
    Waiting,
    /// Started; body messages may follow.
    Started,
    /// The last body message (`more_body` false) was given.
    Complete,
}

pub struct Response {
    pub facts: Facts,
    pub stage: Stage,
    pub status: u16,
    status_line: Cow<'static, str>,
    /// The application's header lines, ready for the wire.
    rendered: Vec<u8>,
    /// The headers as text, kept when something reads them after the response.
    pub headers: Vec<(String, String)>,
    pub keep_headers: bool,
    head_sent: bool,
    length: Option<u64>,
    framing: BodyFraming,
    /// Body bytes accepted (without chunk framing).
    pub sent: u64,
    /// The connection ends after this response.
    pub must_close: bool,
    pub out: OutQueue,
    /// HTTP/2: where the heads and trailers go.
    pub messages: Option<Arc<dyn Messages>>,
    /// `trailers: True` in `http.response.start`, on a protocol that sends them.
    pub expects_trailers: bool,
    /// Trailer lines gathered while `more_trailers` is true.
    trailer_lines: Vec<u8>,
    trailers_sent: bool,
}

impl Response {
    pub fn new(facts: Facts, keep_headers: bool) -> Response {
        Response {
            facts,
            stage: Stage::Waiting,
            status: 0,
            status_line: Cow::Borrowed(""),
            rendered: Vec::new(),
            headers: Vec::new(),
            keep_headers,
            head_sent: false,
            length: None,
            framing: BodyFraming::Close,
            sent: 0,
            must_close: false,
            out: OutQueue::new(),
            messages: None,
            expects_trailers: false,
            trailer_lines: Vec::new(),
            trailers_sent: false,
        }
    }

    /// On HTTP/2: the stream where the heads and trailers go.
    pub fn with_messages(self, messages: Option<Arc<dyn Messages>>) -> Response {
        Response { messages, ..self }
    }

    /// `http.response.start`: the status and headers, kept until the first body message so
    /// that a body given whole goes out with its length in the same write.
    pub fn start(&mut self, status: u16, headers: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        if !(100..=999).contains(&status) {
            return Err(PyValueError::new_err(format!("invalid status {status}")));
        }
        let bodiless = h1::forbids_content_length(status);
        let mut rendered = Vec::with_capacity(128);
        let length = self.render_headers(headers, bodiless, &mut rendered)?;
        self.status = status;
        self.status_line = h1::status_text(status);
        self.rendered = rendered;
        self.length = length;
        self.framing = BodyFraming::choose(self.facts.version, self.facts.is_head, status, length);
        if self.messages.is_some() && self.framing == BodyFraming::Chunked {
            // The end of the stream delimits the body.
            self.framing = BodyFraming::Close;
        }
        self.stage = Stage::Started;
        Ok(())
    }

    /// Checks `headers` and appends them to `rendered` as header lines, leaving out the ones
    /// the server sets itself (and Content-Length when `bodiless`). Returns the
    /// Content-Length given.
    fn render_headers(
        &mut self,
        headers: Option<&Bound<'_, PyAny>>,
        bodiless: bool,
        rendered: &mut Vec<u8>,
    ) -> PyResult<Option<u64>> {
        let mut length = None;
        if let Some(headers) = headers {
            // A list (the usual case) is read by index, without an iterator object.
            match headers.cast::<PyList>() {
                Ok(list) => {
                    for item in list.iter() {
                        let (name, value) = header_pair(&item)?;
                        self.take_header(name, &value, bodiless, rendered, &mut length)?;
                    }
                }
                Err(_) => {
                    for item in headers.try_iter()? {
                        let (name, value) = header_pair(&item?)?;
                        self.take_header(name, &value, bodiless, rendered, &mut length)?;
                    }
                }
            }
        }
        Ok(if bodiless { None } else { length })
    }

    /// One header of the application's: checked, then rendered unless the server sets it.
    fn take_header(
        &mut self,
        mut name: String,
        value: &str,
        bodiless: bool,
        rendered: &mut Vec<u8>,
        length: &mut Option<u64>,
    ) -> PyResult<()> {
        name.make_ascii_lowercase();
        let value =
            h1::checked_header(&name, value).map_err(|e| PyValueError::new_err(e.to_string()))?;
        if let Some(hop) = HOP_BY_HOP.iter().find(|h| **h == name) {
            if *hop == "connection" && value.eq_ignore_ascii_case("close") {
                self.must_close = true;
            }
            return Ok(());
        }
        if name == "date" || name == "server" {
            // The server sets these itself.
            return Ok(());
        }
        if name == "content-length" {
            *length =
                Some(value.parse::<u64>().map_err(|_| {
                    PyValueError::new_err(format!("invalid Content-Length {value:?}"))
                })?);
            if bodiless {
                return Ok(());
            }
        }
        h1::push_header_line(rendered, &name, value);
        if self.keep_headers {
            self.headers.push((name.clone(), value.to_owned()));
        }
        Ok(())
    }

    /// `http.response.informational` (a 1xx before the final response, such as `103 Early
    /// Hints`): sent at once; nothing for an HTTP/1.0 client, which knows no 1xx.
    pub fn informational(
        &mut self,
        status: u16,
        headers: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        if !(100..200).contains(&status) || status == 101 {
            return Err(PyValueError::new_err(format!(
                "invalid informational status {status}: expected 1xx other than 101"
            )));
        }
        if self.stage != Stage::Waiting {
            return Err(PyRuntimeError::new_err(
                "Informational response after response start",
            ));
        }
        let keep = std::mem::replace(&mut self.keep_headers, false);
        let mut lines = Vec::with_capacity(128);
        let rendered = self.render_headers(headers, true, &mut lines);
        self.keep_headers = keep;
        rendered?;
        let status_line = h1::status_text(status);
        let head = ResponseHead {
            code: status,
            status: &status_line,
            lines: &lines,
        };
        if let Some(messages) = &self.messages {
            messages.informational(&head);
        } else if self.facts.version.is_1_1_or_later() {
            let n = h1::push_informational(self.out.tail_buf(), &head);
            self.out.note_appended(n);
        }
        Ok(())
    }

    /// `http.response.trailers`: on HTTP/2, after a start that announced them, a trailing
    /// HEADERS frame ends the stream; elsewhere they are declined (the scope does not offer
    /// them) and dropped.
    pub fn trailers(&mut self, headers: Option<&Bound<'_, PyAny>>, more: bool) -> PyResult<()> {
        if self.messages.is_none() {
            return Ok(());
        }
        if self.stage != Stage::Complete {
            return Err(PyRuntimeError::new_err(
                "Cannot send trailers before body complete",
            ));
        }
        if !self.expects_trailers {
            return Err(PyRuntimeError::new_err(
                "Trailers were not announced in http.response.start",
            ));
        }
        if self.trailers_sent {
            return Err(PyRuntimeError::new_err("Trailers already sent"));
        }
        let keep = std::mem::replace(&mut self.keep_headers, false);
        let mut lines = std::mem::take(&mut self.trailer_lines);
        let rendered = self.render_headers(headers, true, &mut lines);
        self.keep_headers = keep;
        rendered?;
        if more {
            self.trailer_lines = lines;
            return Ok(());
        }
        self.trailers_sent = true;
        if let Some(messages) = &self.messages {
            messages.trailers(&lines);
        }
        Ok(())
    }

    /// Whether the connection closes after this response (as its head announces).
    fn will_close(&self) -> bool {
        self.must_close
            || !self.facts.keep_alive
            || self.facts.closing
            || crate::process::lifecycle::worker().is_stopping()
            || self.framing == BodyFraming::Close
    }

    /// Queues the status line and headers, once.
    fn send_head(&mut self, last: Option<usize>) {
        if self.head_sent {
            return;
        }
        self.head_sent = true;
        // A body given whole in its first message gets its length announced.
        if let (Some(len), BodyFraming::Chunked | BodyFraming::Close) = (last, self.framing) {
            let len = len as u64;
            self.length = Some(len);
            self.framing = BodyFraming::Length;
            let mut digits = itoa::Buffer::new();
            h1::push_header_line(&mut self.rendered, "content-length", digits.format(len));
        }
        let head = ResponseHead {
            code: self.status,
            status: &self.status_line,
            lines: &self.rendered,
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

    /// `http.response.body`: queues `data` with the framing chosen at the start.
    pub fn body(&mut self, data: Option<&Bound<'_, PyBytes>>, more: bool) -> PyResult<()> {
        match self.stage {
            Stage::Waiting => {
                return Err(PyRuntimeError::new_err(
                    "Expected ASGI message 'http.response.start', but got 'http.response.body'.",
                ))
            }
            Stage::Complete => {
                return Err(PyRuntimeError::new_err(
                    "Unexpected ASGI message 'http.response.body' sent, after response already \
                     completed.",
                ))
            }
            Stage::Started => {}
        }
        let len = data.map_or(0, |d| d.as_bytes().len());
        self.send_head((!more && !self.head_sent).then_some(len));
        if !more {
            self.stage = Stage::Complete;
        }
        if let Some(data) = data.filter(|_| len > 0 && self.framing != BodyFraming::None) {
            let mut take = len as u64;
            if let Some(limit) = self.length {
                take = take.min(limit.saturating_sub(self.sent));
                if take < len as u64 {
                    // Past the announced length: the rest cannot be framed.
                    self.must_close = true;
                }
            }
            if take > 0 {
                if self.framing == BodyFraming::Chunked {
                    self.out.push_slice(h1::ChunkSize::new(take).as_bytes());
                    self.out.push_bytes(data, take as usize);
                    self.out.push_slice(h1::CHUNK_END);
                } else {
                    self.out.push_bytes(data, take as usize);
                }
                self.sent += take;
            }
        }
        if !more {
            self.finish();
        }
        Ok(())
    }

    /// The body is complete: the last chunk, and a short body closes the connection.
    fn finish(&mut self) {
        if self.framing == BodyFraming::Chunked {
            self.out.push_slice(h1::LAST_CHUNK);
        }
        if let Some(limit) = self.length {
            if self.framing != BodyFraming::None && self.sent < limit {
                self.must_close = true;
            }
        }
    }

    /// Fewer body bytes were given than the Content-Length announced.
    pub fn is_short(&self) -> bool {
        self.framing != BodyFraming::None && self.length.is_some_and(|limit| self.sent < limit)
    }

    /// The status line as the application gave it, for the access log.
    pub fn status_line(&self) -> &str {
        &self.status_line
    }

    /// Whether the head was queued (the response can no longer become an error answer).
    pub fn head_sent(&self) -> bool {
        self.head_sent
    }
}

/// One header of `http.response.start`: a pair of byte strings (or, as servers accept, text)
/// read as latin-1.
fn header_pair(item: &Bound<'_, PyAny>) -> PyResult<(String, String)> {
    if let Ok(pair) = item.cast::<PyTuple>() {
        if pair.len() == 2 {
            let name = header_text(&*pair.get_borrowed_item(0)?)?;
            let value = header_text(&*pair.get_borrowed_item(1)?)?;
            return Ok((name, value));
        }
    }
    let mut parts = item.try_iter()?;
    let mut next = || -> PyResult<String> {
        let part = parts.next().ok_or_else(|| {
            PyTypeError::new_err("a response header is not a (name, value) pair")
        })??;
        header_text(&part)
    };
    let name = next()?;
    let value = next()?;
    Ok((name, value))
}

fn header_text(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(bytes) = obj.cast::<PyBytes>() {
        return Ok(crate::http::latin1(bytes.as_bytes()));
    }
    if let Ok(text) = obj.extract::<String>() {
        return Ok(text);
    }
    Err(PyTypeError::new_err(format!(
        "a response header name or value must be bytes, not {}",
        obj.get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyo3::types::PyList;

    fn facts(minor: u8, is_head: bool) -> Facts {
        Facts {
            version: Version { major: 1, minor },
            is_head,
            keep_alive: true,
            closing: false,
        }
    }

    /// The bytes a response queued, with the Date value blanked.
    fn wire(r: &mut Response) -> String {
        let (server, client) = crate::net::memory::pair();
        let written = r
            .out
            .write_to(&server, crate::driver::output::Then::Continue);
        assert!(matches!(written, Ok(crate::driver::output::Progress::Done)));
        let text = String::from_utf8(client.take_output()).expect("ascii");
        let date = text.find("Date: ").map(|i| i + 6);
        match date {
            Some(i) => format!("{}<date>{}", &text[..i], &text[i + 29..]),
            None => text,
        }
    }

    fn respond(
        f: Facts,
        status: u16,
        headers: &[(&str, &str)],
        bodies: &[(&[u8], bool)],
    ) -> (Response, String) {
        Python::initialize();
        Python::attach(|py| {
            let mut r = Response::new(f, true);
            let list = PyList::empty(py);
            for (n, v) in headers {
                list.append((
                    PyBytes::new(py, n.as_bytes()),
                    PyBytes::new(py, v.as_bytes()),
                ))
                .expect("append");
            }
            r.start(status, Some(list.as_any())).expect("start");
            for (data, more) in bodies {
                r.body(Some(&PyBytes::new(py, data)), *more).expect("body");
            }
            let text = wire(&mut r);
            (r, text)
        })
    }

    #[test]
    fn a_body_given_whole_gets_its_length() {
        let (r, text) = respond(
            facts(1, false),
            200,
            &[("Content-Type", "text/plain")],
            &[(b"hello", false)],
        );
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nServer: ferrocorn\r\nDate: <date>\r\nConnection: keep-alive\r\n\
             content-type: text/plain\r\ncontent-length: 5\r\n\r\nhello"
        );
        assert_eq!(r.stage, Stage::Complete);
        assert!(!r.must_close);
    }

    #[test]
    fn a_streamed_body_is_chunked_on_1_1_and_closes_on_1_0() {
        let (_, text) = respond(
            facts(1, false),
            200,
            &[],
            &[(b"ab", true), (b"c", true), (b"", false)],
        );
        assert!(text.contains("Transfer-Encoding: chunked\r\n"), "{text}");
        assert!(
            text.ends_with("\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n"),
            "{text}"
        );
        let (r, text) = respond(facts(0, false), 200, &[], &[(b"ab", true), (b"", false)]);
        assert!(
            text.starts_with("HTTP/1.0 200 OK\r\n") && text.contains("Connection: close\r\n"),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\nab"), "{text}");
        assert!(r.must_close);
    }

    #[test]
    fn head_204_and_304_carry_no_body() {
        for (f, status) in [
            (facts(1, true), 200),
            (facts(1, false), 204),
            (facts(1, false), 304),
        ] {
            let (_, text) = respond(f, status, &[("content-length", "4")], &[(b"body", false)]);
            assert!(text.ends_with("\r\n\r\n"), "{status}: {text}");
            assert!(!text.contains("chunked"), "{status}: {text}");
        }
    }

    #[test]
    fn hop_by_hop_headers_are_the_servers() {
        let headers = [
            ("Transfer-Encoding", "chunked"),
            ("Connection", "close"),
            ("X-A", "1"),
        ];
        let (r, text) = respond(facts(1, false), 404, &headers, &[(b"", false)]);
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(
            text.contains("Connection: close\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n"),
            "{text}"
        );
        assert!(r.must_close);
    }

    #[test]
    fn informational_goes_out_at_once_on_1_1_only() {
        Python::initialize();
        Python::attach(|py| {
            let hints = PyList::empty(py);
            hints
                .append((PyBytes::new(py, b"Link"), PyBytes::new(py, b"</a.css>")))
                .expect("append");
            let mut r = Response::new(facts(1, false), false);
            r.informational(103, Some(hints.as_any())).expect("103");
            assert_eq!(
                wire(&mut r),
                "HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n"
            );
            for status in [101, 200, 99] {
                assert!(r.informational(status, None).is_err(), "{status}");
            }
            let mut old = Response::new(facts(0, false), false);
            old.informational(103, Some(hints.as_any())).expect("103");
            assert!(old.out.is_empty());
            r.start(200, None).expect("start");
            let late = r.informational(103, None).expect_err("after the start");
            assert!(late.to_string().contains("after response start"));
            // No trailers on HTTP/1: dropped without complaint.
            r.body(None, false).expect("body");
            r.trailers(Some(hints.as_any()), false).expect("declined");
            assert!(!wire(&mut r).contains("a.css"));
        });
    }

    #[test]
    fn body_before_start_is_refused() {
        Python::initialize();
        Python::attach(|py| {
            let mut r = Response::new(facts(1, false), false);
            let err = r
                .body(Some(&PyBytes::new(py, b"x")), false)
                .expect_err("refused");
            assert!(err.to_string().contains("http.response.start"));
        });
    }
}
