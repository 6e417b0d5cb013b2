//! The decisions of NAT mode, free of I/O: what becomes of each packet the TUN device hands
//! over, given the flow table and the cluster as it is now.
//!
//! * A TCP SYN from a client to the public address, on a port a service listens on, opens an
//!   inbound flow: the destination becomes the node [`Cluster::choose`] ranks first for the
//!   client's address (the same table and hashing as proxy mode), on that node's port for
//!   the service. The node's replies leave from the public address again.
//! * A TCP SYN or UDP datagram from a node opens an outbound flow: the source becomes the
//!   node's own public alias (the paper's static assignment of the sending node), keeping the
//!   port when it is free, so replies come back to the alias and are sent on to the node.
//! * A packet of a known flow is rewritten as its flow says, in either direction.
//! * An ICMP error about a packet of a known flow is rewritten to match: the packet it
//!   quotes, and its outer addresses, become what the other side of the NAT sent or sees.
//! * A TCP segment of no known flow, to the public address, to an alias or from a node
//!   (including a node's connection to the public address: hairpin is not translated), is
//!   answered with a reset, as a host answers a segment for a closed port: a client never
//!   waits on a black hole, whether the port is not served, no node is available or its flow
//!   was reset or forgotten (say, by a router restart).
//! * Everything else is dropped, with a reason.
//!
//! When the cluster changes ([`Translator::set_view`]), the flows of nodes that went down or
//! left are reset both ways and forgotten; a drained node keeps its flows (draining means no
//! new connections, not the end of old ones).

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use super::conntrack::{Direction, Flow, FlowTable, InsertError, Origin, State, TcpState, Timeouts};
use super::packet::{self, IcmpError, Packet, ParseError, Payload, Protocol, TcpFlags, TcpSegment, Tuple};
use crate::node::{NodeId, NodeState};
use crate::pick::Cluster;
use crate::table::RouteTable;

/// A mail node as NAT mode sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatNode {
    /// The node's private address: where inbound flows are sent.
    pub ip: Ipv4Addr,
    /// Public port → the node's port for the same service; ports the node lacks are absent.
    pub ports: HashMap<u16, u16>,
    /// The public address the node's own outbound flows leave from; the public address if none.
    pub alias: Option<Ipv4Addr>,
}

/// The cluster at one moment: the routing table, the nodes' states and their addresses.
#[derive(Debug, Clone, Default)]
pub struct NatView {
    pub table: RouteTable,
    pub cluster: Cluster,
    pub nodes: HashMap<NodeId, NatNode>,
}

/// What to do with a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send it on: it was rewritten in place.
    Forward,
    /// Drop it and send this packet (a reset) back instead.
    Answer(Vec<u8>),
    /// Drop it.
    Discard(Discard),
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Discard {
    #[error("malformed: {0}")]
    Malformed(#[from] ParseError),
    #[error("not TCP, UDP or an ICMP error")]
    Unsupported,
    #[error("belongs to no flow")]
    NoFlow,
    #[error("not for the public address, an alias or from a node")]
    NotOurs,
    #[error("a node to the public address or an alias (hairpin) is not translated")]
    Hairpin,
    #[error("flow table full")]
    TableFull,
    #[error("no free port on the alias")]
    NoPort,
}

/// Packet and flow counts since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub forwarded: u64,
    pub answered: u64,
    pub discarded: u64,
    pub flows_opened: u64,
    pub flows_reset: u64,
}

/// Ports an outbound flow may be moved to when its own is taken on the alias.
const DYNAMIC_PORTS: std::ops::RangeInclusive<u16> = 1024..=65535;
/// How many ports are tried before an outbound flow is refused.
const PORT_ATTEMPTS: usize = 4096;

/// The NAT engine: the flow table and the decisions over it.
#[derive(Debug)]
pub struct Translator {
    public: Ipv4Addr,
    flows: FlowTable,
    view: NatView,
    /// Private address → node.
    by_ip: HashMap<Ipv4Addr, NodeId>,
    /// Every node's alias.
    aliases: HashSet<Ipv4Addr>,
    next_port: u16,
    counters: Counters,
}

impl Translator {
    /// A translator for the public address `public`, with an empty view.
    pub fn new(public: Ipv4Addr, max_flows: usize, timeouts: Timeouts) -> Self {
        Self {
            public,
            flows: FlowTable::new(max_flows, timeouts),
            view: NatView::default(),
            by_ip: HashMap::new(),
            aliases: HashSet::new(),
            next_port: *DYNAMIC_PORTS.start(),
            counters: Counters::default(),
        }
    }

