//! Mutual TLS on the cluster plane: every internal gRPC connection authenticated both ways
//! by certificates of one cluster CA, and each certificate naming who holds it.
//!
//! A certificate's identity is a URI subject alternative name `sirms://ROLE/NAME`: `admin`
//! (what `sirms ctl` presents), `router/NAME`, `node/NAME` or `storage/NAME`, NAME being the
//! node id. `sirms ctl ca` makes the CA and the certificates. Servers check the role a call
//! needs and, where a call acts for a node, that the node is the certificate's.

pub mod ca;
pub mod enrol;
pub mod invitation;
mod live;
mod transport;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

pub use live::{ClientAuth, ClusterTls};
use transport::Connector;

/// The URI scheme of identities in certificates.
pub const IDENTITY_SCHEME: &str = "sirms://";

/// What a certificate may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The administrator: `sirms ctl`. No node holds it.
    Admin,
    Router,
    Node,
    Storage,
    /// A member of the control plane's etcd: a server certificate only, which no SIRMS
    /// service accepts as a caller.
    Etcd,
}

impl Role {
    /// The name in identities.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Router => "router",
            Role::Node => "node",
            Role::Storage => "storage",
            Role::Etcd => "etcd",
        }
    }

    /// The role of a name.
    pub fn from_name(name: &str) -> Option<Role> {
        [Role::Admin, Role::Router, Role::Node, Role::Storage, Role::Etcd].into_iter().find(|r| r.name() == name)
    }
}

/// Who a certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub role: Role,
    /// The node id (routers, nodes, storage nodes); `admin` for the administrator.
    pub name: String,
}

impl Identity {
    /// The URI put in certificates: `sirms://node/node1`.
    pub fn uri(&self) -> String {
        format!("{IDENTITY_SCHEME}{}/{}", self.role.name(), self.name)
    }

    /// Parses `sirms://ROLE/NAME`.
    pub fn from_uri(uri: &str) -> Option<Identity> {
        let (role, name) = uri.strip_prefix(IDENTITY_SCHEME)?.split_once('/')?;
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !valid {
            return None;
        }
        Some(Identity { role: Role::from_name(role)?, name: name.to_string() })
    }

    /// The identity in a DER certificate, if it has exactly one.
    pub fn from_certificate(der: &[u8]) -> Option<Identity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let names = cert.subject_alternative_name().ok()??;
        let mut found = names.value.general_names.iter().filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(uri) => Identity::from_uri(uri),
            _ => None,
        });
        let identity = found.next()?;
        found.next().is_none().then_some(identity)
    }

    /// The identity in the first certificate of a PEM chain.
    pub fn from_pem(pem: &[u8]) -> Option<Identity> {
        use rustls::pki_types::pem::PemObject;
        let der = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
        Identity::from_certificate(der.as_ref())
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.role.name(), self.name)
    }
}

/// Why the cluster TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterTlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid endpoint {0:?}")]
    Endpoint(String),
    #[error("TLS setup for {0}: {1}")]
    Setup(String, String),
}

/// Where the cluster CA and this role's certificate are (`[cluster_tls]` and the like).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The cluster CA's certificate (PEM): peers must present a certificate it signed.
    pub ca: PathBuf,
    /// This role's certificate (PEM), from `sirms ctl ca issue` or `sirms join`; read again
    /// when it changes.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

impl ClusterTls {
    /// The connections `listener` accepts, over TLS with this certificate.
    pub fn incoming(
        &self,
        clients: ClientAuth,
        listener: tokio::net::TcpListener,
    ) -> impl tokio_stream::Stream<Item = std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>>
    + Send
    + 'static {
        transport::incoming(self.clone(), clients, listener)
    }
}

/// Serves `routes` on `listener` until `shutdown`: over TLS with `tls` when there is one,
/// plaintext otherwise; with TCP_NODELAY either way (small replies would otherwise wait on
/// delayed ACKs, and tonic does not set it on a listener it did not bind).
pub async fn serve(
    routes: tonic::transport::server::Router,
    tls: Option<&ClusterTls>,
    clients: ClientAuth,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    match tls {
        Some(tls) => routes.serve_with_incoming_shutdown(tls.incoming(clients, listener), shutdown).await,
        None => {
            let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            routes.serve_with_incoming_shutdown(incoming, shutdown).await
        }
    }
}

/// Where a cluster client connects: an endpoint to configure, and the TLS it connects with.
pub struct ClusterEndpoint {
    endpoint: Endpoint,
    tls: Option<ClusterTls>,
}

impl ClusterEndpoint {
    /// Sets endpoint options (timeouts, keepalives).
    pub fn configure(self, options: impl FnOnce(Endpoint) -> Endpoint) -> ClusterEndpoint {
        ClusterEndpoint { endpoint: options(self.endpoint), tls: self.tls }
    }

