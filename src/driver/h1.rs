//! One client connection: read a request head, buffer its body up to a bound, hand the request
//! to the application, write the response, and go round again while keep-alive allows.
//! All waiting on the client happens here, in Rust, never in a Python thread.

use std::cell::OnceCell;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use pyo3::Python;
use tokio::io::unix::AsyncFd;
use tokio::time::{sleep_until, timeout_at, Instant, Sleep};

use crate::driver::buffers::{self, READ_CHUNK};
use crate::driver::output::{OutQueue, Progress, Then};
use crate::http::{self, proxy, BodyDecoder, HttpError};
use crate::log;
use crate::net::socket;
use crate::worker::Worker;
use crate::wsgi::call::{Outcome, Request};
use crate::wsgi::environ::{ConnInfo, Peer};
use crate::wsgi::input::{BodyState, WholeBody};

/// Time since `started`, taken when something reports finished requests.
fn since(started: Option<Instant>) -> Duration {
    started.map_or(Duration::ZERO, |t| t.elapsed())
}

/// Unread request body the server will discard to keep a connection alive.
const DRAIN_LIMIT: u64 = 4 * 1024 * 1024;
/// How long a closing connection reads what the client still sends, so that the client
/// receives our answer instead of a reset.
const LINGER: Duration = Duration::from_secs(1);

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A connection's socket, registered with the event loop only when the connection first has
/// to wait for it. The request usually arrives with the accept (`TCP_DEFER_ACCEPT`), so a
/// connection that closes after one response is read, answered and closed without ever
/// being added to or removed from the worker's epoll set.
struct Sock {
    /// Declared before `fd`: dropped first, so it leaves the epoll set before the close.
    registered: OnceCell<AsyncFd<RawFd>>,
    fd: OwnedFd,
}

impl Sock {
    fn new(fd: OwnedFd) -> Sock {
        Sock {
            registered: OnceCell::new(),
            fd,
        }
    }

    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The socket on the event loop, registered now if it is not yet. A socket registered
    /// after some of its bytes arrived is reported ready at once, so nothing is missed.
    fn registered(&self) -> io::Result<&AsyncFd<RawFd>> {
        if let Some(io) = self.registered.get() {
            return Ok(io);
        }
        // SAFETY: the descriptor is `self.fd`, which stays open until after `registered` is
        // dropped (field order).
        let io = unsafe { AsyncFd::register(self.fd()) }
            .map_err(io::Error::from)
            .inspect_err(|e| log::error(format_args!("cannot register connection: {e}")))?;
        Ok(self.registered.get_or_init(|| io))
    }
}

pub struct Conn {
    sock: Sock,
    info: ConnInfo,
    worker: Rc<Worker>,
    buf: Vec<u8>,
    /// A PROXY protocol header may still arrive (only before the first request).
    awaiting_proxy: bool,
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

impl Conn {
    pub fn new(sock: OwnedFd, peer: Peer, listener: usize, worker: Rc<Worker>) -> Conn {
        let awaiting_proxy = worker.proxy_mode != proxy::Mode::Off;
        Conn {
            sock: Sock::new(sock),
            info: ConnInfo {
                peer,
                listener,
                proxy: None,
            },
            worker,
            buf: Vec::new(),
            awaiting_proxy,
        }
    }

    fn fd(&self) -> i32 {
        self.sock.fd()
    }

    pub async fn serve(mut self) {
        let worker = Rc::clone(&self.worker);
        let mut waits = HeadWaits::new();
        // The request usually arrives with the connection: read it now rather than wait for
        // the event loop to report the new socket readable.
        buffers::take(&mut self.buf);
        match read_now(self.fd(), &mut self.buf, READ_CHUNK, None) {
            Ok(Some((0, _))) | Err(_) => return,
            Ok(Some(_)) => {}
            Ok(None) => {
                buffers::give_back(&mut self.buf);
                if !self.first_bytes(&worker, &mut waits).await {
                    return;
                }
            }
        }
        let mut first = true;
        let end = loop {
            match self.serve_one(first, &worker, &mut waits).await {
                Ok(Next::Continue) => first = false,
                end => break end,
            }
        };
        if let Err(e) = end {
            log_socket_error(&e);
        }
    }

