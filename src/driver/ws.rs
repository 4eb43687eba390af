//! One WebSocket connection after its `101`: frames read and decoded, pings answered, the
//! close handshake with a timeout, keepalive pings, and back-pressure both ways. Generic over
//! the transport, like the HTTP/1 driver.
//!
//! The seam to the application interface is a channel: the interface holds the [`Session`]
//! (receive, send, close), the driver its [`Link`]. Both ends are `Send`, so the interface may
//! run on the event loop's thread or another. Back-pressure: the driver reads no further while
//! the application has not taken the last message, and the application's sends wait while
//! more than a bound of its messages are queued unsent.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{sleep_until, Instant};

use crate::http::ws::close;
use crate::http::ws::deflate::Params;
use crate::http::ws::frame::{self, Decoder, Encoder, Event, Failure, Kind};
use crate::net::transport::read_into;
use crate::net::Transport;

/// Bytes one read takes at most.
const READ_CHUNK: usize = 16 * 1024;
/// The driver takes the application's next message only while fewer encoded bytes than this
/// wait to be written.
const OUT_LOW: usize = 64 * 1024;
/// The driver reads no more while this many bytes wait to be written.
const OUT_LIMIT: usize = 4 * OUT_LOW;
/// Bytes read and dropped at most while waiting for the client's end after ours.
const DRAIN_LIMIT: usize = 1024 * 1024;

/// The worker is stopping gracefully: every open connection closes with 1001.
static GOING_AWAY: AtomicBool = AtomicBool::new(false);
static GOING_AWAY_NOTIFY: Notify = Notify::const_new();

/// Closes every connection of this process with 1001 Going Away, and those opened later.
pub fn go_away() {
    GOING_AWAY.store(true, Ordering::SeqCst);
    GOING_AWAY_NOTIFY.notify_waiters();
}

/// Resolves once [`go_away`] was called: the `stop` of a connection of a worker.
pub async fn going_away() {
    // Made before the check: `notify_waiters` reaches a `Notified` from its creation on.
    let woken = GOING_AWAY_NOTIFY.notified();
    if !GOING_AWAY.load(Ordering::SeqCst) {
        woken.await;
    }
}

/// How a WebSocket connection behaves.
#[derive(Clone, Debug)]
pub struct WsOptions {
    /// The largest message taken, after inflating; larger ones close the connection with 1009.
    pub max_message: usize,
    /// Payload bytes the application may queue before its sends wait.
    pub output_bound: usize,
    /// How long the client has to answer our close frame, and to close its end after the
    /// close handshake.
    pub close_timeout: Duration,
    /// A ping goes out after this long without a byte from the client (`None`: never) ...
    pub ping_interval: Option<Duration>,
    /// ... and the connection fails with 1011 if nothing arrives this long after it (`None`:
    /// never; another ping goes out each interval instead).
    pub ping_timeout: Option<Duration>,
    /// The longest stall while writing (no room at all).
    pub write_timeout: Duration,
}

/// What the application receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    Binary(Vec<u8>),
    /// The connection is over: the client's close code and reason (1005 when its close frame
    /// had none), or 1006 when it ended without a close handshake. Given again on every
    /// receive after.
    Closed {
        code: u16,
        reason: String,
    },
}

/// What the application sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outgoing {
    Text(String),
    Binary(Vec<u8>),
    Close { code: u16, reason: String },
}

impl Outgoing {
    fn len(&self) -> usize {
        match self {
            Outgoing::Text(text) => text.len(),
            Outgoing::Binary(data) => data.len(),
            Outgoing::Close { reason, .. } => reason.len(),
        }
    }
}

/// The connection no longer takes messages: it closed, or the application closed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed;

#[derive(Default)]
struct State {
    /// A message the application has not taken; the driver reads no further meanwhile.
    incoming: Option<Incoming>,
    /// How the connection ended, once it has.
    closed: Option<(u16, String)>,
    outgoing: VecDeque<Outgoing>,
    /// Payload bytes of the application's messages not yet written: in `outgoing`, or
    /// encoded in the driver's output.
    queued: usize,
    /// The application sent its close: it sends nothing more.
    close_queued: bool,
    /// The application dropped its [`Session`].
    app_gone: bool,
}

