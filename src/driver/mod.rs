//! Connection drivers: the HTTP/1 connection state machine, generic over the transport, and the
//! seam ([`Service`]) through which it hands requests to an application interface.
//!
//! - [`buffers`]: memory a connection holds only while it works on a request: its read buffer
//!   and the state of the request.
//! - [`h1`]: one HTTP/1 connection, from its first byte to its close.
//! - [`h2`]: one HTTP/2 connection and its streams, each a request through the same seam.
//! - [`h2c`]: the HTTP/1.1 upgrade to cleartext HTTP/2, from the `101` to the hand-over.
//! - [`body`]: a request body as the driver reads it and the application consumes it.
//! - [`output`]: owned buffers, Python `bytes` and file ranges waiting to be written.
//! - [`shed`]: which connections make room at `--worker-connections`.
//! - [`ws`]: one WebSocket connection after its `101`, and its seam to the application
//!   interface (a [`ws::Session`]).
//!
//! The driver owns the transport except while the application runs: it moves it into the
//! [`Request`] and gets it back in the [`Outcome`].

pub mod body;
pub mod buffers;
pub mod h1;
#[cfg(test)]
mod h1_tests;
pub mod h2;
pub mod h2c;
pub mod output;
pub mod shed;
pub mod ws;
#[cfg(test)]
mod ws_tests;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::http::forwarded::AllowList;
use crate::http::proxy::{self, ProxyInfo};
use crate::http::response::ResponseHead;
use crate::http::{response, HttpError, Limits, RequestHead};
use crate::log;
use crate::net::tls::TlsInfo;
use crate::net::{Io, Peer};
use body::{BodyState, BodyTarget};
use output::OutQueue;

/// How the driver treats every connection of a worker.
pub struct Options {
    /// Idle time allowed between requests on a kept-alive connection (`--keep-alive`).
    pub keepalive: Duration,
    /// Time allowed for a request head to arrive completely (`--header-timeout`).
    pub head_timeout: Duration,
    /// Longest wait for more of a request body (`--body-timeout`).
    pub body_timeout: Duration,
    /// Body bytes read before the application is called (`--body-buffer-size`).
    pub body_buffer: usize,
    /// Longest stall while writing a response.
    pub write_timeout: Duration,
    /// Request line and header limits and strictness.
    pub limits: Limits,
    /// Whether and which PROXY protocol header a connection may start with.
    pub proxy_mode: proxy::Mode,
    /// Peers whose PROXY header is believed.
    pub proxy_allow: AllowList,
    /// HTTP/2: whether and from whom, and its connection settings.
    pub h2: h2::Options,
}

/// What the application side needs to know about the connection a request came on.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub peer: Peer,
    /// Index of the listener that accepted the connection.
    pub listener: usize,
    /// What a PROXY protocol header said about the client.
    pub proxy: Option<ProxyInfo>,
    /// What the TLS handshake settled; `None` on a plain connection.
    pub tls: Option<Arc<TlsInfo>>,
}

impl ConnInfo {
    /// The client's address as logs show it: the one a PROXY header gave, else the peer's
    /// (empty on a unix socket).
    pub fn remote_addr(&self) -> String {
        match (&self.proxy, self.peer.ip()) {
            (Some(proxy), _) if proxy.client.is_some() => proxy
                .client
                .map(|(ip, _)| ip.to_string())
                .unwrap_or_default(),
            (_, Some(ip)) => ip.to_string(),
            (_, None) => String::new(),
        }
    }
}

/// One request, ready for the application: its head, what is buffered of its body, and the
/// connection, which the application side holds until it answers.
pub struct Request<T> {
    pub head: RequestHead,
    pub body: BodyState,
    pub conn: ConnInfo,
    pub transport: Arc<T>,
    /// The client allows the connection to stay open after this response.
    pub keep_alive: bool,
    /// The worker is stopping, or keeps no connection alive: the response announces
    /// `Connection: close`.
    pub closing: bool,
    /// Where the response's heads go when the protocol frames them apart from the body's
    /// bytes (HTTP/2); `None`: they are bytes in the output, ahead of the body (HTTP/1).
    pub messages: Option<Arc<dyn Messages>>,
}