    /// Waits for a new connection's first bytes, listed meanwhile among the connections the
    /// worker may close to make room at `--worker-connections`. False: the connection is to
    /// close (closed for room, by the client, or silent for `--header-timeout`).
    async fn first_bytes(&mut self, worker: &Worker, waits: &mut HeadWaits) -> bool {
        let deadline = Instant::now() + worker.options.head_timeout;
        waits.first_deadline = Some(deadline);
        let silent = worker.shedding.silent();
        tokio::select! {
            biased;
            r = read_pooled(&self.sock, &mut self.buf) => matches!(r, Ok(n) if n > 0),
            _ = silent.evicted() => false,
            _ = timer_until(&mut waits.timer, deadline) => false,
        }
    }

    async fn serve_one(
        &mut self,
        first: bool,
        worker: &Worker,
        waits: &mut HeadWaits,
    ) -> io::Result<Next> {
        let Some(head) = self.read_head(first, worker, waits).await? else {
            return Ok(Next::Close);
        };
        // Apart: the task of a connection waiting for its next head then keeps only that wait,
        // and a request's much larger state lives only as long as the request.
        buffers::Lent::new(|| self.answer(head, worker)).await
    }

    /// Reads the body of `head`, has the application answer and writes the response.
    async fn answer(&mut self, head: http::RequestHead, worker: &Worker) -> io::Result<Next> {
        // Only what reports finished requests needs the time a request took.
        let started = worker.reports.then(Instant::now);
        let body = match self.read_body(&head).await? {
            Ok(body) => body,
            Err(err) => {
                // A malformed body read ahead of the application: logged as Gunicorn logs the
                // error the application's read would have raised (a timeout is not the
                // client's malformed request).
                if err.status != 408 {
                    crate::wsgi::call::log_invalid_request(self.info.peer.socket_addr(), &err);
                    if worker.reports {
                        let access = self.error_access(head, &err);
                        worker.report(err.status, Some(access), since(started));
                    }
                }
                Box::pin(self.refuse(&err)).await;
                return Ok(Next::Close);
            }
        };
        let request = Request {
            head,
            body,
            conn: self.info.clone(),
            fd: self.fd(),
            // With `--keep-alive 0` no connection waits for another request: say so.
            closing: worker.is_closing() || worker.options.keepalive.is_zero(),
        };
        let mut outcome = worker.dispatch(request).await;
        // A `sync` response paused at the output bound: write what is queued, letting the
        // event loop serve other connections meanwhile, then produce more.
        while let Some(o) = outcome.as_mut() {
            let Some(paused) = o.paused.take() else {
                break;
            };
            if let Err(e) = self.write_out(&mut o.out, Then::Continue).await {
                Python::attach(|py| paused.abandon(py));
                worker.request_done();
                if worker.reports {
                    worker.report(0, None, since(started));
                }
                return Err(e);
            }
            outcome = Some(worker.resume(*paused));
        }
        worker.request_done();
        let Some(Outcome {
            mut out,
            keep_alive,
            body,
            access,
            status,
            ..
        }) = outcome
        else {
            if worker.reports {
                worker.report(0, None, since(started));
            }
            return Ok(Next::Close);
        };
        worker.hold_response().await;
        // Empty: a `gthread` thread wrote it all, and sent the FIN if the connection closes.
        let then = if out.is_empty() {
            Then::Continue
        } else {
            Then::after_response(keep_alive)
        };
        let written = self.write_out(&mut out, then).await;
        // The one branch a finished request costs when nothing observes it.
        if worker.reports {
            worker.report(status, access, since(started));
        }
        written?;
        if !keep_alive {
            self.linger_close().await;
            return Ok(Next::Close);
        }
        let Some(body) = body else {
            return Ok(Next::Close);
        };
        if !self.finish_body(body).await? {
            return Ok(Next::Close);
        }
        Ok(Next::Continue)
    }

