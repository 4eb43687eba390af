//! The HTTP/1.1 upgrade to cleartext HTTP/2 (`Upgrade: h2c`) on a connection: the `101`,
//! then the client's own start, read and replaced by the bytes that make the upgraded request
//! stream 1 (see [`crate::http::h2c`]). The HTTP/2 driver reads those bytes first (its read
//! ahead), then the connection as it comes: it needs to know nothing of the upgrade.

use std::io;
use std::time::Duration;

use tokio::time::{timeout_at, Instant};

use super::buffers::READ_CHUNK;
use super::output::{write_all, OutQueue, Then};
use crate::http::h2c::{self, ClientStart};
use crate::http::RequestHead;
use crate::log;
use crate::net::transport::read_into;
use crate::net::Transport;

/// Accepts the upgrade of `head` (whose `HTTP2-Settings` carried `settings`): writes the
/// `101`, reads the client's preface and first SETTINGS within `head_timeout` (`buf` holds
/// what followed the request already), and returns what the HTTP/2 driver is to read first,
/// the rest of the client's bytes included. `Ok(None)`: the client did not start HTTP/2, in
/// time or at all; the connection closes.
pub async fn switch<T: Transport>(
    io: &T,
    buf: &mut Vec<u8>,
    head: &RequestHead,
    settings: &[u8],
    head_timeout: Duration,
    write_timeout: Duration,
) -> io::Result<Option<Vec<u8>>> {
    let mut out = OutQueue::new();
    out.push_slice(h2c::SWITCHING_PROTOCOLS);
    write_all(io, &mut out, Then::Continue, write_timeout).await?;
    let deadline = Instant::now() + head_timeout;
    let payload = loop {
        match h2c::client_start(buf) {
            ClientStart::Whole { payload } => break payload,
            ClientStart::Invalid(why) => {
                log::debug(format_args!("After the h2c upgrade: {why}"));
                return Ok(None);
            }
            ClientStart::Partial => {}
        }
        match timeout_at(deadline, read_into(io, buf, READ_CHUNK, None)).await {
            Ok(Ok(0)) | Err(_) => return Ok(None),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    };
    let Some(mut start) = h2c::upgraded_start(settings, &buf[payload.clone()], head) else {
        log::debug(format_args!("After the h2c upgrade: SETTINGS too large"));
        return Ok(None);
    };
    start.extend_from_slice(&buf[payload.end..]);
    Ok(Some(start))
}
