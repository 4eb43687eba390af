//! `wsgi.input`: the request body as a file-like object.
//!
//! Bodies up to a bound are decoded by the event loop before the application is called, so
//! most reads are served from memory. A larger body streams: reads that need more bytes read
//! the socket directly, without the GIL, and never past the end of the body.

use std::os::unix::io::RawFd;
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::http::{BodyDecoder, HttpError};

use super::sockio;

/// Socket bytes read per system call while streaming a body.
const READ_CHUNK: usize = 64 * 1024;

/// The body of one request and the connection bytes that follow it.
pub struct BodyState {
    pub decoder: BodyDecoder,
    /// Connection bytes not yet decoded; may hold the next pipelined requests.
    pub raw: Vec<u8>,
    pub raw_pos: usize,
    /// Decoded body bytes not yet handed to the application.
    pub body: Vec<u8>,
    pub body_pos: usize,
    pub fd: RawFd,
    /// Longest wait for the client to send more of the body.
    pub timeout: Duration,
    /// A framing error met while reading the body: the request is answered with it.
    pub error: Option<HttpError>,
    /// The peer closed the connection before the body ended.
    pub truncated: bool,
}

impl BodyState {
    pub fn new(decoder: BodyDecoder, raw: Vec<u8>, fd: RawFd, timeout: Duration) -> BodyState {
        BodyState {
            decoder,
            raw,
            raw_pos: 0,
            body: Vec::new(),
            body_pos: 0,
            fd,
            timeout,
            error: None,
            truncated: false,
        }
    }

    pub fn available(&self) -> usize {
        self.body.len() - self.body_pos
    }

    pub fn is_complete(&self) -> bool {
        self.decoder.is_done()
    }

    /// Whether the body can grow no further (complete, broken or cut off).
    pub fn is_finished(&self) -> bool {
        self.decoder.is_done() || self.error.is_some() || self.truncated
    }

    /// Decodes buffered connection bytes, adding at most `max_out` body bytes.
    /// Returns how many body bytes were added.
    pub fn decode_buffered(&mut self, max_out: usize) -> Result<usize, HttpError> {
        // Drop what the application already read, so a streamed body never accumulates.
        if self.body_pos > 0 && (self.body_pos == self.body.len() || self.body_pos >= READ_CHUNK) {
            self.body.drain(..self.body_pos);
            self.body_pos = 0;
        }
        if self.body.is_empty() && self.raw_pos == 0 && self.raw_is_body(max_out) {
            // Every buffered byte is body as it stands: hand the buffer over instead of
            // copying it.
            std::mem::swap(&mut self.body, &mut self.raw);
            self.decoder.skip_decoded(self.body.len());
            return Ok(self.body.len());
        }
        let before = self.body.len();
        let decoded = self
            .decoder
            .decode(&self.raw[self.raw_pos..], &mut self.body, max_out)?;
        self.raw_pos += decoded.consumed;
        if self.raw_pos == self.raw.len() {
            self.raw.clear();
            self.raw_pos = 0;
        }
        Ok(self.body.len() - before)
    }

    /// Whether all of `raw` (at most `max_out` bytes) is Content-Length body, which needs no
    /// decoding.
    fn raw_is_body(&self, max_out: usize) -> bool {
        let len = self.raw.len() - self.raw_pos;
        matches!(self.decoder, BodyDecoder::Length { remaining } if len as u64 <= remaining)
            && len <= max_out
    }

    /// Whether the socket can be read straight into `body`: a Content-Length body with no
    /// undecoded bytes buffered, so a read capped at the bytes still expected is all body.
    pub fn reads_direct(&self) -> bool {
        self.raw_pos == self.raw.len() && matches!(self.decoder, BodyDecoder::Length { .. })
    }

