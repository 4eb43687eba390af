//! Why a request cannot be served, with Gunicorn's statuses and messages; the answer's bytes
//! come from [`super::response::error_answer`].

/// A request the server refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub status: u16,
    pub reason: &'static str,
    /// The explanation shown in the answer's body and the log.
    pub message: String,
}

/// Python-`repr`-like quoting of client bytes, so messages read like Gunicorn's.
pub fn quoted(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('\'');
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\'' => out.push_str("\\'"),
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('\'');
    out
}

impl HttpError {
    fn bad_request(message: String) -> HttpError {
        HttpError {
            status: 400,
            reason: "Bad Request",
            message,
        }
    }

    pub fn invalid_request_line(line: &[u8]) -> HttpError {
        Self::bad_request(format!(
            "Invalid Request Line 'Invalid HTTP request line: {}'",
            quoted(line)
        ))
    }
    pub fn invalid_method(method: &[u8]) -> HttpError {
        Self::bad_request(format!(
            "Invalid Method 'Invalid HTTP method: {}'",
            quoted(method)
        ))
    }
    pub fn invalid_version(version: &[u8]) -> HttpError {
        Self::bad_request(format!(
            "Invalid HTTP Version 'Invalid HTTP Version: {}'",
            quoted(version)
        ))
    }
    pub fn invalid_header(name: &[u8]) -> HttpError {
        Self::bad_request(format!("Invalid HTTP Header: {}", quoted(name)))
    }
    pub fn invalid_header_name(name: &[u8]) -> HttpError {
        Self::bad_request(format!("Invalid HTTP header name: {}", quoted(name)))
    }
    /// A request target of the right form for its method, but with an invalid part.
    pub fn invalid_target(target: &[u8], why: &str) -> HttpError {
        Self::bad_request(format!("Invalid request target {}: {why}", quoted(target)))
    }
    pub fn invalid_host(value: &[u8]) -> HttpError {
        Self::bad_request(format!(
            "Invalid Host header: {} is not host[:port]",
            quoted(value)
        ))
    }
    pub fn missing_host() -> HttpError {
        Self::bad_request("Missing Host header: HTTP/1.1 requires one".into())
    }
    pub fn obsolete_folding(name: &[u8]) -> HttpError {
        Self::bad_request(format!(
            "Obsolete line folding is unacceptable: {}",
            quoted(name)
        ))
    }
    pub fn line_too_long(size: usize, limit: usize) -> HttpError {
        HttpError {
            status: 414,
            reason: "URI Too Long",
            message: format!("Request Line is too large ({size} > {limit})"),
        }
    }
    pub fn headers_too_large(what: &str) -> HttpError {
        HttpError {
            status: 431,
            reason: "Request Header Fields Too Large",
            message: format!("Error parsing headers: '{what}'"),
        }
    }
    pub fn unsupported_coding(value: &[u8]) -> HttpError {
        HttpError {
            status: 501,
            reason: "Not Implemented",
            message: format!("Unsupported transfer coding: {}", quoted(value)),
        }
    }
    pub fn expectation_failed(value: &[u8]) -> HttpError {
        HttpError {
            status: 417,
            reason: "Expectation Failed",
            message: format!("Unable to comply with expectation: {}", quoted(value)),
        }
    }
    pub fn invalid_chunk_size(data: &[u8]) -> HttpError {
        Self::bad_request(format!("Invalid chunk size: {}", quoted(data)))
    }
    pub fn chunk_terminator(data: &[u8]) -> HttpError {
        Self::bad_request(format!(
            "Invalid chunk terminator is not '\\r\\n': {}",
            quoted(data)
        ))
    }
    pub fn invalid_chunk_extension(reason: &str) -> HttpError {
        Self::bad_request(format!("Invalid chunk extension: {reason}"))
    }
    pub fn contradictory_scheme() -> HttpError {
        Self::bad_request("Contradictory scheme headers".into())
    }
    pub fn forbidden_proxy() -> HttpError {
        HttpError {
            status: 403,
            reason: "Forbidden",
            message: "Request forbidden".into(),
        }
    }
    pub fn internal(message: String) -> HttpError {
        HttpError {
            status: 500,
            reason: "Internal Server Error",
            message,
        }
    }
    pub fn request_timeout() -> HttpError {
        HttpError {
            status: 408,
            reason: "Request Timeout",
            message: "Request head not received in time".into(),
        }
    }
    pub fn body_timeout() -> HttpError {
        HttpError {
            status: 408,
            reason: "Request Timeout",
            message: "Request body not received in time".into(),
        }
    }
    /// Plain HTTP sent to a TLS listener, answered in plain text as nginx does.
    pub fn plain_http_to_tls() -> HttpError {
        Self::bad_request("The plain HTTP request was sent to HTTPS port".into())
    }
    /// The worker is at its connection cap (`--worker-connections`).
    pub fn service_unavailable() -> HttpError {
        HttpError {
            status: 503,
            reason: "Service Unavailable",
            message: "The server is at its connection limit; try again later.".into(),
        }
    }

    /// Whether the request was refused for a field's value (Gunicorn's `InvalidHeader`), after
    /// its request line was read: Gunicorn logs an access line for those.
    pub fn is_invalid_header(&self) -> bool {
        self.message.starts_with("Invalid HTTP Header: ")
    }

    /// The error itself, as Gunicorn logs it (`Invalid request from ip=...: {this}`): the
    /// answer's message without the wrapper Gunicorn's error page puts around some errors.
    pub fn logged(&self) -> &str {
        let m = self.message.as_str();
        for prefix in [
            "Invalid Request Line '",
            "Invalid Method '",
            "Invalid HTTP Version '",
            "Error parsing headers: '",
        ] {
            if let Some(inner) = m.strip_prefix(prefix).and_then(|r| r.strip_suffix('\'')) {
                return inner;
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_without_the_page_wrapper() {
        let e = HttpError::invalid_request_line(b"GET /\x01 HTTP/1.1");
        assert_eq!(
            e.logged(),
            "Invalid HTTP request line: 'GET /\\x01 HTTP/1.1'"
        );
        let e = HttpError::invalid_header(b"CONTENT-LENGTH");
        assert_eq!(e.logged(), "Invalid HTTP Header: 'CONTENT-LENGTH'");
        let e = HttpError::headers_too_large("limit request headers fields");
        assert_eq!(e.logged(), "limit request headers fields");
    }

    #[test]
    fn quoting_like_repr() {
        assert_eq!(quoted(b"a'b\r\n\x00"), "'a\\'b\\r\\n\\x00'");
    }
}
