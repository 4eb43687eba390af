//! The master's work on its pools' workers: forking them, reaping and counting their exits,
//! timing out silent ones, keeping each pool at its target and stopping them all.

use std::time::{Duration, Instant};

use pyo3::prelude::*;

use super::pool::{Birth, Pool, WorkerProc, WEB};
use super::{daemon, proctitle, signals, systemd, Arbiter, Exit};
use crate::exit_code;
use crate::hooks;
use crate::log;
use crate::log::metrics::Restart;
use crate::process::heartbeat::monotonic_millis;

/// Where `fork` left us.
enum Forked {
    /// The fork failed (logged); the pool tries again on the next tick.
    Failed,
    Parent(libc::pid_t),
    /// In the new worker, its signal handlers, title and owner set.
    Child,
}

/// The web pool's spawn function: a worker serving the listeners with the WSGI application,
/// with the `pre_fork`, `post_fork` and `worker_exit` hooks around it.
pub(super) fn spawn_web(
    arbiter: &mut Arbiter,
    py: Python<'_>,
    birth: Birth,
) -> Result<Option<libc::pid_t>, Exit> {
    let hook_worker = arbiter.hooks.pre_fork(birth.age);
    match arbiter.fork_worker()? {
        Forked::Failed => Ok(None),
        Forked::Parent(pid) => {
            arbiter.hooks.forked(pid, hook_worker.as_ref());
            Ok(Some(pid))
        }
        Forked::Child => {
            // post_fork raising fails the worker's boot, as in Gunicorn; worker_exit runs anyway.
            let code = if arbiter.hooks.post_fork(py, hook_worker.as_ref()) {
                let ctx = crate::worker::WorkerContext {
                    settings: &arbiter.settings,
                    listeners: &arbiter.listeners,
                    heartbeat: arbiter.heartbeat.slot(birth.slot),
                    age: birth.age,
                    app: arbiter.preloaded.as_ref().map(|app| app.clone_ref(py)),
                    application: arbiter.application.as_ref().map(|app| app.clone_ref(py)),
                    tls: arbiter.tls.clone(),
                };
                crate::worker::run(py, ctx)
            } else {
                exit_code::WORKER_BOOT_ERROR
            };
            hooks::worker_exit(py);
            Err(Exit::Worker(code))
        }
    }
}

impl Arbiter {
    /// Every live worker of every pool.
    pub(super) fn all_workers(&self) -> impl Iterator<Item = (&libc::pid_t, &WorkerProc)> {
        self.pools.iter().flat_map(|p| p.workers.iter())
    }

    fn has_workers(&self) -> bool {
        self.pools.iter().any(|p| !p.workers.is_empty())
    }

    /// Forgets the worker `pid`; returns it with its pool's index.
    fn remove_worker(&mut self, pid: libc::pid_t) -> Option<(usize, WorkerProc)> {
        self.pools
            .iter_mut()
            .enumerate()
            .find_map(|(index, pool)| pool.workers.remove(&pid).map(|w| (index, w)))
    }

    /// Forks a worker process. The child gets the worker's signal handlers before any signal
    /// can reach it, drops the master's metrics endpoint, takes its title and, when
    /// configured, its user and group (failing its boot when it cannot).
    fn fork_worker(&mut self) -> Result<Forked, Exit> {
        let mask = signals::block_all();
        let pid = daemon::py_fork();
        if pid == 0 {
            signals::close_in_child();
            crate::process::lifecycle::install_handlers();
        }
        signals::restore_mask(&mask);
        if pid < 0 {
            log::error(format_args!(
                "fork failed: {}",
                std::io::Error::last_os_error()
            ));
            return Ok(Forked::Failed);
        }
        if pid > 0 {
            return Ok(Forked::Parent(pid));
        }
        // The worker does not serve the master's metrics endpoint.
        self.metrics = None;
        proctitle::set(&format!("worker [{}]", self.proc_name()));
        if self.settings.is_set("user")
            || self.settings.is_set("group")
            || self.settings.bool("initgroups")
        {
            let uid = self.settings.uint("user") as u32;
            let gid = self.settings.uint("group") as u32;
            if let Err(message) = daemon::set_owner(uid, gid, self.settings.bool("initgroups")) {
                log::error(format_args!("{message}"));
                return Err(Exit::Worker(exit_code::WORKER_BOOT_ERROR));
            }
        }
        Ok(Forked::Child)
    }

