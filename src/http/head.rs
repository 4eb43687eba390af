//! Request head parsing: request line and header fields, with Gunicorn's limits and strictness.
//!
//! A complete, well-formed head (the common case) is split by `httparse`. Anything `httparse`
//! refuses goes through a line-by-line parser that gives the exact error Gunicorn gives, or
//! accepts what Gunicorn's settings permit (obsolete folding, spaces before the colon,
//! HTTP/1.2, unconventional methods). Both paths end in the same checks ([`finish`]).

use std::borrow::Cow;
use std::ops::Range;

use memchr::memmem;

use super::error::HttpError;

/// How the request body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (no Content-Length, no Transfer-Encoding).
    None,
    Length(u64),
    Chunked,
}

/// What an HTTP/1 head says about its connection and body, beside the protocol-neutral
/// [`RequestHead`] (another protocol frames its requests its own way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct H1Framing {
    pub body: Framing,
    /// Whether the connection may stay open after this request (version default + Connection).
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent on HTTP/1.1.
    pub expect_continue: bool,
    /// The protocol the client asks to switch to: an `Upgrade` field named by a `Connection:
    /// upgrade` option, on HTTP/1.1 (RFC 9110 section 7.8 ignores it on 1.0).
    pub upgrade: Option<Upgrade>,
}

/// A protocol an HTTP/1.1 request asks to switch to (RFC 9110 section 7.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upgrade {
    /// `websocket` (RFC 6455), among the protocols offered.
    WebSocket,
    /// `h2c`, HTTP/2 over cleartext (RFC 7540 section 3.2).
    H2c,
    /// Only protocols this server does not speak.
    Other,
}

impl Upgrade {
    /// The protocol of an `Upgrade` field's value, a list of `name[/version]`: the one this
    /// server speaks when any is offered.
    fn of(value: &[u8]) -> Upgrade {
        let mut found = Upgrade::Other;
        for offered in value.split(|&b| b == b',').map(trim) {
            let name = offered.split(|&b| b == b'/').next().unwrap_or_default();
            if name.eq_ignore_ascii_case(b"websocket") {
                return Upgrade::WebSocket;
            }
            if name.eq_ignore_ascii_case(b"h2c") {
                found = Upgrade::H2c;
            }
        }
        found
    }
}

/// Parsing limits and strictness, from the `limit_request_*` and security settings.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest request line in bytes, CRLF excluded; 0 = unlimited (`--limit-request-line`,
    /// default 4094).
    pub request_line: usize,
    /// Most header fields (`--limit-request-fields`, default 100).
    pub fields: usize,
    /// Longest header field line in bytes, CRLF included (`--limit-request-field_size`,
    /// default 8190).
    pub field_size: usize,
    /// Accept methods with lower-case letters or `#`, or outside 3..=20 characters (default off).
    pub permit_unconventional_http_method: bool,
    /// Accept HTTP versions other than 1.x (default off).
    pub permit_unconventional_http_version: bool,
    /// Upper-case the method (default off).
    pub casefold_http_method: bool,
    /// Join obsolete folded header lines instead of refusing them (default off).
    pub permit_obsolete_folding: bool,
    /// Drop whitespace between a header name and its colon instead of refusing (default off).
    pub strip_header_spaces: bool,
}

/// Longest request line when `--limit-request-line 0` asks for no limit.
const UNLIMITED_LINE: usize = 1024 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits::new(4094, 100, 8190)
    }
}

impl Limits {
    /// Limits with Gunicorn's clamping: a request line of 0 means unlimited; fields outside
    /// 1..=32768 mean 32768; a field size of 0 means 8190.
    pub fn new(request_line: usize, fields: usize, field_size: usize) -> Limits {
        Limits {
            request_line: if request_line == 0 {
                UNLIMITED_LINE
            } else {
                request_line
            },
            fields: if fields == 0 || fields > 32768 {
                32768
            } else {
                fields
            },
            field_size: if field_size == 0 { 8190 } else { field_size },
            permit_unconventional_http_method: false,
            permit_unconventional_http_version: false,
            casefold_http_method: false,
            permit_obsolete_folding: false,
            strip_header_spaces: false,
        }
    }

    /// The most bytes a head may take before it must be complete.
    fn max_head(&self) -> usize {
        self.request_line + 2 + (self.fields + 1).saturating_mul(self.field_size)
    }
}

/// A parsed request head, whatever the protocol. Bytes are as sent; the WSGI layer decodes
/// them.
///
/// The target and the header fields live in one buffer (`text`), so a head costs two
/// allocations however many fields it has.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// A common method is a static string (no allocation per request).
    pub method: Cow<'static, str>,
    /// The target, then each field's name and value.
    text: Vec<u8>,
    /// Within `text`: the target, and its path, query and fragment parts.
    target: Range<usize>,
    path: Range<usize>,
    query: Range<usize>,
    fragment: Range<usize>,
    /// Within `text`: an absolute-form target's `host [ ":" port ]`; empty for other forms.
    target_host: Range<usize>,
    /// Each field's name `text[.0...1]` and value `text[.1...2]`.
    fields: Vec<(usize, usize, usize)>,
    /// The HTTP version of the request line (other than 1.x only with
    /// `--permit-unconventional-http-version`).
    pub version: Version,
}

impl RequestHead {
    /// The request target exactly as sent (RAW_URI).
    pub fn target(&self) -> &[u8] {
        &self.text[self.target.clone()]
    }

    /// Path part of the target, not percent-decoded (for absolute-form, without
    /// scheme://host).
    pub fn path(&self) -> &[u8] {
        &self.text[self.path.clone()]
    }

    /// Query without the `?`; empty when absent.
    pub fn query(&self) -> &[u8] {
        &self.text[self.query.clone()]
    }

    /// Fragment without the `#`; empty when absent.
    pub fn fragment(&self) -> &[u8] {
        &self.text[self.fragment.clone()]
    }

    /// The host and port of an absolute-form target, which stand for the Host field's
    /// (RFC 9112 section 3.2.2); `None` for the other forms.
    pub fn target_host(&self) -> Option<&[u8]> {
        if self.target_host.is_empty() {
            None
        } else {
            Some(&self.text[self.target_host.clone()])
        }
    }

