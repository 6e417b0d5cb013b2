//! Membership in a cluster: registering with the router, following its directory, and
//! reaching mailboxes homed on other nodes.

pub mod catch_up;
pub mod home_store;
pub mod membership;
pub mod replica_state;
pub mod replication;
pub mod spool_copy;
pub mod transfer;
pub mod triplets;
pub mod unreachable;

use std::net::SocketAddr;

use serde::Deserialize;

/// The `[cluster]` section of `node.toml`; without `router` or `routers` the node runs alone.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The router's admin/directory API, e.g. `http://10.0.0.1:7500`.
    pub router: Option<String>,
    /// Several routers' APIs: the node follows the directory through whichever answers, and
    /// moves to the next when one goes away.
    pub routers: Vec<String>,
    /// This node's name in the cluster (default: the hostname's first label).
    pub node_id: Option<String>,
    /// Cluster token (default: the dev token, loopback only).
    pub token: Option<String>,
    /// The host the router and other nodes reach this node at (default: the address
    /// `listen.smtp` is bound to).
    pub advertise_host: Option<String>,
    /// Where this node serves its local mailboxes to the cluster (Store gRPC).
    pub store_listen: Option<SocketAddr>,
    /// Share of hashed sources the router gives this node.
    pub weight: Option<u32>,
    /// Seconds this node waits, after a peer whose spool copies it holds stopped answering,
    /// before delivering them itself (default 300).
    pub spool_takeover_secs: Option<u64>,
}

impl ClusterConfig {
    /// Every router named, `router` first; empty for a node alone.
    pub fn router_list(&self) -> Vec<String> {
        self.router.iter().chain(&self.routers).cloned().collect()
    }
}
