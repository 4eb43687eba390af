//! What the operator asks of the master through signals: stop, scale the web pool (TTIN,
//! TTOU, WINCH), reopen logs (USR1), reload the configuration (HUP) and re-execute (USR2),
//! and the promotion of a re-executed master once the old one is gone.

use std::os::unix::io::RawFd;

use pyo3::prelude::*;

use super::pool::WEB;
use super::{
    bind_all, embed, pidfile, prepare_environment, reexec, scrape, setup_logging, setup_outputs,
    systemd, Arbiter, Exit,
};
use crate::config::{self, Loaded, Settings};
use crate::log;
use crate::log::python::log_exception;
use crate::net::tls::TlsAcceptor;
use crate::process::heartbeat::monotonic_millis;

impl Arbiter {
    /// A master started by USR2 becomes the master when the old one is gone.
    pub(super) fn maybe_promote_master(&mut self) {
        if self.parent_master == 0 {
            return;
        }
        // SAFETY: getppid never fails.
        if self.parent_master == unsafe { libc::getppid() } {
            return;
        }
        log::info(format_args!("Master has been promoted."));
        if self.metrics.is_none() {
            self.rebind_metrics(None);
        }
        self.master_name = "Master".into();
        self.parent_master = 0;
        systemd::unset("GUNICORN_PID");
        if let (Some(pf), Some(path)) = (self.pidfile.take(), self.settings.str("pidfile")) {
            match pf.rename(std::path::Path::new(path)) {
                Ok(pf) => self.pidfile = Some(pf),
                Err(message) => log::error(format_args!("{message}")),
            }
        }
        self.set_title();
    }

    pub(super) fn handle_signal(&mut self, py: Python<'_>, sig: libc::c_int) -> Option<Exit> {
        match sig {
            libc::SIGCHLD => None,
            libc::SIGTERM => {
                log::info(format_args!("Handling signal: term"));
                Some(self.stop(true, None))
            }
            libc::SIGUSR2 => {
                log::info(format_args!("Handling signal: usr2"));
                self.reexec(py);
                None
            }
            libc::SIGINT => {
                log::info(format_args!("Handling signal: int"));
                Some(self.stop(false, None))
            }
            libc::SIGQUIT => {
                log::info(format_args!("Handling signal: quit"));
                Some(self.stop(false, None))
            }
            libc::SIGTTIN => {
                log::info(format_args!("Handling signal: ttin"));
                self.resize_web(self.pools[WEB].target + 1);
                systemd::notify(&format!("STATUS={} workers", self.pools[WEB].target));
                self.manage_workers(py).err()
            }
            libc::SIGTTOU => {
                log::info(format_args!("Handling signal: ttou"));
                if self.pools[WEB].target > 1 {
                    self.resize_web(self.pools[WEB].target - 1);
                }
                systemd::notify(&format!("STATUS={} workers", self.pools[WEB].target));
                self.manage_workers(py).err()
            }
            libc::SIGHUP => {
                log::info(format_args!("Handling signal: hup"));
                log::info(format_args!("Hang up: {}", self.master_name));
                self.reload(py).err()
            }
            libc::SIGUSR1 => {
                log::info(format_args!("Handling signal: usr1"));
                for e in log::reopen_all() {
                    log::error(format_args!("{e}"));
                }
                self.kill_workers(libc::SIGUSR1);
                None
            }
            libc::SIGWINCH => {
                log::info(format_args!("Handling signal: winch"));
                if self.settings.bool("daemon") {
                    log::info(format_args!("graceful stop of workers"));
                    self.pools[WEB].target = 0;
                    self.kill_workers(libc::SIGTERM);
                } else {
                    log::debug(format_args!("SIGWINCH ignored. Not daemonized"));
                }
                None
            }
            _ => None,
        }
    }

