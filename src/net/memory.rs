//! An in-memory transport for tests: the test plays the client through a [`Client`] handle,
//! sending bytes in whatever pieces it likes, closing, and letting the server write only as
//! much as it allows (a slow reader).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::BorrowedFd;
use std::pin::pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;

use super::transport::{take_bounded, Interest, Io, ReadCount, Transport, SPILL_CHUNK};

#[derive(Default)]
struct Pipe {
    /// Bytes the client sent that the server has not read.
    inbound: VecDeque<u8>,
    /// The client closed its side.
    client_closed: bool,
    /// Bytes the server wrote.
    outbound: Vec<u8>,
    /// Bytes the server may still write before it is blocked (`None`: unlimited).
    room: Option<usize>,
    /// The server sent its FIN.
    server_closed: bool,
}

#[derive(Default)]
struct Shared {
    pipe: Mutex<Pipe>,
    /// Wakes application threads blocked in [`Io::wait_blocking`].
    changed: Condvar,
    readable: Notify,
    writable: Notify,
    /// Wakes a client waiting for output.
    wrote: Notify,
}

impl Shared {
    fn pipe(&self) -> MutexGuard<'_, Pipe> {
        self.pipe.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The server's end of an in-memory connection.
pub struct Memory {
    shared: Arc<Shared>,
}

/// The client's end: what a test sends and sees.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

/// A connected pair.
pub fn pair() -> (Memory, Client) {
    let shared = Arc::new(Shared::default());
    (
        Memory {
            shared: Arc::clone(&shared),
        },
        Client { shared },
    )
}

impl Client {
    pub fn send(&self, bytes: &[u8]) {
        self.shared.pipe().inbound.extend(bytes);
        self.wake_server();
    }

    /// Closes the client's side: the server reads the end of the stream.
    pub fn close(&self) {
        self.shared.pipe().client_closed = true;
        self.wake_server();
    }

    /// Lets the server write at most `room` more bytes until the next call (`None`: any).
    pub fn set_room(&self, room: Option<usize>) {
        self.shared.pipe().room = room;
        self.shared.writable.notify_waiters();
        self.shared.changed.notify_all();
    }

    /// Takes what the server wrote so far.
    pub fn take_output(&self) -> Vec<u8> {
        std::mem::take(&mut self.shared.pipe().outbound)
    }

    /// Whether the server sent its FIN.
    pub fn server_closed(&self) -> bool {
        self.shared.pipe().server_closed
    }

    /// Waits until the server wrote something or closed (without taking it).
    pub async fn output_changed(&self) {
        let mut wrote = pin!(self.shared.wrote.notified());
        wrote.as_mut().enable();
        wrote.await;
    }

    fn wake_server(&self) {
        self.shared.readable.notify_waiters();
        self.shared.changed.notify_all();
    }
}

impl Memory {
    fn ready(&self, interest: Interest) -> bool {
        let pipe = self.shared.pipe();
        match interest {
            Interest::Read => !pipe.inbound.is_empty() || pipe.client_closed,
            Interest::Write => pipe.room != Some(0),
        }
    }
}

impl Io for Memory {
    fn try_read(
        &self,
        first: &mut [MaybeUninit<u8>],
        spill: Option<&mut Vec<u8>>,
    ) -> io::Result<Option<ReadCount>> {
        let mut pipe = self.shared.pipe();
        if pipe.inbound.is_empty() {
            return Ok(pipe.client_closed.then_some(ReadCount {
                first: 0,
                total: 0,
                drained: true,
            }));
        }
        let mut to_first = 0;
        for slot in first.iter_mut() {
            let Some(byte) = pipe.inbound.pop_front() else {
                break;
            };
            slot.write(byte);
            to_first += 1;
        }
        let mut to_spill = 0;
        if let Some(spill) = spill {
            let n = pipe.inbound.len().min(SPILL_CHUNK);
            spill.extend(pipe.inbound.drain(..n));
            to_spill = n;
        }
        Ok(Some(ReadCount {
            first: to_first,
            total: to_first + to_spill,
            drained: pipe.inbound.is_empty(),
        }))
    }

    fn try_write(&self, bufs: &[IoSlice<'_>], _more: bool) -> io::Result<Option<usize>> {
        let mut pipe = self.shared.pipe();
        if pipe.server_closed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let room = pipe.room.unwrap_or(usize::MAX);
        if room == 0 {
            return Ok(None);
        }
        let written = take_bounded(bufs, room, |b| pipe.outbound.extend_from_slice(b));
        if let Some(limit) = pipe.room.as_mut() {
            *limit -= written;
        }
        drop(pipe);
        self.shared.wrote.notify_waiters();
        Ok(Some(written))
    }

    fn try_send_file(
        &self,
        file: BorrowedFd<'_>,
        offset: &mut u64,
        count: u64,
    ) -> io::Result<Option<usize>> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::from(file.try_clone_to_owned()?);
        let mut chunk = vec![0u8; count.min(64 * 1024) as usize];
        let n = file.read_at(&mut chunk, *offset)?;
        let written = match self.try_write(&[IoSlice::new(&chunk[..n])], false)? {
            Some(written) => written,
            None => return Ok(None),
        };
        *offset += written as u64;
        Ok(Some(written))
    }

    fn shutdown_write(&self) {
        self.shared.pipe().server_closed = true;
        self.shared.wrote.notify_waiters();
    }

    fn unread_len(&self) -> usize {
        self.shared.pipe().inbound.len()
    }

    fn wait_blocking(&self, interest: Interest, deadline: Instant) -> io::Result<()> {
        let mut pipe = self.shared.pipe();
        loop {
            let ready = match interest {
                Interest::Read => !pipe.inbound.is_empty() || pipe.client_closed,
                Interest::Write => pipe.room != Some(0),
            };
            if ready {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            pipe = self
                .shared
                .changed
                .wait_timeout(pipe, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Transport for Memory {
    async fn when_readable<R>(
        &self,
        mut attempt: impl FnMut(&Self) -> io::Result<Option<(R, ReadCount)>>,
    ) -> io::Result<R> {
        loop {
            let mut readable = pin!(self.shared.readable.notified());
            readable.as_mut().enable();
            if self.ready(Interest::Read) {
                if let Some((done, _)) = attempt(self)? {
                    return Ok(done);
                }
            }
            readable.await;
        }
    }

    async fn when_writable<R>(
        &self,
        mut attempt: impl FnMut(&Self) -> io::Result<Option<R>>,
    ) -> io::Result<R> {
        loop {
            let mut writable = pin!(self.shared.writable.notified());
            writable.as_mut().enable();
            if self.ready(Interest::Write) {
                if let Some(done) = attempt(self)? {
                    return Ok(done);
                }
            }
            writable.await;
        }
    }
}
