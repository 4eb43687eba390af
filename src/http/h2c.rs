//! The HTTP/1.1 upgrade to cleartext HTTP/2 (`Upgrade: h2c`, RFC 7540 section 3.2): whether a
//! request asks for it properly, the `101` that accepts it, and the HTTP/2 bytes that stand
//! for the upgraded request at the start of the connection, so that an HTTP/2 server that
//! knows nothing of the upgrade serves it as stream 1.
//!
//! What the HTTP/2 side reads after the `101`: the connection preface, one SETTINGS frame
//! holding the `HTTP2-Settings` payload followed by the client's own first SETTINGS (one
//! frame, so the server sends the one acknowledgement the client waits for: the `101`
//! acknowledges `HTTP2-Settings` itself), the request as a HEADERS block on stream 1 (literal
//! fields, no indexing, no Huffman), then the rest of what the client sends.

use super::head::{Framing, H1Framing, RequestHead};
use super::HttpError;

/// The answer that switches the connection to HTTP/2.
pub const SWITCHING_PROTOCOLS: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";

/// The client's first bytes on an HTTP/2 connection (RFC 9113 section 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Largest frame payload a peer accepts before it says otherwise (RFC 9113 section 4.2).
const DEFAULT_MAX_FRAME: usize = 16384;
const FRAME_HEADER: usize = 9;
const SETTINGS: u8 = 0x4;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const ACK: u8 = 0x1;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// `HTTP2-Settings` is base64url, with or without padding (RFC 7540 section 3.2.1): decoded
/// without its padding, whatever bits trail the last byte.
static SETTINGS_CODEC: std::sync::LazyLock<data_encoding::Encoding> =
    std::sync::LazyLock::new(|| {
        let mut spec = data_encoding::BASE64URL_NOPAD.specification();
        spec.check_trailing_bits = false;
        spec.encoding()
            .expect("base64url without padding is a valid specification")
    });

/// Fields that belong to the HTTP/1 connection, not to the request (RFC 9113 section 8.2.2),
/// and `Host`, which becomes `:authority`.
const NOT_FORWARDED: [&str; 7] = [
    "connection",
    "upgrade",
    "http2-settings",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "host",
];

/// Whether `head`, which asks for `Upgrade: h2c`, may be upgraded: `Ok(Some(payload))` with
/// the decoded `HTTP2-Settings`; `Ok(None)` when the upgrade is to be ignored and the request
/// answered over HTTP/1.1 (it has a body, or lacks `HTTP2-Settings` or its `Connection`
/// option); an error for an `HTTP2-Settings` that is repeated or malformed.
pub fn offer(head: &RequestHead, framing: &H1Framing) -> Result<Option<Vec<u8>>, HttpError> {
    // The body would have to be read before the switch; RFC 7540 lets the server decline.
    if framing.body != Framing::None {
        return Ok(None);
    }
    let mut named = false;
    let mut value = None;
    for (name, v) in head.headers() {
        if name.eq_ignore_ascii_case("connection") {
            named |= v
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"http2-settings"));
        } else if name.eq_ignore_ascii_case("http2-settings") {
            if value.is_some() {
                return Err(HttpError::invalid_header(b"HTTP2-SETTINGS"));
            }
            value = Some(v);
        }
    }
    let Some(value) = value else {
        return Ok(None);
    };
    let payload =
        decode_settings(value).ok_or_else(|| HttpError::invalid_header(b"HTTP2-SETTINGS"))?;
    Ok(named.then_some(payload))
}

/// The SETTINGS payload an `HTTP2-Settings` value carries, if it is one: whole 6-byte entries
/// whose values are allowed (RFC 9113 section 6.5.2).
fn decode_settings(value: &[u8]) -> Option<Vec<u8>> {
    let unpadded = value
        .strip_suffix(b"==")
        .or_else(|| value.strip_suffix(b"="))
        .unwrap_or(value);
    let payload = SETTINGS_CODEC.decode(unpadded).ok()?;
    settings_valid(&payload).then_some(payload)
}

fn settings_valid(payload: &[u8]) -> bool {
    payload.len() % 6 == 0
        && payload.chunks_exact(6).all(|entry| {
            let id = u16::from_be_bytes([entry[0], entry[1]]);
            let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
            match id {
                // ENABLE_PUSH
                0x2 => value <= 1,
                // INITIAL_WINDOW_SIZE
                0x4 => value <= 0x7fff_ffff,
                // MAX_FRAME_SIZE
                0x5 => (16384..=0xff_ffff).contains(&value),
                _ => true,
            }
        })
}

