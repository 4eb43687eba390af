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
        self.display_scheme(false)
    }

    /// As [`Listener::display`], with `https://` for a TCP listener serving TLS.
    pub fn display_scheme(&self, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(addr) => format!("{scheme}://{addr}"),
                Err(_) => format!("{scheme}://?"),
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

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::time::Duration;

/// One `--bind` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindAddr {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
    Fd(RawFd),
}

/// Port used when a `--bind` value names only a host.
const DEFAULT_PORT: u16 = 8000;

/// Parses `HOST`, `HOST:PORT`, `[IPv6]:PORT`, `unix:PATH`, `unix://PATH`, `fd://N`, `tcp://...`.
pub fn parse_bind(value: &str) -> Result<BindAddr, String> {
    let value = value.trim();
    if let Some(path) = value
        .strip_prefix("unix://")
        .or_else(|| value.strip_prefix("unix:"))
    {
        if path.is_empty() {
            return Err(format!(
                "invalid bind address {value:?}: empty unix socket path"
            ));
        }
        return Ok(BindAddr::Unix(PathBuf::from(path)));
    }
    if let Some(fd) = value.strip_prefix("fd://") {
        return fd
            .parse::<RawFd>()
            .ok()
            .filter(|fd| *fd >= 0)
            .map(BindAddr::Fd)
            .ok_or_else(|| {
                format!("invalid bind address {value:?}: fd:// needs a descriptor number")
            });
    }
    let netloc = value.strip_prefix("tcp://").unwrap_or(value);
    let bad = |why: &str| format!("invalid bind address {value:?}: {why}");
    let (host, port) = if let Some(rest) = netloc.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| bad("missing ']'"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(bad("expected ':PORT' after ']'")),
        };
        (host.to_string(), port)
    } else {
        match netloc.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (netloc.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| bad(&format!("{p:?} is not a port number")))?,
        None => DEFAULT_PORT,
    };
    let host = if host.is_empty() {
        "0.0.0.0".to_string()
    } else {
        host
    };
    Ok(BindAddr::Tcp { host, port })
}

impl std::fmt::Display for BindAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindAddr::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            BindAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
            BindAddr::Unix(path) => write!(f, "unix:{}", path.display()),
            BindAddr::Fd(fd) => write!(f, "fd://{fd}"),
        }
    }
}

/// Options for creating listeners.
pub struct BindOptions {
    pub backlog: i32,
    pub reuse_port: bool,
    /// Applied while creating unix sockets, so their mode follows it.
    pub umask: Option<u32>,
}

