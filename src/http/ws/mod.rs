//! WebSocket (RFC 6455) without I/O: the opening handshake over HTTP/1.1, the frame codec with
//! message assembly, and permessage-deflate (RFC 7692).
//!
//! - [`handshake`]: checks an upgrade request, computes `Sec-WebSocket-Accept`, encodes the
//!   `101` answer and the refusals.
//! - [`frame`]: decodes client frames into messages and control frames, encodes server frames.
//! - [`deflate`]: the extension's negotiation and its compressor and decompressor.
//! - [`utf8`]: UTF-8 validation of a text message as its bytes arrive.
//!
//! Written here rather than taken from a crate: the crates that frame WebSocket either own the
//! I/O (tungstenite over `Read`/`Write`, fastwebsockets, ratchet and soketto over async
//! streams) or validate a text message only once it is complete; the driver needs a codec fed
//! whatever bytes a read gave, that fails on the first invalid UTF-8 byte of a text frame
//! still arriving, and that inflates as it goes under the message size limit.

pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod utf8;

/// Close codes this server sends (RFC 6455 section 7.4.1).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Sent by nobody: what a close frame without a code reports.
    pub const NO_STATUS: u16 = 1005;
    /// Sent by nobody: the connection ended without a close frame.
    pub const ABNORMAL: u16 = 1006;
    pub const INVALID_DATA: u16 = 1007;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;

    /// Whether a close frame may carry `code` (RFC 6455 section 7.4 and IANA's registry):
    /// the defined codes other than those reserved for reports, and 3000-4999.
    pub fn is_valid(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}