    /// Header fields in order: name as sent, value with surrounding whitespace removed.
    pub fn headers(&self) -> Fields<'_> {
        Fields {
            text: &self.text,
            fields: &self.fields,
        }
    }
}

/// What the logs and the hooks' `req` read of a request.
impl crate::log::LoggedRequest for RequestHead {
    fn method(&self) -> &str {
        &self.method
    }
    fn target(&self) -> &[u8] {
        self.target()
    }
    fn path(&self) -> &[u8] {
        self.path()
    }
    fn decoded_path(&self) -> Cow<'_, [u8]> {
        percent_decode(self.path())
    }
    fn query(&self) -> &[u8] {
        self.query()
    }
    fn fragment(&self) -> &[u8] {
        self.fragment()
    }
    fn version(&self) -> (u8, u8) {
        (self.version.major, self.version.minor)
    }
    fn fields(&self) -> impl DoubleEndedIterator<Item = (&str, &[u8])> {
        self.headers().iter()
    }
}

/// The header fields of a [`RequestHead`].
#[derive(Clone, Copy, Debug)]
pub struct Fields<'a> {
    text: &'a [u8],
    fields: &'a [(usize, usize, usize)],
}

/// Iterates the fields of a head as (name, value).
#[derive(Clone, Debug)]
pub struct FieldIter<'a> {
    text: &'a [u8],
    fields: std::slice::Iter<'a, (usize, usize, usize)>,
}

impl<'a> FieldIter<'a> {
    fn field(&self, &(name, value, end): &(usize, usize, usize)) -> (&'a str, &'a [u8]) {
        // Names are tokens, checked ASCII when parsed.
        (
            std::str::from_utf8(&self.text[name..value]).unwrap_or_default(),
            &self.text[value..end],
        )
    }
}

impl<'a> Iterator for FieldIter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let f = self.fields.next()?;
        Some(self.field(f))
    }
}

impl DoubleEndedIterator for FieldIter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let f = self.fields.next_back()?;
        Some(self.field(f))
    }
}

impl<'a> IntoIterator for Fields<'a> {
    type Item = (&'a str, &'a [u8]);
    type IntoIter = FieldIter<'a>;

    fn into_iter(self) -> FieldIter<'a> {
        self.iter()
    }
}

impl<'a> Fields<'a> {
    pub fn iter(self) -> FieldIter<'a> {
        FieldIter {
            text: self.text,
            fields: self.fields.iter(),
        }
    }

    pub fn len(self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(self) -> bool {
        self.fields.is_empty()
    }
}

/// Methods most requests use, matched exactly (already upper-case, so casefolding keeps them).
const COMMON_METHODS: [&str; 5] = ["GET", "POST", "HEAD", "PUT", "DELETE"];

/// The ends of a request head and of a line, searched for on every read: built once.
static HEAD_END: std::sync::LazyLock<memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memmem::Finder::new(b"\r\n\r\n"));
static LINE_END: std::sync::LazyLock<memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memmem::Finder::new(b"\r\n"));

/// An HTTP version, `major.minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u8,
    pub minor: u8,
}

impl Version {
    /// Whether HTTP/1.1 semantics apply: persistent connections by default, chunked framing,
    /// `Expect: 100-continue`. Versions before 1.1 (0.9 when permitted) get 1.0's.
    pub fn is_1_1_or_later(self) -> bool {
        (self.major, self.minor) >= (1, 1)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP/{}.{}", self.major, self.minor)
    }
}

/// A head split into its parts, before the checks shared by both parsers.
struct RawHead<'a> {
    method: &'a [u8],
    target: &'a [u8],
    version: &'a [u8],
    headers: Vec<(&'a [u8], Cow<'a, [u8]>)>,
}

/// Parses a request head from the start of `buf`.
///
/// `Ok(None)`: the head is incomplete (and within the limits so far) — read more.
/// `Ok(Some((head, framing, n)))`: the head took the first `n` bytes of `buf`.
pub fn parse(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(RequestHead, H1Framing, usize)>, HttpError> {
    // One empty line before a request is tolerated (RFC 9112 section 2.2).
    let skip = if buf.starts_with(b"\r\n") {
        2
    } else if buf == b"\r" {
        return Ok(None);
    } else {
        0
    };
    let data = &buf[skip..];
    if matches!(data.first(), Some(b'\r' | b'\n')) {
        // Only one empty line is tolerated before a request.
        return Err(HttpError::invalid_request_line(&data[..data.len().min(16)]));
    }
    let Some(end) = HEAD_END.find(data).map(|i| i + 4) else {
        check_incomplete(data, limits)?;
        return Ok(None);
    };
    let head = &data[..end];
    let line_len = LINE_END.find(head).unwrap_or(0);
    if line_len > limits.request_line {
        return Err(HttpError::line_too_long(line_len, limits.request_line));
    }
    // httparse accepts a bare LF as a line end; Gunicorn and RFC 9112 section 2.2 do not.
    for lf in memchr::memchr_iter(b'\n', head) {
        if lf == 0 || head[lf - 1] != b'\r' {
            let line_start = head[..lf]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            return Err(if line_start == 0 {
                HttpError::invalid_request_line(&head[..lf])
            } else {
                HttpError::invalid_header(&head[line_start..lf])
            });
        }
    }
    let raw = match fast_split(head, limits) {
        Some(raw) => raw,
        None => slow_split(head, limits)?,
    };
    let (head, framing) = finish(raw, limits, HostRule::Required)?;
    Ok(Some((head, framing, skip + end)))
}

/// The request of a complete head refused for one of its fields' values (Gunicorn's
/// `InvalidHeader`, which carries its request), for the access line of the error answer:
/// without the fields `finish` refuses heads for, and without `Referer` and `User-Agent`,
/// which Gunicorn's line then shows as `-` (it reads them from an environ it does not build).
/// `None` when the head does not split into a request line and fields.
pub fn refused_request(buf: &[u8], limits: &Limits) -> Option<RequestHead> {
    const LEFT_OUT: [&[u8]; 7] = [
        b"content-length",
        b"transfer-encoding",
        b"host",
        b"content-type",
        b"expect",
        b"referer",
        b"user-agent",
    ];
    let data = buf.strip_prefix(b"\r\n").unwrap_or(buf);
    let head = &data[..HEAD_END.find(data)? + 4];
    let mut raw = fast_split(head, limits).or_else(|| slow_split(head, limits).ok())?;
    raw.headers
        .retain(|(name, _)| !LEFT_OUT.iter().any(|f| name.eq_ignore_ascii_case(f)));
    // Its Host is left out with the fields above, so it is not asked for either.
    finish(raw, limits, HostRule::NotAsked)
        .ok()
        .map(|(head, _)| head)
}

/// Builds the head of an HTTP/2 request from its pseudo-header fields (`:method`, `:path`,
/// `:authority`) and its regular fields, under the same limits and checks as an HTTP/1 head:
/// `:path` counts as the request line, each field as a `name: value` line. `:authority`
/// stands for `Host` (RFC 9113 section 8.3.1), after a duplicate `Host` was refused. The
/// framing says only what `Content-Length` gave; the stream's end delimits the body.
pub fn from_h2<'a>(
    method: &'a [u8],
    path: &'a [u8],
    authority: Option<&'a [u8]>,
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    limits: &Limits,
) -> Result<(RequestHead, Framing), HttpError> {
    if path.len() > limits.request_line {
        return Err(HttpError::line_too_long(path.len(), limits.request_line));
    }
    let mut headers: Vec<(&[u8], Cow<'a, [u8]>)> = Vec::new();
    for (name, value) in fields {
        if headers.len() >= limits.fields {
            return Err(HttpError::headers_too_large("limit request headers fields"));
        }
        if name.len() + value.len() + 4 > limits.field_size {
            return Err(HttpError::headers_too_large(
                "limit request headers fields size",
            ));
        }
        if !value_is_clean(value) {
            return Err(HttpError::invalid_header(&name.to_ascii_uppercase()));
        }
        headers.push((name, Cow::Borrowed(trim(value))));
    }
    if let Some(authority) = authority.filter(|a| !a.is_empty()) {
        if headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"host"))
            .count()
            > 1
        {
            return Err(HttpError::invalid_header(b"HOST"));
        }
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(b"host"));
        headers.push((b"host", Cow::Borrowed(authority)));
    }
    let raw = RawHead {
        method,
        target: path,
        version: b"HTTP/2.0",
        headers,
    };
    let (head, framing) = finish(raw, limits, HostRule::Http2)?;
    Ok((head, framing.body))
}

