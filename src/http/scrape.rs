//! The HTTP side of the master's metrics endpoint (`--metrics-bind`): `GET /metrics` (or `/`)
//! answered with the metrics text, each answer closing its connection.
//!
//! Only the request line matters, so a head is not held to the rules a worker applies (a
//! scrape over HTTP/1.1 without `Host` is answered): this endpoint serves monitoring systems,
//! not applications, and answers nothing but the metrics.

use memchr::memmem;

use super::response::close_answer;

/// Prometheus' text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The answer to what a scrape connection sent so far: `None` while its head is incomplete,
/// 431 once `full` (no more will be read). `render` gives the metrics text.
pub fn respond(request: &[u8], full: bool, render: &dyn Fn() -> String) -> Option<Vec<u8>> {
    if full {
        return Some(close_answer(
            "431 Request Header Fields Too Large",
            CONTENT_TYPE,
            b"",
            false,
        ));
    }
    memmem::find(request, b"\r\n\r\n")?;
    Some(answer(request, render))
}

/// The answer to a complete request head.
fn answer(head: &[u8], render: &dyn Fn() -> String) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default();
    let is_head = method == "HEAD";
    if method != "GET" && !is_head {
        return close_answer("405 Method Not Allowed", CONTENT_TYPE, b"", false);
    }
    if path != "/metrics" && path != "/" {
        return close_answer("404 Not Found", CONTENT_TYPE, b"", is_head);
    }
    close_answer("200 OK", CONTENT_TYPE, render().as_bytes(), is_head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let render = || "x 1\n".to_string();
        let ok = answer(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", &render);
        assert!(ok.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(ok.ends_with(b"\r\n\r\nx 1\n"));
        let head = answer(b"HEAD /metrics HTTP/1.1\r\n\r\n", &render);
        assert!(head.ends_with(b"Content-Length: 4\r\nConnection: close\r\n\r\n"));
        assert!(answer(b"GET /other HTTP/1.1\r\n\r\n", &render).starts_with(b"HTTP/1.1 404"));
        assert!(answer(b"POST /metrics HTTP/1.1\r\n\r\n", &render).starts_with(b"HTTP/1.1 405"));
    }

    #[test]
    fn waits_for_the_head_and_refuses_a_long_one() {
        let render = String::new;
        assert!(respond(b"GET /metrics HTTP/1.1\r\n", false, &render).is_none());
        let ok = respond(b"GET /metrics HTTP/1.1\r\n\r\n", false, &render);
        assert!(ok.is_some_and(|a| a.starts_with(b"HTTP/1.1 200 OK\r\n")));
        let long = respond(b"GET /metrics HTTP/1.1\r\nA: b", true, &render);
        assert!(long.is_some_and(|a| a.starts_with(b"HTTP/1.1 431 ")));
    }
}
