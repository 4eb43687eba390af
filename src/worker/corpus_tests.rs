//! Request streams replayed through the request parser the way a connection feeds it: the
//! PROXY header when the case turns the protocol on, then head, body, the next pipelined
//! request, and so on until the stream ends, a refusal, or a request that closes the connection.
//! Settings are read as the worker reads them, and the environ's refusals (`--header-map
//! refuse`, contradictory secure-scheme headers) apply too.
//!
//! Two sets of cases: the project's own (`tests/cases/*.cases`, format in
//! `tests/cases/README.md`), always; and the shared conformance corpus beside the repository
//! (`../shared/conformance/cases`: Gunicorn's own request corpus and the RFC 9112 cases), when
//! it is there — the test says so when it is not. Each stream is fed whole, line by line, byte
//! by byte, and split in two at every offset. Every feed must end with the heads, bodies, PROXY
//! information and refusal of the whole feed, and the whole feed must give what the case
//! expects: the requests it lists, then the refusal it names, with the status ferrocorn answers.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyString};

use crate::http::body::BodyDecoder;
use crate::http::error::HttpError;
use crate::http::forwarded::{AllowList, ForwardedPolicy, HeaderMap};
use crate::http::head::{self, H1Framing, Limits, RequestHead};
use crate::http::proxy::{self, ProxyInfo};

/// The harness connects from here; the default `forwarded_allow_ips` and `proxy_allow_ips`
/// trust it.
const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Case sets, in the order they are run.
const SETS: [&str; 3] = ["gunicorn/valid", "gunicorn/invalid", "extra"];

/// Cases left out, with the reason.
const LEFT_OUT: &[(&str, &str)] = &[(
    "gunicorn/valid/099",
    // The harness skips it for the same reason.
    "its body is shorter than its Content-Length; only a parser fed a finite buffer accepts it",
)];

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/cases")
}

fn own_cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases")
}

/// A line in the test output even when the test passes (the harness captures only `print!`).
fn report(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

// ---------------------------------------------------------------------------------------------
// `.http` files: real newlines are layout only; `\r`, `\n`, `\t`, `\0`, `\\` and `\xHH` stand
// for the bytes they name.

fn decode_http(text: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'\n' => i += 1,
            b'\\' if i + 1 < text.len() => {
                let e = text[i + 1];
                i += 2;
                match e {
                    b'r' => out.push(b'\r'),
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'0' => out.push(0),
                    b'\\' => out.push(b'\\'),
                    b'x' => {
                        let hex = text
                            .get(i..i + 2)
                            .and_then(|h| std::str::from_utf8(h).ok())
                            .and_then(|h| u8::from_str_radix(h, 16).ok())
                            .ok_or_else(|| format!("bad \\x escape at byte {i}"))?;
                        out.push(hex);
                        i += 2;
                    }
                    other => return Err(format!("unknown escape \\{}", other as char)),
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// `.py` files: a reader for the few statements and literals they use. Strings are kept as their
// latin-1 bytes, which is how the harness compares them with the environ.

#[derive(Clone, PartialEq)]
enum PyVal {
    Str(Vec<u8>),
    Int(i64),
    Bool(bool),
    Seq(Vec<PyVal>),
    Dict(Vec<(PyVal, PyVal)>),
    /// `uri("...")`: a request target.
    Uri(Vec<u8>),
    /// A name bound to nothing this reader knows: one of the error classes.
    Name(String),
    /// An expression this reader does not evaluate, described.
    Unknown(String),
}

/// Python-like, so a failure shows the expectation as the `.py` wrote it.
impl std::fmt::Debug for PyVal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PyVal::Str(s) => write!(f, "{:?}", String::from_utf8_lossy(s)),
            PyVal::Int(i) => write!(f, "{i}"),
            PyVal::Bool(b) => write!(f, "{}", if *b { "True" } else { "False" }),
            PyVal::Seq(items) => f.debug_list().entries(items).finish(),
            PyVal::Dict(items) => f
                .debug_map()
                .entries(items.iter().map(|(k, v)| (k, v)))
                .finish(),
            PyVal::Uri(t) => write!(f, "uri({:?})", String::from_utf8_lossy(t)),
            PyVal::Name(n) => write!(f, "{n}"),
            PyVal::Unknown(what) => write!(f, "<{what}>"),
        }
    }
}

struct PyReader<'a> {
    s: &'a [char],
    p: usize,
    vars: HashMap<String, PyVal>,
}

