//! The access log: Gunicorn's `--access-logformat` atoms, compiled once per worker and
//! rendered by the event loop after a response is written, without the GIL. One `write(2)`
//! per line on an `O_APPEND` descriptor, so lines from several workers never interleave.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::io::AsRawFd;
use std::sync::Mutex;
use std::time::Duration;

use pyo3::prelude::*;

use super::LoggedRequest;

/// One piece of a compiled format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Atom(Atom),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Atom {
    RemoteAddr,
    Dash,
    User,
    Time,
    RequestLine,
    Status,
    Method,
    Path,
    Query,
    Protocol,
    BytesNumber,
    BytesOrDash,
    Referer,
    UserAgent,
    Seconds,
    Micros,
    Millis,
    DecimalSeconds,
    Pid,
    RequestHeader(String),
    ResponseHeader(String),
    Environ(String),
    Unknown,
}

/// A compiled `--access-logformat`.
#[derive(Debug, Clone)]
pub struct AccessFormat {
    parts: Vec<Part>,
    /// The environ keys (as WSGI spells them) the format reads.
    environ_keys: Vec<String>,
}

/// A served request, kept after its response for its access line: built by the request
/// cycle only when requests are logged.
pub struct AccessData<R> {
    pub head: R,
    pub remote_addr: String,
    pub status: u16,
    /// Body bytes sent.
    pub sent: u64,
    pub response_headers: Vec<(String, String)>,
    /// `{key}e` values the format asks for, read from the environ while the GIL was held.
    pub environ: Vec<(String, String)>,
    /// The client's address (for a custom logger class's `req.peer_addr`).
    pub peer: Option<std::net::SocketAddr>,
    /// The status line the application gave, e.g. `200 OK` (Python logger only).
    pub status_line: Option<String>,
    /// The environ dict (Python logger only).
    pub environ_obj: Option<Py<PyAny>>,
}

/// What the access log needs to know about one request and its response.
pub struct AccessRecord<'a, R> {
    pub head: &'a R,
    pub remote_addr: &'a str,
    pub status: u16,
    pub sent: u64,
    pub response_headers: &'a [(String, String)],
    /// Values of the environ keys the format asks for (`{key}e`), lower-cased keys.
    pub environ: &'a [(String, String)],
    pub duration: Duration,
}

impl AccessFormat {
    /// Compiles a Python `%`-style format such as `%(h)s "%(r)s" %({user-agent}i)s`.
    pub fn parse(format: &str) -> AccessFormat {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = format;
        while let Some(i) = rest.find('%') {
            text.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            if let Some(after) = rest.strip_prefix('%') {
                text.push('%');
                rest = after;
                continue;
            }
            let Some(inner) = rest.strip_prefix('(') else {
                text.push('%');
                continue;
            };
            let Some(close) = inner.find(')') else {
                text.push('%');
                continue;
            };
            let name = &inner[..close];
            // Skip the conversion flags and type (`s`, `d`, `-10s`, ...).
            let after = &inner[close + 1..];
            let conv_len = after
                .char_indices()
                .find(|(_, c)| c.is_ascii_alphabetic())
                .map(|(i, c)| i + c.len_utf8())
                .unwrap_or(0);
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(Part::Atom(atom(name)));
            rest = &after[conv_len..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        let environ_keys = parts
            .iter()
            .filter_map(|p| match p {
                Part::Atom(Atom::Environ(key)) => Some(key.clone()),
                _ => None,
            })
            .collect();
        AccessFormat {
            parts,
            environ_keys,
        }
    }

    /// Whether rendering needs the response headers.
    pub fn needs_response_headers(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Atom(Atom::ResponseHeader(_))))
    }

    /// The environ keys (as WSGI spells them) the format reads, to capture with the GIL.
    pub fn environ_keys(&self) -> &[String] {
        &self.environ_keys
    }

    /// Renders one line, newline included.
    pub fn render<R: LoggedRequest>(&self, rec: &AccessRecord<'_, R>) -> String {
        let mut out = String::with_capacity(256);
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Atom(a) => render_atom(&mut out, a, rec),
            }
        }
        out.push('\n');
        out
    }
}

