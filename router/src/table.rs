//! The admin's policy table: CIDR → node or group, IPv4 and IPv6, longest prefix wins.
//! (How a CIDR parses, and why host bits are an error, is in [`sirms_proto::cidr`].)
//!
//! IPv4-mapped IPv6 sources (`::ffff:10.1.2.3`, what a dual-stack listener reports for an
//! IPv4 client) are looked up as the IPv4 address they carry, so IPv4 rules apply to them;
//! for the same reason a CIDR inside `::ffff:0:0/96` is rejected in favour of its IPv4 form.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::node::{GroupName, NameError, NodeId};
pub use sirms_proto::cidr::{Cidr, CidrError};

/// Where a table entry sends its sources.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// One node.
    Node(NodeId),
    /// Any member of a group, chosen by rendezvous hashing.
    Group(GroupName),
}

/// Prefix that marks a group in a target's text form; a bare name is a node.
const GROUP_PREFIX: &str = "group:";

impl FromStr for Target {
    type Err = NameError;

    /// Parses `group:NAME` as a group, and `node:NAME` or a bare `NAME` as a node.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(group) = s.strip_prefix(GROUP_PREFIX) {
            return GroupName::new(group).map(Self::Group);
        }
        NodeId::new(s.strip_prefix("node:").unwrap_or(s)).map(Self::Node)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Node(node) => write!(f, "{node}"),
            Self::Group(group) => write!(f, "{GROUP_PREFIX}{group}"),
        }
    }
}

/// The policy table: longest-prefix match from source address to [`Target`].
///
/// Entries live in one ordered map keyed by CIDR; a per-family count of entries at each
/// prefix length lets a lookup probe only the lengths in use, longest first, so a lookup
/// costs (distinct prefix lengths) × O(log entries) whatever the table size.
#[derive(Debug, Clone)]
pub struct RouteTable {
    entries: BTreeMap<Cidr, Target>,
    v4_lens: [u32; 33],
    v6_lens: [u32; 129],
}

impl Default for RouteTable {
    fn default() -> Self {
        Self { entries: BTreeMap::new(), v4_lens: [0; 33], v6_lens: [0; 129] }
    }
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the entry for `cidr`, returning the target it replaced.
    pub fn insert(&mut self, cidr: Cidr, target: Target) -> Option<Target> {
        let previous = self.entries.insert(cidr, target);
        if previous.is_none() {
            *self.count_mut(cidr) += 1;
        }
        previous
    }

    /// Removes the entry for exactly `cidr`, returning its target.
    pub fn remove(&mut self, cidr: &Cidr) -> Option<Target> {
        let removed = self.entries.remove(cidr);
        if removed.is_some() {
            *self.count_mut(*cidr) -= 1;
        }
        removed
    }

    /// The target of exactly `cidr`, without prefix matching.
    pub fn get(&self, cidr: &Cidr) -> Option<&Target> {
        self.entries.get(cidr)
    }

    /// The most specific entry containing `ip`, if any.
    pub fn lookup(&self, ip: IpAddr) -> Option<(Cidr, &Target)> {
        let ip = ip.to_canonical();
        let counts: &[u32] = match ip {
            IpAddr::V4(_) => &self.v4_lens,
            IpAddr::V6(_) => &self.v6_lens,
        };
        used_lens_longest_first(counts)
            // The lengths come from entries of this family, so they fit the address.
            .filter_map(|len| Cidr::new_truncating(ip, len).ok())
            .find_map(|cidr| self.entries.get(&cidr).map(|target| (cidr, target)))
    }

    /// All entries in [`Cidr`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&Cidr, &Target)> {
        self.entries.iter()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn count_mut(&mut self, cidr: Cidr) -> &mut u32 {
        let len = usize::from(cidr.prefix_len());
        match cidr.network() {
            IpAddr::V4(_) => &mut self.v4_lens[len],
            IpAddr::V6(_) => &mut self.v6_lens[len],
        }
    }
}

/// Prefix lengths with at least one entry, longest first, from a per-length count array.
fn used_lens_longest_first(counts: &[u32]) -> impl Iterator<Item = u8> + '_ {
    // The arrays have at most 129 slots, so every index fits in a u8.
    counts.iter().enumerate().rev().filter(|(_, count)| **count > 0).map(|(len, _)| len as u8)
}

