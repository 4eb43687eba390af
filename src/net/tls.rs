//! The transport of a TLS connection: a [`Socket`] with a rustls server session on top.
//!
//! The settings (`certfile`, `keyfile`, `ca_certs`, `cert_reqs`, `ciphers`) become one frozen
//! [`TlsAcceptor`] in the master, at start and on each HUP; forked workers inherit it, so a
//! certificate is parsed once per reload, never per connection. The handshake runs on the
//! worker's event loop before the HTTP/1 driver sees the connection; after it, reads decrypt
//! into the caller's buffers and writes encrypt, under a lock held only for the operation
//! (application threads read bodies and write responses through the same session).
//!
//! Writes keep one rule that the plain socket gets for free: a write reports bytes as written
//! only once their records have left for the kernel. Plaintext the session took but could not
//! yet send is "owed": the call says no room, and the caller's next write of the same bytes
//! sends the rest of their records first and then reports them. Otherwise the end of a
//! response could sit in the session while the driver waits for the next request.

use std::io::{self, IoSlice, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection, SupportedCipherSuite};

use super::socket::Socket;
use super::transport::{Interest, Io, ReadCount, Transport, SPILL_CHUNK};
use crate::config::table::py_repr_str;
use crate::config::Settings;

/// Plaintext encrypted per write call at most; also what a file read takes per call.
const WRITE_CHUNK: usize = 64 * 1024;
/// Bytes read per receive during the handshake.
const HANDSHAKE_READ: usize = 16 * 1024;

/// The protocols offered through ALPN, most preferred first. The one place the list is made:
/// a protocol driver added beside HTTP/1 extends it here.
pub fn alpn_protocols(settings: &Settings) -> Vec<Vec<u8>> {
    settings
        .list("http_protocols")
        .iter()
        .filter_map(|name| match name.as_str() {
            "h1" => Some(b"http/1.1".to_vec()),
            "h2" => Some(b"h2".to_vec()),
            _ => None,
        })
        .collect()
}

/// A frozen TLS server configuration, shared by every connection of a worker.
#[derive(Clone)]
pub struct TlsAcceptor {
    config: Arc<ServerConfig>,
    /// A peer closing without close_notify ends the stream quietly (else it is an error).
    suppress_ragged_eofs: bool,
}

/// Why a connection did not become a TLS session.
pub enum Refused {
    /// The client spoke plain HTTP: answer it in plain text, then close.
    PlainHttp(Socket),
    /// The client went away, or the handshake failed (the reason, for the debug log).
    Failed(String),
}