/// A protocol that carries response heads as messages of their own (an HTTP/2 stream's
/// HEADERS frames) rather than as bytes ahead of the body. The body still goes through the
/// transport, whose end is the end of the response.
pub trait Messages: Send + Sync {
    /// An informational response (`103 Early Hints`) ahead of the final one.
    fn informational(&self, head: &ResponseHead<'_>);
    /// The final response head; the body's bytes follow through the transport.
    fn head(&self, head: &ResponseHead<'_>);
    /// Trailer fields (`Name: value\r\n` lines) that end the response after its body.
    fn trailers(&self, lines: &[u8]);
    /// The response is cut short (the application failed or stopped before its end): once
    /// what was written is out, the client is told so rather than shown an ending.
    fn abort(&self);
    /// Resolves once the client has abandoned the response (reset the stream, or the
    /// connection is gone).
    fn abandoned(&self) -> Pin<Box<dyn Future<Output = ()> + '_>>;
}

/// The answer to a request: the connection back, and the response.
pub struct Outcome<T, P, R> {
    pub transport: Arc<T>,
    pub response: Response<P, R>,
}

/// A response waiting to be written, and what follows on the connection.
pub struct Response<P, R> {
    pub out: OutQueue,
    /// Whether the connection may carry another request after this response.
    pub keep_alive: bool,
    /// The rest of the body and the connection bytes after it; `None` if the application
    /// kept hold of the body.
    pub body: Option<BodyState>,
    pub status: u16,
    /// What reports of finished requests (the access log) keep of this one, when they are on.
    pub record: Option<Box<R>>,
    /// The response stopped at the output bound: write `out`, then [`Service::resume`] it.
    /// Boxed: rare, and large enough to make every move costly.
    pub paused: Option<Box<P>>,
}

impl<P, R> Response<P, R> {
    /// A response that ends the connection.
    pub fn ended(out: OutQueue, body: Option<BodyState>, status: u16) -> Response<P, R> {
        Response {
            out,
            keep_alive: false,
            body,
            status,
            record: None,
            paused: None,
        }
    }

    /// An error answer that ends the connection.
    pub fn refuse(err: &HttpError, body: Option<BodyState>) -> Response<P, R> {
        let mut out = OutQueue::new();
        out.push_slice(&response::error_answer(err));
        Response::ended(out, body, err.status)
    }
}

/// The seam between a connection driver and what runs the application: an application
/// interface (WSGI) as a worker class runs it (on the event loop's thread or on a pool).
#[allow(async_fn_in_trait)] // Used through generics on one thread; no `Send` bound wanted.
pub trait Service<T: Io + 'static> {
    /// A response paused at the output bound, to be resumed once its output is written.
    type Paused;
    /// What reports keep of a finished request.
    type Record;

    fn options(&self) -> &Options;

    /// Connections that have sent nothing yet, closed first to make room.
    fn shedding(&self) -> &shed::Shedding;

    /// The worker has begun to stop.
    fn is_stopping(&self) -> bool;

    /// Something observes finished requests (an access log, StatsD, metrics). When false, a
    /// finished request costs nothing more.
    fn reports(&self) -> bool;

    /// A request finished with `status` (0: it got no response).
    fn report(&self, status: u16, record: Option<Box<Self::Record>>, elapsed: Duration);

    /// The record of an error answer to `head`, refused before the application saw it.
    fn refused_record(
        &self,
        head: RequestHead,
        conn: &ConnInfo,
        err: &HttpError,
    ) -> Box<Self::Record>;

    /// Storage to read a Content-Length body of `len` bytes into whole, if the interface
    /// wants bodies that way (see [`BodyTarget`]).
    fn body_target(&self, len: usize) -> Option<Box<dyn BodyTarget>>;

    /// Runs the application for `request`. `None`: the request was lost with the worker
    /// (its threads are gone); the connection closes.
    async fn call(&self, request: Request<T>) -> Option<Outcome<T, Self::Paused, Self::Record>>;

    /// Goes on with a paused response after its output was written.
    fn resume(
        &self,
        paused: Self::Paused,
        transport: Arc<T>,
    ) -> Outcome<T, Self::Paused, Self::Record>;

    /// The client went away while the response was paused: end it.
    fn abandon(&self, paused: Self::Paused);

    /// Called when a request is done with the application, paused or not.
    fn request_done(&self);

    /// Holds a finished response, to write it together with others (see the `sync` worker).
    async fn hold_response(&self);
}

/// Why an application interface could not build what it hands the application (the environ,
/// the scope): the request itself (answered with its error), or Python.
pub enum BuildError {
    Http(HttpError),
    Py(pyo3::PyErr),
}

impl From<pyo3::PyErr> for BuildError {
    fn from(e: pyo3::PyErr) -> BuildError {
        BuildError::Py(e)
    }
}

impl BuildError {
    /// The answer: the request's own error, or a 500 naming `what` could not be built.
    pub fn into_http(self, what: &str) -> HttpError {
        match self {
            BuildError::Http(e) => e,
            BuildError::Py(e) => HttpError::internal(format!("cannot build the {what}: {e}")),
        }
    }
}

/// Gunicorn's line for a request refused as malformed, naming the peer's address (empty on a
/// unix socket).
pub fn log_invalid_request(peer: Option<SocketAddr>, err: &HttpError) {
    let ip = peer.map(|p| p.ip().to_string()).unwrap_or_default();
    log::warning(format_args!(
        "Invalid request from ip={ip}: {}",
        err.logged()
    ));
}
