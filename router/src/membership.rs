//! Which mail nodes are alive, by etcd lease, when the directory is in etcd.
//!
//! A node registers with any router and then heartbeats to it every second. That router
//! keeps a key `PREFIX/members/NODE` in etcd on a lease of [`LEASE_TTL`] seconds and renews
//! the lease on each heartbeat. Every router follows the prefix: a node whose lease lapsed
//! (dead, frozen, cut off, or its router gone and it has not yet reached another) is taken
//! out of routing by every router at once, whatever each one's own health checks say. A
//! router that cannot renew a lease fails the heartbeat, so the node moves to another router,
//! which takes the lease over with a new one.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use sirms_proto::etcd::event::EventType;
use sirms_proto::etcd::{Event, KeyValue};
use tokio::sync::watch;

use crate::etcd::{EtcdClient, EtcdError, Follower, follow_prefix};

/// Seconds a node's lease lasts without a heartbeat.
pub const LEASE_TTL: i64 = 3;

/// The nodes alive now; `None` until the members were first read from etcd.
pub type Live = Option<Arc<BTreeSet<String>>>;

/// This router's part in node membership.
pub struct Membership {
    client: Arc<EtcdClient>,
    /// `PREFIX/members/`
    root: String,
    /// The lease this router holds for each node that heartbeats to it.
    leases: Mutex<HashMap<String, i64>>,
    live: watch::Receiver<Live>,
    follower: tokio::task::JoinHandle<()>,
}

/// The set of live nodes, kept by [`follow_prefix`].
struct Members {
    root: String,
    sender: watch::Sender<Live>,
}

impl Members {
    fn node<'a>(&self, key: &'a [u8]) -> Option<&'a str> {
        std::str::from_utf8(key).ok()?.strip_prefix(self.root.as_str()).filter(|id| !id.is_empty())
    }
}

impl Follower for Members {
    fn reset(&mut self, kvs: &[KeyValue]) {
        let live: BTreeSet<String> = kvs.iter().filter_map(|kv| self.node(&kv.key)).map(str::to_string).collect();
        tracing::info!(nodes = ?live, "live nodes read from etcd");
        self.sender.send_replace(Some(Arc::new(live)));
    }

    fn events(&mut self, events: &[Event]) {
        let mut live: BTreeSet<String> = self.sender.borrow().as_deref().cloned().unwrap_or_default();
        for event in events {
            let Some(node) = event.kv.as_ref().and_then(|kv| self.node(&kv.key)) else { continue };
            if event.r#type() == EventType::Delete {
                tracing::info!(%node, "node lease ended: out of routing");
                live.remove(node);
            } else if live.insert(node.to_string()) {
                tracing::info!(%node, "node lease taken: in routing");
            }
        }
        self.sender.send_replace(Some(Arc::new(live)));
    }
}

impl Membership {
    /// Membership under `prefix` in the etcd cluster `client` reaches.
    pub fn start(client: Arc<EtcdClient>, prefix: &str) -> Membership {
        let root = format!("{}/members/", prefix.trim_end_matches('/'));
        let (sender, live) = watch::channel(None);
        let members = Members { root: root.clone(), sender };
        let follower = tokio::spawn(follow_prefix(client.clone(), root.clone().into_bytes(), members));
        Membership { client, root, leases: Mutex::new(HashMap::new()), live, follower }
    }

    /// Follows the live nodes.
    pub fn subscribe(&self) -> watch::Receiver<Live> {
        self.live.clone()
    }

    /// Takes `node` into membership on a new lease held by this router.
    pub async fn join(&self, node: &str) -> Result<(), EtcdError> {
        let lease = self.client.lease_grant(LEASE_TTL).await?;
        self.client.put(format!("{}{node}", self.root).as_bytes(), b"", lease).await?;
        self.leases.lock().unwrap_or_else(|p| p.into_inner()).insert(node.to_string(), lease);
        Ok(())
    }

    /// A heartbeat from `node`: renews its lease, or takes it in again if the lease lapsed or
    /// is held by another router.
    pub async fn alive(&self, node: &str) -> Result<(), EtcdError> {
        let lease = self.leases.lock().unwrap_or_else(|p| p.into_inner()).get(node).copied();
        match lease {
            Some(lease) if self.client.lease_keep_alive(lease).await? > 0 => Ok(()),
            _ => self.join(node).await,
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.follower.abort();
    }
}
