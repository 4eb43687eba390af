//! One HTTP/2 connection, served with the `h2` crate: each stream becomes a request with a
//! protocol-neutral head and goes to the application through the same [`Service`] seam as an
//! HTTP/1 request.
//!
//! Generic over the transport like [`super::h1::Conn::serve`]: cleartext connections that
//! open with the connection preface (prior knowledge) come here from the HTTP/1 driver, and a
//! TLS transport whose ALPN chose `h2` comes straight here ([`serve`]).
//!
//! - The `h2` crate reads and writes through tokio's `AsyncRead`/`AsyncWrite`; the transport's
//!   readiness waits are `async` methods, so a pump copies between the transport and an
//!   in-memory duplex pipe that the crate owns.
//! - The application side holds each stream as a [`Stream`]: an [`Io`] whose reads are the
//!   request's DATA and whose writes become the response's DATA, and the [`Messages`] its
//!   heads go to. The stream's task moves both between it and the crate, under HTTP/2 flow
//!   control, while the application runs.
//! - `gthread` serves the streams of a connection at once (up to
//!   `--http2-max-concurrent-streams`); `sync` one at a time, each with its request body
//!   read whole first, since its application runs on the event loop, which alone moves
//!   the stream's bytes.
//! - `asgi` serves them at once too, each stream's application task on the event loop: a
//!   [`Stream`] is also a [`Transport`], whose readiness waits end when the stream's task has
//!   moved bytes in or out.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::BorrowedFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant as StdInstant};

use ::h2::server::SendResponse;
use ::h2::{Reason, RecvStream, SendStream};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::{timeout, Instant};

use super::body::BodyState;
use super::output::{OutQueue, Progress, Then};
use super::{log_invalid_request, ConnInfo, Messages, Outcome, Request, Service};
use crate::http::forwarded::AllowList;
use crate::http::response::{self as h1, ResponseHead};
use crate::http::{self, date, BodyDecoder, Framing, HttpError};
use crate::log;
use crate::net::transport::{read_into, take_bounded, Interest, ReadCount, SPILL_CHUNK};
use crate::net::{Io, Peer, Transport};

pub use crate::http::h2c::PREFACE;

/// How far the buffered start of a connection matches [`PREFACE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefaceMatch {
    Whole,
    /// What arrived so far begins the preface: more bytes will tell.
    Partial,
    Mismatch,
}

/// Compares the first bytes of a connection with [`PREFACE`].
pub fn preface_match(buf: &[u8]) -> PrefaceMatch {
    let n = buf.len().min(PREFACE.len());
    if buf[..n] != PREFACE[..n] {
        PrefaceMatch::Mismatch
    } else if n == PREFACE.len() {
        PrefaceMatch::Whole
    } else {
        PrefaceMatch::Partial
    }
}

/// Whether and from whom a worker speaks HTTP/2, and the settings of its connections.
#[derive(Clone, Debug)]
pub struct Options {
    /// Cleartext connections opening with the preface are HTTP/2 (`--http2-cleartext`
    /// `prior-knowledge` or `both`, with `h2` in `--http-protocols`).
    pub prior_knowledge: bool,
    /// HTTP/1.1 requests with `Upgrade: h2c` switch their connection to HTTP/2
    /// (`--http2-cleartext` `upgrade` or `both`, with `h2` in `--http-protocols`).
    pub upgrade: bool,
    /// Prior knowledge is the only way in: a trusted peer whose connection does not open
    /// with the preface is refused with 400, as Gunicorn does.
    pub preface_required: bool,
    /// Peers that may speak cleartext HTTP/2 (`--forwarded-allow-ips`; unix sockets always).
    pub trusted: AllowList,
    pub max_concurrent_streams: u32,
    pub initial_window_size: u32,
    pub max_frame_size: u32,
    /// 0: no limit of our own (the crate still refuses absurd header lists).
    pub max_header_list_size: u32,
    /// Streams of one connection run at once (on application threads, or as tasks of the
    /// event loop); else one at a time.
    pub concurrent: bool,
}

impl Default for Options {
    /// HTTP/2 off, with Gunicorn's defaults for its settings.
    fn default() -> Options {
        Options {
            prior_knowledge: false,
            upgrade: false,
            preface_required: false,
            trusted: AllowList::default(),
            max_concurrent_streams: 100,
            initial_window_size: 65535,
            max_frame_size: 16384,
            max_header_list_size: 65536,
            concurrent: false,
        }
    }
}

