//! HTTP/1.x framing on top of `httparse`: pure parse and encode, no I/O.
//!
//! - [`head`]: request line and header fields, with Gunicorn's limits and strictness rules.
//! - [`body`]: request body decoders (Content-Length, chunked).
//! - [`error`]: the error answers sent for malformed requests.
//! - [`date`]: the cached `Date` header value.

pub mod body;
#[cfg(test)]
mod corpus_tests;
pub mod date;
pub mod error;
pub mod forwarded;
pub mod head;
pub mod proxy;

pub use body::BodyDecoder;
pub use error::HttpError;
pub use head::{Framing, Limits, RequestHead};

// Defined at the bottom layer, where the logs use it too.
pub use crate::log::latin1;
