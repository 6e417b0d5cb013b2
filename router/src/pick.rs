//! The full choice of node for a source: the admin's table first, rendezvous hashing otherwise.
//!
//! The result is a ranked candidate list, so the forwarder can try the next node when one
//! refuses the connection. The rules:
//!
//! * A table entry whose node (or any group member) is healthy: those nodes first, ranked by
//!   rendezvous, followed by every other healthy node in rendezvous order as fallbacks.
//! * A table entry whose nodes are all down, drained or unknown: rendezvous over all healthy
//!   nodes, as if the source were not in the table — an entry never black-holes its clients.
//! * No table entry: rendezvous over all healthy nodes.
//! * No healthy node at all: rendezvous over the nodes marked down. Health may be stale (a
//!   node may have come back since its last check), and trying costs less than refusing.
//!
//! Drained nodes are never candidates: draining means no new connections.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::hashing::{Rendezvous, Weighted};
use crate::node::{GroupName, NodeId, NodeState};
use crate::table::{Cidr, RouteTable, Target};

/// A node as routing sees it: its weight and current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// The node's name.
    pub id: NodeId,
    /// Relative share of hashed sources; 0 makes the node a fallback only.
    pub weight: u32,
    /// Whether it takes new connections.
    pub state: NodeState,
}

impl Weighted for ClusterNode {
    fn node_id(&self) -> &NodeId {
        &self.id
    }

    fn weight(&self) -> u32 {
        self.weight
    }
}

/// The nodes, their groups and the hash that spreads sources over them.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    rendezvous: Rendezvous,
    nodes: BTreeMap<NodeId, ClusterNode>,
    groups: BTreeMap<GroupName, BTreeSet<NodeId>>,
}

/// Why a source got its candidates, for logs and `sirms ctl routes test`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// A table entry names the source and some of its nodes are healthy; they come first.
    Table {
        /// The matching entry.
        cidr: Cidr,
        /// Where it points.
        target: Target,
    },
    /// A table entry names the source but none of its nodes is healthy; hashed over all healthy nodes.
    TableUnavailable {
        /// The matching entry.
        cidr: Cidr,
        /// Where it points.
        target: Target,
    },
    /// No table entry names the source; hashed over all healthy nodes.
    Hashed,
    /// No node is healthy; hashed over the nodes marked down.
    LastResort,
    /// No node can be tried at all (none known, or all drained).
    NoNodes,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Table { cidr, target } => write!(f, "table {cidr} -> {target}"),
            Reason::TableUnavailable { cidr, target } => write!(f, "table {cidr} -> {target} is down; hashed"),
            Reason::Hashed => write!(f, "hashed"),
            Reason::LastResort => write!(f, "no node healthy; hashed over all"),
            Reason::NoNodes => write!(f, "no node available"),
        }
    }
}

/// The outcome of [`Cluster::choose`]: candidates in the order to try them, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// Nodes to try, best first; empty only when the reason is [`Reason::NoNodes`].
    pub candidates: Vec<NodeId>,
    /// How the candidates were arrived at.
    pub reason: Reason,
}

impl Cluster {
    /// An empty cluster hashing with `rendezvous`.
    pub fn new(rendezvous: Rendezvous) -> Self {
        Self { rendezvous, ..Self::default() }
    }

    /// Adds a node or replaces the one with the same id, returning the old entry.
    pub fn upsert_node(&mut self, node: ClusterNode) -> Option<ClusterNode> {
        self.nodes.insert(node.id.clone(), node)
    }

    /// Removes a node; group memberships naming it stay and are ignored until it returns.
    pub fn remove_node(&mut self, id: &NodeId) -> Option<ClusterNode> {
        self.nodes.remove(id)
    }

    /// Sets a node's state, returning false if the node is unknown.
    pub fn set_state(&mut self, id: &NodeId, state: NodeState) -> bool {
        match self.nodes.get_mut(id) {
            Some(node) => {
                node.state = state;
                true
            }
            None => false,
        }
    }

    /// The node with this id.
    pub fn node(&self, id: &NodeId) -> Option<&ClusterNode> {
        self.nodes.get(id)
    }

    /// All nodes, ordered by id.
    pub fn nodes(&self) -> impl Iterator<Item = &ClusterNode> {
        self.nodes.values()
    }

    /// Defines or replaces a group's members, returning the previous members.
    pub fn set_group(&mut self, name: GroupName, members: BTreeSet<NodeId>) -> Option<BTreeSet<NodeId>> {
        self.groups.insert(name, members)
    }