impl PyReader<'_> {
    /// Skips whitespace, comments and line continuations.
    fn ws(&mut self) {
        while let Some(&c) = self.s.get(self.p) {
            if c == '#' {
                while self.s.get(self.p).is_some_and(|&c| c != '\n') {
                    self.p += 1;
                }
            } else if c.is_whitespace() || c == '\\' {
                self.p += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.ws();
        self.s.get(self.p).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.p += 1;
            true
        } else {
            false
        }
    }

    fn ident(&mut self) -> Option<String> {
        self.ws();
        let start = self.p;
        while self
            .s
            .get(self.p)
            .is_some_and(|&c| c.is_alphanumeric() || c == '_')
        {
            self.p += 1;
        }
        (self.p > start).then(|| self.s[start..self.p].iter().collect())
    }

    fn skip_line(&mut self) {
        while self.s.get(self.p).is_some_and(|&c| c != '\n') {
            self.p += 1;
        }
    }

    /// The items up to `close`; the opening bracket has been read.
    fn items(&mut self, close: char) -> Result<Vec<PyVal>, String> {
        let mut items = Vec::new();
        while !self.eat(close) {
            items.push(self.expr()?);
            if !self.eat(',') && self.peek() != Some(close) {
                return Err(format!("expected ',' or {close:?} at {}", self.p));
            }
        }
        Ok(items)
    }

    fn expr(&mut self) -> Result<PyVal, String> {
        let mut v = self.postfix()?;
        loop {
            if self.eat('+') {
                v = match (v, self.postfix()?) {
                    (PyVal::Str(mut a), PyVal::Str(b)) => {
                        a.extend(b);
                        PyVal::Str(a)
                    }
                    (PyVal::Int(a), PyVal::Int(b)) => PyVal::Int(a + b),
                    (a, b) => PyVal::Unknown(format!("{a:?} + {b:?}")),
                };
            } else if self.eat('*') {
                v = match (v, self.postfix()?) {
                    (PyVal::Str(a), PyVal::Int(n)) => {
                        PyVal::Str(a.repeat(usize::try_from(n).unwrap_or(0)))
                    }
                    (PyVal::Int(a), PyVal::Int(b)) => PyVal::Int(a * b),
                    (a, b) => PyVal::Unknown(format!("{a:?} * {b:?}")),
                };
            } else {
                return Ok(v);
            }
        }
    }

    /// A primary followed by method calls: `.replace(a, b)`, `.encode(...)`, `.decode(...)`.
    fn postfix(&mut self) -> Result<PyVal, String> {
        let mut v = self.primary()?;
        while self.eat('.') {
            let method = self.ident().ok_or("name expected after '.'")?;
            if !self.eat('(') {
                v = PyVal::Unknown(format!("attribute {method}"));
                continue;
            }
            let args = self.items(')')?;
            v = match (method.as_str(), v, args.as_slice()) {
                ("replace", PyVal::Str(s), [PyVal::Str(from), PyVal::Str(to)]) => {
                    PyVal::Str(replace(&s, from, to))
                }
                // The corpus encodes and decodes ASCII text only.
                ("encode" | "decode", PyVal::Str(s), _) if s.is_ascii() => PyVal::Str(s),
                (m, v, _) => PyVal::Unknown(format!("{v:?}.{m}(...)")),
            };
        }
        Ok(v)
    }

    fn primary(&mut self) -> Result<PyVal, String> {
        let c = self.peek().ok_or("expression expected at the end")?;
        match c {
            '[' | '(' => {
                self.p += 1;
                Ok(PyVal::Seq(self.items(if c == '[' { ']' } else { ')' })?))
            }
            '{' => {
                self.p += 1;
                let mut items = Vec::new();
                while !self.eat('}') {
                    let k = self.expr()?;
                    if !self.eat(':') {
                        return Err(format!("expected ':' in a dict at {}", self.p));
                    }
                    items.push((k, self.expr()?));
                    self.eat(',');
                }
                Ok(PyVal::Dict(items))
            }
            '"' | '\'' => self.string(false),
            '-' | '0'..='9' => {
                let start = self.p;
                self.p += 1;
                while self.s.get(self.p).is_some_and(|c| c.is_ascii_digit()) {
                    self.p += 1;
                }
                let text: String = self.s[start..self.p].iter().collect();
                if self.s.get(self.p) == Some(&'.') {
                    self.p += 1;
                    while self.s.get(self.p).is_some_and(|c| c.is_ascii_digit()) {
                        self.p += 1;
                    }
                    return Ok(PyVal::Unknown("a float".into()));
                }
                text.parse()
                    .map(PyVal::Int)
                    .map_err(|_| format!("bad number {text}"))
            }
            _ => {
                let name = self
                    .ident()
                    .ok_or_else(|| format!("unexpected {c:?} at {}", self.p))?;
                if let Some('"' | '\'') = self.s.get(self.p) {
                    let prefix = name.to_ascii_lowercase();
                    if prefix.chars().all(|c| "rbu".contains(c)) {
                        return self.string(prefix.contains('r'));
                    }
                }
                if self.s.get(self.p) == Some(&'(') {
                    self.p += 1;
                    let args = self.items(')')?;
                    return Ok(match (name.as_str(), args.as_slice()) {
                        ("uri", [PyVal::Str(target)]) => PyVal::Uri(target.clone()),
                        _ => PyVal::Unknown(format!("{name}(...)")),
                    });
                }
                Ok(match name.as_str() {
                    "True" => PyVal::Bool(true),
                    "False" => PyVal::Bool(false),
                    _ => self.vars.get(&name).cloned().unwrap_or(PyVal::Name(name)),
                })
            }
        }
    }

    fn string(&mut self, raw: bool) -> Result<PyVal, String> {
        let q = self.s[self.p];
        let triple = self.s.get(self.p..self.p + 3) == Some(&[q, q, q][..]);
        self.p += if triple { 3 } else { 1 };
        let mut chars: Vec<u32> = Vec::new();
        loop {
            let c = *self.s.get(self.p).ok_or("unterminated string")?;
            if c == q && (!triple || self.s.get(self.p..self.p + 3) == Some(&[q, q, q][..])) {
                self.p += if triple { 3 } else { 1 };
                break;
            }
            self.p += 1;
            if c != '\\' || raw {
                chars.push(c.into());
                continue;
            }
            let e = *self.s.get(self.p).ok_or("unterminated string")?;
            self.p += 1;
            let hex = |r: &mut Self, n: usize| -> Result<u32, String> {
                let h: String =
                    r.s.get(r.p..r.p + n)
                        .ok_or("short escape")?
                        .iter()
                        .collect();
                r.p += n;
                u32::from_str_radix(&h, 16).map_err(|_| format!("bad escape {h}"))
            };
            match e {
                'n' => chars.push(0x0a),
                'r' => chars.push(0x0d),
                't' => chars.push(0x09),
                '0' => chars.push(0),
                '\n' => {}
                'x' => chars.push(hex(self, 2)?),
                'u' => chars.push(hex(self, 4)?),
                '\\' | '\'' | '"' => chars.push(e.into()),
                other => {
                    // Python keeps an unknown escape as written.
                    chars.push('\\'.into());
                    chars.push(other.into());
                }
            }
        }
        let Ok(mut bytes) = chars
            .iter()
            .map(|&c| u8::try_from(c))
            .collect::<Result<Vec<u8>, _>>()
        else {
            return Ok(PyVal::Unknown("a string beyond latin-1".into()));
        };
        // Adjacent literals concatenate.
        self.ws();
        let prefix = self.s[self.p..]
            .iter()
            .take_while(|c| "rRbBuU".contains(**c))
            .count();
        if prefix <= 2 && matches!(self.s.get(self.p + prefix), Some('"' | '\'')) {
            let raw = self.s[self.p..self.p + prefix]
                .iter()
                .any(|c| *c == 'r' || *c == 'R');
            self.p += prefix;
            match self.string(raw)? {
                PyVal::Str(more) => bytes.extend(more),
                other => return Ok(other),
            }
        }
        Ok(PyVal::Str(bytes))
    }
}

