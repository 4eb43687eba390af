//! Request head parsing: request line and header fields.

use super::error::HttpError;

/// How the request body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (no Content-Length, no Transfer-Encoding).
    None,
    Length(u64),
    Chunked,
}

/// Parsing limits and strictness, from the `limit_request_*` and security settings.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest request line in bytes; 0 = unlimited (Gunicorn default 4094).
    pub request_line: usize,
    /// Most header fields (default 100).
    pub fields: usize,
    /// Longest header field line in bytes (default 8190).
    pub field_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_line: 4094,
            fields: 100,
            field_size: 8190,
        }
    }
}

/// A parsed request head. Bytes are as sent; the WSGI layer decodes them.
#[derive(Debug)]
pub struct RequestHead {
    pub method: Box<str>,
    /// The request target exactly as sent (RAW_URI).
    pub target: Box<[u8]>,
    /// Path part of the target, not percent-decoded (for absolute-form, without scheme://host).
    pub path: Box<[u8]>,
    /// Query without the `?`; empty when absent.
    pub query: Box<[u8]>,
    /// Minor version of HTTP/1.x.
    pub version_minor: u8,
    /// Header fields in order: name as sent, value with surrounding whitespace removed.
    pub headers: Vec<(Box<str>, Box<[u8]>)>,
    pub framing: Framing,
    /// Whether the connection may stay open after this request (version default + Connection).
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
}

/// Parses a request head from the start of `buf`.
///
/// `Ok(None)`: the head is incomplete (and within the limits so far) — read more.
/// `Ok(Some((head, n)))`: the head took the first `n` bytes of `buf`.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<(RequestHead, usize)>, HttpError> {
    let _ = (buf, limits);
    todo!("http::head::parse")
}

/// Percent-decodes a request path; invalid escapes stay as they are.
pub fn percent_decode(raw: &[u8]) -> Vec<u8> {
    raw.to_vec()
}

/// Parsing limits from the settings.
pub fn limits_from_settings(settings: &crate::config::Settings) -> Limits {
    Limits {
        request_line: settings.uint("limit_request_line") as usize,
        fields: settings.uint("limit_request_fields") as usize,
        field_size: settings.uint("limit_request_field_size") as usize,
    }
}
