//! Request body decoders: Content-Length and chunked, as state machines that accept their
//! input split at any byte.

use memchr::memmem;

use super::error::HttpError;
use super::head::Framing;

/// Longest chunk-size line (with extensions), as Gunicorn's default field size.
const MAX_SIZE_LINE: usize = 8190;
/// Largest trailer section.
const MAX_TRAILERS: usize = 8190 * 32;
/// Fields that must not appear in a trailer (RFC 9110 section 6.5.1).
const FORBIDDEN_TRAILERS: [&[u8]; 6] = [
    b"host",
    b"content-length",
    b"transfer-encoding",
    b"trailer",
    b"authorization",
    b"te",
];

/// Progress of one [`BodyDecoder::decode`] call.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of the input that were used.
    pub consumed: usize,
    /// The body (and any chunked trailer) is complete.
    pub done: bool,
}

#[derive(Debug)]
pub enum BodyDecoder {
    Length {
        remaining: u64,
    },
    Chunked(Chunked),
    /// Every byte until the input ends (an HTTP/2 stream without Content-Length, whose
    /// DATA frames the protocol has already unframed).
    UntilEnd,
    Done,
}

#[derive(Debug)]
pub enum Chunked {
    /// Collecting a chunk-size line.
    Size { line: Vec<u8> },
    /// Inside chunk data.
    Data { remaining: u64 },
    /// After chunk data: `seen` bytes of the CRLF arrived.
    DataEnd { seen: u8 },
    /// After the last chunk: collecting the trailer section.
    Trailers { buf: Vec<u8> },
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> BodyDecoder {
        match framing {
            Framing::None | Framing::Length(0) => BodyDecoder::Done,
            Framing::Length(n) => BodyDecoder::Length { remaining: n },
            Framing::Chunked => BodyDecoder::Chunked(Chunked::Size { line: Vec::new() }),
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, BodyDecoder::Done)
    }

    /// The input ended. True when that completes the body (see [`BodyDecoder::UntilEnd`]);
    /// false when the body was cut short.
    pub fn end_of_input(&mut self) -> bool {
        match self {
            BodyDecoder::UntilEnd | BodyDecoder::Done => {
                *self = BodyDecoder::Done;
                true
            }
            _ => false,
        }
    }

    /// Body bytes still expected when the framing says (Content-Length), else 0.
    pub fn remaining_hint(&self) -> u64 {
        match self {
            BodyDecoder::Length { remaining } => *remaining,
            _ => 0,
        }
    }

    /// Accounts for `n` bytes of a Content-Length body that the caller placed in the output
    /// itself (they need no decoding). `n` must not exceed [`remaining_hint`](Self::remaining_hint).
    pub fn skip_decoded(&mut self, n: usize) {
        if let BodyDecoder::Length { remaining } = self {
            *remaining -= (n as u64).min(*remaining);
            if *remaining == 0 {
                *self = BodyDecoder::Done;
            }
        }
    }

