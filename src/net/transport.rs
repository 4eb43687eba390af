//! What every kind of connection offers the layers above: non-blocking reads and vectored
//! writes, a write-side shutdown, waits for readiness on the event loop or (for application
//! threads) with a blocking deadline, and the fast paths only some transports have.
//!
//! Two traits, because the application side needs the connection behind a type-erased handle
//! (a Python object cannot be generic) while the event loop's waits are `async` and so cannot
//! be called through one:
//! - [`Io`]: the non-blocking operations and blocking waits; object-safe.
//! - [`Transport`]: adds the event loop's readiness waits.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::BorrowedFd;
use std::time::Instant;

/// What one read gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadCount {
    /// Bytes placed in the first target.
    pub first: usize,
    /// Bytes read in all (the rest went to the spill buffer).
    pub total: usize,
    /// The read took everything the connection had: the next read would wait.
    pub drained: bool,
}

/// What a blocking wait waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interest {
    Read,
    Write,
}

/// A connection's operations that never wait on the event loop.
///
/// Methods take `&self`: while the application runs, its input stream and its response both
/// hold the connection (one reading the rest of a body, one flushing a large response), one
/// call at a time on the application's thread.
pub trait Io: Send + Sync {
    /// One non-blocking read filling `first` and, when given, appending what follows (up to
    /// [`SPILL_CHUNK`]) to `spill`. `None`: nothing to read yet. A `total` of 0 is the end of
    /// the stream.
    fn try_read(
        &self,
        first: &mut [MaybeUninit<u8>],
        spill: Option<&mut Vec<u8>>,
    ) -> io::Result<Option<ReadCount>>;

    /// One non-blocking vectored write. `None`: no room now. `more`: the caller writes more
    /// (or shuts down) right after, so a last partial segment may be held back until then.
    fn try_write(&self, bufs: &[IoSlice<'_>], more: bool) -> io::Result<Option<usize>>;

    /// Sends up to `count` bytes of `file` from `offset` without copying them through user
    /// memory, advancing `offset`. `None`: no room now; `Some(0)`: the file ended.
    fn try_send_file(
        &self,
        file: BorrowedFd<'_>,
        offset: &mut u64,
        count: u64,
    ) -> io::Result<Option<usize>>;

    /// Limits how much written data may wait unsent in the connection's send queue (`None`:
    /// the system default). Only a hint; a transport without such a limit ignores it.
    fn limit_unsent(&self, _bytes: Option<u32>) {}

    /// Ends our direction of the stream (a FIN); the peer may go on sending. Repeating it
    /// does nothing.
    fn shutdown_write(&self);

    /// Bytes the peer sent that nobody has read yet (0 when unknown).
    fn unread_len(&self) -> usize;

    /// Waits, blocking the calling thread, until the connection is ready for `interest` or
    /// `deadline` passes (`TimedOut`). For application threads, called without the GIL.
    fn wait_blocking(&self, interest: Interest, deadline: Instant) -> io::Result<()>;

    /// Reads at least one byte, appending at most `max` to `buf` (blocking; see
    /// [`Io::wait_blocking`]). `Ok(0)`: the peer closed.
    fn read_blocking(&self, buf: &mut Vec<u8>, max: usize, deadline: Instant) -> io::Result<usize> {
        loop {
            if let Some(n) = read_appending(self, buf, max, None)? {
                return Ok(n.total);
            }
            self.wait_blocking(Interest::Read, deadline)?;
        }
    }
}

/// Bytes a read appends to its spill buffer at most.
pub const SPILL_CHUNK: usize = 16 * 1024;

/// One non-blocking read appending at most `max` bytes to `buf` (and what follows to `spill`).
pub fn read_appending<I: Io + ?Sized>(
    io: &I,
    buf: &mut Vec<u8>,
    max: usize,
    spill: Option<&mut Vec<u8>>,
) -> io::Result<Option<ReadCount>> {
    buf.reserve(max);
    let len = buf.len();
    let first = &mut buf.spare_capacity_mut()[..max];
    let Some(read) = io.try_read(first, spill)? else {
        return Ok(None);
    };
    // SAFETY: `try_read` initialised `read.first` bytes at the start of `buf`'s spare
    // capacity.
    unsafe { buf.set_len(len + read.first) };
    Ok(Some(read))
}

/// Hands the front of `bufs`, at most `room` bytes, to `push`, as a write into an in-memory
/// transport takes them. Returns the count of bytes taken.
pub fn take_bounded(bufs: &[IoSlice<'_>], mut room: usize, mut push: impl FnMut(&[u8])) -> usize {
    let mut taken = 0;
    for buf in bufs {
        let n = buf.len().min(room);
        push(&buf[..n]);
        taken += n;
        room -= n;
        if room == 0 {
            break;
        }
    }
    taken
}

/// A connection as the event loop drives it.
#[allow(async_fn_in_trait)] // Used through generics on one thread; no `Send` bound wanted.
pub trait Transport: Io + Sized + 'static {
    /// Waits until the connection has bytes (or its end), then runs `attempt` (which reads
    /// without blocking and returns `None` when there was nothing to read), again until it
    /// reads. Whatever the read needs (a buffer) is taken only once bytes are there.
    async fn when_readable<R>(
        &self,
        attempt: impl FnMut(&Self) -> io::Result<Option<(R, ReadCount)>>,
    ) -> io::Result<R>;

    /// Waits until the connection has bytes (or its end), then reads once as
    /// [`Io::try_read`] does.
    async fn read(
        &self,
        first: &mut [MaybeUninit<u8>],
        mut spill: Option<&mut Vec<u8>>,
    ) -> io::Result<ReadCount> {
        self.when_readable(|io| {
            let read = io.try_read(first, spill.as_deref_mut())?;
            Ok(read.map(|count| (count, count)))
        })
        .await
    }

    /// Waits until the connection may take bytes, then runs `attempt` (which writes without
    /// blocking and returns `None` when it found no room), again until it returns a value.
    async fn when_writable<R>(
        &self,
        attempt: impl FnMut(&Self) -> io::Result<Option<R>>,
    ) -> io::Result<R>;
}

/// Appends at most `max` bytes to `buf` from one read, waiting for them on the event loop.
/// `Ok(0)`: the peer closed.
pub async fn read_into<T: Transport>(
    io: &T,
    buf: &mut Vec<u8>,
    max: usize,
    spill: Option<&mut Vec<u8>>,
) -> io::Result<usize> {
    buf.reserve(max);
    let len = buf.len();
    let first = &mut buf.spare_capacity_mut()[..max];
    let read = io.read(first, spill).await?;
    // SAFETY: `read` initialised `read.first` bytes at the start of `buf`'s spare capacity.
    unsafe { buf.set_len(len + read.first) };
    Ok(read.total)
}
