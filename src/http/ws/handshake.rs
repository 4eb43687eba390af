//! The opening handshake (RFC 6455 section 4.2): what an upgrade request asks for, the `101`
//! answer that accepts it, and the answers that refuse it.

use super::deflate::{self, Params};
use crate::http::head::{is_token, Framing, H1Framing, RequestHead, Upgrade};
use crate::http::response::{self, InvalidHeader};

/// Appended to the client's key before hashing (RFC 6455 section 1.3).
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only protocol version this server speaks.
pub const VERSION: &str = "13";

/// A valid opening handshake: what the client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The `Sec-WebSocket-Accept` value answering the client's key.
    pub accept: String,
    /// The subprotocols the client offered, in its order of preference.
    pub subprotocols: Vec<String>,
    /// The permessage-deflate parameters this server agrees to, when the client offered the
    /// extension in a form it can take.
    pub deflate: Option<Params>,
}

/// Why an upgrade request is refused; [`Refusal::answer`] gives the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    fn bad(message: &str) -> Refusal {
        Refusal {
            status: 400,
            reason: "Bad Request",
            message: message.to_owned(),
        }
    }

    /// The complete answer, ending with the connection closed. A version this server does not
    /// speak gets `426` naming the one it does (RFC 6455 section 4.4).
    pub fn answer(&self) -> Vec<u8> {
        let extra = if self.status == 426 {
            "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nConnection: Upgrade, close\r\n"
        } else {
            "Connection: close\r\n"
        };
        let body = format!("{}\n", self.message);
        format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
             {extra}\r\n{body}",
            self.status,
            self.reason,
            body.len(),
        )
        .into_bytes()
    }
}

/// Checks a request the parser found asking for `Upgrade: websocket`.
pub fn check(head: &RequestHead, framing: &H1Framing) -> Result<Offer, Refusal> {
    if framing.upgrade != Some(Upgrade::WebSocket) {
        return Err(Refusal::bad("Not a WebSocket upgrade request"));
    }
    if &*head.method != "GET" {
        return Err(Refusal::bad(
            "A WebSocket opening handshake is a GET request",
        ));
    }
    if framing.body != Framing::None {
        return Err(Refusal::bad("A WebSocket opening handshake has no body"));
    }
    let mut key: Option<&[u8]> = None;
    let mut keys = 0;
    let mut version: Option<&[u8]> = None;
    let mut host = head.target_host().is_some();
    let mut subprotocols = Vec::new();
    let mut extensions = Vec::new();
    for (name, value) in head.headers() {
        if name.eq_ignore_ascii_case("sec-websocket-key") {
            key = Some(value);
            keys += 1;
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            version = Some(value);
        } else if name.eq_ignore_ascii_case("host") {
            host = true;
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            for offered in value.split(|&b| b == b',') {
                let offered = String::from_utf8_lossy(offered);
                let offered = offered.trim_matches([' ', '\t']);
                if !offered.is_empty() {
                    subprotocols.push(offered.to_owned());
                }
            }
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            extensions.push(value);
        }
    }
    if version != Some(VERSION.as_bytes()) {
        return Err(Refusal {
            status: 426,
            reason: "Upgrade Required",
            message: "Unsupported WebSocket version: this server speaks version 13".into(),
        });
    }
    if !host {
        return Err(Refusal::bad("Missing Host header"));
    }
    let key = match key {
        Some(key) if keys == 1 && is_key(key) => key,
        _ => return Err(Refusal::bad("Invalid Sec-WebSocket-Key header")),
    };
    Ok(Offer {
        accept: accept_key(key),
        subprotocols,
        deflate: deflate::negotiate(extensions),
    })
}

/// A key is the base64 encoding of 16 bytes (RFC 6455 section 4.1).
fn is_key(key: &[u8]) -> bool {
    key.len() == 24
        && data_encoding::BASE64
            .decode(key)
            .is_ok_and(|bytes| bytes.len() == 16)
}

/// The `Sec-WebSocket-Accept` value for `key`: base64 of the SHA-1 of the key and the GUID.
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key);
    sha.update(GUID);
    data_encoding::BASE64.encode(&sha.digest().bytes())
}

/// What the `101` answer says besides the accept key.
#[derive(Clone, Copy, Debug)]
pub struct Accepted<'a> {
    pub accept: &'a str,
    /// The subprotocol the application chose.
    pub subprotocol: Option<&'a str>,
    /// The extension parameters agreed, if the connection compresses.
    pub deflate: Option<&'a Params>,
    /// The application's own header fields, each a line from `response::push_header_line`.
    pub lines: &'a [u8],
}

