//! Mutual TLS on the cluster plane: every internal gRPC connection authenticated both ways
//! by certificates of one cluster CA, and each certificate naming who holds it.
//!
//! A certificate's identity is a URI subject alternative name `sirms://ROLE/NAME`: `admin`
//! (what `sirms ctl` presents), `router/NAME`, `node/NAME` or `storage/NAME`, NAME being the
//! node id. `sirms ctl ca` makes the CA and the certificates. Servers check the role a call
//! needs and, where a call acts for a node, that the node is the certificate's.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity as TlsIdentity, ServerTlsConfig};
use tonic::{Request, Status};

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
    /// This role's certificate (PEM), from `sirms ctl ca issue`.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

/// The loaded CA and certificate of one role.
#[derive(Clone)]
pub struct ClusterTls {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

fn read(path: &PathBuf) -> Result<Vec<u8>, ClusterTlsError> {
    std::fs::read(path).map_err(|source| ClusterTlsError::Read { path: path.clone(), source })
}

impl ClusterTls {
    /// Reads the files.
    pub fn load(files: &TlsFiles) -> Result<ClusterTls, ClusterTlsError> {
        Ok(ClusterTls { ca: read(&files.ca)?, cert: read(&files.cert)?, key: read(&files.key)? })
    }

    /// From PEM bytes in memory.
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> ClusterTls {
        ClusterTls { ca: ca.to_vec(), cert: cert.to_vec(), key: key.to_vec() }
    }

    /// A server that presents this certificate and accepts only clients with one of the CA.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(TlsIdentity::from_pem(&self.cert, &self.key))
            .client_ca_root(Certificate::from_pem(&self.ca))
    }

    /// A client that presents this certificate and accepts only servers with one of the CA.
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(TlsIdentity::from_pem(&self.cert, &self.key))
    }
}

/// An endpoint for `url`: over TLS with `tls` when there is one (an `http://` URL is then
/// taken as `https://`), plaintext otherwise.
pub fn endpoint(url: &str, tls: Option<&ClusterTls>) -> Result<Endpoint, ClusterTlsError> {
    let url = match (tls, url.strip_prefix("http://")) {
        (Some(_), Some(rest)) => format!("https://{rest}"),
        _ => url.to_string(),
    };
    let endpoint = Endpoint::from_shared(url.clone()).map_err(|_| ClusterTlsError::Endpoint(url.clone()))?;
    match tls {
        Some(tls) => endpoint.tls_config(tls.client()).map_err(|e| ClusterTlsError::Setup(url, e.to_string())),
        None => Ok(endpoint),
    }
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
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, ClusterTlsError> {
        endpoint(url, self.tls.as_ref())
    }
}

/// The identity of the peer that made `request`, if it came over mutual TLS.
pub fn peer<T>(request: &Request<T>) -> Option<Identity> {
    let certs = request.peer_certs()?;
    Identity::from_certificate(certs.first()?.as_ref())
}

/// Lets `request` through if it came from one of `roles`, or over plaintext (where the
/// cluster token alone decides). Returns the peer's identity when there is one.
pub fn authorize<T>(request: &Request<T>, roles: &[Role]) -> Result<Option<Identity>, Status> {
    if request.peer_certs().is_none() {
        return Ok(None);
    }
    match peer(request) {
        Some(identity) if roles.contains(&identity.role) => Ok(Some(identity)),
        Some(identity) => Err(Status::permission_denied(format!("a certificate of {identity} may not make this call"))),
        None => Err(Status::permission_denied("the client certificate names no SIRMS identity")),
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
