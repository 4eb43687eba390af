//! The environ: one new dict per request, copied from a template holding the keys that never
//! change, then filled with the request's own keys. Key strings are interned once per worker.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use super::errors::ErrorStream;
use super::file_wrapper::FileWrapper;
use super::response::{EarlyHints, SendTrailers};
use crate::driver::{BuildError as Fill, ConnInfo};
use crate::http::forwarded::ForwardedPolicy;
use crate::http::{HttpError, RequestHead};
use crate::net::tls::TlsInfo;
use crate::net::Peer;

/// Header-name keys cached per worker (`HTTP_USER_AGENT`, ...), bounded so a client sending
/// random names cannot grow it.
const HEADER_KEY_CACHE: usize = 512;
/// Entries the environ template's table is sized for (see [`EnvironBuilder::new`]).
const TEMPLATE_ROOM: pyo3::ffi::Py_ssize_t = 32;

/// Static facts about one listener, for SERVER_NAME / SERVER_PORT.
#[derive(Clone, Debug)]
pub struct ListenerInfo {
    pub server_name: String,
    /// Empty for unix sockets: the Host header decides then, as in Gunicorn.
    pub server_port: String,
    pub is_unix: bool,
}

struct Keys {
    request_method: Py<PyString>,
    script_name: Py<PyString>,
    path_info: Py<PyString>,
    query_string: Py<PyString>,
    raw_uri: Py<PyString>,
    server_protocol: Py<PyString>,
    content_type: Py<PyString>,
    content_length: Py<PyString>,
    remote_addr: Py<PyString>,
    remote_port: Py<PyString>,
    server_name: Py<PyString>,
    server_port: Py<PyString>,
    wsgi_input: Py<PyString>,
    url_scheme: Py<PyString>,
    http_1_0: Py<PyString>,
    http_1_1: Py<PyString>,
    https: Py<PyString>,
    http: Py<PyString>,
    empty: Py<PyString>,
    get: Py<PyString>,
}

pub struct EnvironBuilder {
    template: Py<PyDict>,
    keys: Keys,
    header_keys: Mutex<HashMap<Box<[u8]>, Py<PyString>>>,
    /// The last client address seen: a worker mostly hears from the same few peers, and
    /// every request of a kept-alive connection comes from one.
    last_peer: Mutex<Option<(IpAddr, Py<PyString>)>>,
    /// SCRIPT_NAME from the server's environment.
    script_name: String,
    pub forwarded: ForwardedPolicy,
    /// SERVER_NAME and SERVER_PORT of each listener, as Python strings made once.
    listeners: Vec<ListenerStrings>,
}

struct ListenerStrings {
    server_name: Py<PyString>,
    server_port: Py<PyString>,
    is_unix: bool,
}

fn intern(py: Python<'_>, s: &str) -> Py<PyString> {
    PyString::intern(py, s).unbind()
}

/// Python `str` from bytes, one code point per byte (PEP 3333's latin-1 rule).
fn py_latin1<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    // Latin-1 decoding is a plain widening; for ASCII, a copy (no UTF-8 validation pass).
    // SAFETY: the pointer and length describe a live slice; the result is a new reference
    // to a `str`, or NULL with the error set.
    unsafe {
        let ptr = pyo3::ffi::PyUnicode_DecodeLatin1(
            bytes.as_ptr().cast(),
            bytes.len() as pyo3::ffi::Py_ssize_t,
            std::ptr::null(),
        );
        Ok(Bound::from_owned_ptr_or_err(py, ptr)?.cast_into_unchecked())
    }
}

