//! A small non-blocking server driven by the caller's `poll(2)`, for a process that has no
//! event loop (the master): it hands out the descriptors to poll and serves those found ready.
//!
//! Each connection sends one request and gets one answer, then is closed. Every step is
//! bounded: a few connections at a time, a request of at most a given size, and a deadline per
//! connection from accept to the last byte written. What to answer is the caller's business.

use std::io::{self, IoSlice};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use super::accept::accept_now;
use super::listeners::{BindAddr, Listener};
use super::socket::Socket;
use super::transport::{read_appending, Io};

/// Bytes read from a connection at a time.
const READ_CHUNK: usize = 2048;

/// What the server allows each connection, and how many it serves at once.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Connections served at once; more are closed on accept.
    pub connections: usize,
    /// Request bytes read without an answer; past them the request is full.
    pub request: usize,
    /// Time a connection gets from accept to its last byte written.
    pub deadline: Duration,
}

/// The caller's answer to a connection's request bytes so far, given whether they reached the
/// bound (nothing more will be read): the answer, or `None` to read more (once the bound is
/// reached, `None` closes the connection unanswered).
pub type Answer<'a> = dyn FnMut(&[u8], bool) -> Option<Vec<u8>> + 'a;

/// What a poll round reports about one of the server's descriptors.
pub struct Ready {
    pub fd: RawFd,
    pub revents: libc::c_short,
}

struct Conn {
    socket: Socket,
    request: Vec<u8>,
    /// The answer, once there is one.
    out: Option<Vec<u8>>,
    written: usize,
    deadline: Instant,
}

/// A listener and the connections in progress.
pub struct PolledServer {
    listener: Listener,
    conns: Vec<Conn>,
    bounds: Bounds,
}

impl PolledServer {
    /// Binds a TCP address or a unix socket path (a stale socket file there is replaced).
    /// Not `listeners::bind`: that one retries for seconds while the address is in use, which
    /// would stall the caller's loop, and tunes the socket for the workers' connections.
    pub fn bind(addr: &BindAddr, bounds: Bounds) -> io::Result<PolledServer> {
        let listener = match addr {
            BindAddr::Tcp { host, port } => {
                let listener = TcpListener::bind((host.as_str(), *port))?;
                listener.set_nonblocking(true)?;
                Listener::Tcp(listener)
            }
            BindAddr::Unix(path) => {
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    use std::os::unix::fs::FileTypeExt;
                    if meta.file_type().is_socket() {
                        let _ = std::fs::remove_file(path);
                    }
                }
                let listener = UnixListener::bind(path)?;
                listener.set_nonblocking(true)?;
                Listener::Unix(listener, path.clone())
            }
            BindAddr::Fd(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "an inherited descriptor is not bound here",
                ))
            }
        };
        Ok(PolledServer {
            listener,
            conns: Vec::new(),
            bounds,
        })
    }

    /// The listening socket, for its address.
    pub fn listener(&self) -> &Listener {
        &self.listener
    }

    /// The descriptors to poll and what for.
    pub fn pollfds(&self) -> Vec<libc::pollfd> {
        let mut fds = vec![libc::pollfd {
            fd: self.listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        for c in &self.conns {
            fds.push(libc::pollfd {
                fd: c.socket.as_raw_fd(),
                events: if c.out.is_some() {
                    libc::POLLOUT
                } else {
                    libc::POLLIN
                },
                revents: 0,
            });
        }
        fds
    }

    /// How long the caller may sleep before a connection's deadline passes.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns.iter().map(|c| c.deadline).min()
    }

    /// Serves what `poll` found ready, then drops connections past their deadline.
    pub fn service(&mut self, ready: &[Ready], answer: &mut Answer<'_>) {
        let listener_fd = self.listener.as_raw_fd();
        for r in ready {
            if r.revents == 0 {
                continue;
            }
            if r.fd == listener_fd {
                self.accept();
            } else if let Some(i) = self.conns.iter().position(|c| c.socket.as_raw_fd() == r.fd) {
                if !progress(&mut self.conns[i], self.bounds.request, answer) {
                    self.conns.swap_remove(i);
                }
            }
        }
        let now = Instant::now();
        self.conns.retain(|c| c.deadline > now);
    }

    fn accept(&mut self) {
        for _ in 0..self.bounds.connections {
            let Ok((socket, _)) = accept_now(self.listener.as_raw_fd()) else {
                return;
            };
            if self.conns.len() >= self.bounds.connections {
                continue; // dropped: closed at once
            }
            self.conns.push(Conn {
                socket,
                request: Vec::new(),
                out: None,
                written: 0,
                deadline: Instant::now() + self.bounds.deadline,
            });
        }
    }

    /// Removes the socket file of a unix listener.
    pub fn cleanup(&self) {
        self.listener.cleanup();
    }
}