fn atom(name: &str) -> Atom {
    if let Some(inner) = name.strip_prefix('{') {
        if let Some((key, kind)) = inner.rsplit_once('}') {
            let key = key.to_ascii_lowercase();
            return match kind {
                "i" => Atom::RequestHeader(key),
                "o" => Atom::ResponseHeader(key),
                "e" => Atom::Environ(key),
                _ => Atom::Unknown,
            };
        }
    }
    match name {
        "h" => Atom::RemoteAddr,
        "l" => Atom::Dash,
        "u" => Atom::User,
        "t" => Atom::Time,
        "r" => Atom::RequestLine,
        "s" => Atom::Status,
        "m" => Atom::Method,
        "U" => Atom::Path,
        "q" => Atom::Query,
        "H" => Atom::Protocol,
        "B" => Atom::BytesNumber,
        "b" => Atom::BytesOrDash,
        "f" => Atom::Referer,
        "a" => Atom::UserAgent,
        "T" => Atom::Seconds,
        "D" => Atom::Micros,
        "M" => Atom::Millis,
        "L" => Atom::DecimalSeconds,
        "p" => Atom::Pid,
        _ => Atom::Unknown,
    }
}

/// Appends `value` with `"` escaped, as Gunicorn's atoms are.
fn push_escaped(out: &mut String, value: &str) {
    for c in value.chars() {
        if c == '"' {
            out.push_str("\\\"");
        } else {
            out.push(c);
        }
    }
}

/// Appends bytes from the wire as latin-1 text, `"` escaped.
fn push_bytes(out: &mut String, value: &[u8]) {
    for &b in value {
        if b == b'"' {
            out.push_str("\\\"");
        } else {
            out.push(char::from(b));
        }
    }
}

fn request_header<'a, R: LoggedRequest>(head: &'a R, name: &str) -> Option<&'a [u8]> {
    // Like a dict built from the headers: the last occurrence wins.
    head.fields()
        .rev()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn push_protocol<R: LoggedRequest>(out: &mut String, head: &R) {
    let (major, minor) = head.version();
    let _ = write!(out, "HTTP/{major}.{minor}");
}

fn render_atom<R: LoggedRequest>(out: &mut String, atom: &Atom, rec: &AccessRecord<'_, R>) {
    let head = rec.head;
    let d = rec.duration;
    match atom {
        Atom::RemoteAddr => push_escaped(
            out,
            if rec.remote_addr.is_empty() {
                "-"
            } else {
                rec.remote_addr
            },
        ),
        Atom::Dash | Atom::Unknown => out.push('-'),
        Atom::User => match basic_auth_user(head) {
            Some(user) => push_escaped(out, &user),
            None => out.push('-'),
        },
        Atom::Time => out.push_str(&clf_time()),
        Atom::RequestLine => {
            push_escaped(out, head.method());
            out.push(' ');
            push_bytes(out, head.target());
            out.push(' ');
            push_protocol(out, head);
        }
        Atom::Status => {
            let _ = write!(out, "{}", rec.status);
        }
        Atom::Method => push_escaped(out, head.method()),
        Atom::Path => push_bytes(out, &head.decoded_path()),
        Atom::Query => push_bytes(out, head.query()),
        Atom::Protocol => push_protocol(out, head),
        Atom::BytesNumber | Atom::BytesOrDash => {
            let _ = write!(out, "{}", rec.sent);
        }
        Atom::Referer => match request_header(head, "referer") {
            Some(v) => push_bytes(out, v),
            None => out.push('-'),
        },
        Atom::UserAgent => match request_header(head, "user-agent") {
            Some(v) => push_bytes(out, v),
            None => out.push('-'),
        },
        Atom::Seconds => {
            let _ = write!(out, "{}", d.as_secs());
        }
        Atom::Micros => {
            let _ = write!(out, "{}", d.as_micros());
        }
        Atom::Millis => {
            let _ = write!(out, "{}", d.as_millis());
        }
        Atom::DecimalSeconds => {
            let _ = write!(out, "{}.{:06}", d.as_secs(), d.subsec_micros());
        }
        Atom::Pid => {
            let _ = write!(out, "<{}>", std::process::id());
        }
        Atom::RequestHeader(name) => match request_header(head, name) {
            Some(v) => push_bytes(out, v),
            None => out.push('-'),
        },
        Atom::ResponseHeader(name) => {
            match rec
                .response_headers
                .iter()
                .rev()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
            {
                Some((_, v)) => push_escaped(out, v),
                None => out.push('-'),
            }
        }
        Atom::Environ(key) => match rec
            .environ
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
        {
            Some((_, v)) => push_escaped(out, v),
            None => out.push('-'),
        },
    }
}

