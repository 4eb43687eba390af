//! A request body as the connection driver holds it: the decoder, the connection bytes not
//! yet decoded (which may hold pipelined requests), and the decoded bytes the application has
//! not read yet.
//!
//! Bodies up to a bound are decoded by the event loop before the application is called, so
//! most reads are served from memory. A larger body streams: reads that need more bytes read
//! the connection directly (blocking, without the GIL), never past the end of the body.

use std::any::Any;
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

use crate::http::{BodyDecoder, HttpError};
use crate::net::Io;

/// Socket bytes read per system call while streaming a body.
const READ_CHUNK: usize = 64 * 1024;

/// The body of one request and the connection bytes that follow it.
pub struct BodyState {
    pub decoder: BodyDecoder,
    /// Connection bytes not yet decoded; may hold the next pipelined requests.
    pub raw: Vec<u8>,
    pub raw_pos: usize,
    /// Decoded body bytes not yet handed to the application.
    pub body: Vec<u8>,
    pub body_pos: usize,
    /// Longest wait for the client to send more of the body.
    pub timeout: Duration,
    /// A framing error met while reading the body: the request is answered with it.
    pub error: Option<Box<HttpError>>,
    /// The peer closed the connection before the body ended.
    pub truncated: bool,
    /// The whole body in storage the application interface supplied (see [`BodyTarget`]),
    /// which `body` and `raw` then do not hold.
    pub whole: Option<Box<dyn BodyTarget>>,
}

/// Storage of a body's exact length that the body is read into directly, supplied by the
/// application interface (for example the Python `bytes` object a read returns), so a body
/// read whole is never copied.
pub trait BodyTarget: Send + Sync {
    /// Room still to fill.
    fn spare(&mut self) -> &mut [MaybeUninit<u8>];
    /// Marks `n` more bytes of [`spare`](Self::spare) as written.
    fn advance(&mut self, n: usize);
    fn is_full(&self) -> bool;
    /// The concrete target back, for the interface that made it.
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

impl BodyState {
    pub fn new(decoder: BodyDecoder, raw: Vec<u8>, timeout: Duration) -> BodyState {
        BodyState {
            decoder,
            raw,
            raw_pos: 0,
            body: Vec::new(),
            body_pos: 0,
            timeout,
            error: None,
            truncated: false,
            whole: None,
        }
    }

    /// The length of a Content-Length body that has not fully arrived, if it is at most
    /// `limit`: such a body may be read into a [`BodyTarget`] (see
    /// [`start_whole`](Self::start_whole)).
    pub fn whole_length(&self, limit: usize) -> Option<usize> {
        let BodyDecoder::Length { remaining } = self.decoder else {
            return None;
        };
        let arrived = self.raw.len() - self.raw_pos;
        if !self.body.is_empty() || remaining == 0 || arrived as u64 >= remaining {
            return None;
        }
        usize::try_from(remaining).ok().filter(|&n| n <= limit)
    }

    /// Moves what has arrived of the body into `target`, made for
    /// [`whole_length`](Self::whole_length), and returns it for the rest to be read into.
    pub fn start_whole(&mut self, mut target: Box<dyn BodyTarget>) -> Box<dyn BodyTarget> {
        let arrived = &self.raw[self.raw_pos..];
        let n = arrived.len();
        for (dst, &src) in target.spare().iter_mut().zip(arrived) {
            dst.write(src);
        }
        target.advance(n);
        self.decoder.skip_decoded(n);
        self.raw.clear();
        self.raw_pos = 0;
        target
    }

    /// Decoded bytes in `body` not yet read (reads first move a whole body there, see
    /// [`take_whole`](Self::take_whole)).
    pub fn available(&self) -> usize {
        self.body.len() - self.body_pos
    }

    pub fn is_complete(&self) -> bool {
        self.decoder.is_done()
    }

    /// Whether the body can grow no further (complete, broken or cut off).
    pub fn is_finished(&self) -> bool {
        self.decoder.is_done() || self.error.is_some() || self.truncated
    }

    /// Decodes buffered connection bytes, adding at most `max_out` body bytes.
    /// Returns how many body bytes were added.
    pub fn decode_buffered(&mut self, max_out: usize) -> Result<usize, HttpError> {
        // Drop what the application already read, so a streamed body never accumulates.
        if self.body_pos > 0 && (self.body_pos == self.body.len() || self.body_pos >= READ_CHUNK) {
            self.body.drain(..self.body_pos);
            self.body_pos = 0;
        }
        if self.body.is_empty() && self.raw_pos == 0 && self.raw_is_body(max_out) {
            // Every buffered byte is body as it stands: hand the buffer over instead of
            // copying it.
            std::mem::swap(&mut self.body, &mut self.raw);
            self.decoder.skip_decoded(self.body.len());
            return Ok(self.body.len());
        }
        let before = self.body.len();
        let decoded = self
            .decoder
            .decode(&self.raw[self.raw_pos..], &mut self.body, max_out)?;
        self.raw_pos += decoded.consumed;
        if self.raw_pos == self.raw.len() {
            self.raw.clear();
            self.raw_pos = 0;
        }
        Ok(self.body.len() - before)
    }

    /// Whether all of `raw` (at most `max_out` bytes) is Content-Length body, which needs no
    /// decoding.
    fn raw_is_body(&self, max_out: usize) -> bool {
        let len = self.raw.len() - self.raw_pos;
        matches!(self.decoder, BodyDecoder::Length { remaining } if len as u64 <= remaining)
            && len <= max_out
    }

    /// Whether the socket can be read straight into `body`: a Content-Length body with no
    /// undecoded bytes buffered, so a read capped at the bytes still expected is all body.
    pub fn reads_direct(&self) -> bool {
        self.raw_pos == self.raw.len() && matches!(self.decoder, BodyDecoder::Length { .. })
    }

    /// Adds more decoded body, reading the connection if needed (blocking; call without the
    /// GIL). Returns false once the body is finished.
    pub fn fill_blocking(&mut self, io: &dyn Io) -> bool {
        loop {
            if self.is_finished() {
                return false;
            }
            if self.raw_pos < self.raw.len() {
                match self.decode_buffered(READ_CHUNK) {
                    Ok(0) => {}
                    Ok(_) => return true,
                    Err(e) => {
                        self.error = Some(Box::new(e));
                        return false;
                    }
                }
                if self.is_finished() {
                    return false;
                }
                if self.raw_pos < self.raw.len() {
                    // Undecodable tail (e.g. a partial chunk-size line): read more below.
                }
            }
            if self.raw_pos > 0 {
                self.raw.drain(..self.raw_pos);
                self.raw_pos = 0;
            }
            let deadline = Instant::now() + self.timeout;
            match io.read_blocking(&mut self.raw, READ_CHUNK, deadline) {
                Ok(0) if self.decoder.end_of_input() => return false,
                Ok(0) | Err(_) => {
                    self.truncated = true;
                    return false;
                }
                Ok(_) => {}
            }
        }
    }

    /// Takes up to `n` decoded bytes.
    pub fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.available());
        let start = self.body_pos;
        self.body_pos += n;
        &self.body[start..start + n]
    }
}