/// Checks the limits on a head that has not ended yet, so a client cannot make the server
/// buffer without bound, and refuses bare LF line ends early.
fn check_incomplete(data: &[u8], limits: &Limits) -> Result<(), HttpError> {
    let mut start = 0;
    let mut line_no = 0usize;
    loop {
        let rest = &data[start..];
        let Some(lf) = memchr::memchr(b'\n', rest) else {
            let limit = if line_no == 0 {
                limits.request_line
            } else {
                limits.field_size
            };
            // A final CR may be the first half of the request line's CRLF, which its limit
            // does not count (the header field limit does).
            let line_len = rest.strip_suffix(b"\r").map_or(rest.len(), <[u8]>::len);
            if line_no == 0 && line_len > limit {
                return Err(HttpError::line_too_long(line_len, limits.request_line));
            }
            if line_no > 0 && rest.len() > limit {
                return Err(HttpError::headers_too_large(
                    "limit request headers fields size",
                ));
            }
            break;
        };
        if lf == 0 || rest[lf - 1] != b'\r' {
            let line = &rest[..lf];
            return Err(if line_no == 0 {
                HttpError::invalid_request_line(line)
            } else {
                HttpError::invalid_header(line)
            });
        }
        let len = lf - 1;
        if line_no == 0 && len > limits.request_line {
            return Err(HttpError::line_too_long(len, limits.request_line));
        }
        if line_no > 0 && len + 2 > limits.field_size {
            return Err(HttpError::headers_too_large(
                "limit request headers fields size",
            ));
        }
        if line_no > limits.fields {
            return Err(HttpError::headers_too_large("limit request headers fields"));
        }
        line_no += 1;
        start += lf + 1;
    }
    if data.len() > limits.max_head() {
        return Err(HttpError::headers_too_large("max buffer headers"));
    }
    Ok(())
}

/// The `httparse` path for ordinary heads; `None` sends the head to [`slow_split`].
fn fast_split<'a>(head: &'a [u8], limits: &Limits) -> Option<RawHead<'a>> {
    // Room for the fields of nearly every real request without touching the heap; a head
    // with more is parsed again with room for the limit (+1, to notice a head over it).
    const STACK: usize = 32;
    let mut stack = [httparse::EMPTY_HEADER; STACK];
    let mut heap;
    let mut req = httparse::Request::new(&mut stack[..(limits.fields + 1).min(STACK)]);
    let mut parsed = req.parse(head);
    if matches!(parsed, Err(httparse::Error::TooManyHeaders)) && limits.fields + 1 > STACK {
        heap = vec![httparse::EMPTY_HEADER; limits.fields + 1];
        req = httparse::Request::new(&mut heap);
        parsed = req.parse(head);
    }
    match parsed {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        _ => return None,
    }
    let (method, target, minor) = (req.method?, req.path?, req.version?);
    if req.headers.len() > limits.fields {
        return None;
    }
    let version: &'static [u8] = if minor == 0 { b"HTTP/1.0" } else { b"HTTP/1.1" };
    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        // Let the line parser report lines over the limit and odd values exactly.
        if h.name.len() + 2 + h.value.len() + 2 > limits.field_size || !value_is_clean(h.value) {
            return None;
        }
        headers.push((h.name.as_bytes(), Cow::Borrowed(trim(h.value))));
    }
    Some(RawHead {
        method: method.as_bytes(),
        target: target.as_bytes(),
        version,
        headers,
    })
}

