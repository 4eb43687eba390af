//! The `Date` header value, formatted once a second rather than per response.

/// The current IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn now() -> [u8; 29] {
    todo!("http::date::now")
}