/// Appends the `101 Switching Protocols` answer, with the Date value `date`. Returns the
/// count of bytes appended, or which field cannot go on the wire.
pub fn push_accept(
    out: &mut Vec<u8>,
    accepted: &Accepted<'_>,
    date: &[u8; 29],
) -> Result<usize, InvalidHeader> {
    const FIELD: &str = "Sec-WebSocket-Protocol";
    if let Some(sub) = accepted.subprotocol {
        if sub.is_empty() || !sub.bytes().all(is_token) {
            return Err(InvalidHeader::Value(FIELD.into()));
        }
    }
    let start = out.len();
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accepted.accept.as_bytes());
    out.extend_from_slice(b"\r\nServer: ferrocorn\r\nDate: ");
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\n");
    if let Some(sub) = accepted.subprotocol {
        response::push_header_line(out, FIELD, sub);
    }
    if let Some(params) = accepted.deflate {
        out.extend_from_slice(b"Sec-WebSocket-Extensions: ");
        params.push_answer(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(accepted.lines);
    out.extend_from_slice(b"\r\n");
    Ok(out.len() - start)
}

/// The answer to an upgrade the application closed before accepting (ASGI asks for `403`).
pub fn forbidden() -> Vec<u8> {
    response::close_answer(
        "403 Forbidden",
        "text/plain; charset=utf-8",
        b"WebSocket connection refused by the application\n",
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{parse, Limits};

    const DATE: &[u8; 29] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    fn request(fields: &str) -> String {
        format!(
            "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\n{fields}\r\n"
        )
    }

    const GOOD: &str =
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

    fn checked(raw: &str) -> Result<Offer, Refusal> {
        let (head, framing, _) = parse(raw.as_bytes(), &Limits::default())
            .expect("a valid head")
            .expect("complete");
        check(&head, &framing)
    }

    /// RFC 6455 section 1.3's example key and its answer.
    #[test]
    fn rfc_6455_accept_key() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let offer = checked(&request(GOOD)).expect("valid");
        assert_eq!(offer.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(offer.subprotocols, Vec::<String>::new());
        assert_eq!(offer.deflate, None);
    }

    #[test]
    fn subprotocols_and_extensions_are_read() {
        let raw = request(&format!(
            "{GOOD}Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Protocol: v2\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        ));
        let offer = checked(&raw).expect("valid");
        assert_eq!(offer.subprotocols, ["chat", "superchat", "v2"]);
        assert!(offer.deflate.is_some());
    }

    #[test]
    fn refusals() {
        let status = |raw: &str| checked(raw).map(|_| 0).unwrap_or_else(|r| r.status);
        assert_eq!(
            status(&request("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")),
            426
        );
        assert_eq!(
            status(&request(
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n"
            )),
            426
        );
        for key in [
            "",
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZXg=",
            "!!!!IHNhbXBsZSBub25jZQ==",
        ] {
            let raw = request(&format!(
                "Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            ));
            assert_eq!(status(&raw), 400, "{key}");
        }
        assert_eq!(
            status(&request(&format!(
                "{GOOD}Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            ))),
            400
        );
        let post = request(GOOD).replacen("GET", "POST", 1);
        assert_eq!(status(&post), 400);
        let with_body = request(&format!("{GOOD}Content-Length: 3\r\n"));
        assert_eq!(status(&with_body), 400);
        let not_upgrade = request(GOOD).replace("Connection: Upgrade", "Connection: keep-alive");
        assert_eq!(status(&not_upgrade), 400);
    }

    #[test]
    fn refusal_answers() {
        let version = checked(&request("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"))
            .expect_err("refused");
        let text = String::from_utf8(version.answer()).expect("ASCII");
        assert!(
            text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{text}");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let forbidden = String::from_utf8(forbidden()).expect("ASCII");
        assert!(forbidden.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(forbidden.contains("Connection: close\r\n"));
    }

    #[test]
    fn switching_answer() {
        let params = deflate::negotiate([&b"permessage-deflate; server_no_context_takeover"[..]]);
        let mut lines = Vec::new();
        response::push_header_line(&mut lines, "Set-Cookie", "a=b");
        let accepted = Accepted {
            accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
            subprotocol: Some("chat"),
            deflate: params.as_ref(),
            lines: &lines,
        };
        let mut out = Vec::new();
        let n = push_accept(&mut out, &accepted, DATE).expect("valid");
        assert_eq!(n, out.len());
        assert_eq!(
            String::from_utf8(out).expect("ASCII"),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nServer: ferrocorn\r\n\
             Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nSec-WebSocket-Protocol: chat\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\
             Set-Cookie: a=b\r\n\r\n"
        );
        let bad = Accepted {
            subprotocol: Some("a b"),
            ..accepted
        };
        assert!(push_accept(&mut Vec::new(), &bad, DATE).is_err());
    }
}
