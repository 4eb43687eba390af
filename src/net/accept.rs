//! Accepting connections on a listener from the worker's event loop.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::io::RawFd;

use tokio::io::unix::AsyncFd;

use super::listeners::Listener;
use super::socket::Socket;

/// Who is on the other end of a connection.
#[derive(Clone, Copy, Debug)]
pub enum Peer {
    Tcp(SocketAddr),
    Unix,
}

impl Peer {
    pub fn ip(&self) -> Option<IpAddr> {
        self.socket_addr().map(|addr| addr.ip())
    }

    /// The TCP peer's address; `None` on a unix socket.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Peer::Tcp(addr) => Some(*addr),
            Peer::Unix => None,
        }
    }
}

/// A listening socket on the worker's event loop.
pub struct Acceptor {
    listener: AsyncFd<RawFd>,
}

impl Acceptor {
    /// Puts `listener`, which must stay open for as long as the acceptor lives, on the
    /// event loop.
    pub fn new(listener: &Listener) -> io::Result<Acceptor> {
        let fd = listener.as_raw_fd();
        set_nonblocking(fd)?;
        // SAFETY: the master's listeners stay open for the worker's whole life, which the
        // acceptors (dropped with the worker's event loop) do not outlive.
        let listener = unsafe { AsyncFd::register(fd) }?;
        Ok(Acceptor { listener })
    }

    /// The next connection, skipping the errors a listener reports for a connection that went
    /// away before it was accepted.
    pub async fn accept(&self) -> io::Result<(Socket, Peer)> {
        loop {
            let mut guard = self.listener.readable().await?;
            let result = guard.try_io(|l| accept_now(*l.get_ref()));
            match result {
                Ok(Ok(accepted)) => return Ok(accepted),
                Ok(Err(e)) if is_transient_accept_error(&e) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

fn accept_now(listener: RawFd) -> io::Result<(Socket, Peer)> {
    // SAFETY: an all-zero sockaddr_storage is a valid (empty) address buffer.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: accept4 writes at most `len` bytes of address into `storage`.
    let fd = unsafe {
        libc::accept4(
            listener,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: accept4 returned a new descriptor that we now own.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // TCP_NODELAY comes from the listener (see `net::listeners::tune_tcp`).
    let peer = match socket_addr(&storage) {
        Some(sa) => Peer::Tcp(sa),
        None => Peer::Unix,
    };
    Ok((Socket::new(owned), peer))
}

/// The IP address of a peer, or `None` for a unix-socket peer.
fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNABORTED) | Some(libc::EINTR) | Some(libc::EPROTO) | Some(libc::EPERM)
    )
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller holds.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