struct Shared {
    state: Mutex<State>,
    bound: usize,
    /// Wakes the application: a message arrived, the output has room, or the end.
    to_app: Notify,
    /// Wakes the driver: a message was taken or queued, or the application is gone.
    to_driver: Notify,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits on `notify` until `check` gives a value. The wait is registered before each
    /// check, so a wake-up between the two is not lost.
    async fn wait<R>(&self, notify: &Notify, mut check: impl FnMut(&mut State) -> Option<R>) -> R {
        loop {
            let mut woken = pin!(notify.notified());
            woken.as_mut().enable();
            if let Some(value) = check(&mut self.state()) {
                return value;
            }
            woken.await;
        }
    }
}

/// The application's end of a connection.
pub struct Session {
    shared: Arc<Shared>,
}

/// The driver's end of a connection.
pub struct Link {
    shared: Arc<Shared>,
}

/// A connected pair; the application's sends wait past `output_bound` queued payload bytes.
pub fn pair(output_bound: usize) -> (Session, Link) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        bound: output_bound,
        to_app: Notify::new(),
        to_driver: Notify::new(),
    });
    (
        Session {
            shared: Arc::clone(&shared),
        },
        Link { shared },
    )
}

impl Session {
    /// The next message, if one is there, or how the connection ended.
    pub fn try_receive(&self) -> Option<Incoming> {
        let taken = take_incoming(&mut self.shared.state());
        if taken.is_some() {
            self.shared.to_driver.notify_waiters();
        }
        taken
    }

    /// Waits for the next message, or the end.
    pub async fn receive(&self) -> Incoming {
        let taken = self.shared.wait(&self.shared.to_app, take_incoming).await;
        self.shared.to_driver.notify_waiters();
        taken
    }

    /// Queues a message without waiting. `Ok(false)`: queued, but the output is over its
    /// bound; wait for [`Session::room`] before the next.
    pub fn try_send(&self, message: Outgoing) -> Result<bool, Closed> {
        let mut state = self.shared.state();
        if state.closed.is_some() || state.close_queued {
            return Err(Closed);
        }
        state.close_queued = matches!(message, Outgoing::Close { .. });
        state.queued += message.len();
        state.outgoing.push_back(message);
        let room = state.queued <= self.shared.bound;
        drop(state);
        self.shared.to_driver.notify_waiters();
        Ok(room)
    }

    /// Waits until the queued output is within its bound, or the connection ended.
    pub async fn room(&self) {
        let bound = self.shared.bound;
        self.shared
            .wait(&self.shared.to_app, |s| {
                (s.queued <= bound || s.closed.is_some()).then_some(())
            })
            .await;
    }

    /// Queues a message, then waits for room.
    pub async fn send(&self, message: Outgoing) -> Result<(), Closed> {
        if !self.try_send(message)? {
            self.room().await;
        }
        Ok(())
    }

    /// How the connection ended, once it has.
    pub fn closed(&self) -> Option<(u16, String)> {
        self.shared.state().closed.clone()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shared.state().app_gone = true;
        self.shared.to_driver.notify_waiters();
    }
}

fn take_incoming(state: &mut State) -> Option<Incoming> {
    if let Some(message) = state.incoming.take() {
        return Some(message);
    }
    let (code, reason) = state.closed.clone()?;
    Some(Incoming::Closed { code, reason })
}

/// Where the close handshake stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    /// The client broke the protocol after messages the application has yet to take: they
    /// go first, so its answers to them precede our close frame. The failure comes when the
    /// application asks for the message after them (it is handed the end), when it closes or
    /// leaves, or at the deadline.
    Failing(Instant, Failure),
    /// Our close frame is queued; the client's is awaited until the deadline.
    CloseSent(Instant),
    /// The close handshake is over (or the connection failed): write what is queued, send
    /// the FIN, then wait for the client's end until the deadline.
    Closing(Instant),
}

/// What a wait ended with.
enum Woken {
    App,
    Read(io::Result<usize>),
    Wrote(io::Result<usize>),
    Stop,
    Timer,
}

struct Driver<'a, T> {
    io: &'a T,
    shared: Arc<Shared>,
    options: &'a WsOptions,
    decoder: Decoder,
    encoder: Encoder,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    /// Bytes written since the connection began.
    sent: u64,
    /// The application's messages in `output`: where each ends (counted as `sent` is) and
    /// its payload bytes, released from `queued` once written.
    unsent: VecDeque<(u64, usize)>,
    phase: Phase,
    /// When the client was last heard from, or reading resumed.
    heard: Instant,
    /// When a keepalive ping went out unanswered.
    pinged: Option<Instant>,
    /// The client's end of the stream arrived.
    eof: bool,
    /// When writing last made progress, while output waits.
    write_since: Option<Instant>,
}

