//! Listening sockets: parsing `--bind` addresses and creating the sockets the workers share.

use std::os::unix::io::{AsRawFd, RawFd};

/// A bound, listening socket, shared by every worker.
#[derive(Debug)]
pub enum Listener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener, std::path::PathBuf),
}

impl Listener {
    /// As Gunicorn prints it: `http://127.0.0.1:8000`, `http://[::1]:8000`, `unix:/run/app.sock`.
    pub fn display(&self) -> String {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(addr) => format!("http://{addr}"),
                Err(_) => "http://?".to_string(),
            },
            Listener::Unix(_, path) => format!("unix:{}", path.display()),
        }
    }

    /// SERVER_NAME and SERVER_PORT for requests without a Host header.
    pub fn server_name_port(&self) -> (String, String) {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(addr) => (addr.ip().to_string(), addr.port().to_string()),
                Err(_) => (String::new(), String::new()),
            },
            Listener::Unix(_, path) => (path.display().to_string(), String::new()),
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l, _) => l.as_raw_fd(),
        }
    }
}
