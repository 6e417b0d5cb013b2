//! TLS server configuration: the admin's certificate, or a self-signed one made at start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use sirms_proto::watched::Watched;
use tokio_rustls::TlsAcceptor;

/// The `[tls]` section of a node's config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain; with `key`. Without both, a self-signed certificate is made.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

/// TLS setup failures.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("set both tls.cert and tls.key, or neither")]
    Incomplete,
    #[error("cannot make a self-signed certificate: {0}")]
    SelfSigned(String),
    #[error("invalid certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

fn read_err(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Read { path: path.to_path_buf(), message: e.to_string() }
}

/// Picks the node's certificate for each handshake: the one in the files as they are now.
struct Certificate(Watched<Arc<CertifiedKey>>);

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Certificate")
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

/// Reads a certificate chain and its key into what rustls signs with.
fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain: Result<Vec<CertificateDer<'static>>, _> =
        CertificateDer::pem_file_iter(cert).map_err(|e| read_err(cert, e))?.collect();
    let chain = chain.map_err(|e| read_err(cert, e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| read_err(key, e))?;
    Ok(CertifiedKey::from_der(chain, key, provider)?)
}

/// Builds the acceptor for every TLS listener and STARTTLS of a node. The admin's certificate
/// is read again when its files change (a renewal), for the handshakes after: sessions already
/// open keep theirs, so none is dropped.
pub fn acceptor(config: &TlsConfig, hostname: &str) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certificate = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => {
            // The first load's errors are the caller's; later ones are logged by `Watched`.
            let first = Arc::new(load(cert, key, &provider)?);
            let (cert, key, reload_with) = (cert.clone(), key.clone(), provider.clone());
            let paths = vec![cert.clone(), key.clone()];
            Watched::new("TLS certificate", paths, first, move || {
                load(&cert, &key, &reload_with).map(Arc::new).map_err(|e| e.to_string())
            })
        }
        (None, None) => {
            let self_signed = |e: rcgen::Error| TlsError::SelfSigned(e.to_string());
            let mut params = rcgen::CertificateParams::new(vec![hostname.to_string()]).map_err(self_signed)?;
            params.distinguished_name.push(rcgen::DnType::CommonName, hostname);
            let key_pair = rcgen::KeyPair::generate().map_err(self_signed)?;
            let cert = params.self_signed(&key_pair).map_err(self_signed)?;
            let key =
                PrivateKeyDer::try_from(key_pair.serialize_der()).map_err(|e| TlsError::SelfSigned(e.to_string()))?;
            let certified = CertifiedKey::from_der(vec![cert.der().clone()], key, &provider)?;
            Watched::fixed("TLS certificate", Arc::new(certified))
        }
        _ => return Err(TlsError::Incomplete),
    };
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Certificate(certificate)));
    Ok(TlsAcceptor::from(Arc::new(server)))
}
