//! The server side: certificates chosen by SNI, ALPN, session tickets, optional
//! client certificates, and reloading all of it while the server runs.

use std::{
    collections::HashMap,
    fmt,
    path::PathBuf,
    sync::{Arc, RwLock},
};

use rustls::{
    pki_types::{CertificateDer, ServerName},
    server::{ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
    ServerConfig,
};
use tracing::info;

use super::{pem, provider, CertFiles, TlsError};

/// Whether a TLS listener asks clients for a certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificates (the default).
    #[default]
    None,
    /// Clients may send a certificate; one that does not verify against the CAs in
    /// this PEM file fails the handshake, none at all is accepted. The handler sees
    /// the fingerprint of a verified one in [`TlsInfo`](super::TlsInfo).
    Optional {
        /// CA certificates client certificates must chain to.
        ca: PathBuf,
    },
    /// Every client must present a certificate that verifies against these CAs.
    Required {
        /// CA certificates client certificates must chain to.
        ca: PathBuf,
    },
}

/// What a TLS listener serves. Start from [`TlsAcceptorOptions::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsAcceptorOptions {
    /// The certificate for clients that send no server name, or one no other
    /// certificate is configured for.
    pub default_cert: CertFiles,
    /// More certificates, each for the names listed with it: exact names
    /// (`chat.example.com`) or wildcards covering one label (`*.example.com`). An
    /// exact name wins over a wildcard. Every name must be covered by its
    /// certificate (checked when loading).
    pub sni: Vec<(Vec<String>, CertFiles)>,
    /// ALPN protocols offered, most preferred first (e.g. `b"http/1.1"`); empty: no
    /// ALPN.
    pub alpn: Vec<Vec<u8>>,
    /// Client certificates.
    pub client_auth: ClientAuth,
    /// Session resumption with tickets (stateless; the keys are shared by every
    /// shard and rotated every 6 hours). On by default.
    pub tickets: bool,
}

impl TlsAcceptorOptions {
    /// One certificate for every name; TLS 1.2 and 1.3, tickets on, no ALPN, no
    /// client certificates.
    pub fn new(default_cert: CertFiles) -> TlsAcceptorOptions {
        TlsAcceptorOptions {
            default_cert,
            sni: Vec::new(),
            alpn: Vec::new(),
            client_auth: ClientAuth::None,
            tickets: true,
        }
    }
}

/// A TLS listener's configuration, shared by every shard: give it to
/// [`ServerBuilder::listen_tls`](crate::ServerBuilder::listen_tls) and keep a clone
/// to [`reload`](TlsAcceptor::reload) it (e.g. on SIGHUP). Cheap to clone.
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: Arc<Inner>,
}

struct Inner {
    options: RwLock<TlsAcceptorOptions>,
    /// The configuration new handshakes use; replaced whole by a reload.
    config: RwLock<Arc<ServerConfig>>,
    /// Kept across reloads, so tickets issued before a reload still resume.
    ticketer: Option<Arc<dyn rustls::server::ProducesTickets>>,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("options", &*read(&self.inner.options))
            .finish_non_exhaustive()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one is still valid.
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl TlsAcceptor {
    /// Loads the certificates and builds the configuration; every problem (a
    /// missing file, a key that does not match its certificate, a name a
    /// certificate does not cover, an unusable CA file) is an error naming it.
    pub fn new(options: TlsAcceptorOptions) -> Result<TlsAcceptor, TlsError> {
        let ticketer = if options.tickets {
            Some(rustls::crypto::ring::Ticketer::new()?)
        } else {
            None
        };
        let config = build(&options, ticketer.clone())?;
        Ok(TlsAcceptor {
            inner: Arc::new(Inner {
                options: RwLock::new(options),
                config: RwLock::new(config),
                ticketer,
            }),
        })
    }

    /// One certificate chain and key, default options.
    pub fn from_files(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Self, TlsError> {
        TlsAcceptor::new(TlsAcceptorOptions::new(CertFiles::new(cert, key)))
    }

    /// Reads the certificate files again and uses them for every new handshake on
    /// every shard; established connections are not touched. On any error nothing
    /// changes (the old certificates stay in use) and the error says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let options = read(&self.inner.options).clone();
        self.reload_with(options)
    }

    /// Like [`reload`](TlsAcceptor::reload), with new options (other files, names,
    /// ALPN or client CAs). Whether tickets are on cannot change (it keeps the
    /// setting the acceptor was made with).
    pub fn reload_with(&self, options: TlsAcceptorOptions) -> Result<(), TlsError> {
        self.prepare(options)?.commit();
        Ok(())
    }

    /// The first half of a reload: loads and checks everything `options` name
    /// without changing what the acceptor serves. [`PreparedTls::commit`] then
    /// swaps it in. For applications that reload several acceptors (and other
    /// configuration) all or nothing: prepare every one, commit only if all
    /// succeeded.
    pub fn prepare(&self, mut options: TlsAcceptorOptions) -> Result<PreparedTls, TlsError> {
        options.tickets = self.inner.ticketer.is_some();
        let config = build(&options, self.inner.ticketer.clone())?;
        Ok(PreparedTls {
            acceptor: self.clone(),
            options,
            config,
        })
    }

    /// The options in use.
    pub fn options(&self) -> TlsAcceptorOptions {
        read(&self.inner.options).clone()
    }

    /// The configuration for a new handshake.
    pub(crate) fn config(&self) -> Arc<ServerConfig> {
        read(&self.inner.config).clone()
    }
}

/// A checked configuration waiting to be swapped into its acceptor; dropping it
/// changes nothing. From [`TlsAcceptor::prepare`].
pub struct PreparedTls {
    acceptor: TlsAcceptor,
    options: TlsAcceptorOptions,
    config: Arc<ServerConfig>,
}

impl fmt::Debug for PreparedTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedTls")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl PreparedTls {
    /// Makes the prepared configuration the one new handshakes use, on every
    /// shard; established connections are not touched.
    pub fn commit(self) {
        let inner = &self.acceptor.inner;
        *write(&inner.config) = self.config;
        info!(
            cert = %self.options.default_cert.cert.display(),
            sni = self.options.sni.len(),
            "TLS certificates reloaded"
        );
        *write(&inner.options) = self.options;
    }
}

