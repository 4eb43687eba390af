//! PROXY protocol v1 (text) and v2 (binary) headers, sent by a load balancer in front of the
//! server before the first request of a connection to say who the client really is.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::error::HttpError;

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line the specification allows, CRLF included.
const V1_MAX: usize = 107;

/// `--proxy-protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Off,
    V1,
    V2,
    Auto,
}

impl Mode {
    pub fn parse(value: &str) -> Option<Mode> {
        match value.to_ascii_lowercase().as_str() {
            "off" | "false" | "none" | "" => Some(Mode::Off),
            "v1" => Some(Mode::V1),
            "v2" => Some(Mode::V2),
            "auto" | "true" => Some(Mode::Auto),
            _ => None,
        }
    }
}

/// What the header says about the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyInfo {
    /// `TCP4`, `TCP6`, `LOCAL`, `UNSPEC` or `UNKNOWN`.
    pub protocol: &'static str,
    pub client: Option<(IpAddr, u16)>,
    pub proxy: Option<(IpAddr, u16)>,
}

fn invalid(message: impl Into<String>) -> HttpError {
    HttpError {
        status: 400,
        reason: "Bad Request",
        message: format!("Invalid PROXY line {}", message.into()),
    }
}

/// Parses a PROXY header at the start of `buf`.
///
/// `Ok(None)`: more bytes are needed to decide. `Ok(Some((None, 0)))`: the connection does
/// not start with a PROXY header. `Ok(Some((Some(info), n)))`: the header took `n` bytes.
pub fn parse(buf: &[u8], mode: Mode) -> Result<Option<(Option<ProxyInfo>, usize)>, HttpError> {
    if mode == Mode::Off {
        return Ok(Some((None, 0)));
    }
    let could_be = |prefix: &[u8]| {
        let n = buf.len().min(prefix.len());
        buf[..n] == prefix[..n]
    };
    if matches!(mode, Mode::V2 | Mode::Auto) && could_be(V2_SIGNATURE) {
        if buf.len() < 16 {
            return Ok(None);
        }
        return parse_v2(buf).map(|r| r.map(|(info, n)| (Some(info), n)));
    }
    if matches!(mode, Mode::V1 | Mode::Auto) && could_be(b"PROXY ") {
        if buf.len() < 6 {
            return Ok(None);
        }
        return parse_v1(buf).map(|r| r.map(|(info, n)| (Some(info), n)));
    }
    Ok(Some((None, 0)))
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyInfo, usize)>, HttpError> {
    let Some(end) = memchr::memmem::find(&buf[..buf.len().min(V1_MAX)], b"\r\n") else {
        if buf.len() >= V1_MAX {
            return Err(invalid("(too long)"));
        }
        return Ok(None);
    };
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| invalid("(not text)"))?;
    let bits: Vec<&str> = line.split(' ').collect();
    if bits.len() != 6 {
        return Err(invalid(format!("'{line}'")));
    }
    let protocol = match bits[1] {
        "TCP4" => "TCP4",
        "TCP6" => "TCP6",
        other => return Err(invalid(format!("protocol '{other}' not supported"))),
    };
    let addr = |text: &str| -> Result<IpAddr, HttpError> {
        let ip = if protocol == "TCP4" {
            text.parse::<Ipv4Addr>().map(IpAddr::V4).ok()
        } else {
            text.parse::<Ipv6Addr>().map(IpAddr::V6).ok()
        };
        ip.ok_or_else(|| invalid(format!("'{line}'")))
    };
    let port = |text: &str| -> Result<u16, HttpError> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(format!("invalid port '{line}'")));
        }
        text.parse::<u16>()
            .map_err(|_| invalid(format!("invalid port '{line}'")))
    };
    let info = ProxyInfo {
        protocol,
        client: Some((addr(bits[2])?, port(bits[4])?)),
        proxy: Some((addr(bits[3])?, port(bits[5])?)),
    };
    Ok(Some((info, end + 2)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyInfo, usize)>, HttpError> {
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(invalid(format!("unsupported version {}", ver_cmd >> 4)));
    }
    let command = ver_cmd & 0x0f;
    if command > 1 {
        return Err(invalid(format!("unsupported command {command}")));
    }
    let length = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    let total = 16 + length;
    if buf.len() < total {
        return Ok(None);
    }
    if command == 0 {
        return Ok(Some((
            ProxyInfo {
                protocol: "LOCAL",
                client: None,
                proxy: None,
            },
            total,
        )));
    }
    let family = buf[13] >> 4;
    let transport = buf[13] & 0x0f;
    let data = &buf[16..total];
    let port = |at: usize| u16::from_be_bytes([data[at], data[at + 1]]);
    let info = match family {
        0 => ProxyInfo {
            protocol: "UNSPEC",
            client: None,
            proxy: None,
        },
        _ if transport != 1 => return Err(invalid("only TCP protocol is supported")),
        1 => {
            if length < 12 {
                return Err(invalid("insufficient address data for IPv4"));
            }
            let src = Ipv4Addr::new(data[0], data[1], data[2], data[3]);
            let dst = Ipv4Addr::new(data[4], data[5], data[6], data[7]);
            ProxyInfo {
                protocol: "TCP4",
                client: Some((IpAddr::V4(src), port(8))),
                proxy: Some((IpAddr::V4(dst), port(10))),
            }
        }
        2 => {
            if length < 36 {
                return Err(invalid("insufficient address data for IPv6"));
            }
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src.copy_from_slice(&data[0..16]);
            dst.copy_from_slice(&data[16..32]);
            ProxyInfo {
                protocol: "TCP6",
                client: Some((IpAddr::V6(Ipv6Addr::from(src)), port(32))),
                proxy: Some((IpAddr::V6(Ipv6Addr::from(dst)), port(34))),
            }
        }
        3 => ProxyInfo {
            protocol: "UNIX",
            client: None,
            proxy: None,
        },
        other => return Err(invalid(format!("unsupported address family {other}"))),
    };
    Ok(Some((info, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_tcp4() {
        let buf = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n";
        let (info, n) = parse(buf, Mode::Auto).unwrap().unwrap();
        let info = info.unwrap();
        assert_eq!(&buf[n..n + 3], b"GET");
        assert_eq!(info.client, Some(("192.168.0.1".parse().unwrap(), 56324)));
        assert_eq!(info.proxy, Some(("192.168.0.11".parse().unwrap(), 443)));
    }

    #[test]
    fn v1_rejects_garbage() {
        for bad in [
            &b"PROXY TCP4 192.168.0.1 192.16...\r\n"[..],
            b"PROXY TCP4 192.168.0.1 192.168.0.11 65iii 100000\r\n",
            b"PROXY TCP4 not-an-ip 192.168.0.11 56324 443\r\n",
            b"PROXY UDP4 1.1.1.1 2.2.2.2 1 2\r\n",
        ] {
            assert!(
                parse(bad, Mode::Auto).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn v2_ipv4_split_anywhere() {
        let mut buf = V2_SIGNATURE.to_vec();
        buf.extend_from_slice(&[
            0x21, 0x11, 0x00, 0x0c, 192, 168, 1, 10, 192, 168, 1, 1, 0x30, 0x39, 0x01, 0xbb,
        ]);
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n");
        for cut in 0..28 {
            assert_eq!(parse(&buf[..cut], Mode::Auto).unwrap(), None, "cut {cut}");
        }
        let (info, n) = parse(&buf, Mode::V2).unwrap().unwrap();
        assert_eq!(n, 28);
        assert_eq!(
            info.unwrap().client,
            Some(("192.168.1.10".parse().unwrap(), 12345))
        );
    }

    #[test]
    fn plain_requests_pass_through() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n", Mode::Auto).unwrap(),
            Some((None, 0))
        );
        assert_eq!(parse(b"PROXY TCP4", Mode::V2).unwrap(), Some((None, 0)));
        assert_eq!(
            parse(b"PROXY TCP4 1.1.1.1 2.2.2.2 1 2\r\n", Mode::Off).unwrap(),
            Some((None, 0))
        );
    }
}