/// Binds `addr`, retrying while the address is in use (another server is finishing), as
/// Gunicorn does: five attempts a second apart.
pub fn bind(addr: &BindAddr, opts: &BindOptions) -> Result<Listener, String> {
    let mut attempts = 0;
    loop {
        match bind_once(addr, opts) {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempts < 4 => {
                crate::log::error(format_args!("Connection in use: {addr}"));
                crate::log::error(format_args!("connection to {addr} failed: {e}"));
                crate::log::error(format_args!("Retrying in 1 second."));
                attempts += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => return Err(format!("Can't connect to {addr}: {e}")),
        }
    }
}

/// Options for a TCP listener, set by the master so that they hold from its first connection
/// (before any worker runs) and for listeners handed over by systemd or a re-executed master:
///
/// - `TCP_NODELAY`: accepted connections inherit it (Linux copies a listener's options at
///   accept), which saves a system call per connection. Responses are written whole, so there
///   is nothing for Nagle's algorithm to merge.
/// - `TCP_DEFER_ACCEPT` (1 s): a connection is accepted once its first bytes arrive, so the
///   client's handshake wakes no worker and the request is read with the accept. A client
///   that connects and says nothing waits in the kernel, not in a connection slot, and is
///   accepted about a second later (then `--header-timeout` runs as usual).
fn tune_tcp(socket: &socket2::Socket) {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    crate::net::socket::set_tcp_option(fd, libc::TCP_NODELAY, 1);
    crate::net::socket::set_tcp_option(fd, libc::TCP_DEFER_ACCEPT, 1);
}

fn bind_once(addr: &BindAddr, opts: &BindOptions) -> std::io::Result<Listener> {
    use socket2::{Domain, SockAddr, Socket, Type};
    match addr {
        BindAddr::Tcp { host, port } => {
            let sockaddr: SocketAddr = (host.as_str(), *port)
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("no address for {host}"),
                    )
                })?;
            let socket = Socket::new(Domain::for_address(sockaddr), Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            if opts.reuse_port {
                socket.set_reuse_port(true)?;
            }
            if sockaddr.is_ipv6() {
                socket.set_only_v6(true)?;
            }
            socket.bind(&SockAddr::from(sockaddr))?;
            tune_tcp(&socket);
            socket.listen(opts.backlog)?;
            Ok(Listener::Tcp(socket.into()))
        }
        BindAddr::Unix(path) => {
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                use std::os::unix::fs::FileTypeExt;
                if !meta.file_type().is_socket() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        format!("{} exists and is not a socket", path.display()),
                    ));
                }
                std::fs::remove_file(path)?;
            }
            let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
            // SAFETY: umask only changes this process's file-creation mask; restored below.
            let old = opts
                .umask
                .map(|m| unsafe { libc::umask(m as libc::mode_t) });
            let bound = socket.bind(&SockAddr::unix(path)?);
            if let Some(old) = old {
                // SAFETY: umask(2) cannot fail and touches no memory; this puts back the mask
                // saved above.
                unsafe { libc::umask(old) };
            }
            bound?;
            socket.listen(opts.backlog)?;
            Ok(Listener::Unix(socket.into(), path.clone()))
        }
        BindAddr::Fd(fd) => {
            // SAFETY: the operator handed us this descriptor to serve on; we take ownership.
            let socket = unsafe { Socket::from_raw_fd(*fd) };
            let local = socket.local_addr()?;
            if local.is_unix() {
                let path = local
                    .as_pathname()
                    .map(|p| p.to_path_buf())
                    .unwrap_or_default();
                Ok(Listener::Unix(socket.into(), path))
            } else {
                tune_tcp(&socket);
                Ok(Listener::Tcp(socket.into()))
            }
        }
    }
}

impl Listener {
    /// Connections waiting to be accepted (Linux `TCP_INFO`), for `--enable-backlog-metric`;
    /// -1 for a unix socket, where the kernel does not tell (Gunicorn's convention).
    pub fn backlog(&self) -> i64 {
        let Listener::Tcp(l) = self else { return -1 };
        // SAFETY: getsockopt fills at most `len` bytes of the zeroed tcp_info.
        unsafe {
            let mut info: libc::tcp_info = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
            let rc = libc::getsockopt(
                l.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            );
            if rc == 0 {
                i64::from(info.tcpi_unacked)
            } else {
                0
            }
        }
    }

    /// Removes the socket file of a unix listener (on a clean stop).
    pub fn cleanup(&self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> BindAddr {
        BindAddr::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn bind_forms() {
        assert_eq!(
            parse_bind("127.0.0.1:9000").unwrap(),
            tcp("127.0.0.1", 9000)
        );
        assert_eq!(parse_bind("localhost").unwrap(), tcp("localhost", 8000));
        assert_eq!(parse_bind("[::1]:8001").unwrap(), tcp("::1", 8001));
        assert_eq!(parse_bind("[::1]").unwrap(), tcp("::1", 8000));
        assert_eq!(parse_bind(":8002").unwrap(), tcp("0.0.0.0", 8002));
        assert_eq!(
            parse_bind("tcp://10.0.0.1:80").unwrap(),
            tcp("10.0.0.1", 80)
        );
        assert_eq!(
            parse_bind("unix:/tmp/x.sock").unwrap(),
            BindAddr::Unix("/tmp/x.sock".into())
        );
        assert_eq!(
            parse_bind("unix:///tmp/x.sock").unwrap(),
            BindAddr::Unix("/tmp/x.sock".into())
        );
        assert_eq!(parse_bind("fd://3").unwrap(), BindAddr::Fd(3));
    }

    #[test]
    fn bad_binds_name_the_value() {
        for bad in ["127.0.0.1:http", "[::1", "fd://x", "unix:", "1.2.3.4:99999"] {
            let err = parse_bind(bad).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }
}