fn replace(s: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    if from.is_empty() {
        return s.to_vec();
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// What a case's `.py` says.
struct Expectation {
    /// `request`: a dict, an error class, or a list of them.
    request: PyVal,
    /// `cfg.set(name, value)` calls, in order.
    settings: Vec<(String, PyVal)>,
    allow_reject: bool,
    require_all: bool,
}

/// Reads the statements of a `.py`: imports, `cfg.set(...)` calls and assignments.
fn read_expectation(src: &str) -> Result<Expectation, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut r = PyReader {
        s: &chars,
        p: 0,
        vars: HashMap::new(),
    };
    let mut settings = Vec::new();
    while r.peek().is_some() {
        let mut name = r
            .ident()
            .ok_or_else(|| format!("statement expected at {}", r.p))?;
        if name == "from" || name == "import" {
            r.skip_line();
            continue;
        }
        while r.eat('.') {
            name.push('.');
            name.push_str(&r.ident().ok_or("name expected after '.'")?);
        }
        if r.eat('(') {
            let args = r.items(')')?;
            if name == "cfg.set" {
                match args.as_slice() {
                    [PyVal::Str(setting), value] => settings.push((
                        String::from_utf8(setting.clone()).map_err(|e| e.to_string())?,
                        value.clone(),
                    )),
                    _ => return Err(format!("cfg.set{args:?}")),
                }
            }
        } else if r.eat('=') {
            let value = r.expr()?;
            r.vars.insert(name, value);
        } else {
            return Err(format!("cannot read the statement starting with {name}"));
        }
    }
    let flag = |n: &str| r.vars.get(n) == Some(&PyVal::Bool(true));
    Ok(Expectation {
        request: r.vars.get("request").cloned().ok_or("no `request =`")?,
        settings,
        allow_reject: flag("allow_reject"),
        require_all: flag("require_all"),
    })
}

// ---------------------------------------------------------------------------------------------
// The server side: settings as the worker reads them, and the replay of a stream.

/// What the worker builds from the settings and hands to the parsers.
struct Setup {
    limits: Limits,
    proxy_mode: proxy::Mode,
    proxy_allow: AllowList,
    forwarded: ForwardedPolicy,
}

/// The case's settings over the defaults, validated and read as the worker reads them.
fn setup_for(settings: &[(String, PyVal)]) -> Result<Setup, String> {
    Python::initialize();
    let settings = Python::attach(|py| {
        let mut values = Vec::new();
        for (name, value) in settings {
            let obj: Py<PyAny> = match value {
                PyVal::Bool(b) => PyBool::new(py, *b).to_owned().into_any().unbind(),
                PyVal::Int(i) => i
                    .into_pyobject(py)
                    .map_err(|e| e.to_string())?
                    .into_any()
                    .unbind(),
                PyVal::Str(s) => PyString::new(py, &String::from_utf8_lossy(s))
                    .into_any()
                    .unbind(),
                other => return Err(format!("{name}: cannot pass {other:?}")),
            };
            values.push((name.clone(), obj));
        }
        crate::config::from_values(py, values).map_err(|e| e.message)
    })?;
    let mut forwarded = ForwardedPolicy::new(
        settings.list("forwarded_allow_ips"),
        settings.dict("secure_scheme_headers"),
        settings.list("forwarder_headers"),
    )?;
    let header_map = settings.str("header_map").unwrap_or("drop");
    forwarded.header_map = HeaderMap::parse(header_map).ok_or("header_map")?;
    let proxy_mode = settings.str("proxy_protocol").unwrap_or("off");
    Ok(Setup {
        limits: crate::worker::request_limits(&settings),
        proxy_mode: proxy::Mode::parse(proxy_mode).ok_or("proxy_protocol")?,
        proxy_allow: AllowList::new(settings.list("proxy_allow_ips"))?,
        forwarded,
    })
}

impl Setup {
    /// Whether the environ keeps a header field (the rule `wsgi::environ` applies): a name
    /// with `_` shares its environ key with the `-` spelling, so `--header-map` decides,
    /// unless a trusted forwarder may send it.
    fn keeps(&self, name: &str) -> Result<bool, HttpError> {
        if !name.contains('_') || self.trusted() && self.forwarded.forwards(name) {
            return Ok(true);
        }
        match self.forwarded.header_map {
            HeaderMap::Drop => Ok(false),
            HeaderMap::Refuse => Err(HttpError::invalid_header_name(name.as_bytes())),
            HeaderMap::Dangerous => Ok(true),
        }
    }

    fn trusted(&self) -> bool {
        self.forwarded.trusts(Some(PEER))
    }

    /// The refusals the environ adds to the parser's: `--header-map refuse` and contradictory
    /// secure-scheme headers from a trusted peer.
    fn environ_check(&self, head: &RequestHead) -> Result<(), HttpError> {
        for (name, _) in head.headers().iter() {
            self.keeps(name)?;
        }
        if self.trusted() {
            self.forwarded.scheme(head.headers().iter())?;
        }
        Ok(())
    }
}

#[derive(Debug, PartialEq)]
struct Served {
    head: RequestHead,
    body: Vec<u8>,
}

#[derive(Debug, PartialEq)]
enum End {
    /// Every byte was used and the connection is between requests.
    Clean,
    /// The last request said the connection closes after it; later bytes are unread.
    Closed,
    /// The stream ended inside a request (or inside a PROXY header).
    Incomplete,
    Error(HttpError),
}

#[derive(Debug, PartialEq)]
struct Outcome {
    proxy: Option<ProxyInfo>,
    served: Vec<Served>,
    end: End,
}

/// One connection's parsing state, advanced each time bytes arrive.
struct Conn<'a> {
    setup: &'a Setup,
    buf: Vec<u8>,
    awaiting_proxy: bool,
    proxy: Option<ProxyInfo>,
    current: Option<(RequestHead, H1Framing, BodyDecoder, Vec<u8>)>,
    served: Vec<Served>,
}

