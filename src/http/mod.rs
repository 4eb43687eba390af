//! HTTP/1.x framing on top of `httparse`: pure parse and encode, no I/O.
//!
//! - [`head`]: request line and header fields, with Gunicorn's limits and strictness rules.
//! - [`body`]: request body decoders (Content-Length, chunked).
//! - [`error`]: why a request is refused, with Gunicorn's statuses and messages.
//! - [`response`]: the response head, and the HTTP/1 encoding of every answer.
//! - [`date`]: the cached `Date` header value.
//! - [`scrape`]: the one route of the master's metrics endpoint.

pub mod body;
#[cfg(test)]
mod corpus_tests;
pub mod date;
pub mod error;
pub mod forwarded;
pub mod head;
pub mod proxy;
pub mod response;
pub mod scrape;

pub use body::BodyDecoder;
pub use error::HttpError;
pub use head::{Framing, H1Framing, Limits, RequestHead};

/// Bytes from the wire as text, one code point per byte (latin-1, as PEP 3333 and Gunicorn
/// decode request lines and header values).
pub fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn latin1_maps_every_byte() {
        assert_eq!(super::latin1(b"caf\xe9"), "caf\u{e9}");
        assert_eq!(super::latin1(b""), "");
    }
}
