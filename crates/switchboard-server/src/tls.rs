//! HTTPS: a rustls server configuration (the `ring` provider, TLS 1.2 and 1.3, HTTP/1.1 by
//! ALPN) built from a PEM certificate chain and a PEM private key. Errors name the file and
//! what is wrong with it, never the key's contents.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// What serving HTTPS needs; cheap to clone.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tls { .. }")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

impl Tls {
    /// Reads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or
    /// SEC1) from files.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let read = |path: &Path, what: &str| {
            std::fs::read(path).map_err(|e| {
                TlsError(format!(
                    "cannot read the TLS {what} {}: {}",
                    path.display(),
                    e.kind()
                ))
            })
        };
        let cert_pem = read(cert, "certificate")?;
        let key_pem = read(key, "private key")?;
        Tls::from_pem(&cert_pem, &key_pem).map_err(|TlsError(e)| {
            TlsError(format!(
                "{e} (certificate {}, key {})",
                cert.display(),
                key.display()
            ))
        })
    }

    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Tls, TlsError> {
        let certs = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| TlsError("the certificate file is not valid PEM".into()))?;
        if certs.is_empty() {
            return Err(TlsError(
                "the certificate file holds no CERTIFICATE block".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| {
            TlsError("the key file holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".into())
        })?;
        let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("cannot set up TLS: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| TlsError(format!("the certificate and key do not work together: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}
