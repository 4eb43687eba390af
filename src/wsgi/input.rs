//! `wsgi.input`: the request body as a file-like object.
//!
//! Bodies up to a bound are decoded by the event loop before the application is called, so
//! most reads are served from memory. A larger body streams: reads that need more bytes read
//! the socket directly, without the GIL, and never past the end of the body.
//!
//! A `sync` worker reads a buffered Content-Length body straight into the `bytes` object
//! that `read()` returns ([`WholeBody`]), so an application reading the whole body at once
//! gets it without a copy.

use std::any::Any;
use std::mem::MaybeUninit;
use std::sync::Arc;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::driver::body::{BodyState, BodyTarget};
use crate::net::Io;

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
    /// An uninitialised `bytes` object of `len` bytes to read a body into.
    pub fn new(py: Python<'_>, len: usize) -> Option<WholeBody> {
        let size = pyo3::ffi::Py_ssize_t::try_from(len).ok()?;
        // SAFETY: a NULL source asks for uninitialised storage of `size` bytes; the GIL is
        // held. The result is an owned reference or NULL with an exception set.
        let raw_obj = unsafe { pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), size) };
        // SAFETY: `raw_obj` is the owned reference just returned (or NULL).
        let obj = unsafe { Bound::from_owned_ptr_or_err(py, raw_obj) }.ok()?;
        Some(WholeBody {
            bytes: obj.cast_into::<PyBytes>().ok()?.unbind(),
            len,
            filled: 0,
        })
    }
}

impl BodyTarget for WholeBody {
    fn spare(&mut self) -> &mut [MaybeUninit<u8>] {
        // SAFETY: `bytes` holds `len` bytes of storage that nothing else references (see
        // the type's doc); `filled..len` is the part not yet written.
        unsafe {
            let start = pyo3::ffi::PyBytes_AsString(self.bytes.as_ptr()).cast::<MaybeUninit<u8>>();
            std::slice::from_raw_parts_mut(start.add(self.filled), self.len - self.filled)
        }
    }

    fn advance(&mut self, n: usize) {
        self.filled = (self.filled + n).min(self.len);
    }

    fn is_full(&self) -> bool {
        self.filled == self.len
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// Hands a whole body to a read that wants all of it, or else moves it into the state's
/// decoded bytes for the usual reads.
fn take_whole<'py>(
    state: &mut BodyState,
    py: Python<'py>,
    want: usize,
) -> Option<Bound<'py, PyBytes>> {
    let target = state.whole.take()?;
    let full = target.is_full();
    let Ok(whole) = target.into_any().downcast::<WholeBody>() else {
        return None;
    };
    let handover = full && want >= whole.len && state.available() == 0;
    let bytes = whole.bytes.into_bound(py);
    if handover {
        return Some(bytes);
    }
    state.body.drain(..state.body_pos);
    state.body_pos = 0;
    state
        .body
        .extend_from_slice(&bytes.as_bytes()[..whole.filled]);
    None
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
    /// The connection, for the rest of a body that streams.
    io: Arc<dyn Io>,
}

impl InputStream {
    pub fn new(state: BodyState, io: Arc<dyn Io>) -> InputStream {
        InputStream {
            state: Some(state),
            io,
        }
    }

    /// Takes the body state back when the request ends (with the GIL, which an unread
    /// whole body needs to be released); later reads return `b""`.
    pub fn take_state(&mut self, _py: Python<'_>) -> Option<BodyState> {
        let mut state = self.state.take()?;
        state.whole = None;
        Some(state)
    }

    fn fill(py: Python<'_>, state: &mut BodyState, io: &dyn Io) -> PyResult<bool> {
        let more = py.detach(|| state.fill_blocking(io));
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
        if let Some(bytes) = take_whole(state, py, want) {
            return Ok(bytes);
        }
        while state.available() < want && Self::fill(py, state, &*self.io)? {}
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
        take_whole(state, py, 0);
        let mut scanned = 0;
        loop {
            let pending = &state.body[state.body_pos..];
            let window = &pending[..pending.len().min(limit)];
            if let Some(i) = memchr::memchr(b'\n', &window[scanned.min(window.len())..]) {
                let end = scanned + i + 1;
                return Ok(PyBytes::new(py, state.take(end)));
            }
            scanned = window.len();
            if window.len() >= limit || !Self::fill(py, state, &*self.io)? {
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
