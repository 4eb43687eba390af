//! WebSocket frames (RFC 6455 section 5): the client's frames decoded into messages and
//! control frames as their bytes arrive, and the server's frames encoded.

use super::close;
use super::deflate::{Deflater, InflateError, Inflater, Params};
use super::utf8::Utf8Check;

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xa;

/// The longest payload of a control frame.
pub const MAX_CONTROL: usize = 125;

/// A complete message or control frame from the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// A close frame, with its code and reason if it had a code.
    Close(Option<(u16, String)>),
}

/// The client broke the protocol: the connection fails with this close code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    pub code: u16,
    pub reason: &'static str,
}

impl Failure {
    fn protocol(reason: &'static str) -> Failure {
        Failure {
            code: close::PROTOCOL_ERROR,
            reason,
        }
    }

    fn invalid_text() -> Failure {
        Failure {
            code: close::INVALID_DATA,
            reason: "invalid UTF-8 in a text message",
        }
    }

    fn too_big() -> Failure {
        Failure {
            code: close::TOO_BIG,
            reason: "message too big",
        }
    }
}

/// A data message being assembled from its frames.
struct Message {
    text: bool,
    compressed: bool,
    data: Vec<u8>,
    utf8: Utf8Check,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Reading a frame header; `head_len` bytes of it are in `head`.
    Head,
    /// Reading `remaining` payload bytes of the current frame.
    Payload,
    /// The connection failed; nothing more is decoded.
    Failed(Failure),
}

/// Decodes the client's side of a connection, fed the bytes as they arrive.
pub struct Decoder {
    max_message: usize,
    inflater: Option<Inflater>,
    stage: Stage,
    head: [u8; 14],
    head_len: usize,
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Payload bytes of the current frame already unmasked.
    offset: u64,
    remaining: u64,
    message: Option<Message>,
    /// The payload of the current control frame.
    control: Vec<u8>,
    /// A compressed frame's unmasked payload, before it is inflated.
    scratch: Vec<u8>,
}

impl Decoder {
    /// A decoder for messages of at most `max_message` bytes (after inflating), with
    /// permessage-deflate if it was agreed.
    pub fn new(max_message: usize, deflate: Option<&Params>) -> Decoder {
        Decoder {
            max_message,
            inflater: deflate.map(Inflater::new),
            stage: Stage::Head,
            head: [0; 14],
            head_len: 0,
            fin: false,
            opcode: 0,
            mask: [0; 4],
            offset: 0,
            remaining: 0,
            message: None,
            control: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Whether a data message has begun and not ended.
    pub fn in_message(&self) -> bool {
        self.message.is_some()
    }

    /// Decodes from the start of `input` up to the end of the next complete event. Returns
    /// the bytes used and the event, if one completed; fewer bytes than given are used only
    /// when an event completed. After an error every call fails the same way.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Option<Event>), Failure> {
        if let Stage::Failed(failure) = self.stage {
            return Err(failure);
        }
        let result = self.decode_inner(input);
        if let Err(failure) = result {
            self.stage = Stage::Failed(failure);
            self.message = None;
        }
        result
    }

    fn decode_inner(&mut self, input: &[u8]) -> Result<(usize, Option<Event>), Failure> {
        let mut pos = 0;
        loop {
            match self.stage {
                Stage::Head => {
                    let need = self.head_need();
                    let take = (need - self.head_len).min(input.len() - pos);
                    self.head[self.head_len..self.head_len + take]
                        .copy_from_slice(&input[pos..pos + take]);
                    self.head_len += take;
                    pos += take;
                    if self.head_len == 2 && need == 2 {
                        // The first two bytes say what the frame is: check them at once.
                        self.check_start()?;
                        continue;
                    }
                    if self.head_len < need {
                        return Ok((pos, None));
                    }
                    self.start_payload()?;
                    if self.remaining == 0 {
                        if let Some(event) = self.end_frame()? {
                            return Ok((pos, Some(event)));
                        }
                    }
                }
                Stage::Payload => {
                    let n = (input.len() - pos)
                        .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                    if n == 0 {
                        return Ok((pos, None));
                    }
                    self.payload(&input[pos..pos + n])?;
                    pos += n;
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        if let Some(event) = self.end_frame()? {
                            return Ok((pos, Some(event)));
                        }
                    }
                }
                Stage::Failed(failure) => return Err(failure),
            }
        }
    }

