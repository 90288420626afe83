//! TLS in the proxy: termination on listeners, TLS to backends per pool. The
//! framework does the TLS ([`shardline::tls`]); this module turns the
//! configuration into its types and opens upstream connections the way a pool
//! asks.
//!
//! ```toml
//! [[listener]]
//! address = "0.0.0.0:443"
//! mode = "http"
//! pool = "web"
//! [listener.tls]
//! cert = "site.pem"                 # chain, leaf first (PEM)
//! key = "site.key"                  # PKCS#8, SEC1 or PKCS#1 (PEM)
//! alpn = ["http/1.1"]               # http mode's default; tcp: none
//! client_ca = "clients.pem"         # optional: ask for client certificates
//! client_cert = "optional"          # or "required" (with client_ca)
//! [[listener.tls.sni]]              # more certificates, by server name
//! names = ["api.example.com", "*.example.org"]
//! cert = "api.pem"
//! key = "api.key"
//!
//! [pool.web]
//! backends = [{ address = "10.0.0.5:443" }]
//! tls = true                        # TLS to the backends
//! tls_ca = "internal-ca.pem"        # default: the system's CAs
//! tls_server_name = "web.internal"  # default: the backend's IP address
//! ```
//!
//! Relative paths are relative to the configuration file's directory. Files are
//! read at start and again on every reload (SIGHUP): renewed certificates are
//! picked up by new handshakes, established connections go on; an unreadable or
//! mismatched file refuses the whole reload.

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use shardline::{
    tls::{CertFiles, ClientAuth, TlsAcceptorOptions, TlsConnectorOptions},
    ConnId, Ctx, Handler, TlsConnector,
};

use crate::config::{ConfigError, Mode};

/// `[listener.tls]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListenerTls {
    cert: PathBuf,
    key: PathBuf,
    #[serde(default)]
    sni: Vec<RawSni>,
    alpn: Option<Vec<String>>,
    client_ca: Option<PathBuf>,
    client_cert: Option<ClientCertMode>,
    #[serde(default = "yes")]
    tickets: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSni {
    names: Vec<String>,
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ClientCertMode {
    Optional,
    Required,
}

/// The TLS keys of `[pool.NAME]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RawPoolTls {
    #[serde(default)]
    pub(crate) tls: bool,
    pub(crate) tls_ca: Option<PathBuf>,
    pub(crate) tls_server_name: Option<String>,
    pub(crate) tls_client_cert: Option<PathBuf>,
    pub(crate) tls_client_key: Option<PathBuf>,
}

/// A listener's TLS, validated: what its acceptor is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// The framework's acceptor options (paths resolved).
    pub options: TlsAcceptorOptions,
}

impl ListenerTls {
    /// One certificate for every name, the mode's default ALPN (the quick start's
    /// `--tls-cert` / `--tls-key`).
    pub fn single(cert: &Path, key: &Path, mode: Mode) -> ListenerTls {
        let mut options = TlsAcceptorOptions::new(CertFiles::new(cert, key));
        options.alpn = default_alpn(mode);
        ListenerTls { options }
    }
}

fn default_alpn(mode: Mode) -> Vec<Vec<u8>> {
    match mode {
        Mode::Http => vec![b"http/1.1".to_vec()],
        Mode::Tcp => Vec::new(),
    }
}

/// A pool's TLS to its backends, validated (the CA file is read).
#[derive(Debug, Clone)]
pub struct PoolTls {
    /// The client configuration.
    pub connector: TlsConnector,
    /// The name certificates are checked against; `None`: the backend's IP.
    pub server_name: Option<String>,
}

