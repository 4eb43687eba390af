//! The WebSocket driver on an in-memory transport, with tokio's clock paused: timeouts fire
//! as soon as nothing else can happen.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::ws::{pair, serve, Incoming, Outgoing, Session, WsOptions};
use crate::http::ws::deflate::negotiate;
use crate::http::ws::frame::{masked_frame, Decoder, Event};
use crate::net::memory::{self, Client, Memory};
use crate::net::Io;

const MASK: [u8; 4] = [0xa1, 0x02, 0x7c, 0x3f];

fn options() -> WsOptions {
    WsOptions {
        max_message: 1 << 20,
        output_bound: 1024,
        close_timeout: Duration::from_secs(5),
        ping_interval: None,
        ping_timeout: Some(Duration::from_secs(20)),
        write_timeout: Duration::from_secs(30),
    }
}

/// A masked client frame with FIN set.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    masked_frame(0x80 | opcode, payload, MASK)
}

/// Server frames as (first byte, payload); `buf` keeps a partial frame for later.
fn server_frames(buf: &mut Vec<u8>) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    loop {
        if buf.len() < 2 {
            return frames;
        }
        assert_eq!(buf[1] & 0x80, 0, "server frames are not masked");
        let (len, at) = match buf[1] & 0x7f {
            126 => {
                if buf.len() < 4 {
                    return frames;
                }
                (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
            }
            127 => {
                if buf.len() < 10 {
                    return frames;
                }
                let mut len = [0u8; 8];
                len.copy_from_slice(&buf[2..10]);
                (u64::from_be_bytes(len) as usize, 10)
            }
            n => (n as usize, 2),
        };
        if buf.len() < at + len {
            return frames;
        }
        frames.push((buf[0], buf[at..at + len].to_vec()));
        buf.drain(..at + len);
    }
}

/// The client's view: frames received so far.
struct Peer {
    client: Client,
    buf: Vec<u8>,
}

impl Peer {
    /// Waits for the next `n` frames (fewer if the server closes first).
    async fn frames(&mut self, n: usize) -> Vec<(u8, Vec<u8>)> {
        let mut got = Vec::new();
        loop {
            self.buf.extend(self.client.take_output());
            got.extend(server_frames(&mut self.buf));
            if got.len() >= n || self.client.server_closed() {
                return got;
            }
            self.client.output_changed().await;
        }
    }

    /// Sends a close frame with `payload`, waits for the server's FIN and closes; returns the
    /// frames before the FIN.
    async fn close_with(&mut self, payload: &[u8]) -> Vec<(u8, Vec<u8>)> {
        self.client.send(&frame(0x8, payload));
        let got = self.until_closed().await;
        self.client.close();
        got
    }

    /// Waits for the server's FIN; returns the frames before it.
    async fn until_closed(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut got = Vec::new();
        loop {
            self.buf.extend(self.client.take_output());
            got.extend(server_frames(&mut self.buf));
            if self.client.server_closed() {
                return got;
            }
            self.client.output_changed().await;
        }
    }
}

/// Runs the driver, the application and the client script together, within a bound of time
/// far above any of the driver's limits (free on the paused clock).
async fn run<A, S>(
    options: WsOptions,
    deflate: Option<&str>,
    app: impl FnOnce(Session) -> A,
    script: impl FnOnce(Peer, Arc<Memory>) -> S,
) where
    A: Future<Output = ()>,
    S: Future<Output = ()>,
{
    run_until(std::future::pending(), options, deflate, app, script).await;
}

/// [`run`], the worker stopping when `stop` resolves.
async fn run_until<A, S>(
    stop: impl Future<Output = ()>,
    options: WsOptions,
    deflate: Option<&str>,
    app: impl FnOnce(Session) -> A,
    script: impl FnOnce(Peer, Arc<Memory>) -> S,
) where
    A: Future<Output = ()>,
    S: Future<Output = ()>,
{
    let (server, client) = memory::pair();
    let server = Arc::new(server);
    let (session, link) = pair(options.output_bound);
    let params = deflate.and_then(|offer| negotiate([offer.as_bytes()]));
    let conn = serve(&*server, Vec::new(), params.as_ref(), &options, link, stop);
    let peer = Peer {
        client,
        buf: Vec::new(),
    };
    let all = async { tokio::join!(conn, app(session), script(peer, Arc::clone(&server))) };
    tokio::time::timeout(Duration::from_secs(3600), all)
        .await
        .expect("the connection, the application and the client finish");
}

