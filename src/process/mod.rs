//! What the master and its workers share across fork: the heartbeat region, and a worker's
//! lifecycle as its signal handlers record it.
//!
//! - [`heartbeat`]: one shared-memory slot per worker, written by the worker, read by the master.
//! - [`lifecycle`]: a worker's signal handlers and the stop they request.

pub mod heartbeat;
pub mod lifecycle;