    /// Removes a group, returning its members.
    pub fn remove_group(&mut self, name: &GroupName) -> Option<BTreeSet<NodeId>> {
        self.groups.remove(name)
    }

    /// The members of a group.
    pub fn group(&self, name: &GroupName) -> Option<&BTreeSet<NodeId>> {
        self.groups.get(name)
    }

    /// Ranks the nodes that should serve source `ip`, following the module's rules.
    pub fn choose(&self, ip: IpAddr, table: &RouteTable) -> Choice {
        let healthy = || self.nodes.values().filter(|n| n.state == NodeState::Healthy);

        let Some((cidr, target)) = table.lookup(ip) else {
            return self.hashed_over_all(ip, Reason::Hashed);
        };
        let is_member = |id: &NodeId| match target {
            Target::Node(node) => id == node,
            Target::Group(group) => self.groups.get(group).is_some_and(|members| members.contains(id)),
        };
        let preferred = self.rendezvous.ranked(ip, healthy().filter(|n| is_member(&n.id)));
        if preferred.is_empty() {
            return self.hashed_over_all(ip, Reason::TableUnavailable { cidr, target: target.clone() });
        }
        let rest = self.rendezvous.ranked(ip, healthy().filter(|n| !is_member(&n.id)));
        Choice {
            candidates: preferred.into_iter().chain(rest).map(|n| n.id.clone()).collect(),
            reason: Reason::Table { cidr, target: target.clone() },
        }
    }

    fn hashed_over_all(&self, ip: IpAddr, reason: Reason) -> Choice {
        let in_state = |state| self.nodes.values().filter(move |n| n.state == state);
        let ids = |ranked: Vec<&ClusterNode>| ranked.into_iter().map(|n| n.id.clone()).collect::<Vec<_>>();

        let healthy = ids(self.rendezvous.ranked(ip, in_state(NodeState::Healthy)));
        if !healthy.is_empty() {
            return Choice { candidates: healthy, reason };
        }
        let down = ids(self.rendezvous.ranked(ip, in_state(NodeState::Down)));
        let reason = if down.is_empty() { Reason::NoNodes } else { Reason::LastResort };
        Choice { candidates: down, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::SplitMix64;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).expect("valid node name")
    }

    fn group(s: &str) -> GroupName {
        GroupName::new(s).expect("valid group name")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("valid ip")
    }

    fn cluster(n: usize) -> Cluster {
        let mut cluster = Cluster::new(Rendezvous::default());
        for i in 1..=n {
            cluster.upsert_node(ClusterNode { id: id(&format!("node{i}")), weight: 1, state: NodeState::Healthy });
        }
        cluster
    }

    fn table(entries: &[(&str, &str)]) -> RouteTable {
        entries.iter().map(|(c, t)| (c.parse().expect("valid cidr"), t.parse().expect("valid target"))).collect()
    }

    fn names(choice: &Choice) -> Vec<&str> {
        choice.candidates.iter().map(NodeId::as_str).collect()
    }

    #[test]
    fn unrouted_source_is_hashed_over_healthy_nodes() {
        let cluster = cluster(4);
        let choice = cluster.choose(ip("192.0.2.1"), &RouteTable::new());
        assert_eq!(choice.reason, Reason::Hashed);
        let expected: Vec<_> =
            Rendezvous::default().ranked(ip("192.0.2.1"), cluster.nodes()).iter().map(|n| n.id.clone()).collect();
        assert_eq!(choice.candidates, expected);
    }

    #[test]
    fn table_node_comes_first_then_the_others_as_fallbacks() {
        let cluster = cluster(4);
        let table = table(&[("10.0.0.0/8", "node3")]);
        let choice = cluster.choose(ip("10.1.1.1"), &table);
        assert_eq!(
            choice.reason,
            Reason::Table { cidr: "10.0.0.0/8".parse().expect("valid"), target: "node3".parse().expect("valid") }
        );
        assert_eq!(choice.candidates[0], id("node3"));
        assert_eq!(choice.candidates.len(), 4);
        let rest: Vec<_> = Rendezvous::default()
            .ranked(ip("10.1.1.1"), cluster.nodes().filter(|n| n.id != id("node3")))
            .iter()
            .map(|n| n.id.clone())
            .collect();
        assert_eq!(choice.candidates[1..], rest[..]);
    }