/// Line-by-line split with Gunicorn's exact errors and permissive modes.
fn slow_split<'a>(head: &'a [u8], limits: &Limits) -> Result<RawHead<'a>, HttpError> {
    let body = &head[..head.len() - 2];
    let mut lines = body
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let line = lines.next().unwrap_or_default();
    if line.len() > limits.request_line {
        return Err(HttpError::line_too_long(line.len(), limits.request_line));
    }
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::invalid_request_line(line));
    };
    let mut headers: Vec<(&[u8], Cow<'a, [u8]>)> = Vec::new();
    let mut last_len = 0usize;
    let mut lines = lines.filter(|l| !l.is_empty()).peekable();
    while let Some(line) = lines.next() {
        if headers.len() >= limits.fields {
            return Err(HttpError::headers_too_large("limit request headers fields"));
        }
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            // A continuation without a field before it.
            return Err(HttpError::invalid_header(line));
        }
        let colon = match memchr::memchr(b':', line) {
            Some(i) if i > 0 => i,
            _ => return Err(HttpError::invalid_header(line)),
        };
        let mut name = &line[..colon];
        if limits.strip_header_spaces {
            while let Some((&last, rest)) = name.split_last() {
                if last == b' ' || last == b'\t' {
                    name = rest;
                } else {
                    break;
                }
            }
        }
        if name.is_empty() || !name.iter().all(|&b| is_token(b)) {
            return Err(HttpError::invalid_header_name(name));
        }
        let mut value: Cow<'a, [u8]> = Cow::Borrowed(trim(&line[colon + 1..]));
        last_len = line.len() + 2;
        while let Some(next) = lines.peek() {
            if !next.first().is_some_and(|&b| b == b' ' || b == b'\t') {
                break;
            }
            if !limits.permit_obsolete_folding {
                return Err(HttpError::obsolete_folding(&name.to_ascii_uppercase()));
            }
            last_len += next.len() + 2;
            if last_len > limits.field_size {
                return Err(HttpError::headers_too_large(
                    "limit request headers fields size",
                ));
            }
            let mut joined = value.into_owned();
            joined.push(b' ');
            joined.extend_from_slice(trim(next));
            value = Cow::Owned(joined);
            lines.next();
        }
        if !value_is_clean(&value) {
            return Err(HttpError::invalid_header(&name.to_ascii_uppercase()));
        }
        if last_len > limits.field_size {
            return Err(HttpError::headers_too_large(
                "limit request headers fields size",
            ));
        }
        headers.push((name, value));
    }
    let _ = last_len;
    Ok(RawHead {
        method,
        target,
        version,
        headers,
    })
}

/// The checks every head goes through, and the framing decision.
/// Whether [`finish`] refuses an HTTP/1.1 head without `Host`.
#[derive(Clone, Copy, PartialEq)]
enum HostRule {
    Required,
    NotAsked,
    /// An HTTP/2 request: version 2.0, and `:authority` stands for `Host`.
    Http2,
}

fn finish(
    raw: RawHead<'_>,
    limits: &Limits,
    host: HostRule,
) -> Result<(RequestHead, H1Framing), HttpError> {
    let method = raw.method;
    if !limits.permit_unconventional_http_method
        && (method.iter().any(|&b| b.is_ascii_lowercase() || b == b'#')
            || !(3..=20).contains(&method.len()))
    {
        return Err(HttpError::invalid_method(method));
    }
    if method.is_empty() || !method.iter().all(|&b| is_token(b)) {
        return Err(HttpError::invalid_method(method));
    }
    let method: Cow<'static, str> = match COMMON_METHODS.iter().find(|m| m.as_bytes() == method) {
        Some(known) => Cow::Borrowed(known),
        None => {
            let method = if limits.casefold_http_method {
                method.to_ascii_uppercase()
            } else {
                method.to_vec()
            };
            // Tokens are ASCII.
            Cow::Owned(String::from_utf8(method).unwrap_or_default())
        }
    };

    let target = raw.target;
    if target.is_empty() || !target.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
        return Err(request_line_error(&raw));
    }
    let is_connect = &*method == "CONNECT";
    if target == b"*" && &*method != "OPTIONS" {
        return Err(request_line_error(&raw));
    }
    // RFC 9112 section 3.2: origin-form, asterisk-form (above), authority-form for CONNECT
    // only, and otherwise absolute-form, whose host information replaces Host's.
    let mut target_host = 0..0;
    if is_connect {
        check_connect_target(target)?;
    } else if target != b"*" && !target.starts_with(b"/") {
        if memmem::find(target, b"://").is_none() {
            return Err(request_line_error(&raw));
        }
        target_host = absolute_form_host(target)?;
    }
    let (path, query, fragment) = split_target(target, is_connect);
    let field_bytes: usize = raw.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    let mut text = Vec::with_capacity(target.len() + field_bytes);
    text.extend_from_slice(target);

    let version = if host == HostRule::Http2 {
        Version { major: 2, minor: 0 }
    } else {
        parse_version(raw.version, limits)?
    };

    let mut framing = Framing::None;
    let mut content_length: Option<&[u8]> = None;
    let mut transfer_encoding = false;
    let mut chunked = false;
    let mut connection: Option<bool> = None;
    let mut expect_continue = false;
    let mut connection_upgrade = false;
    let mut upgrade: Option<&[u8]> = None;
    let mut seen_host = false;
    let mut seen_type = false;
    let mut fields = Vec::with_capacity(raw.headers.len());
    for (name, value) in raw.headers.iter() {
        let name: &[u8] = name;
        let value: &[u8] = value;
        if name.eq_ignore_ascii_case(b"content-length") {
            if content_length.is_some() {
                return Err(HttpError::invalid_header(b"CONTENT-LENGTH"));
            }
            content_length = Some(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            for coding in value.split(|&b| b == b',').map(trim) {
                let lower = coding.to_ascii_lowercase();
                match lower.as_slice() {
                    b"chunked" => {
                        if chunked {
                            return Err(HttpError::invalid_header(b"TRANSFER-ENCODING"));
                        }
                        chunked = true;
                    }
                    b"identity" | b"compress" | b"deflate" | b"gzip" => {
                        // Only chunked may come last; anything after it is ambiguous.
                        if chunked {
                            return Err(HttpError::invalid_header(b"TRANSFER-ENCODING"));
                        }
                    }
                    _ => return Err(HttpError::unsupported_coding(value)),
                }
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            if seen_host {
                return Err(HttpError::invalid_header(b"HOST"));
            }
            // RFC 9112 section 3.2: an invalid Host value gets 400, even where the target's
            // host is used instead.
            if host_port(value).is_none() {
                return Err(HttpError::invalid_host(value));
            }
            seen_host = true;
        } else if name.eq_ignore_ascii_case(b"content-type") {
            if seen_type {
                return Err(HttpError::invalid_header(b"CONTENT-TYPE"));
            }
            seen_type = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(trim) {
                if token.eq_ignore_ascii_case(b"close") {
                    connection = Some(false);
                } else if token.eq_ignore_ascii_case(b"keep-alive") && connection.is_none() {
                    connection = Some(true);
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    connection_upgrade = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade = Some(value);
        } else if name.eq_ignore_ascii_case(b"expect") {
            if value.eq_ignore_ascii_case(b"100-continue") {
                // RFC 9110 section 10.1.1: ignored on HTTP/1.0.
                expect_continue = version.is_1_1_or_later();
            } else {
                return Err(HttpError::expectation_failed(value));
            }
        }
        let start = text.len();
        text.extend_from_slice(name);
        let value_start = text.len();
        text.extend_from_slice(value);
        fields.push((start, value_start, text.len()));
    }
    if transfer_encoding && !chunked {
        return Err(HttpError::invalid_header(b"TRANSFER-ENCODING"));
    }
    if chunked {
        if !version.is_1_1_or_later() {
            return Err(HttpError::invalid_header(b"TRANSFER-ENCODING"));
        }
        if content_length.is_some() {
            return Err(HttpError::invalid_header(b"CONTENT-LENGTH"));
        }
        framing = Framing::Chunked;
    } else if let Some(length) = content_length {
        if length.is_empty() || !length.iter().all(u8::is_ascii_digit) {
            return Err(HttpError::invalid_header(b"CONTENT-LENGTH"));
        }
        let n = std::str::from_utf8(length)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| HttpError::invalid_header(b"CONTENT-LENGTH"))?;
        framing = if n == 0 {
            Framing::None
        } else {
            Framing::Length(n)
        };
    }
    // RFC 9112 section 3.2; checked last so that a framing error keeps its own status.
    if !seen_host && version.is_1_1_or_later() && host == HostRule::Required {
        return Err(HttpError::missing_host());
    }
    let keep_alive = !is_connect && connection.unwrap_or(version.is_1_1_or_later());
    let target = 0..target.len();
    let head = RequestHead {
        method,
        text,
        target,
        path,
        query,
        fragment,
        target_host,
        fields,
        version,
    };
    let upgrade = match upgrade {
        Some(value) if connection_upgrade && version.is_1_1_or_later() => Some(Upgrade::of(value)),
        _ => None,
    };
    let framing = H1Framing {
        body: framing,
        keep_alive,
        expect_continue,
        upgrade,
    };
    Ok((head, framing))
}

fn request_line_error(raw: &RawHead<'_>) -> HttpError {
    let mut line = Vec::with_capacity(raw.method.len() + raw.target.len() + raw.version.len() + 2);
    line.extend_from_slice(raw.method);
    line.push(b' ');
    line.extend_from_slice(raw.target);
    line.push(b' ');
    line.extend_from_slice(raw.version);
    HttpError::invalid_request_line(&line)
}

/// `HTTP/d.d`; 1.x unless unconventional versions are permitted.
fn parse_version(version: &[u8], limits: &Limits) -> Result<Version, HttpError> {
    let bad = || HttpError::invalid_version(version);
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            if *major != b'1' && !limits.permit_unconventional_http_version {
                return Err(bad());
            }
            Ok(Version {
                major: major - b'0',
                minor: minor - b'0',
            })
        }
        _ => Err(bad()),
    }
}

