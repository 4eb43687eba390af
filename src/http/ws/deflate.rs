//! permessage-deflate (RFC 7692): choosing an offer of the client's `Sec-WebSocket-Extensions`,
//! the answer's parameters, and the raw-deflate compressor and decompressor of a connection.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Ends every compressed message on the wire before the sender strips it (RFC 7692 section
/// 7.2.1): the empty stored block a sync flush emits.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Output room added per step of (de)compression.
const STEP: usize = 64 * 1024;

/// The parameters agreed for a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// The server starts every message with an empty window (the client asked).
    pub server_no_context_takeover: bool,
    /// The client said it starts every message with an empty window.
    pub client_no_context_takeover: bool,
    /// The largest window the client lets the server's compressor use (8..=15), if it said.
    pub server_max_window_bits: Option<u8>,
}

impl Params {
    /// Appends the answer's `Sec-WebSocket-Extensions` value.
    pub fn push_answer(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"permessage-deflate");
        if self.server_no_context_takeover {
            out.extend_from_slice(b"; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.extend_from_slice(b"; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            out.extend_from_slice(b"; server_max_window_bits=");
            out.extend_from_slice(bits.to_string().as_bytes());
        }
    }
}

/// The first permessage-deflate offer this server can take among the values of the
/// `Sec-WebSocket-Extensions` fields, in order; `None` when there is none (the connection then
/// goes uncompressed). An offer with an unknown, repeated or invalid parameter is declined, as
/// RFC 7692 section 5 asks.
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<Params> {
    values
        .into_iter()
        .flat_map(|value| split_outside_quotes(value, b','))
        .find_map(|offer| {
            let mut parts = split_outside_quotes(offer, b';').into_iter();
            let name = parts.next()?;
            if !name.eq_ignore_ascii_case(b"permessage-deflate") {
                return None;
            }
            accept_offer(parts)
        })
}

/// The parameters of one permessage-deflate offer, if all are acceptable.
fn accept_offer<'a>(params: impl Iterator<Item = &'a [u8]>) -> Option<Params> {
    let mut agreed = Params {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        server_max_window_bits: None,
    };
    let mut client_bits_seen = false;
    for param in params {
        let (name, value) = match memchr::memchr(b'=', param) {
            Some(eq) => (trim(&param[..eq]), Some(unquote(trim(&param[eq + 1..])))),
            None => (param, None),
        };
        let name = name.to_ascii_lowercase();
        match (name.as_slice(), value) {
            (b"server_no_context_takeover", None) if !agreed.server_no_context_takeover => {
                agreed.server_no_context_takeover = true;
            }
            (b"client_no_context_takeover", None) if !agreed.client_no_context_takeover => {
                agreed.client_no_context_takeover = true;
            }
            (b"server_max_window_bits", Some(value)) if agreed.server_max_window_bits.is_none() => {
                agreed.server_max_window_bits = Some(window_bits(value)?);
            }
            // Whatever window the client uses, the decompressor's own 15 bits cover it, so
            // the answer leaves it to the client.
            (b"client_max_window_bits", value) if !client_bits_seen => {
                client_bits_seen = true;
                if let Some(value) = value {
                    window_bits(value)?;
                }
            }
            _ => return None,
        }
    }
    Some(agreed)
}

/// A window size parameter's value: 8 to 15, without leading zeros.
fn window_bits(value: &[u8]) -> Option<u8> {
    match value {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

/// Splits a field value at `sep` outside quoted strings, trimming each part and dropping
/// empty ones (RFC 9110 section 5.6.1 allows empty list elements).
fn split_outside_quotes(value: &[u8], sep: u8) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, &b) in value.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == sep && !quoted {
            parts.push(trim(&value[start..i]));
            start = i + 1;
        }
    }
    parts.push(trim(&value[start..]));
    parts.retain(|p| !p.is_empty());
    parts
}

fn unquote(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != b' ' && b != b'\t');
    let end = bytes.iter().rposition(|&b| b != b' ' && b != b'\t');
    match (start, end) {
        (Some(s), Some(e)) => &bytes[s..=e],
        _ => &[],
    }
}

/// Compresses the messages a server sends.
pub struct Deflater {
    stream: Compress,
    no_context_takeover: bool,
}

