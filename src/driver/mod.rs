//! Connection drivers: the HTTP/1 connection state machine, and the queue of response bytes
//! waiting for the connection.
//!
//! - [`buffers`]: memory a connection holds only while it works on a request: its read buffer
//!   and the state of the request.
//! - [`h1`]: one HTTP/1 connection, from its first byte to its close.
//! - [`output`]: owned buffers, Python `bytes` and file ranges waiting to be written.

pub mod buffers;
pub mod h1;
pub mod output;
