//! Which peers may speak for the client: `--forwarded-allow-ips`, the secure-scheme headers
//! and the forwarder headers. Headers from any other peer never change the environ.

use std::net::IpAddr;

use super::error::HttpError;

#[derive(Clone, Debug)]
struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    fn parse(text: &str) -> Option<Network> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Network { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            // An IPv4 peer seen on a dual-stack socket as ::ffff:a.b.c.d.
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Peers allowed by an address list such as `--forwarded-allow-ips` or `--proxy-allow-from`:
/// addresses, networks, or `*` for everyone.
#[derive(Clone, Debug, Default)]
pub struct AllowList {
    allow_all: bool,
    networks: Vec<Network>,
}

impl AllowList {
    /// Entries may also be comma-separated lists. An entry that is not an address or network is
    /// an error naming it.
    pub fn new(entries: &[String]) -> Result<AllowList, String> {
        let mut list = AllowList::default();
        for entry in entries
            .iter()
            .flat_map(|e| e.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            if entry == "*" {
                list.allow_all = true;
            } else {
                list.networks.push(
                    Network::parse(entry)
                        .ok_or_else(|| format!("{entry:?} is not an IP address or network"))?,
                );
            }
        }
        Ok(list)
    }

    /// Whether `peer` is allowed. `None` (a unix-socket peer) always is: only local processes
    /// can reach such a socket.
    pub fn allows(&self, peer: Option<IpAddr>) -> bool {
        match peer {
            None => true,
            Some(ip) => self.allow_all || self.networks.iter().any(|n| n.contains(ip)),
        }
    }
}

/// `--header-map`: what happens to a header whose name contains `_`, which maps to the same
/// environ key as its `-` spelling.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HeaderMap {
    /// Drop it (default).
    #[default]
    Drop,
    /// Answer 400.
    Refuse,
    /// Pass it on as it is.
    Dangerous,
}

impl HeaderMap {
    pub fn parse(value: &str) -> Option<HeaderMap> {
        match value {
            "drop" => Some(HeaderMap::Drop),
            "refuse" => Some(HeaderMap::Refuse),
            "dangerous" => Some(HeaderMap::Dangerous),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct ForwardedPolicy {
    pub header_map: HeaderMap,
    trusted: AllowList,
    /// Upper-case header name and the value that means https.
    secure_scheme_headers: Vec<(String, String)>,
    /// Upper-case header names a trusted forwarder may send even with `_` in them.
    pub forwarder_headers: Vec<String>,
}

impl ForwardedPolicy {
    /// `allow`: addresses and networks (`*` = everyone). An entry that is neither is an error
    /// naming it.
    pub fn new(
        allow: &[String],
        secure_scheme_headers: &[(String, String)],
        forwarder_headers: &[String],
    ) -> Result<ForwardedPolicy, String> {
        Ok(ForwardedPolicy {
            header_map: HeaderMap::Drop,
            trusted: AllowList::new(allow)?,
            secure_scheme_headers: secure_scheme_headers
                .iter()
                .map(|(k, v)| (k.to_ascii_uppercase(), v.clone()))
                .collect(),
            forwarder_headers: forwarder_headers
                .iter()
                .map(|h| h.trim().to_ascii_uppercase())
                .collect(),
        })
    }

    /// Whether `peer` may set the forwarding headers (unix-socket peers may).
    pub fn trusts(&self, peer: Option<IpAddr>) -> bool {
        self.trusted.allows(peer)
    }

    /// Whether the request is to be taken as HTTPS: a `trusted` peer's secure-scheme headers
    /// say so when they are there, as in Gunicorn, else the connection (`tls`). Contradicting
    /// headers are an error (400).
    pub fn is_https<'a>(
        &self,
        trusted: bool,
        tls: bool,
        headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<bool, HttpError> {
        let announced = if trusted { self.scheme(headers)? } else { None };
        Ok(announced.map_or(tls, |scheme| scheme == "https"))
    }

    /// The URL scheme a trusted peer's headers announce, if any; contradicting headers are an
    /// error (400).
    pub fn scheme<'a>(
        &self,
        headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Option<&'static str>, HttpError> {
        let mut scheme = None;
        for (name, value) in headers {
            for (secure_name, secure_value) in &self.secure_scheme_headers {
                if name.eq_ignore_ascii_case(secure_name) {
                    let this = if value == secure_value.as_bytes() {
                        "https"
                    } else {
                        "http"
                    };
                    match scheme {
                        Some(prev) if prev != this => return Err(HttpError::contradictory_scheme()),
                        _ => scheme = Some(this),
                    }
                }
            }
        }
        Ok(scheme)
    }

    /// Whether the header field `name` from a peer (`trusted`: one `--forwarded-allow-ips`
    /// allows) reaches the application. A name with `_` is ambiguous with its `-` spelling once
    /// mapped (`HTTP_X_A`), so `--header-map` decides, unless a trusted forwarder sends it as
    /// one of `--forwarder-headers`. `Err`: the request is refused.
    pub fn admits(&self, name: &str, trusted: bool) -> Result<bool, HttpError> {
        if !name.contains('_') || (trusted && self.forwards(name)) {
            return Ok(true);
        }
        match self.header_map {
            HeaderMap::Drop => Ok(false),
            HeaderMap::Refuse => Err(HttpError::invalid_header_name(name.as_bytes())),
            HeaderMap::Dangerous => Ok(true),
        }
    }

    /// Whether a trusted forwarder may send the header `name` that contains `_`.
    pub fn forwards(&self, name: &str) -> bool {
        self.forwarder_headers
            .iter()
            .any(|h| h == "*" || h.eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str]) -> ForwardedPolicy {
        let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        let secure = vec![
            ("X-FORWARDED-PROTO".to_string(), "https".to_string()),
            ("X-FORWARDED-SSL".to_string(), "on".to_string()),
        ];
        ForwardedPolicy::new(&allow, &secure, &[]).expect("valid policy")
    }

    #[test]
    fn trust_by_address_and_network() {
        let p = policy(&["127.0.0.1,::1", "10.0.0.0/8"]);
        assert!(p.trusts(Some("127.0.0.1".parse().unwrap())));
        assert!(p.trusts(Some("::1".parse().unwrap())));
        assert!(p.trusts(Some("10.20.30.40".parse().unwrap())));
        assert!(p.trusts(Some("::ffff:10.1.1.1".parse().unwrap())));
        assert!(!p.trusts(Some("192.168.1.1".parse().unwrap())));
        assert!(p.trusts(None));
        assert!(policy(&["*"]).trusts(Some("8.8.8.8".parse().unwrap())));
    }

    #[test]
    fn bad_entries_are_named() {
        let err = ForwardedPolicy::new(&["10.0.0.0/99".to_string()], &[], &[]).unwrap_err();
        assert!(err.contains("10.0.0.0/99"));
    }

    #[test]
    fn scheme_headers() {
        let p = policy(&["*"]);
        let h = [("X-Forwarded-Proto", &b"https"[..])];
        assert_eq!(p.scheme(h.iter().copied()).unwrap(), Some("https"));
        let h = [
            ("X-Forwarded-Proto", &b"https"[..]),
            ("X-Forwarded-Ssl", &b"off"[..]),
        ];
        assert!(p.scheme(h.iter().copied()).is_err());
        let h = [("Host", &b"x"[..])];
        assert_eq!(p.scheme(h.iter().copied()).unwrap(), None);
    }
}
