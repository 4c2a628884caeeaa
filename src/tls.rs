//! TLS on the public listener (`server.tls`), with the certificate hot-swapped.
//!
//! The acceptor's certificate resolver holds the current [`CertifiedKey`] behind an
//! `ArcSwap`: a reload that reads a new, matching certificate and key swaps it in, and the
//! next handshake presents it; connections already open keep theirs. A pair that does not
//! parse or does not match (a half-written file, a key from another certificate) is refused
//! and the old pair keeps serving.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Why a certificate and key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("certificate and key do not belong together: {0}")]
    Mismatch(String),
}

/// Reads and checks a certificate chain and its private key (PEM).
pub fn load_certified_key(tls: &TlsConfig) -> Result<CertifiedKey, TlsError> {
    let file_err = |p: &Path, message: String| TlsError::File {
        path: p.display().to_string(),
        message,
    };
    let cert_pem = std::fs::read(&tls.cert).map_err(|e| file_err(&tls.cert, e.to_string()))?;
    let key_pem = std::fs::read(&tls.key).map_err(|e| file_err(&tls.key, e.to_string()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(&tls.cert, format!("not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(file_err(&tls.cert, "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| file_err(&tls.key, format!("not a PEM private key: {e}")))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let ck = CertifiedKey::from_der(certs, key, &provider)
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    // from_der lets "cannot tell" through; a gateway would rather refuse than guess.
    ck.keys_match()
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    Ok(ck)
}

/// Serves whatever certified key is current.
#[derive(Debug)]
struct SwappableCert(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The public listener's TLS: an acceptor and the handle to swap its certificate.
pub struct Tls {
    cert: Arc<SwappableCert>,
    pub acceptor: TlsAcceptor,
}

impl Tls {
    pub fn new(key: CertifiedKey) -> Self {
        let cert = Arc::new(SwappableCert(ArcSwap::from_pointee(key)));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the default provider supports the default versions")
            .with_no_client_auth()
            .with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Tls {
            cert,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        }
    }

    /// Presents `key` from the next handshake on.
    pub fn swap(&self, key: CertifiedKey) {
        self.cert.0.store(Arc::new(key));
    }
}