    /// Adds more decoded body, reading the socket if needed (blocking; call without the GIL).
    /// Returns false once the body is finished.
    pub fn fill_blocking(&mut self) -> bool {
        loop {
            if self.is_finished() {
                return false;
            }
            if self.raw_pos < self.raw.len() {
                match self.decode_buffered(READ_CHUNK) {
                    Ok(0) => {}
                    Ok(_) => return true,
                    Err(e) => {
                        self.error = Some(e);
                        return false;
                    }
                }
                if self.is_finished() {
                    return false;
                }
                if self.raw_pos < self.raw.len() {
                    // Undecodable tail (e.g. a partial chunk-size line): read more below.
                }
            }
            if self.raw_pos > 0 {
                self.raw.drain(..self.raw_pos);
                self.raw_pos = 0;
            }
            match sockio::read_some(self.fd, &mut self.raw, READ_CHUNK, self.timeout) {
                Ok(0) | Err(_) => {
                    self.truncated = true;
                    return false;
                }
                Ok(_) => {}
            }
        }
    }

    /// Takes up to `n` decoded bytes.
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.available());
        let start = self.body_pos;
        self.body_pos += n;
        &self.body[start..start + n]
    }
}

/// A `size` argument as Python's file objects read it: absent or negative means "all".
fn size_limit(size: Option<isize>) -> usize {
    match size {
        Some(n) if n >= 0 => n as usize,
        _ => usize::MAX,
    }
}

/// The `wsgi.input` object.
#[pyclass(module = "ferrocorn._ferrocorn")]
pub struct InputStream {
    state: Option<BodyState>,
}

impl InputStream {
    pub fn new(state: BodyState) -> InputStream {
        InputStream { state: Some(state) }
    }

    /// Takes the body state back when the request ends; later reads return `b""`.
    pub fn take_state(&mut self) -> Option<BodyState> {
        self.state.take()
    }

    fn fill(py: Python<'_>, state: &mut BodyState) -> PyResult<bool> {
        let more = py.detach(|| state.fill_blocking());
        if let Some(err) = &state.error {
            return Err(PyValueError::new_err(format!(
                "invalid request body: {}",
                err.message
            )));
        }
        if state.truncated && !state.is_complete() && !more {
            return Err(PyOSError::new_err(
                "client closed the connection before the request body ended",
            ));
        }
        Ok(more)
    }

    fn read_impl<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<isize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let Some(state) = self.state.as_mut() else {
            return Ok(PyBytes::new(py, b""));
        };
        let want = size_limit(size);
        while state.available() < want && Self::fill(py, state)? {}
        Ok(PyBytes::new(py, state.take(want)))
    }

    fn readline_impl<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<isize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let Some(state) = self.state.as_mut() else {
            return Ok(PyBytes::new(py, b""));
        };
        let limit = size_limit(size);
        let mut scanned = 0;
        loop {
            let pending = &state.body[state.body_pos..];
            let window = &pending[..pending.len().min(limit)];
            if let Some(i) = memchr::memchr(b'\n', &window[scanned.min(window.len())..]) {
                let end = scanned + i + 1;
                return Ok(PyBytes::new(py, state.take(end)));
            }
            scanned = window.len();
            if window.len() >= limit || !Self::fill(py, state)? {
                let n = state.available().min(limit);
                return Ok(PyBytes::new(py, state.take(n)));
            }
        }
    }
}

#[pymethods]
impl InputStream {
    #[pyo3(signature = (size = None))]
    fn read<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        self.read_impl(py, size)
    }

    #[pyo3(signature = (size = None))]
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<isize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.readline_impl(py, size)
    }

    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(
        &mut self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let lines = PyList::empty(py);
        let mut total = 0usize;
        loop {
            let line = self.readline_impl(py, None)?;
            let len = line.as_bytes().len();
            if len == 0 {
                break;
            }
            lines.append(line)?;
            total += len;
            if matches!(hint, Some(h) if h > 0 && total >= h as usize) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.readline_impl(py, None)?;
        Ok(if line.as_bytes().is_empty() {
            None
        } else {
            Some(line)
        })
    }
}
