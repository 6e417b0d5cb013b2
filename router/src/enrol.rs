//! The Enrolment service: certificates for nodes, from a router that holds the cluster's
//! issuing CA (`[issuer]`).
//!
//! `Join` takes an invitation's token instead of a certificate (the node has none yet) and
//! spends it in the directory, so it works once, through any router. `Renew` takes the
//! node's current certificate and gives a fresh one for the same identity and host names.
//! Either way the node sends only a signing request: its private key never leaves it, and
//! what the certificate says comes from the invitation or the old certificate, never from
//! the request.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{Issuer, KeyPair};
use sirms_proto::cluster::enrolment_server::{Enrolment, EnrolmentServer};
use sirms_proto::cluster::{Enrolled, JoinRequest, RenewRequest};
use sirms_proto::cluster_tls::invitation::Token;
use sirms_proto::cluster_tls::{self, Identity, Role, ca};
use tonic::{Request, Response, Status};

use crate::config::IssuerConfig;
use crate::directory::DirectoryError;
use crate::server::Router;

/// Largest signing request taken (a P-256 or RSA-4096 one is well under this).
const MAX_CSR: usize = 16 * 1024;

/// Why the issuer could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}")]
    Ca(#[from] ca::CaError),
}

/// The issuing CA: its key, and the chain a certificate it signs is presented with.
struct IssuingCa {
    issuer: Issuer<'static, KeyPair>,
    /// The issuer's certificate (PEM), appended to every certificate it signs.
    chain: String,
    /// The cluster CA's certificate (PEM), handed to joining nodes to trust.
    ca: String,
    lifetime: Duration,
}

/// The service; without an issuer it refuses every call with a reason.
#[derive(Clone)]
pub struct EnrolmentService {
    router: Arc<Router>,
    issuing: Option<Arc<IssuingCa>>,
}

fn read(path: &Path) -> Result<String, IssuerError> {
    std::fs::read_to_string(path).map_err(|e| IssuerError::Read(path.display().to_string(), e))
}

impl EnrolmentService {
    /// The service over `router`, issuing with `issuer` (if configured) under the CA in `ca`.
    pub fn new(
        router: Arc<Router>,
        issuer: Option<&IssuerConfig>,
        ca: Option<&Path>,
    ) -> Result<EnrolmentService, IssuerError> {
        let issuing = match (issuer, ca) {
            (Some(config), Some(ca_path)) => {
                let chain = read(&config.cert)?;
                let issuer = ca::issuer(&chain, &read(&config.key)?)?;
                let lifetime = Duration::from_secs(config.lifetime_secs.max(10));
                Some(Arc::new(IssuingCa { issuer, chain, ca: read(ca_path)?, lifetime }))
            }
            _ => None,
        };
        Ok(EnrolmentService { router, issuing })
    }

    /// The tonic service.
    pub fn into_server(self) -> EnrolmentServer<EnrolmentService> {
        EnrolmentServer::new(self)
    }

    fn issuing(&self) -> Result<&IssuingCa, Status> {
        self.issuing.as_deref().ok_or_else(|| {
            Status::failed_precondition(
                "this router issues no certificates: it needs [cluster_tls] and [issuer] (docs/CONTROL-PLANE.md)",
            )
        })
    }

    /// A certificate for `identity` at `hosts`, for the key in `csr`.
    fn issue(&self, csr: &str, identity: &Identity, hosts: &[String]) -> Result<Response<Enrolled>, Status> {
        let issuing = self.issuing()?;
        if csr.len() > MAX_CSR {
            return Err(Status::invalid_argument("signing request too large"));
        }
        let cert = ca::sign_request(csr, identity, hosts, issuing.lifetime, &issuing.issuer)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::info!(%identity, ?hosts, "issued a certificate");
        Ok(Response::new(Enrolled { certificate_pem: format!("{cert}{}", issuing.chain), ca_pem: issuing.ca.clone() }))
    }
}

#[tonic::async_trait]
impl Enrolment for EnrolmentService {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<Enrolled>, Status> {
        self.issuing()?;
        let request = request.into_inner();
        let refused = || Status::permission_denied("unknown, used or expired invitation");
        let token = Token::parse(&request.token).ok_or_else(refused)?;
        let invite = match self.router.directory().take_invite(&token.hash()).await {
            Ok(invite) => invite,
            Err(DirectoryError::NotFound(_)) => return Err(refused()),
            Err(e) => return Err(e.into()),
        };
        let role = Role::from_name(&invite.role).ok_or_else(refused)?;
        let identity = Identity { role, name: invite.node };
        self.issue(&request.csr_pem, &identity, &invite.hosts)
    }

    async fn renew(&self, request: Request<RenewRequest>) -> Result<Response<Enrolled>, Status> {
        let identity = cluster_tls::authorize(&request, &[Role::Node, Role::Storage])?
            .ok_or_else(|| Status::unauthenticated("renewal needs the node's current certificate (mutual TLS)"))?;
        let hosts = cluster_tls::peer_certificate(&request).map(|der| ca::hosts(&der)).unwrap_or_default();
        self.issue(&request.into_inner().csr_pem, &identity, &hosts)
    }
}
