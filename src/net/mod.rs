//! The network layer: listeners, accepting connections, and one transport per kind of
//! connection. Nothing above this layer makes a socket system call.
//!
//! - [`listeners`]: binding, inheriting and tuning the listening sockets (the master).
//! - [`accept`]: accepting connections on the worker's event loop.
//! - [`transport`]: what every kind of connection offers the layers above.
//! - [`polled`]: a small non-blocking server driven by the master's `poll(2)`.
//! - [`socket`]: the transport of a plain TCP or unix-socket connection.
//! - [`tls`]: the transport of a TLS connection (rustls over a socket), and its settings.
//! - [`memory`]: an in-memory transport for tests, driven by a script.

pub mod accept;
pub mod listeners;
#[cfg(test)]
pub mod memory;
pub mod polled;
pub mod socket;
pub mod tls;
pub mod transport;

pub use accept::{Acceptor, Peer};
pub use socket::Socket;
pub use transport::{Interest, Io, ReadCount, Transport};
