//! The response bytes waiting for the socket: owned buffers, Python `bytes` objects held by
//! reference (no copy of large bodies), and file ranges to send with `sendfile(2)`.
//!
//! The request cycle fills the queue while the application runs and flushes it itself only
//! when it grows past a bound; the rest is written by the connection's event loop after the
//! application returned, so a slow reader holds memory, not a Python thread.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::net::{Interest, Io, Transport};

/// Python `bytes` shorter than this are copied into the current buffer; longer ones are
/// referenced.
const COPY_LIMIT: usize = 16 * 1024;
/// Segments written per `writev` call.
const MAX_IOV: usize = 64;
/// While a file goes out with sendfile, the socket keeps at most this much of it queued unsent
/// (`TCP_NOTSENT_LOWAT`; the socket is not writable while more is queued),
/// so sendfile hands the kernel a piece only as the previous one leaves. Without a limit it
/// queues up to the whole send buffer (MiBs) at once, and the rest is then transmitted from the
/// client's acknowledgements; on the same host (a proxy, or the benchmark's client) that work
/// lands on the client's CPU. Measured in docs/performance.md: 10 MiB file_wrapper responses
/// went from about 200 to 500 req/s. Bodies written from memory keep the default.
const FILE_UNSENT_LIMIT: u32 = 32 * 1024;

pub enum Segment {
    Owned {
        data: Vec<u8>,
        pos: usize,
    },
    /// A Python `bytes` object; its buffer is immutable and outlives the reference.
    Bytes {
        obj: Py<PyBytes>,
        ptr: *const u8,
        len: usize,
        pos: usize,
    },
    File {
        fd: OwnedFd,
        offset: u64,
        remaining: u64,
        /// Whether the socket's unsent-bytes limit is set for this file (see `FILE_UNSENT_LIMIT`).
        limited: bool,
    },
}

// SAFETY: `ptr` points into the immutable buffer of the `bytes` object `obj` keeps alive; it is
// read without the GIL, which is sound for immutable `bytes` data.
unsafe impl Send for Segment {}
// SAFETY: as above; shared references only read the immutable buffer.
unsafe impl Sync for Segment {}

impl Segment {
    fn remaining(&self) -> u64 {
        match self {
            Segment::Owned { data, pos } => (data.len() - pos) as u64,
            Segment::Bytes { len, pos, .. } => (len - pos) as u64,
            Segment::File { remaining, .. } => *remaining,
        }
    }
}

#[derive(Default)]
pub struct OutQueue {
    segments: VecDeque<Segment>,
    pending: u64,
}

/// What the connection sends right after the queued bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Then {
    /// More of this response or another one: each write goes out at once.
    Continue,
    /// Our FIN: the connection closes after this response. The writes ask the kernel to hold
    /// a last partial segment (`MSG_MORE`) and the FIN follows as soon as the queue is empty,
    /// so one segment carries both. A closing connection then costs one segment, and the
    /// client's acknowledgement of it, less: about a fifth of the server's CPU for a small
    /// response over loopback (docs/performance.md).
    Fin,
}

impl Then {
    /// After a response: the FIN when the connection does not stay open for another.
    pub fn after_response(keep_alive: bool) -> Then {
        if keep_alive {
            Then::Continue
        } else {
            Then::Fin
        }
    }
}

/// Result of one non-blocking write attempt.
pub enum Progress {
    Done,
    /// The socket is full: wait until it is writable.
    Blocked,
}

impl OutQueue {
    pub fn new() -> OutQueue {
        OutQueue::default()
    }

    /// Bytes not yet written.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// The buffer to append small writes to.
    pub fn tail_buf(&mut self) -> &mut Vec<u8> {
        if !matches!(self.segments.back(), Some(Segment::Owned { .. })) {
            self.segments.push_back(Segment::Owned {
                data: Vec::with_capacity(512),
                pos: 0,
            });
        }
        match self.segments.back_mut() {
            Some(Segment::Owned { data, .. }) => data,
            _ => unreachable!("an owned segment was just pushed"),
        }
    }

    pub fn push_slice(&mut self, bytes: &[u8]) {
        self.tail_buf().extend_from_slice(bytes);
        self.pending += bytes.len() as u64;
    }

    /// Account for bytes appended directly to [`OutQueue::tail_buf`].
    pub fn note_appended(&mut self, n: usize) {
        self.pending += n as u64;
    }