impl<'a> Conn<'a> {
    fn new(setup: &'a Setup) -> Self {
        Conn {
            setup,
            buf: Vec::new(),
            awaiting_proxy: setup.proxy_mode != proxy::Mode::Off,
            proxy: None,
            current: None,
            served: Vec::new(),
        }
    }

    /// Whether the parsers have taken nothing from the bytes received so far.
    fn untouched(&self) -> bool {
        self.awaiting_proxy == (self.setup.proxy_mode != proxy::Mode::Off)
            && self.current.is_none()
            && self.served.is_empty()
    }

    fn finish(self, end: Option<End>) -> Outcome {
        let end = end.unwrap_or(if self.current.is_some() || !self.buf.is_empty() {
            End::Incomplete
        } else {
            End::Clean
        });
        Outcome {
            proxy: self.proxy,
            served: self.served,
            end,
        }
    }

    /// Parses as far as the buffered bytes go. `Err`: the connection ends here.
    fn advance(&mut self) -> Result<(), End> {
        let setup = self.setup;
        if self.awaiting_proxy && !self.buf.is_empty() {
            match proxy::parse(&self.buf, setup.proxy_mode).map_err(End::Error)? {
                None => return Ok(()),
                Some((info, used)) => {
                    self.awaiting_proxy = false;
                    if let Some(info) = info {
                        if !setup.proxy_allow.allows(Some(PEER)) {
                            return Err(End::Error(HttpError::forbidden_proxy()));
                        }
                        self.buf.drain(..used);
                        self.proxy = Some(info);
                    }
                }
            }
        }
        loop {
            if let Some((_, _, decoder, body)) = self.current.as_mut() {
                let d = decoder
                    .decode(&self.buf, body, usize::MAX)
                    .map_err(End::Error)?;
                self.buf.drain(..d.consumed);
                if !d.done {
                    return Ok(());
                }
                if let Some((head, framing, _, body)) = self.current.take() {
                    let keep_alive = framing.keep_alive;
                    self.served.push(Served { head, body });
                    if !keep_alive {
                        return Err(End::Closed);
                    }
                }
            }
            if self.buf.is_empty() {
                return Ok(());
            }
            let Some((head, framing, used)) =
                head::parse(&self.buf, &setup.limits).map_err(End::Error)?
            else {
                return Ok(());
            };
            self.buf.drain(..used);
            setup.environ_check(&head).map_err(End::Error)?;
            let decoder = BodyDecoder::new(framing.body);
            self.current = Some((head, framing, decoder, Vec::new()));
        }
    }
}

/// Feeds `data` in the pieces that `cuts` (increasing offsets) make.
fn replay(data: &[u8], cuts: &[usize], setup: &Setup) -> Outcome {
    let mut conn = Conn::new(setup);
    let mut from = 0;
    for &to in cuts.iter().chain([data.len()].iter()) {
        conn.buf.extend_from_slice(&data[from..to]);
        from = to;
        if let Err(end) = conn.advance() {
            return conn.finish(Some(end));
        }
    }
    conn.finish(None)
}

/// Feeds `data` in two pieces cut at `cut`. `None` when the parsers took nothing from the first
/// piece: the connection then holds only its bytes, as the whole feed's does when it starts,
/// so the second piece makes the same calls on the same buffer as the whole feed.
fn replay_split(data: &[u8], cut: usize, setup: &Setup) -> Option<Outcome> {
    let mut conn = Conn::new(setup);
    conn.buf.extend_from_slice(&data[..cut]);
    if let Err(end) = conn.advance() {
        return Some(conn.finish(Some(end)));
    }
    if conn.untouched() && conn.buf.len() == cut {
        return None;
    }
    conn.buf.extend_from_slice(&data[cut..]);
    let end = conn.advance().err();
    Some(conn.finish(end))
}

/// Whether a feed ended as the whole feed did. A refusal is the same refusal when its status
/// and reason are: its message quotes what was buffered when the parser gave up (a request line
/// "too large (4095 > 4094)" after 4095 bytes), as Gunicorn's does.
fn same_outcome(a: &Outcome, b: &Outcome) -> bool {
    let end = match (&a.end, &b.end) {
        (End::Error(x), End::Error(y)) => x.status == y.status && x.reason == y.reason,
        (x, y) => x == y,
    };
    end && a.proxy == b.proxy && a.served == b.served
}

/// Where two outcomes first differ, briefly.
fn difference(got: &Outcome, whole: &Outcome) -> String {
    if got.proxy != whole.proxy {
        return format!("PROXY {:?}, whole {:?}", got.proxy, whole.proxy);
    }
    for (i, (a, b)) in got.served.iter().zip(&whole.served).enumerate() {
        if a.head != b.head {
            return format!("request #{}: head {:?}, whole {:?}", i + 1, a.head, b.head);
        }
        if a.body != b.body {
            return format!(
                "request #{}: body {:?}, whole {:?}",
                i + 1,
                text(&a.body),
                text(&b.body)
            );
        }
    }
    format!(
        "{} requests then {:?}; whole: {} requests then {:?}",
        got.served.len(),
        got.end,
        whole.served.len(),
        whole.end
    )
}

