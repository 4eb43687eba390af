//! The response side, without I/O: a protocol-neutral response head ([`ResponseHead`]) and its
//! HTTP/1 encoding, the one place where HTTP/1 response bytes are produced: status line,
//! `Server`, `Date`, `Connection`, chunked framing, `100 Continue`, `103 Early Hints` and the
//! error pages. Everything appends to a `Vec<u8>` (an output queue's tail buffer), so a
//! response head costs no allocation of its own.

use std::fmt;

use super::error::HttpError;
use super::head::{is_token, Version};

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// Ends a chunk's data.
pub const CHUNK_END: &[u8] = b"\r\n";
/// The last chunk of a chunked body, with no trailer fields.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A response head as an application gave it, apart from how a protocol frames it.
#[derive(Clone, Copy, Debug)]
pub struct ResponseHead<'a> {
    pub code: u16,
    /// The status as given, code and reason (`200 OK`), accepted by [`parse_status`].
    pub status: &'a str,
    /// The header fields, each a `Name: value\r\n` line from [`push_header_line`]; names are
    /// tokens and values hold no CR or LF, so [`ResponseHead::fields`] splits them again.
    pub lines: &'a [u8],
}

impl<'a> ResponseHead<'a> {
    /// The header fields as (name, value), values in latin-1 bytes.
    pub fn fields(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        let lines = self.lines;
        lines
            .split(|&b| b == b'\n')
            .filter_map(|line| line.strip_suffix(b"\r"))
            .filter_map(|line| {
                let colon = memchr::memchr(b':', line)?;
                Some((&line[..colon], line[colon + 1..].strip_prefix(b" ")?))
            })
    }
}

/// How an HTTP/1 response body is delimited (RFC 9112 section 6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: a HEAD request, or a 1xx, 204 or 304 status.
    None,
    /// By the application's Content-Length.
    Length,
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// By the end of the connection.
    Close,
}

impl BodyFraming {
    /// The framing of a response with status `code` to a request of `version`: the
    /// application's Content-Length if it gave one, else chunked where the client reads it.
    pub fn choose(version: Version, is_head: bool, code: u16, length: Option<u64>) -> BodyFraming {
        if is_head || code == 304 || forbids_content_length(code) {
            BodyFraming::None
        } else if length.is_some() {
            BodyFraming::Length
        } else if version.is_1_1_or_later() {
            BodyFraming::Chunked
        } else {
            BodyFraming::Close
        }
    }
}

/// 1xx and 204 answers carry no body, so no Content-Length either (RFC 9110 section 8.6).
pub fn forbids_content_length(code: u16) -> bool {
    code == 204 || (100..200).contains(&code)
}

/// The HTTP/1 facts of a response, beside its [`ResponseHead`].
#[derive(Clone, Copy, Debug)]
pub struct H1Response {
    /// The request's version; answered in the nearest one this server speaks.
    pub version: Version,
    /// The connection closes after this response.
    pub close: bool,
    pub body: BodyFraming,
}

/// Appends the status line and header section of `head`, blank line included, with the Date
/// value `date` (see `http::date`). Returns the count of bytes appended.
pub fn push_head(
    out: &mut Vec<u8>,
    head: &ResponseHead<'_>,
    h1: &H1Response,
    date: &[u8; 29],
) -> usize {
    let start = out.len();
    out.reserve(96 + head.status.len() + head.lines.len());
    // An unconventional request version (permitted by a setting) is answered in the nearest
    // one this server speaks, as RFC 9110 section 6.2 asks.
    out.extend_from_slice(if h1.version.is_1_1_or_later() {
        b"HTTP/1.1 "
    } else {
        b"HTTP/1.0 "
    });
    out.extend_from_slice(head.status.as_bytes());
    out.extend_from_slice(b"\r\nServer: ferrocorn\r\nDate: ");
    out.extend_from_slice(date);
    // A body delimited by the close needs the close announced.
    out.extend_from_slice(if h1.close || h1.body == BodyFraming::Close {
        b"\r\nConnection: close\r\n"
    } else {
        b"\r\nConnection: keep-alive\r\n"
    });
    if h1.body == BodyFraming::Chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    out.extend_from_slice(head.lines);
    out.extend_from_slice(b"\r\n");
    out.len() - start
}

