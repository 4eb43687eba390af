//! `--log-syslog`: error log lines (and access lines, unless
//! `--disable-redirect-access-to-syslog`) sent to a syslog daemon, framed byte for byte as
//! Gunicorn frames them through Python's `SysLogHandler`:
//!
//! ```text
//! <PRI>gunicorn.PREFIX.error: [PID] MESSAGE\0
//! ```
//!
//! `PRI` is `facility * 8 + severity` (RFC 3164), `PREFIX` is `--log-syslog-prefix` or else the
//! process name with `:` turned into `.`, the program name ends in `.error` or `.access`, and
//! the message ends with a NUL byte. There is no timestamp or host name: the daemon adds them.
//!
//! The socket is opened by the master before it forks, so every worker shares it. Datagram
//! sockets (UDP, unix `dgram`) are written with `MSG_DONTWAIT`: a syslog daemon that cannot
//! keep up loses lines instead of stalling a worker. Stream sockets (TCP, unix `stream`) are
//! written whole, with a one-second send timeout.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use super::Level;
use crate::config::Settings;

/// Gunicorn's facility names and their numbers.
const FACILITIES: [(&str, u32); 21] = [
    ("auth", 4),
    ("authpriv", 10),
    ("cron", 9),
    ("daemon", 3),
    ("ftp", 11),
    ("kern", 0),
    ("lpr", 6),
    ("mail", 2),
    ("news", 7),
    ("security", 4),
    ("syslog", 5),
    ("user", 1),
    ("uucp", 8),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// Where `--log-syslog-to` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `unix://PATH[#dgram|#stream]`: `datagram` is true only for `#dgram`, which insists on a
    /// datagram socket; otherwise (even with `#stream`, as in Gunicorn) a datagram socket is
    /// tried first and a stream socket second, as Python's `SysLogHandler` does.
    Unix {
        path: PathBuf,
        datagram: bool,
    },
    Udp {
        host: String,
        port: u16,
    },
    Tcp {
        host: String,
        port: u16,
    },
}

/// Parses `--log-syslog-to` as Gunicorn does (port 514 and host `localhost` by default).
pub fn parse_address(addr: &str) -> Result<Target, String> {
    if let Some(rest) = addr.strip_prefix("unix://") {
        let (path, kind) = match rest.split_once('#') {
            Some((path, kind)) => (path, Some(kind)),
            None => (rest, None),
        };
        return Ok(Target::Unix {
            path: PathBuf::from(path),
            datagram: kind == Some("dgram"),
        });
    }
    let (rest, stream) = if let Some(rest) = addr.strip_prefix("udp://") {
        (rest, false)
    } else if let Some(rest) = addr.strip_prefix("tcp://") {
        (rest, true)
    } else {
        return Err(format!("invalid syslog address {addr:?}"));
    };
    let host = if rest.contains('[') && rest.contains(']') {
        let inside = rest.split(']').next().unwrap_or_default();
        inside.get(1..).unwrap_or_default().to_lowercase()
    } else if let Some((host, _)) = rest.split_once(':') {
        host.to_lowercase()
    } else if rest.is_empty() {
        "localhost".to_string()
    } else {
        rest.to_lowercase()
    };
    let after = rest.rsplit(']').next().unwrap_or_default();
    let port = match after.split_once(':') {
        Some((_, port)) => {
            if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{port:?} is not a valid port number."));
            }
            port.parse::<u16>()
                .map_err(|_| format!("{port:?} is not a valid port number."))?
        }
        None => 514,
    };
    Ok(if stream {
        Target::Tcp { host, port }
    } else {
        Target::Udp { host, port }
    })
}

/// The facility number of a `--log-syslog-facility` name (any case).
pub fn facility(name: &str) -> Result<u32, String> {
    let lower = name.to_ascii_lowercase();
    FACILITIES
        .iter()
        .find(|(n, _)| *n == lower)
        .map(|(_, f)| *f)
        .ok_or_else(|| format!("unknown syslog facility name {name:?}"))
}

/// The syslog severity of a log level (Python's `SysLogHandler.mapPriority`).
pub fn severity(level: Level) -> u32 {
    match level {
        Level::Debug => 7,
        Level::Info => 6,
        Level::Warning => 4,
        Level::Error => 3,
        Level::Critical => 2,
    }
}

/// One syslog message, NUL-terminated, as Gunicorn sends it.
pub fn frame(facility: u32, level: Level, program: &str, pid: u32, message: &str) -> Vec<u8> {
    format!(
        "<{}>{program}: [{pid}] {message}\0",
        (facility << 3) | severity(level)
    )
    .into_bytes()
}

/// The program names: `gunicorn.PREFIX.error` and `gunicorn.PREFIX.access`, the prefix being
/// `--log-syslog-prefix`, else the process name with `:` replaced by `.`.
pub fn program_names(settings: &Settings) -> (String, String) {
    let prefix = match settings.str("syslog_prefix") {
        Some(p) if !p.is_empty() => p.to_string(),
        _ => settings.proc_name().replace(':', "."),
    };
    (
        format!("gunicorn.{prefix}.error"),
        format!("gunicorn.{prefix}.access"),
    )
}

struct Syslog {
    socket: Socket,
    /// Where datagrams go; `None` for a connected socket.
    peer: Option<SockAddr>,
    stream: bool,
    facility: u32,
    error_program: String,
    /// `None` when access lines stay out of syslog.
    access_program: Option<String>,
}

static SYSLOG: RwLock<Option<Syslog>> = RwLock::new(None);