impl TlsAcceptor {
    /// The acceptor the settings ask for; `None` when neither `certfile` nor `keyfile` is set.
    /// An error names the setting, its value and the reason.
    pub fn from_settings(settings: &Settings) -> Result<Option<TlsAcceptor>, String> {
        let certfile = settings.str("certfile");
        let keyfile = settings.str("keyfile");
        if certfile.is_none() && keyfile.is_none() {
            return Ok(None);
        }
        let Some(certfile) = certfile else {
            return Err(format!(
                "keyfile = {}: certfile is not set; TLS needs the certificate too",
                py_repr_str(keyfile.unwrap_or_default())
            ));
        };
        let chain = read_certs("certfile", certfile)?;
        // The key may sit in the certificate file, as Gunicorn allows.
        let (key_setting, key_path) = match keyfile {
            Some(path) => ("keyfile", path),
            None => ("certfile", certfile),
        };
        let key = read_key(key_setting, key_path)?;
        // *ring* rather than aws-lc-rs: aws-lc-rs makes handshakes cheaper but keep-alive
        // requests dearer, and its C library adds a long build. rustls deprecates *ring*
        // only for its lack of post-quantum key exchange.
        #[allow(deprecated)]
        let mut provider = rustls::crypto::ring::default_provider();
        prefer_sha256_tls13(&mut provider.cipher_suites);
        if let Some(spec) = settings.str("ciphers") {
            provider.cipher_suites =
                select_suites(&provider.cipher_suites, spec).ok_or_else(|| {
                    format!(
                        "ciphers = {}: names no cipher suite that can be offered (TLS 1.2: {})",
                        py_repr_str(spec),
                        tls12_names(&provider.cipher_suites).join(":")
                    )
                })?;
        }
        let provider = Arc::new(provider);
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("cannot set up TLS: {e}"))?;
        let builder = match client_verifier(settings, &provider)? {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "{key_setting} = {}: the key does not match the certificate in {}",
                py_repr_str(key_path),
                py_repr_str(certfile)
            ),
            other => format!("{key_setting} = {}: {other}", py_repr_str(key_path)),
        })?;
        config.alpn_protocols = alpn_protocols(settings);
        // Our order decides, as with Gunicorn (Python's `ssl` asks OpenSSL for the server's
        // preference): it puts the cheaper TLS 1.3 suite first, and the `ciphers` order counts.
        config.ignore_client_order = true;
        Ok(Some(TlsAcceptor {
            config: Arc::new(config),
            suppress_ragged_eofs: settings.bool("suppress_ragged_eofs"),
        }))
    }

    /// Runs the handshake on `sock`. The caller bounds it in time.
    pub async fn handshake(&self, sock: Socket) -> Result<TlsStream, Refused> {
        let mut conn = ServerConnection::new(Arc::clone(&self.config))
            .map_err(|e| Refused::Failed(e.to_string()))?;
        let mut buf: Vec<u8> = Vec::with_capacity(HANDSHAKE_READ);
        let mut first = true;
        loop {
            // A TLS 1.3 session has only its tickets left to send once the handshake is done:
            // they leave with the first response, in the same send.
            if !conn.is_handshaking()
                && conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3)
            {
                break;
            }
            while conn.wants_write() {
                let sent = sock
                    .when_writable(|s| would_block(conn.write_tls(&mut Raw(s))))
                    .await;
                sent.map_err(|e| Refused::Failed(e.to_string()))?;
            }
            if !conn.is_handshaking() {
                break;
            }
            buf.clear();
            let read = sock
                .read(&mut buf.spare_capacity_mut()[..HANDSHAKE_READ], None)
                .await
                .map_err(|e| Refused::Failed(e.to_string()))?;
            if read.total == 0 {
                return Err(Refused::Failed("closed during the handshake".into()));
            }
            // SAFETY: the read initialised `read.first` bytes at the start of the spare
            // capacity.
            unsafe { buf.set_len(read.first) };
            if first && looks_like_http(&buf) {
                return Err(Refused::PlainHttp(sock));
            }
            first = false;
            let mut rest = &buf[..];
            while !rest.is_empty() {
                conn.read_tls(&mut rest)
                    .map_err(|e| Refused::Failed(e.to_string()))?;
                if let Err(e) = conn.process_new_packets() {
                    // The alert tells the client why; best effort, the connection ends.
                    let _ = conn.write_tls(&mut Raw(&sock));
                    return Err(Refused::Failed(e.to_string()));
                }
            }
        }
        let info = Arc::new(TlsInfo::of(&conn));
        Ok(TlsStream {
            sock,
            session: Mutex::new(Session {
                conn,
                owed: 0,
                eof: false,
            }),
            suppress_ragged_eofs: self.suppress_ragged_eofs,
            info,
        })
    }
}

/// Moves TLS 1.3's AES-128-GCM-SHA256 ahead of AES-256-GCM-SHA384. A TLS 1.3 handshake is
/// mostly HMACs over its hash (the key schedule, the binder, the tickets), and SHA-256 runs
/// several times faster than SHA-384 where the CPU has SHA extensions.
fn prefer_sha256_tls13(suites: &mut [SupportedCipherSuite]) {
    if let Some(i) = suites
        .iter()
        .position(|s| s.suite() == rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
    {
        suites[..=i].rotate_right(1);
    }
}

/// A TLS record starts with its content type (22 for a handshake); an HTTP request with a
/// method's letters.
fn looks_like_http(bytes: &[u8]) -> bool {
    bytes.first().is_some_and(|b| b.is_ascii_uppercase())
}

fn read_file(setting: &str, path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path)
        .map_err(|e| format!("{setting} = {}: cannot read it: {e}", py_repr_str(path)))
}