/// Where the client's start after the `101` stands: its preface then its first frame, which
/// must be SETTINGS (RFC 9113 section 3.4).
#[derive(Debug, PartialEq, Eq)]
pub enum ClientStart {
    /// Incomplete so far: read more.
    Partial,
    /// Complete: the client's SETTINGS payload is `buf[payload]`, and its start ends there.
    Whole { payload: std::ops::Range<usize> },
    /// Not an HTTP/2 client start.
    Invalid(&'static str),
}

/// Looks at the client's first bytes after the `101`.
pub fn client_start(buf: &[u8]) -> ClientStart {
    let n = buf.len().min(PREFACE.len());
    if buf[..n] != PREFACE[..n] {
        return ClientStart::Invalid("not the HTTP/2 connection preface");
    }
    let Some(header) = buf.get(PREFACE.len()..PREFACE.len() + FRAME_HEADER) else {
        return ClientStart::Partial;
    };
    let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
    if header[3] != SETTINGS || header[4] & ACK != 0 || stream != 0 {
        return ClientStart::Invalid("the preface is not followed by SETTINGS");
    }
    if len > DEFAULT_MAX_FRAME {
        return ClientStart::Invalid("SETTINGS frame too large");
    }
    let start = PREFACE.len() + FRAME_HEADER;
    if buf.len() < start + len {
        return ClientStart::Partial;
    }
    if !settings_valid(&buf[start..start + len]) {
        return ClientStart::Invalid("malformed SETTINGS frame");
    }
    ClientStart::Whole {
        payload: start..start + len,
    }
}

/// The bytes an HTTP/2 server reads in place of the client's start: the preface, one SETTINGS
/// frame with `upgrade_settings` (from `HTTP2-Settings`) then `client_settings` (later entries
/// win), and `head` as a request on stream 1 with no body. `None`: the settings together do
/// not fit in one frame.
pub fn upgraded_start(
    upgrade_settings: &[u8],
    client_settings: &[u8],
    head: &RequestHead,
) -> Option<Vec<u8>> {
    let settings_len = upgrade_settings.len() + client_settings.len();
    if settings_len > DEFAULT_MAX_FRAME {
        return None;
    }
    let block = header_block(head);
    let mut out = Vec::with_capacity(PREFACE.len() + 2 * FRAME_HEADER + settings_len + block.len());
    out.extend_from_slice(PREFACE);
    frame_header(&mut out, settings_len, SETTINGS, 0, 0);
    out.extend_from_slice(upgrade_settings);
    out.extend_from_slice(client_settings);
    // HEADERS, then CONTINUATION frames if the block is larger than one frame may be (never
    // empty: the pseudo-header fields are always there).
    let mut chunks = block.chunks(DEFAULT_MAX_FRAME).peekable();
    let mut kind = HEADERS;
    let mut flags = END_STREAM;
    while let Some(chunk) = chunks.next() {
        if chunks.peek().is_none() {
            flags |= END_HEADERS;
        }
        frame_header(&mut out, chunk.len(), kind, flags, 1);
        out.extend_from_slice(chunk);
        kind = CONTINUATION;
        flags = 0;
    }
    Some(out)
}

fn frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// `head` as an HPACK block: the pseudo-header fields, then its fields lower-cased, less the
/// connection's own. An absolute-form target gives `:path` and `:authority`; else `Host` does.
fn header_block(head: &RequestHead) -> Vec<u8> {
    let mut block = Vec::with_capacity(256);
    literal(&mut block, b":method", head.method.as_bytes());
    literal(&mut block, b":scheme", b"http");
    match head.target_host() {
        Some(authority) => {
            let mut path = head.path().to_vec();
            if path.is_empty() {
                path.push(b'/');
            }
            if !head.query().is_empty() {
                path.push(b'?');
                path.extend_from_slice(head.query());
            }
            literal(&mut block, b":path", &path);
            literal(&mut block, b":authority", authority);
        }
        None => {
            literal(&mut block, b":path", head.target());
            let host = head
                .headers()
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("host"));
            if let Some((_, host)) = host {
                literal(&mut block, b":authority", host);
            }
        }
    }
    for (name, value) in head.headers() {
        let lower = name.to_ascii_lowercase();
        // `TE` may only say `trailers` on HTTP/2 (RFC 9113 section 8.2.2).
        let te_other = lower == "te" && !value.eq_ignore_ascii_case(b"trailers");
        if te_other || NOT_FORWARDED.contains(&lower.as_str()) {
            continue;
        }
        literal(&mut block, lower.as_bytes(), value);
    }
    block
}

/// A literal field without indexing, with a new name (RFC 7541 section 6.2.2).
fn literal(block: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    block.push(0);
    string(block, name);
    string(block, value);
}

/// A string literal without Huffman coding (RFC 7541 section 5.2).
fn string(block: &mut Vec<u8>, s: &[u8]) {
    integer(block, s.len(), 7, 0);
    block.extend_from_slice(s);
}

