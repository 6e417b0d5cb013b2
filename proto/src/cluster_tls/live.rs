//! The CA and certificate of one role, read from their files and read again when the files
//! change: a renewed certificate is used by the next connection, with no restart.
//!
//! Connections already open keep the certificate they were made with (TLS checks it once, at
//! the handshake); only new ones pick up the renewed one, which is all renewal needs as long
//! as it happens before the old certificate expires.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tonic::transport::{Certificate, ClientTlsConfig, Identity as TlsIdentity};

use super::{ClusterTlsError, TlsFiles};
use crate::watched::Watched;

/// Whether a server asks every client for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every client must present a certificate of the cluster CA.
    Required,
    /// A client may connect without one (a node joining with an invitation, which has no
    /// certificate yet); every call that needs one checks for it ([`super::authorize`]).
    Optional,
}

/// What the files held when last read, as rustls and tonic take it.
struct Loaded {
    pem: [Vec<u8>; 3],
    server_required: Arc<ServerConfig>,
    server_optional: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

/// The loaded CA and certificate of one role; cheap to clone (clones share the reloads).
#[derive(Clone)]
pub struct ClusterTls {
    loaded: Arc<Watched<Arc<Loaded>>>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, ClusterTlsError> {
    std::fs::read(path).map_err(|source| ClusterTlsError::Read { path: path.to_path_buf(), source })
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
            pem: [ca.to_vec(), cert.to_vec(), key_pem.to_vec()],
            server_required: server(ClientAuth::Required)?,
            server_optional: server(ClientAuth::Optional)?,
            client: Arc::new(client),
        })
    }

    fn from_files(files: &TlsFiles) -> Result<Loaded, ClusterTlsError> {
        Loaded::from_pem(&read(&files.ca)?, &read(&files.cert)?, &read(&files.key)?)
    }
}

impl ClusterTls {
    /// Reads the files (and again whenever they change).
    pub fn load(files: &TlsFiles) -> Result<ClusterTls, ClusterTlsError> {
        // The first load's errors are the caller's; later ones are logged by `Watched`.
        let first = Arc::new(Loaded::from_files(files)?);
        let paths = vec![files.ca.clone(), files.cert.clone(), files.key.clone()];
        let files = files.clone();
        let load = move || Loaded::from_files(&files).map(Arc::new).map_err(|e| e.to_string());
        Ok(ClusterTls { loaded: Arc::new(Watched::new("cluster certificate", paths, first, load)) })
    }

    /// From PEM bytes in memory, never reloaded.
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<ClusterTls, ClusterTlsError> {
        let loaded = Arc::new(Loaded::from_pem(ca, cert, key)?);
        Ok(ClusterTls { loaded: Arc::new(Watched::fixed("cluster certificate", loaded)) })
    }

    /// The current material, read again first if the files changed since.
    fn current(&self) -> Arc<Loaded> {
        self.loaded.current()
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
