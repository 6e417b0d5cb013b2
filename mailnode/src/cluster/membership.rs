//! Joining the cluster: register with a router, take its directory snapshot, then follow
//! its changes. With several routers the node follows through whichever answers and moves on
//! to the next when it goes away. The last snapshot is kept on disk (fsynced, owner-only: it
//! holds password hashes and DKIM keys), so a node restarted while no router answers still
//! knows its users.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use sirms_proto::cluster::directory_client::DirectoryClient;

use sirms_proto::cluster::{DirectorySnapshot, Node, NodeLoad, WatchRequest};
use sirms_proto::cluster_tls::Credentials;
use sirms_proto::token::TokenInterceptor;
use tokio::sync::watch;

use sirms_storage::durable::write_atomic;

use super::home_store::Endpoints;
use crate::directory::{Directory, DirectoryData, LiveDirectory};
use crate::metrics::{NodeMetrics, Protocol};

/// Longest wait between rounds of attempts to reach the routers. Below the lease (3 s): while
/// etcd has no quorum every registration fails, and when quorum returns the leases run again
/// from then on; a node still pausing past that would see its lease lapse and its sources move
/// for a moment (`docker/test-ha.sh` caught one source served elsewhere that way).
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The load now, as a heartbeat.
async fn sample(metrics: &Arc<NodeMetrics>, node_id: &str, directory_version: u64) -> NodeLoad {
    let m = metrics.clone();
    let queue_length = tokio::task::spawn_blocking(move || m.queue_length()).await.unwrap_or(0);
    let sessions = |p| metrics.sessions(p).get().max(0) as u64;
    NodeLoad {
        node_id: node_id.to_string(),
        smtp_sessions: sessions(Protocol::Smtp),
        imap_sessions: sessions(Protocol::Imap),
        pop3_sessions: sessions(Protocol::Pop3),
        queue_length,
        messages_received: metrics.messages_received.get(),
        delivered: metrics.local_delivered.get() + metrics.outbound_delivered.get(),
        deferred: metrics.local_deferred.get() + metrics.outbound_deferred.get(),
        bounced: metrics.bounced.get(),
        auth_failures: metrics.auth_denied.get() + metrics.auth_throttled.get(),
        directory_version,
        tls_expires_unix: metrics.tls_first_expiry(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        certificates: (metrics.tls_expiries().into_iter())
            .map(|(name, expires_unix)| sirms_proto::cluster::CertificateExpiry { name, expires_unix })
            .collect(),
    }
}

/// How long a router has to answer a registration or a heartbeat before the node moves on to
/// the next: well within the lease the heartbeats renew.
const CALL_TIMEOUT: Duration = Duration::from_millis(1500);

/// How often a node tells the router its load. With the directory in etcd each heartbeat also
/// renews the node's lease (3 s), so a node that stops is out of routing within 3 s.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// A node's membership in the cluster.
pub struct Membership {
    /// How this node announces itself.
    pub node: Node,
    /// The routers' Directory APIs, tried in turn.
    pub routers: Vec<String>,
    pub credentials: Credentials,
    pub directory: Arc<LiveDirectory>,
    pub endpoints: Endpoints,
    /// Where the last snapshot is cached.
    pub cache: PathBuf,
    /// What the heartbeats report.
    pub metrics: Arc<NodeMetrics>,
}

impl Membership {
    /// Installs a snapshot: directory, store endpoints, and the on-disk cache.
    pub fn apply(&self, snapshot: &DirectorySnapshot) {
        self.directory.replace(DirectoryData::from_snapshot(snapshot));
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        endpoints.clear();
        for n in snapshot.nodes.iter().filter(|n| !n.store_endpoint.is_empty()) {
            endpoints.insert(n.id.clone(), n.store_endpoint.clone());
        }
        drop(endpoints);
        if let Err(e) = write_atomic(&self.cache, &snapshot.encode_to_vec(), "directory-cache") {
            tracing::warn!(path = %self.cache.display(), error = %e, "cannot cache the directory");
        }
        tracing::info!(version = snapshot.version, users = snapshot.users.len(), "directory updated");
    }

    /// Installs the cached snapshot, if there is one; true if it did.
    pub fn load_cache(&self) -> bool {
        let bytes = match std::fs::read(&self.cache) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
            Err(e) => {
                tracing::warn!(path = %self.cache.display(), error = %e, "cannot read the cached directory");
                return false;
            }
        };
        match cached_snapshot(&bytes) {
            Some(snapshot) => {
                self.apply(&snapshot);
                true
            }
            None => {
                tracing::warn!(path = %self.cache.display(), bytes = bytes.len(),
                    "the cached directory is empty or damaged: waiting for a router instead");
                false
            }
        }
    }

    /// One connection to `router`: register, then follow changes until the stream ends.
    /// `registered` turns true once the router took the registration.
    async fn session(&self, router: &str, version: &mut u64, registered: &mut bool) -> Result<(), String> {
        let channel = self
            .credentials
            .endpoint(router)
            .map_err(|e| e.to_string())?
            .configure(|e| e.connect_timeout(Duration::from_secs(5)))
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let token = TokenInterceptor::new(&self.credentials.token).ok_or("invalid cluster token")?;
        let mut client = DirectoryClient::with_interceptor(channel, token);
        let snapshot = tokio::time::timeout(CALL_TIMEOUT, client.register(self.node.clone()))
            .await
            .map_err(|_| format!("no answer to the registration in {CALL_TIMEOUT:?}"))?
            .map_err(|e| e.message().to_string())?
            .into_inner();
        *registered = true;
        tracing::info!(%router, version = snapshot.version, "registered with the router");
        if snapshot.version != *version || !self.directory.available() {
            *version = snapshot.version;
            self.apply(&snapshot);
        }
        let request = WatchRequest { node_id: self.node.id.clone(), version: *version };
        let mut changes = tokio::time::timeout(CALL_TIMEOUT, client.watch(request))
            .await
            .map_err(|_| format!("no answer to the watch in {CALL_TIMEOUT:?}"))?
            .map_err(|e| e.message().to_string())?
            .into_inner();
        let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
        loop {
            tokio::select! {
                next = changes.next() => {
                    let Some(next) = next else { break };
                    let snapshot = next.map_err(|e| e.message().to_string())?;
                    if snapshot.version > *version {
                        *version = snapshot.version;
                        self.apply(&snapshot);
                    }
                }
                _ = heartbeat.tick() => {
                    let load = sample(&self.metrics, &self.node.id, *version).await;
                    // A router that stopped answering (frozen, wedged) must not hold the node:
                    // its lease would lapse while the node waited.
                    tokio::time::timeout(CALL_TIMEOUT, client.heartbeat(load))
                        .await
                        .map_err(|_| format!("no answer to a heartbeat in {CALL_TIMEOUT:?}"))?
                        .map_err(|e| e.message().to_string())?;
                }
            }
        }
        Err("the router closed the directory stream".into())
    }

    /// Stays registered with a router until `shutdown` turns true: on to the next router at
    /// once when one fails, with a growing pause only after a whole round failed.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut version = 0;
        let mut backoff = Duration::from_millis(500);
        let mut failed_in_a_row = 0;
        for router in self.routers.iter().cycle() {
            let mut registered = false;
            tokio::select! {
                result = self.session(router, &mut version, &mut registered) => {
                    if let Err(e) = result {
                        tracing::warn!(%router, error = %e, "router unreachable; serving from the last directory");
                    }
                }
                _ = shutdown.changed() => return,
            }
            if registered {
                backoff = Duration::from_millis(500);
                failed_in_a_row = 0;
                continue;
            }
            failed_in_a_row += 1;
            if failed_in_a_row % self.routers.len() != 0 {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// The snapshot a cache file holds, if it is one worth serving from. Protobuf decodes an empty
/// or cut-short file as a valid message (every field absent): served, that empty directory
/// would answer `550 no such user` — a permanent bounce — for every recipient, where no
/// directory at all answers `451` until a router does.
fn cached_snapshot(bytes: &[u8]) -> Option<DirectorySnapshot> {
    let snapshot = DirectorySnapshot::decode(bytes).ok()?;
    (!snapshot.domains.is_empty()).then_some(snapshot)
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use sirms_proto::cluster::DirectorySnapshot;

    use super::cached_snapshot;

    #[test]
    fn an_empty_or_cut_short_cache_is_not_a_directory() {
        let snapshot = DirectorySnapshot { version: 7, domains: vec!["example.test".into()], ..Default::default() };
        let bytes = snapshot.encode_to_vec();
        assert_eq!(cached_snapshot(&bytes), Some(snapshot));
        assert_eq!(cached_snapshot(b""), None, "an empty file decodes as an empty directory");
        assert_eq!(cached_snapshot(&bytes[..bytes.len() - 3]), None, "cut inside the domain");
        assert_eq!(cached_snapshot(&[0xff; 16]), None, "not protobuf");
    }
}