/// Appends a `103 Early Hints` informational response carrying the header `lines` (from
/// [`push_header_line`]); HTTP/1.1 only. Returns the count of bytes appended.
pub fn push_early_hints(out: &mut Vec<u8>, lines: &[u8]) -> usize {
    push_informational(
        out,
        &ResponseHead {
            code: 103,
            status: "103 Early Hints",
            lines,
        },
    )
}

/// Appends the informational (1xx) response `head`; HTTP/1.1 only. Returns the count of
/// bytes appended.
pub fn push_informational(out: &mut Vec<u8>, head: &ResponseHead<'_>) -> usize {
    const VERSION: &[u8] = b"HTTP/1.1 ";
    let start = out.len();
    out.reserve(VERSION.len() + head.status.len() + head.lines.len() + 4);
    out.extend_from_slice(VERSION);
    out.extend_from_slice(head.status.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(head.lines);
    out.extend_from_slice(b"\r\n");
    out.len() - start
}

/// A chunk-size line, `{size in upper-case hex}\r\n`, formatted without allocating.
pub struct ChunkSize {
    buf: [u8; 18],
    len: u8,
}

impl ChunkSize {
    pub fn new(size: u64) -> ChunkSize {
        let digits = (64 - size.leading_zeros()).div_ceil(4).max(1) as usize;
        let mut buf = [0u8; 18];
        for (i, b) in buf[..digits].iter_mut().enumerate() {
            let nibble = (size >> (4 * (digits - 1 - i))) & 0xf;
            *b = b"0123456789ABCDEF"[nibble as usize];
        }
        buf[digits..digits + 2].copy_from_slice(b"\r\n");
        ChunkSize {
            buf,
            len: (digits + 2) as u8,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

/// The complete answer to a refused request, ending with the connection closed, in
/// Gunicorn's format (no `Server` or `Date`, as Gunicorn's error answers have none).
pub fn error_answer(err: &HttpError) -> Vec<u8> {
    let page = error_page(err.reason, &err.message);
    format!(
        "HTTP/1.1 {} {}\r\nConnection: close\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{}",
        err.status,
        err.reason,
        page.len(),
        page
    )
    .into_bytes()
}

/// The HTML page of an error answer, whatever the protocol carrying it.
pub fn error_page(reason: &str, message: &str) -> String {
    format!(
        "<html>\n  <head>\n    <title>{reason}</title>\n  </head>\n  <body>\n    <h1><p>{reason}</p></h1>\n    {message}\n  </body>\n</html>\n",
        message = html_escape(message),
    )
}

/// A complete answer with a body of `content_type`, ending with the connection closed (no
/// `Server` or `Date`). For a HEAD request (`head_only`) the body is left out and its length
/// kept.
pub fn close_answer(status: &str, content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            _ => out.push(c),
        }
    }
    out
}

/// A header field the application gave that cannot go on the wire.
#[derive(Debug, PartialEq, Eq)]
pub enum InvalidHeader {
    Name(String),
    Value(String),
}

impl fmt::Display for InvalidHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidHeader::Name(name) => write!(f, "invalid header name {name:?}"),
            InvalidHeader::Value(name) => write!(f, "invalid value for header {name:?}"),
        }
    }
}

/// A header name and value checked for the wire (RFC 9110 token names, values of blanks,
/// visible ASCII and latin-1); the value without surrounding blanks.
pub fn checked_header<'v>(name: &str, value: &'v str) -> Result<&'v str, InvalidHeader> {
    if name.is_empty() || !name.bytes().all(is_token) {
        return Err(InvalidHeader::Name(name.to_owned()));
    }
    if !value.chars().all(is_field_char) {
        return Err(InvalidHeader::Value(name.to_owned()));
    }
    Ok(value.trim_matches([' ', '\t']))
}