impl Deflater {
    pub fn new(params: &Params) -> Deflater {
        // zlib refuses an 8-bit window for raw deflate; its compressor never refers further
        // back than the window less 262 bytes, so with 9 bits every reference stays within
        // 256 bytes, as an 8-bit window asks.
        let bits = params.server_max_window_bits.unwrap_or(15).max(9);
        Deflater {
            stream: Compress::new_with_window_bits(Compression::default(), false, bits),
            no_context_takeover: params.server_no_context_takeover,
        }
    }

    /// Appends the compressed payload of one message (without the tail RFC 7692 strips).
    pub fn compress(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), flate2::CompressError> {
        let start_in = self.stream.total_in();
        let start = out.len();
        loop {
            out.reserve(data.len() / 4 + 64);
            let pos = (self.stream.total_in() - start_in) as usize;
            self.stream
                .compress_vec(&data[pos..], out, FlushCompress::Sync)?;
            let pos = (self.stream.total_in() - start_in) as usize;
            // The flush is complete when it left output room unused.
            if pos == data.len() && out.len() < out.capacity() {
                break;
            }
        }
        if out[start..].ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if self.no_context_takeover {
            self.stream.reset();
        }
        Ok(())
    }
}

/// Why a compressed message could not be inflated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InflateError {
    /// Past the message size limit.
    TooBig,
    /// Not valid deflate data.
    Corrupt,
}

/// Decompresses the messages a client sends.
pub struct Inflater {
    stream: Decompress,
    no_context_takeover: bool,
    /// The client ended its deflate stream (a final block): the next message starts afresh.
    ended: bool,
}

impl Inflater {
    pub fn new(params: &Params) -> Inflater {
        Inflater {
            // The largest window decodes whatever smaller one the client chose.
            stream: Decompress::new_with_window_bits(false, 15),
            no_context_takeover: params.client_no_context_takeover,
            ended: false,
        }
    }

