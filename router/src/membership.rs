//! Which mail nodes are alive, by etcd lease, when the directory is in etcd.
//!
//! A node registers with any router and then heartbeats to it every second. That router
//! keeps a key `PREFIX/members/NODE` in etcd on a lease of [`LEASE_TTL`] seconds and renews
//! the lease on each heartbeat. Every router follows the prefix: a node whose lease lapsed
//! (dead, frozen, cut off, or its router gone and it has not yet reached another) is taken
//! out of routing by every router at once, whatever each one's own health checks say. A
//! router that cannot renew a lease fails the heartbeat, so the node moves to another router,
//! which takes the lease over with a new one. The key's value is the node's last reported
//! load (refreshed every [`LOAD_EVERY`] heartbeats), so every router shows every node's load,
//! not only those of the nodes that heartbeat to it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use prost::Message;
use sirms_proto::cluster::NodeLoad;
use sirms_proto::etcd::event::EventType;
use sirms_proto::etcd::{Event, KeyValue};
use tokio::sync::watch;

use crate::etcd::{EtcdClient, EtcdError, Follower, follow_prefix};

/// Seconds a node's lease lasts without a heartbeat.
pub const LEASE_TTL: i64 = 3;

/// Heartbeats between two writes of a node's load to etcd (the others only renew the lease).
pub const LOAD_EVERY: u32 = 5;

/// The nodes alive now, with the load each last reported; `None` until the members were first
/// read from etcd.
pub type Live = Option<Arc<BTreeMap<String, NodeLoad>>>;

/// This router's part in node membership.
pub struct Membership {
    client: Arc<EtcdClient>,
    /// `PREFIX/members/`
    root: String,
    /// The lease this router holds for each node that heartbeats to it, and the heartbeats
    /// since its load was last written.
    leases: Mutex<HashMap<String, (i64, u32)>>,
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
        let live: BTreeMap<String, NodeLoad> = kvs
            .iter()
            .filter_map(|kv| {
                Some((self.node(&kv.key)?.to_string(), NodeLoad::decode(kv.value.as_ref()).unwrap_or_default()))
            })
            .collect();
        tracing::info!(nodes = ?live.keys().collect::<Vec<_>>(), "live nodes read from etcd");
        self.sender.send_replace(Some(Arc::new(live)));
    }

    fn events(&mut self, events: &[Event]) {
        let mut live: BTreeMap<String, NodeLoad> = self.sender.borrow().as_deref().cloned().unwrap_or_default();
        for event in events {
            let Some(kv) = &event.kv else { continue };
            let Some(node) = self.node(&kv.key) else { continue };
            if event.r#type() == EventType::Delete {
                tracing::info!(%node, "node lease ended: out of routing");
                live.remove(node);
            } else {
                let load = NodeLoad::decode(kv.value.as_ref()).unwrap_or_default();
                if live.insert(node.to_string(), load).is_none() {
                    tracing::info!(%node, "node lease taken: in routing");
                }
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
    pub async fn join(&self, node: &str, load: &NodeLoad) -> Result<(), EtcdError> {
        let lease = self.client.lease_grant(LEASE_TTL).await?;
        self.put(node, load, lease).await?;
        // The next heartbeat writes the node's real load (a registration carries none).
        if let Some(entry) = self.leases.lock().unwrap_or_else(|p| p.into_inner()).get_mut(node) {
            entry.1 = LOAD_EVERY - 1;
        }
        Ok(())
    }

    async fn put(&self, node: &str, load: &NodeLoad, lease: i64) -> Result<(), EtcdError> {
        self.client.put(format!("{}{node}", self.root).as_bytes(), &load.encode_to_vec(), lease).await?;
        self.leases.lock().unwrap_or_else(|p| p.into_inner()).insert(node.to_string(), (lease, 0));
        Ok(())
    }

    /// A heartbeat from `node` with its `load`: renews its lease (writing the load now and
    /// then), or takes it in again if the lease lapsed or is held by another router.
    pub async fn alive(&self, node: &str, load: &NodeLoad) -> Result<(), EtcdError> {
        let held = {
            let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
            leases.get_mut(node).map(|(lease, beats)| {
                *beats += 1;
                (*lease, *beats)
            })
        };
        match held {
            Some((lease, beats)) if self.client.lease_keep_alive(lease).await? > 0 => {
                if beats >= LOAD_EVERY {
                    self.put(node, load, lease).await?;
                }
                Ok(())
            }
            _ => self.join(node, load).await,
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.follower.abort();
    }
}