    /// Queues `part` of the Python bytes `obj` (the whole object when `part` is its length).
    pub fn push_bytes(&mut self, obj: &Bound<'_, PyBytes>, len: usize) {
        if len == 0 {
            return;
        }
        let data = obj.as_bytes();
        if len < COPY_LIMIT {
            self.push_slice(&data[..len]);
            return;
        }
        self.segments.push_back(Segment::Bytes {
            obj: obj.clone().unbind(),
            ptr: data.as_ptr(),
            len,
            pos: 0,
        });
        self.pending += len as u64;
    }

    pub fn push_file(&mut self, fd: OwnedFd, offset: u64, count: u64) {
        if count == 0 {
            return;
        }
        self.segments.push_back(Segment::File {
            fd,
            offset,
            remaining: count,
            limited: false,
        });
        self.pending += count;
    }

    /// Writes without blocking until the queue is empty or the socket is full; with
    /// [`Then::Fin`], sends the FIN once it is empty.
    pub fn write_to<I: Io + ?Sized>(&mut self, io: &I, then: Then) -> io::Result<Progress> {
        while let Some(front) = self.segments.front_mut() {
            if let Segment::File {
                fd,
                offset,
                remaining,
                limited,
            } = front
            {
                if !*limited {
                    io.limit_unsent(Some(FILE_UNSENT_LIMIT));
                    *limited = true;
                }
                let Some(n) = io.try_send_file(fd.as_fd(), offset, *remaining)? else {
                    return Ok(Progress::Blocked);
                };
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file is shorter than the response length",
                    ));
                }
                *remaining -= n as u64;
                self.pending -= n as u64;
                if *remaining == 0 {
                    io.limit_unsent(None);
                    self.segments.pop_front();
                }
                continue;
            }
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut count = 0;
            for seg in self.segments.iter().take(MAX_IOV) {
                iov[count] = match seg {
                    Segment::Owned { data, pos } => IoSlice::new(&data[*pos..]),
                    // SAFETY: `ptr..ptr + len` is the bytes object's immutable buffer, which
                    // `obj` keeps alive for as long as the segment; pos <= len.
                    Segment::Bytes { ptr, len, pos, .. } => IoSlice::new(unsafe {
                        std::slice::from_raw_parts(ptr.add(*pos), len - pos)
                    }),
                    Segment::File { .. } => break,
                };
                count += 1;
            }
            let n = io.try_write(&iov[..count], then == Then::Fin)?.unwrap_or(0);
            if n == 0 {
                return Ok(Progress::Blocked);
            }
            self.consume(n);
        }
        if then == Then::Fin {
            io.shutdown_write();
        }
        Ok(Progress::Done)
    }

    #[inline]
    fn consume(&mut self, mut n: usize) {
        self.pending -= n as u64;
        while n > 0 {
            let Some(front) = self.segments.front_mut() else {
                return;
            };
            let left = front.remaining() as usize;
            if n >= left {
                n -= left;
                self.segments.pop_front();
            } else {
                match front {
                    Segment::Owned { pos, .. } | Segment::Bytes { pos, .. } => *pos += n,
                    Segment::File { .. } => unreachable!("files are written by sendfile"),
                }
                n = 0;
            }
        }
        while matches!(self.segments.front(), Some(s) if s.remaining() == 0) {
            self.segments.pop_front();
        }
    }

    /// Writes everything, blocking (with a deadline per stall). Call without the GIL.
    pub fn flush_blocking(&mut self, io: &dyn Io, stall_timeout: Duration) -> io::Result<()> {
        loop {
            match self.write_to(io, Then::Continue)? {
                Progress::Done => return Ok(()),
                Progress::Blocked => {
                    io.wait_blocking(Interest::Write, Instant::now() + stall_timeout)?
                }
            }
        }
    }
}

/// Writes the whole queue on the event loop. The client may take as long as it likes overall,
/// but a stall (no room to write at all) longer than `stall_timeout` ends the connection.
pub async fn write_all<T: Transport>(
    io: &T,
    out: &mut OutQueue,
    then: Then,
    stall_timeout: Duration,
) -> io::Result<()> {
    if let Progress::Done = out.write_to(io, then)? {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + stall_timeout;
    let written = io.when_writable(|io| match out.write_to(io, then)? {
        Progress::Done => Ok(Some(())),
        Progress::Blocked => Ok(None),
    });
    match tokio::time::timeout_at(deadline, written).await {
        Ok(result) => result,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}
