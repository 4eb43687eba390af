//! One HTTP/1 connection: read a request head, buffer its body up to a bound, hand the request
//! to the application through the [`Service`], write the response, and go round again while
//! keep-alive allows. All waiting on the client happens here, on the event loop, never in an
//! application thread.
//!
//! Generic over the transport: the same state machine runs on a socket, and in the tests at
//! the foot of this file on an in-memory transport with a paused clock.

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep_until, timeout_at, Instant, Sleep};

use super::body::{BodyState, BodyTarget};
use super::buffers::{self, READ_CHUNK};
use super::output::{write_all, OutQueue, Then};
use super::{h2, h2c, log_invalid_request, ConnInfo, Outcome, Request, Service};
use crate::http::{self, proxy, BodyDecoder, HttpError};
use crate::log;
use crate::net::tls::{Refused, TlsAcceptor, TlsStream};
use crate::net::transport::{read_appending, read_into};
use crate::net::{Peer, Socket, Transport};

/// Time since `started`, taken when something reports finished requests.
fn since(started: Option<Instant>) -> Duration {
    started.map_or(Duration::ZERO, |t| t.elapsed())
}

/// Unread request body the server will discard to keep a connection alive.
const DRAIN_LIMIT: u64 = 4 * 1024 * 1024;
/// How long a closing connection reads what the client still sends, so that the client
/// receives our answer instead of a reset.
const LINGER: Duration = Duration::from_secs(1);

pub struct Conn<S> {
    info: ConnInfo,
    service: Rc<S>,
    buf: Vec<u8>,
    /// A PROXY protocol header may still arrive (only before the first request).
    awaiting_proxy: bool,
    /// The connection may open with the HTTP/2 preface (cleartext prior knowledge).
    sniff_h2: bool,
    /// An `Upgrade: h2c` request may switch the connection to HTTP/2.
    upgrade_h2c: bool,
    /// It did, or it opened with the preface: the connection goes on as HTTP/2.
    is_h2: bool,
}

/// A connection that opened with the HTTP/2 preface or was upgraded to HTTP/2, for
/// [`super::h2::serve`].
pub struct Handoff<T> {
    pub transport: T,
    /// What the HTTP/2 driver reads first: what was read of the connection already, the
    /// preface included (after an upgrade, the bytes that stand for the upgraded request).
    pub read_ahead: Vec<u8>,
    pub info: ConnInfo,
}

enum Next {
    Continue,
    Close,
}

/// What a connection waits on for its request heads, kept for its whole life. A timer made
/// afresh for every wait would cost a trip through the timer wheel on every request.
struct HeadWaits {
    /// Made at the first wait; a connection whose requests arrive with it never needs one.
    timer: Option<Pin<Box<Sleep>>>,
    /// When the first head is due, if a wait for the connection's first bytes fixed it.
    first_deadline: Option<Instant>,
}

impl HeadWaits {
    fn new() -> Self {
        HeadWaits {
            timer: None,
            first_deadline: None,
        }
    }
}

/// Resolves at `deadline`, on the connection's one timer. The timer is moved only when it
/// would fire too late: one that fires early (or fired already) is re-armed below, once per
/// idle period, instead of on every wait.
async fn timer_until(timer: &mut Option<Pin<Box<Sleep>>>, deadline: Instant) {
    let sleep = timer.get_or_insert_with(|| Box::pin(sleep_until(deadline)));
    if sleep.deadline() > deadline {
        sleep.as_mut().reset(deadline);
    }
    loop {
        sleep.as_mut().await;
        if Instant::now() >= deadline {
            return;
        }
        sleep.as_mut().reset(deadline);
    }
}

/// How a wait for more of a head ended.
enum HeadWait {
    Read(io::Result<usize>),
    TimedOut,
}

impl<S> Conn<S> {
    pub fn new(peer: Peer, listener: usize, service: Rc<S>) -> Conn<S> {
        Conn {
            info: ConnInfo {
                peer,
                listener,
                proxy: None,
                tls: None,
            },
            service,
            buf: Vec::new(),
            awaiting_proxy: false,
            sniff_h2: false,
            upgrade_h2c: false,
            is_h2: false,
        }
    }

