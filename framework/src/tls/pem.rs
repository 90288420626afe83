//! Reading certificates, keys and CA sets from PEM files, with errors that name the
//! file and what is wrong with it.

use std::{path::Path, sync::Arc};

use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    sign::CertifiedKey,
    RootCertStore,
};

use super::{provider, CertFiles, TlsError};

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn pem_err(path: &Path, what: impl Into<String>) -> TlsError {
    TlsError::Pem {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// Every certificate in a PEM file, in order; at least one.
pub(crate) fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_err(path, "no CERTIFICATE in the file"));
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub(crate) fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => pem_err(
            path,
            "no private key in the file (PKCS#8, SEC1 or PKCS#1 PEM expected)",
        ),
        e => pem_err(path, format!("bad PEM: {e}")),
    })
}

/// A certificate chain with its key, checked to belong together.
pub(crate) fn certified_key(files: &CertFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = certs(&files.cert)?;
    let key = key(&files.key)?;
    let ck = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        TlsError::Invalid(format!(
            "{} with {}: {e}",
            files.cert.display(),
            files.key.display()
        ))
    })?;
    Ok(Arc::new(ck))
}

/// A set of trusted CA certificates from a PEM file (at least one usable).
pub(crate) fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    let (added, ignored) = store.add_parsable_certificates(certs(path)?);
    if added == 0 {
        return Err(pem_err(
            path,
            format!("none of its {ignored} certificate(s) is a usable CA"),
        ));
    }
    Ok(store)
}

/// The operating system's trusted CAs.
pub(crate) fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(found.certs);
    if store.is_empty() {
        let why = found
            .errors
            .first()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "none found".into());
        return Err(TlsError::Invalid(format!(
            "no system CA certificates ({why}); give a CA file"
        )));
    }
    Ok(store)
}
