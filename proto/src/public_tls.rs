//! The certificate clients see: the mail nodes' TLS ports and STARTTLS, and the router's
//! autoconfiguration over HTTPS. The admin's certificates (one per name asked for, SNI) or a
//! self-signed one made at start; read again when their files change. One home, so both
//! roles load, pick and renew certificates the same way.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cluster_tls::ca;
use crate::watched::Watched;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use tokio_rustls::TlsAcceptor;

/// A `[tls]` section: a node's, or the router's `[autoconfig.tls]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain; with `key`. Without both, a self-signed certificate is made.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// `[[tls.names]]`: more certificates, each given to clients that ask (SNI) for one of
    /// the DNS names it carries; clients asking for no name or another get `cert`.
    pub names: Vec<CertFiles>,
}

/// One certificate and its key, as PEM files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// TLS setup failures.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("set both cert and key, or neither (names needs them as the default)")]
    Incomplete,
    #[error("cannot make a self-signed certificate: {0}")]
    SelfSigned(String),
    #[error("invalid certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

fn read_err(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Read { path: path.to_path_buf(), message: e.to_string() }
}

/// A certificate as loaded: what rustls signs with, the names it serves, when it expires.
#[derive(Clone)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// Lower-case DNS names from its subject alternative names (`*.example.com` included).
    names: Vec<String>,
    expires: Option<SystemTime>,
}

impl Loaded {
    fn new(key: CertifiedKey) -> Loaded {
        let leaf = key.cert.first().map(|c| c.as_ref()).unwrap_or_default();
        let names = ca::hosts(leaf).into_iter().map(|n| n.to_ascii_lowercase()).collect();
        let expires = ca::validity_der(leaf).map(|(expires, _)| expires);
        Loaded { key: Arc::new(key), names, expires }
    }

    /// Whether it serves `name` (lower case): by one of its names, or a wildcard over one
    /// label (`*.example.com` serves `mx.example.com`, not `example.com` or `a.b.example.com`).
    fn serves(&self, name: &str) -> bool {
        self.names.iter().any(|own| match own.strip_prefix("*.") {
            Some(parent) => name.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
            None => own == name,
        })
    }
}

/// The certificates of a listener, each as its files are now.
pub struct Certificates {
    /// For clients that ask for no name, or for one no other certificate serves.
    default: (String, Watched<Loaded>),
    /// Chosen by the name a client asks for, in the config's order.
    named: Vec<(String, Watched<Loaded>)>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Certificates")
    }
}

impl Certificates {
    /// The certificate for a client that asked for `name`.
    fn pick(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        if let Some(name) = name.map(str::to_ascii_lowercase) {
            for (_, watched) in &self.named {
                let loaded = watched.current();
                if loaded.serves(&name) {
                    return loaded.key;
                }
            }
        }
        self.default.1.current().key
    }

    /// Each certificate's file (or `self-signed`) and when it expires, as the files are now.
    pub fn expiries(&self) -> Vec<(String, Option<SystemTime>)> {
        let all = std::iter::once(&self.default).chain(&self.named);
        all.map(|(what, watched)| (what.clone(), watched.current().expires)).collect()
    }

    /// When the first of them expires (Unix seconds; 0 if none can tell).
    pub fn first_expiry(&self) -> u64 {
        let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.expiries().into_iter().filter_map(|(_, at)| at.map(unix)).min().unwrap_or(0)
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}

/// Reads a certificate chain and its key into what rustls signs with.
fn load(files: &CertFiles, provider: &CryptoProvider) -> Result<Loaded, TlsError> {
    let (cert, key) = (&files.cert, &files.key);
    let chain: Result<Vec<CertificateDer<'static>>, _> =
        CertificateDer::pem_file_iter(cert).map_err(|e| read_err(cert, e))?.collect();
    let chain = chain.map_err(|e| read_err(cert, e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| read_err(key, e))?;
    Ok(Loaded::new(CertifiedKey::from_der(chain, key, provider)?))
}

/// `files`, loaded now (the errors are the caller's) and again whenever they change (later
/// errors are logged by `Watched`, and the last good load stays in use).
fn watched(files: &CertFiles, provider: &Arc<CryptoProvider>) -> Result<(String, Watched<Loaded>), TlsError> {
    let first = load(files, provider)?;
    let (reload, reload_with) = (files.clone(), provider.clone());
    let paths = vec![files.cert.clone(), files.key.clone()];
    let watched =
        Watched::new("TLS certificate", paths, first, move || load(&reload, &reload_with).map_err(|e| e.to_string()));
    Ok((files.cert.display().to_string(), watched))
}

/// A certificate for `hostname` made now, signed by itself, held in memory only.
fn self_signed(hostname: &str, provider: &CryptoProvider) -> Result<Loaded, TlsError> {
    let failed = |e: rcgen::Error| TlsError::SelfSigned(e.to_string());
    let mut params = rcgen::CertificateParams::new(vec![hostname.to_string()]).map_err(failed)?;
    params.distinguished_name.push(rcgen::DnType::CommonName, hostname);
    let key_pair = rcgen::KeyPair::generate().map_err(failed)?;
    let cert = params.self_signed(&key_pair).map_err(failed)?;
    let key = PrivateKeyDer::try_from(key_pair.serialize_der()).map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    Ok(Loaded::new(CertifiedKey::from_der(vec![cert.der().clone()], key, provider)?))
}

/// Builds the acceptor for TLS listeners and STARTTLS (a node's, the router's autoconfig),
/// and the certificates it picks from (for their expiry in metrics and heartbeats). The admin's certificates are read
/// again when their files change (a renewal), for the handshakes after: sessions already
/// open keep theirs, so none is dropped.
pub fn acceptor(config: &TlsConfig, hostname: &str) -> Result<(TlsAcceptor, Arc<Certificates>), TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let default = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => watched(&CertFiles { cert: cert.clone(), key: key.clone() }, &provider)?,
        (None, None) if config.names.is_empty() => {
            ("self-signed".to_string(), Watched::fixed("TLS certificate", self_signed(hostname, &provider)?))
        }
        _ => return Err(TlsError::Incomplete),
    };
    let named = config.names.iter().map(|files| watched(files, &provider)).collect::<Result<_, _>>()?;
    let certificates = Arc::new(Certificates { default, named });
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certificates.clone());
    Ok((TlsAcceptor::from(Arc::new(server)), certificates))
}
