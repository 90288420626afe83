//! Certificates made at test time (rcgen): a CA, server certificates for
//! `localhost` and client certificates, as PEM files in a fresh directory; and the
//! rustls client configuration that trusts the CA.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct Pem {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A test CA that issues certificates into its own directory (removed on drop).
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub dir: PathBuf,
    pub ca_pem: PathBuf,
}

impl TestCa {
    pub fn new(tag: &str) -> TestCa {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "chat-tls-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("shardline-chat test CA {tag}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA cert");
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, cert.pem()).expect("write CA");
        TestCa {
            issuer: Issuer::new(params, key),
            dir,
            ca_pem,
        }
    }

    fn issue(&self, stem: &str, names: &[&str], eku: ExtendedKeyUsagePurpose) -> Pem {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_else(|| stem.to_string()),
        );
        params.extended_key_usages = vec![eku];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let files = Pem {
            cert: self.dir.join(format!("{stem}.pem")),
            key: self.dir.join(format!("{stem}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }

    /// A server certificate for `localhost`, as `<stem>.pem` / `<stem>.key`.
    pub fn server(&self, stem: &str) -> Pem {
        self.issue(stem, &["localhost"], ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate.
    pub fn client(&self, stem: &str) -> Pem {
        self.issue(stem, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A client configuration trusting this CA, optionally presenting `cert`.
    pub fn client_config(&self, cert: Option<&Pem>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&self.ca_pem).expect("CA file") {
            roots.add(c.expect("CA cert")).expect("add CA");
        }
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        Arc::new(match cert {
            None => b.with_no_client_auth(),
            Some(files) => {
                let chain = CertificateDer::pem_file_iter(&files.cert)
                    .expect("cert file")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("certs");
                let key = PrivateKeyDer::from_pem_file(&files.key).expect("key");
                b.with_client_auth_cert(chain, key).expect("client cert")
            }
        })
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SHA-256 of DER bytes, lowercase hex.
pub fn sha256_hex(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of the first certificate in a PEM file, lowercase hex.
pub fn fingerprint_hex(cert: &Path) -> String {
    let der = CertificateDer::from_pem_file(cert).expect("cert");
    sha256_hex(der.as_ref())
}