/// Serves a connection whose `101` went out, until it ends. `buffered`: bytes read after
/// the handshake request; `deflate`: the permessage-deflate parameters agreed; `stop`:
/// resolves when the worker stops, which closes the connection with 1001. Gives the bytes
/// written on the connection.
pub async fn serve<T: Transport>(
    io: &T,
    buffered: Vec<u8>,
    deflate: Option<&Params>,
    options: &WsOptions,
    link: Link,
    stop: impl Future<Output = ()>,
) -> u64 {
    let now = Instant::now();
    let mut driver = Driver {
        io,
        shared: Arc::clone(&link.shared),
        options,
        decoder: Decoder::new(options.max_message, deflate),
        encoder: Encoder::new(deflate),
        input: buffered,
        output: Vec::new(),
        written: 0,
        sent: 0,
        unsent: VecDeque::new(),
        phase: Phase::Open,
        heard: now,
        pinged: None,
        eof: false,
        write_since: None,
    };
    driver.run(stop).await;
    // However it ended, the application learns that it did.
    driver.ended(close::ABNORMAL, "");
    driver.sent
}

impl<T: Transport> Driver<'_, T> {
    async fn run(&mut self, stop: impl Future<Output = ()>) {
        let mut stop = pin!(stop);
        let mut stopped = false;
        let mut reading = true;
        loop {
            let shared = Arc::clone(&self.shared);
            let mut wake = pin!(shared.to_driver.notified());
            wake.as_mut().enable();
            self.take_outgoing();
            if let Phase::Failing(_, failure) = self.phase {
                if !self.slot_full() {
                    self.defer_failure(failure);
                }
            }
            if self.phase != Phase::Open || !self.slot_full() {
                self.decode_buffered();
            }
            // Written before deciding whether to read: a write that empties the output makes
            // room to read, and nothing else would wake the loop for it.
            if let Err(e) = self.write_now() {
                log_ended(&e);
                return;
            }
            // Keepalive time counts only while reading: a client is not silent while the
            // application holds us from reading it.
            // Nor while our output piles up unread (pongs to a flood of pings).
            let can_read = !self.eof
                && !matches!(self.phase, Phase::Failing(..))
                && (self.phase != Phase::Open || !self.slot_full())
                && self.output.len() - self.written < OUT_LIMIT;
            if can_read && !reading {
                self.heard = Instant::now();
                self.pinged = None;
            }
            reading = can_read;
            let pending = self.written < self.output.len();
            if let Phase::Closing(deadline) = self.phase {
                if !pending {
                    self.io.shutdown_write();
                    self.drain(deadline).await;
                    return;
                }
            }
            // A client gone after its last bytes: what is buffered still reaches the
            // application, once it has room.
            let undelivered =
                self.phase == Phase::Open && self.slot_full() && !self.input.is_empty();
            if self.eof && !pending && !undelivered {
                return;
            }
            let deadline = self.next_deadline(can_read, pending);
            let io = self.io;
            let input = &mut self.input;
            let out = &self.output[self.written..];
            let woken = tokio::select! {
                biased;
                _ = &mut stop, if !stopped => Woken::Stop,
                _ = wake => Woken::App,
                r = io.when_writable(|io| io.try_write(&[IoSlice::new(out)], false)), if pending
                    => Woken::Wrote(r),
                r = read_into(io, input, READ_CHUNK, None), if can_read => Woken::Read(r),
                _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some()
                    => Woken::Timer,
            };
            match woken {
                Woken::App => {}
                Woken::Stop => {
                    stopped = true;
                    self.close(close::GOING_AWAY, "server stopping");
                    // The application learns now, not when the client answers.
                    self.ended(close::GOING_AWAY, "");
                }
                Woken::Wrote(Ok(n)) => self.wrote(n),
                Woken::Read(Ok(n)) if n > 0 => {
                    self.heard = Instant::now();
                    self.pinged = None;
                }
                Woken::Read(Ok(_)) => self.eof = true,
                Woken::Read(Err(e)) | Woken::Wrote(Err(e)) => {
                    log_ended(&e);
                    return;
                }
                Woken::Timer => {
                    if !self.on_timer(can_read, pending) {
                        return;
                    }
                }
            }
        }
    }

    fn slot_full(&self) -> bool {
        let state = self.shared.state();
        state.incoming.is_some() && !state.app_gone
    }

    /// `n` more bytes of the output went out: the messages they finish leave the application's
    /// count.
    fn wrote(&mut self, n: usize) {
        self.written += n;
        self.sent += n as u64;
        self.write_since = Some(Instant::now());
        let mut released = 0;
        while let Some(&(end, len)) = self.unsent.front() {
            if end > self.sent {
                break;
            }
            released += len;
            self.unsent.pop_front();
        }
        self.release(released);
    }

    fn release(&self, bytes: usize) {
        if bytes > 0 {
            self.shared.state().queued -= bytes;
            self.shared.to_app.notify_waiters();
        }
    }

    /// Moves the application's queued messages into the output while it is short.
    fn take_outgoing(&mut self) {
        loop {
            if self.output.len() - self.written >= OUT_LOW {
                break;
            }
            let mut state = self.shared.state();
            let Some(message) = state.outgoing.pop_front() else {
                let gone = state.app_gone;
                drop(state);
                if gone && self.phase == Phase::Open {
                    // The application ended without closing: an internal error to the client.
                    self.close(close::INTERNAL_ERROR, "");
                }
                break;
            };
            drop(state);
            let len = message.len();
            if !matches!(self.phase, Phase::Open | Phase::Failing(..)) {
                // Nothing follows our close frame (RFC 6455 section 5.5.1).
                self.release(len);
                continue;
            }
            match message {
                Outgoing::Text(text) => {
                    self.encoder
                        .push_message(&mut self.output, true, text.as_bytes());
                }
                Outgoing::Binary(data) => self.encoder.push_message(&mut self.output, false, &data),
                Outgoing::Close { code, reason } => self.close(code, &reason),
            }
            let end = self.sent + (self.output.len() - self.written) as u64;
            self.unsent.push_back((end, len));
        }
    }

    /// Queues our close frame and waits for the client's.
    fn close(&mut self, code: u16, reason: &str) {
        if let Phase::Failing(_, failure) = self.phase {
            // The failure's code, not ours, tells the client what it broke.
            return self.fail(failure);
        }
        if self.phase != Phase::Open {
            return;
        }
        frame::push_close(&mut self.output, code, reason);
        self.phase = Phase::CloseSent(Instant::now() + self.options.close_timeout);
    }

    /// Decodes what is buffered, while the application has room for a message.
    fn decode_buffered(&mut self) {
        let mut used = 0;
        while used < self.input.len() {
            if self.phase == Phase::Open && self.slot_full() {
                break;
            }
            if matches!(self.phase, Phase::Closing(_) | Phase::Failing(..)) {
                // Nothing the client sends now is read.
                used = self.input.len();
                break;
            }
            match self.decoder.decode(&self.input[used..]) {
                Ok((n, event)) => {
                    used += n;
                    match event {
                        Some(event) => self.on_event(event),
                        None => break,
                    }
                }
                Err(failure) => {
                    used = self.input.len();
                    self.defer_failure(failure);
                }
            }
        }
        self.input.drain(..used);
    }

    fn on_event(&mut self, event: Event) {
        match (event, self.phase) {
            (Event::Text(text), Phase::Open) => self.deliver(Incoming::Text(text)),
            (Event::Binary(data), Phase::Open) => self.deliver(Incoming::Binary(data)),
            (Event::Ping(payload), Phase::Open) => {
                frame::push_control(&mut self.output, Kind::Pong, &payload);
            }
            (Event::Close(received), phase) => {
                let (code, reason) = received.unwrap_or((close::NO_STATUS, String::new()));
                if phase == Phase::Open {
                    // Echo the client's code (RFC 6455 section 5.5.1).
                    frame::push_close(&mut self.output, code, "");
                }
                self.ended(code, &reason);
                self.phase = Phase::Closing(Instant::now() + self.options.close_timeout);
            }
            // Pongs need no answer; data after our close frame is dropped.
            _ => {}
        }
    }

    fn deliver(&mut self, message: Incoming) {
        let mut state = self.shared.state();
        if state.app_gone {
            return;
        }
        state.incoming = Some(message);
        drop(state);
        self.shared.to_app.notify_waiters();
    }

    /// The client broke the protocol. While the connection is open and the application is
    /// there, the end waits in the message slot behind what it has not taken yet.
    fn defer_failure(&mut self, failure: Failure) {
        if self.phase != Phase::Open {
            return self.fail(failure);
        }
        let mut state = self.shared.state();
        if state.app_gone {
            drop(state);
            return self.fail(failure);
        }
        // Decoding stops while the slot is full, so it is empty here: the end goes in it, and
        // the next receive is where the connection fails.
        if state.incoming.is_none() {
            state.incoming = Some(Incoming::Closed {
                code: close::ABNORMAL,
                reason: failure.reason.to_owned(),
            });
        }
        drop(state);
        self.shared.to_app.notify_waiters();
        self.phase = Phase::Failing(Instant::now() + self.options.close_timeout, failure);
    }

    /// Close with the failure's code, wait for nothing more.
    fn fail(&mut self, failure: Failure) {
        if matches!(self.phase, Phase::Open | Phase::Failing(..)) {
            frame::push_close(&mut self.output, failure.code, failure.reason);
        }
        self.ended(close::ABNORMAL, failure.reason);
        self.phase = Phase::Closing(Instant::now() + self.options.close_timeout);
    }

    /// Records how the connection ended, once, and tells the application.
    fn ended(&self, code: u16, reason: &str) {
        let mut state = self.shared.state();
        if state.closed.is_none() {
            state.closed = Some((code, reason.to_owned()));
        }
        drop(state);
        self.shared.to_app.notify_waiters();
    }

    /// Writes what it can without waiting.
    fn write_now(&mut self) -> io::Result<()> {
        while self.written < self.output.len() {
            match self
                .io
                .try_write(&[IoSlice::new(&self.output[self.written..])], false)?
            {
                Some(0) => return Err(io::ErrorKind::WriteZero.into()),
                Some(n) => self.wrote(n),
                None => break,
            }
        }
        if self.written == self.output.len() {
            self.output.clear();
            self.written = 0;
            self.write_since = None;
        } else if self.write_since.is_none() {
            self.write_since = Some(Instant::now());
        }
        Ok(())
    }

    /// The earliest timer that matters now.
    fn next_deadline(&self, can_read: bool, pending: bool) -> Option<Instant> {
        let mut deadlines: [Option<Instant>; 2] = [None; 2];
        match self.phase {
            Phase::Failing(at, _) | Phase::CloseSent(at) | Phase::Closing(at) => {
                deadlines[0] = Some(at)
            }
            Phase::Open if can_read => {
                deadlines[0] = self.options.ping_interval.map(|every| self.ping_due(every));
            }
            Phase::Open => {}
        }
        if pending {
            deadlines[1] = self.write_since.map(|at| at + self.options.write_timeout);
        }
        deadlines.into_iter().flatten().min()
    }

    /// When the next keepalive ping is due, or the unanswered one times out.
    fn ping_due(&self, every: Duration) -> Instant {
        match self.pinged {
            Some(at) => at + self.options.ping_timeout.unwrap_or(every),
            None => self.heard + every,
        }
    }

    /// A timer fired. False: the connection is over.
    fn on_timer(&mut self, can_read: bool, pending: bool) -> bool {
        let now = Instant::now();
        if pending {
            if let Some(at) = self.write_since {
                if now >= at + self.options.write_timeout {
                    return false;
                }
            }
        }
        match self.phase {
            Phase::Failing(at, failure) => {
                if now >= at {
                    self.defer_failure(failure);
                }
                true
            }
            Phase::CloseSent(at) | Phase::Closing(at) => now < at,
            Phase::Open if can_read => {
                let Some(every) = self.options.ping_interval else {
                    return true;
                };
                if now < self.ping_due(every) {
                    return true;
                }
                if self.pinged.is_some() && self.options.ping_timeout.is_some() {
                    self.fail(Failure {
                        code: close::INTERNAL_ERROR,
                        reason: "keepalive ping timeout",
                    });
                } else {
                    frame::push_control(&mut self.output, Kind::Ping, b"");
                    self.pinged = Some(now);
                }
                true
            }
            Phase::Open => true,
        }
    }

    /// After our FIN: reads and drops what the client still sends until its end or the
    /// deadline, so closing does not reset a connection whose client has not read our close.
    async fn drain(&mut self, deadline: Instant) {
        let mut total = 0;
        while !self.eof && total < DRAIN_LIMIT {
            self.input.clear();
            let read = read_into(self.io, &mut self.input, READ_CHUNK, None);
            match tokio::time::timeout_at(deadline, read).await {
                Ok(Ok(n)) if n > 0 => total += n,
                _ => break,
            }
        }
    }
}

/// A client that went away mid-connection is no error worth more than a debug line.
fn log_ended(e: &io::Error) {
    crate::log::debug(format_args!("WebSocket connection ended: {e}"));
}
