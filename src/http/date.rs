//! The `Date` header value, formatted once a second rather than per response.

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

thread_local! {
    static CACHE: Cell<(u64, [u8; 29])> = const { Cell::new((u64::MAX, [0; 29])) };
}

/// The current IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn now() -> [u8; 29] {
    let second = coarse_unix_seconds();
    CACHE.with(|cache| {
        let (cached_second, value) = cache.get();
        if cached_second == second {
            return value;
        }
        let mut out = [b' '; 29];
        let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(second));
        let len = text.len().min(29);
        out[..len].copy_from_slice(&text.as_bytes()[..len]);
        cache.set((second, out));
        out
    })
}

/// Seconds since the epoch as of the last clock tick: a header with one-second resolution does
/// not need the precise clock, which costs several times more to read on every response.
fn coarse_unix_seconds() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } == 0 {
        return ts.tv_sec as u64;
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn looks_like_an_imf_fixdate() {
        let date = super::now();
        let text = std::str::from_utf8(&date).unwrap();
        assert!(text.ends_with(" GMT"), "{text}");
        let parsed = httpdate::parse_http_date(text).expect(text);
        // The coarse clock lags the precise one by at most a tick.
        let now = std::time::SystemTime::now();
        let lag = now.duration_since(parsed).expect("not in the future");
        assert!(lag < std::time::Duration::from_secs(2), "{text} vs {now:?}");
    }
}
