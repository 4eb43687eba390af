//! WebSocket echo load: N connections, each on its own thread, do the opening handshake and then
//! send a masked text message and read its echo back, in a loop, for a fixed time. Every echo is
//! checked (opcode, length, content); a wrong one is counted as an error. Prints messages per
//! second and the round-trip latency percentiles.
//!
//!     wsload [-c CONNECTIONS] [-d SECONDS] [-s BYTES] ws://HOST:PORT/PATH

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::sync::{Arc, Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const READ_TIMEOUT: Duration = Duration::from_secs(5);

struct Options {
    connections: usize,
    seconds: f64,
    size: usize,
    host: String,
    path: String,
}

#[derive(Default)]
struct Tally {
    messages: u64,
    latencies_us: Vec<u32>,
    handshake: u64,
    read: u64,
    write: u64,
    mismatch: u64,
    first_error: Option<String>,
}

impl Tally {
    fn error(&mut self, kind: fn(&mut Tally) -> &mut u64, what: String) {
        *kind(self) += 1;
        self.first_error.get_or_insert(what);
    }
}

fn usage() -> String {
    "usage: wsload [-c CONNECTIONS] [-d SECONDS] [-s BYTES] ws://HOST:PORT/PATH".to_string()
}

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let (mut connections, mut seconds, mut size, mut url) = (50usize, 10.0f64, 32usize, None);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "-c" => connections = value("-c")?.parse().map_err(|e| format!("-c: {e}"))?,
            "-d" => seconds = value("-d")?.parse().map_err(|e| format!("-d: {e}"))?,
            "-s" => size = value("-s")?.parse().map_err(|e| format!("-s: {e}"))?,
            "-h" | "--help" => return Err(usage()),
            _ if url.is_none() && !arg.starts_with('-') => url = Some(arg),
            _ => return Err(format!("unexpected argument {arg:?}\n{}", usage())),
        }
    }
    let url = url.ok_or_else(usage)?;
    let rest = url
        .strip_prefix("ws://")
        .ok_or(format!("only ws:// URLs are supported, not {url:?}"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if connections == 0 || seconds <= 0.0 || !(16..=65535).contains(&size) {
        return Err("need -c ≥ 1, -d > 0 and 16 ≤ -s ≤ 65535".to_string());
    }
    Ok(Options {
        connections,
        seconds,
        size,
        host: host.to_string(),
        path: path.to_string(),
    })
}

/// xorshift64*: masking keys and handshake keys need no cryptographic quality here.
struct Rng(u64);

impl Rng {
    fn new(salt: u64) -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9);
        Rng((nanos ^ salt.wrapping_mul(0x2545_F491_4F6C_DD1D)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Opens a connection and does the opening handshake; returns the reader and the writer.
fn handshake(opts: &Options, rng: &mut Rng) -> Result<(BufReader<TcpStream>, TcpStream), String> {
    let stream = TcpStream::connect(&opts.host).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("nodelay: {e}"))?;
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .map_err(|e| format!("timeout: {e}"))?;
    let mut writer = stream.try_clone().map_err(|e| format!("clone: {e}"))?;
    let key: Vec<u8> = (0..2).flat_map(|_| rng.next().to_le_bytes()).collect();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        opts.path,
        opts.host,
        base64(&key)
    );
    writer
        .write_all(request.as_bytes())
        .map_err(|e| format!("handshake write: {e}"))?;
    let mut reader = BufReader::with_capacity(opts.size + 64, stream);
    let mut status = String::new();
    reader
        .read_line(&mut status)
        .map_err(|e| format!("handshake read: {e}"))?;
    if !status.starts_with("HTTP/1.1 101") {
        return Err(format!("handshake answered {:?}", status.trim_end()));
    }
    loop {
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| format!("handshake read: {e}"))?;
        if n == 0 {
            return Err("connection closed during the handshake".to_string());
        }
        if line == "\r\n" {
            return Ok((reader, writer));
        }
    }
}