    /// Starts one worker of pool `index` through its spawn function.
    pub(super) fn spawn_worker(&mut self, py: Python<'_>, index: usize) -> Result<(), Exit> {
        self.worker_age += 1;
        let slot = self.free_slot();
        let hb = self.heartbeat.slot(slot);
        hb.beat();
        hb.clear_leaving();
        hb.counters().reset();
        let age = self.worker_age;
        let spawn = self.pools[index].spawn;
        if let Some(pid) = spawn(self, py, Birth { slot, age })? {
            self.pools[index].add(pid, Birth { slot, age });
        }
        Ok(())
    }

    fn free_slot(&self) -> usize {
        let used: std::collections::BTreeSet<usize> =
            self.all_workers().map(|(_, w)| w.slot).collect();
        (0..self.heartbeat.slots())
            .find(|s| !used.contains(s))
            .unwrap_or(0)
    }

    /// Collects exited workers. An exit its pool's reap policy calls fatal (a worker that
    /// could not boot) stops the master, as in Gunicorn; others are replaced by
    /// [`Arbiter::manage_workers`].
    pub(super) fn reap_workers(&mut self) -> Result<(), Exit> {
        loop {
            let mut status = 0;
            // SAFETY: waitpid with WNOHANG on our own children.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return Ok(());
            }
            if pid == self.reexec_pid {
                self.reexec_pid = 0;
                continue;
            }
            let Some((index, worker)) = self.remove_worker(pid) else {
                continue;
            };
            self.count_exit(index, &worker, status);
            if libc::WIFEXITED(status) {
                let code = libc::WEXITSTATUS(status);
                if code != 0 {
                    log::error(format_args!("Worker (pid:{pid}) exited with code {code}."));
                }
                if let Some(reason) = self.pools[index].reap.halt_reason(code) {
                    return Err(self.halt(reason, code));
                }
            } else if libc::WIFSIGNALED(status) {
                let sig = libc::WTERMSIG(status);
                let name = signals::name(sig);
                // Gunicorn's levels: a kill suggests the OOM killer, TERM is a normal stop,
                // anything else is unexpected.
                match sig {
                    libc::SIGKILL => log::error(format_args!(
                        "Worker (pid:{pid}) was sent SIGKILL! Perhaps out of memory?"
                    )),
                    libc::SIGTERM => log::info(format_args!("Worker (pid:{pid}) was sent {name}!")),
                    _ => log::warning(format_args!("Worker (pid:{pid}) was sent {name}!")),
                }
            }
            self.hooks.child_exit(pid);
        }
    }

    /// Folds a dead worker's request counts into the totals and, unless the master retired
    /// it, counts the restart with its reason.
    fn count_exit(&mut self, index: usize, worker: &WorkerProc, status: libc::c_int) {
        let counters = self.heartbeat.slot(worker.slot).counters();
        self.totals.add(counters);
        if worker.retiring {
            return;
        }
        let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        let why = if worker.aborted {
            Restart::Timeout
        } else if code.is_some_and(|c| self.pools[index].reap.halt_reason(c).is_some()) {
            Restart::BootFailure
        } else if counters
            .exit_reason
            .load(std::sync::atomic::Ordering::Relaxed)
            == log::metrics::EXIT_MAX_REQUESTS
        {
            Restart::MaxRequests
        } else {
            Restart::Exit
        };
        self.totals.restarted(why);
    }

    /// Aborts workers whose heartbeat is older than `--timeout`, then kills them.
    pub(super) fn murder_workers(&mut self) {
        let timeout = self.settings.uint("timeout");
        if timeout == 0 {
            return;
        }
        let now = monotonic_millis();
        let workers = self.pools.iter_mut().flat_map(|p| p.workers.iter_mut());
        for (&pid, worker) in workers {
            let last = self.heartbeat.slot(worker.slot).last();
            if now.saturating_sub(last) <= timeout * 1000 {
                continue;
            }
            if !worker.aborted {
                log::critical(format_args!("WORKER TIMEOUT (pid:{pid})"));
                worker.aborted = true;
                kill(pid, libc::SIGABRT);
            } else {
                kill(pid, libc::SIGKILL);
            }
        }
    }

    /// Spawns or retires workers until each pool has its target of them taking new
    /// connections.
    pub(super) fn manage_workers(&mut self, py: Python<'_>) -> Result<(), Exit> {
        for index in 0..self.pools.len() {
            let mut serving = self.pools[index].serving_count(&self.heartbeat);
            while serving < self.pools[index].target {
                self.spawn_worker(py, index)?;
                serving += 1;
            }
            let pool: &Pool = &self.pools[index];
            let extra = serving.saturating_sub(pool.target);
            for pid in pool.oldest_serving(&self.heartbeat, extra) {
                self.retire(pid, libc::SIGTERM);
            }
        }
        // Gunicorn's `gunicorn.workers` gauge, sent when the count changes.
        let count = self.pools[WEB].workers.len();
        if self.reported_workers != Some(count) {
            self.reported_workers = Some(count);
            log::statsd::gauge("gunicorn.workers", count as u64);
            log::debug(format_args!("{count} workers"));
        }
        if self.settings.bool("enable_backlog_metric") && log::statsd::enabled() {
            let backlog: i64 = self
                .listeners
                .iter()
                .map(crate::net::listeners::Listener::backlog)
                .sum();
            if backlog >= 0 {
                log::statsd::histogram("gunicorn.backlog", backlog as u64);
                log::debug(format_args!("socket backlog: {backlog}"));
            }
        }
        Ok(())
    }

    /// Tells a worker to stop; its exit is then not counted as a restart.
    pub(super) fn retire(&mut self, pid: libc::pid_t, sig: libc::c_int) {
        let worker = self
            .pools
            .iter_mut()
            .find_map(|pool| pool.workers.get_mut(&pid));
        if let Some(w) = worker {
            w.retiring = true;
        }
        kill(pid, sig);
    }

    /// Sends `sig` to every worker; a stop signal marks them retiring.
    pub(super) fn kill_workers(&mut self, sig: libc::c_int) {
        let stopping = matches!(
            sig,
            libc::SIGTERM | libc::SIGQUIT | libc::SIGINT | libc::SIGKILL
        );
        for (&pid, w) in self.pools.iter_mut().flat_map(|p| p.workers.iter_mut()) {
            w.retiring |= stopping;
            kill(pid, sig);
        }
    }

    /// Stops every worker: TERM and wait up to the graceful timeout (or QUIT for a fast stop),
    /// then KILL what is left.
    pub(super) fn stop(&mut self, graceful: bool, reason: Option<(&str, i32)>) -> Exit {
        systemd::notify("STOPPING=1");
        self.kill_workers(if graceful {
            libc::SIGTERM
        } else {
            libc::SIGQUIT
        });
        let limit = Instant::now() + Duration::from_secs(self.settings.uint("graceful_timeout"));
        while self.has_workers() && Instant::now() < limit {
            let _ = signals::wait(Duration::from_millis(100));
            self.reap_quietly();
        }
        self.kill_workers(libc::SIGKILL);
        while self.has_workers() {
            let mut status = 0;
            // SAFETY: blocking waitpid on our own children, all of which were just killed.
            let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
            if pid < 0 {
                break;
            }
            if self.remove_worker(pid).is_some() {
                self.hooks.child_exit(pid);
            }
        }
        // Gunicorn logs a halt with a non-zero status at ERROR, so `--log-level warning` keeps it.
        let level = match reason {
            Some((_, code)) if code != exit_code::OK => log::Level::Error,
            _ => log::Level::Info,
        };
        log::log(level, format_args!("Shutting down: {}", self.master_name));
        let exit = match reason {
            Some((reason, code)) => {
                log::log(level, format_args!("Reason: {reason}"));
                Exit::Master(code)
            }
            None => Exit::Master(exit_code::OK),
        };
        self.hooks.notify("on_exit");
        exit
    }

    fn reap_quietly(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: non-blocking waitpid on our own children.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if self.remove_worker(pid).is_some() {
                self.hooks.child_exit(pid);
            }
        }
    }

    fn halt(&mut self, reason: &str, code: i32) -> Exit {
        self.stop(true, Some((reason, code)))
    }
}

fn kill(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill(2) on a child pid we track; ESRCH for an already-gone child is harmless.
    unsafe { libc::kill(pid, sig) };
}