/// Client bytes for a message, cut short when long.
fn text(v: &[u8]) -> String {
    if v.len() > 120 {
        format!(
            "{}... ({} bytes)",
            String::from_utf8_lossy(&v[..120]),
            v.len()
        )
    } else {
        String::from_utf8_lossy(v).into_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// Judging the whole feed against the expectation.

/// The status ferrocorn answers for the Gunicorn error a case names (docs/security.md);
/// `Ok(None)` when any refusal will do.
fn expected_status(error: &str) -> Result<Option<u16>, String> {
    Ok(Some(match error {
        "Reject" | "NoMoreData" => return Ok(None),
        "InvalidRequestLine"
        | "InvalidRequestMethod"
        | "InvalidHTTPVersion"
        | "InvalidHeader"
        | "InvalidHeaderName"
        | "ObsoleteFolding"
        | "InvalidChunkSize"
        | "ChunkMissingTerminator"
        | "InvalidChunkExtension"
        | "InvalidProxyLine"
        | "InvalidSchemeHeaders"
        | MISSING_HOST => 400,
        // Gunicorn answers 400; ferrocorn's 414 names the problem.
        "LimitRequestLine" => 414,
        "LimitRequestHeaders" => 431,
        "UnsupportedTransferCoding" => 501,
        "ForbiddenProxyRequest" => 403,
        other => return Err(format!("unknown error class {other}")),
    }))
}

/// Stands for the refusal of an HTTP/1.1 request without Host.
const MISSING_HOST: &str = "MissingHost";

/// Whether an expected request is HTTP/1.1 (or later) without a Host field. Gunicorn's corpus
/// expects some answered; RFC 9112 section 3.2 requires a 400, which ferrocorn answers, so the
/// case is judged as answered up to that request and refused from it on.
fn lacks_required_host(want: &PyVal) -> bool {
    let PyVal::Dict(items) = want else {
        return false;
    };
    let field = |key: &[u8]| {
        items
            .iter()
            .find(|(k, _)| *k == PyVal::Str(key.to_vec()))
            .map(|(_, v)| v)
    };
    let http_1_1 = matches!(
        field(b"version"),
        Some(PyVal::Seq(v)) if matches!(v.as_slice(), [PyVal::Int(major), PyVal::Int(minor)]
            if (*major, *minor) >= (1, 1))
    );
    let has_host = matches!(field(b"headers"), Some(PyVal::Seq(headers)) if headers.iter().any(
        |pair| matches!(pair, PyVal::Seq(p) if matches!(p.first(),
            Some(PyVal::Str(name)) if name.eq_ignore_ascii_case(b"host")))
    ));
    http_1_1 && !has_host
}

/// The path and query the harness expects for a target (its `uri()`); `None` for CONNECT's
/// authority-form, which has neither.
fn expected_path_query(target: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = if target.starts_with(b"/") || target == b"*" {
        target
    } else if let Some(i) = memchr::memmem::find(target, b"://") {
        let after = &target[i + 3..];
        let end = after
            .iter()
            .position(|&b| matches!(b, b'/' | b'?' | b'#'))
            .unwrap_or(after.len());
        &after[end..]
    } else {
        return None;
    };
    let rest = rest.split(|&b| b == b'#').next().unwrap_or_default();
    Some(match memchr::memchr(b'?', rest) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &b""[..]),
    })
}

/// Checks one request of the whole feed against its expected dict.
fn check_request(want: &PyVal, got: &Served, setup: &Setup) -> Result<(), String> {
    let PyVal::Dict(items) = want else {
        return Err(format!("expectation is not a dict: {want:?}"));
    };
    let head = &got.head;
    for (key, value) in items {
        let PyVal::Str(key) = key else {
            return Err(format!("dict key {key:?}"));
        };
        match (key.as_slice(), value) {
            (b"method", PyVal::Str(m)) => {
                if m.as_slice() != head.method.as_bytes() {
                    return Err(format!("method {:?}, want {:?}", head.method, text(m)));
                }
            }
            (b"uri", PyVal::Uri(target)) => {
                if target.as_slice() != head.target() {
                    return Err(format!(
                        "target {:?}, want {:?}",
                        text(head.target()),
                        text(target)
                    ));
                }
                if let Some((path, query)) = expected_path_query(target) {
                    if &*head.method != "CONNECT" && (path != head.path() || query != head.query())
                    {
                        return Err(format!(
                            "path {:?} query {:?}, want {:?} {:?}",
                            text(head.path()),
                            text(head.query()),
                            text(path),
                            text(query)
                        ));
                    }
                }
            }
            (b"version", PyVal::Seq(v)) => {
                if v[..]
                    != [
                        PyVal::Int(head.version.major.into()),
                        PyVal::Int(head.version.minor.into()),
                    ]
                {
                    return Err(format!("{}, want {v:?}", head.version));
                }
            }
            (b"headers", PyVal::Seq(want)) => {
                let mut kept = Vec::new();
                for (name, value) in head.headers().iter() {
                    if setup.keeps(name).map_err(|e| e.message)? {
                        kept.push((name, value));
                    }
                }
                let shown = || {
                    kept.iter()
                        .map(|(n, v)| format!("{n}: {}", text(v)))
                        .collect::<Vec<_>>()
                };
                if want.len() != kept.len() {
                    return Err(format!("headers {:?}, want {want:?}", shown()));
                }
                for (pair, (name, value)) in want.iter().zip(&kept) {
                    let PyVal::Seq(pair) = pair else {
                        return Err(format!("header {pair:?}"));
                    };
                    let [PyVal::Str(want_name), PyVal::Str(want_value)] = pair.as_slice() else {
                        return Err(format!("header {pair:?}"));
                    };
                    // The harness reads CONTENT_LENGTH "0005" as "5".
                    let same_length = name.eq_ignore_ascii_case("content-length")
                        && text(want_value).parse::<u64>().ok() == text(value).parse::<u64>().ok();
                    if !want_name.eq_ignore_ascii_case(name.as_bytes())
                        || want_value.as_slice() != *value && !same_length
                    {
                        return Err(format!("headers {:?}, want {want:?}", shown()));
                    }
                }
            }
            // WSGI has no place for trailers; the harness does not judge them either.
            (b"trailers", _) => {}
            (b"body", PyVal::Str(body)) => {
                if body != &got.body {
                    return Err(format!("body {:?}, want {:?}", text(&got.body), text(body)));
                }
            }
            (key, value) => {
                return Err(format!("cannot check {}: {value:?}", text(key)));
            }
        }
    }
    Ok(())
}