    /// Serves the connection until it closes, or until it turns out to be HTTP/2: then the
    /// connection is handed back for the HTTP/2 driver.
    pub async fn serve<T: Transport>(mut self, transport: T) -> Option<Handoff<T>>
    where
        S: Service<T>,
    {
        let service = Rc::clone(&self.service);
        self.awaiting_proxy = service.options().proxy_mode != proxy::Mode::Off;
        self.sniff_h2 = service.options().h2.sniffs(&self.info.peer);
        // h2c is HTTP/2 without TLS; over TLS, HTTP/2 is chosen by ALPN (RFC 9113 section 3.2).
        self.upgrade_h2c =
            self.info.tls.is_none() && service.options().h2.upgrades(&self.info.peer);
        let mut io = Arc::new(transport);
        let mut waits = HeadWaits::new();
        // The request usually arrives with the connection: read it now rather than wait for
        // the event loop to report the new socket readable.
        buffers::take(&mut self.buf);
        match read_appending(&*io, &mut self.buf, READ_CHUNK, None) {
            Ok(Some(read)) if read.total == 0 => return None,
            Err(_) => return None,
            Ok(Some(_)) => {}
            Ok(None) => {
                buffers::give_back(&mut self.buf);
                if !self.first_bytes(&*io, &*service, &mut waits).await {
                    return None;
                }
            }
        }
        let mut first = true;
        let (end, back) = loop {
            // The transport goes to the application with the request and comes back with the
            // response; without it the connection is over.
            let (next, back) = self.serve_one(io, first, &*service, &mut waits).await;
            match (next, back) {
                (Ok(Next::Continue), Some(transport)) => {
                    io = transport;
                    first = false;
                }
                (end, back) => break (end, back),
            }
        };
        if let Err(e) = end {
            log_socket_error(&e);
        }
        if self.is_h2 {
            let transport = Arc::try_unwrap(back?).ok()?;
            return Some(Handoff {
                transport,
                read_ahead: std::mem::take(&mut self.buf),
                info: self.info,
            });
        }
        None
    }

    /// Serves a connection accepted on a TLS listener: the handshake first, within
    /// `--header-timeout`, then HTTP/1 over the session. A client speaking plain HTTP gets a
    /// plain-text 400 that says so, then the close.
    pub async fn serve_tls(mut self, sock: Socket, tls: &TlsAcceptor) -> Option<Handoff<TlsStream>>
    where
        S: Service<Socket> + Service<TlsStream>,
    {
        let service = Rc::clone(&self.service);
        let timeout = <S as Service<Socket>>::options(&*service).head_timeout;
        match timeout_at(Instant::now() + timeout, tls.handshake(sock)).await {
            Ok(Ok(stream)) => {
                self.info.tls = Some(Arc::clone(stream.info()));
                if stream.info().alpn.as_deref() == Some(b"h2") {
                    return Some(Handoff {
                        transport: stream,
                        read_ahead: Vec::new(),
                        info: self.info,
                    });
                }
                self.serve(stream).await
            }
            Ok(Err(Refused::PlainHttp(sock))) => {
                log::debug(format_args!("Plain HTTP request on a TLS listener"));
                let err = HttpError::plain_http_to_tls();
                self.refuse(&sock, &*service, &err).await;
                None
            }
            Ok(Err(Refused::Failed(why))) => {
                log::debug(format_args!("TLS handshake failed: {why}"));
                None
            }
            Err(_) => {
                log::debug(format_args!("TLS handshake not completed in time"));
                None
            }
        }
    }

