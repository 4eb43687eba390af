//! Request body decoders.

use super::error::HttpError;
use super::head::Framing;

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
    Todo,
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> BodyDecoder {
        let _ = framing;
        todo!("BodyDecoder::new")
    }

    /// Decodes from `input`, appending at most `max_out` body bytes to `out`.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max_out: usize,
    ) -> Result<Decoded, HttpError> {
        let _ = (input, out, max_out);
        todo!("BodyDecoder::decode")
    }

    pub fn is_done(&self) -> bool {
        todo!("BodyDecoder::is_done")
    }
}
