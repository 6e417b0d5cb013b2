//! Weighted rendezvous (highest-random-weight) hashing of a source IP over nodes.
//!
//! Every (source, node) pair gets a pseudo-random `h`, mapped into the open unit interval
//! as `u`; the node's score is `weight / -ln(u)` (the standard weighted-HRW formula, which
//! gives each node a share of sources proportional to its weight). Nodes are preferred in
//! descending score. Because a pair's score depends on nothing else, removing a node moves
//! exactly the sources it was first for (each to its own second choice) and adding one takes
//! sources only onto the new node; and the rank-2 node for a source is exactly where that
//! source goes if its rank-1 node fails.
//!
//! # The hash
//!
//! `std::hash::DefaultHasher` may change between Rust releases, which would reshuffle every
//! client on a router upgrade, so the hash is defined here and pinned by tests:
//!
//! * `mix64` is SplitMix64's step (add the golden gamma `0x9E3779B97F4A7C15`, then the
//!   `xor-shift-multiply` finaliser with constants `0xBF58476D1CE4E5B9`, `0x94D049BB133111EB`),
//!   a bijection on `u64` with full avalanche;
//! * `hash_bytes(seed, b)` starts from `mix64(seed ^ len(b))` and folds each 8-byte
//!   little-endian, zero-padded chunk `w` in as `h = mix64(h ^ w)`;
//! * a source's key hashes its octets (4 for IPv4, 16 for IPv6; IPv4-mapped IPv6 addresses
//!   count as IPv4 so a client keeps its node across a dual-stack listener), a node's key
//!   hashes its name with the seed xor-ed with a domain constant, and the pair's hash is
//!   `mix64(source_key ^ node_key)`;
//! * `u = ((h >> 12) + 0.5) / 2^52`, strictly inside (0, 1), so `ln(u)` is finite and negative.
//!
//! The only platform-dependent step is `f64::ln`, which may differ in the last bit between
//! libm implementations; that can only reorder two nodes whose scores tie to within one ulp.
//!
//! A node of weight 0 is ranked after every node of positive weight (among themselves by
//! unweighted score): it is a last resort, never a first choice.

use std::cmp::Ordering;
use std::net::IpAddr;

use crate::node::NodeId;

/// The seed used by [`Rendezvous::default`]; changing it moves every unrouted client.
pub const DEFAULT_SEED: u64 = 0x5349_524d_5348_5257; // "SIRMSHRW"

/// Kept apart from source keys so a node name and an address never share a hash by construction.
const NODE_DOMAIN: u64 = 0x6e6f_6465_6e6f_6465; // "nodenode"

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's state step plus output finaliser (Steele, Lea & Flood, OOPSLA 2014).
const fn mix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(GOLDEN_GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A stable 64-bit hash of a byte string (see the module docs for its definition).
fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = mix64(seed ^ bytes.len() as u64);
    for chunk in bytes.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = mix64(h ^ u64::from_le_bytes(word));
    }
    h
}

/// Maps a hash to the open interval (0, 1) using its top 52 bits.
fn unit_interval(h: u64) -> f64 {
    // 52 bits, not 53: with 53, (2^53 - 1) + 0.5 is not representable and rounds up to exactly 1.0.
    const SCALE: f64 = 1.0 / (1u64 << 52) as f64;
    ((h >> 12) as f64 + 0.5) * SCALE
}

/// Something that can be ranked: a node name and its weight.
pub trait Weighted {
    /// The node's name, which (with the seed) decides its hash.
    fn node_id(&self) -> &NodeId;
    /// The node's relative share of sources; 0 means "last resort only".
    fn weight(&self) -> u32;
}

/// A plain (node, weight) pair, for callers that have nothing richer to rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedNode {
    /// The node's name.
    pub id: NodeId,
    /// The node's relative share of sources.
    pub weight: u32,
}

impl Weighted for WeightedNode {
    fn node_id(&self) -> &NodeId {
        &self.id
    }

    fn weight(&self) -> u32 {
        self.weight
    }
}

/// A source's precomputed key, so ranking N nodes hashes the address once.
#[derive(Debug, Clone, Copy)]
struct SourceKey(u64);

/// A node's rank key for one source; higher is preferred.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RankKey {
    positive_weight: bool,
    score: f64,
}

impl RankKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.positive_weight.cmp(&other.positive_weight).then(self.score.total_cmp(&other.score))
    }
}

