//! The `Date` header value, formatted once a second rather than per response.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    static CACHE: Cell<(u64, [u8; 29])> = const { Cell::new((u64::MAX, [0; 29])) };
}

/// The current IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn now() -> [u8; 29] {
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    CACHE.with(|cache| {
        let (cached_second, value) = cache.get();
        if cached_second == second {
            return value;
        }
        let mut out = [b' '; 29];
        let text = httpdate::fmt_http_date(now);
        let len = text.len().min(29);
        out[..len].copy_from_slice(&text.as_bytes()[..len]);
        cache.set((second, out));
        out
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn looks_like_an_imf_fixdate() {
        let date = super::now();
        let text = std::str::from_utf8(&date).unwrap();
        assert!(text.ends_with(" GMT"), "{text}");
        assert!(httpdate::parse_http_date(text).is_ok(), "{text}");
    }
}