fn read_certs(setting: &str, path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_file(setting, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{setting} = {}: {e}", py_repr_str(path)))?;
    if certs.is_empty() {
        return Err(format!(
            "{setting} = {}: no PEM certificate in it",
            py_repr_str(path)
        ));
    }
    Ok(certs)
}

fn read_key(setting: &str, path: &str) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_file(setting, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!(
                "{setting} = {}: no PEM private key in it",
                py_repr_str(path)
            )
        }
        other => format!("{setting} = {}: {other}", py_repr_str(path)),
    })
}

/// The client certificate check `cert_reqs` asks for, against the CAs of `ca_certs`.
fn client_verifier(
    settings: &Settings,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>, String> {
    let reqs = settings.uint("cert_reqs");
    let ca_certs = settings.str("ca_certs");
    let roots = match ca_certs {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs("ca_certs", path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("ca_certs = {}: {e}", py_repr_str(path)))?;
            }
            Some(Arc::new(roots))
        }
        None => None,
    };
    let builder = match (reqs, roots) {
        (0, _) => return Ok(None),
        (1 | 2, None) => {
            return Err(format!(
                "cert_reqs = {reqs}: client certificates are checked against ca_certs, which is \
                 not set"
            ))
        }
        (1 | 2, Some(roots)) => {
            WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(provider))
        }
        _ => {
            return Err(format!(
                "cert_reqs = {reqs}: expected 0 (none), 1 (optional) or 2 (required)"
            ))
        }
    };
    let builder = if reqs == 1 {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    builder.build().map(Some).map_err(|e| {
        format!(
            "ca_certs = {}: {e}",
            py_repr_str(ca_certs.unwrap_or_default())
        )
    })
}