/// The result of one case.
struct CaseReport {
    /// Requests compared with their expectation.
    compared: usize,
    /// Feeds replayed.
    feeds: usize,
    note: Option<String>,
}

/// Judges one case; `Ok(None)` when it is left out.
fn run_case(dir: &Path, set: &str, name: &str) -> Result<Option<CaseReport>, String> {
    let case = format!("{set}/{name}");
    if let Some((_, why)) = LEFT_OUT.iter().find(|(c, _)| *c == case) {
        eprintln!("note: {case} left out: {why}");
        return Ok(None);
    }
    let read = |ext: &str| {
        let path = dir.join(format!("{name}.{ext}"));
        std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let data = decode_http(&read("http")?)?;
    let py = String::from_utf8(read("py")?).map_err(|e| e.to_string())?;
    let exp = read_expectation(&py).map_err(|e| format!("{name}.py: {e}"))?;
    let setup = setup_for(&exp.settings)?;

    let mut expected: Vec<PyVal> = match &exp.request {
        PyVal::Seq(items) => items.clone(),
        other => vec![other.clone()],
    };
    if let Some(i) = expected.iter().position(lacks_required_host) {
        eprintln!(
            "note: {case}: request #{} has no Host: judged refused",
            i + 1
        );
        expected.truncate(i);
        expected.push(PyVal::Name(MISSING_HOST.into()));
    }
    let answered: Vec<&PyVal> = expected
        .iter()
        .take_while(|p| !matches!(p, PyVal::Name(_)))
        .collect();
    let refusal = match expected.get(answered.len()) {
        Some(PyVal::Name(error)) => Some((error.as_str(), expected_status(error)?)),
        Some(other) => return Err(format!("expected requests: {other:?}")),
        None => None,
    };

    let whole = replay(&data, &[], &setup);
    for (i, (want, got)) in answered.iter().zip(&whole.served).enumerate() {
        check_request(want, got, &setup).map_err(|e| format!("request #{}: {e}", i + 1))?;
    }
    let compared = whole.served.len().min(answered.len());
    let mut note = None;
    if whole.served.len() > answered.len() {
        return Err(format!(
            "{} requests served, want {}",
            whole.served.len(),
            answered.len()
        ));
    } else if whole.served.len() < answered.len() {
        // Refused or closed before the last expected request.
        let announced = whole.end == End::Closed && !exp.require_all;
        let stopped = format!(
            "{} of {} requests served, then {:?}",
            whole.served.len(),
            answered.len(),
            whole.end
        );
        if !(exp.allow_reject || announced) {
            return Err(stopped);
        }
        note = Some(format!("{case}: {stopped}"));
    } else {
        match (&whole.end, refusal) {
            (End::Clean | End::Closed, None) => {}
            (End::Error(e), Some((error, Some(status)))) if e.status != status => {
                return Err(format!("{error} must be answered {status}, got {e:?}"));
            }
            (End::Error(_), Some(_)) => {}
            // A connection that closes before the refused request, or waits for the rest of
            // it, never serves it either.
            (End::Closed, Some(_)) => {}
            (End::Incomplete, Some((error, status))) => {
                if status.is_some() {
                    note = Some(format!("{case}: {error} refused by waiting for more bytes"));
                }
            }
            (End::Clean, Some((error, _))) => return Err(format!("{error} expected, accepted")),
            (end, None) => return Err(format!("must be accepted, ended {end:?}")),
        }
    }

    let feeds = every_feed(&data, &setup, &whole)?;
    Ok(Some(CaseReport {
        compared,
        feeds,
        note,
    }))
}

/// Replays `data` line by line, byte by byte and split in two at every offset; each feed must
/// end as the whole feed did. Returns how many feeds were replayed, the whole one included.
fn every_feed(data: &[u8], setup: &Setup, whole: &Outcome) -> Result<usize, String> {
    let mut lines: Vec<usize> = memchr::memchr_iter(b'\n', data).map(|i| i + 1).collect();
    lines.retain(|&i| i < data.len());
    let bytes: Vec<usize> = (1..data.len()).collect();
    for (label, cuts) in [("line by line", lines), ("byte by byte", bytes)] {
        let outcome = replay(data, &cuts, setup);
        if !same_outcome(&outcome, whole) {
            return Err(format!("{label}: {}", difference(&outcome, whole)));
        }
    }
    for cut in 1..data.len() {
        if let Some(outcome) = replay_split(data, cut, setup) {
            if !same_outcome(&outcome, whole) {
                return Err(format!("split at {cut}: {}", difference(&outcome, whole)));
            }
        }
    }
    Ok(data.len() + 2)
}

fn case_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| {
            let path = e.ok()?.path();
            if path.extension()? != "http" {
                return None;
            }
            Some(path.file_stem()?.to_str()?.to_owned())
        })
        .collect();
    names.sort();
    names
}

