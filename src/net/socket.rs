//! The transport of a plain connection (TCP or unix socket), and the few socket options
//! ferrocorn changes.
//!
//! A connection's socket is registered with the event loop only when the connection first has
//! to wait for it. The request usually arrives with the accept (`TCP_DEFER_ACCEPT`), so a
//! connection that closes after one response is read, answered and closed without ever being
//! added to or removed from the worker's epoll set.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::time::Instant;

use tokio::io::unix::AsyncFd;

use super::transport::{Interest, Io, ReadCount, Transport, SPILL_CHUNK};
use crate::log;

/// Segments written per `sendmsg` call at most (the kernel's `UIO_MAXIOV` is 1024).
const MAX_IOV: usize = 1024;

/// A connected, non-blocking socket.
pub struct Socket {
    /// Declared before `fd`: dropped first, so it leaves the epoll set before the close.
    registered: OnceLock<AsyncFd<RawFd>>,
    fd: OwnedFd,
}

impl Socket {
    /// Takes a connected socket, which must be in non-blocking mode.
    pub fn new(fd: OwnedFd) -> Socket {
        Socket {
            registered: OnceLock::new(),
            fd,
        }
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The socket on the event loop, registered now if it is not yet. A socket registered
    /// after some of its bytes arrived is reported ready at once, so nothing is missed.
    fn registered(&self) -> io::Result<&AsyncFd<RawFd>> {
        if let Some(io) = self.registered.get() {
            return Ok(io);
        }
        // SAFETY: the descriptor is `self.fd`, which stays open until after `registered` is
        // dropped (field order).
        let io = unsafe { AsyncFd::register(self.raw()) }
            .inspect_err(|e| log::error(format_args!("cannot register connection: {e}")))?;
        Ok(self.registered.get_or_init(|| io))
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.raw()
    }
}

impl Io for Socket {
    #[inline]
    fn try_read(
        &self,
        first: &mut [MaybeUninit<u8>],
        mut spill: Option<&mut Vec<u8>>,
    ) -> io::Result<Option<ReadCount>> {
        let first_len = first.len();
        let mut iov = [libc::iovec {
            iov_base: first.as_mut_ptr().cast(),
            iov_len: first_len,
        }; 2];
        let mut count = 1;
        if let Some(extra) = spill.as_deref_mut() {
            extra.reserve(SPILL_CHUNK);
            let second = extra.spare_capacity_mut();
            iov[1] = libc::iovec {
                iov_base: second.as_mut_ptr().cast(),
                iov_len: second.len().min(SPILL_CHUNK),
            };
            count = 2;
        }
        let room: usize = iov[..count].iter().map(|v| v.iov_len).sum();
        // SAFETY: the iovecs point into `first` and the spare capacity of `spill`, which are
        // not touched until the lengths grow by what the kernel wrote. One buffer goes through
        // recv(2), which spares the kernel copying in and checking an iovec array, and the
        // file layer that read(2) passes through.
        let read = without_waiting(|| unsafe {
            if count == 1 {
                libc::recv(self.raw(), iov[0].iov_base, iov[0].iov_len, 0)
            } else {
                libc::readv(self.raw(), iov.as_ptr(), count as libc::c_int)
            }
        })?;
        let Some(n) = read else {
            return Ok(None);
        };
        let to_first = n.min(first_len);
        if let Some(extra) = spill {
            // SAFETY: the kernel initialised the rest of `n` at the start of `spill`'s spare
            // capacity.
            unsafe { extra.set_len(extra.len() + (n - to_first)) };
        }
        Ok(Some(ReadCount {
            first: to_first,
            total: n,
            drained: n > 0 && n < room,
        }))
    }