/// Reads or writes what the connection allows now. Returns false when it is finished.
fn progress(c: &mut Conn, bound: usize, answer: &mut Answer<'_>) -> bool {
    while c.out.is_none() {
        match read_appending(&c.socket, &mut c.request, READ_CHUNK, None) {
            Ok(None) => return true,
            Ok(Some(read)) if read.total == 0 => return false,
            Ok(Some(_)) => {
                let full = c.request.len() > bound;
                c.out = answer(&c.request, full);
                if full && c.out.is_none() {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    let Some(out) = &c.out else { return true };
    while c.written < out.len() {
        match c
            .socket
            .try_write(&[IoSlice::new(&out[c.written..])], false)
        {
            Ok(Some(0)) | Err(_) => return false,
            Ok(Some(n)) => c.written += n,
            Ok(None) => return true,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    fn server(connections: usize) -> PolledServer {
        let addr = BindAddr::Tcp {
            host: "127.0.0.1".into(),
            port: 0,
        };
        let bounds = Bounds {
            connections,
            request: 16,
            // Beyond the tests' patience: a connection left open fails them.
            deadline: Duration::from_secs(60),
        };
        PolledServer::bind(&addr, bounds).expect("bind 127.0.0.1:0")
    }

    fn connect(server: &PolledServer, request: &[u8]) -> TcpStream {
        let Listener::Tcp(l) = server.listener() else {
            unreachable!("bound to TCP")
        };
        let mut client =
            TcpStream::connect(l.local_addr().expect("local address")).expect("connect");
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        client.write_all(request).expect("send");
        client
    }

    /// Everything the server sent before closing (a reset ends it too).
    fn received(mut client: TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = client.read_to_end(&mut out);
        out
    }

    /// Polls and serves until the connections accepted are all finished, for five seconds
    /// at most.
    fn serve_until_idle(server: &mut PolledServer, answer: &mut Answer<'_>) {
        let until = Instant::now() + Duration::from_secs(5);
        let mut accepted = false;
        while !(accepted && server.conns.is_empty()) && Instant::now() < until {
            let mut fds = server.pollfds();
            // SAFETY: a valid array of pollfds and its length.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
            let ready: Vec<Ready> = fds
                .iter()
                .map(|f| Ready {
                    fd: f.fd,
                    revents: f.revents,
                })
                .collect();
            server.service(&ready, answer);
            accepted |= !server.conns.is_empty();
        }
        assert!(accepted && server.conns.is_empty(), "not served in time");
    }

    #[test]
    fn answers_once_the_request_is_complete_and_closes() {
        let mut server = server(2);
        let clients: Vec<TcpStream> = (0..3).map(|_| connect(&server, b"ab.")).collect();
        let mut answer = |request: &[u8], _full: bool| {
            request
                .ends_with(b".")
                .then(|| request.to_ascii_uppercase())
        };
        serve_until_idle(&mut server, &mut answer);
        let answers: Vec<Vec<u8>> = clients.into_iter().map(received).collect();
        // Past the connection cap, a connection is closed unanswered.
        assert_eq!(answers, [b"AB.".to_vec(), b"AB.".to_vec(), Vec::new()]);
    }

    #[test]
    fn closes_a_request_past_the_bound_unless_answered() {
        let mut server = server(2);
        let silent = connect(&server, &[b'x'; 40]);
        let refused = connect(&server, &[b'y'; 40]);
        let mut answer =
            |request: &[u8], full: bool| (full && request[0] == b'y').then(|| b"too long".to_vec());
        serve_until_idle(&mut server, &mut answer);
        assert_eq!(received(silent), b"");
        assert_eq!(received(refused), b"too long");
    }
}