/// OpenSSL's names of a TLS 1.2 suite and the words of a cipher string that select it.
fn openssl_words(suite: &SupportedCipherSuite) -> Option<(&'static str, &'static [&'static str])> {
    use rustls::CipherSuite as C;
    Some(match suite.suite() {
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => (
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            &["aECDSA", "ECDSA", "AES", "AES256", "AESGCM", "SHA384"],
        ),
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => (
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            &["aECDSA", "ECDSA", "AES", "AES128", "AESGCM", "SHA256"],
        ),
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => (
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            &["aECDSA", "ECDSA", "CHACHA20", "SHA256"],
        ),
        C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => (
            "ECDHE-RSA-AES256-GCM-SHA384",
            &["aRSA", "AES", "AES256", "AESGCM", "SHA384"],
        ),
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => (
            "ECDHE-RSA-AES128-GCM-SHA256",
            &["aRSA", "AES", "AES128", "AESGCM", "SHA256"],
        ),
        C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => (
            "ECDHE-RSA-CHACHA20-POLY1305",
            &["aRSA", "CHACHA20", "SHA256"],
        ),
        _ => return None,
    })
}

/// Whether the TLS 1.2 `suite` has every `+`-joined word of `term`.
fn selects(suite: &SupportedCipherSuite, term: &str) -> bool {
    // Words every offered TLS 1.2 suite has: all use ECDHE and an AEAD.
    const COMMON: &[&str] = &[
        "ALL", "DEFAULT", "HIGH", "TLSv1.2", "ECDHE", "EECDH", "kECDHE", "kEECDH", "AEAD",
    ];
    let Some((name, words)) = openssl_words(suite) else {
        return false;
    };
    term.split('+')
        .all(|w| w == name || COMMON.contains(&w) || words.contains(&w))
}

/// The suites an OpenSSL cipher string selects, in its order. As with OpenSSL, the string
/// governs TLS 1.2 only (TLS 1.3's suites are all kept), words it does not know select
/// nothing, `!` removes for good, `-` removes, `+` moves to the end. `None`: no TLS 1.2
/// suite is left.
fn select_suites(all: &[SupportedCipherSuite], spec: &str) -> Option<Vec<SupportedCipherSuite>> {
    let tls12: Vec<SupportedCipherSuite> = all
        .iter()
        .copied()
        .filter(|s| openssl_words(s).is_some())
        .collect();
    let mut chosen: Vec<SupportedCipherSuite> = Vec::new();
    let mut banned: Vec<SupportedCipherSuite> = Vec::new();
    for token in spec.split([':', ',', ' ']).filter(|t| !t.is_empty()) {
        let (op, term) = match token.as_bytes()[0] {
            b'!' | b'-' | b'+' => (token.as_bytes()[0], &token[1..]),
            _ => (0, token),
        };
        if term.starts_with('@') {
            continue; // @STRENGTH, @SECLEVEL=n: orderings and levels rustls decides itself.
        }
        let matching: Vec<SupportedCipherSuite> =
            tls12.iter().copied().filter(|s| selects(s, term)).collect();
        let same = |a: &SupportedCipherSuite, b: &SupportedCipherSuite| a.suite() == b.suite();
        match op {
            b'!' => {
                chosen.retain(|c| !matching.iter().any(|m| same(c, m)));
                banned.extend(matching);
            }
            b'-' => chosen.retain(|c| !matching.iter().any(|m| same(c, m))),
            b'+' => {
                let (moved, kept): (Vec<_>, Vec<_>) = chosen
                    .iter()
                    .copied()
                    .partition(|c| matching.iter().any(|m| same(c, m)));
                chosen = kept;
                chosen.extend(moved);
            }
            _ => {
                for m in matching {
                    if !chosen.iter().chain(&banned).any(|c| same(c, &m)) {
                        chosen.push(m);
                    }
                }
            }
        }
    }
    if chosen.is_empty() {
        return None;
    }
    let mut suites: Vec<SupportedCipherSuite> = all
        .iter()
        .copied()
        .filter(|s| openssl_words(s).is_none())
        .collect();
    suites.extend(chosen);
    Some(suites)
}

fn tls12_names(all: &[SupportedCipherSuite]) -> Vec<&'static str> {
    all.iter()
        .filter_map(|s| openssl_words(s).map(|(name, _)| name))
        .collect()
}

/// What the handshake settled, for the application's environ.
#[derive(Debug, Default)]
pub struct TlsInfo {
    /// `TLSv1.2` or `TLSv1.3`.
    pub protocol: &'static str,
    /// The suite's IANA name.
    pub cipher: &'static str,
    /// The name the client asked for (SNI).
    pub server_name: Option<String>,
    /// The protocol agreed through ALPN.
    pub alpn: Option<Vec<u8>>,
    /// The client's certificate, verified against `ca_certs`.
    pub client: Option<ClientCert>,
}

#[derive(Debug)]
pub struct ClientCert {
    /// The certificate in PEM.
    pub pem: String,
    /// Subject and issuer distinguished names, RFC 4514 style (`CN=..,O=..`).
    pub subject: String,
    pub issuer: String,
}

impl TlsInfo {
    fn of(conn: &ServerConnection) -> TlsInfo {
        let protocol = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "",
        };
        let cipher = conn
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or_default();
        let client = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| ClientCert::of(cert.as_ref()));
        TlsInfo {
            protocol,
            cipher,
            server_name: conn.server_name().map(str::to_owned),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            client,
        }
    }
}

impl ClientCert {
    fn of(der: &[u8]) -> ClientCert {
        let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
        let encoded = data_encoding::BASE64.encode(der);
        for line in encoded.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        // The verifier accepted it, so it parses; an empty name is the fallback all the same.
        let (subject, issuer) = match x509_parser::parse_x509_certificate(der) {
            Ok((_, cert)) => (dn(cert.subject()), dn(cert.issuer())),
            Err(_) => (String::new(), String::new()),
        };
        ClientCert {
            pem,
            subject,
            issuer,
        }
    }
}

