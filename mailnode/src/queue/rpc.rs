//! What the queue's gRPC services (NodeAdmin, SpoolCopies) share: who may call them, and how a
//! spool's I/O errors reach the wire.

use sirms_proto::cluster_tls::{self, Role};
use tonic::{Request, Status};

/// Lets `request` through if it comes from one of `roles` (over mutual TLS) and presents the
/// cluster `token`.
pub fn authorize<T>(request: &Request<T>, roles: &[Role], token: &str) -> Result<(), Status> {
    cluster_tls::authorize(request, roles)?;
    if sirms_proto::token::presented(request, token) {
        Ok(())
    } else {
        Err(Status::unauthenticated("missing or wrong cluster token"))
    }
}

/// The reply for a spool error; `missing` says what was not found, `what` names the spool.
pub fn status(e: std::io::Error, missing: &str, what: &str) -> Status {
    match e.kind() {
        std::io::ErrorKind::NotFound => Status::not_found(missing.to_string()),
        std::io::ErrorKind::InvalidInput => Status::invalid_argument(e.to_string()),
        std::io::ErrorKind::ResourceBusy => Status::unavailable(e.to_string()),
        _ => Status::internal(format!("{what}: {e}")),
    }
}