    /// Reads until a complete head is buffered. `None`: the connection should just close.
    ///
    /// A stopping worker waits for the next request on its connections like a running one:
    /// the client may have sent it already, and closing with it unread (or about to arrive)
    /// would lose it to a reset. The request is served, with `Connection: close`; a
    /// connection that stays silent closes when its idle time is up.
    async fn read_head(
        &mut self,
        first: bool,
        worker: &Worker,
        waits: &mut HeadWaits,
    ) -> io::Result<Option<http::RequestHead>> {
        // A new connection has `--header-timeout` from its accept for its first head; a
        // kept-alive one may idle for `--keep-alive`, then has `--header-timeout` from the
        // first byte of the next head.
        let idle_timeout = if first {
            worker.options.head_timeout
        } else {
            worker.options.keepalive
        };
        // Taken at the first wait, so a head already buffered costs no clock reading.
        let mut idle_deadline: Option<Instant> = if first { waits.first_deadline } else { None };
        let mut head_deadline: Option<Instant> = None;
        loop {
            if self.awaiting_proxy && !self.buf.is_empty() {
                match self.take_proxy_header() {
                    Ok(true) => {}
                    Ok(false) => {
                        if self.read_more().await? == 0 {
                            return Ok(None);
                        }
                        continue;
                    }
                    Err(err) => {
                        crate::wsgi::call::log_invalid_request(self.info.peer.socket_addr(), &err);
                        Box::pin(self.refuse(&err)).await;
                        return Ok(None);
                    }
                }
            }
            if !self.buf.is_empty() {
                match http::head::parse(&self.buf, &worker.limits) {
                    Ok(Some((head, used))) => {
                        self.buf.drain(..used);
                        return Ok(Some(head));
                    }
                    Ok(None) => {}
                    Err(err) => {
                        crate::wsgi::call::log_invalid_request(self.info.peer.socket_addr(), &err);
                        // Logged before the answer is written, as Gunicorn does.
                        let access = worker.reports.then(|| self.refused_access(&err));
                        if let Some(access) = access.flatten() {
                            worker.report(err.status, Some(access), Duration::ZERO);
                        }
                        Box::pin(self.refuse(&err)).await;
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
                *head_deadline.get_or_insert_with(|| Instant::now() + worker.options.head_timeout)
            };
            let timer = &mut waits.timer;
            let (sock, buf) = (&self.sock, &mut self.buf);
            let waited = tokio::select! {
                biased;
                r = read_pooled(sock, buf) => HeadWait::Read(r),
                _ = timer_until(timer, deadline) => HeadWait::TimedOut,
            };
            match waited {
                HeadWait::Read(Ok(0)) => return Ok(None),
                HeadWait::Read(Ok(_)) => {}
                HeadWait::Read(Err(e)) => return Err(e),
                HeadWait::TimedOut if idle => {
                    // A request that arrived as the time ran out is served, not cut off.
                    match read_now(self.fd(), &mut self.buf, READ_CHUNK, None) {
                        Ok(Some((n, _))) if n > 0 => continue,
                        Ok(None) => Box::pin(self.fin_and_drain()).await,
                        _ => {}
                    }
                    return Ok(None);
                }
                HeadWait::TimedOut => {
                    Box::pin(self.refuse(&HttpError::request_timeout())).await;
                    return Ok(None);
                }
            }
        }
    }

    /// Consumes a PROXY protocol header if the connection starts with one. Returns false when
    /// more bytes are needed to tell.
    fn take_proxy_header(&mut self) -> Result<bool, HttpError> {
        let Some((info, used)) = proxy::parse(&self.buf, self.worker.proxy_mode)? else {
            return Ok(false);
        };
        self.awaiting_proxy = false;
        if let Some(info) = info {
            if !self.worker.proxy_allow.allows(self.info.peer.ip()) {
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

    /// Buffers the body up to `--body-buffer-size`; a longer body streams from the socket
    /// later. Each wait for more bytes may last `--body-timeout`.
    async fn read_body(
        &mut self,
        head: &http::RequestHead,
    ) -> io::Result<Result<BodyState, HttpError>> {
        let raw = std::mem::take(&mut self.buf);
        let mut body = BodyState::new(
            BodyDecoder::new(head.framing),
            raw,
            self.fd(),
            self.worker.options.body_timeout,
        );
        if body.is_complete() {
            return Ok(Ok(body));
        }
        if head.expect_continue && body.raw.is_empty() {
            let mut out = OutQueue::new();
            out.push_slice(CONTINUE);
            self.write_out(&mut out, Then::Continue).await?;
        }
        let limit = self.worker.options.body_buffer;
        if self.worker.reads_bodies_into_python() {
            if let Some(whole) = Python::attach(|py| body.start_whole(py, limit)) {
                return self.read_whole(body, whole).await;
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
            // the socket allows.
            let want = body.decoder.remaining_hint().min(room as u64) as usize;
            let deadline = Instant::now() + self.worker.options.body_timeout;
            // A Content-Length body is read straight into the decoded body (capped at what is
            // still expected, so nothing after it is taken), saving a copy.
            let direct = body.reads_direct() && want > 0;
            let before = body.body.len();
            let (target, max, spill) = if direct {
                (&mut body.body, want, Some(&mut body.raw))
            } else {
                (&mut body.raw, want.max(READ_CHUNK), None)
            };
            let read = read_split(&self.sock, target, max, spill);
            match timeout_at(deadline, read).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(Ok(_)) if direct => body.decoder.skip_decoded(body.body.len() - before),
                Ok(Ok(_)) => {}
                Err(_) => return Ok(Err(HttpError::body_timeout())),
            }
        }
    }

    /// Reads the rest of a Content-Length body into its `bytes` object; what follows the body
    /// goes to the connection's buffer. Each wait for more bytes may last `--body-timeout`.
    async fn read_whole(
        &mut self,
        mut body: BodyState,
        mut whole: WholeBody,
    ) -> io::Result<Result<BodyState, HttpError>> {
        while !whole.is_full() {
            let deadline = Instant::now() + self.worker.options.body_timeout;
            let mut into_body = 0;
            let read = read_when_ready(&self.sock, |fd| {
                let read = read_slice_now(fd, whole.spare(), Some(&mut body.raw))?;
                Ok(read.map(|r| {
                    into_body = r.first;
                    (r.total, r.drained)
                }))
            });
            match timeout_at(deadline, read).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(Ok(_)) => {
                    whole.advance(into_body);
                    body.decoder.skip_decoded(into_body);
                }
                Err(_) => return Ok(Err(HttpError::body_timeout())),
            }
        }
        body.whole = Some(whole);
        Ok(Ok(body))
    }

    /// Discards what the application left unread of the body and keeps the bytes after it.
    /// Returns false when the connection cannot carry another request.
    async fn finish_body(&mut self, mut body: BodyState) -> io::Result<bool> {
        if body.error.is_some() || body.truncated {
            return Ok(false);
        }
        let mut discarded = 0u64;
        let deadline = Instant::now() + self.worker.options.body_timeout;
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
            match timeout_at(deadline, read_into(&self.sock, &mut body.raw, READ_CHUNK)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return Ok(false),
            }
        }
        body.raw.drain(..body.raw_pos);
        self.buf = std::mem::take(&mut body.raw);
        Ok(true)
    }

    async fn read_more(&mut self) -> io::Result<usize> {
        read_into(&self.sock, &mut self.buf, READ_CHUNK).await
    }

    /// Writes the whole queue. The client may take as long as it likes overall, but a stall
    /// (no room to write at all) longer than the write timeout ends the connection.
    pub async fn write_out(&self, out: &mut OutQueue, then: Then) -> io::Result<()> {
        let fd = self.fd();
        loop {
            if let Progress::Done = out.write_to(fd, then)? {
                return Ok(());
            }
            let deadline = Instant::now() + self.worker.options.write_timeout;
            let sock = self.sock.registered()?;
            let mut guard = match timeout_at(deadline, sock.writable()).await {
                Ok(guard) => guard?,
                Err(_) => return Err(io::ErrorKind::TimedOut.into()),
            };
            match out.write_to(fd, then)? {
                Progress::Done => return Ok(()),
                Progress::Blocked => guard.clear_ready(),
            }
        }
    }

    /// The worker is at `--worker-connections`: answer 503 and close.
    pub async fn shed(mut self) {
        self.refuse(&HttpError::service_unavailable()).await;
    }

    /// What the access line of an error answer needs, for a request refused for a field's
    /// value: Gunicorn logs one when the refusal carries its request (no body bytes counted).
    fn refused_access(&self, err: &HttpError) -> Option<Box<crate::wsgi::call::AccessData>> {
        if !err.is_invalid_header() {
            return None;
        }
        let head = http::head::refused_request(&self.buf, &self.worker.limits)?;
        Some(self.error_access(head, err))
    }

    /// The access log data of an error answer to `head` (no body bytes counted).
    fn error_access(
        &self,
        head: http::RequestHead,
        err: &HttpError,
    ) -> Box<crate::wsgi::call::AccessData> {
        Box::new(crate::wsgi::call::AccessData {
            head,
            remote_addr: crate::wsgi::call::remote_addr(&self.info),
            status: err.status,
            sent: 0,
            response_headers: Vec::new(),
            environ: Vec::new(),
            peer: self.info.peer.socket_addr(),
            status_line: Some(format!("{} {}", err.status, err.reason)),
            environ_obj: None,
        })
    }

    /// Answers with `err` and closes. The request path boxes this future where it awaits it:
    /// it is rare, and inline it would add its size to the futures of every request.
    async fn refuse(&mut self, err: &HttpError) {
        let mut out = OutQueue::new();
        out.push_slice(&err.to_response());
        if self.write_out(&mut out, Then::Fin).await.is_ok() {
            self.linger_close().await;
        }
    }

    /// Half-closes, then reads and discards briefly so the client gets our last response
    /// rather than a reset caused by unread bytes.
    async fn linger_close(&mut self) {
        if self.buf.is_empty() && unread_bytes(self.fd()) == 0 {
            // Nothing the client sent is left unread, so closing sends no reset; only a client
            // still sending would get one, and one that asked to close does not.
            return;
        }
        self.fin_and_drain().await;
    }

    /// Sends the FIN, then reads and discards until the client closes or [`LINGER`] passes:
    /// bytes arriving after a close would make the kernel answer with a reset, which can
    /// destroy a response the client has not read yet, and tells a client whose request
    /// crossed our FIN less than an orderly end of stream does.
    async fn fin_and_drain(&mut self) {
        // Usually sent already with the last response; a second shutdown does nothing.
        socket::send_fin(self.fd());
        let deadline = Instant::now() + LINGER;
        let mut total = 0usize;
        while total < 256 * 1024 {
            self.buf.clear();
            match timeout_at(deadline, read_into(&self.sock, &mut self.buf, READ_CHUNK)).await {
                Ok(Ok(n)) if n > 0 => total += n,
                _ => break,
            }
        }
    }
}

/// Gunicorn's debug lines for a client that went away mid-request; other socket errors (a write
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

/// Bytes waiting in the socket's receive queue (0 when unknown).
fn unread_bytes(fd: i32) -> libc::c_int {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } < 0 {
        return 0;
    }
    n
}

/// Reads once (waiting for readiness) and appends at most `max` bytes to `buf`.
/// `Ok(0)`: the peer closed.
async fn read_into(sock: &Sock, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    read_split(sock, buf, max, None).await
}

/// [`read_into`] for the connection's buffer, which it has given back while idle: a buffer is
/// taken once bytes have arrived.
async fn read_pooled(sock: &Sock, buf: &mut Vec<u8>) -> io::Result<usize> {
    read_when_ready(sock, |fd| {
        buffers::take(buf);
        read_now(fd, buf, READ_CHUNK, None)
    })
    .await
}

/// Like [`read_into`], with bytes past the first `max` going to `spill` (up to
/// [`READ_CHUNK`]): the end of a body lands in its buffer and whatever follows it in the
/// connection's, in one system call that also tells whether the socket was drained.
async fn read_split(
    sock: &Sock,
    buf: &mut Vec<u8>,
    max: usize,
    mut spill: Option<&mut Vec<u8>>,
) -> io::Result<usize> {
    read_when_ready(sock, |fd| read_now(fd, buf, max, spill.as_deref_mut())).await
}

/// Waits for readiness and runs `read` (one non-blocking read: `None` when there was nothing
/// to read) until it reads. Returns its count; `Ok(0)`: the peer closed.
async fn read_when_ready(
    sock: &Sock,
    mut read: impl FnMut(i32) -> io::Result<Option<(usize, bool)>>,
) -> io::Result<usize> {
    let sock = sock.registered()?;
    loop {
        let mut guard = sock.readable().await?;
        match read(sock.as_raw_fd()) {
            Ok(Some((n, drained))) => {
                // With edge-triggered readiness, a drained socket sends the next wait straight
                // to the event loop instead of costing a read that fails with EAGAIN.
                if drained {
                    guard.clear_ready();
                }
                return Ok(n);
            }
            Ok(None) => guard.clear_ready(),
            Err(e) => return Err(e),
        }
    }
}

/// One non-blocking read appending at most `max` bytes to `buf`, and what follows (up to
/// [`READ_CHUNK`]) to `spill` when given. `None`: nothing to read yet. Otherwise the count
/// and whether the read drained the socket.
fn read_now(
    fd: i32,
    buf: &mut Vec<u8>,
    max: usize,
    spill: Option<&mut Vec<u8>>,
) -> io::Result<Option<(usize, bool)>> {
    buf.reserve(max);
    let len = buf.len();
    let first = &mut buf.spare_capacity_mut()[..max];
    let Some(read) = read_slice_now(fd, first, spill)? else {
        return Ok(None);
    };
    // SAFETY: the kernel initialised `read.first` bytes of `buf`'s spare capacity.
    unsafe { buf.set_len(len + read.first) };
    Ok(Some((read.total, read.drained)))
}

/// What one read gave: bytes in the first target, in all, and whether the socket is drained.
struct SliceRead {
    first: usize,
    total: usize,
    drained: bool,
}

/// One non-blocking read filling `first`, and what follows (up to [`READ_CHUNK`]) appended to
/// `spill` when given. `None`: nothing to read yet.
fn read_slice_now(
    fd: i32,
    first: &mut [MaybeUninit<u8>],
    mut spill: Option<&mut Vec<u8>>,
) -> io::Result<Option<SliceRead>> {
    let first_len = first.len();
    let mut iov = [libc::iovec {
        iov_base: first.as_mut_ptr().cast(),
        iov_len: first_len,
    }; 2];
    let mut count = 1;
    if let Some(extra) = spill.as_deref_mut() {
        extra.reserve(READ_CHUNK);
        let second = extra.spare_capacity_mut();
        iov[1] = libc::iovec {
            iov_base: second.as_mut_ptr().cast(),
            iov_len: second.len().min(READ_CHUNK),
        };
        count = 2;
    }
    let room: usize = iov[..count].iter().map(|v| v.iov_len).sum();
    loop {
        // SAFETY: the iovecs point into `first` and the spare capacity of `spill`, which are
        // not touched until the lengths grow by what the kernel wrote. One buffer goes through
        // recv(2), which spares the kernel copying in and checking an iovec array, and the
        // file layer that read(2) passes through.
        let n = unsafe {
            if count == 1 {
                libc::recv(fd, iov[0].iov_base, iov[0].iov_len, 0)
            } else {
                libc::readv(fd, iov.as_ptr(), count as libc::c_int)
            }
        };
        if n >= 0 {
            let n = n as usize;
            let to_first = n.min(first_len);
            if let Some(extra) = spill.as_deref_mut() {
                // SAFETY: the kernel initialised the rest of `n` at the start of `spill`'s
                // spare capacity.
                unsafe { extra.set_len(extra.len() + (n - to_first)) };
            }
            return Ok(Some(SliceRead {
                first: to_first,
                total: n,
                drained: n > 0 && n < room,
            }));
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::WouldBlock => return Ok(None),
            io::ErrorKind::Interrupted => continue,
            _ => return Err(err),
        }
    }
}