    /// Bytes of the current frame's header known to be needed so far.
    fn head_need(&self) -> usize {
        if self.head_len < 2 {
            return 2;
        }
        let extended = match self.head[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + extended + 4
    }

    /// Checks the first two bytes of a frame against the protocol.
    fn check_start(&mut self) -> Result<(), Failure> {
        let (b0, b1) = (self.head[0], self.head[1]);
        let fin = b0 & 0x80 != 0;
        let rsv1 = b0 & 0x40 != 0;
        let opcode = b0 & 0x0f;
        if b0 & 0x30 != 0 {
            return Err(Failure::protocol("reserved bits set"));
        }
        if b1 & 0x80 == 0 {
            return Err(Failure::protocol("client frames must be masked"));
        }
        match opcode {
            CLOSE | PING | PONG => {
                if !fin {
                    return Err(Failure::protocol("fragmented control frame"));
                }
                if usize::from(b1 & 0x7f) > MAX_CONTROL {
                    return Err(Failure::protocol("control frame too long"));
                }
                if rsv1 {
                    return Err(Failure::protocol("compressed control frame"));
                }
            }
            TEXT | BINARY => {
                if self.message.is_some() {
                    return Err(Failure::protocol("new message inside a fragmented one"));
                }
                if rsv1 && self.inflater.is_none() {
                    return Err(Failure::protocol(
                        "compressed frame without permessage-deflate",
                    ));
                }
            }
            CONTINUATION => {
                if self.message.is_none() {
                    return Err(Failure::protocol("continuation frame outside a message"));
                }
                if rsv1 {
                    return Err(Failure::protocol("compression bit on a continuation frame"));
                }
            }
            _ => return Err(Failure::protocol("unknown opcode")),
        }
        self.fin = fin;
        self.opcode = opcode;
        if opcode == TEXT || opcode == BINARY {
            self.message = Some(Message {
                text: opcode == TEXT,
                compressed: rsv1,
                data: Vec::new(),
                utf8: Utf8Check::new(),
            });
        }
        Ok(())
    }

    /// The header is complete: read its length and mask.
    fn start_payload(&mut self) -> Result<(), Failure> {
        let h = &self.head;
        let (len, mask_at) = match h[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => {
                let len = u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]);
                if len >> 63 != 0 {
                    return Err(Failure::protocol("payload length with its high bit set"));
                }
                (len, 10)
            }
            short => (u64::from(short), 2),
        };
        self.mask.copy_from_slice(&h[mask_at..mask_at + 4]);
        self.head_len = 0;
        self.offset = 0;
        self.remaining = len;
        self.stage = Stage::Payload;
        if self.opcode >= CLOSE {
            self.control.clear();
        } else if let Some(message) = &self.message {
            // Fail before the payload arrives when it cannot fit.
            if !message.compressed
                && (message.data.len() as u64).saturating_add(len) > self.max_message as u64
            {
                return Err(Failure::too_big());
            }
        }
        Ok(())
    }

    /// Takes the next piece of the current frame's payload.
    fn payload(&mut self, piece: &[u8]) -> Result<(), Failure> {
        let offset = self.offset;
        self.offset += piece.len() as u64;
        if self.opcode >= CLOSE {
            let start = self.control.len();
            self.control.extend_from_slice(piece);
            unmask(&mut self.control[start..], self.mask, offset);
            return Ok(());
        }
        let Some(message) = self.message.as_mut() else {
            return Err(Failure::protocol("payload outside a message"));
        };
        let start = message.data.len();
        if message.compressed {
            self.scratch.clear();
            self.scratch.extend_from_slice(piece);
            unmask(&mut self.scratch, self.mask, offset);
            let Some(inflater) = self.inflater.as_mut() else {
                return Err(Failure::protocol(
                    "compressed frame without permessage-deflate",
                ));
            };
            inflater
                .inflate(&self.scratch, &mut message.data, self.max_message)
                .map_err(inflate_failure)?;
        } else {
            message.data.extend_from_slice(piece);
            unmask(&mut message.data[start..], self.mask, offset);
        }
        if message.text {
            message
                .utf8
                .feed(&message.data[start..])
                .map_err(|_| Failure::invalid_text())?;
        }
        Ok(())
    }

    /// The current frame's payload is complete: the event it ends, if any.
    fn end_frame(&mut self) -> Result<Option<Event>, Failure> {
        self.stage = Stage::Head;
        match self.opcode {
            CLOSE => close_event(&self.control).map(Some),
            PING => Ok(Some(Event::Ping(std::mem::take(&mut self.control)))),
            PONG => Ok(Some(Event::Pong(std::mem::take(&mut self.control)))),
            _ if !self.fin => Ok(None),
            _ => {
                let Some(mut message) = self.message.take() else {
                    return Err(Failure::protocol("payload outside a message"));
                };
                if message.compressed {
                    let start = message.data.len();
                    if let Some(inflater) = self.inflater.as_mut() {
                        inflater
                            .finish(&mut message.data, self.max_message)
                            .map_err(inflate_failure)?;
                    }
                    if message.text {
                        message
                            .utf8
                            .feed(&message.data[start..])
                            .map_err(|_| Failure::invalid_text())?;
                    }
                }
                if !message.text {
                    return Ok(Some(Event::Binary(message.data)));
                }
                message.utf8.finish().map_err(|_| Failure::invalid_text())?;
                String::from_utf8(message.data)
                    .map(|text| Some(Event::Text(text)))
                    .map_err(|_| Failure::invalid_text())
            }
        }
    }
}

