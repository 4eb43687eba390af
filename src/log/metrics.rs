//! Request counters for the Prometheus endpoint (`--metrics-bind`).
//!
//! Each worker counts into its own slot of the shared region the master maps before forking
//! (beside its heartbeat, see `arbiter::heartbeat`): plain relaxed atomics, one writer per slot,
//! no locks, no syscalls. The master reads every slot when scraped, and folds a dead worker's
//! counts into its own totals before the slot is reused, so counters only go up.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, in microseconds (Prometheus' defaults:
/// 5 ms to 10 s); a last bucket takes everything slower.
pub const BUCKETS_US: [u64; 11] = [
    5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000,
];
const NBUCKETS: usize = BUCKETS_US.len() + 1;

/// Why a worker stopped, as the worker itself records it before exiting.
pub const EXIT_UNKNOWN: u64 = 0;
pub const EXIT_MAX_REQUESTS: u64 = 1;

/// One worker's counters, in shared memory.
#[repr(C)]
#[derive(Default)]
pub struct WorkerCounters {
    /// Requests begun (also the worker's `--max-requests` count).
    pub started: AtomicU64,
    /// Requests finished (answered or abandoned); `started - finished` are in flight.
    pub finished: AtomicU64,
    /// Connections open now.
    pub connections: AtomicU64,
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub status: [AtomicU64; 5],
    /// Latency histogram, one count per bucket (not cumulative).
    pub buckets: [AtomicU64; NBUCKETS],
    /// Sum of the latencies, in microseconds.
    pub duration_us: AtomicU64,
    /// [`EXIT_MAX_REQUESTS`] when the worker stopped itself after `--max-requests`.
    pub exit_reason: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    // One writer per slot: a load and a store, no read-modify-write needed.
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

impl WorkerCounters {
    /// Counts a finished request (`status` 0 when none was sent).
    pub fn request_done(&self, status: u16, duration: Duration) {
        bump(&self.finished, 1);
        if let Some(class) = (status / 100).checked_sub(1).filter(|c| *c < 5) {
            bump(&self.status[class as usize], 1);
        }
        let us = duration.as_micros().min(u64::MAX as u128) as u64;
        let bucket = BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(NBUCKETS - 1);
        bump(&self.buckets[bucket], 1);
        bump(&self.duration_us, us);
    }

    /// Counts a request that ended without a response.
    pub fn request_abandoned(&self) {
        bump(&self.finished, 1);
    }

    /// Zeroes the slot for a new worker (in the master, before the fork).
    pub fn reset(&self) {
        for c in self.all() {
            c.store(0, Ordering::Relaxed);
        }
    }

    fn all(&self) -> impl Iterator<Item = &AtomicU64> {
        [
            &self.started,
            &self.finished,
            &self.connections,
            &self.duration_us,
            &self.exit_reason,
        ]
        .into_iter()
        .chain(self.status.iter())
        .chain(self.buckets.iter())
    }
}

/// Why the master replaced a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Exited or was killed without the master asking (a crash, an OOM kill, `kill -9`).
    Exit,
    /// Missed its heartbeat for `--timeout` and was aborted.
    Timeout,
    /// Stopped itself after `--max-requests`.
    MaxRequests,
    /// Could not boot (exit 3 or 4).
    BootFailure,
}

impl Restart {
    const ALL: [Restart; 4] = [
        Restart::Exit,
        Restart::Timeout,
        Restart::MaxRequests,
        Restart::BootFailure,
    ];

    fn label(self) -> &'static str {
        match self {
            Restart::Exit => "exit",
            Restart::Timeout => "timeout",
            Restart::MaxRequests => "max_requests",
            Restart::BootFailure => "boot_failure",
        }
    }
}

/// Sums over workers, kept by the master.
#[derive(Default, Clone, Debug)]
pub struct Totals {
    pub finished: u64,
    pub status: [u64; 5],
    pub buckets: [u64; NBUCKETS],
    pub duration_us: u64,
    pub restarts: [u64; 4],
}

impl Totals {
    /// Adds a slot's request counts.
    pub fn add(&mut self, c: &WorkerCounters) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        self.finished += get(&c.finished);
        for (t, s) in self.status.iter_mut().zip(&c.status) {
            *t += get(s);
        }
        for (t, b) in self.buckets.iter_mut().zip(&c.buckets) {
            *t += get(b);
        }
        self.duration_us += get(&c.duration_us);
    }

    pub fn restarted(&mut self, why: Restart) {
        let i = Restart::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.restarts[i] += 1;
    }
}

/// What one scrape reports.
pub struct Snapshot {
    /// Dead workers' counts plus the live workers'.
    pub totals: Totals,
    pub in_flight: u64,
    pub connections: u64,
    pub workers: u64,
}

