//! Spool copies, the origin's side and the holder's: every spool entry this node accepts gets
//! a copy on another mail node before the client hears `250`, and a node that holds copies of
//! a peer gone for [`SpoolPeers::takeover_after`] delivers them itself (docs/STORAGE.md,
//! "Spool copies").
//!
//! The copy's holder is the first mail node after this one (by id, wrapping) that answers.
//! Updates and removals reach it as well, but only as a favour: a copy that outlives its entry
//! can at worst be delivered a second time, and only if the origin also stays away for the
//! whole takeover delay. The origin, when it starts, asks every peer which of its entries they
//! adopted and drops those, so an origin that comes back does not deliver them again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sirms_proto::cluster::spool_copies_client::SpoolCopiesClient;
use sirms_proto::cluster::{CopyList, CopyRef, Empty, Name, SpoolCopy};
use sirms_proto::cluster_tls::Credentials;
use sirms_proto::token::TokenInterceptor;
use sirms_storage::grpc::fail_fast::{FailFast, peer_channel};
use tokio::sync::{Notify, watch};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::home_store::Endpoints;
use super::unreachable::Unreachable;
use crate::directory::LiveDirectory;
use crate::queue::copies::Copies;
use crate::queue::{QueuedEnvelope, Spool};

/// How long one call to a peer may take, beyond the time the message's bytes take at
/// [`COPY_RATE`].
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The slowest transfer to a peer allowed for, in bytes per second.
const COPY_RATE: u64 = 8 * 1024 * 1024;
/// How often a holder looks at the peers it holds copies for.
const WATCH_INTERVAL: Duration = Duration::from_secs(5);

type Client = SpoolCopiesClient<InterceptedService<FailFast<Channel>, TokenInterceptor>>;

/// This node's view of its peers, for spool copies.
pub struct SpoolPeers {
    node_id: String,
    directory: Arc<LiveDirectory>,
    endpoints: Endpoints,
    credentials: Credentials,
    clients: Mutex<HashMap<String, Client>>,
    /// Peers that stopped answering lately (the node's, shared with its replica writes).
    unreachable: Arc<Unreachable>,
    /// How long a peer must stay unreachable before its copies are delivered here.
    pub takeover_after: Duration,
}

impl SpoolPeers {
    /// Peers of node `node_id`, found in `directory` and reached at `endpoints`.
    pub fn new(
        node_id: String,
        directory: Arc<LiveDirectory>,
        endpoints: Endpoints,
        credentials: Credentials,
        unreachable: Arc<Unreachable>,
        takeover_after: Duration,
    ) -> SpoolPeers {
        SpoolPeers {
            node_id,
            directory,
            endpoints,
            credentials,
            clients: Mutex::default(),
            unreachable,
            takeover_after,
        }
    }

    /// The other mail nodes, the one after this node first (by id, wrapping).
    fn peers(&self) -> Vec<String> {
        let current = self.directory.current();
        let nodes: Vec<&str> = current.mail_nodes().collect();
        let (after, before): (Vec<&str>, Vec<&str>) =
            nodes.into_iter().filter(|n| *n != self.node_id).partition(|n| *n > self.node_id.as_str());
        after.into_iter().chain(before).map(str::to_string).collect()
    }

    /// Whether this node has peers that could hold copies (a node alone has none: its spool is
    /// its only copy, as on any single server).
    pub fn any(&self) -> bool {
        !self.peers().is_empty()
    }

    fn client(&self, peer: &str) -> Result<Client, String> {
        let endpoint = self
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(peer)
            .cloned()
            .filter(|e| !e.is_empty())
            .ok_or_else(|| format!("node {peer} has no endpoint"))?;
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(&endpoint) {
            return Ok(client.clone());
        }
        // The peer's health is shared with the node's Store calls to it: a primary found dead
        // by a delivery is not waited for again by the spool copy that delivery makes next.
        let channel = peer_channel(self.credentials.endpoint(&endpoint).map_err(|e| e.to_string())?, &endpoint);
        let token = TokenInterceptor::new(&self.credentials.token).ok_or("the token is not valid metadata")?;
        let client = SpoolCopiesClient::with_interceptor(channel, token).max_encoding_message_size(usize::MAX);
        clients.insert(endpoint, client.clone());
        Ok(client)
    }

