//! Addresses given in settings, parsed as Gunicorn parses them, by the validation of the
//! setting and by the code that uses it alike.

use std::path::PathBuf;

/// Port used when `--statsd-host` names only a host.
const DEFAULT_PORT: u16 = 8125;

/// Where `--statsd-host` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatsdAddr {
    Unix(PathBuf),
    Inet { host: String, port: u16 },
}

/// The message Gunicorn gives for an address it cannot parse.
const ADDRESS_ERROR: &str = "Value must be one of ('host:port', 'unix://PATH')";

/// Parses `--statsd-host` as Gunicorn does: `HOST[:PORT]` (port 8125 by default), `[V6]:PORT`,
/// `unix:PATH` or `unix://PATH`; `unix:NUMBER` is the host `unix` at port NUMBER.
pub fn parse_statsd(value: &str) -> Result<StatsdAddr, String> {
    if let Some(digits) = value.strip_prefix("unix:") {
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            let port = digits.parse().map_err(|_| ADDRESS_ERROR.to_string())?;
            return Ok(StatsdAddr::Inet {
                host: "unix".into(),
                port,
            });
        }
        let path = digits.strip_prefix("//").unwrap_or(digits);
        return Ok(StatsdAddr::Unix(PathBuf::from(path)));
    }
    if value.starts_with("fd://") {
        return Err(ADDRESS_ERROR.into());
    }
    let netloc = value.strip_prefix("tcp://").unwrap_or(value);
    let (host, port) = if netloc.contains('[') && netloc.contains(']') {
        let host = netloc.split(']').next().unwrap_or_default();
        let host = host.get(1..).unwrap_or_default();
        let port = netloc.split_once("]:").map(|(_, p)| p);
        (host, port)
    } else if let Some((host, rest)) = netloc.split_once(':') {
        (host, Some(rest.split(':').next().unwrap_or_default()))
    } else if netloc.is_empty() {
        ("0.0.0.0", None)
    } else {
        (netloc, None)
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p.trim().parse().map_err(|_| ADDRESS_ERROR.to_string())?,
    };
    Ok(StatsdAddr::Inet {
        host: host.to_lowercase(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inet(host: &str, port: u16) -> StatsdAddr {
        StatsdAddr::Inet {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn statsd_addresses_parse_like_gunicorn() {
        assert_eq!(parse_statsd("localhost:9125"), Ok(inet("localhost", 9125)));
        assert_eq!(
            parse_statsd("Stats.Example"),
            Ok(inet("stats.example", 8125))
        );
        assert_eq!(parse_statsd("[::1]:9000"), Ok(inet("::1", 9000)));
        assert_eq!(parse_statsd("[::1]"), Ok(inet("::1", 8125)));
        assert_eq!(parse_statsd("tcp://h:1"), Ok(inet("h", 1)));
        assert_eq!(parse_statsd(""), Ok(inet("0.0.0.0", 8125)));
        assert_eq!(parse_statsd("unix:8125"), Ok(inet("unix", 8125)));
        assert_eq!(
            parse_statsd("unix:///run/statsd.sock"),
            Ok(StatsdAddr::Unix("/run/statsd.sock".into()))
        );
        assert_eq!(
            parse_statsd("unix:/run/statsd.sock"),
            Ok(StatsdAddr::Unix("/run/statsd.sock".into()))
        );
        assert!(parse_statsd("host:port").is_err());
    }
}