/// `[23/Nov/2026:03:20:00 +0000]` in local time, Apache's common log format.
fn clf_time() -> String {
    super::local_time(c"[%d/%b/%Y:%H:%M:%S %z]")
}

/// The user name of `Authorization: Basic ...`.
fn basic_auth_user<R: LoggedRequest>(head: &R) -> Option<String> {
    let value = request_header(head, "authorization")?;
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, credentials) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64_decode(credentials.trim())?;
    let user = decoded.split(|&b| b == b':').next()?;
    String::from_utf8(user.to_vec()).ok()
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = text.bytes().filter(|&b| b != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let n = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        for i in 0..n {
            out.push((acc >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

/// Where access lines are written by Rust.
enum Sink {
    /// No access log file (lines may still go to syslog or Python).
    Off,
    Stdout,
    File(String, File),
}

impl Sink {
    fn name(&self) -> &str {
        match self {
            Sink::Off => "",
            Sink::Stdout => "stdout",
            Sink::File(path, _) => path,
        }
    }
}

struct Output {
    sink: Sink,
    health: Health,
}

static OUTPUT: Mutex<Output> = Mutex::new(Output {
    sink: Sink::Off,
    health: Health { lost: 0 },
});

/// Whether writing access lines fails, so that a failure is reported once when it begins and
/// once when it ends rather than never (or for every line).
#[derive(Debug, Default)]
struct Health {
    /// Lines lost since writing began to fail; 0 while it works.
    lost: u64,
}

/// A change worth a line in the error log.
#[derive(Debug)]
enum Change {
    Failed(std::io::Error),
    /// Writing works again, after this many lines were lost.
    Recovered(u64),
}

impl Health {
    fn record(&mut self, result: std::io::Result<()>) -> Option<Change> {
        match result {
            Ok(()) if self.lost == 0 => None,
            Ok(()) => Some(Change::Recovered(std::mem::take(&mut self.lost))),
            Err(e) => {
                self.lost += 1;
                (self.lost == 1).then_some(Change::Failed(e))
            }
        }
    }
}

/// Sends the access log to `path` (`-` = stdout, `None` = no file).
pub fn set_logfile(path: Option<&str>) -> Result<(), String> {
    let new = match path {
        None => Sink::Off,
        Some("-") => Sink::Stdout,
        Some(path) => Sink::File(path.to_string(), open(path)?),
    };
    *OUTPUT.lock().unwrap_or_else(|e| e.into_inner()) = Output {
        sink: new,
        health: Health::default(),
    };
    Ok(())
}

/// Reopens the access log file (USR1, after a logrotate-style rename). A line being written
/// holds the lock, so it lands whole in the old file or the new one.
pub fn reopen() -> Result<(), String> {
    let mut output = OUTPUT.lock().unwrap_or_else(|e| e.into_inner());
    if let Sink::File(path, file) = &mut output.sink {
        *file = open(path)?;
    }
    Ok(())
}

fn open(path: &str) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open access log file {path:?}: {e}"))
}

/// Writes one rendered line to the access log file or stdout. A line that cannot be written
/// is lost; the error log says so when that begins and when writing works again.
pub fn write(line: &str) {
    let mut output = OUTPUT.lock().unwrap_or_else(|e| e.into_inner());
    let result = match &output.sink {
        Sink::Off => Ok(()),
        Sink::File(_, file) => {
            let mut f: &File = file;
            f.write_all(line.as_bytes())
        }
        Sink::Stdout => {
            let stdout = std::io::stdout();
            let fd = stdout.as_raw_fd();
            // SAFETY: one write(2) of a complete line to stdout, which outlives this call.
            let n = unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    };
    let Some(change) = output.health.record(result) else {
        return;
    };
    let name = output.sink.name().to_string();
    drop(output);
    match change {
        Change::Failed(e) => super::error(format_args!(
            "Cannot write to access log {name:?}: {e}; access lines are lost until it works again"
        )),
        Change::Recovered(lost) => super::warning(format_args!(
            "Writing to access log {name:?} works again; {lost} line(s) were lost"
        )),
    }
}

/// Logs one served request: rendered by Rust and written to the file and syslog, or handed
/// to the Python logger (a logging config, or a custom logger class), whose `access()` builds
/// Gunicorn's atoms dict and passes it to `logging` as the record's `args`.
pub fn emit<R: LoggedRequest>(format: &AccessFormat, data: AccessData<R>, duration: Duration) {
    if super::python::active() {
        super::python::access_call(data, duration);
        return;
    }
    let record = AccessRecord {
        head: &data.head,
        remote_addr: &data.remote_addr,
        status: data.status,
        sent: data.sent,
        response_headers: &data.response_headers,
        environ: &data.environ,
        duration,
    };
    let line = format.render(&record);
    write(&line);
    super::syslog::access_line(line.trim_end_matches('\n'));
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    /// A request as a parser would show it.
    struct Head {
        method: &'static str,
        target: &'static str,
        version: (u8, u8),
        fields: Vec<(&'static str, &'static [u8])>,
    }

    impl LoggedRequest for Head {
        fn method(&self) -> &str {
            self.method
        }
        fn target(&self) -> &[u8] {
            self.target.as_bytes()
        }
        fn path(&self) -> &[u8] {
            self.target.split('?').next().unwrap_or_default().as_bytes()
        }
        fn decoded_path(&self) -> Cow<'_, [u8]> {
            Cow::Owned(self.path().to_vec()) // no escapes in these tests
        }
        fn query(&self) -> &[u8] {
            self.target
                .split_once('?')
                .map_or("", |(_, q)| q)
                .as_bytes()
        }
        fn fragment(&self) -> &[u8] {
            b""
        }
        fn version(&self) -> (u8, u8) {
            self.version
        }
        fn fields(&self) -> impl DoubleEndedIterator<Item = (&str, &[u8])> {
            self.fields.iter().copied()
        }
    }

    const DEFAULT: &str = r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

    #[test]
    fn default_format_like_gunicorn() {
        let h = Head {
            method: "GET",
            target: "/a?b=1",
            version: (1, 1),
            fields: vec![
                ("Host", b"h"),
                ("User-Agent", b"curl/8 \"x\""),
                ("Authorization", b"Basic dXNlcjpwYXNz"),
            ],
        };
        let rec = AccessRecord {
            head: &h,
            remote_addr: "127.0.0.1",
            status: 200,
            sent: 13,
            response_headers: &[],
            environ: &[],
            duration: Duration::from_micros(1_500_000),
        };
        let line = AccessFormat::parse(DEFAULT).render(&rec);
        let re_time = line
            .split('[')
            .nth(1)
            .and_then(|s| s.split(']').next())
            .unwrap();
        assert_eq!(
            line.replace(re_time, "T"),
            "127.0.0.1 - user [T] \"GET /a?b=1 HTTP/1.1\" 200 13 \"-\" \"curl/8 \\\"x\\\"\"\n"
        );
    }

    #[test]
    fn write_failures_reported_when_they_begin_and_end() {
        let mut health = Health::default();
        let full = || Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(health.record(Ok(())).is_none());
        assert!(matches!(health.record(full()), Some(Change::Failed(e))
            if e.raw_os_error() == Some(libc::ENOSPC)));
        for _ in 0..99 {
            assert!(health.record(full()).is_none());
        }
        assert!(matches!(
            health.record(Ok(())),
            Some(Change::Recovered(100))
        ));
        assert!(health.record(Ok(())).is_none());
        assert!(matches!(health.record(full()), Some(Change::Failed(_))));
        assert!(matches!(health.record(Ok(())), Some(Change::Recovered(1))));
    }

    #[test]
    fn every_atom() {
        let h = Head {
            method: "POST",
            target: "/p q?x=1",
            version: (1, 0),
            fields: vec![("X-Req", b"in"), ("Referer", b"r")],
        };
        let rec = AccessRecord {
            head: &h,
            remote_addr: "10.0.0.1",
            status: 404,
            sent: 0,
            response_headers: &[("X-Out".into(), "out".into())],
            environ: &[("server_name".into(), "srv".into())],
            duration: Duration::from_micros(2_345_678),
        };
        let fmt = "%(m)s|%(U)s|%(q)s|%(H)s|%(B)s|%(b)s|%(f)s|%(T)s|%(D)s|%(M)s|%(L)s|%({x-req}i)s|%({x-out}o)s|%({SERVER_NAME}e)s|%({nope}i)s|%%";
        let line = AccessFormat::parse(fmt).render(&rec);
        assert_eq!(
            line,
            "POST|/p q|x=1|HTTP/1.0|0|0|r|2|2345678|2345|2.345678|in|out|srv|-|%\n"
        );
        assert!(AccessFormat::parse("%(p)s").render(&rec).starts_with('<'));
    }
}
