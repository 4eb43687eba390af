//! Room at `--worker-connections`.
//!
//! A connection that has sent nothing yet costs the worker a slot and nothing else, so a flood
//! of connections that never speak could hold every slot until `--header-timeout` while
//! clients with requests are refused. At the cap the worker therefore still accepts, and
//! makes room by closing the connection that has waited longest without sending a byte. A
//! connection that has sent anything (a request under way, a kept-alive one between
//! requests) is never closed for room; when no silent one is left, the newcomer is answered
//! 503. Either way the worker says so in a warning, at most once per [`WARN_EVERY`].

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::log;

/// Shortest time between two warnings about shedding.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

pub struct Shedding {
    /// Connections that have sent nothing yet, by accept order: the first is the oldest.
    /// Each is told through its `Notify` when it is to close.
    silent: RefCell<BTreeMap<u64, Arc<Notify>>>,
    next_id: Cell<u64>,
    report: RefCell<Report>,
}

/// A connection waiting for its first bytes, listed until dropped.
pub struct Silent<'a> {
    shedding: &'a Shedding,
    id: u64,
    evicted: Arc<Notify>,
}

impl Silent<'_> {
    /// Resolves once the worker closes this connection to make room.
    pub async fn evicted(&self) {
        self.evicted.notified().await
    }
}

impl Drop for Silent<'_> {
    fn drop(&mut self) {
        self.shedding.silent.borrow_mut().remove(&self.id);
    }
}

impl Default for Shedding {
    fn default() -> Self {
        Shedding::new()
    }
}

impl Shedding {
    pub fn new() -> Shedding {
        Shedding {
            silent: RefCell::new(BTreeMap::new()),
            next_id: Cell::new(0),
            report: RefCell::new(Report::default()),
        }
    }

    /// Lists a connection that has sent nothing yet, for as long as the result lives.
    pub fn silent(&self) -> Silent<'_> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let evicted = Arc::new(Notify::new());
        self.silent.borrow_mut().insert(id, Arc::clone(&evicted));
        Silent {
            shedding: self,
            id,
            evicted,
        }
    }

    /// The worker is at its cap of `limit` connections and has accepted one more. Closes the
    /// oldest connection that has sent nothing and returns true, or returns false when there
    /// is none: the newcomer is then to be refused.
    pub fn make_room(&self, limit: usize) -> bool {
        let oldest = self.silent.borrow_mut().pop_first();
        let made = match oldest {
            Some((_, evicted)) => {
                // A permit is kept if the connection is not waiting at this instant.
                evicted.notify_one();
                true
            }
            None => false,
        };
        let message = self.report.borrow_mut().shed(made, Instant::now(), limit);
        if let Some(message) = message {
            log::warning(format_args!("{message}"));
        }
        made
    }
}

/// What was shed since the last warning, and when that was.
#[derive(Default)]
struct Report {
    last: Option<Instant>,
    closed: u64,
    refused: u64,
}

impl Report {
    /// Counts one shed connection (`closed`: a silent one closed; else a newcomer refused),
    /// and returns the warning to log when one is due.
    fn shed(&mut self, closed: bool, now: Instant, limit: usize) -> Option<String> {
        if closed {
            self.closed += 1;
        } else {
            self.refused += 1;
        }
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < WARN_EVERY)
        {
            return None;
        }
        let since = if self.last.is_some() {
            " since the last warning"
        } else {
            ""
        };
        let message = format!(
            "worker_connections limit ({limit}) reached: closed {} connection(s) that sent \
             nothing, refused {} with 503{since}",
            self.closed, self.refused
        );
        *self = Report {
            last: Some(now),
            closed: 0,
            refused: 0,
        };
        Some(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_at_once_then_at_most_once_per_interval() {
        let mut report = Report::default();
        let t0 = Instant::now();
        assert_eq!(
            report.shed(true, t0, 20).as_deref(),
            Some(
                "worker_connections limit (20) reached: closed 1 connection(s) that sent \
                 nothing, refused 0 with 503"
            )
        );
        for i in 1..100 {
            let at = t0 + WARN_EVERY * i / 100;
            assert_eq!(report.shed(i % 3 != 0, at, 20), None);
        }
        let later = report.shed(false, t0 + WARN_EVERY, 20);
        assert_eq!(
            later.as_deref(),
            Some(
                "worker_connections limit (20) reached: closed 66 connection(s) that sent \
                 nothing, refused 34 with 503 since the last warning"
            )
        );
        assert_eq!(report.shed(true, t0 + WARN_EVERY * 3 / 2, 20), None);
    }

    #[test]
    fn closes_the_oldest_silent_connection_first() {
        let shedding = Shedding::new();
        let first = shedding.silent();
        let second = shedding.silent();
        let third = shedding.silent();
        drop(second);
        assert!(shedding.make_room(3));
        assert_eq!(
            shedding.silent.borrow().keys().copied().collect::<Vec<_>>(),
            [third.id]
        );
        // The permit waits for the connection's next look.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), first.evicted())
                .await
                .unwrap()
        });
        drop(first);
        drop(third);
        assert!(!shedding.make_room(3), "nothing silent is left to close");
    }
}