impl Options {
    /// Whether to look for the preface at the start of a connection from `peer`.
    pub fn sniffs(&self, peer: &Peer) -> bool {
        self.prior_knowledge && self.trusted.allows(peer.ip())
    }

    /// Whether an `Upgrade: h2c` request from `peer` switches its connection to HTTP/2.
    pub fn upgrades(&self, peer: &Peer) -> bool {
        self.upgrade && self.trusted.allows(peer.ip())
    }
}

/// Bytes copied between the transport and the crate per read.
const PUMP_CHUNK: usize = 16 * 1024;
/// Bytes the in-memory pipe between the pump and the crate holds each way.
const PUMP_BUFFER: usize = 64 * 1024;
/// Request body bytes a stream holds for its application thread before it stops taking DATA
/// from the client (whose window then fills: flow control holds it back).
const INPUT_BOUND: usize = 256 * 1024;
/// Response bytes an application thread may hand a stream before it waits for the client.
const OUTPUT_BOUND: usize = 256 * 1024;
/// Streams the client may reset before the server accepted them (rapid reset,
/// CVE-2023-44487): past this, GOAWAY with ENHANCE_YOUR_CALM.
const MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams the server may reset because of the client's errors before it gives up on the
/// connection (MadeYouReset, CVE-2025-8671).
const MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// Response bytes the crate buffers per stream beyond the client's window.
const MAX_SEND_BUFFER: usize = 400 * 1024;
/// How long, and for how many bytes at most, a closing connection reads what the client still
/// sends (see [`linger`]).
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;
/// Turns given to the connection's task before a response cut short is reset.
const RESET_YIELDS: usize = 4;
/// How often a connection checks whether the worker is stopping.
const STOP_CHECK: Duration = Duration::from_millis(500);

/// Serves one HTTP/2 connection until it closes. `read_ahead`: bytes already read from the
/// transport (the preface, when the HTTP/1 driver recognised it); `info`: the connection,
/// with what a PROXY header said.
///
/// This is the entry point for every HTTP/2 connection: a TLS transport whose ALPN chose
/// `h2` calls it with nothing read ahead.
pub async fn serve<T: Transport, S: Service<Stream> + 'static>(
    transport: T,
    read_ahead: Vec<u8>,
    info: ConnInfo,
    service: Rc<S>,
) {
    let (ours, theirs) = tokio::io::duplex(PUMP_BUFFER);
    let write_timeout = service.options().write_timeout;
    let pumped = pump(&transport, read_ahead, theirs, write_timeout);
    let served = connection(ours, info, &service);
    tokio::pin!(pumped, served);
    tokio::select! {
        () = &mut served => {
            // The crate's last frames (a GOAWAY) may still be on their way to the socket.
            if let Ok(Ok(())) = timeout(write_timeout, pumped).await {
                linger(&transport).await;
            }
        }
        _ = &mut pumped => served.await,
    }
}

/// After our FIN, reads and discards what the client still sends, for a moment: closing with
/// unread bytes would make the kernel answer with a reset, which can destroy the GOAWAY the
/// client has not read yet (a client flooding the connection always has bytes in flight).
async fn linger<T: Transport>(io: &T) {
    let deadline = Instant::now() + LINGER;
    let mut buf = Vec::with_capacity(PUMP_CHUNK);
    let mut total = 0;
    while total < LINGER_BYTES {
        buf.clear();
        match tokio::time::timeout_at(deadline, read_into(io, &mut buf, PUMP_CHUNK, None)).await {
            Ok(Ok(n)) if n > 0 => total += n,
            _ => return,
        }
    }
}

/// Copies the client's bytes into the crate's pipe and the crate's bytes to the client, until
/// the crate is done with the connection (its end of the pipe closes).
async fn pump<T: Transport>(
    io: &T,
    read_ahead: Vec<u8>,
    pipe: DuplexStream,
    write_timeout: Duration,
) -> io::Result<()> {
    let (mut from_crate, mut to_crate) = tokio::io::split(pipe);
    let inbound = async {
        to_crate.write_all(&read_ahead).await?;
        let mut buf = Vec::with_capacity(PUMP_CHUNK);
        loop {
            buf.clear();
            if read_into(io, &mut buf, PUMP_CHUNK, None).await? == 0 {
                return to_crate.shutdown().await;
            }
            to_crate.write_all(&buf).await?;
        }
    };
    let outbound = async {
        let mut buf = vec![0u8; PUMP_CHUNK];
        loop {
            let n = from_crate.read(&mut buf).await?;
            if n == 0 {
                io.shutdown_write();
                return Ok(());
            }
            let mut sent = 0;
            while sent < n {
                let write =
                    io.when_writable(|io| io.try_write(&[IoSlice::new(&buf[sent..n])], false));
                sent += timeout(write_timeout, write)
                    .await
                    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
            }
        }
    };
    tokio::pin!(inbound, outbound);
    tokio::select! {
        r = &mut outbound => r,
        r = &mut inbound => match r {
            Ok(()) => outbound.await,
            Err(e) => Err(e),
        },
    }
}