fn resolve(base: Option<&Path>, p: &Path) -> PathBuf {
    match base {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

fn bad(what: String) -> ConfigError {
    ConfigError::BadLimit(what)
}

impl RawListenerTls {
    pub(crate) fn validate(
        &self,
        address: SocketAddr,
        mode: Mode,
        base: Option<&Path>,
    ) -> Result<ListenerTls, ConfigError> {
        let files =
            |cert: &Path, key: &Path| CertFiles::new(resolve(base, cert), resolve(base, key));
        let mut options = TlsAcceptorOptions::new(files(&self.cert, &self.key));
        for s in &self.sni {
            if s.names.is_empty() {
                return Err(bad(format!(
                    "listener {address}: a [[listener.tls.sni]] entry needs names"
                )));
            }
            options.sni.push((s.names.clone(), files(&s.cert, &s.key)));
        }
        options.alpn = match &self.alpn {
            None => default_alpn(mode),
            Some(list) => {
                let mut out = Vec::with_capacity(list.len());
                for p in list {
                    if p.is_empty() || p.len() > 255 {
                        return Err(bad(format!(
                            "listener {address}: ALPN protocol {p:?} must be 1 to 255 bytes"
                        )));
                    }
                    if mode == Mode::Http && p != "http/1.1" && p != "http/1.0" {
                        return Err(bad(format!(
                            "listener {address}: an http listener speaks HTTP/1.x only; \
                             ALPN {p:?} would promise a protocol it does not speak"
                        )));
                    }
                    out.push(p.as_bytes().to_vec());
                }
                out
            }
        };
        options.client_auth = match (&self.client_ca, self.client_cert) {
            (None, None) => ClientAuth::None,
            (None, Some(_)) => {
                return Err(bad(format!(
                    "listener {address}: client_cert needs client_ca (the CAs client \
                     certificates must chain to)"
                )))
            }
            (Some(ca), Some(ClientCertMode::Required)) => ClientAuth::Required {
                ca: resolve(base, ca),
            },
            (Some(ca), _) => ClientAuth::Optional {
                ca: resolve(base, ca),
            },
        };
        options.tickets = self.tickets;
        Ok(ListenerTls { options })
    }
}

impl RawPoolTls {
    pub(crate) fn validate(
        &self,
        pool: &str,
        base: Option<&Path>,
    ) -> Result<Option<PoolTls>, ConfigError> {
        if !self.tls {
            let set = self.tls_ca.is_some()
                || self.tls_server_name.is_some()
                || self.tls_client_cert.is_some()
                || self.tls_client_key.is_some();
            if set {
                return Err(bad(format!("pool {pool:?}: tls_* keys need tls = true")));
            }
            return Ok(None);
        }
        let client_cert = match (&self.tls_client_cert, &self.tls_client_key) {
            (None, None) => None,
            (Some(c), Some(k)) => Some(CertFiles::new(resolve(base, c), resolve(base, k))),
            _ => {
                return Err(bad(format!(
                    "pool {pool:?}: tls_client_cert and tls_client_key go together"
                )))
            }
        };
        if let Some(name) = &self.tls_server_name {
            // The same host-name rules the SNI router applies to client hellos.
            let ok = name.parse::<std::net::IpAddr>().is_ok()
                || crate::sni::host_name(name.as_bytes()).is_ok();
            if !ok {
                return Err(bad(format!(
                    "pool {pool:?}: tls_server_name {name:?} is not a DNS name or IP address"
                )));
            }
        }
        let connector = TlsConnector::new(TlsConnectorOptions {
            ca: self.tls_ca.as_ref().map(|p| resolve(base, p)),
            alpn: vec![b"http/1.1".to_vec()],
            client_cert,
        })
        .map_err(|e| bad(format!("pool {pool:?}: {e}")))?;
        Ok(Some(PoolTls {
            connector,
            server_name: self.tls_server_name.clone(),
        }))
    }
}

/// Opens an upstream connection to `addr` the way its pool says: plain TCP, or
/// TLS checked against the pool's CAs and server name.
pub fn connect_upstream<H: Handler>(
    ctx: &mut Ctx<'_, H>,
    tls: Option<&PoolTls>,
    addr: SocketAddr,
    state: H::Conn,
) -> io::Result<ConnId> {
    match tls {
        None => ctx.connect(addr, state),
        Some(t) => {
            let ip;
            let name = match &t.server_name {
                Some(n) => n.as_str(),
                None => {
                    ip = addr.ip().to_string();
                    ip.as_str()
                }
            };
            ctx.connect_tls(addr, &t.connector, name, state)
        }
    }
}
