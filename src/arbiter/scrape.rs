//! `--metrics-bind`: the master answers `GET /metrics` in Prometheus' text format.
//!
//! The master is single-threaded and has no runtime, so this is a small non-blocking server
//! driven by the master's own `poll(2)`: the listener and each open scrape connection are
//! polled beside the signal pipe. Every step is bounded: a few connections at a time, a
//! request head of at most 8 KiB, five seconds per connection from accept to the last byte.
//! A slow or silent scraper is dropped at its deadline; it can never hold up the master.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use super::listeners::{self, BindAddr};

/// Scrape connections served at once; more are closed on accept.
const MAX_CONNECTIONS: usize = 8;
/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Time a connection gets from accept to its last byte written.
const DEADLINE: Duration = Duration::from_secs(5);

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, std::path::PathBuf),
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
}

struct Conn {
    stream: Stream,
    head: Vec<u8>,
    /// The response, once the head is complete.
    out: Option<Vec<u8>>,
    written: usize,
    deadline: Instant,
}

/// The metrics endpoint: its listener and the scrapes in progress.
pub struct MetricsServer {
    listener: Listener,
    conns: Vec<Conn>,
    /// `--metrics-bind` as given, to tell whether a HUP changed it.
    pub bind: String,
}

/// What a poll round reports about one of our descriptors.
pub struct Ready {
    pub fd: RawFd,
    pub revents: libc::c_short,
}

impl MetricsServer {
    /// Binds `--metrics-bind` (`HOST:PORT` or `unix:PATH`). Errors name the address.
    pub fn bind(value: &str) -> Result<MetricsServer, String> {
        let addr = listeners::parse_bind(value)?;
        let cannot = |e: io::Error| format!("cannot bind the metrics endpoint {value}: {e}");
        let listener = match &addr {
            BindAddr::Tcp { host, port } => {
                Listener::Tcp(TcpListener::bind((host.as_str(), *port)).map_err(cannot)?)
            }
            BindAddr::Unix(path) => {
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    use std::os::unix::fs::FileTypeExt;
                    if meta.file_type().is_socket() {
                        let _ = std::fs::remove_file(path);
                    }
                }
                Listener::Unix(UnixListener::bind(path).map_err(cannot)?, path.clone())
            }
            BindAddr::Fd(_) => return Err(format!("metrics_bind cannot be a descriptor: {value}")),
        };
        match &listener {
            Listener::Tcp(l) => l.set_nonblocking(true),
            Listener::Unix(l, _) => l.set_nonblocking(true),
        }
        .map_err(cannot)?;
        Ok(MetricsServer {
            listener,
            conns: Vec::new(),
            bind: value.to_string(),
        })
    }

    /// As logged: `http://127.0.0.1:9100/metrics` or `unix:/run/metrics.sock`.
    pub fn display(&self) -> String {
        match &self.listener {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(addr) => format!("http://{addr}/metrics"),
                Err(_) => "http://?/metrics".into(),
            },
            Listener::Unix(_, path) => format!("unix:{}", path.display()),
        }
    }

    fn listener_fd(&self) -> RawFd {
        match &self.listener {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l, _) => l.as_raw_fd(),
        }
    }

    /// The descriptors to poll and what for.
    pub fn pollfds(&self) -> Vec<libc::pollfd> {
        let mut fds = vec![libc::pollfd {
            fd: self.listener_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        for c in &self.conns {
            fds.push(libc::pollfd {
                fd: c.stream.fd(),
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

    /// How long the master may sleep before a connection's deadline passes.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns.iter().map(|c| c.deadline).min()
    }

    /// Serves what `poll` found ready, then drops connections past their deadline. `render`
    /// gives the metrics text; it is called once per complete request.
    pub fn service(&mut self, ready: &[Ready], render: &dyn Fn() -> String) {
        let listener_fd = self.listener_fd();
        for r in ready {
            if r.revents == 0 {
                continue;
            }
            if r.fd == listener_fd {
                self.accept();
            } else if let Some(i) = self.conns.iter().position(|c| c.stream.fd() == r.fd) {
                if !progress(&mut self.conns[i], render) {
                    self.conns.swap_remove(i);
                }
            }
        }
        let now = Instant::now();
        self.conns.retain(|c| c.deadline > now);
    }

    fn accept(&mut self) {
        for _ in 0..MAX_CONNECTIONS {
            let stream = match &self.listener {
                Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
                Listener::Unix(l, _) => l.accept().map(|(s, _)| Stream::Unix(s)),
            };
            let Ok(stream) = stream else { return };
            if self.conns.len() >= MAX_CONNECTIONS {
                continue; // dropped: closed at once
            }
            let nonblocking = match &stream {
                Stream::Tcp(s) => s.set_nonblocking(true),
                Stream::Unix(s) => s.set_nonblocking(true),
            };
            if nonblocking.is_err() {
                continue;
            }
            self.conns.push(Conn {
                stream,
                head: Vec::new(),
                out: None,
                written: 0,
                deadline: Instant::now() + DEADLINE,
            });
        }
    }

    /// Removes the socket file of a unix listener.
    pub fn cleanup(&self) {
        if let Listener::Unix(_, path) = &self.listener {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Reads or writes what the connection allows now. Returns false when it is finished.
fn progress(c: &mut Conn, render: &dyn Fn() -> String) -> bool {
    if c.out.is_none() {
        let mut buf = [0u8; 2048];
        loop {
            match c.stream.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => c.head.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
            if c.head.len() > MAX_HEAD {
                c.out = Some(response(431, "Request Header Fields Too Large", "", false));
                break;
            }
            if memchr::memmem::find(&c.head, b"\r\n\r\n").is_some() {
                break;
            }
        }
        if c.out.is_none() {
            if memchr::memmem::find(&c.head, b"\r\n\r\n").is_none() {
                return true;
            }
            c.out = Some(answer(&c.head, render));
        }
    }
    let Some(out) = &c.out else { return true };
    while c.written < out.len() {
        match c.stream.write(&out[c.written..]) {
            Ok(0) => return false,
            Ok(n) => c.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    false
}

/// The response to a complete request head.
fn answer(head: &[u8], render: &dyn Fn() -> String) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default();
    let is_head = method == "HEAD";
    if method != "GET" && !is_head {
        return response(405, "Method Not Allowed", "", false);
    }
    if path != "/metrics" && path != "/" {
        return response(404, "Not Found", "", is_head);
    }
    response(200, "OK", &render(), is_head)
}

fn response(status: u16, reason: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let render = || "x 1\n".to_string();
        let ok = answer(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", &render);
        assert!(ok.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(ok.ends_with(b"\r\n\r\nx 1\n"));
        let head = answer(b"HEAD /metrics HTTP/1.1\r\n\r\n", &render);
        assert!(head.ends_with(b"Content-Length: 4\r\nConnection: close\r\n\r\n"));
        assert!(answer(b"GET /other HTTP/1.1\r\n\r\n", &render).starts_with(b"HTTP/1.1 404"));
        assert!(answer(b"POST /metrics HTTP/1.1\r\n\r\n", &render).starts_with(b"HTTP/1.1 405"));
    }
}
