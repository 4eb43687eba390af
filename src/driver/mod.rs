//! Connection drivers: the HTTP/1 connection state machine, and the queue of response bytes
//! waiting for the connection.
//!
//! - [`h1`]: one HTTP/1 connection, from its first byte to its close.
//! - [`output`]: owned buffers, Python `bytes` and file ranges waiting to be written.

pub mod h1;
pub mod output;