#[test]
fn shared_conformance_corpus() {
    let root = corpus_dir();
    if !root.is_dir() {
        report(&format!(
            "shared conformance corpus not found at {}: not replayed (the cases in tests/cases \
             were, by own_request_cases)",
            root.display()
        ));
        return;
    }
    let mut failures = Vec::new();
    let (mut cases, mut left_out, mut compared, mut feeds) = (0, 0, 0, 0);
    for set in SETS {
        let dir = root.join(set);
        for name in case_names(&dir) {
            match run_case(&dir, set, &name) {
                Ok(Some(report)) => {
                    cases += 1;
                    compared += report.compared;
                    feeds += report.feeds;
                    if let Some(note) = report.note {
                        eprintln!("note: {note}");
                    }
                }
                Ok(None) => left_out += 1,
                Err(e) => failures.push(format!("{set}/{name}: {e}")),
            }
        }
    }
    report(&format!(
        "shared conformance corpus: {cases} cases replayed ({left_out} left out), {compared} \
         requests compared, {feeds} feeds"
    ));
    assert!(
        failures.is_empty(),
        "{} corpus cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The corpus held 196 cases (66 requests compared) when this was written; far fewer means
    // it was not all found.
    assert!(
        cases > 150 && compared > 50,
        "only {cases} cases and {compared} requests under {}",
        root.display()
    );
}

#[test]
fn reader_reads_the_python_the_cases_use() {
    let e = read_expectation(
        "from gunicorn.config import Config\ncfg = Config()\ncfg.set('limit_request_fields', 2)\n\
         long = \"\"\"a\nb\"\"\".replace(\"\\n\", \"\")\n\
         request = [{\"method\": \"GET\", \"uri\": uri('/a'), \"version\": (1, 1),\n\
         \"headers\": [(\"A\", 'x' * 3), (\"B\", long)], \"body\": b\"h\\r\\n\" b'\\x41'}, Reject]\n\
         allow_reject = True\n",
    )
    .expect("readable");
    assert_eq!(
        e.settings,
        vec![("limit_request_fields".to_owned(), PyVal::Int(2))]
    );
    assert!(e.allow_reject && !e.require_all);
    let PyVal::Seq(items) = e.request else {
        panic!("a list")
    };
    let PyVal::Dict(fields) = &items[0] else {
        panic!("a dict")
    };
    let field = |k: &[u8]| {
        fields
            .iter()
            .find(|(key, _)| *key == PyVal::Str(k.to_vec()))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(field(b"uri"), Some(PyVal::Uri(b"/a".to_vec())));
    assert_eq!(field(b"body"), Some(PyVal::Str(b"h\r\nA".to_vec())));
    assert_eq!(
        field(b"headers"),
        Some(PyVal::Seq(vec![
            PyVal::Seq(vec![PyVal::Str(b"A".to_vec()), PyVal::Str(b"xxx".to_vec())]),
            PyVal::Seq(vec![PyVal::Str(b"B".to_vec()), PyVal::Str(b"ab".to_vec())]),
        ]))
    );
    assert_eq!(items[1], PyVal::Name("Reject".into()));
    assert_eq!(decode_http(b"a\\r\\n\nb\\x41\\\\").unwrap(), b"a\r\nbA\\");
}

// ---------------------------------------------------------------------------------------------
// The project's own cases: `tests/cases/*.cases`.

/// The rule classes, one file each; every one must be there.
const RULE_CLASSES: [&str; 6] = [
    "chunked",
    "framing",
    "headers",
    "limits",
    "pipelining",
    "targets",
];

#[derive(Debug, PartialEq)]
enum OwnEnd {
    /// The connection stays open for another request.
    Open,
    /// The server closes after the last request served.
    Close,
    /// The next request is refused with this status.
    Refuse(u16),
}

/// One case of a `.cases` file; `served` holds dicts shaped like the shared corpus's, so
/// `check_request` judges both.
struct OwnCase {
    name: String,
    data: Vec<u8>,
    settings: Vec<(String, PyVal)>,
    served: Vec<PyVal>,
    end: OwnEnd,
}

fn dict_entry<'a>(dict: &'a mut PyVal, key: &[u8]) -> Option<&'a mut PyVal> {
    let PyVal::Dict(items) = dict else {
        return None;
    };
    items
        .iter_mut()
        .find(|(k, _)| *k == PyVal::Str(key.to_vec()))
        .map(|(_, v)| v)
}

