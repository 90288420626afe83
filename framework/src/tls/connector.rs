//! The client side, for [`Ctx::connect_tls`](crate::Ctx::connect_tls): which CAs to
//! trust, ALPN, an optional client certificate.

use std::{fmt, path::PathBuf, sync::Arc};

use rustls::ClientConfig;

use super::{pem, provider, CertFiles, TlsError};

/// How outbound TLS connections verify servers. Start from
/// [`TlsConnectorOptions::default`] (the system's CAs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConnectorOptions {
    /// CA certificates (PEM) servers must chain to; `None`: the operating
    /// system's trusted CAs.
    pub ca: Option<PathBuf>,
    /// ALPN protocols offered, most preferred first; empty: no ALPN.
    pub alpn: Vec<Vec<u8>>,
    /// A client certificate to present when a server asks for one.
    pub client_cert: Option<CertFiles>,
}

/// An outbound TLS configuration, shared by every shard (sessions resume across
/// them). Cheap to clone.
#[derive(Clone)]
pub struct TlsConnector {
    pub(crate) config: Arc<ClientConfig>,
    options: Arc<TlsConnectorOptions>,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// Loads the CAs (and client certificate) and builds the configuration.
    pub fn new(options: TlsConnectorOptions) -> Result<TlsConnector, TlsError> {
        let roots = match &options.ca {
            Some(path) => pem::roots(path)?,
            None => pem::system_roots()?,
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_root_certificates(roots);
        let mut config = match &options.client_cert {
            Some(files) => {
                let chain = pem::certs(&files.cert)?;
                let key = pem::key(&files.key)?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    TlsError::Invalid(format!("client certificate {}: {e}", files.cert.display()))
                })?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = options.alpn.clone();
        Ok(TlsConnector {
            config: Arc::new(config),
            options: Arc::new(options),
        })
    }

    /// Trusts the CAs in `ca` (PEM), no ALPN, no client certificate.
    pub fn with_ca_file(ca: impl Into<PathBuf>) -> Result<TlsConnector, TlsError> {
        TlsConnector::new(TlsConnectorOptions {
            ca: Some(ca.into()),
            ..TlsConnectorOptions::default()
        })
    }

    /// The options it was made with.
    pub fn options(&self) -> &TlsConnectorOptions {
        &self.options
    }
}
