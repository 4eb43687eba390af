//! `wsgi.input`: the request body as a file-like object.
//!
//! Bodies up to a bound are decoded by the event loop before the application is called, so
//! most reads are served from memory. A larger body streams: reads that need more bytes read
//! the socket directly, without the GIL, and never past the end of the body.
//!
//! A `sync` worker reads a buffered Content-Length body straight into the `bytes` object
//! that `read()` returns ([`WholeBody`]), so an application reading the whole body at once
//! gets it without a copy.

use std::mem::MaybeUninit;
use std::os::unix::io::RawFd;
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::http::{BodyDecoder, HttpError};

use crate::net::socket;

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
    /// The whole body in its `bytes` object, which `body` and `raw` then do not hold.
    pub whole: Option<WholeBody>,
}

/// A Content-Length body read into a fresh `bytes` object of its exact length.
///
/// The object is not visible to Python until it is full: until then this is its only
/// reference, so its storage may be written without the GIL.
pub struct WholeBody {
    bytes: Py<PyBytes>,
    len: usize,
    filled: usize,
}

impl WholeBody {
    /// Room still to fill.
    pub fn spare(&mut self) -> &mut [MaybeUninit<u8>] {
        // SAFETY: `bytes` holds `len` bytes of storage that nothing else references (see
        // the type's doc); `filled..len` is the part not yet written.
        unsafe {
            let start = pyo3::ffi::PyBytes_AsString(self.bytes.as_ptr()).cast::<MaybeUninit<u8>>();
            std::slice::from_raw_parts_mut(start.add(self.filled), self.len - self.filled)
        }
    }

    /// Marks `n` more bytes of [`spare`](Self::spare) as written.
    pub fn advance(&mut self, n: usize) {
        self.filled = (self.filled + n).min(self.len);
    }

    pub fn is_full(&self) -> bool {
        self.filled == self.len
    }
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
            whole: None,
        }
    }

    /// Moves a Content-Length body that is not complete yet into a [`WholeBody`] holding
    /// what has arrived so far; the caller reads the rest into it. `None` when the body is
    /// not of that kind or is longer than `limit`.
    pub fn start_whole(&mut self, py: Python<'_>, limit: usize) -> Option<WholeBody> {
        let BodyDecoder::Length { remaining } = self.decoder else {
            return None;
        };
        let arrived = &self.raw[self.raw_pos..];
        if !self.body.is_empty() || remaining == 0 || arrived.len() as u64 >= remaining {
            return None;
        }
        let len = usize::try_from(remaining).ok().filter(|&n| n <= limit)?;
        let size = pyo3::ffi::Py_ssize_t::try_from(len).ok()?;
        // SAFETY: a NULL source asks for uninitialised storage of `size` bytes; the GIL is
        // held. The result is an owned reference or NULL with an exception set.
        let raw_obj = unsafe { pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), size) };
        // SAFETY: `raw_obj` is the new reference just returned (or NULL with an exception
        // set), which from_owned_ptr_or_err takes over; the GIL is held.
        let Ok(obj) = (unsafe { Bound::from_owned_ptr_or_err(py, raw_obj) }) else {
            return None;
        };
        let mut whole = WholeBody {
            bytes: obj.cast_into::<PyBytes>().ok()?.unbind(),
            len,
            filled: 0,
        };
        let n = arrived.len();
        for (dst, &src) in whole.spare().iter_mut().zip(arrived) {
            dst.write(src);
        }
        whole.advance(n);
        self.decoder.skip_decoded(n);
        self.raw.clear();
        self.raw_pos = 0;
        Some(whole)
    }

    /// Hands a whole body to a read that wants all of it, or else moves it into `body` for
    /// the usual reads.
    fn take_whole<'py>(&mut self, py: Python<'py>, want: usize) -> Option<Bound<'py, PyBytes>> {
        let whole = self.whole.take()?;
        let handover = whole.is_full() && want >= whole.len && self.available() == 0;
        let bytes = whole.bytes.into_bound(py);
        if handover {
            return Some(bytes);
        }
        self.body.drain(..self.body_pos);
        self.body_pos = 0;
        self.body
            .extend_from_slice(&bytes.as_bytes()[..whole.filled]);
        None
    }

    /// Decoded bytes in `body` not yet read (reads first move a whole body there, see
    /// [`take_whole`](Self::take_whole)).
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
            match socket::read_some(self.fd, &mut self.raw, READ_CHUNK, self.timeout) {
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

    /// Takes the body state back when the request ends (with the GIL, which an unread
    /// whole body needs to be released); later reads return `b""`.
    pub fn take_state(&mut self, _py: Python<'_>) -> Option<BodyState> {
        let mut state = self.state.take()?;
        state.whole = None;
        Some(state)
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
        if let Some(bytes) = state.take_whole(py, want) {
            return Ok(bytes);
        }
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
        state.take_whole(py, 0);
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