    /// Connects now.
    pub async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        match &self.tls {
            Some(tls) => self.endpoint.connect_with_connector(Connector { tls: tls.clone() }).await,
            None => self.endpoint.connect().await,
        }
    }

    /// A channel that connects on first use (and again after losing its connection).
    pub fn connect_lazy(&self) -> Channel {
        match &self.tls {
            Some(tls) => self.endpoint.connect_with_connector_lazy(Connector { tls: tls.clone() }),
            None => self.endpoint.connect_lazy(),
        }
    }
}

/// An endpoint for `url`: over TLS with `tls` when there is one (`https://` and `http://`
/// URLs alike), plaintext otherwise.
pub fn endpoint(url: &str, tls: Option<&ClusterTls>) -> Result<ClusterEndpoint, ClusterTlsError> {
    // The TLS is ours ([`transport`]): tonic must see a plain URL or it would want its own.
    let url = match (tls, url.strip_prefix("https://")) {
        (Some(_), Some(rest)) => format!("http://{rest}"),
        _ => url.to_string(),
    };
    let endpoint = Endpoint::from_shared(url.clone()).map_err(|_| ClusterTlsError::Endpoint(url))?;
    Ok(ClusterEndpoint { endpoint, tls: tls.cloned() })
}

/// How a role proves itself on the cluster plane: the cluster token on every call, and its
/// certificate when mutual TLS is on.
#[derive(Clone)]
pub struct Credentials {
    pub token: String,
    pub tls: Option<ClusterTls>,
}

impl Credentials {
    /// The token alone (plaintext gRPC).
    pub fn token(token: impl Into<String>) -> Credentials {
        Credentials { token: token.into(), tls: None }
    }

    /// An endpoint for `url` with these credentials' TLS, if any.
    pub fn endpoint(&self, url: &str) -> Result<ClusterEndpoint, ClusterTlsError> {
        endpoint(url, self.tls.as_ref())
    }
}

/// The certificates the peer of `request` presented: `None` over plaintext, `Some(None)` over
/// TLS without a client certificate.
fn presented<T>(request: &Request<T>) -> Option<Option<Arc<Vec<CertificateDer<'static>>>>> {
    let info = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>()?;
    Some(info.peer_certs())
}

/// The certificate (DER) the peer of `request` presented, if any.
pub fn peer_certificate<T>(request: &Request<T>) -> Option<Vec<u8>> {
    Some(presented(request)??.first()?.as_ref().to_vec())
}

/// The identity of the peer that made `request`, if it came over mutual TLS.
///
/// A certificate that needs an intermediate CA to verify was issued by a router for a node
/// that joined with an invitation ([`ca`]): it speaks for a node or storage node only, so a
/// router's issuing key cannot mint an administrator or another router.
pub fn peer<T>(request: &Request<T>) -> Option<Identity> {
    let certs = presented(request)??;
    let identity = Identity::from_certificate(certs.first()?.as_ref())?;
    let joined = certs.len() > 1;
    (!joined || matches!(identity.role, Role::Node | Role::Storage)).then_some(identity)
}

/// Lets `request` through if it came from one of `roles`, or over plaintext (where the
/// cluster token alone decides). Returns the peer's identity when there is one.
pub fn authorize<T>(request: &Request<T>, roles: &[Role]) -> Result<Option<Identity>, Status> {
    match presented(request) {
        None => return Ok(None),
        Some(None) => return Err(Status::unauthenticated("this call needs a certificate of the cluster CA")),
        Some(Some(_)) => {}
    }
    match peer(request) {
        Some(identity) if roles.contains(&identity.role) => Ok(Some(identity)),
        Some(identity) => Err(Status::permission_denied(format!("a certificate of {identity} may not make this call"))),
        None => Err(Status::permission_denied("the client certificate names no SIRMS identity it may hold")),
    }
}

/// Lets a call that acts for node `id` through only from that node (or over plaintext).
pub fn acting_as<T>(request: &Request<T>, id: &str) -> Result<(), Status> {
    match authorize(request, &[Role::Node, Role::Storage])? {
        Some(identity) if identity.name != id => {
            Err(Status::permission_denied(format!("a certificate of {identity} may not act as node {id}")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip() {
        let id = Identity { role: Role::Node, name: "node1".into() };
        assert_eq!(id.uri(), "sirms://node/node1");
        assert_eq!(Identity::from_uri(&id.uri()), Some(id));
        assert_eq!(Identity::from_uri("sirms://admin/admin").map(|i| i.role), Some(Role::Admin));
        for bad in ["sirms://node/", "sirms://king/x", "http://node/node1", "sirms://node/a b", "sirms://node"] {
            assert_eq!(Identity::from_uri(bad), None, "{bad}");
        }
    }
}
