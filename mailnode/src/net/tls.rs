//! TLS server configuration: the admin's certificate, or a self-signed one made at start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
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

/// Builds the acceptor for every TLS listener and STARTTLS of a node.
pub fn acceptor(config: &TlsConfig, hostname: &str) -> Result<TlsAcceptor, TlsError> {
    let (chain, key) = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => {
            let chain: Result<Vec<CertificateDer<'static>>, _> =
                CertificateDer::pem_file_iter(cert).map_err(|e| read_err(cert, e))?.collect();
            let chain = chain.map_err(|e| read_err(cert, e))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| read_err(key, e))?;
            (chain, key)
        }
        (None, None) => {
            let self_signed = |e: rcgen::Error| TlsError::SelfSigned(e.to_string());
            let mut params = rcgen::CertificateParams::new(vec![hostname.to_string()]).map_err(self_signed)?;
            params.distinguished_name.push(rcgen::DnType::CommonName, hostname);
            let key_pair = rcgen::KeyPair::generate().map_err(self_signed)?;
            let cert = params.self_signed(&key_pair).map_err(self_signed)?;
            let key =
                PrivateKeyDer::try_from(key_pair.serialize_der()).map_err(|e| TlsError::SelfSigned(e.to_string()))?;
            (vec![cert.der().clone()], key)
        }
        _ => return Err(TlsError::Incomplete),
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}
