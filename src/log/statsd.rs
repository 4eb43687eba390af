//! `--statsd-host`: Gunicorn's StatsD metrics, same names, types and datagrams.
//!
//! - per request, from the worker: `gunicorn.request.duration` (timer, milliseconds),
//!   `gunicorn.requests` (counter) and `gunicorn.request.status.<code>` (counter);
//! - from the master, when the number of workers changes: `gunicorn.workers` (gauge);
//! - for every log message at warning and above, whatever `--log-level` keeps:
//!   `gunicorn.log.warning|error|critical|exception` (counters).
//!
//! `--statsd-prefix` goes in front of every name (with one `.` after it) and
//! `--dogstatsd-tags` after every datagram (`|#tags`). The socket is a connected, non-blocking
//! UDP (or unix datagram) socket opened by the master before it forks; a datagram that cannot
//! be sent at once is dropped, so metrics never hold up a request. Nothing here takes the GIL.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use super::Level;
use crate::config::address::{parse_statsd, StatsdAddr};
use crate::config::Settings;

/// `--statsd-prefix` as Gunicorn normalises it: trailing dots become exactly one, provided
/// the prefix has at least two characters before them.
pub fn normalize_prefix(prefix: &str) -> String {
    let stem = prefix.trim_end_matches('.');
    if stem.chars().count() >= 2 && !stem.contains('\n') {
        format!("{stem}.")
    } else {
        prefix.to_string()
    }
}

/// Python's `repr()` of a float: the shortest text that reads back the same, with `.0` on
/// whole numbers.
pub fn py_float(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e16 {
        format!("{value:.1}")
    } else {
        format!("{value}")
    }
}

/// Milliseconds as Gunicorn computes them: whole seconds times 1000 plus microseconds / 1000.
pub fn duration_ms(duration: Duration) -> f64 {
    (duration.as_secs() * 1000) as f64 + f64::from(duration.subsec_micros()) / 1000.0
}

struct Statsd {
    socket: Socket,
    prefix: String,
    /// `|#tags`, or empty.
    suffix: String,
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static STATSD: RwLock<Option<Statsd>> = RwLock::new(None);

/// Opens the StatsD socket when `--statsd-host` is set (and closes it when unset). In the
/// master, before workers are forked. A host that cannot be reached is logged and metrics
/// stay off, as in Gunicorn (which drops its socket silently).
pub fn configure(settings: &Settings, builtin_logger: bool) -> Result<(), String> {
    let host = settings
        .str("statsd_host")
        .filter(|_| builtin_logger)
        .map(str::to_string);
    let new = match host {
        None => None,
        Some(host) => {
            let addr = parse_statsd(&host)?;
            match connect(&addr) {
                Ok(socket) => {
                    let tags = settings.str("dogstatsd_tags").unwrap_or_default();
                    Some(Statsd {
                        socket,
                        prefix: normalize_prefix(settings.str("statsd_prefix").unwrap_or("")),
                        suffix: if tags.is_empty() {
                            String::new()
                        } else {
                            format!("|#{tags}")
                        },
                    })
                }
                Err(e) => {
                    super::warning(format_args!(
                        "Cannot reach the statsd host {host}: {e}; no metrics will be sent"
                    ));
                    None
                }
            }
        }
    };
    let on = new.is_some();
    *STATSD.write().unwrap_or_else(|e| e.into_inner()) = new;
    ENABLED.store(on, Ordering::Relaxed);
    Ok(())
}

fn connect(addr: &StatsdAddr) -> std::io::Result<Socket> {
    let (socket, target) = match addr {
        StatsdAddr::Unix(path) => (
            Socket::new(Domain::UNIX, Type::DGRAM, None)?,
            SockAddr::unix(path)?,
        ),
        StatsdAddr::Inet { host, port } => {
            // Gunicorn uses IPv6 only for an IPv6 literal; a name resolves to IPv4.
            let v6 = host.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6());
            let target: SocketAddr = (host.as_str(), *port)
                .to_socket_addrs()?
                .find(|a| a.is_ipv6() == v6)
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("no address for {host}"),
                    )
                })?;
            (
                Socket::new(Domain::for_address(target), Type::DGRAM, None)?,
                SockAddr::from(target),
            )
        }
    };
    socket.connect(&target)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Whether metrics are being sent (one relaxed load).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn send(name: &str, value: &dyn std::fmt::Display, kind: &str) {
    let guard = STATSD.read().unwrap_or_else(|e| e.into_inner());
    let Some(s) = guard.as_ref() else { return };
    let mut msg = String::with_capacity(96);
    let _ = write!(msg, "{}{name}:{value}|{kind}{}", s.prefix, s.suffix);
    // Dropped if the socket buffer is full or nobody listens: never wait, never fail.
    let _ = s
        .socket
        .send_with_flags(msg.as_bytes(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
}

/// `NAME:VALUE|c|@1.0`.
pub fn increment(name: &str, value: u64) {
    if enabled() {
        send(name, &value, "c|@1.0");
    }
}

/// `NAME:VALUE|g`.
pub fn gauge(name: &str, value: u64) {
    if enabled() {
        send(name, &value, "g");
    }
}

/// `NAME:VALUE|ms`.
pub fn timer(name: &str, ms: f64) {
    if enabled() {
        send(name, &py_float(ms), "ms");
    }
}

/// `NAME:VALUE|h`.
pub fn histogram(name: &str, value: u64) {
    if enabled() {
        send(name, &value, "h");
    }
}

/// The three per-request metrics, in Gunicorn's order.
pub fn request(status: u16, duration: Duration) {
    timer("gunicorn.request.duration", duration_ms(duration));
    increment("gunicorn.requests", 1);
    if enabled() {
        send(&format!("gunicorn.request.status.{status}"), &1, "c|@1.0");
    }
}

/// Counts a log message at warning level or above.
#[inline]
pub fn count_log(level: Level) {
    if !enabled() {
        return;
    }
    let name = match level {
        Level::Warning => "gunicorn.log.warning",
        Level::Error => "gunicorn.log.error",
        Level::Critical => "gunicorn.log.critical",
        Level::Debug | Level::Info => return,
    };
    increment(name, 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_gets_one_trailing_dot() {
        assert_eq!(normalize_prefix(""), "");
        assert_eq!(normalize_prefix("app"), "app.");
        assert_eq!(normalize_prefix("app..."), "app.");
        assert_eq!(normalize_prefix("a"), "a");
        assert_eq!(normalize_prefix(".."), "..");
    }

    #[test]
    fn floats_print_like_python() {
        assert_eq!(py_float(3.0), "3.0");
        assert_eq!(py_float(0.5), "0.5");
        assert_eq!(py_float(1234.567), "1234.567");
        assert_eq!(
            py_float(duration_ms(Duration::from_micros(1_000_001))),
            "1000.001"
        );
        assert_eq!(py_float(duration_ms(Duration::from_micros(250))), "0.25");
    }
}