    /// Decodes from `input`, appending at most `max_out` body bytes to `out`.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max_out: usize,
    ) -> Result<Decoded, HttpError> {
        let mut pos = 0;
        let mut produced = 0;
        loop {
            let rest = &input[pos..];
            match self {
                BodyDecoder::Done => {
                    return Ok(Decoded {
                        consumed: pos,
                        done: true,
                    })
                }
                BodyDecoder::Length { remaining } => {
                    let n = take(*remaining, rest.len(), max_out - produced);
                    out.extend_from_slice(&rest[..n]);
                    pos += n;
                    produced += n;
                    *remaining -= n as u64;
                    if *remaining == 0 {
                        *self = BodyDecoder::Done;
                        continue;
                    }
                    return Ok(Decoded {
                        consumed: pos,
                        done: false,
                    });
                }
                BodyDecoder::UntilEnd => {
                    let n = rest.len().min(max_out - produced);
                    out.extend_from_slice(&rest[..n]);
                    return Ok(Decoded {
                        consumed: pos + n,
                        done: false,
                    });
                }
                BodyDecoder::Chunked(state) => {
                    if rest.is_empty() {
                        return Ok(Decoded {
                            consumed: pos,
                            done: false,
                        });
                    }
                    match state {
                        Chunked::Size { line } => {
                            let lf = memchr::memchr(b'\n', rest);
                            let taken = lf.map_or(rest.len(), |lf| lf + 1);
                            line.extend_from_slice(&rest[..taken]);
                            pos += taken;
                            // One bound on the line without its LF, checked on every piece,
                            // so a line is refused whether it arrives in one read or several.
                            if line.len() - usize::from(lf.is_some()) > MAX_SIZE_LINE {
                                let unterminated = if lf.is_some() {
                                    ""
                                } else {
                                    " with no terminator"
                                };
                                return Err(HttpError::invalid_chunk_size(
                                    format!("line over {MAX_SIZE_LINE} bytes{unterminated}")
                                        .as_bytes(),
                                ));
                            }
                            if lf.is_none() {
                                continue;
                            }
                            let size = parse_size_line(line)?;
                            *state = if size == 0 {
                                Chunked::Trailers { buf: Vec::new() }
                            } else {
                                Chunked::Data { remaining: size }
                            };
                        }
                        Chunked::Data { remaining } => {
                            if produced == max_out {
                                return Ok(Decoded {
                                    consumed: pos,
                                    done: false,
                                });
                            }
                            let n = take(*remaining, rest.len(), max_out - produced);
                            out.extend_from_slice(&rest[..n]);
                            pos += n;
                            produced += n;
                            *remaining -= n as u64;
                            if *remaining == 0 {
                                *state = Chunked::DataEnd { seen: 0 };
                            }
                        }
                        Chunked::DataEnd { seen } => {
                            let want = if *seen == 0 { b'\r' } else { b'\n' };
                            if rest[0] != want {
                                return Err(HttpError::chunk_terminator(
                                    &rest[..rest.len().min(2)],
                                ));
                            }
                            pos += 1;
                            *seen += 1;
                            if *seen == 2 {
                                *state = Chunked::Size { line: Vec::new() };
                            }
                        }
                        Chunked::Trailers { buf } => {
                            let before = buf.len();
                            buf.extend_from_slice(rest);
                            if buf.starts_with(b"\r\n") {
                                pos += 2 - before;
                                *self = BodyDecoder::Done;
                                continue;
                            }
                            if buf.len() >= 2 && buf[0] == b'\r' && buf[1] != b'\n'
                                || buf.first() == Some(&b'\n')
                            {
                                return Err(HttpError::invalid_header(
                                    b"bare LF as line terminator",
                                ));
                            }
                            let search_from = before.saturating_sub(3);
                            match memmem::find(&buf[search_from..], b"\r\n\r\n") {
                                Some(i) => {
                                    let end = search_from + i + 4;
                                    check_trailers(&buf[..end - 2])?;
                                    pos += end - before;
                                    *self = BodyDecoder::Done;
                                }
                                None => {
                                    if buf.len() > MAX_TRAILERS {
                                        return Err(HttpError::headers_too_large(
                                            "limit request trailer section size",
                                        ));
                                    }
                                    pos += rest.len();
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn take(remaining: u64, available: usize, room: usize) -> usize {
    (remaining.min(usize::MAX as u64) as usize)
        .min(available)
        .min(room)
}

/// `1a;name=value\r\n` -> 26. Gunicorn's rules: hex digits only, optional extensions after `;`
/// (whitespace allowed before it), CRLF line end.
fn parse_size_line(line: &[u8]) -> Result<u64, HttpError> {
    let Some(line) = line.strip_suffix(b"\r\n") else {
        return Err(HttpError::invalid_chunk_size(line));
    };
    let (mut size, ext) = match memchr::memchr(b';', line) {
        Some(i) => (&line[..i], Some(&line[i..])),
        None => (line, None),
    };
    if let Some(ext) = ext {
        if ext.contains(&b'\r') {
            return Err(HttpError::invalid_chunk_extension("bare CR not allowed"));
        }
        while let [rest @ .., b' ' | b'\t'] = size {
            size = rest;
        }
    }
    if size.is_empty() || !size.iter().all(u8::is_ascii_hexdigit) {
        return Err(HttpError::invalid_chunk_size(size));
    }
    if let Some(ext) = ext {
        if !valid_extensions(ext) {
            return Err(HttpError::invalid_chunk_extension(
                "invalid chunk extension",
            ));
        }
    }
    let digits = std::str::from_utf8(size).map_err(|_| HttpError::invalid_chunk_size(size))?;
    u64::from_str_radix(digits, 16).map_err(|_| HttpError::invalid_chunk_size(size))
}

/// `*( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )` (RFC 9112 section 7.1.1).
fn valid_extensions(mut ext: &[u8]) -> bool {
    fn skip_ws(s: &[u8]) -> &[u8] {
        let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
        &s[n..]
    }
    fn token(s: &[u8]) -> Option<&[u8]> {
        let n = s.iter().take_while(|&&b| is_tchar(b)).count();
        (n > 0).then(|| &s[n..])
    }
    fn quoted(s: &[u8]) -> Option<&[u8]> {
        let mut i = 1;
        while i < s.len() {
            match s[i] {
                b'"' => return Some(&s[i + 1..]),
                b'\\' if i + 1 < s.len() => i += 2,
                b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => i += 1,
                _ => return None,
            }
        }
        None
    }
    while !ext.is_empty() {
        ext = skip_ws(ext);
        let Some(rest) = ext.strip_prefix(b";") else {
            return false;
        };
        let Some(rest) = token(skip_ws(rest)) else {
            return false;
        };
        ext = rest;
        let after = skip_ws(ext);
        if let Some(value) = after.strip_prefix(b"=") {
            let value = skip_ws(value);
            ext = match value.first() {
                Some(b'"') => match quoted(value) {
                    Some(r) => r,
                    None => return false,
                },
                _ => match token(value) {
                    Some(r) => r,
                    None => return false,
                },
            };
        }
    }
    true
}

/// `section`: the trailer lines, each ending in CRLF. Trailer fields follow the header rules, minus the fields that may not be trailers.
fn check_trailers(section: &[u8]) -> Result<(), HttpError> {
    for line in section.split_inclusive(|&b| b == b'\n') {
        let Some(line) = line.strip_suffix(b"\r\n") else {
            return Err(HttpError::invalid_header(b"bare LF as line terminator"));
        };
        if line.is_empty() {
            continue;
        }
        let colon = match memchr::memchr(b':', line) {
            Some(i) if i > 0 => i,
            _ => return Err(HttpError::invalid_header(line)),
        };
        let name = &line[..colon];
        if !name.iter().all(|&b| is_tchar(b)) {
            return Err(HttpError::invalid_header_name(name));
        }
        if FORBIDDEN_TRAILERS
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f))
        {
            return Err(HttpError::invalid_header_name(&name.to_ascii_uppercase()));
        }
        if line[colon + 1..]
            .iter()
            .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
        {
            return Err(HttpError::invalid_header(name));
        }
    }
    Ok(())
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_placed_directly_count_against_the_length() {
        let mut dec = BodyDecoder::new(Framing::Length(10));
        dec.skip_decoded(4);
        assert_eq!(dec.remaining_hint(), 6);
        let mut out = Vec::new();
        let got = dec
            .decode(b"123456GET", &mut out, usize::MAX)
            .expect("decodes");
        assert_eq!(
            (out.as_slice(), got.consumed, dec.is_done()),
            (&b"123456"[..], 6, true)
        );
        let mut chunked = BodyDecoder::new(Framing::Chunked);
        chunked.skip_decoded(3);
        assert!(
            matches!(chunked, BodyDecoder::Chunked(_)),
            "only a length can be skipped"
        );
    }

    /// Feeds `input` in pieces of `step` bytes; returns the body and the bytes left over.
    fn run(framing: Framing, input: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), HttpError> {
        let mut dec = BodyDecoder::new(framing);
        let mut out = Vec::new();
        let mut pos = 0;
        let mut pending: Vec<u8> = Vec::new();
        while !dec.is_done() {
            if pos >= input.len() && pending.is_empty() {
                break;
            }
            let end = (pos + step).min(input.len());
            pending.extend_from_slice(&input[pos..end]);
            pos = end;
            let d = dec.decode(&pending, &mut out, usize::MAX)?;
            pending.drain(..d.consumed);
            if d.done {
                break;
            }
        }
        let mut rest = pending;
        rest.extend_from_slice(&input[pos..]);
        assert!(dec.is_done(), "incomplete");
        Ok((out, rest))
    }

    #[test]
    fn chunked_at_every_split() {
        let input = b"5;a=b\r\nhello\r\n6 ; x=\"q\\\"\"\r\n world\r\n0\r\nX-T: 1\r\n\r\nGET /next";
        for step in 1..input.len() {
            let (body, rest) = run(Framing::Chunked, input, step).unwrap();
            assert_eq!(body, b"hello world", "step {step}");
            assert_eq!(rest, b"GET /next", "step {step}");
        }
    }

    #[test]
    fn a_size_line_over_the_bound_is_refused_however_it_arrives() {
        let extension = "b".repeat(MAX_SIZE_LINE);
        let long = format!("5;x={extension}\r\nhello\r\n0\r\n\r\n");
        let short = format!("5;x={}\r\nhello\r\n0\r\n\r\n", &extension[..100]);
        for step in [1, 1000, long.len()] {
            assert!(
                run(Framing::Chunked, long.as_bytes(), step).is_err(),
                "step {step}"
            );
            let (body, _) = run(Framing::Chunked, short.as_bytes(), step).unwrap();
            assert_eq!(body, b"hello", "step {step}");
        }
    }

    #[test]
    fn length_stops_at_the_end() {
        let (body, rest) = run(Framing::Length(5), b"hellonext", 2).unwrap();
        assert_eq!(
            (body.as_slice(), rest.as_slice()),
            (&b"hello"[..], &b"next"[..])
        );
    }

    #[test]
    fn max_out_is_respected() {
        let mut dec = BodyDecoder::new(Framing::Chunked);
        let mut out = Vec::new();
        let d = dec
            .decode(b"a\r\n0123456789\r\n0\r\n\r\n", &mut out, 4)
            .unwrap();
        assert_eq!(out, b"0123");
        assert!(!d.done);
    }

    #[test]
    fn bad_chunks() {
        for bad in [
            &b"0x5\r\nhello\r\n0\r\n\r\n"[..],
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"10000000000000005\r\nhello\r\n0\r\n\r\n",
            b"5;\x01\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"0\r\nHost: x\r\n\r\n",
            b"0\r\nnot a field\r\n\r\n",
        ] {
            assert!(
                run(Framing::Chunked, bad, 1).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