    /// Waits for a new connection's first bytes, listed meanwhile among the connections the
    /// worker may close to make room at `--worker-connections`. False: the connection is to
    /// close (closed for room, by the client, or silent for `--header-timeout`).
    async fn first_bytes<T: Transport>(
        &mut self,
        io: &T,
        service: &S,
        waits: &mut HeadWaits,
    ) -> bool
    where
        S: Service<T>,
    {
        let deadline = Instant::now() + service.options().head_timeout;
        waits.first_deadline = Some(deadline);
        let silent = service.shedding().silent();
        tokio::select! {
            biased;
            r = read_pooled(io, &mut self.buf) => matches!(r, Ok(n) if n > 0),
            _ = silent.evicted() => false,
            _ = timer_until(&mut waits.timer, deadline) => false,
        }
    }

    /// Serves one request. Returns what comes next, and the transport unless it was lost with
    /// the application.
    async fn serve_one<T: Transport>(
        &mut self,
        io: Arc<T>,
        first: bool,
        service: &S,
        waits: &mut HeadWaits,
    ) -> (io::Result<Next>, Option<Arc<T>>)
    where
        S: Service<T>,
    {
        let (head, framing) = match self.read_head(&*io, first, service, waits).await {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return (Ok(Next::Close), Some(io)),
            Err(e) => return (Err(e), Some(io)),
        };
        if framing.upgrade == Some(http::Upgrade::H2c) && self.upgrade_h2c {
            if let Some(offer) = http::h2c::offer(&head, &framing).transpose() {
                return Box::pin(self.upgrade_h2c(io, head, offer, service)).await;
            }
        }
        // Apart: the task of a connection waiting for its next head then keeps only that wait,
        // and a request's much larger state lives only as long as the request.
        buffers::Lent::new(|| self.answer(io, head, framing, service)).await
    }

    /// Answers an `Upgrade: h2c` request: a malformed `HTTP2-Settings` with 400, else with the
    /// `101`, after which the connection goes to the HTTP/2 driver, `head` as its stream 1.
    async fn upgrade_h2c<T: Transport>(
        &mut self,
        io: Arc<T>,
        head: http::RequestHead,
        offer: Result<Vec<u8>, HttpError>,
        service: &S,
    ) -> (io::Result<Next>, Option<Arc<T>>)
    where
        S: Service<T>,
    {
        let settings = match offer {
            Ok(settings) => settings,
            Err(err) => {
                log_invalid_request(self.info.peer.socket_addr(), &err);
                if service.reports() {
                    let record = service.refused_record(head, &self.info, &err);
                    service.report(err.status, Some(record), Duration::ZERO);
                }
                self.refuse(&*io, service, &err).await;
                return (Ok(Next::Close), Some(io));
            }
        };
        let options = service.options();
        let (head_timeout, write_timeout) = (options.head_timeout, options.write_timeout);
        let switched = h2c::switch(
            &*io,
            &mut self.buf,
            &head,
            &settings,
            head_timeout,
            write_timeout,
        );
        match switched.await {
            Ok(Some(start)) => {
                self.buf = start;
                self.is_h2 = true;
                (Ok(Next::Close), Some(io))
            }
            Ok(None) => (Ok(Next::Close), Some(io)),
            Err(e) => (Err(e), Some(io)),
        }
    }

