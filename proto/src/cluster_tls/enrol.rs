//! The node's side of enrolment: joining with an invitation (`sirms join`), and renewing its
//! certificate at a router before it expires, which the running node does by itself.
//!
//! New files replace old ones atomically (written aside, fsynced, renamed): the key first,
//! then the certificate. [`super::ClusterTls`] notices the change and uses the new pair for
//! new connections; if it looks between the two renames, the pair does not match, it keeps
//! the old one and looks again.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use super::invitation::Token;
use super::{ClusterTls, Credentials, Identity, Role, TlsFiles, ca};
use crate::cluster::enrolment_client::EnrolmentClient;
use crate::cluster::{Enrolled, JoinRequest, RenewRequest};

/// How long a router has to answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the renewal task looks at the certificate, at most (and at least every minute
/// for certificates that live minutes).
const CHECK_EVERY: Duration = Duration::from_secs(3600);

/// Why joining or renewing failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    #[error("not an invitation token (sirms1:NODE:SECRET)")]
    Token,
    #[error("{0}")]
    Ca(#[from] ca::CaError),
    #[error("router {0}: {1}")]
    Router(String, String),
    #[error("cannot write {0}: {1}")]
    Write(String, std::io::Error),
    #[error("{0}")]
    Tls(#[from] super::ClusterTlsError),
}

fn router_error(router: &str) -> impl FnOnce(tonic::Status) -> EnrolError + '_ {
    move |status| EnrolError::Router(router.to_string(), status.message().to_string())
}

/// Writes `contents` to `path` atomically and durably, private to its owner if `private`.
fn replace(path: &Path, contents: &[u8], private: bool) -> Result<(), EnrolError> {
    let failed = |e: std::io::Error| EnrolError::Write(path.display().to_string(), e);
    let aside = path.with_extension("new");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    let mut file = options.open(&aside).map_err(failed)?;
    file.write_all(contents).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    std::fs::rename(&aside, path).map_err(failed)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(failed)?;
    }
    Ok(())
}

/// Stores what a router issued: the key, then the certificate, and the CA when asked.
fn store(files: &TlsFiles, key_pem: &str, enrolled: &Enrolled, with_ca: bool) -> Result<(), EnrolError> {
    if with_ca {
        replace(&files.ca, enrolled.ca_pem.as_bytes(), false)?;
    }
    replace(&files.key, key_pem.as_bytes(), true)?;
    replace(&files.cert, enrolled.certificate_pem.as_bytes(), false)
}

fn https(router: &str) -> String {
    let rest = router.strip_prefix("http://").or_else(|| router.strip_prefix("https://")).unwrap_or(router);
    format!("https://{rest}")
}

/// Joins with invitation `token` through `router` (host:port of its admin API), trusting the
/// cluster CA in `ca_pem`; writes the certificate and key where `files` says. Returns the
/// identity the certificate names.
pub async fn join(router: &str, ca_pem: &[u8], token: &str, files: &TlsFiles) -> Result<Identity, EnrolError> {
    let token = Token::parse(token).ok_or(EnrolError::Token)?;
    let (csr, key) = ca::request(&Identity { role: Role::Node, name: token.node.clone() })?;
    let url = https(router);
    let unreachable = |e: tonic::transport::Error| EnrolError::Router(router.to_string(), e.to_string());
    // No client certificate yet: the token is the credential, the CA check keeps it from
    // being handed to anything but a router of this cluster.
    let channel = Endpoint::from_shared(url.clone())
        .map_err(|_| EnrolError::Router(router.to_string(), "invalid address".into()))?
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)))
        .map_err(unreachable)?
        .timeout(CALL_TIMEOUT)
        .connect()
        .await
        .map_err(unreachable)?;
    let request = JoinRequest { token: token.to_string(), csr_pem: csr };
    let enrolled = EnrolmentClient::new(channel).join(request).await.map_err(router_error(router))?.into_inner();
    store(files, &key, &enrolled, true)?;
    let identity = Identity::from_pem(enrolled.certificate_pem.as_bytes())
        .ok_or_else(|| EnrolError::Router(router.to_string(), "issued a certificate naming no identity".into()))?;
    Ok(identity)
}

/// Renews the certificate in `files` at `router` with `credentials` (whose TLS is that
/// certificate): a new key, a new certificate for the same identity.
pub async fn renew(router: &str, credentials: &Credentials, files: &TlsFiles) -> Result<(), EnrolError> {
    let tls = credentials.tls.as_ref().ok_or_else(|| EnrolError::Router(router.into(), "no cluster TLS".into()))?;
    let identity = Identity::from_pem(&tls.certificate_pem())
        .ok_or_else(|| EnrolError::Router(router.into(), "the certificate names no identity".into()))?;
    let (csr, key) = ca::request(&identity)?;
    let channel = (credentials.endpoint(router)?.configure(|e| e.timeout(CALL_TIMEOUT)).connect().await)
        .map_err(|e| EnrolError::Router(router.to_string(), e.to_string()))?;
    let enrolled =
        EnrolmentClient::new(channel).renew(RenewRequest { csr_pem: csr }).await.map_err(router_error(router))?;
    store(files, &key, &enrolled.into_inner(), false)
}

/// When the certificate in use should be renewed: once a third of its lifetime is left.
fn renew_at(tls: &ClusterTls) -> Option<SystemTime> {
    let (expires, lifetime) = ca::validity(&tls.certificate_pem())?;
    Some(expires - lifetime / 3)
}

/// Keeps the certificate in `files` renewed at any of `routers` for as long as it runs.
pub async fn keep_renewed(routers: Vec<String>, credentials: Credentials, files: TlsFiles) {
    let Some(tls) = credentials.tls.clone() else { return };
    let mut next_router = 0;
    loop {
        let Some(at) = renew_at(&tls) else {
            tracing::warn!(cert = %files.cert.display(), "cannot read the cluster certificate's validity; not renewing it");
            return;
        };
        let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
        if !wait.is_zero() {
            let lifetime = ca::validity(&tls.certificate_pem()).map_or(CHECK_EVERY, |(_, l)| l);
            tokio::time::sleep(wait.min(CHECK_EVERY).min(lifetime / 6).max(Duration::from_secs(1))).await;
            continue;
        }
        let Some(router) = routers.get(next_router % routers.len().max(1)) else { return };
        next_router += 1;
        match renew(router, &credentials, &files).await {
            Ok(()) => {
                tracing::info!(%router, cert = %files.cert.display(), "cluster certificate renewed");
                // Until the reload sees the new files, the old validity would say "now" again.
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(e) => {
                tracing::warn!(%router, error = %e, "cannot renew the cluster certificate; trying again");
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }
    }
}