    #[test]
    fn group_members_are_ranked_by_rendezvous() {
        let mut cluster = cluster(5);
        cluster.set_group(group("east"), [id("node2"), id("node4"), id("ghost")].into());
        let table = table(&[("10.0.0.0/8", "group:east")]);
        let mut rng = SplitMix64::new(11);
        let mut firsts = BTreeSet::new();
        for _ in 0..200 {
            let source = IpAddr::V4((0x0a00_0000 | (rng.next_u64() as u32 & 0x00ff_ffff)).into());
            let choice = cluster.choose(source, &table);
            let first_two: BTreeSet<_> = choice.candidates[..2].iter().map(NodeId::as_str).collect();
            assert_eq!(first_two, ["node2", "node4"].into());
            assert_eq!(choice.candidates.len(), 5);
            firsts.insert(choice.candidates[0].clone());
        }
        assert_eq!(firsts.len(), 2, "both group members should be first for some sources");
    }

    #[test]
    fn table_entry_with_no_healthy_node_falls_back_to_hashing() {
        let mut cluster = cluster(3);
        cluster.set_state(&id("node1"), NodeState::Down);
        cluster.set_group(group("g"), [id("node2")].into());
        cluster.set_state(&id("node2"), NodeState::Drained);
        let table = table(&[("10.0.0.0/8", "node1"), ("10.9.0.0/16", "group:g"), ("10.8.0.0/16", "nosuchnode")]);
        for source in ["10.1.1.1", "10.9.1.1", "10.8.1.1"] {
            let choice = cluster.choose(ip(source), &table);
            assert!(matches!(choice.reason, Reason::TableUnavailable { .. }), "{source}: {:?}", choice.reason);
            assert_eq!(names(&choice), ["node3"], "{source}");
        }
    }

    #[test]
    fn drained_nodes_are_never_candidates() {
        let mut cluster = cluster(3);
        cluster.set_state(&id("node2"), NodeState::Drained);
        let table = table(&[("10.0.0.0/8", "node1")]);
        let mut rng = SplitMix64::new(12);
        for _ in 0..500 {
            let choice = cluster.choose(rng.ip(), &table);
            assert!(!choice.candidates.contains(&id("node2")));
            assert_eq!(choice.candidates.len(), 2);
        }
    }

    #[test]
    fn down_nodes_are_tried_only_when_none_is_healthy() {
        let mut cluster = cluster(3);
        for n in ["node1", "node2"] {
            cluster.set_state(&id(n), NodeState::Down);
        }
        cluster.set_state(&id("node3"), NodeState::Drained);
        let choice = cluster.choose(ip("192.0.2.1"), &RouteTable::new());
        assert_eq!(choice.reason, Reason::LastResort);
        let got: BTreeSet<_> = names(&choice).into_iter().collect();
        assert_eq!(got, ["node1", "node2"].into());

        cluster.set_state(&id("node1"), NodeState::Healthy);
        assert_eq!(names(&cluster.choose(ip("192.0.2.1"), &RouteTable::new())), ["node1"]);
    }

    #[test]
    fn nothing_to_try() {
        let choice = Cluster::default().choose(ip("192.0.2.1"), &table(&[("0.0.0.0/0", "node1")]));
        assert_eq!(choice, Choice { candidates: vec![], reason: Reason::NoNodes });
        let mut drained = cluster(1);
        drained.set_state(&id("node1"), NodeState::Drained);
        assert_eq!(drained.choose(ip("192.0.2.1"), &RouteTable::new()).reason, Reason::NoNodes);
    }

    /// A node going down moves only the hashed sources it served, even through the full choice.
    #[test]
    fn a_node_going_down_moves_only_its_sources() {
        let mut cluster = cluster(5);
        let table = RouteTable::new();
        let mut rng = SplitMix64::new(13);
        let sources: Vec<IpAddr> = (0..5_000).map(|_| rng.ip()).collect();
        let before: Vec<NodeId> = sources.iter().map(|&s| cluster.choose(s, &table).candidates[0].clone()).collect();
        cluster.set_state(&id("node4"), NodeState::Down);
        for (source, old) in sources.iter().zip(&before) {
            let new = &cluster.choose(*source, &table).candidates[0];
            assert_eq!(new == old, *old != id("node4"), "{source}");
        }
    }

    #[test]
    fn unknown_state_change_is_reported() {
        let mut cluster = cluster(1);
        assert!(cluster.set_state(&id("node1"), NodeState::Down));
        assert!(!cluster.set_state(&id("node9"), NodeState::Down));
        assert!(cluster.remove_node(&id("node1")).is_some());
        assert!(cluster.node(&id("node1")).is_none());
    }
}