/// Opens the syslog socket when `--log-syslog` is on and `rust` (Rust writes the logs), and
/// drops it otherwise. In the master, before workers are forked. Errors name the address.
pub fn configure(settings: &Settings, rust: bool) -> Result<(), String> {
    let new = if settings.bool("syslog") && rust {
        let addr = settings.str("syslog_addr").unwrap_or("udp://localhost:514");
        let target = parse_address(addr)?;
        let facility = facility(settings.str("syslog_facility").unwrap_or("user"))?;
        let (socket, peer, stream) =
            open(&target).map_err(|e| format!("cannot open syslog socket {addr}: {e}"))?;
        let (error_program, access_program) = program_names(settings);
        Some(Syslog {
            socket,
            peer,
            stream,
            facility,
            error_program,
            access_program: (!settings.bool("disable_redirect_access_to_syslog"))
                .then_some(access_program),
        })
    } else {
        None
    };
    *SYSLOG.write().unwrap_or_else(|e| e.into_inner()) = new;
    Ok(())
}

fn resolve(host: &str, port: u16) -> std::io::Result<SocketAddr> {
    (host, port).to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no address for {host}"),
        )
    })
}

fn open(target: &Target) -> std::io::Result<(Socket, Option<SockAddr>, bool)> {
    match target {
        Target::Udp { host, port } => {
            let addr = resolve(host, *port)?;
            let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
            Ok((socket, Some(SockAddr::from(addr)), false))
        }
        Target::Tcp { host, port } => {
            let addr = resolve(host, *port)?;
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
            socket.connect_timeout(&SockAddr::from(addr), Duration::from_secs(5))?;
            socket.set_write_timeout(Some(Duration::from_secs(1)))?;
            Ok((socket, None, true))
        }
        Target::Unix { path, datagram } => {
            let addr = SockAddr::unix(path)?;
            let dgram = Socket::new(Domain::UNIX, Type::DGRAM, None)?;
            match dgram.connect(&addr) {
                Ok(()) => Ok((dgram, None, false)),
                Err(e) if *datagram => Err(e),
                Err(_) => {
                    let stream = Socket::new(Domain::UNIX, Type::STREAM, None)?;
                    stream.connect(&addr)?;
                    stream.set_write_timeout(Some(Duration::from_secs(1)))?;
                    Ok((stream, None, true))
                }
            }
        }
    }
}

impl Syslog {
    fn send(&self, level: Level, program: &str, message: &str) {
        let bytes = frame(self.facility, level, program, std::process::id(), message);
        // A message the daemon cannot take is dropped: logging never fails a request.
        if self.stream {
            let mut sent = 0;
            while sent < bytes.len() {
                match self
                    .socket
                    .send_with_flags(&bytes[sent..], libc::MSG_NOSIGNAL)
                {
                    Ok(0) | Err(_) => return,
                    Ok(n) => sent += n,
                }
            }
        } else {
            let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
            let _ = match &self.peer {
                Some(peer) => self.socket.send_to_with_flags(&bytes, peer, flags),
                None => self.socket.send_with_flags(&bytes, flags),
            };
        }
    }
}

/// Sends an error log message (the level filter has passed it).
pub fn error_line(level: Level, message: &str) {
    let guard = SYSLOG.read().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = guard.as_ref() {
        s.send(level, &s.error_program, message);
    }
}

/// Whether access lines go to syslog.
pub fn access_enabled() -> bool {
    let guard = SYSLOG.read().unwrap_or_else(|e| e.into_inner());
    guard.as_ref().is_some_and(|s| s.access_program.is_some())
}

/// Sends one access line (without its newline), at INFO.
pub fn access_line(line: &str) {
    let guard = SYSLOG.read().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = guard.as_ref() {
        if let Some(program) = &s.access_program {
            s.send(Level::Info, program, line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_like_gunicorn() {
        let udp = |h: &str, p| Target::Udp {
            host: h.into(),
            port: p,
        };
        assert_eq!(
            parse_address("udp://localhost:514"),
            Ok(udp("localhost", 514))
        );
        assert_eq!(
            parse_address("udp://Example.COM"),
            Ok(udp("example.com", 514))
        );
        assert_eq!(parse_address("udp://"), Ok(udp("localhost", 514)));
        assert_eq!(parse_address("udp://[::1]:5514"), Ok(udp("::1", 5514)));
        assert_eq!(
            parse_address("tcp://10.0.0.1:601"),
            Ok(Target::Tcp {
                host: "10.0.0.1".into(),
                port: 601
            })
        );
        assert_eq!(
            parse_address("unix:///dev/log#dgram"),
            Ok(Target::Unix {
                path: "/dev/log".into(),
                datagram: true
            })
        );
        assert_eq!(
            parse_address("unix:///dev/log#stream"),
            Ok(Target::Unix {
                path: "/dev/log".into(),
                datagram: false
            })
        );
        assert!(parse_address("udp://host:x").is_err());
        assert!(parse_address("localhost:514").is_err());
    }

    #[test]
    fn frame_matches_python_sysloghandler() {
        let f = facility("LOCAL3").unwrap();
        assert_eq!(f, 19);
        assert_eq!(
            frame(f, Level::Warning, "gunicorn.app.error", 42, "careful"),
            b"<156>gunicorn.app.error: [42] careful\0".to_vec()
        );
        assert_eq!(
            frame(1, Level::Info, "gunicorn.x.access", 7, "GET /"),
            b"<14>gunicorn.x.access: [7] GET /\0".to_vec()
        );
        assert!(facility("nope").is_err());
    }
}