/// A masked text frame carrying `payload` (at most 65535 bytes).
fn encode_frame(payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    out.clear();
    out.push(0x81); // FIN, text
    if payload.len() < 126 {
        out.push(0x80 | payload.len() as u8);
    } else {
        out.push(0x80 | 126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// Reads one unmasked frame from the server into `buf`; returns its opcode.
fn read_frame(reader: &mut BufReader<TcpStream>, buf: &mut Vec<u8>) -> Result<u8, String> {
    let mut head = [0u8; 2];
    reader
        .read_exact(&mut head)
        .map_err(|e| format!("read: {e}"))?;
    if head[0] & 0x80 == 0 || head[1] & 0x80 != 0 {
        return Err(format!(
            "unexpected frame header {head:02x?} (fragmented or masked)"
        ));
    }
    let len = match head[1] & 0x7f {
        126 => {
            let mut ext = [0u8; 2];
            reader
                .read_exact(&mut ext)
                .map_err(|e| format!("read: {e}"))?;
            usize::from(u16::from_be_bytes(ext))
        }
        127 => return Err("unexpected 64-bit frame length".to_string()),
        n => usize::from(n),
    };
    buf.resize(len, 0);
    reader.read_exact(buf).map_err(|e| format!("read: {e}"))?;
    Ok(head[0] & 0x0f)
}

/// Reads frames until one that is not a ping or a pong; answers pings (servers may send them
/// on their own schedule) so that they neither count as wrong echoes nor shift the next ones.
fn read_data_frame(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
    buf: &mut Vec<u8>,
    rng: &mut Rng,
) -> Result<u8, String> {
    loop {
        match read_frame(reader, buf)? {
            0x9 => {
                let mut pong = Vec::new();
                encode_frame(buf, mask_key(rng), &mut pong);
                pong[0] = 0x8A; // FIN, pong
                writer.write_all(&pong).map_err(|e| format!("write: {e}"))?;
            }
            0xA => {}
            op => return Ok(op),
        }
    }
}

fn mask_key(rng: &mut Rng) -> [u8; 4] {
    let [a, b, c, d, ..] = rng.next().to_le_bytes();
    [a, b, c, d]
}

/// Fills `payload` with printable text that differs from one message to the next.
fn fill_payload(payload: &mut [u8], conn: usize, seq: u64) {
    let tag = format!("{conn:04}:{seq:011}:");
    for (i, b) in payload.iter_mut().enumerate() {
        *b = tag
            .as_bytes()
            .get(i)
            .copied()
            .unwrap_or(b'a' + ((seq as usize + i) % 26) as u8);
    }
}

fn connection(opts: &Options, conn: usize, start: &Barrier, deadline: &OnceLock<Instant>) -> Tally {
    let mut tally = Tally::default();
    let mut rng = Rng::new(conn as u64 + 1);
    let streams = handshake(opts, &mut rng);
    start.wait(); // every connection has handshaken; the main thread sets the deadline
    start.wait();
    let (mut reader, mut writer) = match streams {
        Ok(s) => s,
        Err(e) => {
            tally.error(|t| &mut t.handshake, e);
            return tally;
        }
    };
    let Some(&end) = deadline.get() else {
        return tally;
    };
    let (mut payload, mut frame, mut echo) = (vec![0u8; opts.size], Vec::new(), Vec::new());
    let mut seq = 0u64;
    while Instant::now() < end {
        fill_payload(&mut payload, conn, seq);
        encode_frame(&payload, mask_key(&mut rng), &mut frame);
        let sent = Instant::now();
        if let Err(e) = writer.write_all(&frame) {
            tally.error(|t| &mut t.write, format!("write: {e}"));
            return tally;
        }
        match read_data_frame(&mut reader, &mut writer, &mut echo, &mut rng) {
            Ok(0x1) if echo == payload => {
                tally.messages += 1;
                let us = sent.elapsed().as_micros();
                tally
                    .latencies_us
                    .push(u32::try_from(us).unwrap_or(u32::MAX));
            }
            Ok(op) => tally.error(
                |t| &mut t.mismatch,
                format!(
                    "echo of message {seq}: opcode {op:#x}, {} bytes{} (sent a text of {})",
                    echo.len(),
                    if op == 0x1 && echo.len() == opts.size {
                        ", other content"
                    } else {
                        ""
                    },
                    opts.size
                ),
            ),
            Err(e) => {
                tally.error(|t| &mut t.read, e);
                return tally;
            }
        }
        seq += 1;
    }
    // A close frame, so that servers end the connection cleanly; its answer is not awaited.
    encode_frame(&[], [0; 4], &mut frame);
    frame[0] = 0x88;
    let _ = writer.write_all(&frame);
    tally
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)]) / 1000.0
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => Arc::new(o),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // Every connection handshakes first; the measured time starts when the last one is done.
    let deadline = Arc::new(OnceLock::new());
    let start = Arc::new(Barrier::new(opts.connections + 1));
    let threads: Vec<_> = (0..opts.connections)
        .map(|conn| {
            let (opts, start, deadline) = (opts.clone(), start.clone(), deadline.clone());
            thread::spawn(move || connection(&opts, conn, &start, &deadline))
        })
        .collect();
    start.wait();
    let began = Instant::now();
    let _ = deadline.set(began + Duration::from_secs_f64(opts.seconds));
    start.wait();
    let mut total = Tally::default();
    for t in threads {
        match t.join() {
            Ok(one) => {
                total.messages += one.messages;
                total.latencies_us.extend(one.latencies_us);
                total.handshake += one.handshake;
                total.read += one.read;
                total.write += one.write;
                total.mismatch += one.mismatch;
                if total.first_error.is_none() {
                    total.first_error = one.first_error;
                }
            }
            Err(_) => {
                total
                    .first_error
                    .get_or_insert("a connection thread panicked".to_string());
            }
        }
    }
    let elapsed = began.elapsed().as_secs_f64();
    total.latencies_us.sort_unstable();
    println!(
        "{} connections, {:.2} s, {}-byte text messages",
        opts.connections, elapsed, opts.size
    );
    println!(
        "messages: {} echoed, {:.1} messages/s",
        total.messages,
        total.messages as f64 / elapsed
    );
    println!(
        "latency: p50 {:.3} ms, p99 {:.3} ms",
        percentile(&total.latencies_us, 0.50),
        percentile(&total.latencies_us, 0.99)
    );
    println!(
        "errors: handshake {}, read {}, write {}, mismatch {}",
        total.handshake, total.read, total.write, total.mismatch
    );
    if let Some(e) = &total.first_error {
        println!("first error: {e}");
    }
    if total.messages == 0 {
        eprintln!("no message was echoed");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
