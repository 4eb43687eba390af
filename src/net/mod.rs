//! The network layer: listeners, accepting connections, and the socket calls made on them.
//! Nothing above this layer makes a socket system call.
//!
//! - [`listeners`]: binding, inheriting and tuning the listening sockets.
//! - [`socket`]: reads, writes and options on a connection's socket.

pub mod listeners;
pub mod socket;
