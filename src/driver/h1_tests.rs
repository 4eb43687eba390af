//! The HTTP/1 driver on an in-memory transport, with tokio's clock paused: every timeout
//! fires as soon as nothing else can happen, so a test of a 60-second idle limit takes no time.
//!
//! The application is a small Rust service that answers each request with its method, target
//! and how much of the body it was handed.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::body::BodyTarget;
use super::h1::Conn;
use super::output::OutQueue;
use super::shed::Shedding;
use super::{ConnInfo, Options, Outcome, Request, Response, Service};
use crate::http::forwarded::AllowList;
use crate::http::{proxy, HttpError, Limits, RequestHead};
use crate::net::memory::{self, Client, Memory};
use crate::net::Peer;

/// A test application: records what it was called with, answers in one piece, or, for the
/// target `/paused`, in `PAUSED_PARTS` pieces paused at the output bound.
struct Echo {
    options: Options,
    shedding: Shedding,
    stopping: Cell<bool>,
    /// (method, target, body bytes handed over) of each call.
    calls: RefCell<Vec<(String, String, usize)>>,
    /// Statuses reported of finished requests (0: no response).
    reported: RefCell<Vec<u16>>,
}

const PAUSED_PARTS: usize = 3;
const PART: &[u8] = b"0123456789";

/// The rest of a paused response: how many parts are still to come.
struct Rest(usize);

impl Echo {
    fn new() -> Rc<Echo> {
        Rc::new(Echo {
            options: Options {
                keepalive: Duration::from_secs(5),
                head_timeout: Duration::from_secs(10),
                body_timeout: Duration::from_secs(20),
                body_buffer: 64,
                write_timeout: Duration::from_secs(30),
                limits: Limits::default(),
                proxy_mode: proxy::Mode::Off,
                proxy_allow: AllowList::new(&[]).expect("an empty allow list"),
                h2: Default::default(),
            },
            shedding: Shedding::new(),
            stopping: Cell::new(false),
            calls: RefCell::new(Vec::new()),
            reported: RefCell::new(Vec::new()),
        })
    }

    fn calls(&self) -> Vec<(String, String, usize)> {
        self.calls.borrow().clone()
    }
}

