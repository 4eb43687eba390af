//! Reads, writes and options on a socket: blocking reads and writes on a connection's
//! non-blocking socket, used while the application runs, and the few socket settings
//! ferrocorn changes (TCP options on listeners and connections, the FIN after a closing
//! connection's last response).
//!
//! The connection's event loop is not touching the socket while the application owns the
//! request, so the request cycle may read the rest of a body or flush a large response
//! directly. Callers release the GIL around these calls.

use std::io;
use std::os::unix::io::RawFd;
use std::time::{Duration, Instant};

/// Waits until `fd` is ready for `events` (POLLIN / POLLOUT) or `deadline` passes.
fn wait(fd: RawFd, events: libc::c_short, deadline: Instant) -> io::Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "socket timed out"));
        }
        let mut pfd = libc::pollfd {
            fd,
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

/// Reads at least one byte into `buf` (appending up to `max` bytes). `Ok(0)` = peer closed.
pub fn read_some(fd: RawFd, buf: &mut Vec<u8>, max: usize, timeout: Duration) -> io::Result<usize> {
    let deadline = Instant::now() + timeout;
    buf.reserve(max);
    loop {
        let spare = buf.spare_capacity_mut();
        let want = spare.len().min(max);
        // SAFETY: reading into the vector's spare capacity, then extending its length by
        // exactly the number of bytes the kernel wrote.
        let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), want, 0) };
        if n >= 0 {
            let n = n as usize;
            // SAFETY: recv wrote `n` <= `want` <= spare capacity bytes at the start of the
            // spare capacity, so the first `len + n` bytes are initialised and allocated.
            unsafe { buf.set_len(buf.len() + n) };
            return Ok(n);
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::WouldBlock => wait(fd, libc::POLLIN, deadline)?,
            io::ErrorKind::Interrupted => {}
            _ => return Err(err),
        }
    }
}

/// Writes as much of `iov` as the socket takes without blocking. Returns bytes written.
/// `more`: the caller sends more (or the FIN) right after, so the kernel may hold a last
/// partial segment back until then (`MSG_MORE`).
pub fn try_writev(fd: RawFd, iov: &[libc::iovec], more: bool) -> io::Result<usize> {
    let flags = if more {
        libc::MSG_NOSIGNAL | libc::MSG_MORE
    } else {
        libc::MSG_NOSIGNAL
    };
    loop {
        // SAFETY: iovecs point into live buffers owned by the caller, and the msghdr names
        // only them. One buffer goes through send(2), which spares the kernel copying in and
        // checking an iovec array.
        let n = unsafe {
            match iov {
                [one] => libc::send(fd, one.iov_base, one.iov_len, flags),
                _ => {
                    let mut msg: libc::msghdr = std::mem::zeroed();
                    msg.msg_iov = iov.as_ptr().cast_mut();
                    msg.msg_iovlen = iov.len().min(1024);
                    libc::sendmsg(fd, &msg, flags)
                }
            }
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::WouldBlock => return Ok(0),
            io::ErrorKind::Interrupted => {}
            _ => return Err(err),
        }
    }
}

/// Waits until the socket can take more bytes.
pub fn wait_writable(fd: RawFd, deadline: Instant) -> io::Result<()> {
    wait(fd, libc::POLLOUT, deadline)
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

/// Sends our FIN now (`shutdown(SHUT_WR)`), right behind the last response of a connection
/// that closes. A client that closes as soon as it has read a response (wrk, many proxies)
/// would otherwise often close first whenever our close comes a moment later, and keep the
/// TIME_WAIT on its side, which its next connect then has to recycle.
pub fn send_fin(fd: RawFd) {
    // SAFETY: shutdown on a socket the caller holds; an error (already shut) is harmless.
    unsafe { libc::shutdown(fd, libc::SHUT_WR) };
}

/// `sendfile(2)` of up to `count` bytes from `file` at `offset` without blocking.
/// `None`: the socket is full; `Some(0)`: the file ended.
pub fn try_sendfile(
    sock: RawFd,
    file: RawFd,
    offset: &mut u64,
    count: u64,
) -> io::Result<Option<usize>> {
    loop {
        let mut off = *offset as libc::off_t;
        let chunk = count.min(1 << 30) as usize;
        // SAFETY: plain syscall on descriptors we hold; `off` is a valid out-parameter.
        let n = unsafe { libc::sendfile(sock, file, &mut off, chunk) };
        if n >= 0 {
            *offset = off as u64;
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