fn build(
    options: &TlsAcceptorOptions,
    ticketer: Option<Arc<dyn rustls::server::ProducesTickets>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = CertSet::load(options)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match &options.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Optional { ca } | ClientAuth::Required { ca } => {
            let roots = Arc::new(pem::roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
            let verifier = if matches!(options.client_auth, ClientAuth::Optional { .. }) {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Invalid(format!("client CA {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(certs));
    config.alpn_protocols = options.alpn.clone();
    // The server's suite order (AEAD only, strongest first) over the client's.
    config.ignore_client_order = true;
    // Resumption is by tickets only: no session cache shared by the shards.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    match ticketer {
        Some(t) => config.ticketer = t,
        None => config.send_tls13_tickets = 0,
    }
    Ok(Arc::new(config))
}

/// Certificates by server name.
#[derive(Debug)]
struct CertSet {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the suffix after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl CertSet {
    fn load(options: &TlsAcceptorOptions) -> Result<CertSet, TlsError> {
        let default = pem::certified_key(&options.default_cert)?;
        let mut set = CertSet {
            default,
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        };
        for (names, files) in &options.sni {
            if names.is_empty() {
                return Err(TlsError::Invalid(format!(
                    "{}: a certificate chosen by SNI needs at least one name",
                    files.cert.display()
                )));
            }
            let key = pem::certified_key(files)?;
            for name in names {
                let name = name.trim().to_ascii_lowercase();
                check_covers(&key.cert[0], &name, files)?;
                let slot = match name.strip_prefix("*.") {
                    Some(suffix) => set.wildcard.insert(suffix.to_string(), key.clone()),
                    None => set.exact.insert(name.clone(), key.clone()),
                };
                if slot.is_some() {
                    return Err(TlsError::Invalid(format!(
                        "server name {name} is listed for more than one certificate"
                    )));
                }
            }
        }
        Ok(set)
    }

    fn pick(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name else {
            return self.default.clone();
        };
        let name = name.to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return k.clone();
        }
        if let Some((_, suffix)) = name.split_once('.') {
            if let Some(k) = self.wildcard.get(suffix) {
                return k.clone();
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for CertSet {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}

/// Checks that `cert` is valid for `name` (a wildcard name is checked with a
/// made-up label in its place).
fn check_covers(cert: &CertificateDer<'_>, name: &str, files: &CertFiles) -> Result<(), TlsError> {
    let probe = match name.strip_prefix("*.") {
        Some(suffix) => format!("sni-check.{suffix}"),
        None => name.to_string(),
    };
    let server_name = ServerName::try_from(probe.as_str())
        .map_err(|_| TlsError::Invalid(format!("{name:?} is not a valid server name")))?;
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| {
        TlsError::Invalid(format!(
            "{}: cannot parse the certificate: {e}",
            files.cert.display()
        ))
    })?;
    ee.verify_is_valid_for_subject_name(&server_name)
        .map_err(|_| {
            TlsError::Invalid(format!(
                "{} does not cover the server name {name}",
                files.cert.display()
            ))
        })
}