    /// The number of flows in the table.
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// The flows, for status and tests.
    pub fn flows(&self) -> impl Iterator<Item = &Flow> {
        self.flows.iter().map(|(_, flow)| flow)
    }

    /// Packet and flow counts.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Forgets flows whose time has come; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        self.flows.expire(now)
    }

    /// Installs a new view of the cluster; returns the resets for the flows of nodes that are
    /// now down or gone (both ways, where the sequence numbers are known), which are forgotten.
    pub fn set_view(&mut self, view: NatView) -> Vec<Vec<u8>> {
        self.by_ip = view.nodes.iter().map(|(id, node)| (node.ip, id.clone())).collect();
        self.aliases = view.nodes.values().filter_map(|node| node.alias).collect();
        self.view = view;
        let dead: Vec<_> = self.flows.iter().filter(|(_, flow)| self.node_is_dead(flow)).map(|(id, _)| id).collect();
        let mut resets = Vec::new();
        for id in dead {
            if let Some(flow) = self.flows.remove(id) {
                tracing::info!(node = %flow.node, flow = %flow.original, "node down: flow reset");
                resets.extend(resets_for(&flow));
                self.counters.flows_reset += 1;
            }
        }
        resets
    }

    fn node_is_dead(&self, flow: &Flow) -> bool {
        let private_ip = match flow.origin {
            Origin::Inbound => *flow.translated.dst.ip(),
            Origin::Outbound => *flow.original.src.ip(),
        };
        let state = self.view.cluster.node(&flow.node).map(|n| n.state);
        let moved = self.view.nodes.get(&flow.node).is_none_or(|n| n.ip != private_ip);
        moved || state.is_none_or(|s| s == NodeState::Down)
    }

    /// Decides what becomes of the packet in `buf`, rewriting it in place when it is forwarded.
    pub fn handle(&mut self, buf: &mut [u8], now: Instant) -> Verdict {
        let verdict = self.decide(buf, now);
        match &verdict {
            Verdict::Forward => self.counters.forwarded += 1,
            Verdict::Answer(_) => self.counters.answered += 1,
            Verdict::Discard(_) => self.counters.discarded += 1,
        }
        verdict
    }

    fn decide(&mut self, buf: &mut [u8], now: Instant) -> Verdict {
        let packet = match Packet::parse(buf) {
            Ok(packet) => packet,
            Err(e) => return Verdict::Discard(e.into()),
        };
        if let Payload::IcmpError(error) = packet.payload {
            return self.icmp_error(buf, &packet, &error);
        }
        let Some(tuple) = packet.tuple() else { return Verdict::Discard(Discard::Unsupported) };
        let segment = packet.tcp();
        if let Some((id, direction)) = self.flows.lookup(&tuple) {
            let flow = self.flows.get(id).expect("indexed flows exist");
            // A new connection on the tuple of a closed one (port reuse) starts a new flow.
            let reopens = direction == Direction::Original
                && segment.is_some_and(|s| s.flags.is_syn_only())
                && flow.state() == State::Tcp(TcpState::Closed);
            if !reopens {
                let to = flow.leaving(direction);
                self.flows.track(id, direction, segment.as_ref(), now);
                packet::rewrite(buf, &packet, to);
                return Verdict::Forward;
            }
            self.flows.remove(id);
        }
        self.new_flow(buf, &packet, tuple, segment, now)
    }

    /// A packet of no known flow.
    fn new_flow(
        &mut self,
        buf: &mut [u8],
        packet: &Packet,
        tuple: Tuple,
        segment: Option<TcpSegment>,
        now: Instant,
    ) -> Verdict {
        let from_node = self.by_ip.get(tuple.src.ip()).cloned();
        let to_us = *tuple.dst.ip() == self.public || self.aliases.contains(tuple.dst.ip());
        if !to_us && from_node.is_none() {
            return Verdict::Discard(Discard::NotOurs);
        }
        if from_node.is_some() && to_us {
            // Refused rather than dropped, so the node's connect fails at once.
            return match segment {
                Some(segment) => refuse(tuple, &segment, Discard::Hairpin),
                None => Verdict::Discard(Discard::Hairpin),
            };
        }
        // TCP flows start with a SYN; any other segment is answered as by a closed port.
        if let Some(segment) = segment
            && !segment.flags.is_syn_only()
        {
            return refuse(tuple, &segment, Discard::NoFlow);
        }
        let opened = match from_node {
            Some(node) => self.outbound(node, tuple, now),
            None if *tuple.dst.ip() == self.public => self.inbound(tuple, now),
            // Nothing is opened towards an alias from outside.
            None => Err(Discard::NoFlow),
        };
        match opened {
            Ok(to) => {
                self.counters.flows_opened += 1;
                packet::rewrite(buf, packet, to);
                Verdict::Forward
            }
            Err(Discard::TableFull) => Verdict::Discard(Discard::TableFull),
            Err(why) => match segment {
                Some(segment) => refuse(tuple, &segment, why),
                None => Verdict::Discard(why),
            },
        }
    }

    /// Opens a client's flow to the node chosen for its address; returns the translated tuple.
    fn inbound(&mut self, tuple: Tuple, now: Instant) -> Result<Tuple, Discard> {
        if tuple.protocol != Protocol::Tcp {
            return Err(Discard::NoFlow);
        }
        let choice = self.view.cluster.choose((*tuple.src.ip()).into(), &self.view.table);
        let port = tuple.dst.port();
        let (node, to) = choice
            .candidates
            .iter()
            .find_map(|id| {
                let node = self.view.nodes.get(id)?;
                let node_port = *node.ports.get(&port)?;
                Some((id.clone(), SocketAddrV4::new(node.ip, node_port)))
            })
            .ok_or(Discard::NoFlow)?;
        let translated = Tuple { dst: to, ..tuple };
        self.flows.insert(Origin::Inbound, node.clone(), tuple, translated, now).map_err(insert_error)?;
        tracing::debug!(client = %tuple.src, %node, reason = %choice.reason, "nat: inbound flow");
        Ok(translated)
    }

    /// Opens a node's own flow from its alias; returns the translated tuple.
    fn outbound(&mut self, node: NodeId, tuple: Tuple, now: Instant) -> Result<Tuple, Discard> {
        let alias = self.view.nodes.get(&node).and_then(|n| n.alias).unwrap_or(self.public);
        // Keep the node's port when the alias has it free, else find another.
        let keep = std::iter::once(tuple.src.port());
        let others = (0..PORT_ATTEMPTS).map(|_| {
            let port = self.next_port;
            self.next_port = if port == *DYNAMIC_PORTS.end() { *DYNAMIC_PORTS.start() } else { port + 1 };
            port
        });
        let flows = &self.flows;
        let translated = keep
            .chain(others)
            .map(|port| Tuple { src: SocketAddrV4::new(alias, port), ..tuple })
            .find(|t| flows.is_free(&t.reversed()))
            .ok_or(Discard::NoPort)?;
        self.flows.insert(Origin::Outbound, node.clone(), tuple, translated, now).map_err(insert_error)?;
        tracing::debug!(%node, from = %translated.src, to = %tuple.dst, "nat: outbound flow");
        Ok(translated)
    }

    /// An ICMP error about a packet of a known flow: the quoted packet left the NAT as one
    /// of the flow's leaving tuples, so the error travels the other way and is rewritten to
    /// what that packet was before translation.
    fn icmp_error(&mut self, buf: &mut [u8], packet: &Packet, error: &IcmpError) -> Verdict {
        let quoted = error.quoted;
        // The error goes back to whoever sent the quoted packet.
        if packet.dst != *quoted.src.ip() {
            return Verdict::Discard(Discard::NoFlow);
        }
        // A packet going the way of the error would arrive with the quoted tuple reversed.
        let Some((id, direction)) = self.flows.lookup(&quoted.reversed()) else {
            return Verdict::Discard(Discard::NoFlow);
        };
        let flow = self.flows.get(id).expect("indexed flows exist");
        let before = flow.leaving(direction).reversed();
        // The sender of the error keeps its address, unless it is the quoted packet's
        // destination itself, which is then seen as what the other side addressed.
        let src = if packet.src == *quoted.dst.ip() { *before.dst.ip() } else { packet.src };
        packet::rewrite_icmp_error(buf, packet, src, *before.src.ip(), before);
        Verdict::Forward
    }
}

