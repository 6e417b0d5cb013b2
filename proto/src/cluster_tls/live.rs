//! The CA and certificate of one role, read from their files and read again when the files
//! change: a renewed certificate is used by the next connection, with no restart.
//!
//! Connections already open keep the certificate they were made with (TLS checks it once, at
//! the handshake); only new ones pick up the renewed one, which is all renewal needs as long
//! as it happens before the old certificate expires.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tonic::transport::{Certificate, ClientTlsConfig, Identity as TlsIdentity};

use super::{ClusterTlsError, TlsFiles};

/// How often the files are looked at (their size and modification time), at most.
const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// Whether a server asks every client for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every client must present a certificate of the cluster CA.
    Required,
    /// A client may connect without one (a node joining with an invitation, which has no
    /// certificate yet); every call that needs one checks for it ([`super::authorize`]).
    Optional,
}

/// The files' sizes and modification times (`None` if one is missing).
type Stamp = Option<Vec<(u64, SystemTime)>>;

/// What the files held when last read, as rustls and tonic take it.
struct Loaded {
    stamp: Stamp,
    pem: [Vec<u8>; 3],
    server_required: Arc<ServerConfig>,
    server_optional: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

struct Inner {
    files: Option<TlsFiles>,
    loaded: RwLock<Arc<Loaded>>,
    /// When the files were last looked at, and the stamp of a set that failed to load (so
    /// that a broken renewal is logged once, not every check).
    checked: Mutex<(Instant, Stamp)>,
}

/// The loaded CA and certificate of one role; cheap to clone (clones share the reloads).
#[derive(Clone)]
pub struct ClusterTls {
    inner: Arc<Inner>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, ClusterTlsError> {
    std::fs::read(path).map_err(|source| ClusterTlsError::Read { path: path.to_path_buf(), source })
}

fn stamp(files: &TlsFiles) -> Stamp {
    [&files.ca, &files.cert, &files.key]
        .into_iter()
        .map(|path| std::fs::metadata(path).ok().and_then(|m| Some((m.len(), m.modified().ok()?))))
        .collect()
}

fn setup(what: &str) -> impl FnOnce(rustls::Error) -> ClusterTlsError + '_ {
    move |e| ClusterTlsError::Setup(what.to_string(), e.to_string())
}

impl Loaded {
    fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<Loaded, ClusterTlsError> {
        let invalid = |what: &str| ClusterTlsError::Setup(what.to_string(), "no valid PEM".into());
        let mut roots = RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(ca) {
            roots.add(der.map_err(|_| invalid("CA certificate"))?).map_err(setup("CA certificate"))?;
        }
        if roots.is_empty() {
            return Err(invalid("CA certificate"));
        }
        let roots = Arc::new(roots);
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert).collect::<Result<_, _>>().map_err(|_| invalid("certificate"))?;
        if chain.is_empty() {
            return Err(invalid("certificate"));
        }
        let key_pem = key;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|_| invalid("private key"))?;
        let server = |auth: ClientAuth| -> Result<Arc<ServerConfig>, ClusterTlsError> {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider());
            let verifier = match auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier.build().map_err(|e| ClusterTlsError::Setup("CA".into(), e.to_string()))?;
            let mut config = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(setup("TLS versions"))?
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(setup("certificate and key"))?;
            config.alpn_protocols = vec![b"h2".to_vec()];
            Ok(Arc::new(config))
        };
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(setup("TLS versions"))?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(setup("certificate and key"))?;
        client.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Loaded {
            stamp: None,
            pem: [ca.to_vec(), cert.to_vec(), key_pem.to_vec()],
            server_required: server(ClientAuth::Required)?,
            server_optional: server(ClientAuth::Optional)?,
            client: Arc::new(client),
        })
    }

    fn from_files(files: &TlsFiles) -> Result<Loaded, ClusterTlsError> {
        // Stamped before reading: a change made while reading shows as a change next time.
        let stamp = stamp(files);
        let mut loaded = Loaded::from_pem(&read(&files.ca)?, &read(&files.cert)?, &read(&files.key)?)?;
        loaded.stamp = stamp;
        Ok(loaded)
    }
}

impl ClusterTls {
    /// Reads the files (and again whenever they change).
    pub fn load(files: &TlsFiles) -> Result<ClusterTls, ClusterTlsError> {
        ClusterTls::with(Some(files.clone()), Loaded::from_files(files)?)
    }

    /// From PEM bytes in memory, never reloaded.
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<ClusterTls, ClusterTlsError> {
        ClusterTls::with(None, Loaded::from_pem(ca, cert, key)?)
    }

    fn with(files: Option<TlsFiles>, loaded: Loaded) -> Result<ClusterTls, ClusterTlsError> {
        let inner = Inner { files, loaded: RwLock::new(Arc::new(loaded)), checked: Mutex::new((Instant::now(), None)) };
        Ok(ClusterTls { inner: Arc::new(inner) })
    }

    /// The current material, read again first if the files changed since.
    fn current(&self) -> Arc<Loaded> {
        if let Some(files) = &self.inner.files {
            self.reload_if_changed(files);
        }
        self.inner.loaded.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn reload_if_changed(&self, files: &TlsFiles) {
        let mut checked = self.inner.checked.lock().unwrap_or_else(|e| e.into_inner());
        if checked.0.elapsed() < RELOAD_CHECK {
            return;
        }
        checked.0 = Instant::now();
        let now = stamp(files);
        let loaded_stamp = self.inner.loaded.read().unwrap_or_else(|e| e.into_inner()).stamp.clone();
        if now.is_none() || now == loaded_stamp || now == checked.1 {
            return;
        }
        match Loaded::from_files(files) {
            Ok(loaded) => {
                tracing::info!(cert = %files.cert.display(), "cluster certificate changed on disk: new connections use it");
                *self.inner.loaded.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
                checked.1 = None;
            }
            Err(e) => {
                // Half-written files (a renewal in progress) look like this too: the old
                // certificate stays in use and the files are read again when they change.
                tracing::warn!(error = %e, "cluster certificate files changed but cannot be used; keeping the previous ones");
                checked.1 = now;
            }
        }
    }

    /// The server side for new connections.
    pub fn server_config(&self, clients: ClientAuth) -> Arc<ServerConfig> {
        let loaded = self.current();
        match clients {
            ClientAuth::Required => loaded.server_required.clone(),
            ClientAuth::Optional => loaded.server_optional.clone(),
        }
    }

    /// The client side for new connections.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.current().client.clone()
    }

    /// tonic's client TLS with this certificate, for clients tonic connects itself (etcd):
    /// fixed when made.
    pub fn tonic_client(&self) -> ClientTlsConfig {
        let [ca, cert, key] = &self.current().pem;
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).identity(TlsIdentity::from_pem(cert, key))
    }

    /// This role's certificate chain (PEM) as in use now.
    pub fn certificate_pem(&self) -> Vec<u8> {
        self.current().pem[1].clone()
    }
}