    /// Inflates the next piece of a message's payload onto `out`, which may not grow past
    /// `limit` bytes.
    pub fn inflate(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        let mut pos = 0;
        loop {
            // Room for one byte more than the limit allows, so going past it shows.
            let room = limit.saturating_sub(out.len()).saturating_add(1).min(STEP);
            out.reserve(room);
            let (in_before, out_before) = (self.stream.total_in(), self.stream.total_out());
            let status = self
                .stream
                .decompress_vec(&input[pos..], out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            pos += (self.stream.total_in() - in_before) as usize;
            let produced = self.stream.total_out() - out_before;
            if out.len() > limit {
                return Err(InflateError::TooBig);
            }
            if status == Status::StreamEnd {
                self.ended = true;
            }
            let stalled = produced == 0 && self.stream.total_in() == in_before;
            if (pos == input.len() && out.len() < out.capacity()) || stalled {
                return Ok(());
            }
        }
    }

    /// Ends a message: inflates the tail its sender stripped.
    pub fn finish(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), InflateError> {
        if !self.ended {
            self.inflate(&TAIL, out, limit)?;
        }
        if self.no_context_takeover || self.ended {
            self.stream.reset(false);
            self.ended = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(value: &str) -> Option<Params> {
        negotiate([value.as_bytes()])
    }

    fn answer(params: Params) -> String {
        let mut out = Vec::new();
        params.push_answer(&mut out);
        String::from_utf8(out).expect("ASCII")
    }

    #[test]
    fn plain_offer() {
        let p = offer("permessage-deflate").expect("accepted");
        assert_eq!(answer(p), "permessage-deflate");
        let p = offer("permessage-deflate; client_max_window_bits").expect("accepted");
        assert_eq!(answer(p), "permessage-deflate");
    }

    #[test]
    fn parameters_are_answered() {
        let p = offer(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=\"12\"",
        )
        .expect("accepted");
        assert_eq!(
            answer(p),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10"
        );
    }

    #[test]
    fn bad_offers_are_declined_for_the_next() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=08",
            "permessage-deflate; client_max_window_bits=x",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; unknown",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(offer(bad), None, "{bad}");
            let then = format!("{bad}, permessage-deflate; server_max_window_bits=9");
            let p = offer(&then).expect("the second offer");
            assert_eq!(p.server_max_window_bits, Some(9), "{bad}");
        }
        // Offers may come in several fields.
        let p = negotiate([
            &b"foo"[..],
            b"permessage-deflate; client_no_context_takeover",
        ]);
        assert!(p.expect("accepted").client_no_context_takeover);
        assert_eq!(negotiate(Vec::<&[u8]>::new()), None);
    }

    /// RFC 7692 section 7.2.3.1: "Hello" compressed, in one message and then again with the
    /// window kept (section 7.2.3.2).
    #[test]
    fn rfc_7692_examples_inflate() {
        let params = offer("permessage-deflate").expect("accepted");
        let mut inflater = Inflater::new(&params);
        let mut out = Vec::new();
        inflater
            .inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], &mut out, 100)
            .expect("valid");
        inflater.finish(&mut out, 100).expect("valid");
        assert_eq!(out, b"Hello");
        // The same message again, referring back to the first one.
        let mut out = Vec::new();
        inflater
            .inflate(&[0xf2, 0x00, 0x11, 0x00, 0x00], &mut out, 100)
            .expect("valid");
        inflater.finish(&mut out, 100).expect("valid");
        assert_eq!(out, b"Hello");
        // Section 7.2.3.3: stored (uncompressed) blocks, split in two pieces.
        let mut out = Vec::new();
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        inflater
            .inflate(&stored[..3], &mut out, 100)
            .expect("valid");
        inflater
            .inflate(&stored[3..], &mut out, 100)
            .expect("valid");
        inflater.finish(&mut out, 100).expect("valid");
        assert_eq!(out, b"Hello");
    }

    #[test]
    fn rfc_7692_example_deflates() {
        let params = offer("permessage-deflate").expect("accepted");
        let mut deflater = Deflater::new(&params);
        let mut out = Vec::new();
        deflater.compress(b"Hello", &mut out).expect("compressed");
        assert_eq!(out, [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        // With the window kept, the second "Hello" refers to the first.
        let mut again = Vec::new();
        deflater.compress(b"Hello", &mut again).expect("compressed");
        assert!(again.len() < out.len(), "{again:x?}");
    }

    fn round_trip(offered: &str, messages: &[&[u8]]) {
        let params = offer(offered).expect("accepted");
        let mut deflater = Deflater::new(&params);
        // The client side of the same agreement, as the decompressor of server messages.
        let mut inflater = Inflater::new(&Params {
            client_no_context_takeover: params.server_no_context_takeover,
            ..params
        });
        for message in messages {
            let mut wire = Vec::new();
            deflater.compress(message, &mut wire).expect("compressed");
            let mut back = Vec::new();
            for piece in wire.chunks(3) {
                inflater.inflate(piece, &mut back, 1 << 20).expect("valid");
            }
            inflater.finish(&mut back, 1 << 20).expect("valid");
            assert_eq!(&back, message);
        }
    }

    #[test]
    fn compressed_messages_round_trip() {
        let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let messages: [&[u8]; 4] = [b"", b"Hello", &big, b"Hello again, Hello"];
        round_trip("permessage-deflate", &messages);
        round_trip("permessage-deflate; server_no_context_takeover", &messages);
        round_trip("permessage-deflate; server_max_window_bits=8", &messages);
        round_trip("permessage-deflate; server_max_window_bits=15", &messages);
    }

    #[test]
    fn inflating_stops_at_the_limit() {
        let params = offer("permessage-deflate").expect("accepted");
        let mut deflater = Deflater::new(&params);
        let mut wire = Vec::new();
        deflater
            .compress(&[b'a'; 100_000], &mut wire)
            .expect("compressed");
        assert!(wire.len() < 1000);
        let mut inflater = Inflater::new(&params);
        let mut out = Vec::new();
        assert_eq!(
            inflater.inflate(&wire, &mut out, 50_000),
            Err(InflateError::TooBig)
        );
        assert!(out.len() <= 50_001 + STEP);
        let mut out = Vec::new();
        let mut inflater = Inflater::new(&params);
        assert_eq!(
            inflater.inflate(&[0xff, 0xff, 0xff], &mut out, 100),
            Err(InflateError::Corrupt)
        );
    }
}