fn insert_error(e: InsertError) -> Discard {
    match e {
        InsertError::Full => Discard::TableFull,
        InsertError::Taken => Discard::NoFlow,
    }
}

/// Answers a TCP segment that opens or belongs to no flow with a reset (never a reset with a reset).
fn refuse(tuple: Tuple, segment: &TcpSegment, why: Discard) -> Verdict {
    match packet::reset_for(tuple, segment) {
        Some(reset) => Verdict::Answer(reset),
        None => Verdict::Discard(why),
    }
}

/// Resets that end a TCP flow at both ends: to the initiator as if from the address it
/// talks to, and to the responder as if from the address it sees. Each needs the sequence
/// number its receiver expects next, so a side that sent nothing yet gets none.
fn resets_for(flow: &Flow) -> Vec<Vec<u8>> {
    if flow.original.protocol != Protocol::Tcp || flow.state() == State::Tcp(TcpState::Closed) {
        return Vec::new();
    }
    let ends = [(Direction::Reply, flow.original.reversed()), (Direction::Original, flow.translated)];
    ends.into_iter()
        .filter_map(|(from, path)| {
            let seq = flow.next_seq(from)?;
            let other = match from {
                Direction::Reply => Direction::Original,
                Direction::Original => Direction::Reply,
            };
            Some(match flow.next_seq(other) {
                Some(ack) => packet::tcp_packet(path.src, path.dst, seq, ack, TcpFlags::RST | TcpFlags::ACK, &[]),
                None => packet::tcp_packet(path.src, path.dst, seq, 0, TcpFlags::RST, &[]),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::{Rendezvous, SplitMix64};
    use crate::pick::ClusterNode;
    use std::time::Duration;

    const PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
    const SYN: u8 = TcpFlags::SYN;
    const ACK: u8 = TcpFlags::ACK;
    const FIN: u8 = TcpFlags::FIN;
    const RST: u8 = TcpFlags::RST;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).expect("valid")
    }

    fn sa(s: &str) -> SocketAddrV4 {
        s.parse().expect("valid")
    }

    /// Two nodes at 198.19.0.11 and .12; public port 25 → 2525 and 143 → 2143 on both; aliases .11 and .12.
    fn view(states: [NodeState; 2], routes: &[(&str, &str)]) -> NatView {
        let mut cluster = Cluster::new(Rendezvous::default());
        let mut nodes = HashMap::new();
        for (i, state) in states.into_iter().enumerate() {
            let name = id(&format!("node{}", i + 1));
            cluster.upsert_node(ClusterNode { id: name.clone(), weight: 1, state });
            let ip = Ipv4Addr::new(198, 19, 0, 11 + i as u8);
            let alias = Some(Ipv4Addr::new(198, 18, 100, 11 + i as u8));
            nodes.insert(name, NatNode { ip, ports: [(25, 2525), (143, 2143)].into(), alias });
        }
        let table = routes.iter().map(|(c, t)| (c.parse().expect("cidr"), t.parse().expect("target"))).collect();
        NatView { table, cluster, nodes }
    }

    fn healthy() -> [NodeState; 2] {
        [NodeState::Healthy, NodeState::Healthy]
    }

    fn translator(view: NatView) -> Translator {
        let mut nat = Translator::new(PUBLIC, 1000, Timeouts::default());
        assert!(nat.set_view(view).is_empty());
        nat
    }

    fn tcp(src: &str, dst: &str, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        packet::tcp_packet(sa(src), sa(dst), seq, ack, flags, payload)
    }

    /// Runs a packet through and returns the forwarded packet (checked valid) or panics.
    fn forward(nat: &mut Translator, mut buf: Vec<u8>, now: Instant) -> Packet {
        let verdict = nat.handle(&mut buf, now);
        assert_eq!(verdict, Verdict::Forward, "{:?}", Packet::parse(&buf));
        let packet = Packet::parse(&buf).expect("forwarded packets parse");
        assert!(packet::ip_and_icmp_checksums_ok(&buf, &packet));
        assert!(packet.tuple().is_none() || packet::transport_checksum_ok(&buf, &packet));
        packet
    }

    fn answer(nat: &mut Translator, mut buf: Vec<u8>, now: Instant) -> (Tuple, TcpSegment) {
        match nat.handle(&mut buf, now) {
            Verdict::Answer(reset) => {
                let p = Packet::parse(&reset).expect("parses");
                assert!(packet::transport_checksum_ok(&reset, &p));
                (p.tuple().expect("tcp"), p.tcp().expect("tcp"))
            }
            other => panic!("expected a reset, got {other:?}"),
        }
    }

    /// A whole SMTP-like TCP session: handshake, data both ways, close, expiry.
    #[test]
    fn inbound_session_goes_to_the_table_node_and_back() {
        let t0 = Instant::now();
        let mut nat = translator(view(healthy(), &[("198.18.1.0/24", "node2")]));
        let syn = forward(&mut nat, tcp("198.18.1.10:40000", "198.18.100.1:25", 100, 0, SYN, &[]), t0);
        assert_eq!(syn.tuple().map(|t| t.dst), Some(sa("198.19.0.12:2525")));
        assert_eq!(syn.src, Ipv4Addr::new(198, 18, 1, 10), "the node sees the real client");
        let synack = forward(&mut nat, tcp("198.19.0.12:2525", "198.18.1.10:40000", 900, 101, SYN | ACK, &[]), t0);
        assert_eq!(synack.tuple().map(|t| t.src), Some(sa("198.18.100.1:25")));
        forward(&mut nat, tcp("198.18.1.10:40000", "198.18.100.1:25", 101, 901, ACK, &[]), t0);
        let banner = forward(&mut nat, tcp("198.19.0.12:2525", "198.18.1.10:40000", 901, 101, ACK, b"220 hi\r\n"), t0);
        assert_eq!(banner.tuple().map(|t| t.src), Some(sa("198.18.100.1:25")));
        assert_eq!(nat.flow_count(), 1);
        forward(&mut nat, tcp("198.18.1.10:40000", "198.18.100.1:25", 101, 909, FIN | ACK, &[]), t0);
        forward(&mut nat, tcp("198.19.0.12:2525", "198.18.1.10:40000", 909, 102, FIN | ACK, &[]), t0);
        forward(&mut nat, tcp("198.18.1.10:40000", "198.18.100.1:25", 102, 910, ACK, &[]), t0);
        assert_eq!(nat.expire(t0 + Timeouts::default().tcp_closed), 1);
        assert_eq!(nat.flow_count(), 0);
        assert_eq!(nat.counters().flows_opened, 1);
    }

    #[test]
    fn unrouted_sources_are_hashed_as_in_proxy_mode() {
        let t0 = Instant::now();
        let view = view(healthy(), &[]);
        let cluster = view.cluster.clone();
        let mut nat = translator(view);
        let mut rng = SplitMix64::new(5);
        let mut seen = HashSet::new();
        for i in 0..200u16 {
            let src = Ipv4Addr::from(0xc612_0000 | (rng.next_u64() as u32 & 0xffff));
            let want = &cluster.choose(src.into(), &RouteTable::new()).candidates[0];
            let buf =
                packet::tcp_packet(SocketAddrV4::new(src, 30000 + i), SocketAddrV4::new(PUBLIC, 143), 1, 0, SYN, &[]);
            let p = forward(&mut nat, buf, t0);
            let node_ip = if want.as_str() == "node1" { [198, 19, 0, 11] } else { [198, 19, 0, 12] };
            assert_eq!(p.tuple().map(|t| t.dst), Some(SocketAddrV4::new(node_ip.into(), 2143)), "{src}");
            seen.insert(want.clone());
        }
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn outbound_flows_leave_from_the_alias_and_replies_return() {
        let t0 = Instant::now();
        let mut nat = translator(view(healthy(), &[]));
        let out = forward(&mut nat, tcp("198.19.0.11:45000", "198.18.2.1:25", 7, 0, SYN, &[]), t0);
        assert_eq!(out.tuple().map(|t| t.src), Some(sa("198.18.100.11:45000")), "port kept");
        let back = forward(&mut nat, tcp("198.18.2.1:25", "198.18.100.11:45000", 50, 8, SYN | ACK, &[]), t0);
        assert_eq!(back.tuple().map(|t| t.dst), Some(sa("198.19.0.11:45000")));
        // The other node's flow uses its own alias.
        let out = forward(&mut nat, tcp("198.19.0.12:45000", "198.18.2.1:25", 7, 0, SYN, &[]), t0);
        assert_eq!(out.tuple().map(|t| t.src), Some(sa("198.18.100.12:45000")));
        // UDP too (a resolver's query).
        let mut udp = packet::udp_packet(sa("198.19.0.11:5353"), sa("198.18.2.53:53"), b"q");
        assert_eq!(nat.handle(&mut udp, t0), Verdict::Forward);
        let mut reply = packet::udp_packet(sa("198.18.2.53:53"), sa("198.18.100.11:5353"), b"a");
        assert_eq!(nat.handle(&mut reply, t0), Verdict::Forward);
        assert_eq!(Packet::parse(&reply).ok().and_then(|p| p.tuple()).map(|t| t.dst), Some(sa("198.19.0.11:5353")));
    }

    #[test]
    fn a_taken_alias_port_is_replaced() {
        let t0 = Instant::now();
        let mut v = view(healthy(), &[]);
        // Both nodes share one alias: the second flow from the same port must move.
        for node in v.nodes.values_mut() {
            node.alias = None;
        }
        let mut nat = translator(v);
        let a = forward(&mut nat, tcp("198.19.0.11:45000", "198.18.2.1:25", 7, 0, SYN, &[]), t0);
        let b = forward(&mut nat, tcp("198.19.0.12:45000", "198.18.2.1:25", 7, 0, SYN, &[]), t0);
        let (a, b) = (a.tuple().expect("tcp").src, b.tuple().expect("tcp").src);
        assert_eq!(a, sa("198.18.100.1:45000"));
        assert_eq!(*b.ip(), PUBLIC);
        assert_ne!(b.port(), 45000);
        let back = forward(&mut nat, packet::tcp_packet(sa("198.18.2.1:25"), b, 50, 8, SYN | ACK, &[]), t0);
        assert_eq!(back.tuple().map(|t| t.dst), Some(sa("198.19.0.12:45000")));
    }

    #[test]
    fn segments_of_no_flow_are_reset_never_black_holed() {
        let t0 = Instant::now();
        let mut nat = translator(view(healthy(), &[]));
        // A port no service listens on.
        let (t, seg) = answer(&mut nat, tcp("198.18.1.10:40000", "198.18.100.1:22", 5, 0, SYN, &[]), t0);
        assert_eq!(t, Tuple { protocol: Protocol::Tcp, src: sa("198.18.100.1:22"), dst: sa("198.18.1.10:40000") });
        assert_eq!((seg.ack, seg.flags), (6, TcpFlags(RST | ACK)));
        // Data on a flow the router does not know (say, from before a restart).
        let (_, seg) = answer(&mut nat, tcp("198.18.1.10:40001", "198.18.100.1:25", 5, 777, ACK, b"x"), t0);
        assert_eq!((seg.seq, seg.flags), (777, TcpFlags(RST)));
        // A node's segment of a forgotten flow is reset too.
        answer(&mut nat, tcp("198.19.0.11:2525", "198.18.1.10:40002", 5, 9, ACK, b"x"), t0);
        // A reset is never answered, and strangers' packets are not ours to answer.
        let mut rst = tcp("198.18.1.10:40000", "198.18.100.1:25", 5, 0, RST, &[]);
        assert_eq!(nat.handle(&mut rst, t0), Verdict::Discard(Discard::NoFlow));
        let mut stranger = tcp("198.18.1.10:40000", "203.0.113.5:25", 5, 0, SYN, &[]);
        assert_eq!(nat.handle(&mut stranger, t0), Verdict::Discard(Discard::NotOurs));
        // Nothing opens towards an alias from outside.
        answer(&mut nat, tcp("198.18.1.10:40000", "198.18.100.11:25", 5, 0, SYN, &[]), t0);
        assert_eq!(nat.flow_count(), 0);
    }

    #[test]
    fn no_node_at_all_is_a_reset() {
        let t0 = Instant::now();
        let mut nat = translator(view([NodeState::Drained, NodeState::Drained], &[]));
        answer(&mut nat, tcp("198.18.1.10:40000", "198.18.100.1:25", 5, 0, SYN, &[]), t0);
    }

    #[test]
    fn hairpin_is_refused() {
        let t0 = Instant::now();
        let mut nat = translator(view(healthy(), &[]));
        let (t, _) = answer(&mut nat, tcp("198.19.0.11:45000", "198.18.100.1:25", 7, 0, SYN, &[]), t0);
        assert_eq!(t.dst, sa("198.19.0.11:45000"));
        let mut udp = packet::udp_packet(sa("198.19.0.11:5353"), sa("198.18.100.12:53"), b"q");
        assert_eq!(nat.handle(&mut udp, t0), Verdict::Discard(Discard::Hairpin));
        assert_eq!(nat.flow_count(), 0);
    }

    /// Establishes client → public:25 → node at `node_ip`, with data both ways; returns the client port's flow.
    fn established(nat: &mut Translator, client: &str, t0: Instant) -> SocketAddrV4 {
        let syn = forward(nat, tcp(client, "198.18.100.1:25", 100, 0, SYN, &[]), t0);
        let node = syn.tuple().expect("tcp").dst;
        let node_s = node.to_string();
        forward(nat, tcp(&node_s, client, 900, 101, SYN | ACK, &[]), t0);
        forward(nat, tcp(client, "198.18.100.1:25", 101, 901, ACK, b"EHLO\r\n"), t0);
        forward(nat, tcp(&node_s, client, 901, 107, ACK, b"250 ok\r\n"), t0);
        node
    }

    #[test]
    fn a_node_going_down_resets_its_flows_both_ways() {
        let t0 = Instant::now();
        let mut nat = translator(view(healthy(), &[("198.18.1.0/24", "node2")]));
        let node = established(&mut nat, "198.18.1.10:40000", t0);
        assert_eq!(node, sa("198.19.0.12:2525"));
        // A flow on node1 stays.
        let mut other = view(healthy(), &[("198.18.1.0/24", "node2")]);
        other.table = RouteTable::new();
        nat.set_view(other);
        forward(&mut nat, tcp("198.18.9.9:40000", "198.18.100.1:25", 1, 0, SYN, &[]), t0);
        let flows_before = nat.flow_count();

        let resets = nat.set_view(view([NodeState::Healthy, NodeState::Down], &[("198.18.1.0/24", "node2")]));
        let resets: Vec<(Tuple, TcpSegment)> = resets
            .iter()
            .map(|b| {
                let p = Packet::parse(b).expect("parses");
                assert!(packet::transport_checksum_ok(b, &p));
                (p.tuple().expect("tcp"), p.tcp().expect("tcp"))
            })
            .collect();
        let to_client = Tuple { protocol: Protocol::Tcp, src: sa("198.18.100.1:25"), dst: sa("198.18.1.10:40000") };
        let to_node = Tuple { protocol: Protocol::Tcp, src: sa("198.18.1.10:40000"), dst: node };
        // Each end gets the sequence number it expects next, so its stack takes the reset.
        assert_eq!(resets.len(), 2);
        assert!(resets.iter().any(|(t, s)| *t == to_client && s.seq == 909 && s.ack == 107 && s.flags.has(RST)));
        assert!(resets.iter().any(|(t, s)| *t == to_node && s.seq == 107 && s.ack == 909));
        assert_eq!(nat.flow_count(), flows_before - 1);
        // The same client now gets node1.
        let syn = forward(&mut nat, tcp("198.18.1.10:40001", "198.18.100.1:25", 1, 0, SYN, &[]), t0);
        assert_eq!(syn.tuple().map(|t| t.dst), Some(sa("198.19.0.11:2525")));
    }

    #[test]
    fn a_drained_node_keeps_its_flows() {
        let t0 = Instant::now();
        let mut nat = translator(view(healthy(), &[("198.18.1.0/24", "node2")]));
        established(&mut nat, "198.18.1.10:40000", t0);
        let routes = [("198.18.1.0/24", "node2")];
        assert!(nat.set_view(view([NodeState::Healthy, NodeState::Drained], &routes)).is_empty());
        let reply = forward(&mut nat, tcp("198.19.0.12:2525", "198.18.1.10:40000", 909, 107, ACK, b"x"), t0);
        assert_eq!(reply.src, PUBLIC);
        let syn = forward(&mut nat, tcp("198.18.1.10:40001", "198.18.100.1:25", 1, 0, SYN, &[]), t0);
        assert_eq!(syn.tuple().map(|t| t.dst), Some(sa("198.19.0.11:2525")));
    }

    #[test]
    fn a_closed_flow_is_replaced_by_a_new_syn_on_its_tuple() {
        let t0 = Instant::now();
        let mut nat = translator(view(healthy(), &[("198.18.1.0/24", "node2")]));
        established(&mut nat, "198.18.1.10:40000", t0);
        forward(&mut nat, tcp("198.19.0.12:2525", "198.18.1.10:40000", 909, 107, RST, &[]), t0);
        let routes = [("198.18.1.0/24", "node1")];
        nat.set_view(view(healthy(), &routes));
        let syn = forward(&mut nat, tcp("198.18.1.10:40000", "198.18.100.1:25", 5000, 0, SYN, &[]), t0);
        assert_eq!(syn.tuple().map(|t| t.dst), Some(sa("198.19.0.11:2525")));
        assert_eq!(nat.flow_count(), 1);
    }

    #[test]
    fn a_full_table_drops_new_flows() {
        let t0 = Instant::now();
        let mut nat = Translator::new(PUBLIC, 2, Timeouts::default());
        nat.set_view(view(healthy(), &[]));
        established(&mut nat, "198.18.1.10:40000", t0);
        established(&mut nat, "198.18.1.11:40000", t0);
        let mut syn = tcp("198.18.1.12:40000", "198.18.100.1:25", 1, 0, SYN, &[]);
        assert_eq!(nat.handle(&mut syn, t0), Verdict::Discard(Discard::TableFull));
        // Expired flows make room.
        let later = t0 + Timeouts::default().tcp_established + Duration::from_secs(1);
        let mut syn = tcp("198.18.1.12:40000", "198.18.100.1:25", 1, 0, SYN, &[]);
        assert_eq!(nat.handle(&mut syn, later), Verdict::Forward);
    }

    #[test]
    fn icmp_errors_follow_their_flow() {
        let t0 = Instant::now();
        let mut nat = translator(view(healthy(), &[("198.18.1.0/24", "node2")]));
        established(&mut nat, "198.18.1.10:40000", t0);
        // A hop on the public side cannot pass a reply on (fragmentation needed): it tells the
        // public address, and the node that sent it must hear.
        let as_sent = tcp("198.18.100.1:25", "198.18.1.10:40000", 909, 107, ACK, &[0; 1400]);
        let hop = Ipv4Addr::new(198, 18, 0, 2);
        let error = packet::icmp_error(hop, PUBLIC, 3, 4, &as_sent);
        let p = forward(&mut nat, error, t0);
        assert_eq!((p.src, p.dst), (hop, Ipv4Addr::new(198, 19, 0, 12)));
        let Payload::IcmpError(e) = p.payload else { panic!("{p:?}") };
        let quoted = Tuple { protocol: Protocol::Tcp, src: sa("198.19.0.12:2525"), dst: sa("198.18.1.10:40000") };
        assert_eq!(e.quoted, quoted);

        // The node itself reports a problem with a client's packet: it must look like it came
        // from the public address, about a packet sent to the public address.
        let as_delivered = tcp("198.18.1.10:40000", "198.19.0.12:2525", 107, 909, ACK, b"x");
        let error =
            packet::icmp_error(Ipv4Addr::new(198, 19, 0, 12), Ipv4Addr::new(198, 18, 1, 10), 3, 3, &as_delivered);
        let p = forward(&mut nat, error, t0);
        assert_eq!((p.src, p.dst), (PUBLIC, Ipv4Addr::new(198, 18, 1, 10)));
        let Payload::IcmpError(e) = p.payload else { panic!("{p:?}") };
        assert_eq!(e.quoted.dst, sa("198.18.100.1:25"));

        // An error about no known flow goes nowhere.
        let unknown = tcp("198.18.100.1:25", "198.18.1.99:1", 1, 1, ACK, &[]);
        let mut error = packet::icmp_error(hop, PUBLIC, 3, 1, &unknown);
        assert_eq!(nat.handle(&mut error, t0), Verdict::Discard(Discard::NoFlow));
    }

    /// Random packets — garbage, and mutations of real flows' packets — never panic the
    /// translator, and whatever it forwards or answers is a valid packet.
    #[test]
    fn random_packets_never_panic() {
        let t0 = Instant::now();
        let mut nat = Translator::new(PUBLIC, 64, Timeouts::default());
        nat.set_view(view(healthy(), &[("198.18.1.0/25", "node1")]));
        let mut rng = SplitMix64::new(2000);
        let addrs = ["198.18.1.10", "198.18.1.200", "198.18.100.1", "198.18.100.11", "198.19.0.11", "198.19.0.12"];
        fn pick(rng: &mut SplitMix64, n: usize) -> usize {
            rng.next_u64() as usize % n
        }
        for i in 0..30_000u32 {
            let rng = &mut rng;
            let src = SocketAddrV4::new(
                addrs[pick(rng, addrs.len())].parse().expect("ip"),
                [25, 143, 2525, 40000][pick(rng, 4)],
            );
            let dst = SocketAddrV4::new(
                addrs[pick(rng, addrs.len())].parse().expect("ip"),
                [25, 143, 2525, 40000][pick(rng, 4)],
            );
            let flags = [SYN, SYN | ACK, ACK, FIN | ACK, RST, 0xff, 0][pick(rng, 7)];
            let mut buf = match pick(rng, 4) {
                0 => packet::udp_packet(src, dst, b"u"),
                1 => {
                    let inner = packet::tcp_packet(dst, src, i, i, ACK, b"q");
                    packet::icmp_error(*src.ip(), *dst.ip(), [3, 11, 12, 8][pick(rng, 4)], 0, &inner)
                }
                _ => packet::tcp_packet(src, dst, i, i, flags, b"payload"),
            };
            if pick(rng, 4) == 0 {
                let at = pick(rng, buf.len());
                buf[at] = rng.next_u64() as u8;
            }
            let now = t0 + Duration::from_millis(u64::from(i) * 10);
            match nat.handle(&mut buf, now) {
                Verdict::Forward => {
                    let p = Packet::parse(&buf).expect("forwarded packets parse");
                    assert!(packet::ip_and_icmp_checksums_ok(&buf, &p));
                }
                Verdict::Answer(reset) => {
                    let p = Packet::parse(&reset).expect("answers parse");
                    assert!(packet::transport_checksum_ok(&reset, &p));
                }
                Verdict::Discard(_) => {}
            }
            if i % 1000 == 0 {
                nat.expire(now);
                let states = [NodeState::Healthy, NodeState::Down, NodeState::Drained];
                let _ = nat.set_view(view([states[pick(rng, 3)], states[pick(rng, 3)]], &[]));
            }
            assert!(nat.flow_count() <= 64);
        }
    }
}