/// Splits a target into path, query and fragment. Absolute-form loses its scheme and host.
fn split_target(target: &[u8], is_connect: bool) -> (Range<usize>, Range<usize>, Range<usize>) {
    let end = target.len();
    if is_connect {
        return (0..0, 0..0, 0..0);
    }
    let mut start = 0;
    if !target.starts_with(b"/") {
        if let Some(i) = memmem::find(target, b"://") {
            let after = i + 3;
            start = target[after..]
                .iter()
                .position(|&b| b == b'/' || b == b'?' || b == b'#')
                .map_or(end, |p| after + p);
        }
    }
    let (rest_end, fragment) = match memchr::memchr(b'#', &target[start..]) {
        Some(i) => (start + i, start + i + 1..end),
        None => (end, end..end),
    };
    let (path, query) = match memchr::memchr(b'?', &target[start..rest_end]) {
        Some(i) => (start..start + i, start + i + 1..rest_end),
        None => (start..rest_end, rest_end..rest_end),
    };
    (path, query, fragment)
}

/// Builds a byte class: ASCII letters and digits plus `extra`.
const fn byte_class(extra: &[u8]) -> [bool; 256] {
    let mut class = [false; 256];
    let mut b = 0;
    while b < 256 {
        class[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        class[extra[i] as usize] = true;
        i += 1;
    }
    class
}

/// RFC 3986 `reg-name`: unreserved and sub-delims (`%` is checked apart, with its two digits).
static REG_NAME: [bool; 256] = byte_class(b"-._~!$&'()*+,;=");
/// RFC 3986 `userinfo`: `reg-name` and `:`.
static USERINFO: [bool; 256] = byte_class(b"-._~!$&'()*+,;=:");

/// Whether every byte is in `class` or starts a `%` and two hex digits.
fn all_in(bytes: &[u8], class: &[bool; 256]) -> bool {
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if class[b as usize] {
            i += 1;
        } else if b == b'%'
            && bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
        {
            i += 3;
        } else {
            return false;
        }
    }
    true
}

/// RFC 3986 `IP-literal` between its brackets: an IPv6 address or `v` HEXDIG "." ...
fn ip_literal(inner: &[u8]) -> bool {
    match inner {
        [b'v' | b'V', rest @ ..] => match memchr::memchr(b'.', rest) {
            Some(dot) if dot > 0 && dot + 1 < rest.len() => {
                rest[..dot].iter().all(u8::is_ascii_hexdigit)
                    && rest[dot + 1..]
                        .iter()
                        .all(|&b| b != b'%' && USERINFO[b as usize])
            }
            _ => false,
        },
        _ => std::str::from_utf8(inner).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok()),
    }
}

