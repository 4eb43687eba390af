//! A WebSocket echo endpoint on ferrocorn's handshake codec and WebSocket driver, without an
//! application interface: what the Autobahn suite runs against to test them on their own.
//!
//!     cargo run --release --example ws_echo -- 9001
//!     python tests/autobahn/run.py --serve 'target/release/examples/ws_echo {port}'
//!
//! Serves 127.0.0.1 on the port given (0, the default, picks one) and prints
//! `Listening at: ws://127.0.0.1:PORT/`. Every message is sent back as it came.

use std::io::{self, IoSlice};
use std::os::fd::OwnedFd;
use std::time::Duration;

use _ferrocorn::driver::ws::{self, Incoming, Outgoing, WsOptions};
use _ferrocorn::http::head::{self, Limits, Upgrade};
use _ferrocorn::http::ws::handshake::{self, Accepted};
use _ferrocorn::http::{date, response};
use _ferrocorn::net::transport::read_into;
use _ferrocorn::net::{Io, Socket, Transport};

fn main() -> io::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(arg) => arg.parse().map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("bad port {arg:?}"))
        })?,
        None => 0,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        println!("Listening at: ws://{}/", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let stream = stream.into_std()?;
            stream.set_nodelay(true)?;
            tokio::task::spawn_local(connection(Socket::new(OwnedFd::from(stream))));
        }
    })
}

/// Reads the opening handshake, answers it, then echoes until the connection ends.
async fn connection(socket: Socket) {
    let mut buf = Vec::new();
    let (head, framing) = loop {
        match read_into(&socket, &mut buf, 16 * 1024, None).await {
            Ok(n) if n > 0 => {}
            _ => return,
        }
        match head::parse(&buf, &Limits::default()) {
            Ok(Some((head, framing, used))) => {
                buf.drain(..used);
                break (head, framing);
            }
            Ok(None) => {}
            Err(err) => {
                let _ = write_all(&socket, &response::error_answer(&err)).await;
                return;
            }
        }
    };
    if framing.upgrade != Some(Upgrade::WebSocket) {
        let page = response::close_answer(
            "426 Upgrade Required",
            "text/plain",
            b"a WebSocket echo endpoint\n",
            false,
        );
        let _ = write_all(&socket, &page).await;
        return;
    }
    let offer = match handshake::check(&head, &framing) {
        Ok(offer) => offer,
        Err(refusal) => {
            let _ = write_all(&socket, &refusal.answer()).await;
            return;
        }
    };
    let mut answer = Vec::new();
    let accepted = Accepted {
        accept: &offer.accept,
        subprotocol: None,
        deflate: offer.deflate.as_ref(),
        lines: b"",
    };
    if handshake::push_accept(&mut answer, &accepted, &date::now()).is_err()
        || write_all(&socket, &answer).await.is_err()
    {
        return;
    }
    let options = WsOptions {
        max_message: 64 * 1024 * 1024,
        output_bound: 1024 * 1024,
        close_timeout: Duration::from_secs(5),
        ping_interval: None,
        ping_timeout: Some(Duration::from_secs(20)),
        write_timeout: Duration::from_secs(30),
    };
    let (session, link) = ws::pair(options.output_bound);
    let echo = async move {
        loop {
            let sent = match session.receive().await {
                Incoming::Text(text) => session.send(Outgoing::Text(text)).await,
                Incoming::Binary(data) => session.send(Outgoing::Binary(data)).await,
                Incoming::Closed { .. } => return,
            };
            if sent.is_err() {
                return;
            }
        }
    };
    let serve = ws::serve(
        &socket,
        buf,
        offer.deflate.as_ref(),
        &options,
        link,
        std::future::pending(),
    );
    tokio::join!(serve, echo);
}

async fn write_all(socket: &Socket, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let n = socket
            .when_writable(|io| io.try_write(&[IoSlice::new(bytes)], false))
            .await?;
        bytes = &bytes[n..];
    }
    Ok(())
}
