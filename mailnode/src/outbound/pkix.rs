//! Checked TLS for outbound connections: the certificate must chain to a trusted root (the
//! system's, plus an optional extra CA file for private or test CAs) and be valid for the
//! name connected to. MTA-STS uses it for the policy fetch and, under `enforce`, for every MX
//! session; under `testing` the same check runs but only records its verdict.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::TlsConnector;

/// The trust store could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PkixError {
    #[error("[outbound] extra_ca_file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("TLS verifier: {0}")]
    Verifier(String),
}

/// What a `testing` session's certificate check concluded: `None` while no handshake
/// happened (no TLS at all), then `Ok` or the reason it failed.
pub type Verdict = Arc<Mutex<Option<Result<(), String>>>>;

/// The trusted roots and a connector that checks against them.
#[derive(Clone)]
pub struct Pkix {
    verifier: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
    connector: TlsConnector,
}

impl Pkix {
    /// The system's roots, plus every certificate in the PEM file `extra_ca` if given.
    pub fn load(extra_ca: Option<&Path>) -> Result<Pkix, PkixError> {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        if let Some(path) = extra_ca {
            let bad = |reason: String| PkixError::CaFile { path: path.display().to_string(), reason };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no certificate in it".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| bad(e.to_string()))?;
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| PkixError::Verifier(e.to_string()))?;
        let connector = connector_with(provider.clone(), verifier.clone());
        Ok(Pkix { verifier, provider, connector })
    }

    /// A connector whose handshake fails unless the certificate checks out.
    pub fn connector(&self) -> &TlsConnector {
        &self.connector
    }

    /// A connector (for one session) that checks the certificate, records a failure in the
    /// returned verdict, and goes on anyway: MTA-STS `testing` mode.
    pub fn recording(&self) -> (TlsConnector, Verdict) {
        let verdict = Verdict::default();
        let verifier = Arc::new(Recording { inner: self.verifier.clone(), verdict: verdict.clone() });
        (connector_with(self.provider.clone(), verifier), verdict)
    }
}

/// A TLS client that checks certificates with `verifier` (and handshake signatures with
/// `provider`), without a client certificate.
pub(crate) fn connector_with(provider: Arc<CryptoProvider>, verifier: Arc<dyn ServerCertVerifier>) -> TlsConnector {
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth())
        .expect("the default provider supports the default protocol versions");
    TlsConnector::from(Arc::new(config))
}

/// Runs the real check, keeps its verdict, and accepts the certificate whatever it says; the
/// handshake signatures are still checked.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    verdict: Verdict,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let checked = self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        *self.verdict.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(checked.map(|_| ()).map_err(|e| e.to_string()));
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