fn inflate_failure(e: InflateError) -> Failure {
    match e {
        InflateError::TooBig => Failure::too_big(),
        InflateError::Corrupt => Failure::protocol("invalid compressed data"),
    }
}

/// A close frame's code and reason (RFC 6455 section 5.5.1).
fn close_event(payload: &[u8]) -> Result<Event, Failure> {
    match payload {
        [] => Ok(Event::Close(None)),
        [_] => Err(Failure::protocol("close frame with a one-byte payload")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !close::is_valid(code) {
                return Err(Failure::protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| Failure::invalid_text())?;
            Ok(Event::Close(Some((code, reason.to_owned()))))
        }
    }
}

/// Unmasks `data`, the payload bytes from `offset` on (RFC 6455 section 5.3).
fn unmask(data: &mut [u8], mask: [u8; 4], offset: u64) {
    let shift = (offset % 4) as usize;
    let key = [
        mask[shift],
        mask[(shift + 1) % 4],
        mask[(shift + 2) % 4],
        mask[(shift + 3) % 4],
    ];
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        for (b, k) in chunk.iter_mut().zip(key) {
            *b ^= k;
        }
    }
    for (b, k) in chunks.into_remainder().iter_mut().zip(key) {
        *b ^= k;
    }
}

/// What a server frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    Binary,
    Ping,
    Pong,
    Close,
}

impl Kind {
    fn opcode(self) -> u8 {
        match self {
            Kind::Text => TEXT,
            Kind::Binary => BINARY,
            Kind::Ping => PING,
            Kind::Pong => PONG,
            Kind::Close => CLOSE,
        }
    }
}