impl EnvironBuilder {
    pub fn new(
        py: Python<'_>,
        multithread: bool,
        multiprocess: bool,
        forwarded: ForwardedPolicy,
        listeners: Vec<ListenerInfo>,
    ) -> PyResult<EnvironBuilder> {
        // Room for the keys every request adds (REMOTE_PORT, the headers) without growing the
        // copies: a copy keeps its template's table size, and a table grown by a request costs
        // more than a larger one copied.
        // SAFETY: `_PyDict_NewPresized` returns a new reference to an empty dict, or NULL with
        // an error set.
        let template = unsafe {
            Bound::from_owned_ptr_or_err(py, pyo3::ffi::_PyDict_NewPresized(TEMPLATE_ROOM))?
                .cast_into_unchecked::<PyDict>()
        };
        template.set_item("wsgi.version", PyTuple::new(py, [1, 0])?)?;
        template.set_item("wsgi.multithread", multithread)?;
        template.set_item("wsgi.multiprocess", multiprocess)?;
        template.set_item("wsgi.run_once", false)?;
        template.set_item("wsgi.input_terminated", true)?;
        template.set_item("wsgi.errors", Py::new(py, ErrorStream)?)?;
        template.set_item("wsgi.file_wrapper", py.get_type::<FileWrapper>())?;
        template.set_item("wsgi.early_hints", Py::new(py, EarlyHints)?)?;
        template.set_item("SERVER_SOFTWARE", format!("ferrocorn/{}", crate::VERSION))?;
        let keys = Keys {
            request_method: intern(py, "REQUEST_METHOD"),
            script_name: intern(py, "SCRIPT_NAME"),
            path_info: intern(py, "PATH_INFO"),
            query_string: intern(py, "QUERY_STRING"),
            raw_uri: intern(py, "RAW_URI"),
            server_protocol: intern(py, "SERVER_PROTOCOL"),
            content_type: intern(py, "CONTENT_TYPE"),
            content_length: intern(py, "CONTENT_LENGTH"),
            remote_addr: intern(py, "REMOTE_ADDR"),
            remote_port: intern(py, "REMOTE_PORT"),
            server_name: intern(py, "SERVER_NAME"),
            server_port: intern(py, "SERVER_PORT"),
            wsgi_input: intern(py, "wsgi.input"),
            url_scheme: intern(py, "wsgi.url_scheme"),
            http_1_0: intern(py, "HTTP/1.0"),
            http_1_1: intern(py, "HTTP/1.1"),
            https: intern(py, "https"),
            http: intern(py, "http"),
            empty: intern(py, ""),
            get: intern(py, "GET"),
        };
        // Every request sets these: holding them in the template (values replaced per request)
        // sizes the copied dict once, so filling it never grows it.
        for key in [
            &keys.request_method,
            &keys.query_string,
            &keys.raw_uri,
            &keys.server_protocol,
            &keys.wsgi_input,
            &keys.url_scheme,
            &keys.remote_addr,
            &keys.server_name,
            &keys.server_port,
            &keys.path_info,
            &keys.script_name,
        ] {
            template.set_item(key, &keys.empty)?;
        }
        let script_name = std::env::var("SCRIPT_NAME").unwrap_or_default();
        let listeners = listeners
            .iter()
            .map(|l| ListenerStrings {
                server_name: intern(py, &l.server_name),
                server_port: intern(py, &l.server_port),
                is_unix: l.is_unix,
            })
            .collect();
        Ok(EnvironBuilder {
            template: template.unbind(),
            keys,
            header_keys: Mutex::new(HashMap::new()),
            last_peer: Mutex::new(None),
            script_name,
            forwarded,
            listeners,
        })
    }