    /// Reads the body of `head`, has the application answer and writes the response.
    async fn answer<T: Transport>(
        &mut self,
        io: Arc<T>,
        head: http::RequestHead,
        framing: http::H1Framing,
        service: &S,
    ) -> (io::Result<Next>, Option<Arc<T>>)
    where
        S: Service<T>,
    {
        // Only what reports finished requests needs the time a request took.
        let started = service.reports().then(Instant::now);
        let body = match self.read_body(&*io, &framing, service).await {
            Ok(Ok(body)) => body,
            Ok(Err(err)) => {
                // A malformed body read ahead of the application: logged as Gunicorn logs the
                // error the application's read would have raised (a timeout is not the
                // client's malformed request).
                if err.status != 408 {
                    log_invalid_request(self.info.peer.socket_addr(), &err);
                    if service.reports() {
                        let record = service.refused_record(head, &self.info, &err);
                        service.report(err.status, Some(record), since(started));
                    }
                }
                Box::pin(self.refuse(&*io, service, &err)).await;
                return (Ok(Next::Close), Some(io));
            }
            Err(e) => return (Err(e), Some(io)),
        };
        let request = Request {
            head,
            body,
            conn: self.info.clone(),
            transport: io,
            keep_alive: framing.keep_alive,
            // With `--keep-alive 0` no connection waits for another request: say so.
            closing: service.is_stopping() || service.options().keepalive.is_zero(),
            messages: None,
        };
        let Some(Outcome {
            mut transport,
            mut response,
        }) = service.call(request).await
        else {
            service.request_done();
            if service.reports() {
                service.report(0, None, since(started));
            }
            return (Ok(Next::Close), None);
        };
        // A response paused at the output bound: write what is queued, letting the event loop
        // serve other connections meanwhile, then produce more.
        while let Some(paused) = response.paused.take() {
            let written = self
                .write_out(&*transport, service, &mut response.out, Then::Continue)
                .await;
            if let Err(e) = written {
                service.abandon(*paused);
                service.request_done();
                if service.reports() {
                    service.report(0, None, since(started));
                }
                return (Err(e), Some(transport));
            }
            let resumed = service.resume(*paused, transport);
            transport = resumed.transport;
            response = resumed.response;
        }
        service.request_done();
        service.hold_response().await;
        let keep_alive = response.keep_alive;
        // Empty: an application thread wrote it all, and sent the FIN if the connection closes.
        let then = if response.out.is_empty() {
            Then::Continue
        } else {
            Then::after_response(keep_alive)
        };
        let written = self
            .write_out(&*transport, service, &mut response.out, then)
            .await;
        // The one branch a finished request costs when nothing observes it.
        if service.reports() {
            service.report(response.status, response.record, since(started));
        }
        if let Err(e) = written {
            return (Err(e), Some(transport));
        }
        if !keep_alive {
            self.linger_close(&*transport).await;
            return (Ok(Next::Close), Some(transport));
        }
        let Some(body) = response.body else {
            return (Ok(Next::Close), Some(transport));
        };
        match self.finish_body(&*transport, service, body).await {
            Ok(true) => (Ok(Next::Continue), Some(transport)),
            Ok(false) => (Ok(Next::Close), Some(transport)),
            Err(e) => (Err(e), Some(transport)),
        }
    }

