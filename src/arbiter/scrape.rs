//! `--metrics-bind`: the master answers `GET /metrics` in Prometheus' text format.
//!
//! The master is single-threaded and has no runtime, so this is a small non-blocking server
//! (`net::polled`) driven by the master's own `poll(2)`: the listener and each open scrape
//! connection are polled beside the signal pipe. Every step is bounded: a few connections at a
//! time, a request head of at most 8 KiB, five seconds per connection from accept to the last
//! byte. A slow or silent scraper is dropped at its deadline; it can never hold up the master.
//! The route and the answer bytes are `http::scrape`'s.

use std::time::{Duration, Instant};

use crate::http;
use crate::net::listeners::{self, BindAddr, Listener};
use crate::net::polled::{Bounds, PolledServer};

pub use crate::net::polled::Ready;

/// Eight scrapes at once, a head of 8 KiB, five seconds each.
const BOUNDS: Bounds = Bounds {
    connections: 8,
    request: 8 * 1024,
    deadline: Duration::from_secs(5),
};

/// The metrics endpoint: its listener and the scrapes in progress.
pub struct MetricsServer {
    server: PolledServer,
    /// `--metrics-bind` as given, to tell whether a HUP changed it.
    pub bind: String,
}

impl MetricsServer {
    /// Binds `--metrics-bind` (`HOST:PORT` or `unix:PATH`). Errors name the address.
    pub fn bind(value: &str) -> Result<MetricsServer, String> {
        let addr = listeners::parse_bind(value)?;
        if let BindAddr::Fd(_) = addr {
            return Err(format!("metrics_bind cannot be a descriptor: {value}"));
        }
        let server = PolledServer::bind(&addr, BOUNDS)
            .map_err(|e| format!("cannot bind the metrics endpoint {value}: {e}"))?;
        Ok(MetricsServer {
            server,
            bind: value.to_string(),
        })
    }

    /// As logged: `http://127.0.0.1:9100/metrics` or `unix:/run/metrics.sock`.
    pub fn display(&self) -> String {
        let listener = self.server.listener();
        match listener {
            Listener::Tcp(_) => format!("{}/metrics", listener.display()),
            Listener::Unix(..) => listener.display(),
        }
    }

    /// The descriptors to poll and what for.
    pub fn pollfds(&self) -> Vec<libc::pollfd> {
        self.server.pollfds()
    }

    /// How long the master may sleep before a connection's deadline passes.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.server.next_deadline()
    }

    /// Serves what `poll` found ready, then drops connections past their deadline. `render`
    /// gives the metrics text; it is called once per complete request.
    pub fn service(&mut self, ready: &[Ready], render: &dyn Fn() -> String) {
        self.server.service(ready, &mut |request, full| {
            http::scrape::respond(request, full, render)
        });
    }

    /// Removes the socket file of a unix listener.
    pub fn cleanup(&self) {
        self.server.cleanup();
    }
}