    /// `HTTP_` + the name upper-cased with `-` as `_`, interned while the cache has room.
    fn header_key<'py>(&self, py: Python<'py>, name: &str) -> Bound<'py, PyString> {
        let mut cache = self.header_keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(key) = cache.get(name.as_bytes()) {
            return key.bind(py).clone();
        }
        let mut key = String::with_capacity(5 + name.len());
        key.push_str("HTTP_");
        key.extend(name.chars().map(|c| {
            if c == '-' {
                '_'
            } else {
                c.to_ascii_uppercase()
            }
        }));
        let key = PyString::intern(py, &key);
        if cache.len() < HEADER_KEY_CACHE {
            cache.insert(name.as_bytes().into(), key.clone().unbind());
        }
        key
    }

    /// REMOTE_ADDR for `ip`, reusing the string of the previous request's peer.
    fn peer_string<'py>(&self, py: Python<'py>, ip: IpAddr) -> Bound<'py, PyString> {
        let mut last = self.last_peer.lock().unwrap_or_else(|e| e.into_inner());
        match &*last {
            Some((seen, text)) if *seen == ip => text.bind(py).clone(),
            _ => {
                let text = PyString::new(py, &ip.to_string());
                *last = Some((ip, text.clone().unbind()));
                text
            }
        }
    }

    /// Builds the environ of one request. `input` is the `wsgi.input` object.
    pub fn build<'py>(
        &self,
        py: Python<'py>,
        head: &RequestHead,
        conn: &ConnInfo,
        input: Bound<'py, PyAny>,
    ) -> Result<Bound<'py, PyDict>, HttpError> {
        self.fill(py, head, conn, input)
            .map_err(|e| e.into_http("environ"))
    }

    fn fill<'py>(
        &self,
        py: Python<'py>,
        head: &RequestHead,
        conn: &ConnInfo,
        input: Bound<'py, PyAny>,
    ) -> Result<Bound<'py, PyDict>, Fill> {
        let (peer, listener) = (conn.peer, conn.listener);
        let k = &self.keys;
        let env = self.template.bind(py).copy()?;
        let method = if &*head.method == "GET" {
            k.get.bind(py).clone()
        } else {
            PyString::new(py, &head.method)
        };
        env.set_item(&k.request_method, method)?;
        if head.query().is_empty() {
            env.set_item(&k.query_string, &k.empty)?;
        } else {
            env.set_item(&k.query_string, py_latin1(py, head.query())?)?;
        }
        let raw_uri = py_latin1(py, head.target())?;
        env.set_item(&k.raw_uri, &raw_uri)?;
        match (head.version.major, head.version.minor) {
            (1, 0) => env.set_item(&k.server_protocol, &k.http_1_0)?,
            (1, 1) => env.set_item(&k.server_protocol, &k.http_1_1)?,
            (2, _) => {
                env.set_item(&k.server_protocol, head.version.to_string())?;
                // Gunicorn's way for a WSGI application to send trailers, on HTTP/2 only.
                env.set_item("gunicorn.http2.send_trailers", Py::new(py, SendTrailers)?)?;
            }
            _ => env.set_item(&k.server_protocol, head.version.to_string())?,
        }
        env.set_item(&k.wsgi_input, input)?;

        let trusted = self.forwarded.trusts(peer.ip());
        let mut host: Option<&[u8]> = None;
        let mut script_name: Option<&[u8]> = None;
        let mut repeated: Vec<(Bound<'py, PyString>, Vec<&[u8]>)> = Vec::new();
        for (name, mut value) in head.headers().iter() {
            let name: &str = name;
            if !self.forwarded.admits(name, trusted).map_err(Fill::Http)? {
                continue;
            }
            if name.eq_ignore_ascii_case("host") {
                // RFC 9112 section 3.2.2: an absolute-form target's host replaces Host's.
                value = head.target_host().unwrap_or(value);
                host = Some(value);
            } else if name.eq_ignore_ascii_case("script_name") {
                script_name = Some(value);
            } else if name.eq_ignore_ascii_case("content-type") {
                env.set_item(&k.content_type, py_latin1(py, value)?)?;
                continue;
            } else if name.eq_ignore_ascii_case("content-length") {
                env.set_item(&k.content_length, py_latin1(py, value)?)?;
                continue;
            }
            let key = self.header_key(py, name);
            if env.contains(&key)? {
                match repeated
                    .iter_mut()
                    .find(|(k, _)| k.as_any().eq(&key).unwrap_or(false))
                {
                    Some((_, values)) => values.push(value),
                    None => repeated.push((key, vec![value])),
                }
            } else {
                env.set_item(key, py_latin1(py, value)?)?;
            }
        }
        for (key, values) in repeated {
            let first: String = env
                .get_item(&key)?
                .map(|v| v.extract::<String>())
                .transpose()?
                .unwrap_or_default();
            let mut joined: Vec<u8> = first.chars().map(|c| c as u32 as u8).collect();
            for v in values {
                joined.push(b',');
                joined.extend_from_slice(v);
            }
            env.set_item(key, py_latin1(py, &joined)?)?;
        }

        let https = self
            .forwarded
            .is_https(trusted, conn.tls.is_some(), head.headers().iter())
            .map_err(Fill::Http)?;
        env.set_item(&k.url_scheme, if https { &k.https } else { &k.http })?;

        match peer {
            Peer::Tcp(addr) => {
                env.set_item(&k.remote_addr, self.peer_string(py, addr.ip()))?;
                let mut port = itoa::Buffer::new();
                env.set_item(&k.remote_port, port.format(addr.port()))?;
            }
            Peer::Unix => {
                env.set_item(&k.remote_addr, &k.empty)?;
            }
        }

        let info = self.listeners.get(listener);
        // An absolute-form target names the host even without a Host field (HTTP/1.0).
        let host = host.or_else(|| head.target_host());
        match (info, host) {
            (Some(info), _) if !info.is_unix => {
                env.set_item(&k.server_name, &info.server_name)?;
                env.set_item(&k.server_port, &info.server_port)?;
            }
            (_, Some(host)) => {
                let host = String::from_utf8_lossy(host);
                match host
                    .rsplit_once(':')
                    .filter(|(h, _)| !h.ends_with(']') || h.starts_with('['))
                {
                    Some((name, port)) if !name.is_empty() => {
                        env.set_item(&k.server_name, name)?;
                        env.set_item(&k.server_port, port)?;
                    }
                    _ => {
                        env.set_item(&k.server_name, &*host)?;
                        env.set_item(&k.server_port, if https { "443" } else { "80" })?;
                    }
                }
            }
            (info, None) => {
                match info {
                    Some(info) => env.set_item(&k.server_name, &info.server_name)?,
                    None => env.set_item(&k.server_name, &k.empty)?,
                }
                env.set_item(&k.server_port, &k.empty)?;
            }
        }

        let script = match script_name {
            Some(v) => String::from_utf8_lossy(v).into_owned(),
            None => self.script_name.clone(),
        };
        let path = head.path();
        let path = if script.is_empty() {
            path
        } else if path.starts_with(script.as_bytes()) {
            &path[script.len()..]
        } else {
            return Err(Fill::Http(HttpError::internal(format!(
                "Request path {:?} does not start with SCRIPT_NAME {:?}",
                String::from_utf8_lossy(path),
                script
            ))));
        };
        let decoded = crate::http::head::percent_decode(path);
        if *decoded == *head.target() {
            // The usual `GET /path`: PATH_INFO is RAW_URI's string.
            env.set_item(&k.path_info, &raw_uri)?;
        } else {
            env.set_item(&k.path_info, py_latin1(py, &decoded)?)?;
        }
        if script.is_empty() {
            env.set_item(&k.script_name, &k.empty)?;
        } else {
            env.set_item(&k.script_name, script)?;
        }
        if let Some(proxy) = &conn.proxy {
            env.set_item("PROXY_PROTOCOL", proxy.protocol)?;
            if let Some((ip, port)) = proxy.client {
                env.set_item(&k.remote_addr, ip.to_string())?;
                env.set_item(&k.remote_port, port.to_string())?;
            }
            if let Some((ip, port)) = proxy.proxy {
                env.set_item("PROXY_ADDR", ip.to_string())?;
                env.set_item("PROXY_PORT", port.to_string())?;
            }
        }
        if let Some(tls) = &conn.tls {
            set_tls_keys(&env, tls)?;
        }
        Ok(env)
    }
}

/// What a TLS connection tells the application, under the names nginx's and Apache's
/// `SSL_*` variables have (docs/tls.md).
fn set_tls_keys(env: &Bound<'_, PyDict>, tls: &TlsInfo) -> PyResult<()> {
    env.set_item("SSL_PROTOCOL", tls.protocol)?;
    env.set_item("SSL_CIPHER", tls.cipher)?;
    if let Some(name) = &tls.server_name {
        env.set_item("SSL_TLS_SNI", name)?;
    }
    match &tls.client {
        Some(cert) => {
            // Only a certificate that passed verification gets this far.
            env.set_item("SSL_CLIENT_VERIFY", "SUCCESS")?;
            env.set_item("SSL_CLIENT_CERT", &cert.pem)?;
            env.set_item("SSL_CLIENT_S_DN", &cert.subject)?;
            env.set_item("SSL_CLIENT_I_DN", &cert.issuer)?;
        }
        None => env.set_item("SSL_CLIENT_VERIFY", "NONE")?,
    }
    Ok(())
}