/// Appends the header of an unfragmented, unmasked server frame of `len` payload bytes.
pub fn push_head(out: &mut Vec<u8>, kind: Kind, compressed: bool, len: usize) {
    let rsv1 = if compressed { 0x40 } else { 0 };
    out.push(0x80 | rsv1 | kind.opcode());
    match len {
        0..=125 => out.push(len as u8),
        126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// Appends a control frame (a payload over [`MAX_CONTROL`] bytes is cut).
pub fn push_control(out: &mut Vec<u8>, kind: Kind, payload: &[u8]) {
    let payload = &payload[..payload.len().min(MAX_CONTROL)];
    push_head(out, kind, false, payload.len());
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` (none for [`close::NO_STATUS`]) and `reason`, cut at a
/// character boundary to fit a control frame.
pub fn push_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    if code == close::NO_STATUS {
        push_control(out, Kind::Close, &[]);
        return;
    }
    let mut end = reason.len().min(MAX_CONTROL - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = [0u8; MAX_CONTROL];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    push_control(out, Kind::Close, &payload[..2 + end]);
}

/// Encodes the server's messages, compressed when permessage-deflate was agreed.
pub struct Encoder {
    deflater: Option<Deflater>,
    scratch: Vec<u8>,
}

impl Encoder {
    pub fn new(deflate: Option<&Params>) -> Encoder {
        Encoder {
            deflater: deflate.map(Deflater::new),
            scratch: Vec::new(),
        }
    }

    /// Appends one message as a single frame.
    pub fn push_message(&mut self, out: &mut Vec<u8>, text: bool, payload: &[u8]) {
        let kind = if text { Kind::Text } else { Kind::Binary };
        if let Some(deflater) = self.deflater.as_mut() {
            self.scratch.clear();
            if deflater.compress(payload, &mut self.scratch).is_ok() {
                push_head(out, kind, true, self.scratch.len());
                out.extend_from_slice(&self.scratch);
                return;
            }
            // A failed compressor (it only fails on misuse) leaves the message uncompressed,
            // which the extension allows for any message.
        }
        push_head(out, kind, false, payload.len());
        out.extend_from_slice(payload);
    }
}

/// A client frame: first byte `b0`, then `payload` masked with `mask` (for tests).
#[cfg(test)]
pub fn masked_frame(b0: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![b0];
    match payload.len() {
        0..=125 => out.push(0x80 | payload.len() as u8),
        126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::ws::deflate::negotiate;

    fn client_frame(b0: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        masked_frame(b0, payload, mask)
    }

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// Every event in `input`, decoded from pieces of `step` bytes.
    fn decode_all(decoder: &mut Decoder, input: &[u8], step: usize) -> Result<Vec<Event>, Failure> {
        let mut events = Vec::new();
        let mut buffered = Vec::new();
        for piece in input.chunks(step.max(1)) {
            buffered.extend_from_slice(piece);
            loop {
                let (used, event) = decoder.decode(&buffered)?;
                buffered.drain(..used);
                match event {
                    Some(event) => events.push(event),
                    None => break,
                }
            }
        }
        assert!(buffered.is_empty());
        Ok(events)
    }

    fn events(input: &[u8]) -> Result<Vec<Event>, Failure> {
        let whole = decode_all(&mut Decoder::new(1 << 20, None), input, input.len());
        for step in [1, 2, 3, 7] {
            let split = decode_all(&mut Decoder::new(1 << 20, None), input, step);
            assert_eq!(split, whole, "in pieces of {step}");
        }
        whole
    }

    fn failure(input: &[u8]) -> u16 {
        match events(input) {
            Err(f) => f.code,
            Ok(ev) => panic!("accepted: {ev:?}"),
        }
    }

    /// RFC 6455 section 5.7's examples.
    #[test]
    fn rfc_6455_examples() {
        let hello = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(events(&hello), Ok(vec![Event::Text("Hello".into())]));
        // A fragmented unmasked message is refused: client frames must be masked.
        assert_eq!(
            failure(&[0x01, 0x03, 0x48, 0x65, 0x6c]),
            close::PROTOCOL_ERROR
        );
        let ping = [
            0x89, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(events(&ping), Ok(vec![Event::Ping(b"Hello".to_vec())]));
        // Server frames, unmasked.
        let mut out = Vec::new();
        Encoder::new(None).push_message(&mut out, true, b"Hello");
        assert_eq!(out, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        let mut out = Vec::new();
        push_head(&mut out, Kind::Binary, false, 256);
        assert_eq!(out, [0x82, 0x7e, 0x01, 0x00]);
        let mut out = Vec::new();
        push_head(&mut out, Kind::Binary, false, 65536);
        assert_eq!(out, [0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn fragments_with_control_frames_between() {
        let mut input = client_frame(0x01, b"Hel", MASK);
        input.extend(client_frame(0x89, b"p", MASK));
        input.extend(client_frame(0x00, b"l", MASK));
        input.extend(client_frame(0x8a, b"", MASK));
        input.extend(client_frame(0x80, "o κ".as_bytes(), MASK));
        input.extend(client_frame(0x82, &[0u8; 70_000], MASK));
        input.extend(client_frame(0x88, b"\x03\xe8bye", MASK));
        assert_eq!(
            events(&input),
            Ok(vec![
                Event::Ping(b"p".to_vec()),
                Event::Pong(Vec::new()),
                Event::Text("Hello κ".into()),
                Event::Binary(vec![0; 70_000]),
                Event::Close(Some((1000, "bye".into()))),
            ])
        );
    }

    #[test]
    fn protocol_errors_are_1002() {
        let bad: [Vec<u8>; 12] = [
            client_frame(0x91, b"x", MASK),
            client_frame(0xa1, b"x", MASK),
            client_frame(0xc1, b"x", MASK),
            client_frame(0x83, b"x", MASK),
            client_frame(0x8b, b"x", MASK),
            client_frame(0x80, b"x", MASK),
            client_frame(0x09, b"x", MASK),
            client_frame(0x89, &[0; 126], MASK),
            [
                client_frame(0x01, b"a", MASK),
                client_frame(0x81, b"b", MASK),
            ]
            .concat(),
            client_frame(0x88, b"\x03", MASK),
            client_frame(0x88, b"\x03\xed", MASK),
            vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0],
        ];
        for input in bad {
            assert_eq!(failure(&input), close::PROTOCOL_ERROR, "{input:x?}");
        }
    }

    #[test]
    fn close_codes() {
        for code in [1000u16, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999] {
            let frame = client_frame(0x88, &code.to_be_bytes(), MASK);
            assert_eq!(
                events(&frame),
                Ok(vec![Event::Close(Some((code, String::new())))])
            );
        }
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            let frame = client_frame(0x88, &code.to_be_bytes(), MASK);
            assert_eq!(failure(&frame), close::PROTOCOL_ERROR, "{code}");
        }
        assert_eq!(
            events(&client_frame(0x88, b"", MASK)),
            Ok(vec![Event::Close(None)])
        );
        let frame = client_frame(0x88, b"\x03\xe8\xce\xba\xed\xa0\x80", MASK);
        assert_eq!(failure(&frame), close::INVALID_DATA);
    }

    #[test]
    fn invalid_text_fails_at_its_first_bad_byte() {
        // One frame whose bad byte arrives before the rest of its payload.
        let frame = client_frame(
            0x81,
            b"\xce\xba\xe1\xbd\xb9\xf4\x90\x80\x80-more text",
            MASK,
        );
        let mut decoder = Decoder::new(1 << 20, None);
        assert_eq!(decoder.decode(&frame[..6 + 5]), Ok((11, None)));
        assert_eq!(
            decoder.decode(&frame[11..13]).map_err(|f| f.code),
            Err(close::INVALID_DATA)
        );
        // In a later fragment, before the message ends.
        let mut decoder = Decoder::new(1 << 20, None);
        let first = client_frame(0x01, b"ok", MASK);
        assert_eq!(decoder.decode(&first), Ok((first.len(), None)));
        let second = client_frame(0x00, b"\xc0\xaf", MASK);
        assert_eq!(
            decoder.decode(&second).map_err(|f| f.code),
            Err(close::INVALID_DATA)
        );
        // A message ending inside a character.
        assert_eq!(
            failure(&client_frame(0x81, b"ab\xe2\x82", MASK)),
            close::INVALID_DATA
        );
        // Binary messages are not text.
        assert_eq!(
            events(&client_frame(0x82, b"\xff", MASK)),
            Ok(vec![Event::Binary(vec![0xff])])
        );
    }

    #[test]
    fn the_size_limit_is_1009_before_the_payload() {
        let mut decoder = Decoder::new(10, None);
        let frame = client_frame(0x82, &[0; 11], MASK);
        // Known from the header alone.
        assert_eq!(
            decoder.decode(&frame[..6]).map_err(|f| f.code),
            Err(close::TOO_BIG)
        );
        let mut decoder = Decoder::new(10, None);
        let input = [
            client_frame(0x02, &[0; 6], MASK),
            client_frame(0x80, &[0; 5], MASK),
        ]
        .concat();
        assert_eq!(
            decode_all(&mut decoder, &input, 100).map_err(|f| f.code),
            Err(close::TOO_BIG)
        );
        let mut decoder = Decoder::new(10, None);
        let exact = client_frame(0x82, &[1; 10], MASK);
        assert_eq!(
            decode_all(&mut decoder, &exact, 3),
            Ok(vec![Event::Binary(vec![1; 10])])
        );
    }

    #[test]
    fn compressed_messages() {
        let params = negotiate([&b"permessage-deflate"[..]]).expect("accepted");
        // RFC 7692 section 7.2.3.1 and 7.2.3.2, masked, the second referring to the first;
        // then "Hello" split in two compressed fragments (section 7.2.3.1's second example).
        let mut input = client_frame(0xc1, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], MASK);
        input.extend(client_frame(0xc1, &[0xf2, 0x00, 0x11, 0x00, 0x00], MASK));
        input.extend(client_frame(0x41, &[0xf2, 0x48, 0xcd], MASK));
        input.extend(client_frame(0x80, &[0xc9, 0xc9, 0x07, 0x00], MASK));
        // An uncompressed message in between is allowed.
        input.extend(client_frame(0x82, b"raw", MASK));
        for step in [1, 5, input.len()] {
            let mut decoder = Decoder::new(1 << 20, Some(&params));
            assert_eq!(
                decode_all(&mut decoder, &input, step),
                Ok(vec![
                    Event::Text("Hello".into()),
                    Event::Text("Hello".into()),
                    Event::Text("Hello".into()),
                    Event::Binary(b"raw".to_vec()),
                ])
            );
        }
        // Without the extension, the bit is a protocol error.
        assert_eq!(
            failure(&client_frame(0xc1, b"x", MASK)),
            close::PROTOCOL_ERROR
        );
        // A bomb stops at the limit.
        let mut encoder = Encoder::new(Some(&params));
        let mut wire = Vec::new();
        encoder.push_message(&mut wire, false, &[0; 100_000]);
        let payload = &wire[if wire[1] == 126 { 4 } else { 2 }..];
        let mut decoder = Decoder::new(1000, Some(&params));
        let frame = client_frame(0xc2, payload, MASK);
        assert_eq!(
            decoder.decode(&frame).map_err(|f| f.code),
            Err(close::TOO_BIG)
        );
    }

    #[test]
    fn server_close_frames() {
        let mut out = Vec::new();
        push_close(&mut out, 1000, "");
        assert_eq!(out, [0x88, 0x02, 0x03, 0xe8]);
        let mut out = Vec::new();
        push_close(&mut out, close::NO_STATUS, "ignored");
        assert_eq!(out, [0x88, 0x00]);
        let mut out = Vec::new();
        let long = "é".repeat(100);
        push_close(&mut out, 1001, &long);
        assert_eq!(out[1] as usize, out.len() - 2);
        assert!(out.len() - 2 <= MAX_CONTROL);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }
}