impl Snapshot {
    /// `retired` (the master's totals) plus every live worker's slot.
    pub fn collect<'a>(retired: &Totals, live: impl Iterator<Item = &'a WorkerCounters>) -> Self {
        let mut snap = Snapshot {
            totals: retired.clone(),
            in_flight: 0,
            connections: 0,
            workers: 0,
        };
        for c in live {
            snap.totals.add(c);
            let started = c.started.load(Ordering::Relaxed);
            let finished = c.finished.load(Ordering::Relaxed);
            snap.in_flight += started.saturating_sub(finished);
            snap.connections += c.connections.load(Ordering::Relaxed);
            snap.workers += 1;
        }
        snap
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let t = &self.totals;
        let mut out = String::with_capacity(2048);
        family(
            &mut out,
            "requests_total",
            "counter",
            "Requests answered, by status class.",
        );
        for (i, n) in t.status.iter().enumerate() {
            let _ = writeln!(
                out,
                "ferrocorn_requests_total{{status=\"{}xx\"}} {n}",
                i + 1
            );
        }
        family(
            &mut out,
            "request_duration_seconds",
            "histogram",
            "Time from a complete request head to the response written.",
        );
        let mut cumulative = 0;
        for (i, n) in t.buckets.iter().enumerate() {
            cumulative += n;
            let le = match BUCKETS_US.get(i) {
                Some(us) => seconds(*us),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(
                out,
                "ferrocorn_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "ferrocorn_request_duration_seconds_sum {}",
            seconds(t.duration_us)
        );
        let _ = writeln!(out, "ferrocorn_request_duration_seconds_count {cumulative}");
        family(
            &mut out,
            "requests_in_flight",
            "gauge",
            "Requests being handled now.",
        );
        let _ = writeln!(out, "ferrocorn_requests_in_flight {}", self.in_flight);
        family(
            &mut out,
            "connections_open",
            "gauge",
            "Client connections open now.",
        );
        let _ = writeln!(out, "ferrocorn_connections_open {}", self.connections);
        family(&mut out, "workers", "gauge", "Worker processes running.");
        let _ = writeln!(out, "ferrocorn_workers {}", self.workers);
        family(
            &mut out,
            "worker_restarts_total",
            "counter",
            "Workers replaced, by reason: exit (unexpected exit or kill), timeout, \
             max_requests, boot_failure.",
        );
        for (why, n) in Restart::ALL.iter().zip(&t.restarts) {
            let _ = writeln!(
                out,
                "ferrocorn_worker_restarts_total{{reason=\"{}\"}} {n}",
                why.label()
            );
        }
        out
    }
}

/// The `# HELP` and `# TYPE` lines of a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP ferrocorn_{name} {help}");
    let _ = writeln!(out, "# TYPE ferrocorn_{name} {kind}");
}

/// Microseconds as decimal seconds without trailing zeros (`0.005`, `2.5`, `10`).
fn seconds(us: u64) -> String {
    let whole = us / 1_000_000;
    let frac = us % 1_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_classes_and_buckets() {
        let c = WorkerCounters::default();
        c.started.store(3, Ordering::Relaxed);
        c.request_done(200, Duration::from_millis(3));
        c.request_done(404, Duration::from_millis(30));
        c.request_done(503, Duration::from_secs(20));
        c.connections.store(2, Ordering::Relaxed);
        let mut retired = Totals::default();
        retired.restarted(Restart::Timeout);
        retired.status[1] = 10;
        let snap = Snapshot::collect(&retired, [&c].into_iter());
        assert_eq!(snap.totals.status, [0, 11, 0, 1, 1]);
        assert_eq!(snap.in_flight, 0);
        assert_eq!(snap.connections, 2);
        let text = snap.render();
        assert!(text.contains("ferrocorn_requests_total{status=\"2xx\"} 11\n"));
        assert!(text.contains("ferrocorn_request_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("ferrocorn_request_duration_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(text.contains("ferrocorn_request_duration_seconds_bucket{le=\"10\"} 2\n"));
        assert!(text.contains("ferrocorn_request_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("ferrocorn_request_duration_seconds_sum 20.033\n"));
        assert!(text.contains("ferrocorn_worker_restarts_total{reason=\"timeout\"} 1\n"));
        assert!(text.contains("# TYPE ferrocorn_requests_in_flight gauge\n"));
    }

    #[test]
    fn seconds_print_without_trailing_zeros() {
        assert_eq!(seconds(5_000), "0.005");
        assert_eq!(seconds(2_500_000), "2.5");
        assert_eq!(seconds(10_000_000), "10");
    }
}