/// A distinguished name as RFC 4514 writes it: the last RDN first, `,` between them.
fn dn(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let mut parts: Vec<String> = Vec::new();
    for rdn in name.iter_rdn() {
        let attrs: Vec<String> = rdn
            .iter()
            .map(|attr| {
                let oid = attr.attr_type();
                let key = x509_parser::objects::oid2abbrev(oid, registry)
                    .map(str::to_owned)
                    .unwrap_or_else(|_| oid.to_id_string());
                let value = attr.as_str().map(escape_dn).unwrap_or_default();
                format!("{key}={value}")
            })
            .collect();
        parts.push(attrs.join("+"));
    }
    parts.reverse();
    parts.join(",")
}

fn escape_dn(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let edge = (i == 0 && (c == ' ' || c == '#')) || (i == last && c == ' ');
        if edge || matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// An established TLS connection.
pub struct TlsStream {
    sock: Socket,
    session: Mutex<Session>,
    suppress_ragged_eofs: bool,
    info: Arc<TlsInfo>,
}

struct Session {
    conn: ServerConnection,
    /// Plaintext at the start of the caller's next write that the session has taken (see the
    /// module's notes).
    owed: usize,
    /// The peer's end of the stream has been read.
    eof: bool,
}

/// The socket as rustls reads and writes ciphertext: non-blocking, `WouldBlock` when it waits.
struct Raw<'a>(&'a Socket);

