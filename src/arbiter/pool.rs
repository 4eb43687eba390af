//! Worker pools as data. A pool says how to start one worker (its spawn function), how many
//! it wants (its target, changed by TTIN/TTOU, WINCH and HUP), what a worker's exit status
//! means (its reap policy) and which workers it has. The master keeps a list of pools; the
//! code that forks, reaps, times out and retires workers (`workers.rs`) works on any of them.

use std::collections::BTreeMap;

use pyo3::prelude::*;

use super::{Arbiter, Exit};
use crate::exit_code;
use crate::process::heartbeat::Heartbeat;

/// The web pool's index in the master's list: `--workers`, TTIN/TTOU and WINCH apply to it.
pub(super) const WEB: usize = 0;

/// One live worker of a pool.
pub(super) struct WorkerProc {
    /// Its heartbeat slot.
    pub slot: usize,
    /// Gunicorn's worker "age": the master's spawn counter when it was forked.
    pub age: u64,
    /// SIGABRT already sent for a missed heartbeat; the next miss gets SIGKILL.
    pub aborted: bool,
    /// The master told it to stop: its exit is not a restart.
    pub retiring: bool,
}

/// Where a new worker starts: its heartbeat slot (already reset) and age.
pub(super) struct Birth {
    pub slot: usize,
    pub age: u64,
}

/// How a pool starts one worker. Returns its pid in the master (`None` when fork failed, to
/// be tried again on the next tick) and `Err(Exit::Worker(status))` in the forked child once
/// the worker is done.
pub(super) type Spawn = fn(&mut Arbiter, Python<'_>, Birth) -> Result<Option<libc::pid_t>, Exit>;

/// What a worker's exit status means: the listed codes halt the master with their reason
/// (a worker that cannot boot would fail again if replaced); any other exit is replaced.
pub(super) struct ReapPolicy {
    halts: &'static [(i32, &'static str)],
}

impl ReapPolicy {
    /// Gunicorn's: a boot failure (3) or an application that cannot load (4) stops the master.
    pub const WEB: ReapPolicy = ReapPolicy {
        halts: &[
            (exit_code::WORKER_BOOT_ERROR, "Worker failed to boot."),
            (exit_code::APP_LOAD_ERROR, "App failed to load."),
        ],
    };

    /// The reason to halt the master for a worker that exited with `code`, if it is one.
    pub fn halt_reason(&self, code: i32) -> Option<&'static str> {
        self.halts
            .iter()
            .find(|(halting, _)| *halting == code)
            .map(|(_, reason)| *reason)
    }
}

pub(super) struct Pool {
    /// How many workers should take new connections.
    pub target: usize,
    pub spawn: Spawn,
    pub reap: ReapPolicy,
    pub workers: BTreeMap<libc::pid_t, WorkerProc>,
}

impl Pool {
    pub fn new(target: usize, spawn: Spawn, reap: ReapPolicy) -> Pool {
        Pool {
            target,
            spawn,
            reap,
            workers: BTreeMap::new(),
        }
    }

    pub fn add(&mut self, pid: libc::pid_t, birth: Birth) {
        self.workers.insert(
            pid,
            WorkerProc {
                slot: birth.slot,
                age: birth.age,
                aborted: false,
                retiring: false,
            },
        );
    }

    /// Whether a worker still takes new connections: neither told to stop nor stopping on its
    /// own (`--max-requests`, `--reload`) while it finishes its open connections.
    fn serving(worker: &WorkerProc, heartbeat: &Heartbeat) -> bool {
        !worker.retiring && !heartbeat.slot(worker.slot).leaving()
    }

    pub fn serving_count(&self, heartbeat: &Heartbeat) -> usize {
        self.workers
            .values()
            .filter(|w| Self::serving(w, heartbeat))
            .count()
    }

    /// The pids of the `n` oldest workers still serving: those retired when the pool is
    /// above its target.
    pub fn oldest_serving(&self, heartbeat: &Heartbeat, n: usize) -> Vec<libc::pid_t> {
        let mut by_age: Vec<(u64, libc::pid_t)> = self
            .workers
            .iter()
            .filter(|(_, w)| Self::serving(w, heartbeat))
            .map(|(pid, w)| (w.age, *pid))
            .collect();
        by_age.sort();
        by_age.into_iter().take(n).map(|(_, pid)| pid).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_spawn(_: &mut Arbiter, _: Python<'_>, _: Birth) -> Result<Option<libc::pid_t>, Exit> {
        Ok(None)
    }

    #[test]
    fn web_policy_halts_on_boot_and_load_failures_only() {
        let policy = ReapPolicy::WEB;
        assert_eq!(policy.halt_reason(3), Some("Worker failed to boot."));
        assert_eq!(policy.halt_reason(4), Some("App failed to load."));
        for code in [0, 1, 2, 5, 255] {
            assert_eq!(policy.halt_reason(code), None, "code {code}");
        }
    }

    #[test]
    fn oldest_serving_skips_retiring_and_leaving_workers() {
        let hb = Heartbeat::new(8).expect("mmap");
        let mut pool = Pool::new(2, no_spawn, ReapPolicy::WEB);
        for (pid, slot, age) in [(100, 0, 5), (101, 1, 2), (102, 2, 3), (103, 3, 1)] {
            pool.add(pid, Birth { slot, age });
        }
        pool.workers.get_mut(&103).expect("added").retiring = true;
        hb.slot(1).announce_leaving();
        assert_eq!(pool.serving_count(&hb), 2);
        assert_eq!(pool.oldest_serving(&hb, 1), vec![102]);
        assert_eq!(pool.oldest_serving(&hb, 5), vec![102, 100]);
        assert!(pool.oldest_serving(&hb, 0).is_empty());
    }
}