    /// HUP: re-read the configuration, start a fresh set of workers with it (and the
    /// application re-imported, unless it was preloaded), then retire the old ones gracefully.
    fn reload(&mut self, py: Python<'_>) -> Result<(), Exit> {
        systemd::notify(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}",
            monotonic_millis().saturating_mul(1000)
        ));
        self.restore_environment(py);
        if let Some(dir) = &self.start.cwd {
            let _ = std::env::set_current_dir(dir);
        }
        let reloaded = match &self.application {
            Some(app) => embed::reload_settings(py, app).map(Loaded::Run),
            None => config::load(py, &self.start.argv),
        };
        match reloaded {
            Ok(Loaded::Run(new)) => self.apply_settings(py, new),
            Ok(Loaded::Exit(_)) => {}
            Err(err) => log::error(format_args!(
                "Reloading the configuration failed, keeping the current one: {}",
                err.message
            )),
        }
        if let Err(message) = prepare_environment(py, &self.settings) {
            log::error(format_args!("{message}"));
        }
        for e in log::reopen_all() {
            log::error(format_args!("{e}"));
        }
        self.set_title();
        let old: Vec<libc::pid_t> = self.all_workers().map(|(pid, _)| *pid).collect();
        self.hooks.notify("on_reload");
        for index in 0..self.pools.len() {
            for _ in 0..self.pools[index].target {
                self.spawn_worker(py, index)?;
            }
        }
        for pid in old {
            self.retire(pid, libc::SIGTERM);
        }
        systemd::notify("READY=1");
        Ok(())
    }

    /// Puts back the variables `--env` changed, as Gunicorn does before re-reading the config.
    fn restore_environment(&self, py: Python<'_>) {
        let Ok(environ) = py.import("os").and_then(|os| os.getattr("environ")) else {
            return;
        };
        for (key, _) in self.settings.env() {
            let orig = self
                .start
                .env
                .iter()
                .find(|(k, _)| k.to_str() == Some(key.as_str()))
                .and_then(|(_, v)| v.to_str());
            let _ = match orig {
                Some(value) => environ.set_item(&key, value),
                None => environ.call_method1("pop", (&key, py.None())).map(drop),
            };
        }
    }

    /// Takes the re-read settings: logging, worker count, pidfile and, when `bind` changed,
    /// new listeners.
    fn apply_settings(&mut self, py: Python<'_>, new: Settings) {
        // New workers take the files as they are now; workers still open keep their own.
        match TlsAcceptor::from_settings(&new) {
            Ok(tls) => self.tls = tls,
            Err(message) => log::error(format_args!(
                "Reloading TLS failed, keeping the current certificates: {message}"
            )),
        }
        if let Err(message) = setup_logging(&new) {
            log::error(format_args!("{message}"));
        }
        if let Err(message) = setup_outputs(py, &new) {
            log::error(format_args!(
                "reloading the logger configuration failed: {message}"
            ));
        }
        if new.str("metrics_bind") != self.settings.str("metrics_bind") {
            self.rebind_metrics(new.str("metrics_bind"));
        }
        if new.list("bind") != self.settings.list("bind") && !self.systemd {
            match bind_all(&new) {
                Ok(bound) => {
                    let old = std::mem::replace(&mut self.listeners, bound);
                    if self.unlinks_sockets() {
                        for listener in &old {
                            listener.cleanup();
                        }
                    }
                    drop(old);
                    let tls = self.tls.is_some();
                    let shown: Vec<String> = self
                        .listeners
                        .iter()
                        .map(|l| l.display_scheme(tls))
                        .collect();
                    log::info(format_args!(
                        "Listening at: {} ({})",
                        shown.join(","),
                        std::process::id()
                    ));
                }
                Err(message) => log::error(format_args!("{message}")),
            }
        }
        if new.str("pidfile") != self.settings.str("pidfile") || self.pidfile.is_none() {
            if let Some(pf) = self.pidfile.take() {
                pf.unlink();
            }
            if let Some(path) = new.str("pidfile") {
                let mut path = path.to_string();
                if self.parent_master != 0 {
                    path.push_str(".2");
                }
                let pid = std::process::id() as libc::pid_t;
                match pidfile::Pidfile::create(std::path::Path::new(&path), pid) {
                    Ok(pf) => self.pidfile = Some(pf),
                    Err(message) => log::error(format_args!("{message}")),
                }
            }
        }
        let num_workers = new.uint("workers").max(1) as usize;
        let current = self.pools[WEB].target;
        if let Err(err) = self
            .hooks
            .configure(py, &new, self.application.as_ref(), current)
        {
            log_exception(py, "Cannot set up the server hooks", &err);
        }
        self.resize_web(num_workers);
        self.settings = new;
    }

    /// Sets the web pool's target, telling the `nworkers_changed` hook when it changes.
    fn resize_web(&mut self, target: usize) {
        let old = self.pools[WEB].target;
        if target != old {
            self.hooks.num_workers_changed(target, Some(old));
        }
        self.pools[WEB].target = target;
    }

    /// Binds the metrics endpoint at `value` (the current setting when `None`), replacing
    /// the current one.
    fn rebind_metrics(&mut self, value: Option<&str>) {
        let value = match value {
            Some(v) => Some(v.to_string()),
            None => self.settings.str("metrics_bind").map(str::to_string),
        };
        if let Some(old) = self.metrics.take() {
            old.cleanup();
        }
        let Some(value) = value else { return };
        match scrape::MetricsServer::bind(&value) {
            Ok(server) => {
                log::info(format_args!("Serving metrics at: {}", server.display()));
                self.metrics = Some(server);
            }
            Err(message) => log::error(format_args!("{message}")),
        }
    }

    /// USR2: fork a child that executes the original command line with the listening sockets
    /// (`GUNICORN_FD`), the new master; this one keeps serving until told to stop.
    fn reexec(&mut self, py: Python<'_>) {
        if self.reexec_pid != 0 {
            log::warning(format_args!("USR2 signal ignored. Child exists."));
            return;
        }
        if self.parent_master != 0 {
            log::warning(format_args!("USR2 signal ignored. Parent exists."));
            return;
        }
        let fds: Vec<RawFd> = self
            .listeners
            .iter()
            .map(std::os::unix::io::AsRawFd::as_raw_fd)
            .collect();
        match reexec::spawn(
            py,
            &self.start.env,
            self.start.cwd.as_deref(),
            &fds,
            self.systemd,
            || self.hooks.notify("pre_exec"),
        ) {
            Ok(pid) => self.reexec_pid = pid,
            Err(message) => log::error(format_args!("USR2 re-exec failed: {message}")),
        }
    }
}