    async fn call<T, F>(&self, peer: &str, limit: Duration, f: impl FnOnce(Client) -> F) -> Result<T, String>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        // A peer found dead by this or another call is not waited for again at once: a 250
        // would otherwise wait out a connection attempt for each dead peer in turn.
        if let Some(why) = self.unreachable.skip(peer) {
            return Err(why);
        }
        let client = self.client(peer)?;
        let outcome = tokio::time::timeout(limit, f(client)).await;
        let answered = match &outcome {
            Ok(Ok(_)) => true,
            Ok(Err(status)) => !matches!(status.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded),
            Err(_) => false,
        };
        self.unreachable.note(peer, answered);
        match outcome {
            Ok(Ok(reply)) => Ok(reply.into_inner()),
            Ok(Err(status)) => Err(status.message().to_string()),
            Err(_) => Err(format!("no answer in {limit:?}")),
        }
    }

    /// Keeps a copy of a new entry on the first peer that takes it; returns that peer, or why
    /// none did.
    pub async fn keep(&self, envelope: &QueuedEnvelope, message: &bytes::Bytes) -> Result<String, String> {
        let limit = CALL_TIMEOUT + Duration::from_secs(message.len() as u64 / COPY_RATE);
        let mut why = Vec::new();
        for peer in self.peers() {
            let copy = SpoolCopy {
                origin: self.node_id.clone(),
                id: envelope.id.clone(),
                envelope: envelope.render(),
                message: message.clone(),
                envelope_only: false,
            };
            match self.call(&peer, limit, |mut c| async move { c.keep(copy).await }).await {
                Ok(_) => return Ok(peer),
                Err(e) => why.push(format!("{peer}: {e}")),
            }
        }
        Err(if why.is_empty() { "no other mail node".to_string() } else { why.join("; ") })
    }

    /// Brings the copy of `envelope` up to date (recipients done, attempts), as a favour.
    pub async fn update(&self, envelope: &QueuedEnvelope) {
        if envelope.copy.is_empty() {
            return;
        }
        let copy = SpoolCopy {
            origin: self.node_id.clone(),
            id: envelope.id.clone(),
            envelope: envelope.render(),
            message: bytes::Bytes::new(),
            envelope_only: true,
        };
        if let Err(e) = self.call(&envelope.copy, CALL_TIMEOUT, |mut c| async move { c.keep(copy).await }).await {
            tracing::info!(id = %envelope.id, peer = %envelope.copy, error = %e, "could not update a spool copy");
        }
    }

    /// Drops the copy of a finished entry, as a favour.
    pub async fn forget(&self, peer: &str, id: &str) {
        if peer.is_empty() {
            return;
        }
        let what = CopyRef { origin: self.node_id.clone(), id: id.to_string() };
        if let Err(e) = self.call(peer, CALL_TIMEOUT, |mut c| async move { c.forget(what).await }).await {
            tracing::info!(%id, %peer, error = %e, "could not drop a spool copy");
        }
    }

    /// Drops from `spool` the entries that peers adopted while this node was gone, and tells
    /// them so; `asked` collects the peers that answered. Peers that do not answer are asked
    /// again at the next call.
    pub async fn drop_adopted(&self, spool: &Arc<Spool>, asked: &mut Vec<String>) {
        for peer in self.peers() {
            if asked.contains(&peer) {
                continue;
            }
            let me = Name { name: self.node_id.clone() };
            let ids = match self.call(&peer, CALL_TIMEOUT, |mut c| async move { c.adopted(me).await }).await {
                Ok(list) => list.ids,
                Err(_) => continue,
            };
            asked.push(peer.clone());
            if ids.is_empty() {
                continue;
            }
            let gone = ids.clone();
            let dropped = spool
                .run(move |s| {
                    for id in &gone {
                        // One being worked on now is the queue runner's: it was held back
                        // from delivery until this answer, so it is at most being read.
                        let Some(claim) = s.claim(id) else { continue };
                        match s.remove(&claim) {
                            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                            _ => {}
                        }
                    }
                    Ok(())
                })
                .await;
            if let Err(e) = dropped {
                tracing::error!(%peer, error = %e, "cannot drop spool entries a peer delivered");
                continue;
            }
            tracing::warn!(%peer, count = ids.len(), "dropped spool entries a peer delivered while this node was gone");
            let done = CopyList { origin: self.node_id.clone(), ids };
            let _ = self.call(&peer, CALL_TIMEOUT, |mut c| async move { c.forget_adopted(done).await }).await;
        }
    }

    /// Whether node `peer` answers.
    async fn alive(&self, peer: &str) -> bool {
        self.call(peer, CALL_TIMEOUT, |mut c| async move { c.alive(Empty {}).await }).await.is_ok()
    }

    /// Watches the peers this node holds copies for, and adopts the copies of one that has
    /// not answered for [`SpoolPeers::takeover_after`]: they go into `own` and `wake` rings
    /// the queue runner. Runs until `stopped`.
    pub async fn watch_holders(
        self: Arc<Self>,
        copies: Arc<Copies>,
        own: Arc<Spool>,
        wake: Arc<Notify>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let mut silent_since: HashMap<String, Instant> = HashMap::new();
        loop {
            let listed = {
                let copies = copies.clone();
                tokio::task::spawn_blocking(move || {
                    let origins = copies.origins()?;
                    origins.into_iter().map(|o| copies.count(&o).map(|n| (o, n))).collect::<std::io::Result<Vec<_>>>()
                })
                .await
            };
            let held = match listed {
                Ok(Ok(held)) => held,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot read the spool copies");
                    Vec::new()
                }
                Err(_) => Vec::new(),
            };
            for (origin, count) in held {
                if count == 0 || self.alive(&origin).await {
                    silent_since.remove(&origin);
                    continue;
                }
                let since = *silent_since.entry(origin.clone()).or_insert_with(Instant::now);
                if since.elapsed() < self.takeover_after {
                    continue;
                }
                let (from, copies, own) = (origin.clone(), copies.clone(), own.clone());
                match tokio::task::spawn_blocking(move || copies.adopt(&from, &own)).await {
                    Ok(Ok(ids)) => {
                        tracing::warn!(%origin, count = ids.len(), silent_secs = since.elapsed().as_secs(),
                            "node gone: delivering its spooled mail from here");
                        silent_since.remove(&origin);
                        wake.notify_one();
                    }
                    Ok(Err(e)) => tracing::error!(%origin, error = %e, "cannot adopt spool copies"),
                    Err(e) => tracing::error!(%origin, error = %e, "cannot adopt spool copies"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(WATCH_INTERVAL) => {}
                _ = stopped.changed() => return,
            }
        }
    }
}
