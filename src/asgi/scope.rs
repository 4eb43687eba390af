//! The HTTP connection scope of ASGI 3 (spec version 2.4): one new dict per request, with the
//! same forwarded-header and PROXY protocol rules as the WSGI environ.

use std::net::IpAddr;
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::driver::{BuildError as Fill, ConnInfo};
use crate::http::forwarded::ForwardedPolicy;
use crate::http::{HttpError, RequestHead};
use crate::net::Peer;

/// What `server` says for each listener: its address, or its path for a unix socket.
#[derive(Clone, Debug)]
pub struct ServerAddr {
    pub host: String,
    /// `None` for a unix socket.
    pub port: Option<u16>,
}

struct Keys {
    kind: Py<PyString>,
    asgi: Py<PyString>,
    http_version: Py<PyString>,
    method: Py<PyString>,
    scheme: Py<PyString>,
    path: Py<PyString>,
    raw_path: Py<PyString>,
    query_string: Py<PyString>,
    root_path: Py<PyString>,
    headers: Py<PyString>,
    server: Py<PyString>,
    client: Py<PyString>,
    state: Py<PyString>,
    extensions: Py<PyString>,
}

pub struct ScopeBuilder {
    keys: Keys,
    https: Py<PyString>,
    version_1_0: Py<PyString>,
    version_2: Py<PyString>,
    /// Name of the trailers extension, offered on HTTP/2.
    trailers: Py<PyString>,
    /// Every key of a scope in its order, with the values all requests share: a copy of it
    /// takes over its hash table whole, where inserting the keys one by one into a new dict
    /// would grow it twice.
    template: Py<PyDict>,
    /// `server` of each listener, made once.
    servers: Vec<Py<PyAny>>,
    pub forwarded: ForwardedPolicy,
    /// The lifespan state, copied (shallow) into every request's scope.
    state: Option<Py<PyDict>>,
    /// The last client address as text: most requests come from the one before's address.
    last_client: Mutex<Option<(IpAddr, Py<PyString>)>>,
}

fn intern(py: Python<'_>, s: &str) -> Py<PyString> {
    PyString::intern(py, s).unbind()
}

impl ScopeBuilder {
    pub fn new(
        py: Python<'_>,
        forwarded: ForwardedPolicy,
        servers: &[ServerAddr],
        root_path: &str,
        state: Option<Py<PyDict>>,
    ) -> PyResult<ScopeBuilder> {
        let asgi_version = PyDict::new(py);
        asgi_version.set_item("version", "3.0")?;
        asgi_version.set_item("spec_version", "2.4")?;
        let servers = servers
            .iter()
            .map(|s| {
                let server = match s.port {
                    Some(port) => (s.host.as_str(), port).into_pyobject(py)?,
                    None => (s.host.as_str(), py.None()).into_pyobject(py)?,
                };
                Ok(server.into_any().unbind())
            })
            .collect::<PyResult<Vec<_>>>()?;
        let keys = Keys {
            kind: intern(py, "type"),
            asgi: intern(py, "asgi"),
            http_version: intern(py, "http_version"),
            method: intern(py, "method"),
            scheme: intern(py, "scheme"),
            path: intern(py, "path"),
            raw_path: intern(py, "raw_path"),
            query_string: intern(py, "query_string"),
            root_path: intern(py, "root_path"),
            headers: intern(py, "headers"),
            server: intern(py, "server"),
            client: intern(py, "client"),
            state: intern(py, "state"),
            extensions: intern(py, "extensions"),
        };
        let http = intern(py, "http");
        let version_1_1 = intern(py, "1.1");
        let template = PyDict::new(py);
        let none = py.None();
        for (key, value) in [
            (&keys.kind, http.bind(py).as_any()),
            (&keys.asgi, asgi_version.as_any()),
            (&keys.http_version, version_1_1.bind(py).as_any()),
            (&keys.method, none.bind(py)),
            (&keys.scheme, http.bind(py).as_any()),
            (&keys.path, none.bind(py)),
            (&keys.raw_path, none.bind(py)),
            (&keys.query_string, none.bind(py)),
            (&keys.root_path, PyString::new(py, root_path).as_any()),
            (&keys.headers, none.bind(py)),
            (&keys.server, none.bind(py)),
            (&keys.client, none.bind(py)),
        ] {
            template.set_item(key, value)?;
        }
        if state.is_some() {
            template.set_item(&keys.state, none.bind(py))?;
        }
        Ok(ScopeBuilder {
            keys,
            https: intern(py, "https"),
            version_1_0: intern(py, "1.0"),
            version_2: intern(py, "2"),
            trailers: intern(py, "http.response.trailers"),
            template: template.unbind(),
            servers,
            forwarded,
            state,
            last_client: Mutex::new(None),
        })
    }