impl Read for Raw<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have the same layout, and the socket only
        // writes initialised bytes into it.
        let target = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
        match self.0.try_read(target, None)? {
            Some(read) => Ok(read.total),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for Raw<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self.0.try_write(bufs, false)? {
            Some(n) => Ok(n),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `WouldBlock` as `None`, for the readiness loops.
fn would_block<T>(result: io::Result<T>) -> io::Result<Option<T>> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

impl TlsStream {
    /// What the handshake settled.
    pub fn info(&self) -> &Arc<TlsInfo> {
        &self.info
    }

    fn lock(&self) -> MutexGuard<'_, Session> {
        // A panic elsewhere cannot leave the session half-updated in a way a later call could
        // trust less than a closed connection; go on with it.
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends what the session holds. False: the socket is full and some is left.
    fn flush(&self, s: &mut Session) -> io::Result<bool> {
        while s.conn.wants_write() {
            match s.conn.write_tls(&mut Raw(&self.sock)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Decrypts what has arrived. Returns the plaintext bytes waiting to be read, and whether
    /// the stream's end has come.
    fn process(&self, s: &mut Session) -> io::Result<(usize, bool)> {
        match s.conn.process_new_packets() {
            Ok(state) => Ok((
                state.plaintext_bytes_to_read(),
                state.peer_has_closed() || s.eof,
            )),
            Err(e) => {
                // Send the alert that says why, then report the failure.
                let _ = self.flush(s);
                Err(io::Error::new(io::ErrorKind::InvalidData, e))
            }
        }
    }

    /// Takes the encrypted form of at most [`WRITE_CHUNK`] bytes from `write`, then sends.
    /// The common part of [`Io::try_write`] and [`Io::try_send_file`].
    fn send_with(
        &self,
        write: impl FnOnce(&mut rustls::Writer<'_>) -> io::Result<usize>,
    ) -> io::Result<Option<usize>> {
        let mut s = self.lock();
        if s.owed > 0 {
            if !self.flush(&mut s)? {
                return Ok(None);
            }
            return Ok(Some(std::mem::take(&mut s.owed)));
        }
        // Records still queued without being owed are small (tickets, alerts, a key update):
        // they go out in the same send as these.
        let taken = write(&mut s.conn.writer())?;
        if self.flush(&mut s)? {
            Ok(Some(taken))
        } else {
            s.owed = taken;
            Ok(None)
        }
    }
}

/// Zeroes the first `n` bytes of `buf` and gives them as a byte slice: rustls decrypts only
/// into initialised memory.
fn init_prefix(buf: &mut [MaybeUninit<u8>], n: usize) -> &mut [u8] {
    let part = &mut buf[..n];
    part.fill(MaybeUninit::new(0));
    // SAFETY: every byte of `part` was just initialised.
    unsafe { &mut *(part as *mut [MaybeUninit<u8>] as *mut [u8]) }
}

impl Io for TlsStream {
    fn try_read(
        &self,
        first: &mut [MaybeUninit<u8>],
        spill: Option<&mut Vec<u8>>,
    ) -> io::Result<Option<ReadCount>> {
        let mut s = self.lock();
        loop {
            let (ready, ended) = self.process(&mut s)?;
            if ready > 0 {
                let n = ready.min(first.len());
                let got = s.conn.reader().read(init_prefix(first, n))?;
                let mut total = got;
                if let Some(extra) = spill.filter(|_| ready > got) {
                    let more = (ready - got).min(SPILL_CHUNK);
                    extra.reserve(more);
                    let len = extra.len();
                    let target = init_prefix(extra.spare_capacity_mut(), more);
                    let added = s.conn.reader().read(target)?;
                    // SAFETY: `init_prefix` initialised `more` >= `added` bytes after `len`.
                    unsafe { extra.set_len(len + added) };
                    total += added;
                }
                return Ok(Some(ReadCount {
                    first: got,
                    total,
                    drained: false,
                }));
            }
            if ended {
                return Ok(Some(ReadCount {
                    first: 0,
                    total: 0,
                    drained: false,
                }));
            }
            match s.conn.read_tls(&mut Raw(&self.sock)) {
                Ok(0) => {
                    s.eof = true;
                    let clean = s
                        .conn
                        .process_new_packets()
                        .is_ok_and(|st| st.peer_has_closed());
                    if !clean && !self.suppress_ragged_eofs {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the peer closed without close_notify",
                        ));
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Whatever the session has to say (a ticket, a key update) goes now.
                    self.flush(&mut s)?;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn try_write(&self, bufs: &[IoSlice<'_>], _more: bool) -> io::Result<Option<usize>> {
        self.send_with(|w| {
            let mut taken = 0;
            for buf in bufs {
                let room = WRITE_CHUNK - taken;
                if room == 0 {
                    break;
                }
                let part = &buf[..buf.len().min(room)];
                let n = w.write(part)?;
                taken += n;
                if n < part.len() {
                    break;
                }
            }
            Ok(taken)
        })
    }

    /// Reads the file here, in Rust, and encrypts it: the kernel cannot encrypt for rustls.
    fn try_send_file(
        &self,
        file: BorrowedFd<'_>,
        offset: &mut u64,
        count: u64,
    ) -> io::Result<Option<usize>> {
        let want = count.min(WRITE_CHUNK as u64) as usize;
        let sent = self.send_with(|w| {
            let mut chunk = vec![0u8; want];
            let n = loop {
                // SAFETY: pread into a buffer of `want` bytes we own, from a descriptor the
                // caller holds open.
                let n = unsafe {
                    libc::pread(
                        file.as_raw_fd(),
                        chunk.as_mut_ptr().cast(),
                        want,
                        *offset as libc::off_t,
                    )
                };
                if n >= 0 {
                    break n as usize;
                }
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            };
            w.write(&chunk[..n])
        })?;
        if let Some(n) = sent {
            *offset += n as u64;
        }
        Ok(sent)
    }

    fn limit_unsent(&self, bytes: Option<u32>) {
        self.sock.limit_unsent(bytes);
    }

    fn shutdown_write(&self) {
        let mut s = self.lock();
        s.conn.send_close_notify();
        // Best effort: a socket too full for the alert is closing anyway.
        let _ = self.flush(&mut s);
        self.sock.shutdown_write();
    }

    fn unread_len(&self) -> usize {
        let mut s = self.lock();
        let buffered = self.process(&mut s).map_or(0, |(ready, _)| ready);
        buffered + self.sock.unread_len()
    }

    fn wait_blocking(&self, interest: Interest, deadline: Instant) -> io::Result<()> {
        if interest == Interest::Read && self.has_buffered() {
            return Ok(());
        }
        self.sock.wait_blocking(interest, deadline)
    }
}

impl TlsStream {
    /// Plaintext (or the stream's end) is there to read without waiting for the socket.
    fn has_buffered(&self) -> bool {
        let mut s = self.lock();
        // An error is also something a read reports at once.
        self.process(&mut s)
            .map_or(true, |(ready, ended)| ready > 0 || ended)
    }
}

impl Transport for TlsStream {
    async fn when_readable<R>(
        &self,
        mut attempt: impl FnMut(&Self) -> io::Result<Option<(R, ReadCount)>>,
    ) -> io::Result<R> {
        // Records decrypted earlier may hold what the socket will never signal again.
        if self.has_buffered() {
            if let Some((done, _)) = attempt(self)? {
                return Ok(done);
            }
        }
        self.sock.when_readable(|_| attempt(self)).await
    }

    async fn when_writable<R>(
        &self,
        mut attempt: impl FnMut(&Self) -> io::Result<Option<R>>,
    ) -> io::Result<R> {
        self.sock.when_writable(|_| attempt(self)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(spec: &str) -> Option<Vec<String>> {
        #[allow(deprecated)]
        let all = rustls::crypto::ring::default_provider().cipher_suites;
        select_suites(&all, spec).map(|suites| {
            suites
                .iter()
                .filter_map(|s| openssl_words(s).map(|(n, _)| n.to_owned()))
                .collect()
        })
    }

    #[test]
    fn cipher_strings_select_tls12_suites() {
        assert_eq!(
            names("ECDHE-RSA-AES128-GCM-SHA256").unwrap(),
            ["ECDHE-RSA-AES128-GCM-SHA256"]
        );
        assert_eq!(
            names("ECDHE+AESGCM:!aECDSA:!SHA384").unwrap(),
            ["ECDHE-RSA-AES128-GCM-SHA256"]
        );
        assert_eq!(names("HIGH:!aNULL:!MD5").unwrap().len(), 6);
        assert_eq!(
            names("CHACHA20:AESGCM:+CHACHA20").unwrap().last().unwrap(),
            "ECDHE-RSA-CHACHA20-POLY1305"
        );
        assert!(names("RC4-SHA:DES-CBC3-SHA").is_none());
        assert!(names("ALL:!ALL").is_none());
    }

    #[test]
    fn tls13_suites_stay_whatever_the_string() {
        #[allow(deprecated)]
        let all = rustls::crypto::ring::default_provider().cipher_suites;
        let chosen = select_suites(&all, "ECDHE-ECDSA-AES256-GCM-SHA384").unwrap();
        assert_eq!(chosen.len(), 4);
        assert!(chosen.iter().filter(|s| openssl_words(s).is_none()).count() == 3);
    }

    #[test]
    fn tls13_offers_aes128_first_and_keeps_the_rest() {
        #[allow(deprecated)]
        let mut suites = rustls::crypto::ring::default_provider().cipher_suites;
        let before = suites.len();
        prefer_sha256_tls13(&mut suites);
        assert_eq!(suites.len(), before);
        assert_eq!(
            suites[0].suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        );
        assert_eq!(
            suites[1].suite(),
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
        );
    }

    #[test]
    fn plain_http_is_told_from_a_client_hello() {
        assert!(looks_like_http(b"GET / HTTP/1.1\r\n"));
        assert!(!looks_like_http(&[0x16, 0x03, 0x01]));
        assert!(!looks_like_http(b""));
    }

    #[test]
    fn dn_values_are_escaped() {
        assert_eq!(escape_dn("a,b"), "a\\,b");
        assert_eq!(escape_dn(" x "), "\\ x\\ ");
    }
}