    #[inline]
    fn try_write(&self, bufs: &[IoSlice<'_>], more: bool) -> io::Result<Option<usize>> {
        let flags = if more {
            libc::MSG_NOSIGNAL | libc::MSG_MORE
        } else {
            libc::MSG_NOSIGNAL
        };
        // SAFETY: `IoSlice` is ABI-compatible with `iovec` on unix, and the slices point into
        // live buffers the caller holds; the msghdr names only them. One buffer goes through
        // send(2), which spares the kernel copying in and checking an iovec array.
        without_waiting(|| unsafe {
            match bufs {
                [one] => libc::send(self.raw(), one.as_ptr().cast(), one.len(), flags),
                _ => {
                    // SAFETY: an all-zero msghdr is valid: no name, no control data.
                    let mut msg: libc::msghdr = std::mem::zeroed();
                    msg.msg_iov = bufs.as_ptr().cast_mut().cast();
                    msg.msg_iovlen = bufs.len().min(MAX_IOV);
                    libc::sendmsg(self.raw(), &msg, flags)
                }
            }
        })
    }

    fn try_send_file(
        &self,
        file: BorrowedFd<'_>,
        offset: &mut u64,
        count: u64,
    ) -> io::Result<Option<usize>> {
        let mut off = *offset as libc::off_t;
        let chunk = count.min(1 << 30) as usize;
        // SAFETY: plain syscall on descriptors we hold; `off` is a valid out-parameter.
        let sent = without_waiting(|| unsafe {
            libc::sendfile(self.raw(), file.as_raw_fd(), &mut off, chunk)
        })?;
        if sent.is_some() {
            *offset = off as u64;
        }
        Ok(sent)
    }

    fn limit_unsent(&self, bytes: Option<u32>) {
        // 0 puts back the system default.
        let limit = bytes.map_or(0, |b| b.min(i32::MAX as u32) as libc::c_int);
        set_tcp_option(self.raw(), libc::TCP_NOTSENT_LOWAT, limit);
    }

    #[inline]
    fn shutdown_write(&self) {
        // SAFETY: shutdown on a socket we hold; an error (already shut) is harmless.
        unsafe { libc::shutdown(self.raw(), libc::SHUT_WR) };
    }

    #[inline]
    fn unread_len(&self) -> usize {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        if unsafe { libc::ioctl(self.raw(), libc::FIONREAD, &mut n) } < 0 {
            return 0;
        }
        n.max(0) as usize
    }

    fn wait_blocking(&self, interest: Interest, deadline: Instant) -> io::Result<()> {
        let events = match interest {
            Interest::Read => libc::POLLIN,
            Interest::Write => libc::POLLOUT,
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "socket timed out"));
            }
            let mut pfd = libc::pollfd {
                fd: self.raw(),
                events,
                revents: 0,
            };
            let millis = left.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, millis.max(1)) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            if n > 0 {
                return Ok(());
            }
        }
    }
}

impl Transport for Socket {
    async fn when_readable<R>(
        &self,
        mut attempt: impl FnMut(&Self) -> io::Result<Option<(R, ReadCount)>>,
    ) -> io::Result<R> {
        let sock = self.registered()?;
        loop {
            let mut guard = sock.readable().await?;
            match attempt(self)? {
                Some((done, read)) => {
                    // With edge-triggered readiness, a drained socket sends the next wait
                    // straight to the event loop instead of costing a read that fails with
                    // EAGAIN.
                    if read.drained {
                        guard.clear_ready();
                    }
                    return Ok(done);
                }
                None => guard.clear_ready(),
            }
        }
    }

    async fn when_writable<R>(
        &self,
        mut attempt: impl FnMut(&Self) -> io::Result<Option<R>>,
    ) -> io::Result<R> {
        let sock = self.registered()?;
        loop {
            let mut guard = sock.writable().await?;
            match attempt(self)? {
                Some(done) => return Ok(done),
                None => guard.clear_ready(),
            }
        }
    }
}

/// Runs a non-blocking system call returning a count or -1, again when a signal interrupted
/// it. `None`: it would have blocked.
#[inline]
fn without_waiting(mut call: impl FnMut() -> isize) -> io::Result<Option<usize>> {
    loop {
        let n = call();
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::WouldBlock => return Ok(None),
            io::ErrorKind::Interrupted => {}
            _ => return Err(err),
        }
    }
}

/// Sets an int TCP option. Failures are ignored: a unix socket has no TCP options, and the
/// options set here only tune performance.
pub fn set_tcp_option(fd: RawFd, option: libc::c_int, value: libc::c_int) {
    // SAFETY: setsockopt with an int option on a descriptor the caller holds.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}
