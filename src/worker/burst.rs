//! Writing the `sync` worker's responses in bursts.
//!
//! Each write to a peer asleep in its event loop wakes it, and the sender pays for that
//! wake-up: an interrupt to another core, a VM exit under a hypervisor — as much as the whole
//! request of a small application. So a finished response is held until the other
//! connections ready in the same turn of the event loop have theirs, and all are written
//! together: the client, or the proxy in front, is woken once per burst instead of once per
//! response.
//!
//! Holding is bounded: a burst takes about [`BUDGET`] of application time, estimated from the
//! recent slowest call, and nothing is held while the application is slow (a wake-up is then
//! a small part of a request, and a held response would wait for whole slow requests) or
//! when only one connection is open.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Application time one burst may take while its first response waits.
const BUDGET: Duration = Duration::from_millis(1);
/// Responses are held only while the application's recent slowest call is faster than this.
const MAX_RECENT_CALL: Duration = Duration::from_micros(250);
/// While holding, one call in this many is timed: the clock is not free.
const SAMPLE_EVERY: u32 = 16;

pub struct Burst {
    /// Responses held now.
    held: Cell<usize>,
    /// Most responses one burst holds: `BUDGET` over the recent slowest call.
    limit: Cell<usize>,
    /// The application's recent slowest call: the time of a slower one, decaying by an
    /// eighth with each timed call after it. Starts slow: nothing is held until calls are
    /// seen to be fast.
    recent_call: Cell<Duration>,
    calls: Cell<u32>,
}

impl Burst {
    pub fn new() -> Burst {
        Burst {
            held: Cell::new(0),
            limit: Cell::new(1),
            recent_call: Cell::new(MAX_RECENT_CALL),
            calls: Cell::new(0),
        }
    }

    fn holding(&self) -> bool {
        self.recent_call.get() < MAX_RECENT_CALL
    }

    /// Before the application is called: when the burst is full, its responses go out first.
    /// Returns the time to pass to [`Burst::call_done`], when this call is to be timed.
    pub async fn before_call(&self) -> Option<Instant> {
        if self.held.get() >= self.limit.get() {
            // Resumes after the held responses, which were runnable before this.
            tokio::task::yield_now().await;
        }
        let calls = self.calls.get().wrapping_add(1);
        self.calls.set(calls);
        (!self.holding() || calls % SAMPLE_EVERY == 0).then(Instant::now)
    }

    pub fn call_done(&self, began: Option<Instant>) {
        let Some(began) = began else {
            return;
        };
        let recent = self.recent_call.get();
        let recent = began.elapsed().max(recent - recent / 8);
        self.recent_call.set(recent);
        let limit = BUDGET.as_nanos() / recent.as_nanos().max(1);
        self.limit.set(limit.clamp(1, 1024) as usize);
    }

    /// Holds a finished response until the connections ready in this turn of the event loop
    /// have theirs. `open_connections`: how many the worker has now.
    pub async fn hold(&self, open_connections: usize) {
        if open_connections < 2 || !self.holding() {
            return;
        }
        self.held.set(self.held.get() + 1);
        // Resumes after the tasks already runnable, once the event loop has polled for I/O.
        tokio::task::yield_now().await;
        self.held.set(self.held.get() - 1);
    }
}
