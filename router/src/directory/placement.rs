//! Where a user's mailbox copies live: its home and its replica.
//!
//! The rules:
//!
//! * **Store-capable** nodes are storage-only nodes and mail nodes that serve a Store endpoint
//!   (`store_endpoint` set); a drained node is never picked for a new copy.
//! * **Home**, when the admin names none: a storage node if the cluster has one, else any
//!   undrained node, by rendezvous hashing of the address (stable while the nodes stay).
//! * **Replica**, when the cluster is configured for two copies and has at least two
//!   store-capable nodes: the best node for the address other than the home, by the same
//!   hashing, from the pool the home is picked from (storage nodes if any, else mail nodes
//!   with a Store endpoint). When that pool holds nothing but the home, the other pool.
//!   Because a node's score for an address does not depend on the other nodes, the replica is
//!   the home's runner-up: adding a node moves only the copies it now wins.
//!
//! Each choice says why it was made ([`Replica`]), for logs.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use sirms_proto::cluster::Node;

use crate::hashing::{Rendezvous, WeightedNode};
use crate::node::NodeId;

/// How many copies of each mailbox the cluster keeps (`replicas` in `router.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Copies {
    /// The home alone: no replica is ever picked (one named by the admin is kept).
    One,
    /// A home and a replica on another store-capable node.
    #[default]
    Two,
}

impl TryFrom<u8> for Copies {
    type Error = String;

    fn try_from(n: u8) -> Result<Copies, String> {
        match n {
            1 => Ok(Copies::One),
            2 => Ok(Copies::Two),
            _ => Err(format!("replicas = {n}: a mailbox is kept once (1) or twice (2)")),
        }
    }
}

/// The replica chosen for a user, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replica {
    /// The best node other than the home in the home's own pool.
    SamePool(String),
    /// The home's pool holds only the home: the best node of the other pool.
    OtherPool(String),
    /// The cluster keeps one copy (`replicas = 1`).
    OneCopy,
    /// Fewer than two undrained store-capable nodes.
    TooFewStores(usize),
}

impl Replica {
    /// The chosen node, if any.
    pub fn node(self) -> Option<String> {
        match self {
            Replica::SamePool(node) | Replica::OtherPool(node) => Some(node),
            Replica::OneCopy | Replica::TooFewStores(_) => None,
        }
    }
}

impl fmt::Display for Replica {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Replica::SamePool(node) => write!(f, "{node} (hashed, the home's pool)"),
            Replica::OtherPool(node) => write!(f, "{node} (hashed, the other pool: the home's holds only the home)"),
            Replica::OneCopy => write!(f, "none (replicas = 1)"),
            Replica::TooFewStores(n) => write!(f, "none ({n} store-capable node(s), two needed)"),
        }
    }
}

/// Whether `node` can hold mailboxes for others.
pub fn store_capable(node: &Node) -> bool {
    node.storage_only || !node.store_endpoint.is_empty()
}

/// The best of `pool` for `address`, skipping `except`.
fn best<'a>(address: &str, pool: impl Iterator<Item = &'a Node>, except: &str) -> Option<String> {
    let candidates: Vec<WeightedNode> = pool
        .filter(|n| n.id != except)
        .filter_map(|n| NodeId::from_str(&n.id).ok().map(|id| WeightedNode { id, weight: n.weight.max(1) }))
        .collect();
    Rendezvous::default().best_for_key(address.as_bytes(), &candidates).map(|n| n.id.to_string())
}

/// Where a new user's mailbox goes when the admin names no home.
pub fn pick_home(nodes: &BTreeMap<String, Node>, address: &str) -> Option<String> {
    let undrained = || nodes.values().filter(|n| !n.drained);
    if undrained().any(|n| n.storage_only) {
        best(address, undrained().filter(|n| n.storage_only), "")
    } else {
        best(address, undrained(), "")
    }
}

/// Where the second copy of `address`'s mailbox goes, given its `home`.
pub fn pick_replica(nodes: &BTreeMap<String, Node>, copies: Copies, address: &str, home: &str) -> Replica {
    if copies == Copies::One {
        return Replica::OneCopy;
    }
    let stores = || nodes.values().filter(|n| !n.drained && store_capable(n));
    let count = stores().count();
    if count < 2 {
        return Replica::TooFewStores(count);
    }
    let storage = || stores().filter(|n| n.storage_only);
    let mail = || stores().filter(|n| !n.storage_only);
    let (first, other) = if storage().next().is_some() {
        (best(address, storage(), home), best(address, mail(), home))
    } else {
        (best(address, mail(), home), best(address, storage(), home))
    };
    match (first, other) {
        (Some(node), _) => Replica::SamePool(node),
        (None, Some(node)) => Replica::OtherPool(node),
        // Two store-capable nodes, one of them the home: the other is in one of the pools.
        (None, None) => Replica::TooFewStores(count),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(list: &[(&str, bool, bool)]) -> BTreeMap<String, Node> {
        list.iter()
            .map(|&(id, storage_only, endpoint)| {
                let node = Node {
                    id: id.into(),
                    host: "127.0.0.1".into(),
                    weight: if storage_only { 0 } else { 100 },
                    storage_only,
                    store_endpoint: if endpoint { format!("http://{id}:7400") } else { String::new() },
                    ..Default::default()
                };
                (id.to_string(), node)
            })
            .collect()
    }

    #[test]
    fn the_replica_is_the_homes_runner_up_in_its_pool() {
        let all = nodes(&[("s1", true, true), ("s2", true, true), ("s3", true, true), ("m1", false, true)]);
        for i in 0..50 {
            let address = format!("user{i}@example.test");
            let home = pick_home(&all, &address).expect("a home");
            assert!(home.starts_with('s'), "storage nodes first");
            let replica = pick_replica(&all, Copies::Two, &address, &home);
            let Replica::SamePool(node) = &replica else { panic!("{replica}") };
            assert!(node.starts_with('s') && *node != home, "{address}: {home} / {node}");
        }
    }

    #[test]
    fn one_storage_node_takes_a_mail_node_with_a_store_as_replica() {
        let all = nodes(&[("s1", true, true), ("m1", false, true), ("m2", false, false)]);
        let replica = pick_replica(&all, Copies::Two, "a@example.test", "s1");
        assert_eq!(replica, Replica::OtherPool("m1".into()), "m2 serves no store");
    }

    #[test]
    fn no_replica_without_two_stores_or_with_one_copy() {
        let one = nodes(&[("s1", true, true), ("m1", false, false)]);
        assert_eq!(pick_replica(&one, Copies::Two, "a@example.test", "s1"), Replica::TooFewStores(1));
        let mut two = nodes(&[("m1", false, true), ("m2", false, true)]);
        assert_eq!(pick_replica(&two, Copies::One, "a@example.test", "m1"), Replica::OneCopy);
        assert_eq!(pick_replica(&two, Copies::Two, "a@example.test", "m1"), Replica::SamePool("m2".into()));
        two.get_mut("m2").expect("m2").drained = true;
        assert_eq!(pick_replica(&two, Copies::Two, "a@example.test", "m1"), Replica::TooFewStores(1));
    }

    #[test]
    fn copies_come_from_the_config() {
        assert_eq!(Copies::try_from(1), Ok(Copies::One));
        assert_eq!(Copies::try_from(2), Ok(Copies::Two));
        assert!(Copies::try_from(3).is_err());
        assert_eq!(Copies::default(), Copies::Two);
    }
}