/// Weighted rendezvous hashing with a fixed seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rendezvous {
    seed: u64,
}

impl Default for Rendezvous {
    fn default() -> Self {
        Self::with_seed(DEFAULT_SEED)
    }
}

impl Rendezvous {
    /// Rendezvous hashing with a custom seed (different seeds give unrelated assignments).
    pub const fn with_seed(seed: u64) -> Self {
        Self { seed }
    }

    /// The weighted score of `node` for source `ip`: `weight / -ln(u)`; higher is preferred.
    pub fn score(&self, ip: IpAddr, node: &NodeId, weight: u32) -> f64 {
        self.rank_key(self.source_key(ip), node, weight).score
    }

    /// `nodes` in preference order for `ip`: the first is the choice, the rest the fallbacks in order.
    pub fn ranked<'a, T, I>(&self, ip: IpAddr, nodes: I) -> Vec<&'a T>
    where
        T: Weighted + ?Sized + 'a,
        I: IntoIterator<Item = &'a T>,
    {
        let source = self.source_key(ip);
        let mut keyed: Vec<(RankKey, &'a T)> =
            nodes.into_iter().map(|n| (self.rank_key(source, n.node_id(), n.weight()), n)).collect();
        // Ties are practically impossible, but the name decides them so the order never depends on input order.
        keyed.sort_by(|(ka, a), (kb, b)| kb.cmp(ka).then_with(|| a.node_id().cmp(b.node_id())));
        keyed.into_iter().map(|(_, node)| node).collect()
    }

    /// The first node [`Self::ranked`] would return, in one pass without sorting.
    pub fn best<'a, T, I>(&self, ip: IpAddr, nodes: I) -> Option<&'a T>
    where
        T: Weighted + ?Sized + 'a,
        I: IntoIterator<Item = &'a T>,
    {
        self.best_by_source(self.source_key(ip), nodes)
    }

    /// The best node for any byte key (e.g. a user's address when choosing its home).
    pub fn best_for_key<'a, T, I>(&self, key: &[u8], nodes: I) -> Option<&'a T>
    where
        T: Weighted + ?Sized + 'a,
        I: IntoIterator<Item = &'a T>,
    {
        self.best_by_source(SourceKey(hash_bytes(self.seed, key)), nodes)
    }

    fn best_by_source<'a, T, I>(&self, source: SourceKey, nodes: I) -> Option<&'a T>
    where
        T: Weighted + ?Sized + 'a,
        I: IntoIterator<Item = &'a T>,
    {
        nodes
            .into_iter()
            .map(|n| (self.rank_key(source, n.node_id(), n.weight()), n))
            .max_by(|(ka, a), (kb, b)| ka.cmp(kb).then_with(|| b.node_id().cmp(a.node_id())))
            .map(|(_, node)| node)
    }

    fn source_key(&self, ip: IpAddr) -> SourceKey {
        SourceKey(match ip.to_canonical() {
            IpAddr::V4(v4) => hash_bytes(self.seed, &v4.octets()),
            IpAddr::V6(v6) => hash_bytes(self.seed, &v6.octets()),
        })
    }

    fn rank_key(&self, source: SourceKey, node: &NodeId, weight: u32) -> RankKey {
        let node_key = hash_bytes(self.seed ^ NODE_DOMAIN, node.as_str().as_bytes());
        let u = unit_interval(mix64(source.0 ^ node_key));
        let effective_weight = if weight == 0 { 1 } else { weight };
        RankKey { positive_weight: weight > 0, score: f64::from(effective_weight) / -u.ln() }
    }
}

/// SplitMix64 as a tiny deterministic generator for tests (random sources, random tables).
#[cfg(test)]
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

#[cfg(test)]
impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let out = mix64(self.0);
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        out
    }

    /// A random source: three in four IPv4, the rest IPv6.
    pub(crate) fn ip(&mut self) -> IpAddr {
        let bits = self.next_u64();
        if bits.is_multiple_of(4) {
            let v6 = (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64());
            IpAddr::V6(v6.into())
        } else {
            IpAddr::V4(((bits >> 32) as u32).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCES: usize = 20_000;

    fn nodes(weights: &[u32]) -> Vec<WeightedNode> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| WeightedNode { id: NodeId::new(&format!("node{}", i + 1)).expect("valid"), weight })
            .collect()
    }

    fn sources(seed: u64) -> Vec<IpAddr> {
        let mut rng = SplitMix64::new(seed);
        (0..SOURCES).map(|_| rng.ip()).collect()
    }

    fn owners<'a>(hrw: &Rendezvous, ips: &[IpAddr], nodes: &'a [WeightedNode]) -> Vec<&'a NodeId> {
        ips.iter().map(|&ip| &hrw.best(ip, nodes).expect("nodes is not empty").id).collect()
    }

    /// Allowed deviation of a measured fraction from `p` over `n` trials: 4.5 standard deviations.
    fn tolerance(p: f64, n: usize) -> f64 {
        4.5 * (p * (1.0 - p) / n as f64).sqrt()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("valid ip")
    }

    #[test]
    fn splitmix_matches_reference_vectors() {
        // First outputs of the reference SplitMix64 seeded with 0.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    /// Pins the assignment so a change to the hash (which would move every client) fails loudly.
    #[test]
    fn assignment_is_pinned() {
        let hrw = Rendezvous::default();
        let nodes = nodes(&[1, 1, 1, 1]);
        let got: Vec<String> = ["192.0.2.1", "198.51.100.77", "10.0.0.1", "2001:db8::1", "::1", "127.0.0.1"]
            .iter()
            .map(|s| hrw.ranked(ip(s), &nodes).iter().map(|n| n.id.as_str()).collect::<Vec<_>>().join(","))
            .collect();
        assert_eq!(got, PINNED);
    }

    const PINNED: [&str; 6] = [
        "node3,node1,node2,node4",
        "node1,node2,node4,node3",
        "node2,node1,node3,node4",
        "node1,node4,node2,node3",
        "node2,node1,node4,node3",
        "node1,node2,node4,node3",
    ];

    #[test]
    fn same_source_same_node_regardless_of_input_order() {
        let hrw = Rendezvous::default();
        let forward = nodes(&[1, 2, 3, 1, 1]);
        let mut backward = forward.clone();
        backward.reverse();
        for ip in sources(1).into_iter().take(2_000) {
            let a: Vec<_> = hrw.ranked(ip, &forward).iter().map(|n| n.id.clone()).collect();
            let b: Vec<_> = hrw.ranked(ip, &backward).iter().map(|n| n.id.clone()).collect();
            assert_eq!(a, b);
            assert_eq!(hrw.ranked(ip, &forward)[0], hrw.best(ip, &forward).expect("not empty"));
            assert_eq!(hrw.ranked(ip, &forward), hrw.ranked(ip, &forward));
        }
    }

    #[test]
    fn ipv4_mapped_source_hashes_as_ipv4() {
        let hrw = Rendezvous::default();
        let nodes = nodes(&[1; 8]);
        for (v4, mapped) in [("10.1.2.3", "::ffff:10.1.2.3"), ("203.0.113.9", "::ffff:203.0.113.9")] {
            assert_eq!(hrw.ranked(ip(v4), &nodes), hrw.ranked(ip(mapped), &nodes));
        }
    }

    #[test]
    fn seeds_give_unrelated_assignments() {
        let nodes = nodes(&[1; 4]);
        let ips = sources(2);
        let a = owners(&Rendezvous::with_seed(1), &ips, &nodes);
        let b = owners(&Rendezvous::with_seed(2), &ips, &nodes);
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count() as f64 / SOURCES as f64;
        assert!((same - 0.25).abs() < tolerance(0.25, SOURCES), "agreement {same}");
    }

    /// The measurement: removing one of N nodes moves ≈1/N of sources, and only that node's.
    #[test]
    fn removing_a_node_moves_only_its_sources() {
        let hrw = Rendezvous::default();
        let ips = sources(3);
        for n in 2..=8usize {
            let all = nodes(&vec![1; n]);
            let before = owners(&hrw, &ips, &all);
            let mut fractions = Vec::new();
            for removed in 0..n {
                let mut rest = all.clone();
                let gone = rest.remove(removed).id;
                let after = owners(&hrw, &ips, &rest);
                let mut moved = 0;
                for (b, a) in before.iter().zip(&after) {
                    if b != a {
                        assert_eq!(*b, &gone, "a source moved off a node that is still there");
                        moved += 1;
                    } else {
                        assert_ne!(*b, &gone);
                    }
                }
                let fraction = moved as f64 / SOURCES as f64;
                let expected = 1.0 / n as f64;
                assert!((fraction - expected).abs() < tolerance(expected, SOURCES), "N={n}: moved {fraction}");
                fractions.push(fraction);
            }
            // The mean over all removals is 1/N by construction; the spread is what the hash decides.
            let min = fractions.iter().copied().fold(f64::INFINITY, f64::min);
            let max = fractions.iter().copied().fold(0.0, f64::max);
            eprintln!("N={n}: 1/N={:.4}, moved {min:.4}..{max:.4} (one removal each), others moved: 0", 1.0 / n as f64);
        }
    }

    #[test]
    fn adding_a_node_moves_sources_only_onto_it() {
        let hrw = Rendezvous::default();
        let ips = sources(4);
        for n in 2..=8usize {
            let grown = nodes(&vec![1; n + 1]);
            let before = owners(&hrw, &ips, &grown[..n]);
            let after = owners(&hrw, &ips, &grown);
            let newcomer = &grown[n].id;
            let moved =
                before.iter().zip(&after).filter(|(b, a)| b != a).inspect(|(_, a)| assert_eq!(*a, &newcomer)).count();
            let fraction = moved as f64 / SOURCES as f64;
            let expected = 1.0 / (n + 1) as f64;
            assert!((fraction - expected).abs() < tolerance(expected, SOURCES), "N={n}+1: moved {fraction}");
        }
    }

    #[test]
    fn weights_are_respected() {
        let hrw = Rendezvous::default();
        let ips = sources(5);
        for weights in [&[1, 2, 3, 4][..], &[1, 1, 8], &[100, 300], &[5, 5, 5, 1, 1, 1, 1, 1]] {
            let all = nodes(weights);
            let owned = owners(&hrw, &ips, &all);
            let total: u32 = weights.iter().sum();
            let mut measured = Vec::new();
            for node in &all {
                let share = owned.iter().filter(|id| ***id == node.id).count() as f64 / SOURCES as f64;
                let expected = f64::from(node.weight) / f64::from(total);
                assert!(
                    (share - expected).abs() < tolerance(expected, SOURCES),
                    "weights {weights:?}: {} got {share:.4}, expected {expected:.4}",
                    node.id
                );
                measured.push(format!("{}:{share:.4}/{expected:.4}", node.weight));
            }
            eprintln!("weights {weights:?}: share/expected {}", measured.join(" "));
        }
    }

    /// The second-ranked node is exactly where the source lands when the first is removed.
    #[test]
    fn fallback_order_equals_removal_order() {
        let hrw = Rendezvous::default();
        let all = nodes(&[3, 1, 2, 1, 1]);
        for ip in sources(6).into_iter().take(2_000) {
            let ranked = hrw.ranked(ip, &all);
            let mut remaining: Vec<&WeightedNode> = all.iter().collect();
            for expected in &ranked {
                let best = hrw.best(ip, remaining.iter().copied()).expect("not empty");
                assert_eq!(best, *expected);
                remaining.retain(|n| n.id != best.id);
            }
        }
    }

    #[test]
    fn zero_weight_nodes_come_last() {
        let hrw = Rendezvous::default();
        let all = nodes(&[0, 1, 0, 1]);
        for ip in sources(7).into_iter().take(1_000) {
            let weights: Vec<u32> = hrw.ranked(ip, &all).iter().map(|n| n.weight).collect();
            assert_eq!(weights, [1, 1, 0, 0]);
        }
        let only_zero = nodes(&[0, 0]);
        assert!(hrw.best(ip("10.0.0.1"), &only_zero).is_some());
    }

    #[test]
    fn empty_node_set_ranks_nothing() {
        let hrw = Rendezvous::default();
        let none: [WeightedNode; 0] = [];
        assert!(hrw.ranked(ip("10.0.0.1"), &none).is_empty());
        assert!(hrw.best(ip("10.0.0.1"), &none).is_none());
    }

    #[test]
    fn scores_are_finite_and_positive_at_the_extremes() {
        for h in [0, 1, u64::MAX, u64::MAX >> 12, 1 << 12, u64::MAX - (1 << 12)] {
            let u = unit_interval(h);
            assert!(u > 0.0 && u < 1.0, "{h:#x} -> {u}");
            let score = f64::from(u32::MAX) / -u.ln();
            assert!(score.is_finite() && score > 0.0);
        }
    }
}