/// [`run`] with [`echo`] as the application.
async fn run_echo<S: Future<Output = ()>>(
    options: WsOptions,
    deflate: Option<&str>,
    script: impl FnOnce(Peer, Arc<Memory>) -> S,
) {
    run(
        options,
        deflate,
        |session| async move {
            echo(session).await;
        },
        script,
    )
    .await;
}

/// Sends the application's close.
async fn close(session: &Session, code: u16, reason: &str) {
    let reason = reason.to_owned();
    session
        .send(Outgoing::Close { code, reason })
        .await
        .expect("open");
}

/// Echoes every message until the connection ends; returns how it ended.
async fn echo(session: Session) -> Incoming {
    loop {
        match session.receive().await {
            Incoming::Text(text) => {
                let _ = session.send(Outgoing::Text(text)).await;
            }
            Incoming::Binary(data) => {
                let _ = session.send(Outgoing::Binary(data)).await;
            }
            closed => return closed,
        }
    }
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload
}

#[tokio::test(start_paused = true)]
async fn messages_are_echoed_and_pings_answered() {
    run(
        options(),
        None,
        |session| async move {
            let end = echo(session).await;
            assert_eq!(
                end,
                Incoming::Closed {
                    code: 1000,
                    reason: "done".into()
                }
            );
        },
        |mut peer, _| async move {
            peer.client.send(&frame(0x1, b"hello"));
            assert_eq!(peer.frames(1).await, [(0x81, b"hello".to_vec())]);
            // A fragmented binary message with a ping between its fragments.
            let mut first = frame(0x2, b"ab");
            first[0] &= 0x7f;
            peer.client.send(&first);
            peer.client.send(&frame(0x9, b"are you there"));
            peer.client.send(&frame(0x0, b"cd"));
            assert_eq!(
                peer.frames(2).await,
                [(0x8a, b"are you there".to_vec()), (0x82, b"abcd".to_vec())]
            );
            peer.client.send(&frame(0x8, &close_payload(1000, "done")));
            // The code is echoed, then the server closes its end.
            assert_eq!(peer.until_closed().await, [(0x88, close_payload(1000, ""))]);
            peer.client.close();
        },
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn protocol_errors_close_with_their_code() {
    for (input, code) in [
        (vec![0x81, 0x01, b'x'], 1002u16),
        (frame(0x1, b"\xce\xba\xed\xa0\x80"), 1007),
        (frame(0x3, b""), 1002),
        (frame(0x2, &[0; 2000]), 1009),
    ] {
        let mut options = options();
        options.max_message = 1000;
        run(
            options,
            None,
            |session| async move {
                let end = echo(session).await;
                assert!(
                    matches!(end, Incoming::Closed { code: 1006, .. }),
                    "{end:?}"
                );
            },
            |mut peer, _| async move {
                peer.client.send(&input);
                let got = peer.until_closed().await;
                assert_eq!(got.len(), 1, "{got:?}");
                assert_eq!(got[0].0, 0x88);
                assert_eq!(got[0].1[..2], code.to_be_bytes());
                peer.client.close();
            },
        )
        .await;
    }
}

#[tokio::test(start_paused = true)]
async fn invalid_text_fails_before_the_frame_ends() {
    run_echo(options(), None, |mut peer, _| async move {
        let whole = frame(
            0x1,
            b"\xce\xba\xe1\xbd\xb9\xf4\x90\x80\x80 and much more text",
        );
        // The header and the bytes up to the invalid one; the rest never comes.
        peer.client.send(&whole[..6 + 7]);
        let got = peer.until_closed().await;
        assert_eq!(
            got,
            [(0x88, close_payload(1007, "invalid UTF-8 in a text message"))]
        );
        peer.client.close();
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_application_closes_and_the_client_answers() {
    run(
        options(),
        None,
        |session| async move {
            close(&session, 4000, "bye").await;
            assert!(session.try_send(Outgoing::Text("late".into())).is_err());
            let end = session.receive().await;
            assert_eq!(
                end,
                Incoming::Closed {
                    code: 4000,
                    reason: String::new()
                }
            );
        },
        |mut peer, _| async move {
            assert_eq!(peer.frames(1).await, [(0x88, close_payload(4000, "bye"))]);
            // Data after the server's close is dropped; the close answer ends it.
            peer.client.send(&frame(0x1, b"ignored"));
            assert!(peer.close_with(&close_payload(4000, "")).await.is_empty());
        },
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_answers_the_close_is_dropped_after_the_timeout() {
    let started = tokio::time::Instant::now();
    run(
        options(),
        None,
        |session| async move {
            close(&session, 1000, "").await;
            let end = session.receive().await;
            assert!(
                matches!(end, Incoming::Closed { code: 1006, .. }),
                "{end:?}"
            );
        },
        |mut peer, _| async move {
            assert_eq!(peer.frames(1).await, [(0x88, close_payload(1000, ""))]);
        },
    )
    .await;
    assert_eq!(started.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn reading_waits_for_the_application_to_take_each_message() {
    run(
        options(),
        None,
        |session| async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            for expected in ["one", "two", "three"] {
                assert_eq!(session.receive().await, Incoming::Text(expected.into()));
            }
            close(&session, 1000, "").await;
            session.receive().await;
        },
        |mut peer, server| async move {
            let mut input = frame(0x1, b"one");
            input.extend(frame(0x1, b"two"));
            let third = frame(0x1, b"three");
            input.extend(&third);
            peer.client.send(&input);
            tokio::time::sleep(Duration::from_secs(5)).await;
            // The first message waits for the application; the rest stays unread (its
            // first read may have taken more, but not the whole third frame's successor).
            peer.client.send(&frame(0x1, b"four"));
            assert!(server.unread_len() > 0, "the driver kept reading");
            let got = peer.frames(1).await;
            assert_eq!(got[0].0, 0x88);
            peer.close_with(&close_payload(1000, "")).await;
        },
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn sends_wait_while_the_client_does_not_read() {
    run(
        options(),
        None,
        |session| async move {
            // 1024 payload bytes may wait unsent: the third message of 400 is past the bound.
            for _ in 0..2 {
                assert_eq!(session.try_send(Outgoing::Binary(vec![7; 400])), Ok(true));
                tokio::task::yield_now().await;
            }
            let waited = tokio::time::Instant::now();
            session
                .send(Outgoing::Binary(vec![7; 400]))
                .await
                .expect("open");
            assert_eq!(
                waited.elapsed(),
                Duration::from_secs(2),
                "the send did not wait"
            );
            echo(session).await;
        },
        |mut peer, _| async move {
            peer.client.set_room(Some(0));
            tokio::time::sleep(Duration::from_secs(2)).await;
            peer.client.set_room(None);
            let got = peer.frames(3).await;
            assert_eq!(got.len(), 3);
            assert!(got
                .iter()
                .all(|(b0, data)| *b0 == 0x82 && data.len() == 400));
            assert_eq!(peer.close_with(b"").await, [(0x88, Vec::new())]);
        },
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_pinged_then_dropped() {
    let mut options = options();
    options.ping_interval = Some(Duration::from_secs(20));
    options.ping_timeout = Some(Duration::from_secs(10));
    let started = tokio::time::Instant::now();
    run_echo(options, None, |mut peer, _| async move {
        assert_eq!(peer.frames(1).await, [(0x89, Vec::new())]);
        assert_eq!(started.elapsed(), Duration::from_secs(20));
        // A pong (any byte) restarts the wait.
        peer.client.send(&frame(0xa, b""));
        assert_eq!(peer.frames(1).await, [(0x89, Vec::new())]);
        assert_eq!(started.elapsed(), Duration::from_secs(40));
        let got = peer.until_closed().await;
        assert_eq!(got, [(0x88, close_payload(1011, "keepalive ping timeout"))]);
        assert_eq!(started.elapsed(), Duration::from_secs(50));
        peer.client.close();
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn an_application_that_leaves_without_closing_gets_1011() {
    run(
        options(),
        None,
        |session| async move {
            assert_eq!(session.receive().await, Incoming::Text("hi".into()));
            drop(session);
        },
        |mut peer, _| async move {
            peer.client.send(&frame(0x1, b"hi"));
            assert_eq!(peer.frames(1).await, [(0x88, close_payload(1011, ""))]);
            peer.close_with(&close_payload(1011, "")).await;
        },
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn compressed_messages_are_inflated_and_answers_deflated() {
    let offer = "permessage-deflate; server_no_context_takeover";
    run_echo(options(), Some(offer), |mut peer, _| async move {
        // RFC 7692 section 7.2.3.1: "Hello", compressed.
        peer.client
            .send(&frame(0x41, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]));
        let got = peer.frames(1).await;
        assert_eq!(got[0].0, 0xc1, "compressed text");
        // Decoded as a client would, with the server's bit.
        let params = negotiate([offer.as_bytes()]).expect("accepted");
        let mut decoder = Decoder::new(1 << 20, Some(&params));
        let mut masked = vec![0xc1, 0x80 | got[0].1.len() as u8, 0, 0, 0, 0];
        masked.extend(&got[0].1);
        let (_, event) = decoder.decode(&masked).expect("valid");
        assert_eq!(event, Some(Event::Text("Hello".into())));
        peer.close_with(b"").await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_client_that_vanishes_ends_the_session() {
    run(
        options(),
        None,
        |session| async move {
            let end = echo(session).await;
            assert!(
                matches!(end, Incoming::Closed { code: 1006, .. }),
                "{end:?}"
            );
        },
        |peer, _| async move {
            peer.client.send(&frame(0x1, b"partial")[..4]);
            peer.client.close();
        },
    )
    .await;
}

/// The end the application sees when the client broke the protocol or vanished.
fn assert_dropped(end: &Incoming) {
    assert!(
        matches!(end, Incoming::Closed { code: 1006, .. }),
        "{end:?}"
    );
}

/// Sends a valid text message "first" and `bad` in one burst; returns the server's frames
/// until its FIN, after which the client closes too.
async fn first_then(mut peer: Peer, bad: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut input = frame(0x1, b"first");
    input.extend(bad);
    peer.client.send(&input);
    let got = peer.until_closed().await;
    peer.client.close();
    got
}

#[tokio::test(start_paused = true)]
async fn messages_before_a_protocol_error_are_answered_before_the_close() {
    run(
        options(),
        None,
        |session| async move {
            assert_eq!(session.receive().await, Incoming::Text("first".into()));
            // The answer takes a while; the failure behind the message waits for it.
            tokio::time::sleep(Duration::from_secs(1)).await;
            session
                .send(Outgoing::Text("first".into()))
                .await
                .expect("still open");
            assert_dropped(&session.receive().await);
        },
        |peer, _| async move {
            // A frame with a reserved bit, then a ping, behind the valid message.
            let mut bad = frame(0x41, b"bad");
            bad.extend(frame(0x9, b""));
            let got = first_then(peer, &bad).await;
            assert_eq!(got.len(), 2, "{got:?}");
            assert_eq!(got[0], (0x81, b"first".to_vec()));
            assert_eq!(got[1].0, 0x88);
            assert_eq!(got[1].1[..2], 1002u16.to_be_bytes());
        },
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_deferred_failure_waits_no_longer_than_the_close_timeout() {
    let started = tokio::time::Instant::now();
    run(
        options(),
        None,
        |session| async move {
            assert_eq!(session.receive().await, Incoming::Text("first".into()));
            // Never asks for the next message while the connection lasts.
            tokio::time::sleep(Duration::from_secs(60)).await;
            assert_dropped(&session.receive().await);
        },
        |peer, _| async move {
            let got = first_then(peer, &frame(0x3, b"")).await;
            assert_eq!(got.len(), 1, "{got:?}");
            assert_eq!(got[0].1[..2], 1002u16.to_be_bytes());
            assert_eq!(started.elapsed(), Duration::from_secs(5));
        },
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn without_a_ping_timeout_pings_go_on_each_interval() {
    let mut options = options();
    options.ping_interval = Some(Duration::from_secs(20));
    options.ping_timeout = None;
    let started = tokio::time::Instant::now();
    run_echo(options, None, |mut peer, _| async move {
        for n in 1..=3 {
            assert_eq!(peer.frames(1).await, [(0x89, Vec::new())]);
            assert_eq!(started.elapsed(), Duration::from_secs(20 * n));
        }
        assert_eq!(peer.close_with(b"").await, [(0x88, Vec::new())]);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_stopping_worker_closes_with_1001() {
    let started = tokio::time::Instant::now();
    run_until(
        tokio::time::sleep(Duration::from_secs(10)),
        options(),
        None,
        |session| async move {
            let end = echo(session).await;
            assert_eq!(
                end,
                Incoming::Closed {
                    code: 1001,
                    reason: String::new()
                }
            );
            assert_eq!(started.elapsed(), Duration::from_secs(10));
        },
        |mut peer, _| async move {
            let got = peer.frames(1).await;
            assert_eq!(got, [(0x88, close_payload(1001, "server stopping"))]);
            assert_eq!(started.elapsed(), Duration::from_secs(10));
            assert!(peer.close_with(&close_payload(1001, "")).await.is_empty());
        },
    )
    .await;
}