/// Appends `Name: value\r\n` for a header passed by [`checked_header`].
pub fn push_header_line(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    if value.is_ascii() {
        out.extend_from_slice(value.as_bytes());
    } else {
        // Latin-1 code points (checked): one byte each.
        out.extend(value.chars().map(|c| c as u32 as u8));
    }
    out.extend_from_slice(b"\r\n");
}

/// The code of a status an application gave: three digits, then optionally a space and a
/// reason of field characters. `None` when it cannot go on the wire.
pub fn parse_status(status: &str) -> Option<u16> {
    let bytes = status.as_bytes();
    if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    if bytes.len() > 3 && (bytes[3] != b' ' || !status[4..].chars().all(is_field_char)) {
        return None;
    }
    status[..3].parse().ok()
}

/// A character a field value or reason phrase may hold: blanks, visible ASCII and latin-1.
fn is_field_char(c: char) -> bool {
    c == ' ' || c == '\t' || ('\x21'..='\x7e').contains(&c) || ('\u{80}'..='\u{ff}').contains(&c)
}

/// The status line text for `code` (`200 OK`), for interfaces that give only the number:
/// the reason phrase of RFC 9110 (or the registry), else the code alone.
pub fn status_text(code: u16) -> std::borrow::Cow<'static, str> {
    let line = match code {
        100 => "100 Continue",
        101 => "101 Switching Protocols",
        103 => "103 Early Hints",
        200 => "200 OK",
        201 => "201 Created",
        202 => "202 Accepted",
        203 => "203 Non-Authoritative Information",
        204 => "204 No Content",
        205 => "205 Reset Content",
        206 => "206 Partial Content",
        207 => "207 Multi-Status",
        300 => "300 Multiple Choices",
        301 => "301 Moved Permanently",
        302 => "302 Found",
        303 => "303 See Other",
        304 => "304 Not Modified",
        307 => "307 Temporary Redirect",
        308 => "308 Permanent Redirect",
        400 => "400 Bad Request",
        401 => "401 Unauthorized",
        402 => "402 Payment Required",
        403 => "403 Forbidden",
        404 => "404 Not Found",
        405 => "405 Method Not Allowed",
        406 => "406 Not Acceptable",
        407 => "407 Proxy Authentication Required",
        408 => "408 Request Timeout",
        409 => "409 Conflict",
        410 => "410 Gone",
        411 => "411 Length Required",
        412 => "412 Precondition Failed",
        413 => "413 Content Too Large",
        414 => "414 URI Too Long",
        415 => "415 Unsupported Media Type",
        416 => "416 Range Not Satisfiable",
        417 => "417 Expectation Failed",
        421 => "421 Misdirected Request",
        422 => "422 Unprocessable Content",
        425 => "425 Too Early",
        426 => "426 Upgrade Required",
        428 => "428 Precondition Required",
        429 => "429 Too Many Requests",
        431 => "431 Request Header Fields Too Large",
        451 => "451 Unavailable For Legal Reasons",
        500 => "500 Internal Server Error",
        501 => "501 Not Implemented",
        502 => "502 Bad Gateway",
        503 => "503 Service Unavailable",
        504 => "504 Gateway Timeout",
        505 => "505 HTTP Version Not Supported",
        _ => "",
    };
    if line.is_empty() {
        // An unregistered code: the reason phrase may be empty, the space may not.
        format!("{code} ").into()
    } else {
        line.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &[u8; 29] = b"Sun, 06 Nov 1994 08:49:37 GMT";
    const V10: Version = Version { major: 1, minor: 0 };
    const V11: Version = Version { major: 1, minor: 1 };

    fn wire(version: Version, close: bool, body: BodyFraming) -> H1Response {
        H1Response {
            version,
            close,
            body,
        }
    }

    fn head_bytes(status: &str, lines: &[u8], h1: H1Response) -> Vec<u8> {
        let code = parse_status(status).expect("a valid status");
        let head = ResponseHead {
            code,
            status,
            lines,
        };
        let mut out = b"before".to_vec();
        let n = push_head(&mut out, &head, &h1, DATE);
        assert_eq!(n, out.len() - 6);
        out.split_off(6)
    }

    #[test]
    fn head_on_http_1_1() {
        let h1 = wire(V11, false, BodyFraming::Length);
        assert_eq!(
            head_bytes("200 OK", b"Content-Length: 2\r\n", h1),
            b"HTTP/1.1 200 OK\r\nServer: ferrocorn\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
              Connection: keep-alive\r\nContent-Length: 2\r\n\r\n"
        );
    }

    #[test]
    fn head_chunked_and_closing() {
        let h1 = wire(V11, true, BodyFraming::Chunked);
        assert_eq!(
            head_bytes("404 Not Found", b"X-A: b\r\n", h1),
            b"HTTP/1.1 404 Not Found\r\nServer: ferrocorn\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
              Connection: close\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n"
        );
    }

    #[test]
    fn head_on_http_1_0_and_other_versions() {
        for (major, minor, line) in [(1, 0, "HTTP/1.0"), (0, 9, "HTTP/1.0"), (1, 2, "HTTP/1.1")] {
            let h1 = wire(Version { major, minor }, false, BodyFraming::Length);
            let bytes = head_bytes("200 OK", b"", h1);
            assert!(bytes.starts_with(format!("{line} 200 OK\r\n").as_bytes()));
        }
    }

    #[test]
    fn a_close_delimited_body_announces_the_close() {
        let h1 = wire(V10, false, BodyFraming::Close);
        let bytes = head_bytes("200 OK", b"", h1);
        assert!(
            bytes.ends_with(b"\r\nConnection: close\r\n\r\n"),
            "{bytes:?}"
        );
    }

    #[test]
    fn the_status_goes_out_as_given() {
        let h1 = wire(V11, false, BodyFraming::None);
        assert!(head_bytes("299", b"", h1).starts_with(b"HTTP/1.1 299\r\n"));
        assert!(head_bytes("200 Tr\u{e8}s bien", b"", h1)
            .starts_with("HTTP/1.1 200 Tr\u{e8}s bien\r\n".as_bytes()));
    }

    #[test]
    fn bodiless_answers_have_no_body_framing() {
        for (is_head, code, length) in [
            (true, 200, None),
            (true, 200, Some(5)),
            (false, 204, None),
            (false, 304, None),
            (false, 304, Some(5)),
            (false, 101, None),
        ] {
            let body = BodyFraming::choose(V11, is_head, code, length);
            assert_eq!(body, BodyFraming::None, "{is_head} {code} {length:?}");
            let h1 = H1Response {
                version: V11,
                close: false,
                body,
            };
            let status = format!("{code} X");
            let bytes = head_bytes(&status, b"", h1);
            assert!(!bytes.windows(17).any(|w| w == b"Transfer-Encoding"));
            assert!(bytes.ends_with(b"Connection: keep-alive\r\n\r\n"));
        }
        assert!(forbids_content_length(204));
        assert!(forbids_content_length(103));
        assert!(!forbids_content_length(304));
    }

    #[test]
    fn framing_choices() {
        assert_eq!(
            BodyFraming::choose(V11, false, 200, Some(0)),
            BodyFraming::Length
        );
        assert_eq!(
            BodyFraming::choose(V11, false, 200, None),
            BodyFraming::Chunked
        );
        assert_eq!(
            BodyFraming::choose(V10, false, 200, None),
            BodyFraming::Close
        );
        assert_eq!(
            BodyFraming::choose(V10, false, 200, Some(3)),
            BodyFraming::Length
        );
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status("200 OK"), Some(200));
        assert_eq!(parse_status("404"), Some(404));
        assert_eq!(parse_status("200 caf\u{e9}"), Some(200));
        assert_eq!(parse_status("20 OK"), None);
        assert_eq!(parse_status("200OK"), None);
        assert_eq!(parse_status("200 OK\r\nX: y"), None);
        assert_eq!(parse_status("200 \u{100}"), None);
    }

    #[test]
    fn header_lines_are_checked_and_latin1() {
        let mut out = Vec::new();
        let value = checked_header("Link", " </s.css>; rel=preload\t").expect("a valid header");
        push_header_line(&mut out, "Link", value);
        push_header_line(&mut out, "X-Hint", "caf\u{e9}");
        assert_eq!(out, b"Link: </s.css>; rel=preload\r\nX-Hint: caf\xe9\r\n");
        assert_eq!(
            checked_header("Bad Name", "x"),
            Err(InvalidHeader::Name("Bad Name".into()))
        );
        assert!(checked_header("", "x").is_err());
        assert!(checked_header("X:", "x").is_err());
        assert_eq!(
            checked_header("X", "a\r\nInjected: 1"),
            Err(InvalidHeader::Value("X".into()))
        );
        assert!(checked_header("X", "\u{100}").is_err());
        assert_eq!(
            InvalidHeader::Name("a b".into()).to_string(),
            "invalid header name \"a b\""
        );
        assert_eq!(
            InvalidHeader::Value("X".into()).to_string(),
            "invalid value for header \"X\""
        );
    }

    #[test]
    fn fields_split_the_lines_again() {
        let mut lines = Vec::new();
        push_header_line(&mut lines, "Content-Type", "text/plain");
        push_header_line(&mut lines, "X-Empty", "");
        push_header_line(&mut lines, "X-L", "caf\u{e9}: ok");
        let head = ResponseHead {
            code: 200,
            status: "200 OK",
            lines: &lines,
        };
        let fields: Vec<_> = head.fields().collect();
        assert_eq!(
            fields,
            [
                (&b"Content-Type"[..], &b"text/plain"[..]),
                (b"X-Empty", b""),
                (b"X-L", b"caf\xe9: ok"),
            ]
        );
    }

    #[test]
    fn chunk_sizes_are_upper_hex() {
        for (size, line) in [
            (0, &b"0\r\n"[..]),
            (9, b"9\r\n"),
            (10, b"A\r\n"),
            (255, b"FF\r\n"),
            (256, b"100\r\n"),
            (0xABCDEF, b"ABCDEF\r\n"),
            (u64::MAX, b"FFFFFFFFFFFFFFFF\r\n"),
        ] {
            assert_eq!(ChunkSize::new(size).as_bytes(), line, "{size}");
        }
        assert_eq!(CHUNK_END, b"\r\n");
        assert_eq!(LAST_CHUNK, b"0\r\n\r\n");
    }

    #[test]
    fn interim_answers() {
        assert_eq!(CONTINUE, b"HTTP/1.1 100 Continue\r\n\r\n");
        let mut out = Vec::new();
        let n = push_early_hints(&mut out, b"Link: </s.css>; rel=preload\r\n");
        assert_eq!(n, out.len());
        assert_eq!(
            out,
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
        );
    }

    #[test]
    fn error_answer_is_complete_and_escaped() {
        let resp = error_answer(&HttpError::invalid_header_name(b"X<y>"));
        let text = String::from_utf8(resp).expect("an ASCII page");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
        assert_eq!(
            head,
            format!(
                "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/html\r\n\
                 Content-Length: {}",
                body.len()
            )
        );
        assert!(body.contains("<title>Bad Request</title>"));
        assert!(body.contains("Invalid HTTP header name: &#x27;X&lt;y&gt;&#x27;"));
        let resp = error_answer(&HttpError::service_unavailable());
        assert!(resp.starts_with(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"));
    }
}