/// Runs the HTTP/2 connection over the crate's end of the pipe: settings, then a task per
/// stream, until the client or the server ends it.
async fn connection<S: Service<Stream> + 'static>(
    pipe: DuplexStream,
    info: ConnInfo,
    service: &Rc<S>,
) {
    let options = service.options();
    let settings = &options.h2;
    let mut builder = ::h2::server::Builder::new();
    builder
        .max_concurrent_streams(settings.max_concurrent_streams)
        .initial_window_size(settings.initial_window_size)
        .max_frame_size(settings.max_frame_size)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .max_send_buffer_size(MAX_SEND_BUFFER);
    if settings.max_header_list_size > 0 {
        builder.max_header_list_size(settings.max_header_list_size);
    }
    let mut conn = match timeout(options.head_timeout, builder.handshake::<_, Bytes>(pipe)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            log::debug(format_args!("HTTP/2 handshake failed: {e}"));
            return;
        }
        Err(_) => return,
    };
    let permits = if settings.concurrent {
        settings.max_concurrent_streams.max(1) as usize
    } else {
        1
    };
    let turns = Rc::new(Semaphore::new(permits));
    let active = Rc::new(Cell::new(0usize));
    let finished = Rc::new(Notify::new());
    let mut idle_since = Instant::now();
    // When GOAWAY was sent, if it was.
    let mut closing: Option<Instant> = None;
    let mut checks = tokio::time::interval(STOP_CHECK);
    loop {
        let idle = active.get() == 0;
        tokio::select! {
            accepted = conn.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    active.set(active.get() + 1);
                    let (info, service) = (info.clone(), Rc::clone(service));
                    let (turns, active, finished) =
                        (Rc::clone(&turns), Rc::clone(&active), Rc::clone(&finished));
                    tokio::task::spawn_local(async move {
                        if let Ok(_turn) = turns.acquire().await {
                            serve_stream(request, respond, &info, &*service).await;
                        }
                        active.set(active.get() - 1);
                        finished.notify_one();
                    });
                }
                Some(Err(e)) => {
                    // The crate has answered with GOAWAY (a protocol error, a flood).
                    log::debug(format_args!("HTTP/2 connection error: {e}"));
                    break;
                }
                None => break,
            },
            () = finished.notified() => {
                if active.get() == 0 {
                    idle_since = Instant::now();
                }
            }
            _ = checks.tick() => {
                let idle_over = idle && idle_since.elapsed() >= options.keepalive;
                match closing {
                    None if service.is_stopping() || idle_over => {
                        // GOAWAY; streams under way finish, then `accept` ends.
                        conn.graceful_shutdown();
                        closing = Some(Instant::now());
                    }
                    // The crate waits for the client to answer a PING after the GOAWAY;
                    // a client that never does keeps the connection no longer.
                    Some(since) if idle && since.elapsed() >= options.keepalive.max(STOP_CHECK) => {
                        break;
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Serves one stream: its head and body become a [`Request`], the application answers
/// through the [`Stream`], and the response goes out under flow control.
async fn serve_stream<S: Service<Stream>>(
    request: ::http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    info: &ConnInfo,
    service: &S,
) {
    let options = service.options();
    let started = service.reports().then(Instant::now);
    let (parts, mut recv) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or(&b""[..], |p| p.as_str().as_bytes());
    let authority = parts.uri.authority().map(|a| a.as_str().as_bytes());
    let fields = parts
        .headers
        .iter()
        .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()));
    let method = parts.method.as_str().as_bytes();
    let (head, framing) =
        match http::head::from_h2(method, path, authority, fields, &options.limits) {
            Ok(parsed) => parsed,
            Err(err) => {
                log_invalid_request(info.peer.socket_addr(), &err);
                answer_error(&mut respond, err.status, err.reason, &err.message);
                return;
            }
        };
    // `sync` cannot stream a body: its application runs on the event loop, which alone
    // moves the stream's DATA.
    let buffer_limit = if options.h2.concurrent {
        options.body_buffer
    } else {
        usize::MAX
    };
    let mut buffered = Vec::new();
    let mut ended = recv.is_end_stream();
    let expects_continue = parts
        .headers
        .get(::http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue && !ended {
        // The client waits for it before sending the body read next.
        let mut interim = ::http::Response::new(());
        *interim.status_mut() = ::http::StatusCode::CONTINUE;
        let _ = respond.send_informational(interim);
    }
    while !ended && buffered.len() < buffer_limit {
        match timeout(options.body_timeout, recv.data()).await {
            Ok(Some(Ok(chunk))) => {
                let _ = recv.flow_control().release_capacity(chunk.len());
                buffered.extend_from_slice(&chunk);
                ended = recv.is_end_stream();
            }
            Ok(None) => ended = true,
            // Reset by the client, or the connection failed.
            Ok(Some(Err(_))) => return,
            Err(_) => {
                let err = HttpError::body_timeout();
                answer_error(&mut respond, err.status, err.reason, &err.message);
                return;
            }
        }
    }
    let decoder = if ended {
        BodyDecoder::Done
    } else {
        match framing {
            Framing::Length(n) => {
                BodyDecoder::new(Framing::Length(n.saturating_sub(buffered.len() as u64)))
            }
            _ => BodyDecoder::UntilEnd,
        }
    };
    let mut body = BodyState::new(decoder, Vec::new(), options.body_timeout);
    body.body = buffered;
    let output_bound = if options.h2.concurrent {
        OUTPUT_BOUND
    } else {
        // The event loop empties it once the application has returned or paused.
        usize::MAX
    };
    let stream = Arc::new(Stream::new(output_bound, ended));
    let mut wire = Wire {
        respond,
        send: None,
        recv: (!ended).then_some(recv),
        ended: false,
    };
    let request = Request {
        head,
        body,
        conn: info.clone(),
        transport: Arc::clone(&stream),
        keep_alive: true,
        closing: service.is_stopping(),
        messages: Some(Arc::clone(&stream) as Arc<dyn Messages>),
    };
    let call = service.call(request);
    tokio::pin!(call);
    let mut gone = false;
    let outcome = loop {
        tokio::select! {
            biased;
            outcome = &mut call => break outcome,
            moved = wire.exchange(&stream), if !gone => {
                if moved.is_err() {
                    stream.break_off();
                    gone = true;
                }
            }
        }
    };
    let Some(Outcome {
        mut transport,
        mut response,
    }) = outcome
    else {
        service.request_done();
        if service.reports() {
            service.report(0, None, since(started));
        }
        wire.respond_reset();
        return;
    };
    // A response paused at the output bound (`sync`): let the client take what is queued,
    // then produce more.
    while let Some(paused) = response.paused.take() {
        let delivered = if gone {
            Err(())
        } else {
            wire.deliver(&stream, &mut response.out, options.write_timeout, true)
                .await
        };
        if delivered.is_err() {
            service.abandon(*paused);
            service.request_done();
            if service.reports() {
                service.report(0, None, since(started));
            }
            wire.respond_reset();
            return;
        }
        let resumed = service.resume(*paused, transport);
        transport = resumed.transport;
        response = resumed.response;
    }
    service.request_done();
    if !stream.head_sent() && stream.lock().aborted {
        // Started, never sent: no response to show.
        wire.respond_reset();
    } else if !stream.head_sent() {
        // Refused before the application answered: an error answer, queued as HTTP/1
        // bytes, said again in HTTP/2.
        let reason = ::http::StatusCode::from_u16(response.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        answer_error(&mut wire.respond, response.status, reason, "");
    } else if !gone {
        let stall = options.write_timeout;
        let aborted = stream.lock().aborted;
        if wire
            .deliver(&stream, &mut response.out, stall, aborted)
            .await
            .is_ok()
        {
            if aborted {
                // A reset drops the stream's frames still queued in the crate: let the
                // connection's task take what was written first (best effort).
                for _ in 0..RESET_YIELDS {
                    tokio::task::yield_now().await;
                }
            }
            // Only now: END_STREAM (or the trailers, or the reset of a response cut short)
            // goes with the last of the output.
            stream.end_output();
            let _ = wire.finish(&stream, stall).await;
        }
    }
    if service.reports() {
        service.report(response.status, response.record, since(started));
    }
    drop(transport);
}

/// Time since `started`, taken when something reports finished requests.
fn since(started: Option<Instant>) -> Duration {
    started.map_or(Duration::ZERO, |t| t.elapsed())
}

/// Answers a stream with an error page of `status`, ending it.
fn answer_error(respond: &mut SendResponse<Bytes>, status: u16, reason: &str, message: &str) {
    let page = h1::error_page(reason, message);
    let mut response = ::http::Response::new(());
    *response.status_mut() =
        ::http::StatusCode::from_u16(status).unwrap_or(::http::StatusCode::BAD_REQUEST);
    let headers = response.headers_mut();
    headers.insert(
        ::http::header::CONTENT_TYPE,
        ::http::HeaderValue::from_static("text/html"),
    );
    headers.insert(::http::header::CONTENT_LENGTH, page.len().into());
    if let Ok(mut send) = respond.send_response(response, false) {
        let _ = send.send_data(Bytes::from(page), true);
    }
}

/// The crate's side of a stream: where its heads, DATA and resets go.
struct Wire {
    respond: SendResponse<Bytes>,
    /// The response body's sender, once the head is sent.
    send: Option<SendStream<Bytes>>,
    /// The request body, until it ends.
    recv: Option<RecvStream>,
    /// The response's END_STREAM is sent.
    ended: bool,
}

/// What one [`Wire::push`] did.
enum Pushed {
    /// Sent something: the caller looks again before waiting.
    Moved,
    Nothing,
    /// Response bytes wait for the client's window.
    WaitsCapacity,
}

/// What woke a wait on the response side.
enum SendEvent {
    Capacity,
    Gone,
}

impl Wire {
    /// Moves what is ready between `stream` and the client; if nothing was, waits until
    /// something can move (or the client reset the stream: `Err`).
    async fn exchange(&mut self, stream: &Stream) -> Result<(), ()> {
        let waits_capacity = match self.push(stream)? {
            Pushed::Moved => return Ok(()),
            Pushed::Nothing => false,
            Pushed::WaitsCapacity => true,
        };
        if self.ended {
            return Ok(());
        }
        let wants_input = self.recv.is_some() && stream.wants_input();
        let Wire {
            respond,
            send,
            recv,
            ..
        } = self;
        let sent = poll_fn(|cx| match send.as_mut() {
            Some(send) => {
                if waits_capacity {
                    match send.poll_capacity(cx) {
                        Poll::Ready(Some(Ok(_))) => return Poll::Ready(SendEvent::Capacity),
                        Poll::Ready(_) => return Poll::Ready(SendEvent::Gone),
                        Poll::Pending => {}
                    }
                }
                send.poll_reset(cx).map(|_| SendEvent::Gone)
            }
            None => respond.poll_reset(cx).map(|_| SendEvent::Gone),
        });
        let received = async {
            match recv.as_mut() {
                Some(recv) if wants_input => recv.data().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stream.wake.notified() => Ok(()),
            event = sent => match event {
                SendEvent::Capacity => Ok(()),
                SendEvent::Gone => Err(()),
            },
            data = received => {
                match data {
                    Some(Ok(chunk)) => {
                        let end = recv.as_ref().map_or(true, RecvStream::is_end_stream);
                        if let Some(recv) = recv.as_mut() {
                            let _ = recv.flow_control().release_capacity(chunk.len());
                        }
                        stream.push_input(&chunk, end);
                        if end {
                            *recv = None;
                        }
                    }
                    None => {
                        stream.push_input(&[], true);
                        *recv = None;
                    }
                    Some(Err(_)) => return Err(()),
                }
                Ok(())
            }
        }
    }

    /// Sends what the stream holds, as far as the client's window allows.
    fn push(&mut self, stream: &Stream) -> Result<Pushed, ()> {
        let mut shared = stream.lock();
        for (code, fields) in shared.informational.drain(..) {
            let mut response = ::http::Response::new(());
            *response.status_mut() =
                ::http::StatusCode::from_u16(code).unwrap_or(::http::StatusCode::EARLY_HINTS);
            *response.headers_mut() = fields;
            // A client that refuses it still gets the response.
            let _ = self.respond.send_informational(response);
        }
        if self.send.is_none() {
            let Some((code, headers)) = shared.head.take() else {
                return Ok(Pushed::Nothing);
            };
            let mut response = ::http::Response::new(());
            *response.status_mut() = ::http::StatusCode::from_u16(code)
                .unwrap_or(::http::StatusCode::INTERNAL_SERVER_ERROR);
            *response.headers_mut() = headers;
            let send = self.respond.send_response(response, false).map_err(|e| {
                log::debug(format_args!("HTTP/2 response head refused: {e}"));
            })?;
            self.send = Some(send);
        }
        let Some(send) = self.send.as_mut() else {
            return Ok(Pushed::Nothing);
        };
        if self.ended {
            return Ok(Pushed::Nothing);
        }
        let len = shared.out.len();
        if len > 0 {
            send.reserve_capacity(len);
            let room = send.capacity().min(len);
            if room == 0 {
                return Ok(Pushed::WaitsCapacity);
            }
            let chunk = shared.out.split_to(room).freeze();
            // Trailers, when there are, end the stream instead (or a reset).
            let last = shared.out_end
                && shared.out.is_empty()
                && shared.trailers.is_none()
                && !shared.aborted;
            send.send_data(chunk, last).map_err(|_| ())?;
            self.ended = last;
            drop(shared);
            stream.room_made();
            return Ok(Pushed::Moved);
        }
        if shared.out_end {
            if shared.aborted {
                send.send_reset(Reason::INTERNAL_ERROR);
                self.ended = true;
                return Ok(Pushed::Moved);
            }
            match shared.trailers.take() {
                Some(trailers) => send.send_trailers(trailers).map_err(|_| ())?,
                None => send.send_data(Bytes::new(), true).map_err(|_| ())?,
            }
            self.ended = true;
            return Ok(Pushed::Moved);
        }
        Ok(Pushed::Nothing)
    }

    /// Writes `out` into the stream, moving it to the client meanwhile; with `drain`, until
    /// the client has taken it all. Each stall may last `stall`.
    async fn deliver(
        &mut self,
        stream: &Stream,
        out: &mut OutQueue,
        stall: Duration,
        drain: bool,
    ) -> Result<(), ()> {
        loop {
            let written = out.write_to(stream, Then::Continue).map_err(|_| ())?;
            if matches!(written, Progress::Done) && (!drain || stream.unsent() == 0) {
                return Ok(());
            }
            match timeout(stall, self.exchange(stream)).await {
                Ok(Ok(())) => {}
                _ => return Err(()),
            }
        }
    }

    /// Sends the rest and the stream's end.
    async fn finish(&mut self, stream: &Stream, stall: Duration) -> Result<(), ()> {
        // The request body is of no more use: the client may stop sending it.
        self.recv = None;
        while !self.ended {
            match timeout(stall, self.exchange(stream)).await {
                Ok(Ok(())) => {}
                _ => {
                    self.respond_reset();
                    return Err(());
                }
            }
        }
        Ok(())
    }

    fn respond_reset(&mut self) {
        match self.send.as_mut() {
            Some(send) => send.send_reset(Reason::INTERNAL_ERROR),
            None => self.respond.send_reset(Reason::INTERNAL_ERROR),
        }
    }
}

/// One stream as the application side holds it: the request body arrives through its reads,
/// the response body leaves through its writes, and its heads through [`Messages`]. Shared
/// between the stream's task on the event loop and the application's thread.
pub struct Stream {
    shared: Mutex<Shared>,
    /// Wakes an application thread waiting for body bytes or for room.
    ready: Condvar,
    /// Wakes the stream's task: something is there to send, or room to receive.
    wake: Notify,
    /// Wakes a task of the event loop waiting on the stream as a [`Transport`]: body bytes,
    /// room for output, or the client gone.
    changed: Notify,
    /// Unsent response bytes past which writes wait.
    output_bound: usize,
}

#[derive(Default)]
struct Shared {
    /// Informational responses (status, fields) to send ahead of the final one.
    informational: Vec<(u16, ::http::HeaderMap)>,
    /// Fields of a trailing HEADERS frame that ends the stream after the body.
    trailers: Option<::http::HeaderMap>,
    /// The response is cut short: RST_STREAM instead of its end.
    aborted: bool,
    head: Option<(u16, ::http::HeaderMap)>,
    head_given: bool,
    out: BytesMut,
    /// The response is complete: END_STREAM follows the last of `out`.
    out_end: bool,
    input: BytesMut,
    input_end: bool,
    /// The client reset the stream, or the connection failed.
    broken: bool,
}

impl Stream {
    fn new(output_bound: usize, input_end: bool) -> Stream {
        Stream {
            shared: Mutex::new(Shared {
                input_end,
                ..Shared::default()
            }),
            ready: Condvar::new(),
            wake: Notify::new(),
            changed: Notify::new(),
            output_bound,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic elsewhere while holding it leaves plain buffers, still usable.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn head_sent(&self) -> bool {
        self.lock().head_given
    }

    fn unsent(&self) -> usize {
        self.lock().out.len()
    }

    fn wants_input(&self) -> bool {
        let shared = self.lock();
        !shared.input_end && shared.input.len() < INPUT_BOUND
    }

    fn push_input(&self, data: &[u8], end: bool) {
        let mut shared = self.lock();
        shared.input.extend_from_slice(data);
        shared.input_end |= end;
        drop(shared);
        self.ready.notify_all();
        self.changed.notify_waiters();
    }

    /// Output went to the client: writers waiting for room may go on.
    fn room_made(&self) {
        self.ready.notify_all();
        self.changed.notify_waiters();
    }

    fn end_output(&self) {
        self.lock().out_end = true;
        self.wake.notify_one();
    }

    fn break_off(&self) {
        self.lock().broken = true;
        self.ready.notify_all();
        self.changed.notify_waiters();
    }

    fn is_broken(&self) -> bool {
        self.lock().broken
    }

    fn gone() -> io::Error {
        io::Error::new(io::ErrorKind::BrokenPipe, "the client reset the stream")
    }
}

impl Io for Stream {
    fn try_read(
        &self,
        first: &mut [MaybeUninit<u8>],
        spill: Option<&mut Vec<u8>>,
    ) -> io::Result<Option<ReadCount>> {
        let mut shared = self.lock();
        if shared.input.is_empty() {
            if shared.broken {
                return Err(Stream::gone());
            }
            if !shared.input_end {
                return Ok(None);
            }
        }
        let n = first.len().min(shared.input.len());
        let taken = shared.input.split_to(n);
        for (dst, &src) in first.iter_mut().zip(taken.iter()) {
            dst.write(src);
        }
        let mut total = n;
        if let Some(spill) = spill {
            let more = shared.input.len().min(SPILL_CHUNK);
            spill.extend_from_slice(&shared.input.split_to(more));
            total += more;
        }
        let drained = shared.input.is_empty();
        drop(shared);
        self.wake.notify_one();
        Ok(Some(ReadCount {
            first: n,
            total,
            drained,
        }))
    }

    fn try_write(&self, bufs: &[IoSlice<'_>], _more: bool) -> io::Result<Option<usize>> {
        let mut shared = self.lock();
        if shared.broken {
            return Err(Stream::gone());
        }
        let room = self.output_bound.saturating_sub(shared.out.len());
        if room == 0 {
            return Ok(None);
        }
        let n = take_bounded(bufs, room, |b| shared.out.extend_from_slice(b));
        drop(shared);
        self.wake.notify_one();
        Ok(Some(n))
    }

    /// Reads the file into the stream: HTTP/2 frames every byte, so nothing goes from the
    /// file to the socket untouched.
    fn try_send_file(
        &self,
        file: BorrowedFd<'_>,
        offset: &mut u64,
        count: u64,
    ) -> io::Result<Option<usize>> {
        let room = {
            let shared = self.lock();
            if shared.broken {
                return Err(Stream::gone());
            }
            self.output_bound.saturating_sub(shared.out.len())
        };
        if room == 0 {
            return Ok(None);
        }
        let want = (count.min(PUMP_CHUNK as u64 * 4) as usize).min(room);
        let mut buf = vec![0u8; want];
        let at = i64::try_from(*offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset too large"))?;
        let n = nix::sys::uio::pread(file, &mut buf, at).map_err(io::Error::from)?;
        *offset += n as u64;
        self.lock().out.extend_from_slice(&buf[..n]);
        self.wake.notify_one();
        Ok(Some(n))
    }

    /// The stream's task ends the stream once the response is complete.
    fn shutdown_write(&self) {}

    fn unread_len(&self) -> usize {
        0
    }

    fn wait_blocking(&self, interest: Interest, deadline: StdInstant) -> io::Result<()> {
        let mut shared = self.lock();
        loop {
            let ready = shared.broken
                || match interest {
                    Interest::Read => !shared.input.is_empty() || shared.input_end,
                    Interest::Write => shared.out.len() < self.output_bound,
                };
            if ready {
                return Ok(());
            }
            let now = StdInstant::now();
            if now >= deadline {
                return Err(io::ErrorKind::TimedOut.into());
            }
            shared = self
                .ready
                .wait_timeout(shared, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }
}

/// The event loop's waits on a stream, for an application on the event loop (ASGI): the
/// stream's task, which runs beside it, moves the bytes and wakes them.
impl Transport for Stream {
    async fn when_readable<R>(
        &self,
        mut attempt: impl FnMut(&Self) -> io::Result<Option<(R, ReadCount)>>,
    ) -> io::Result<R> {
        loop {
            // Made before the attempt: a change between the two still wakes it.
            let changed = self.changed.notified();
            if let Some((value, _)) = attempt(self)? {
                return Ok(value);
            }
            changed.await;
        }
    }

    async fn when_writable<R>(
        &self,
        mut attempt: impl FnMut(&Self) -> io::Result<Option<R>>,
    ) -> io::Result<R> {
        loop {
            let changed = self.changed.notified();
            if let Some(value) = attempt(self)? {
                return Ok(value);
            }
            changed.await;
        }
    }
}

impl Messages for Stream {
    fn informational(&self, head: &ResponseHead<'_>) {
        let headers = header_map(head, false);
        self.lock().informational.push((head.code, headers));
        self.wake.notify_one();
    }

    fn trailers(&self, lines: &[u8]) {
        let head = ResponseHead {
            code: 0,
            status: "",
            lines,
        };
        self.lock().trailers = Some(header_map(&head, false));
    }

    fn abort(&self) {
        self.lock().aborted = true;
        self.wake.notify_one();
    }

    fn abandoned(&self) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        Box::pin(async move {
            loop {
                let changed = self.changed.notified();
                if self.is_broken() {
                    return;
                }
                changed.await;
            }
        })
    }

    fn head(&self, head: &ResponseHead<'_>) {
        let headers = header_map(head, true);
        {
            let mut shared = self.lock();
            shared.head = Some((head.code, headers));
            shared.head_given = true;
        }
        self.wake.notify_one();
    }
}

/// The fields of `head` as HTTP/2 sends them: lower-case names, and with the server's own
/// `server` and `date` on a final response. `start_response` has refused fields that cannot
/// go on the wire and left out the hop-by-hop ones HTTP/2 forbids.
fn header_map(head: &ResponseHead<'_>, fin: bool) -> ::http::HeaderMap {
    let mut map = ::http::HeaderMap::new();
    if fin {
        map.insert(
            ::http::header::SERVER,
            ::http::HeaderValue::from_static("ferrocorn"),
        );
        if let Ok(value) = ::http::HeaderValue::from_bytes(&date::now()) {
            map.insert(::http::header::DATE, value);
        }
    }
    for (name, value) in head.fields() {
        let (Ok(name), Ok(value)) = (
            ::http::HeaderName::from_bytes(name),
            ::http::HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        if name.as_str() == "proxy-connection" {
            continue;
        }
        map.append(name, value);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preface_is_told_from_http1_as_soon_as_a_byte_differs() {
        assert_eq!(preface_match(PREFACE), PrefaceMatch::Whole);
        assert_eq!(
            preface_match(&[PREFACE, b"\0\0"].concat()),
            PrefaceMatch::Whole
        );
        assert_eq!(preface_match(b"PRI * HT"), PrefaceMatch::Partial);
        assert_eq!(preface_match(b"PRI * HTTP/1.1\r\n"), PrefaceMatch::Mismatch);
        assert_eq!(preface_match(b"GET / HTTP/1.1\r\n"), PrefaceMatch::Mismatch);
    }

    #[test]
    fn a_stream_reads_its_body_until_its_end_and_bounds_its_output() {
        let stream = Stream::new(4, false);
        let mut buf = Vec::new();
        let deadline = StdInstant::now() + Duration::from_secs(5);
        stream.push_input(b"abc", false);
        assert_eq!(stream.read_blocking(&mut buf, 2, deadline).ok(), Some(2));
        stream.push_input(b"d", true);
        assert_eq!(stream.read_blocking(&mut buf, 8, deadline).ok(), Some(2));
        assert_eq!(stream.read_blocking(&mut buf, 8, deadline).ok(), Some(0));
        assert_eq!(buf, b"abcd");
        let written = stream.try_write(&[IoSlice::new(b"hello")], false);
        assert_eq!(written.ok(), Some(Some(4)));
        assert_eq!(
            stream.try_write(&[IoSlice::new(b"o")], false).ok(),
            Some(None)
        );
        stream.break_off();
        assert!(stream.try_write(&[IoSlice::new(b"o")], false).is_err());
    }
}