/// Splits `uri-host [ ":" port ]` (the Host field's value, RFC 9110 section 7.2) into host
/// and port digits; `None` when it is not one. The host may be empty.
fn host_port(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let host_end = if value.first() == Some(&b'[') {
        let close = memchr::memchr(b']', value)?;
        if !ip_literal(&value[1..close]) {
            return None;
        }
        close + 1
    } else {
        let end = memchr::memchr(b':', value).unwrap_or(value.len());
        if !all_in(&value[..end], &REG_NAME) {
            return None;
        }
        end
    };
    let (host, rest) = value.split_at(host_end);
    match rest {
        [] => Some((host, rest)),
        [b':', port @ ..] if port.iter().all(u8::is_ascii_digit) => Some((host, port)),
        _ => None,
    }
}

/// The range of `host [ ":" port ]` in an absolute-form target, checked: an `http` or `https`
/// scheme (the only ones served) and a valid, non-empty host (RFC 9110 section 4.2).
fn absolute_form_host(target: &[u8]) -> Result<Range<usize>, HttpError> {
    let bad = |why| Err(HttpError::invalid_target(target, why));
    let scheme_end = memmem::find(target, b"://").unwrap_or(0);
    let scheme = &target[..scheme_end];
    if !(scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https")) {
        return bad("the scheme is not http or https");
    }
    let start = scheme_end + 3;
    let end = target[start..]
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .map_or(target.len(), |p| start + p);
    // Userinfo is skipped, not used: only host and port identify the target.
    let host_start = match memchr::memrchr(b'@', &target[start..end]) {
        Some(at) if all_in(&target[start..start + at], &USERINFO) => start + at + 1,
        Some(_) => return bad("invalid userinfo"),
        None => start,
    };
    match host_port(&target[host_start..end]) {
        Some((host, _)) if !host.is_empty() => Ok(host_start..end),
        Some(_) => bad("an http or https URI needs a host"),
        None => bad("invalid host or port"),
    }
}

/// CONNECT's authority-form, `uri-host ":" port`, with a host and a usable port
/// (RFC 9112 section 3.2.3, RFC 9110 section 9.3.6).
fn check_connect_target(target: &[u8]) -> Result<(), HttpError> {
    let port = match host_port(target) {
        Some((host, port)) if !host.is_empty() => port,
        _ => return Err(HttpError::invalid_target(target, "CONNECT needs host:port")),
    };
    match std::str::from_utf8(port)
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
    {
        Some(p) if p > 0 => Ok(()),
        _ => Err(HttpError::invalid_target(target, "invalid port")),
    }
}

/// RFC 9110 section 5.5: a field value holds no control characters other than HTAB.
fn value_is_clean(value: &[u8]) -> bool {
    !value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
}

fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// RFC 9110 section 5.6.2 `tchar`.
pub fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Percent-decodes a request path like `urllib.parse.unquote_to_bytes`: invalid escapes stay.
pub fn percent_decode(raw: &[u8]) -> Cow<'_, [u8]> {
    if memchr::memchr(b'%', raw).is_none() {
        return Cow::Borrowed(raw);
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            if let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(bytes: &[u8]) -> RequestHead {
        parsed(bytes).0
    }

    /// The HTTP/1 framing facts of a valid head.
    fn framed(bytes: &[u8]) -> H1Framing {
        parsed(bytes).1
    }

    fn parsed(bytes: &[u8]) -> (RequestHead, H1Framing) {
        let (head, framing, n) = parse(bytes, &Limits::default())
            .expect("valid")
            .expect("complete");
        assert_eq!(n, bytes.len());
        (head, framing)
    }

    #[test]
    fn refused_request_keeps_the_request_line() {
        let raw = b"POST /p?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nUser-Agent: ua\r\nX-Req: in\r\n\r\n";
        let limits = Limits::default();
        assert!(err(raw, &limits).is_invalid_header());
        let head = refused_request(raw, &limits).expect("request line and fields");
        assert_eq!((&*head.method, head.target()), ("POST", &b"/p?q=1"[..]));
        let names: Vec<&str> = head.headers().iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["X-Req"]);
        assert!(refused_request(b"G@T / HTTP/1.1\r\n\r\n", &limits).is_none());
    }

    fn err(bytes: &[u8], limits: &Limits) -> HttpError {
        match parse(bytes, limits) {
            Err(e) => e,
            Ok(other) => panic!(
                "accepted {:?}: {:?}",
                String::from_utf8_lossy(bytes),
                other.map(|h| h.0)
            ),
        }
    }

    #[test]
    fn logs_see_the_head_as_parsed() {
        use crate::log::access::{AccessFormat, AccessRecord};
        use crate::log::LoggedRequest;
        let head = ok(b"POST /p%20q?x=1#f HTTP/1.0\r\nX-Req: a\r\nX-Req: b\r\n\r\n");
        assert_eq!(LoggedRequest::method(&head), "POST");
        assert_eq!(LoggedRequest::target(&head), b"/p%20q?x=1#f");
        assert_eq!(&*head.decoded_path(), b"/p q");
        assert_eq!(LoggedRequest::fragment(&head), b"f");
        assert_eq!(LoggedRequest::version(&head), (1, 0));
        let fields: Vec<_> = head.fields().collect();
        assert_eq!(fields, [("X-Req", &b"a"[..]), ("X-Req", &b"b"[..])]);
        let rec = AccessRecord {
            head: &head,
            remote_addr: "10.0.0.1",
            status: 200,
            sent: 0,
            response_headers: &[],
            environ: &[],
            duration: std::time::Duration::ZERO,
        };
        let line = AccessFormat::parse("%(r)s|%(U)s|%(q)s|%(H)s|%({x-req}i)s").render(&rec);
        assert_eq!(line, "POST /p%20q?x=1#f HTTP/1.0|/p q|x=1|HTTP/1.0|b\n");
    }

    #[test]
    fn fragment_is_after_the_hash() {
        let fragment = |target: &str| {
            let head = ok(format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
            head.fragment().to_vec()
        };
        assert_eq!(fragment("/a?b#frag"), b"frag");
        assert_eq!(fragment("/a?b"), b"");
        assert_eq!(fragment("/#"), b"");
    }

    #[test]
    fn simple_get() {
        let (head, framing) =
            parsed(b"GET /a/b?x=1#frag HTTP/1.1\r\nHost: example.com\r\nX-A:  v \r\n\r\n");
        assert_eq!(&*head.method, "GET");
        assert_eq!(head.path(), b"/a/b");
        assert_eq!(head.query(), b"x=1");
        assert_eq!(head.fragment(), b"frag");
        assert_eq!(head.version, Version { major: 1, minor: 1 });
        assert_eq!(head.headers().iter().nth(1).expect("field").1, b"v");
        assert_eq!(
            framing,
            H1Framing {
                body: Framing::None,
                keep_alive: true,
                expect_continue: false,
                upgrade: None,
            }
        );
    }

    #[test]
    fn upgrade_needs_the_connection_option_and_http_1_1() {
        let upgrade = |fields: &str| {
            let request = format!("GET /chat HTTP/1.1\r\nHost: h\r\n{fields}\r\n");
            framed(request.as_bytes()).upgrade
        };
        let ws = "Upgrade: websocket\r\nConnection: Upgrade\r\n";
        assert_eq!(upgrade(ws), Some(Upgrade::WebSocket));
        assert_eq!(
            upgrade("upgrade: WebSocket\r\nConnection: keep-alive, UPGRADE\r\n"),
            Some(Upgrade::WebSocket)
        );
        assert_eq!(
            upgrade("Upgrade: h2c, websocket/13\r\nConnection: upgrade\r\n"),
            Some(Upgrade::WebSocket)
        );
        assert_eq!(
            upgrade("Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"),
            Some(Upgrade::H2c)
        );
        assert_eq!(
            upgrade("Upgrade: irc/6.9\r\nConnection: Upgrade\r\n"),
            Some(Upgrade::Other)
        );
        // Without the connection option, or on HTTP/1.0, the field is ignored.
        assert_eq!(upgrade("Upgrade: websocket\r\n"), None);
        assert_eq!(upgrade("Connection: Upgrade\r\n"), None);
        let old = framed(b"GET / HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
        assert_eq!(old.upgrade, None);
        // An opening handshake is an ordinary body-less GET that stays alive if not taken up.
        let f = framed(
            b"GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        );
        assert_eq!((f.body, f.keep_alive), (Framing::None, true));
    }

    #[test]
    fn incomplete_heads_wait() {
        let full = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n";
        for cut in 0..full.len() {
            assert!(
                parse(&full[..cut], &Limits::default()).unwrap().is_none(),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn keep_alive_rules() {
        assert!(!framed(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(framed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(!framed(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n").keep_alive);
        assert!(
            !framed(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, close\r\n\r\n")
                .keep_alive
        );
    }

    #[test]
    fn framing() {
        assert_eq!(
            framed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\n").body,
            Framing::Length(12)
        );
        assert_eq!(
            framed(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").body,
            Framing::Chunked
        );
        let post =
            "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n";
        assert!(framed(post.as_bytes()).expect_continue);
        // Ignored on HTTP/1.0 (RFC 9110 section 10.1.1).
        let post = post.replace("HTTP/1.1", "HTTP/1.0");
        assert!(!framed(post.as_bytes()).expect_continue);
        let l = Limits::default();
        for bad in [
            &b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
        ] {
            assert_eq!(err(bad, &l).status, 400, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            err(
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n",
                &l
            )
            .status,
            501
        );
    }

    #[test]
    fn limits_give_gunicorns_answers() {
        let l = Limits::new(10, 2, 20);
        assert_eq!(
            err(b"GET /0123456789 HTTP/1.1\r\nHost: h\r\n\r\n", &l).status,
            414
        );
        assert_eq!(err(b"GET /0123456789abcdef", &l).status, 414);
        assert_eq!(
            err(
                b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
                &Limits::new(0, 2, 0)
            )
            .status,
            431
        );
        assert_eq!(
            err(
                b"GET / HTTP/1.1\r\nHost: h\r\nA: 0123456789012345678\r\n\r\n",
                &Limits::new(0, 0, 20)
            )
            .status,
            431
        );
        // Exactly at the limits is fine.
        assert!(parse(
            b"GET /23456789 HTTP/1.1\r\nHost: h\r\n\r\n",
            &Limits::new(23, 100, 8190)
        )
        .unwrap()
        .is_some());
    }

    #[test]
    fn strictness() {
        let l = Limits::default();
        for bad in [
            &b"get / HTTP/1.1\r\nHost: h\r\n\r\n"[..],
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / http/1.1\r\n\r\n",
            b"GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET * HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET x HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nName : x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nName: a\x00b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nName: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nName: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\n\n",
            b"GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n",
            b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"PUT s://]ufd/: HTTP/1.1\r\nHost: h\r\n\r\n",
        ] {
            assert!(
                err(bad, &l).status >= 400,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n\r\n", &l).status,
            417
        );
    }

    #[test]
    fn permissive_settings() {
        let l = Limits {
            permit_obsolete_folding: true,
            strip_header_spaces: true,
            permit_unconventional_http_method: true,
            casefold_http_method: true,
            ..Limits::default()
        };
        let (head, _, _) = parse(b"get / HTTP/1.2\r\nHost: h\r\nName : a\r\n  b\r\n\r\n", &l)
            .unwrap()
            .unwrap();
        assert_eq!(&*head.method, "GET");
        assert_eq!(head.version, Version { major: 1, minor: 2 });
        assert_eq!(head.headers().iter().nth(1).expect("field").0, "Name");
        assert_eq!(head.headers().iter().nth(1).expect("field").1, b"a b");
    }

    #[test]
    fn absolute_form_and_asterisk() {
        let head = ok(b"GET http://example.com:80/p/q?x HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(head.path(), b"/p/q");
        assert_eq!(head.query(), b"x");
        assert_eq!(ok(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").path(), b"*");
    }

    /// The refusal of a head that must get 400; its message names the problem.
    fn refused(bytes: &[u8]) -> String {
        let e = err(bytes, &Limits::default());
        assert_eq!(e.status, 400, "{}: {e:?}", String::from_utf8_lossy(bytes));
        e.message
    }

    #[test]
    fn host_is_required_on_http_1_1_only() {
        assert!(refused(b"GET / HTTP/1.1\r\n\r\n").contains("Missing Host"));
        assert!(refused(b"GET http://a/ HTTP/1.1\r\nX: 1\r\n\r\n").contains("Missing Host"));
        let later = Limits {
            permit_unconventional_http_version: true,
            ..Limits::default()
        };
        assert_eq!(err(b"GET / HTTP/1.2\r\n\r\n", &later).status, 400);
        assert!(ok(b"GET / HTTP/1.0\r\n\r\n").headers().is_empty());
        // Repeated Host is refused on every version.
        for version in ["1.0", "1.1"] {
            let twice = format!("GET / HTTP/{version}\r\nHost: a\r\nhost: a\r\n\r\n");
            assert!(refused(twice.as_bytes()).contains("HOST"));
        }
    }

    #[test]
    fn host_value_is_uri_host_and_port() {
        let with_host = |value: &str| format!("GET / HTTP/1.1\r\nHost: {value}\r\n\r\n");
        for good in [
            "example.com",
            "example.com:8080",
            "example.com:",
            "",
            "127.0.0.1:80",
            "0.0.0.0=5000",
            "ex%41mple_~-.com",
            "[::1]",
            "[::1]:443",
            "[::ffff:1.2.3.4]",
            "[v1.fe:80]",
        ] {
            ok(with_host(good).as_bytes());
        }
        for bad in [
            "a b",
            "a/b",
            "a@b",
            "a:b:c",
            "a:80x",
            "%zz",
            "a%4",
            "a\"b",
            "http://a",
            "[::1",
            "[::1]x",
            "[zz]",
            "[v.x]",
            "[::1%eth0]",
        ] {
            let message = refused(with_host(bad).as_bytes());
            assert!(message.contains("Invalid Host"), "{bad}: {message}");
        }
    }

    #[test]
    fn absolute_form_targets() {
        for (target, host) in [
            ("http://example.com/p?q", "example.com"),
            ("HTTPS://example.com:8443", "example.com:8443"),
            ("http://user:pass@example.com:80/p", "example.com:80"),
            ("http://[::1]:8080/p", "[::1]:8080"),
            ("http://a.b?x#f", "a.b"),
            // Empty userinfo is allowed by RFC 3986.
            ("http://@x/p", "x"),
        ] {
            let head = ok(format!("GET {target} HTTP/1.1\r\nHost: other\r\n\r\n").as_bytes());
            assert_eq!(head.target_host(), Some(host.as_bytes()), "{target}");
        }
        assert_eq!(
            ok(b"GET /p HTTP/1.1\r\nHost: h\r\n\r\n").target_host(),
            None
        );
        for bad in [
            "5ttp://x/hello",
            "ftp://x/",
            "://x/",
            "http:///p",
            "http://:80/p",
            "http://u@@x/p",
            "http://x:8o/",
            "http://[::1/p",
            "http://x%/p",
        ] {
            let request = format!("GET {bad} HTTP/1.1\r\nHost: x\r\n\r\n");
            let message = refused(request.as_bytes());
            assert!(message.contains("request target"), "{bad}: {message}");
        }
        // Targets of no form at all.
        for bad in ["x", "example.com:443", "http:x", "?q"] {
            refused(format!("GET {bad} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        }
    }

    #[test]
    fn authority_form_is_for_connect_only() {
        for good in ["example.com:443", "[::1]:443", "10.0.0.1:65535"] {
            let framing =
                framed(format!("CONNECT {good} HTTP/1.1\r\nHost: {good}\r\n\r\n").as_bytes());
            assert!(!framing.keep_alive);
        }
        for bad in [
            "example.com",
            "example.com:",
            "example.com:0",
            "example.com:65536",
            ":443",
            "/path",
            "http://example.com:443/",
        ] {
            let message = refused(format!("CONNECT {bad} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
            assert!(message.contains("request target"), "{bad}: {message}");
        }
        refused(b"GET example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n");
    }

    #[test]
    fn asterisk_form_is_for_options_only() {
        assert_eq!(ok(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").path(), b"*");
        for method in ["GET", "POST", "HEAD", "CONNECT"] {
            refused(format!("{method} * HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            &*percent_decode(b"/caf%C3%A9/%2f%zz%4"),
            b"/caf\xc3\xa9//%zz%4"
        );
    }

    fn h2(
        path: &str,
        authority: Option<&str>,
        fields: &[(&str, &str)],
    ) -> Result<(RequestHead, Framing), HttpError> {
        let fields = fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        from_h2(
            b"POST",
            path.as_bytes(),
            authority.map(str::as_bytes),
            fields,
            &Limits::new(40, 3, 100),
        )
    }

    #[test]
    fn http2_heads_take_the_authority_for_host_and_the_http1_limits() {
        let (head, framing) = h2(
            "/a?b=c",
            Some("example.com:8443"),
            &[("host", "other"), ("content-length", "5")],
        )
        .expect("a valid head");
        assert_eq!(head.version, Version { major: 2, minor: 0 });
        assert_eq!((head.path(), head.query()), (&b"/a"[..], &b"b=c"[..]));
        let fields: Vec<_> = head.headers().iter().collect();
        assert_eq!(
            fields,
            [("content-length", &b"5"[..]), ("host", b"example.com:8443")]
        );
        assert_eq!(framing, Framing::Length(5));
        // No Host and no :authority is no error on HTTP/2.
        assert!(h2("/", None, &[]).is_ok());
        assert_eq!(
            h2(&format!("/{}", "p".repeat(40)), None, &[])
                .unwrap_err()
                .status,
            414
        );
        let many = [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")];
        assert_eq!(h2("/", None, &many).unwrap_err().status, 431);
        let wide = "w".repeat(100);
        assert_eq!(h2("/", None, &[("x", &wide)]).unwrap_err().status, 431);
        assert_eq!(h2("/", None, &[("x", "a\x01b")]).unwrap_err().status, 400);
        let two_hosts = [("host", "a"), ("host", "b")];
        assert_eq!(h2("/", Some("c"), &two_hosts).unwrap_err().status, 400);
    }
}
