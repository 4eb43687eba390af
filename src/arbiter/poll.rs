//! What the master's loop sleeps on: a list of poll sources, each giving descriptors to
//! watch (and perhaps an earlier deadline) and served when they are ready. A new source (a
//! control socket) is one more variant.

use std::ops::Range;
use std::time::{Duration, Instant};

use super::{scrape, signals, Arbiter};
use crate::log::metrics::Snapshot;

/// The loop's tick: the longest sleep between two rounds of reaping and managing workers.
const TICK: Duration = Duration::from_secs(1);

/// Something the master's loop polls.
#[derive(Clone, Copy)]
enum Source {
    /// The self-pipe the signal handlers write to.
    Signals,
    /// The Prometheus endpoint (`--metrics-bind`): its listener and scrape connections.
    Metrics,
}

/// Polls `fds` for up to `timeout`; `revents` is left 0 when nothing was ready.
pub(super) fn poll(fds: &mut [libc::pollfd], timeout: Duration) {
    // SAFETY: a valid array of pollfds and its length.
    let n = unsafe {
        libc::poll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            timeout.as_millis().min(i32::MAX as u128) as i32,
        )
    };
    if n <= 0 {
        for f in fds.iter_mut() {
            f.revents = 0;
        }
    }
}

impl Arbiter {
    fn sources(&self) -> Vec<Source> {
        let mut sources = vec![Source::Signals];
        if self.metrics.is_some() {
            sources.push(Source::Metrics);
        }
        sources
    }

    /// Sleeps until a source is ready or a tick passes; serves the ready sources. Returns the
    /// signals that arrived, in order.
    pub(super) fn wait(&mut self) -> Vec<libc::c_int> {
        let sources = self.sources();
        let mut timeout = TICK;
        let mut fds = Vec::new();
        let mut spans: Vec<Range<usize>> = Vec::with_capacity(sources.len());
        for source in &sources {
            let start = fds.len();
            match source {
                Source::Signals => fds.push(signals::pollfd()),
                Source::Metrics => {
                    if let Some(metrics) = &self.metrics {
                        fds.extend(metrics.pollfds());
                        if let Some(deadline) = metrics.next_deadline() {
                            timeout =
                                timeout.min(deadline.saturating_duration_since(Instant::now()));
                        }
                    }
                }
            }
            spans.push(start..fds.len());
        }
        poll(&mut fds, timeout);
        let mut pending = Vec::new();
        for (source, span) in sources.into_iter().zip(spans) {
            match source {
                Source::Signals => pending = signals::drain(),
                Source::Metrics => self.serve_scrapes(&fds[span]),
            }
        }
        pending
    }

    /// Serves the scrape connections `poll` found ready.
    fn serve_scrapes(&mut self, fds: &[libc::pollfd]) {
        let ready: Vec<scrape::Ready> = fds
            .iter()
            .map(|f| scrape::Ready {
                fd: f.fd,
                revents: f.revents,
            })
            .collect();
        let mut metrics = self.metrics.take();
        if let Some(m) = metrics.as_mut() {
            let render = || self.snapshot().render();
            m.service(&ready, &render);
        }
        self.metrics = metrics;
    }

    /// The counters of every worker, dead or alive.
    fn snapshot(&self) -> Snapshot {
        Snapshot::collect(
            &self.totals,
            self.all_workers()
                .map(|(_, w)| self.heartbeat.slot(w.slot).counters()),
        )
    }
}