/// An integer with an `n`-bit prefix (RFC 7541 section 5.1); `high` holds the first byte's
/// other bits.
fn integer(block: &mut Vec<u8>, mut value: usize, n: u32, high: u8) {
    let max = (1usize << n) - 1;
    if value < max {
        block.push(high | value as u8);
        return;
    }
    block.push(high | max as u8);
    value -= max;
    while value >= 128 {
        block.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    block.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{parse, Limits};

    fn parsed(request: &str) -> (RequestHead, H1Framing) {
        let (head, framing, _) = parse(request.as_bytes(), &Limits::default())
            .expect("valid")
            .expect("complete");
        (head, framing)
    }

    const UPGRADE: &str = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n";

    fn offered(fields: &str) -> Result<Option<Vec<u8>>, HttpError> {
        let (head, framing) = parsed(&format!("GET / HTTP/1.1\r\nHost: a\r\n{fields}\r\n"));
        offer(&head, &framing)
    }

    #[test]
    fn settings_are_decoded_with_or_without_padding() {
        // INITIAL_WINDOW_SIZE 65535, ENABLE_PUSH 0 (as curl sends).
        let ok = offered(&format!("{UPGRADE}HTTP2-Settings: AAQAAP__AAIAAAAA\r\n"));
        let want = vec![0, 4, 0, 0, 0xff, 0xff, 0, 2, 0, 0, 0, 0];
        assert_eq!(ok.expect("valid"), Some(want));
        // One entry is 8 base64 characters: no padding either way; two bytes short needs it.
        assert_eq!(
            offered(&format!("{UPGRADE}HTTP2-Settings: \r\n")),
            Ok(Some(vec![]))
        );
        assert_eq!(
            offered(&format!("{UPGRADE}HTTP2-Settings: AAMAAABk\r\n")),
            Ok(Some(vec![0, 3, 0, 0, 0, 100]))
        );
    }

    #[test]
    fn a_bad_settings_value_is_refused() {
        for bad in [
            "AAQAAP__AAIAAA",
            "not*base64",
            "AAIAAAAC",
            "AAUAAAAA",
            "AAQAAP__AAIAAAAA,x",
        ] {
            let err = offered(&format!("{UPGRADE}HTTP2-Settings: {bad}\r\n")).expect_err(bad);
            assert_eq!(err.status, 400, "{bad}");
        }
        let twice = format!("{UPGRADE}HTTP2-Settings: AAMAAABk\r\nHTTP2-Settings: AAMAAABk\r\n");
        assert_eq!(offered(&twice).expect_err("twice").status, 400);
    }

    #[test]
    fn the_upgrade_is_ignored_without_settings_or_with_a_body() {
        assert_eq!(offered(UPGRADE), Ok(None));
        let unnamed = "Connection: Upgrade\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n";
        assert_eq!(offered(unnamed), Ok(None));
        let body = format!("{UPGRADE}HTTP2-Settings: AAMAAABk\r\nContent-Length: 2\r\n");
        assert_eq!(offered(&body), Ok(None));
        let empty = format!("{UPGRADE}HTTP2-Settings: AAMAAABk\r\nContent-Length: 0\r\n");
        assert_eq!(offered(&empty), Ok(Some(vec![0, 3, 0, 0, 0, 100])));
    }

    fn settings_frame(payload: &[u8], flags: u8) -> Vec<u8> {
        let mut out = Vec::new();
        frame_header(&mut out, payload.len(), SETTINGS, flags, 0);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn the_client_start_is_the_preface_and_settings() {
        let mut start = PREFACE.to_vec();
        start.extend_from_slice(&settings_frame(&[0, 3, 0, 0, 0, 100], 0));
        for cut in [0, 10, 24, 30, start.len() - 1] {
            assert_eq!(client_start(&start[..cut]), ClientStart::Partial, "{cut}");
        }
        let whole = ClientStart::Whole { payload: 33..39 };
        assert_eq!(client_start(&start), whole);
        start.extend_from_slice(b"more");
        assert_eq!(client_start(&start), whole);
        assert!(matches!(
            client_start(b"GET / HTTP/1.1\r\n"),
            ClientStart::Invalid(_)
        ));
        let mut ack = PREFACE.to_vec();
        ack.extend_from_slice(&settings_frame(&[], ACK));
        assert!(matches!(client_start(&ack), ClientStart::Invalid(_)));
        let mut odd = PREFACE.to_vec();
        odd.extend_from_slice(&settings_frame(&[0, 3, 0], 0));
        assert!(matches!(client_start(&odd), ClientStart::Invalid(_)));
    }

    #[test]
    fn hpack_integers_follow_rfc_7541_examples() {
        let mut out = Vec::new();
        integer(&mut out, 10, 5, 0);
        assert_eq!(out, [10]);
        out.clear();
        integer(&mut out, 1337, 5, 0);
        assert_eq!(out, [31, 154, 10]);
        out.clear();
        integer(&mut out, 127, 7, 0);
        assert_eq!(out, [127, 0]);
    }

    /// Decodes the literal fields [`header_block`] writes.
    fn fields_of(mut block: &[u8]) -> Vec<(String, String)> {
        fn string(block: &mut &[u8]) -> String {
            let mut len = (block[0] & 0x7f) as usize;
            let mut used = 1;
            if len == 0x7f {
                let mut shift = 0;
                loop {
                    let b = block[used];
                    used += 1;
                    len += ((b & 0x7f) as usize) << shift;
                    shift += 7;
                    if b & 0x80 == 0 {
                        break;
                    }
                }
            }
            let s = String::from_utf8(block[used..used + len].to_vec()).expect("ascii");
            *block = &block[used + len..];
            s
        }
        let mut out = Vec::new();
        while !block.is_empty() {
            assert_eq!(block[0], 0, "literal without indexing, new name");
            block = &block[1..];
            let name = string(&mut block);
            out.push((name, string(&mut block)));
        }
        out
    }

    #[test]
    fn the_request_becomes_stream_1() {
        let (head, _) = parsed(&format!(
            "GET /a?b=1 HTTP/1.1\r\nHost: example.com:8000\r\nUser-Agent: t\r\n{UPGRADE}\
             HTTP2-Settings: AAMAAABk\r\nKeep-Alive: 5\r\nTE: gzip\r\nX-Long: {}\r\n\r\n",
            "v".repeat(200)
        ));
        let out = upgraded_start(&[0, 3, 0, 0, 0, 100], &[0, 4, 0, 1, 0, 0], &head).expect("fits");
        assert_eq!(&out[..24], PREFACE);
        let settings = settings_frame(&[0, 3, 0, 0, 0, 100, 0, 4, 0, 1, 0, 0], 0);
        assert_eq!(&out[24..45], &settings[..]);
        let headers = &out[45..];
        let len = u32::from_be_bytes([0, headers[0], headers[1], headers[2]]) as usize;
        assert_eq!(
            &headers[3..9],
            &[HEADERS, END_STREAM | END_HEADERS, 0, 0, 0, 1]
        );
        assert_eq!(headers.len(), 9 + len);
        let fields = fields_of(&headers[9..]);
        let pairs: Vec<(&str, &str)> = fields
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let long = "v".repeat(200);
        assert_eq!(
            pairs,
            [
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/a?b=1"),
                (":authority", "example.com:8000"),
                ("user-agent", "t"),
                ("x-long", long.as_str()),
            ]
        );
    }

    #[test]
    fn an_absolute_target_gives_path_and_authority() {
        let (head, _) = parsed("OPTIONS http://h:1/p?q HTTP/1.1\r\nHost: other\r\n\r\n");
        let out = upgraded_start(&[], &[], &head).expect("fits");
        let fields = fields_of(&out[24 + 9 + 9..]);
        assert_eq!(fields[2], (":path".into(), "/p?q".into()));
        assert_eq!(fields[3], (":authority".into(), "h:1".into()));
        assert_eq!(fields.len(), 4);
    }

    #[test]
    fn a_large_head_continues_in_continuation_frames() {
        let big = "x".repeat(8000);
        let fields: String = (0..5).map(|i| format!("X-{i}: {big}\r\n")).collect();
        let limits = Limits::new(4094, 100, 8190);
        let request = format!("GET / HTTP/1.1\r\nHost: a\r\n{fields}\r\n");
        let (head, _, _) = parse(request.as_bytes(), &limits)
            .expect("valid")
            .expect("whole");
        let out = upgraded_start(&[], &[], &head).expect("fits");
        let mut at = 24 + 9;
        let mut kinds = Vec::new();
        let mut block = Vec::new();
        while at < out.len() {
            let len = u32::from_be_bytes([0, out[at], out[at + 1], out[at + 2]]) as usize;
            assert!(len <= DEFAULT_MAX_FRAME);
            kinds.push((out[at + 3], out[at + 4]));
            block.extend_from_slice(&out[at + 9..at + 9 + len]);
            at += 9 + len;
        }
        assert_eq!(
            kinds,
            [
                (HEADERS, END_STREAM),
                (CONTINUATION, 0),
                (CONTINUATION, END_HEADERS)
            ]
        );
        assert_eq!(fields_of(&block).len(), 4 + 5);
    }

    #[test]
    fn settings_too_large_for_one_frame_are_refused() {
        let (head, _) = parsed("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let half = vec![0u8; 6 * 1400];
        assert!(upgraded_start(&half, &half, &head).is_none());
    }
}
