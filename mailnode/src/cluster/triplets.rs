//! Asking the routers about greylisting triplets (`Greylist` on the Directory service), where
//! the directory's store keeps them for the whole cluster. Asked once per recipient, so unlike
//! the occasional directory calls it keeps one lazily connected channel per router; the router
//! that answered last is asked first, the others in turn, all within one deadline.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sirms_proto::cluster::directory_client::DirectoryClient;
use sirms_proto::cluster::{GreylistAnswer, GreylistQuery};
use sirms_proto::cluster_tls::Credentials;
use sirms_proto::token::TokenInterceptor;
use tonic::transport::Channel;

/// Why no router gave an answer.
#[derive(Debug, thiserror::Error)]
pub enum TripletsError {
    #[error("no router answered: {0}")]
    Unreachable(String),
    #[error("the cluster token cannot be sent as gRPC metadata")]
    Token,
}

/// The routers greylisting asks.
pub struct Triplets {
    routers: Vec<(String, Channel)>,
    token: TokenInterceptor,
    /// The router that answered last.
    preferred: AtomicUsize,
}

impl Triplets {
    /// Through `routers` (their Directory API URLs), with `credentials`.
    pub fn new(routers: &[String], credentials: &Credentials) -> Result<Triplets, TripletsError> {
        let token = TokenInterceptor::new(&credentials.token).ok_or(TripletsError::Token)?;
        let mut channels = Vec::new();
        for url in routers {
            match credentials.endpoint(url) {
                Ok(endpoint) => channels.push((url.clone(), endpoint.connect_lazy())),
                // The membership loop reports a bad router URL; it is never asked here.
                Err(e) => tracing::warn!(router = %url, error = %e, "greylisting will not ask this router"),
            }
        }
        Ok(Triplets { routers: channels, token, preferred: AtomicUsize::new(0) })
    }

    /// The routers' answer for `query`, within `within` in all: each router gets an equal
    /// share, so that one that hangs does not eat the time of the next.
    pub async fn ask(&self, query: &GreylistQuery, within: Duration) -> Result<GreylistAnswer, TripletsError> {
        let n = self.routers.len();
        if n == 0 {
            return Err(TripletsError::Unreachable("no router configured".into()));
        }
        let share = within / n as u32;
        let first = self.preferred.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for i in 0..n {
            let index = (first + i) % n;
            let (url, channel) = &self.routers[index];
            let mut client = DirectoryClient::with_interceptor(channel.clone(), self.token.clone());
            match tokio::time::timeout(share, client.greylist(query.clone())).await {
                Ok(Ok(answer)) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(answer.into_inner());
                }
                Ok(Err(status)) => failures.push(format!("{url}: {}", status.message())),
                Err(_) => failures.push(format!("{url}: no answer in {share:?}")),
            }
        }
        Err(TripletsError::Unreachable(failures.join("; ")))
    }
}