impl FromIterator<(Cidr, Target)> for RouteTable {
    fn from_iter<I: IntoIterator<Item = (Cidr, Target)>>(iter: I) -> Self {
        let mut table = Self::new();
        for (cidr, target) in iter {
            table.insert(cidr, target);
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::SplitMix64;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn node(s: &str) -> Target {
        Target::Node(NodeId::new(s).expect("valid node name"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("valid ip")
    }

    #[test]
    fn longest_prefix_wins() {
        let table: RouteTable = [
            (cidr("0.0.0.0/0"), node("default")),
            (cidr("10.0.0.0/8"), node("ten")),
            (cidr("10.1.0.0/16"), Target::Group(GroupName::new("g").expect("valid"))),
            (cidr("10.1.2.3/32"), node("host")),
            (cidr("2001:db8::/32"), node("v6")),
        ]
        .into_iter()
        .collect();
        let hit = |s: &str| table.lookup(ip(s)).map(|(c, t)| (c.to_string(), t.to_string()));
        assert_eq!(hit("10.1.2.3"), Some(("10.1.2.3/32".into(), "host".into())));
        assert_eq!(hit("10.1.2.4"), Some(("10.1.0.0/16".into(), "group:g".into())));
        assert_eq!(hit("10.2.0.0"), Some(("10.0.0.0/8".into(), "ten".into())));
        assert_eq!(hit("192.0.2.1"), Some(("0.0.0.0/0".into(), "default".into())));
        assert_eq!(hit("::ffff:10.1.2.3"), Some(("10.1.2.3/32".into(), "host".into())));
        assert_eq!(hit("2001:db8:1::5"), Some(("2001:db8::/32".into(), "v6".into())));
        assert_eq!(hit("2001:db9::"), None);
    }

    #[test]
    fn insert_replace_remove_keep_counts_consistent() {
        let mut table = RouteTable::new();
        let net = cidr("10.0.0.0/8");
        assert_eq!(table.insert(net, node("a")), None);
        assert_eq!(table.insert(net, node("b")), Some(node("a")));
        assert_eq!(table.len(), 1);
        assert_eq!(table.lookup(ip("10.0.0.1")).map(|(_, t)| t.clone()), Some(node("b")));
        assert_eq!(table.remove(&net), Some(node("b")));
        assert_eq!(table.remove(&net), None);
        assert!(table.is_empty());
        assert_eq!(table.lookup(ip("10.0.0.1")), None);
        assert_eq!(used_lens_longest_first(&table.v4_lens).count(), 0);
    }

    #[test]
    fn target_text_form() {
        assert_eq!("node1".parse::<Target>(), Ok(node("node1")));
        assert_eq!("node:node1".parse::<Target>(), Ok(node("node1")));
        let group = "group:east".parse::<Target>().expect("valid");
        assert_eq!(group, Target::Group(GroupName::new("east").expect("valid")));
        assert_eq!(group.to_string(), "group:east");
        assert_eq!("group:".parse::<Target>(), Err(NameError::Empty));
    }

    /// A 10k-entry table agrees with a brute-force longest-match scan on random sources.
    #[test]
    fn large_table_matches_linear_scan() {
        let mut rng = SplitMix64::new(7);
        let mut table = RouteTable::new();
        for i in 0..10_000u32 {
            let (addr, len) = if i % 2 == 0 {
                // Confine IPv4 entries to 10.0.0.0/8 so random sources actually hit nested prefixes.
                let bits = 0x0a00_0000 | (rng.next_u64() as u32 & 0x00ff_ffff);
                (IpAddr::V4(Ipv4Addr::from(bits)), 8 + (rng.next_u64() % 25) as u8)
            } else {
                let bits = (0x2001_0db8u128 << 96) | (u128::from(rng.next_u64()) << 32);
                (IpAddr::V6(Ipv6Addr::from(bits)), 32 + (rng.next_u64() % 97) as u8)
            };
            let net = Cidr::new_truncating(addr, len).expect("valid length");
            table.insert(net, node(&format!("n{i}")));
        }
        // The linear-scan oracle is slow in debug builds; a thousand probes are plenty to catch a wrong match.
        for _ in 0..1_000 {
            let probe = if rng.next_u64().is_multiple_of(2) {
                IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (rng.next_u64() as u32 & 0x00ff_ffff)))
            } else {
                IpAddr::V6(Ipv6Addr::from((0x2001_0db8u128 << 96) | (u128::from(rng.next_u64()) << 32)))
            };
            let expected = table.iter().filter(|(c, _)| c.contains(probe)).max_by_key(|(c, _)| c.prefix_len());
            assert_eq!(table.lookup(probe), expected.map(|(c, t)| (*c, t)), "{probe}");
        }
    }
}