fn respond(head_close: bool, body: &[u8], chunked: bool) -> OutQueue {
    let mut out = OutQueue::new();
    let connection = if head_close { "close" } else { "keep-alive" };
    if chunked {
        out.push_slice(
            format!(
                "HTTP/1.1 200 OK\r\nConnection: {connection}\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            .as_bytes(),
        );
    } else {
        out.push_slice(
            format!(
                "HTTP/1.1 200 OK\r\nConnection: {connection}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        out.push_slice(body);
    }
    out
}

impl Service<Memory> for Echo {
    type Paused = Rest;
    type Record = String;

    fn options(&self) -> &Options {
        &self.options
    }

    fn shedding(&self) -> &Shedding {
        &self.shedding
    }

    fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    fn reports(&self) -> bool {
        true
    }

    fn report(&self, status: u16, _record: Option<Box<String>>, _elapsed: Duration) {
        self.reported.borrow_mut().push(status);
    }

    fn refused_record(&self, head: RequestHead, _conn: &ConnInfo, _err: &HttpError) -> Box<String> {
        Box::new(head.method.to_string())
    }

    fn body_target(&self, _len: usize) -> Option<Box<dyn BodyTarget>> {
        None
    }

    async fn call(&self, request: Request<Memory>) -> Option<Outcome<Memory, Rest, String>> {
        let Request {
            head,
            body,
            transport,
            keep_alive,
            closing,
            ..
        } = request;
        let target = String::from_utf8_lossy(head.target()).into_owned();
        let handed = body.available();
        self.calls
            .borrow_mut()
            .push((head.method.to_string(), target.clone(), handed));
        let close = closing || !keep_alive;
        let mut response = if target == "/paused" {
            let mut response = Response::ended(respond(close, b"", true), Some(body), 200);
            response.paused = Some(Box::new(Rest(PAUSED_PARTS)));
            response
        } else {
            let text = format!("{} {target} {handed}", head.method);
            Response::ended(respond(close, text.as_bytes(), false), Some(body), 200)
        };
        response.keep_alive = !close;
        Some(Outcome {
            transport,
            response,
        })
    }

    fn resume(&self, paused: Rest, transport: Arc<Memory>) -> Outcome<Memory, Rest, String> {
        let mut out = OutQueue::new();
        out.push_slice(format!("{:X}\r\n", PART.len()).as_bytes());
        out.push_slice(PART);
        out.push_slice(b"\r\n");
        let mut response = Response::ended(out, None, 200);
        if paused.0 > 1 {
            response.paused = Some(Box::new(Rest(paused.0 - 1)));
        } else {
            response.out.push_slice(b"0\r\n\r\n");
        }
        Outcome {
            transport,
            response,
        }
    }

    fn abandon(&self, _paused: Rest) {}

    fn request_done(&self) {}

    async fn hold_response(&self) {}
}

/// Runs the connection and the client script together, failing if they take longer than
/// any of the driver's limits could explain (on the paused clock this costs no real time).
async fn run<F: Future<Output = ()>>(echo: &Rc<Echo>, script: impl FnOnce(Client) -> F) {
    let (server, client) = memory::pair();
    let peer = Peer::Tcp("127.0.0.1:4000".parse().expect("an address"));
    let conn = Conn::new(peer, 0, Rc::clone(echo)).serve(server);
    let both = async { tokio::join!(conn, script(client)) };
    tokio::time::timeout(Duration::from_secs(3600), both)
        .await
        .expect("the connection and the client finish");
}

/// Waits until the client has received `n` complete responses (counted by status line) or the
/// server closed, and returns everything received.
async fn responses(client: &Client, received: &mut Vec<u8>, n: usize) -> Vec<u8> {
    loop {
        received.extend(client.take_output());
        let count = received
            .windows(9)
            .filter(|w| w.starts_with(b"HTTP/1.1 "))
            .count();
        if count >= n || client.server_closed() {
            return received.clone();
        }
        client.output_changed().await;
    }
}

/// Waits until the server closes its side.
async fn closed(client: &Client) -> Vec<u8> {
    let mut received = Vec::new();
    while !client.server_closed() {
        client.output_changed().await;
        received.extend(client.take_output());
    }
    received.extend(client.take_output());
    received
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(start_paused = true)]
async fn a_head_split_into_single_bytes_is_served_once() {
    let echo = Echo::new();
    run(&echo, |client| async move {
        for byte in b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n" {
            client.send(&[*byte]);
            tokio::task::yield_now().await;
        }
        let got = responses(&client, &mut Vec::new(), 1).await;
        assert!(text(&got).ends_with("GET /one 0"), "{}", text(&got));
        client.close();
    })
    .await;
    assert_eq!(echo.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn pipelined_requests_are_answered_in_order() {
    let echo = Echo::new();
    run(&echo, |client| async move {
        client.send(
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /c HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        let got = text(&responses(&client, &mut Vec::new(), 3).await);
        let a = got.find("GET /a 0").expect("first answer");
        let b = got.find("POST /b 3").expect("second answer");
        let c = got.find("GET /c 0").expect("third answer");
        assert!(a < b && b < c, "{got}");
        assert!(!client.server_closed());
        client.close();
    })
    .await;
    assert_eq!(echo.calls().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_chunked_body_split_across_reads_is_decoded() {
    let echo = Echo::new();
    run(&echo, |client| async move {
        client.send(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
        tokio::task::yield_now().await;
        client.send(b"lo\r\n6;ext=1\r\n world\r\n0\r\n\r\n");
        let got = text(&responses(&client, &mut Vec::new(), 1).await);
        assert!(got.ends_with("POST /up 11"), "{got}");
        client.close();
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_body_past_the_buffer_is_handed_over_in_part_and_the_rest_drained() {
    let echo = Echo::new();
    run(&echo, |client| async move {
        // 200 body bytes against a 64-byte buffer: the application gets 64, the driver
        // discards the rest after the response, and the next request is served.
        let mut request = b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n".to_vec();
        request.extend([b'x'; 200]);
        request.extend(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n");
        client.send(&request);
        let got = text(&responses(&client, &mut Vec::new(), 2).await);
        assert!(got.contains("POST /big 64"), "{got}");
        assert!(got.ends_with("GET /next 0"), "{got}");
        client.close();
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn expect_continue_gets_100_before_the_body_is_sent() {
    let echo = Echo::new();
    run(&echo, |client| async move {
        client.send(
            b"PUT /p HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
        );
        let got = text(&responses(&client, &mut Vec::new(), 1).await);
        assert_eq!(got, "HTTP/1.1 100 Continue\r\n\r\n");
        client.send(b"data");
        let mut received = got.into_bytes();
        let got = text(&responses(&client, &mut received, 2).await);
        assert!(got.ends_with("PUT /p 4"), "{got}");
        client.close();
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn an_incomplete_head_gets_408_at_the_header_timeout() {
    let echo = Echo::new();
    let started = Instant::now();
    run(&echo, |client| async move {
        client.send(b"GET /slow HTTP/1.1\r\nHost:");
        let got = text(&closed(&client).await);
        assert!(got.starts_with("HTTP/1.1 408 "), "{got}");
        client.close();
    })
    .await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(10), "{waited:?}");
    assert!(waited < Duration::from_secs(12), "{waited:?}");
    assert!(echo.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_idle_kept_alive_connection_closes_quietly_after_keep_alive() {
    let echo = Echo::new();
    let idle = Rc::new(Cell::new(None));
    let seen = Rc::clone(&idle);
    run(&echo, |client| async move {
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        responses(&client, &mut Vec::new(), 1).await;
        let answered = Instant::now();
        let after = closed(&client).await;
        // No error answer on an idle connection: just the FIN.
        assert!(after.is_empty(), "{}", text(&after));
        seen.set(Some(answered.elapsed()));
        client.close();
    })
    .await;
    let idle = idle.get().expect("the connection closed");
    assert!(
        idle >= Duration::from_secs(5) && idle < Duration::from_secs(7),
        "{idle:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_that_stops_arriving_gets_408_at_the_body_timeout() {
    let echo = Echo::new();
    run(&echo, |client| async move {
        client.send(b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
        let got = text(&closed(&client).await);
        assert!(got.starts_with("HTTP/1.1 408 "), "{got}");
        client.close();
    })
    .await;
    assert!(echo.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_malformed_head_gets_400_and_never_reaches_the_application() {
    let echo = Echo::new();
    run(&echo, |client| async move {
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n");
        let got = text(&closed(&client).await);
        assert!(got.starts_with("HTTP/1.1 400 "), "{got}");
        client.close();
    })
    .await;
    assert!(echo.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_client_leaving_mid_head_is_not_answered() {
    let echo = Echo::new();
    run(&echo, |client| async move {
        client.send(b"GET / HTTP/1.1\r\nHo");
        tokio::task::yield_now().await;
        client.close();
        assert!(text(&client.take_output()).is_empty());
    })
    .await;
    assert!(echo.calls().is_empty());
    assert!(echo.reported.borrow().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_slow_reader_gets_a_paused_response_piece_by_piece() {
    let echo = Echo::new();
    run(&echo, |client| async move {
        client.set_room(Some(7));
        client.send(b"GET /paused HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut received = Vec::new();
        // Seven bytes at a time, as the client makes room.
        while !text(&received).ends_with("0\r\n\r\n") {
            client.output_changed().await;
            let got = client.take_output();
            assert!(got.len() <= 7, "{}", got.len());
            received.extend(got);
            client.set_room(Some(7));
        }
        let got = text(&received);
        assert_eq!(got.matches("0123456789").count(), PAUSED_PARTS, "{got}");
        client.close();
    })
    .await;
    assert_eq!(*echo.reported.borrow(), vec![200]);
}

#[tokio::test(start_paused = true)]
async fn a_reader_that_never_reads_is_dropped_at_the_write_timeout() {
    let echo = Echo::new();
    let started = Instant::now();
    run(&echo, |client| async move {
        client.set_room(Some(0));
        client.send(b"GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n");
        // The connection ends without the client ever reading: the join completes.
    })
    .await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(32),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_during_a_stop_is_served_with_connection_close() {
    let echo = Echo::new();
    run(&echo, |client| {
        let echo = Rc::clone(&echo);
        async move {
            client.send(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut received = Vec::new();
            responses(&client, &mut received, 1).await;
            // The worker begins to stop while the connection idles: the next request is still
            // served (it may have crossed the stop on the wire), announcing the close.
            echo.stopping.set(true);
            client.send(b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n");
            let got = text(&closed(&client).await);
            assert!(got.contains("Connection: close"), "{got}");
            assert!(got.ends_with("GET /second 0"), "{got}");
            client.close();
        }
    })
    .await;
    assert_eq!(echo.calls().len(), 2);
}