    /// The client's address as text, made once for a run of requests from one address.
    fn client_host<'py>(&self, py: Python<'py>, ip: IpAddr) -> Bound<'py, PyString> {
        let mut last = match self.last_client.lock() {
            Ok(last) => last,
            Err(poisoned) => poisoned.into_inner(),
        };
        match &*last {
            Some((known, text)) if *known == ip => text.bind(py).clone(),
            _ => {
                let text = PyString::new(py, &ip.to_string());
                *last = Some((ip, text.clone().unbind()));
                text
            }
        }
    }

    /// The scope of one request; an error answers the request instead.
    pub fn build<'py>(
        &self,
        py: Python<'py>,
        head: &RequestHead,
        conn: &ConnInfo,
    ) -> Result<Bound<'py, PyDict>, HttpError> {
        self.fill(py, head, conn).map_err(|e| e.into_http("scope"))
    }

    fn fill<'py>(
        &self,
        py: Python<'py>,
        head: &RequestHead,
        conn: &ConnInfo,
    ) -> Result<Bound<'py, PyDict>, Fill> {
        let k = &self.keys;
        let scope = self.template.bind(py).copy()?;
        match (head.version.major, head.version.minor) {
            (1, 0) => scope.set_item(&k.http_version, &self.version_1_0)?,
            (1, 1) => {}
            // The ASGI spec's name for HTTP/2; only HTTP/2 offers trailers.
            (2, _) => {
                scope.set_item(&k.http_version, &self.version_2)?;
                let extensions = PyDict::new(py);
                extensions.set_item(&self.trailers, PyDict::new(py))?;
                scope.set_item(&k.extensions, extensions)?;
            }
            (major, minor) => scope.set_item(&k.http_version, format!("{major}.{minor}"))?,
        }
        scope.set_item(&k.method, method(py, &head.method))?;

        let trusted = self.forwarded.trusts(conn.peer.ip());
        let headers = PyList::empty(py);
        let mut lower = Vec::with_capacity(32);
        for (name, value) in head.headers().iter() {
            let name: &str = name;
            if !self.forwarded.admits(name, trusted).map_err(Fill::Http)? {
                continue;
            }
            lower.clear();
            lower.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
            let pair = PyTuple::new(py, [PyBytes::new(py, &lower), PyBytes::new(py, value)])?;
            headers.append(pair)?;
        }
        let https = self
            .forwarded
            .is_https(trusted, conn.tls.is_some(), head.headers().iter())
            .map_err(Fill::Http)?;
        if https {
            scope.set_item(&k.scheme, &self.https)?;
        }

        let raw_path = head.path();
        let decoded = crate::http::head::percent_decode(raw_path);
        scope.set_item(&k.path, String::from_utf8_lossy(&decoded))?;
        scope.set_item(&k.raw_path, PyBytes::new(py, raw_path))?;
        scope.set_item(&k.query_string, PyBytes::new(py, head.query()))?;
        scope.set_item(&k.headers, headers)?;
        if let Some(server) = self.servers.get(conn.listener) {
            scope.set_item(&k.server, server)?;
        }
        let client: Option<(IpAddr, u16)> = match (&conn.proxy, conn.peer) {
            (Some(proxy), _) if proxy.client.is_some() => proxy.client,
            (_, Peer::Tcp(addr)) => Some((addr.ip(), addr.port())),
            (_, Peer::Unix) => None,
        };
        if let Some((ip, port)) = client {
            scope.set_item(&k.client, (self.client_host(py, ip), port))?;
        }
        if let Some(state) = &self.state {
            scope.set_item(&k.state, state.bind(py).copy()?)?;
        }
        Ok(scope)
    }
}

/// The method as a string; the common ones interned, made once.
fn method<'py>(py: Python<'py>, method: &str) -> Bound<'py, PyString> {
    match method {
        "GET" => pyo3::intern!(py, "GET").clone(),
        "POST" => pyo3::intern!(py, "POST").clone(),
        "HEAD" => pyo3::intern!(py, "HEAD").clone(),
        other => PyString::new(py, other),
    }
}
