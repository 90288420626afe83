//! TLS for listeners and outbound connections, done inside the shard.
//!
//! A listener added with [`ServerBuilder::listen_tls`](crate::ServerBuilder::listen_tls)
//! terminates TLS (1.2 and 1.3, [rustls] with the *ring* crypto provider) before the
//! handler sees anything: `on_accept` runs once the handshake is done, `on_data` gets
//! decrypted bytes, [`Ctx::send`](crate::Ctx::send) and
//! [`send_shared`](crate::Ctx::send_shared) queue plaintext that is encrypted once
//! per loop turn (every send of a turn becomes as few records as fit), and
//! [`Ctx::close`](crate::Ctx::close) sends `close_notify` before the FIN.
//! [`Ctx::connect_tls`](crate::Ctx::connect_tls) does the same for outbound
//! connections; `on_connect` then reports the end of the handshake.
//!
//! # How it runs
//! rustls is used without any I/O of its own: the shard hands it the bytes its
//! driver read (`read_tls` from memory) and takes the records it produced
//! (`write_tls` into the connection's outbound queue). No extra thread, no extra
//! syscall, and the same code on io_uring and epoll. [`Ctx::splice_into`](crate::Ctx::splice_into)
//! refuses TLS connections (the kernel would move ciphertext).
//!
//! What is shared between shards: a listener's [`TlsAcceptor`] (its rustls
//! configuration, the certificate set and the session-ticket keys). It is read only
//! at a handshake — never on the data path — so a ticket issued by one shard
//! resumes on any other, and a reload ([`TlsAcceptor::reload`]) reaches every shard
//! at its next handshake without touching an established connection.
//!
//! # Limits
//! A handshake must finish within
//! [`ServerBuilder::tls_handshake_timeout`](crate::ServerBuilder::tls_handshake_timeout)
//! (default 10 s) or the connection is closed. At most
//! [`ServerBuilder::tls_max_handshakes`](crate::ServerBuilder::tls_max_handshakes)
//! handshakes run at once on a shard (default 64); further connections wait, not
//! read, in arrival order (their timeout runs), so a flood of ClientHellos costs a
//! bounded amount of CPU per turn and established connections keep being served.
//! Input that is not TLS gets an alert (where rustls can send one) and a close.
//!
//! # kTLS
//! The kernels this runs on here lack `CONFIG_TLS`, so records are encrypted in
//! user space. With kTLS the shard would hand the session keys to the socket after
//! the handshake (`setsockopt(TCP_ULP, "tls")`): sends and receives would carry
//! plaintext (saving one copy each way and letting `splice` and `sendfile` work on
//! TLS connections), and the encryption would cost the same CPU, only in the kernel.

mod acceptor;
mod connector;
mod pem;

use std::{fmt, io, path::PathBuf, sync::Arc};

pub use acceptor::{ClientAuth, PreparedTls, TlsAcceptor, TlsAcceptorOptions};
pub use connector::{TlsConnector, TlsConnectorOptions};

/// The crypto provider every TLS configuration here uses (*ring*: builds with a C
/// compiler, nothing downloaded at build time), with AEAD suites only, AES-128-GCM
/// first: as strong as anyone needs (Mozilla's recommendation puts it first too)
/// and cheaper than AES-256-GCM-SHA384 both per byte and per handshake (the TLS
/// 1.3 key schedule then runs on SHA-256, not SHA-384; measured: SHA-512 blocks
/// were 16 % of a handshake-bound proxy's profile with the other order).
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as cs;
    // rustls marks ring's provider deprecated because it lacks the post-quantum
    // key exchange (X25519MLKEM768) only aws-lc-rs has; aws-lc-rs needs cmake and
    // a longer C build. Classical X25519/P-256 key exchange is what ships here.
    #[allow(deprecated)]
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = vec![
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(p)
}

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The certificate chain: the end-entity certificate first, then intermediates.
    pub cert: PathBuf,
    /// The private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

impl CertFiles {
    /// The chain in `cert`, the key in `key`.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> CertFiles {
        CertFiles {
            cert: cert.into(),
            key: key.into(),
        }
    }
}

/// Why a TLS configuration could not be built or reloaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file holds no usable PEM item of the kind needed, or a broken one.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// The certificate, key, name or CA set is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// What a connection's TLS session negotiated: from [`Ctx::tls`](crate::Ctx::tls),
/// available from `on_accept` / `on_connect` on.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// The server name the client asked for (SNI), lowercased; on an outbound
    /// connection, the name the certificate was checked against.
    pub server_name: Option<String>,
    /// The application protocol agreed by ALPN.
    pub alpn: Option<Vec<u8>>,
    /// `"TLSv1.3"` or `"TLSv1.2"`.
    pub version: &'static str,
    /// The cipher suite's IANA name, e.g. `"TLS13_AES_128_GCM_SHA256"`.
    pub cipher: &'static str,
    /// Whether the session was resumed (ticket) rather than fully negotiated.
    pub resumed: bool,
    /// On an inbound connection: SHA-256 of the client certificate's DER encoding,
    /// present only if the client sent one and it verified against the listener's
    /// client CA ([`ClientAuth`]). On an outbound connection: the server
    /// certificate's fingerprint.
    pub peer_cert_sha256: Option<[u8; 32]>,
}

impl TlsInfo {
    /// The peer certificate's fingerprint as lowercase hex (64 characters).
    pub fn peer_cert_sha256_hex(&self) -> Option<String> {
        self.peer_cert_sha256.map(|d| {
            d.iter().fold(String::with_capacity(64), |mut s, b| {
                use fmt::Write;
                let _ = write!(s, "{b:02x}");
                s
            })
        })
    }
}

impl fmt::Debug for TlsInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsInfo")
            .field("server_name", &self.server_name)
            .field("alpn", &self.alpn.as_deref().map(String::from_utf8_lossy))
            .field("version", &self.version)
            .field("cipher", &self.cipher)
            .field("resumed", &self.resumed)
            .field("peer_cert_sha256", &self.peer_cert_sha256_hex())
            .finish()
    }
}

/// SHA-256 of a DER certificate.
pub(crate) fn fingerprint(der: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Builds the [`TlsInfo`] of a session whose handshake is done.
pub(crate) fn session_info(session: &rustls::Connection, server_name: Option<String>) -> TlsInfo {
    let version = match session.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "unknown",
    };
    let cipher = session
        .negotiated_cipher_suite()
        .and_then(|s| s.suite().as_str())
        .unwrap_or("unknown");
    let resumed = matches!(
        session.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    let (server_name, peer) = match session {
        rustls::Connection::Server(s) => (
            s.server_name().map(str::to_ascii_lowercase),
            s.peer_certificates(),
        ),
        rustls::Connection::Client(c) => (server_name, c.peer_certificates()),
    };
    TlsInfo {
        server_name,
        alpn: session.alpn_protocol().map(<[u8]>::to_vec),
        version,
        cipher,
        resumed,
        peer_cert_sha256: peer.and_then(|c| c.first()).map(|c| fingerprint(c)),
    }
}