    /// Reads until a complete head is buffered. `None`: the connection should just close.
    ///
    /// A stopping worker waits for the next request on its connections like a running one:
    /// the client may have sent it already, and closing with it unread (or about to arrive)
    /// would lose it to a reset. The request is served, with `Connection: close`; a
    /// connection that stays silent closes when its idle time is up.
    async fn read_head<T: Transport>(
        &mut self,
        io: &T,
        first: bool,
        service: &S,
        waits: &mut HeadWaits,
    ) -> io::Result<Option<(http::RequestHead, http::H1Framing)>>
    where
        S: Service<T>,
    {
        let options = service.options();
        // A new connection has `--header-timeout` from its accept for its first head; a
        // kept-alive one may idle for `--keep-alive`, then has `--header-timeout` from the
        // first byte of the next head.
        let idle_timeout = if first {
            options.head_timeout
        } else {
            options.keepalive
        };
        // Taken at the first wait, so a head already buffered costs no clock reading.
        let mut idle_deadline: Option<Instant> = if first { waits.first_deadline } else { None };
        let mut head_deadline: Option<Instant> = None;
        loop {
            if self.awaiting_proxy && !self.buf.is_empty() {
                match self.take_proxy_header(options) {
                    Ok(true) => {}
                    Ok(false) => {
                        if read_into(io, &mut self.buf, READ_CHUNK, None).await? == 0 {
                            return Ok(None);
                        }
                        continue;
                    }
                    Err(err) => {
                        log_invalid_request(self.info.peer.socket_addr(), &err);
                        Box::pin(self.refuse(io, service, &err)).await;
                        return Ok(None);
                    }
                }
            }
            if self.sniff_h2 && !self.buf.is_empty() {
                match h2::preface_match(&self.buf) {
                    h2::PrefaceMatch::Whole => {
                        self.is_h2 = true;
                        return Ok(None);
                    }
                    // Within the head's deadline, like any head.
                    h2::PrefaceMatch::Partial => {}
                    h2::PrefaceMatch::Mismatch if options.h2.preface_required => {
                        // A peer trusted to speak HTTP/2 did not: a misconfiguration, not
                        // to be hidden by answering in HTTP/1, as Gunicorn refuses it.
                        let err = HttpError::invalid_request_line(b"expected the HTTP/2 preface");
                        log_invalid_request(self.info.peer.socket_addr(), &err);
                        Box::pin(self.refuse(io, service, &err)).await;
                        return Ok(None);
                    }
                    h2::PrefaceMatch::Mismatch => self.sniff_h2 = false,
                }
            }
            // Still sniffing: what arrived begins the preface; read more.
            if !self.buf.is_empty() && !self.sniff_h2 {
                match http::head::parse(&self.buf, &options.limits) {
                    Ok(Some((head, framing, used))) => {
                        self.buf.drain(..used);
                        return Ok(Some((head, framing)));
                    }
                    Ok(None) => {}
                    Err(err) => {
                        log_invalid_request(self.info.peer.socket_addr(), &err);
                        // Logged before the answer is written, as Gunicorn does.
                        if service.reports() {
                            if let Some(record) = self.refused_record(service, &err) {
                                service.report(err.status, Some(record), Duration::ZERO);
                            }
                        }
                        Box::pin(self.refuse(io, service, &err)).await;
                        return Ok(None);
                    }
                }
            }
            let idle = self.buf.is_empty();
            if idle {
                buffers::give_back(&mut self.buf);
            }
            // A first head has one deadline whether bytes have arrived or not.
            let deadline = if idle || first {
                *idle_deadline.get_or_insert_with(|| Instant::now() + idle_timeout)
            } else {
                *head_deadline.get_or_insert_with(|| Instant::now() + options.head_timeout)
            };
            let timer = &mut waits.timer;
            let buf = &mut self.buf;
            let waited = tokio::select! {
                biased;
                r = read_pooled(io, buf) => HeadWait::Read(r),
                _ = timer_until(timer, deadline) => HeadWait::TimedOut,
            };
            match waited {
                HeadWait::Read(Ok(0)) => return Ok(None),
                HeadWait::Read(Ok(_)) => {}
                HeadWait::Read(Err(e)) => return Err(e),
                HeadWait::TimedOut if idle => {
                    // A request that arrived as the time ran out is served, not cut off.
                    match read_appending(io, &mut self.buf, READ_CHUNK, None) {
                        Ok(Some(read)) if read.total > 0 => continue,
                        Ok(None) => Box::pin(self.fin_and_drain(io)).await,
                        _ => {}
                    }
                    return Ok(None);
                }
                HeadWait::TimedOut => {
                    Box::pin(self.refuse(io, service, &HttpError::request_timeout())).await;
                    return Ok(None);
                }
            }
        }
    }

    /// Consumes a PROXY protocol header if the connection starts with one. Returns false when
    /// more bytes are needed to tell.
    fn take_proxy_header(&mut self, options: &super::Options) -> Result<bool, HttpError> {
        let Some((info, used)) = proxy::parse(&self.buf, options.proxy_mode)? else {
            return Ok(false);
        };
        self.awaiting_proxy = false;
        if let Some(info) = info {
            if !options.proxy_allow.allows(self.info.peer.ip()) {
                return Err(HttpError {
                    status: 403,
                    reason: "Forbidden",
                    message: "Request forbidden".into(),
                });
            }
            self.buf.drain(..used);
            self.info.proxy = Some(info);
        }
        Ok(true)
    }