fn read_own_cases(text: &[u8], file: &str) -> Result<Vec<OwnCase>, String> {
    let mut cases: Vec<OwnCase> = Vec::new();
    for (number, raw) in text.split(|&b| b == b'\n').enumerate() {
        let at = format!("{file}:{}", number + 1);
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.trim_ascii().is_empty() || line.starts_with(b"#") {
            continue;
        }
        if let Some(name) = line.strip_prefix(b"=== ") {
            cases.push(OwnCase {
                name: String::from_utf8_lossy(name.trim_ascii()).into_owned(),
                data: Vec::new(),
                settings: Vec::new(),
                served: Vec::new(),
                end: OwnEnd::Open,
            });
            continue;
        }
        let case = cases
            .last_mut()
            .ok_or_else(|| format!("{at}: a case starts with '=== NAME'"))?;
        if case.end != OwnEnd::Open {
            return Err(format!("{at}: nothing may follow {:?}", case.end));
        }
        let decode = |t: &[u8]| decode_http(t).map_err(|e| format!("{at}: {e}"));
        if let Some(sent) = line.strip_prefix(b">") {
            case.data
                .extend(decode(sent.strip_prefix(b" ").unwrap_or(sent))?);
            continue;
        }
        let text = std::str::from_utf8(line.trim_ascii()).map_err(|e| format!("{at}: {e}"))?;
        let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
        let indented = line.starts_with(b" ");
        match word {
            "set" => {
                let (name, value) = rest
                    .split_once(' ')
                    .ok_or_else(|| format!("{at}: 'set NAME VALUE'"))?;
                let value = value.trim();
                let value = match (value, value.parse::<i64>()) {
                    (_, Ok(i)) => PyVal::Int(i),
                    ("true", _) => PyVal::Bool(true),
                    ("false", _) => PyVal::Bool(false),
                    (s, _) => PyVal::Str(s.as_bytes().to_vec()),
                };
                case.settings.push((name.to_owned(), value));
            }
            "serve" => {
                let [method, target, version] = rest.split(' ').collect::<Vec<_>>()[..] else {
                    return Err(format!("{at}: 'serve METHOD TARGET VERSION'"));
                };
                let (major, minor) = version
                    .strip_prefix("HTTP/")
                    .and_then(|v| v.split_once('.'))
                    .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                    .ok_or_else(|| format!("{at}: version {version}"))?;
                let s = |v: &str| PyVal::Str(v.as_bytes().to_vec());
                case.served.push(PyVal::Dict(vec![
                    (s("method"), s(method)),
                    (s("uri"), PyVal::Uri(target.as_bytes().to_vec())),
                    (
                        s("version"),
                        PyVal::Seq(vec![PyVal::Int(major), PyVal::Int(minor)]),
                    ),
                    (s("headers"), PyVal::Seq(Vec::new())),
                    (s("body"), s("")),
                ]));
            }
            "header" | "body" if indented => {
                let served = case
                    .served
                    .last_mut()
                    .ok_or_else(|| format!("{at}: {word} outside a 'serve'"))?;
                // The raw line, so that escapes and bytes past ASCII stay as written.
                let raw_rest = &line.trim_ascii()[word.len()..];
                let raw_rest = raw_rest.strip_prefix(b" ").unwrap_or(raw_rest);
                if word == "body" {
                    if let Some(body) = dict_entry(served, b"body") {
                        *body = PyVal::Str(decode(raw_rest)?);
                    }
                } else {
                    let colon = memchr::memchr(b':', raw_rest)
                        .ok_or_else(|| format!("{at}: 'header NAME: VALUE'"))?;
                    let pair = PyVal::Seq(vec![
                        PyVal::Str(raw_rest[..colon].trim_ascii().to_vec()),
                        PyVal::Str(decode(raw_rest[colon + 1..].trim_ascii())?),
                    ]);
                    if let Some(PyVal::Seq(headers)) = dict_entry(served, b"headers") {
                        headers.push(pair);
                    }
                }
            }
            "refuse" => {
                let status = rest
                    .trim()
                    .parse()
                    .map_err(|_| format!("{at}: status {rest}"))?;
                case.end = OwnEnd::Refuse(status);
            }
            "close" if rest.is_empty() => case.end = OwnEnd::Close,
            _ => return Err(format!("{at}: cannot read {text:?}")),
        }
    }
    match cases.iter().find(|c| c.data.is_empty()) {
        Some(c) => Err(format!("{file}: case {} sends nothing", c.name)),
        None => Ok(cases),
    }
}

/// Judges one own case; returns the number of feeds replayed.
fn run_own_case(case: &OwnCase) -> Result<usize, String> {
    let setup = setup_for(&case.settings)?;
    let whole = replay(&case.data, &[], &setup);
    for (i, (want, got)) in case.served.iter().zip(&whole.served).enumerate() {
        check_request(want, got, &setup).map_err(|e| format!("request #{}: {e}", i + 1))?;
    }
    if whole.served.len() != case.served.len() {
        return Err(format!(
            "{} requests served, want {}; ended {:?}",
            whole.served.len(),
            case.served.len(),
            whole.end
        ));
    }
    match (&case.end, &whole.end) {
        (OwnEnd::Open, End::Clean) | (OwnEnd::Close, End::Closed) => {}
        (OwnEnd::Refuse(status), End::Error(e)) if e.status == *status => {}
        (want, got) => return Err(format!("want {want:?}, ended {got:?}")),
    }
    every_feed(&case.data, &setup, &whole)
}

#[test]
fn own_request_cases() {
    let dir = own_cases_dir();
    let (mut cases, mut feeds) = (0, 0);
    let mut failures = Vec::new();
    for class in RULE_CLASSES {
        let path = dir.join(format!("{class}.cases"));
        let text =
            std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let own = read_own_cases(&text, class).unwrap_or_else(|e| panic!("{e}"));
        assert!(!own.is_empty(), "no cases in {}", path.display());
        for case in own {
            match run_own_case(&case) {
                Ok(n) => {
                    cases += 1;
                    feeds += n;
                }
                Err(e) => failures.push(format!("{class}/{}: {e}", case.name)),
            }
        }
    }
    report(&format!(
        "request cases (tests/cases): {cases} passed, {} failed, {feeds} feeds",
        failures.len()
    ));
    assert!(
        failures.is_empty(),
        "{} request cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn own_case_reader() {
    let text = b"# comment\n=== a\nset limit_request_line 30\nset header_map refuse\n\
        > POST /x HTTP/1.0\\r\\n\n>  Z: \\x41\\r\\n\nserve POST /x HTTP/1.0\n  header Z:  A \n\
        \x20 body a\\r\\nb\nclose\n=== b\n> x\nrefuse 400\n";
    let cases = read_own_cases(text, "t").expect("readable");
    assert_eq!(cases.len(), 2);
    let a = &cases[0];
    assert_eq!(a.data, b"POST /x HTTP/1.0\r\n Z: A\r\n");
    assert_eq!(
        a.settings,
        vec![
            ("limit_request_line".to_owned(), PyVal::Int(30)),
            ("header_map".to_owned(), PyVal::Str(b"refuse".to_vec())),
        ]
    );
    assert_eq!(a.end, OwnEnd::Close);
    let mut served = a.served[0].clone();
    assert_eq!(
        dict_entry(&mut served, b"headers").cloned(),
        Some(PyVal::Seq(vec![PyVal::Seq(vec![
            PyVal::Str(b"Z".to_vec()),
            PyVal::Str(b"A".to_vec())
        ])]))
    );
    assert_eq!(
        dict_entry(&mut served, b"body").cloned(),
        Some(PyVal::Str(b"a\r\nb".to_vec()))
    );
    assert_eq!(cases[1].end, OwnEnd::Refuse(400));
    assert!(read_own_cases(b"> x\n", "t").is_err());
    assert!(read_own_cases(b"=== a\n> x\nclose\n> y\n", "t").is_err());
}
