//! HTTP/1.x framing on top of `httparse`: pure parse and encode, no I/O.
//!
//! - [`head`]: request line and header fields, with Gunicorn's limits and strictness rules.
//! - [`body`]: request body decoders (Content-Length, chunked).
//! - [`error`]: why a request is refused, with Gunicorn's statuses and messages.
//! - [`response`]: the response head, and the HTTP/1 encoding of every answer.
//! - [`date`]: the cached `Date` header value.
//! - [`scrape`]: the one route of the master's metrics endpoint.
//! - [`h2c`]: the HTTP/1.1 upgrade to cleartext HTTP/2 (`Upgrade: h2c`).
//! - [`ws`]: WebSocket (RFC 6455): the opening handshake, frames, permessage-deflate.

pub mod body;
pub mod date;
pub mod error;
pub mod forwarded;
pub mod h2c;
pub mod head;
pub mod proxy;
pub mod response;
pub mod scrape;
pub mod ws;

pub use body::BodyDecoder;
pub use error::HttpError;
pub use head::{Framing, H1Framing, Limits, RequestHead, Upgrade};

// Defined at the bottom layer, where the logs use it too.
pub use crate::log::latin1;
