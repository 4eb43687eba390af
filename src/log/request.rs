//! The request the logs and Python's `req` objects describe, as the layer that parsed it shows
//! it: log needs none of the parser's types.

use std::borrow::Cow;

/// A parsed request head, read by the access log, a Python logger's `access()` and the
/// `req` object of the request hooks.
pub trait LoggedRequest {
    /// The method as sent (or casefolded), e.g. `GET`.
    fn method(&self) -> &str;
    /// The request target exactly as sent (RAW_URI), fragment included.
    fn target(&self) -> &[u8];
    /// The path part of the target, not percent-decoded.
    fn path(&self) -> &[u8];
    /// The path percent-decoded (`%(U)s`, PATH_INFO).
    fn decoded_path(&self) -> Cow<'_, [u8]>;
    /// The query without the `?`; empty when absent.
    fn query(&self) -> &[u8];
    /// The fragment without the `#`; empty when absent.
    fn fragment(&self) -> &[u8];
    /// The HTTP version of the request line, `(major, minor)`.
    fn version(&self) -> (u8, u8);
    /// The header fields in the order sent: name as sent, value.
    fn fields(&self) -> impl DoubleEndedIterator<Item = (&str, &[u8])>;
}

/// Bytes from the wire as text, one code point per byte (latin-1, as PEP 3333 and Gunicorn
/// decode request lines and header values).
pub fn latin1(bytes: &[u8]) -> String {
    // ASCII, nearly every header, is the same text in one copy; the rest a code point a byte.
    match std::str::from_utf8(bytes) {
        Ok(text) if text.is_ascii() => text.to_owned(),
        _ => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn latin1_maps_every_byte() {
        assert_eq!(super::latin1(b"caf\xe9"), "caf\u{e9}");
        assert_eq!(super::latin1(b""), "");
        assert_eq!(super::latin1(b"caf\xc3\xa9"), "caf\u{c3}\u{a9}");
    }
}