    /// Buffers the body up to `--body-buffer-size`; a longer body streams from the connection
    /// later. Each wait for more bytes may last `--body-timeout`.
    async fn read_body<T: Transport>(
        &mut self,
        io: &T,
        framing: &http::H1Framing,
        service: &S,
    ) -> io::Result<Result<BodyState, HttpError>>
    where
        S: Service<T>,
    {
        let options = service.options();
        let raw = std::mem::take(&mut self.buf);
        let mut body = BodyState::new(BodyDecoder::new(framing.body), raw, options.body_timeout);
        if body.is_complete() {
            return Ok(Ok(body));
        }
        if framing.expect_continue && body.raw.is_empty() {
            let mut out = OutQueue::new();
            out.push_slice(http::response::CONTINUE);
            self.write_out(io, service, &mut out, Then::Continue)
                .await?;
        }
        let limit = options.body_buffer;
        if let Some(len) = body.whole_length(limit) {
            if let Some(target) = service.body_target(len) {
                let target = body.start_whole(target);
                return self.read_whole(io, options, body, target).await;
            }
        }
        loop {
            let room = limit.saturating_sub(body.body.len());
            if let Err(err) = body.decode_buffered(room) {
                return Ok(Err(err));
            }
            if body.is_complete() || body.body.len() >= limit {
                return Ok(Ok(body));
            }
            if body.raw_pos > 0 {
                body.raw.drain(..body.raw_pos);
                body.raw_pos = 0;
            }
            // Room for the rest of a Content-Length body, so it arrives in as few reads as
            // the connection allows.
            let want = body.decoder.remaining_hint().min(room as u64) as usize;
            let deadline = Instant::now() + options.body_timeout;
            // A Content-Length body is read straight into the decoded body (capped at what is
            // still expected, so nothing after it is taken), saving a copy.
            let direct = body.reads_direct() && want > 0;
            let before = body.body.len();
            let (target, max, spill) = if direct {
                (&mut body.body, want, Some(&mut body.raw))
            } else {
                (&mut body.raw, want.max(READ_CHUNK), None)
            };
            let read = read_into(io, target, max, spill);
            match timeout_at(deadline, read).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(Ok(_)) if direct => body.decoder.skip_decoded(body.body.len() - before),
                Ok(Ok(_)) => {}
                Err(_) => return Ok(Err(HttpError::body_timeout())),
            }
        }
    }

    /// Reads the rest of a Content-Length body into its target; what follows the body goes to
    /// the connection's buffer. Each wait for more bytes may last `--body-timeout`.
    async fn read_whole<T: Transport>(
        &mut self,
        io: &T,
        options: &super::Options,
        mut body: BodyState,
        mut whole: Box<dyn BodyTarget>,
    ) -> io::Result<Result<BodyState, HttpError>> {
        while !whole.is_full() {
            let deadline = Instant::now() + options.body_timeout;
            let read = io.read(whole.spare(), Some(&mut body.raw));
            match timeout_at(deadline, read).await {
                Ok(Ok(read)) if read.total > 0 => {
                    whole.advance(read.first);
                    body.decoder.skip_decoded(read.first);
                }
                Ok(_) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Err(_) => return Ok(Err(HttpError::body_timeout())),
            }
        }
        body.whole = Some(whole);
        Ok(Ok(body))
    }

    /// Discards what the application left unread of the body and keeps the bytes after it.
    /// Returns false when the connection cannot carry another request.
    async fn finish_body<T: Transport>(
        &mut self,
        io: &T,
        service: &S,
        mut body: BodyState,
    ) -> io::Result<bool>
    where
        S: Service<T>,
    {
        if body.error.is_some() || body.truncated {
            return Ok(false);
        }
        let mut discarded = 0u64;
        let deadline = Instant::now() + service.options().body_timeout;
        while !body.is_complete() {
            body.body.clear();
            body.body_pos = 0;
            match body.decode_buffered(READ_CHUNK) {
                Ok(n) => discarded += n as u64,
                Err(_) => return Ok(false),
            }
            if body.is_complete() {
                break;
            }
            if discarded > DRAIN_LIMIT {
                return Ok(false);
            }
            if body.raw_pos > 0 {
                body.raw.drain(..body.raw_pos);
                body.raw_pos = 0;
            }
            match timeout_at(deadline, read_into(io, &mut body.raw, READ_CHUNK, None)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return Ok(false),
            }
        }
        body.raw.drain(..body.raw_pos);
        self.buf = std::mem::take(&mut body.raw);
        Ok(true)
    }

    /// Writes the whole queue (see [`write_all`]) within the write timeout's stalls.
    async fn write_out<T: Transport>(
        &self,
        io: &T,
        service: &S,
        out: &mut OutQueue,
        then: Then,
    ) -> io::Result<()>
    where
        S: Service<T>,
    {
        write_all(io, out, then, service.options().write_timeout).await
    }

    /// The worker is at `--worker-connections`: answer 503 and close.
    pub async fn shed<T: Transport>(mut self, transport: T)
    where
        S: Service<T>,
    {
        let service = Rc::clone(&self.service);
        self.refuse(&transport, &*service, &HttpError::service_unavailable())
            .await;
    }

    /// The record of an error answer, for a request refused for a field's value: Gunicorn
    /// logs one when the refusal carries its request (no body bytes counted).
    fn refused_record<T: Transport>(&self, service: &S, err: &HttpError) -> Option<Box<S::Record>>
    where
        S: Service<T>,
    {
        if !err.is_invalid_header() {
            return None;
        }
        let head = http::head::refused_request(&self.buf, &service.options().limits)?;
        Some(service.refused_record(head, &self.info, err))
    }

    /// Answers with `err` and closes. The request path boxes this future where it awaits it:
    /// it is rare, and inline it would add its size to the futures of every request.
    async fn refuse<T: Transport>(&mut self, io: &T, service: &S, err: &HttpError)
    where
        S: Service<T>,
    {
        let mut out = OutQueue::new();
        out.push_slice(&http::response::error_answer(err));
        if self
            .write_out(io, service, &mut out, Then::Fin)
            .await
            .is_ok()
        {
            self.linger_close(io).await;
        }
    }

    /// Half-closes, then reads and discards briefly so the client gets our last response
    /// rather than a reset caused by unread bytes.
    async fn linger_close<T: Transport>(&mut self, io: &T) {
        if self.buf.is_empty() && io.unread_len() == 0 {
            // Nothing the client sent is left unread, so closing sends no reset; only a client
            // still sending would get one, and one that asked to close does not.
            return;
        }
        self.fin_and_drain(io).await;
    }

    /// Sends the FIN, then reads and discards until the client closes or [`LINGER`] passes:
    /// bytes arriving after a close would make the kernel answer with a reset, which can
    /// destroy a response the client has not read yet, and tells a client whose request
    /// crossed our FIN less than an orderly end of stream does.
    async fn fin_and_drain<T: Transport>(&mut self, io: &T) {
        // Usually sent already with the last response; a second shutdown does nothing.
        io.shutdown_write();
        let deadline = Instant::now() + LINGER;
        let mut total = 0usize;
        while total < 256 * 1024 {
            self.buf.clear();
            match timeout_at(deadline, read_into(io, &mut self.buf, READ_CHUNK, None)).await {
                Ok(Ok(n)) if n > 0 => total += n,
                _ => break,
            }
        }
    }
}

/// Reads once into `buf`, which takes a kept buffer only once bytes have arrived (see
/// [`buffers`]). `Ok(0)`: the peer closed.
async fn read_pooled<T: Transport>(io: &T, buf: &mut Vec<u8>) -> io::Result<usize> {
    io.when_readable(|io| {
        buffers::take(buf);
        let read = read_appending(io, buf, READ_CHUNK, None)?;
        Ok(read.map(|count| (count.total, count)))
    })
    .await
}

/// Gunicorn's debug lines for a client that went away mid-request; other errors (a write
/// timeout, ...) end the connection silently.
fn log_socket_error(e: &io::Error) {
    let what = match e.raw_os_error() {
        Some(libc::ECONNRESET) => "Ignoring connection reset",
        Some(libc::ENOTCONN) => "Ignoring socket not connected",
        Some(libc::EPIPE) => "Ignoring EPIPE",
        _ => return,
    };
    log::debug(format_args!("{what}"));
}
