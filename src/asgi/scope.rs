//! The HTTP connection scope of ASGI 3 (spec version 2.4): one new dict per request, with the
//! same forwarded-header and PROXY protocol rules as the WSGI environ.

use std::net::IpAddr;

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
    http: Py<PyString>,
    https: Py<PyString>,
    version_1_0: Py<PyString>,
    version_1_1: Py<PyString>,
    version_2: Py<PyString>,
    /// Name of the trailers extension, offered on HTTP/2.
    trailers: Py<PyString>,
    asgi_version: Py<PyDict>,
    root_path: Py<PyString>,
    /// `server` of each listener, made once.
    servers: Vec<Py<PyAny>>,
    pub forwarded: ForwardedPolicy,
    /// The lifespan state, copied (shallow) into every request's scope.
    pub state: Option<Py<PyDict>>,
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
        Ok(ScopeBuilder {
            keys: Keys {
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
            },
            http: intern(py, "http"),
            https: intern(py, "https"),
            version_1_0: intern(py, "1.0"),
            version_1_1: intern(py, "1.1"),
            version_2: intern(py, "2"),
            trailers: intern(py, "http.response.trailers"),
            asgi_version: asgi_version.unbind(),
            root_path: PyString::new(py, root_path).unbind(),
            servers,
            forwarded,
            state: None,
        })
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
        let scope = PyDict::new(py);
        scope.set_item(&k.kind, &self.http)?;
        scope.set_item(&k.asgi, &self.asgi_version)?;
        match (head.version.major, head.version.minor) {
            (1, 0) => scope.set_item(&k.http_version, &self.version_1_0)?,
            (1, 1) => scope.set_item(&k.http_version, &self.version_1_1)?,
            // The ASGI spec's name for HTTP/2; only HTTP/2 offers trailers.
            (2, _) => {
                scope.set_item(&k.http_version, &self.version_2)?;
                let extensions = PyDict::new(py);
                extensions.set_item(&self.trailers, PyDict::new(py))?;
                scope.set_item(&k.extensions, extensions)?;
            }
            (major, minor) => scope.set_item(&k.http_version, format!("{major}.{minor}"))?,
        }
        scope.set_item(&k.method, &*head.method)?;

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
        scope.set_item(&k.scheme, if https { &self.https } else { &self.http })?;

        let raw_path = head.path();
        let decoded = crate::http::head::percent_decode(raw_path);
        scope.set_item(&k.path, String::from_utf8_lossy(&decoded))?;
        scope.set_item(&k.raw_path, PyBytes::new(py, raw_path))?;
        scope.set_item(&k.query_string, PyBytes::new(py, head.query()))?;
        scope.set_item(&k.root_path, &self.root_path)?;
        scope.set_item(&k.headers, headers)?;
        match self.servers.get(conn.listener) {
            Some(server) => scope.set_item(&k.server, server)?,
            None => scope.set_item(&k.server, py.None())?,
        }
        let client: Option<(IpAddr, u16)> = match (&conn.proxy, conn.peer) {
            (Some(proxy), _) if proxy.client.is_some() => proxy.client,
            (_, Peer::Tcp(addr)) => Some((addr.ip(), addr.port())),
            (_, Peer::Unix) => None,
        };
        match client {
            Some((ip, port)) => scope.set_item(&k.client, (ip.to_string(), port))?,
            None => scope.set_item(&k.client, py.None())?,
        }
        if let Some(state) = &self.state {
            scope.set_item(&k.state, state.bind(py).copy()?)?;
        }
        Ok(scope)
    }
}
