//! Connection tracking: every translated flow, found by the tuple of a packet going either
//! way, with expiry that follows TCP's state and a limit on how many flows are kept.
//!
//! A flow is two tuples: `original`, as its first packet arrived, and `translated`, as that
//! packet left. A packet in the original direction arrives with `original` and leaves with
//! `translated`; a reply arrives with `translated` reversed and leaves with `original`
//! reversed. Both arrival tuples index the flow, so one hash lookup finds a packet's flow and
//! its direction.
//!
//! Flows live in a slab (a vector of slots and a free list), so an expiry pass is a linear
//! scan without hashing, and evicting for room can look at a bounded window of slots.
//!
//! TCP is followed by its flags only (no window checks): SYN, SYN+ACK and ACK establish, a
//! FIN each way closes, a RST ends at once. Each state has its own idle timeout
//! ([`Timeouts`]): a half-open flow goes quickly, an established one lives as long as an idle
//! IMAP session may, and a closed one stays only long enough to let the last ACK and any
//! retransmitted FIN through.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::packet::{Protocol, TcpFlags, TcpSegment, Tuple};
use crate::node::NodeId;

/// Idle timeouts per flow state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP before the handshake completes.
    pub tcp_syn: Duration,
    /// TCP established.
    pub tcp_established: Duration,
    /// TCP after a FIN one way, before one the other way.
    pub tcp_closing: Duration,
    /// TCP after FINs both ways or a RST.
    pub tcp_closed: Duration,
    /// UDP.
    pub udp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tcp_syn: Duration::from_secs(60),
            // RFC 5382 REQ-5: at least 2 hours 4 minutes; IMAP IDLE needs 30 minutes.
            tcp_established: Duration::from_secs(7440),
            // RFC 5382: the transitory timeout is at least 4 minutes.
            tcp_closing: Duration::from_secs(240),
            tcp_closed: Duration::from_secs(10),
            // RFC 4787 REQ-5: at least 2 minutes.
            udp: Duration::from_secs(120),
        }
    }
}

/// Which way a packet travels relative to the flow's first packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Same way as the first packet.
    Original,
    /// Back towards the flow's initiator.
    Reply,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Self::Original => 0,
            Self::Reply => 1,
        }
    }
}

/// Who opened the flow, which says which translation it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client to the public address: destination rewritten to a node (DNAT).
    Inbound,
    /// A node to the world: source rewritten to its public alias (SNAT).
    Outbound,
}

/// Where a TCP flow is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    /// The initiator's SYN was seen.
    SynSent,
    /// The responder's SYN+ACK was seen.
    SynReceived,
    /// The initiator acknowledged the SYN+ACK.
    Established,
    /// One side sent a FIN.
    Closing,
    /// Both sides sent a FIN, or either a RST.
    Closed,
}

/// The protocol state of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Tcp(TcpState),
    Udp,
}

/// One tracked flow.
#[derive(Debug, Clone)]
pub struct Flow {
    pub origin: Origin,
    /// The node on the private side.
    pub node: NodeId,
    /// The first packet's tuple as it arrived.
    pub original: Tuple,
    /// The first packet's tuple as it left.
    pub translated: Tuple,
    state: State,
    fin_seen: [bool; 2],
    /// Per direction: the sequence number after the furthest segment seen (TCP).
    next_seq: [Option<u32>; 2],
    replied: bool,
    expires: Instant,
}

impl Flow {
    /// The tuple a packet arriving in `direction` carries.
    pub fn arriving(&self, direction: Direction) -> Tuple {
        match direction {
            Direction::Original => self.original,
            Direction::Reply => self.translated.reversed(),
        }
    }

    /// The tuple a packet arriving in `direction` leaves with.
    pub fn leaving(&self, direction: Direction) -> Tuple {
        match direction {
            Direction::Original => self.translated,
            Direction::Reply => self.original.reversed(),
        }
    }

    /// The flow's protocol state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether a packet came back the other way.
    pub fn replied(&self) -> bool {
        self.replied
    }

    /// The sequence number the receiver of `direction`'s packets expects next (TCP).
    pub fn next_seq(&self, direction: Direction) -> Option<u32> {
        self.next_seq[direction.index()]
    }

    /// When the flow expires if nothing more is seen.
    pub fn expires(&self) -> Instant {
        self.expires
    }

    fn timeout(&self, timeouts: &Timeouts) -> Duration {
        match self.state {
            State::Udp => timeouts.udp,
            State::Tcp(TcpState::SynSent | TcpState::SynReceived) => timeouts.tcp_syn,
            State::Tcp(TcpState::Established) => timeouts.tcp_established,
            State::Tcp(TcpState::Closing) => timeouts.tcp_closing,
            State::Tcp(TcpState::Closed) => timeouts.tcp_closed,
        }
    }

    /// Advances the TCP state by one segment travelling in `direction`.
    fn track_tcp(&mut self, direction: Direction, segment: &TcpSegment) {
        let State::Tcp(state) = self.state else { return };
        let flags = segment.flags;
        if !segment.is_empty() {
            let slot = &mut self.next_seq[direction.index()];
            let end = segment.end();
            // Keep the furthest end, comparing in sequence space (mod 2^32).
            if slot.is_none_or(|current| (end.wrapping_sub(current) as i32) > 0) {
                *slot = Some(end);
            }
        }
        let next = if flags.has(TcpFlags::RST) {
            TcpState::Closed
        } else if flags.has(TcpFlags::FIN) {
            self.fin_seen[direction.index()] = true;
            if self.fin_seen == [true, true] { TcpState::Closed } else { state.max_closing() }
        } else {
            match (state, direction) {
                (TcpState::SynSent, Direction::Reply) if flags.has(TcpFlags::SYN | TcpFlags::ACK) => {
                    TcpState::SynReceived
                }
                (TcpState::SynReceived, Direction::Original) if flags.has(TcpFlags::ACK) => TcpState::Established,
                (state, _) => state,
            }
        };
        self.state = State::Tcp(next);
    }
}

impl TcpState {
    /// The state after a first FIN: closing, unless already closed.
    fn max_closing(self) -> TcpState {
        if self == TcpState::Closed { TcpState::Closed } else { TcpState::Closing }
    }
}

/// A flow's handle in the table; valid until the flow is removed.
pub type FlowId = u32;

/// Why a flow was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    /// The table holds its limit of flows and none could be evicted.
    #[error("flow table full")]
    Full,
    /// A packet of another flow already arrives with one of this flow's tuples.
    #[error("tuple in use by another flow")]
    Taken,
}

/// How many slots an eviction looks at, at most, for a flow that never got a reply.
const EVICTION_WINDOW: usize = 64;

/// The flow table.
#[derive(Debug)]
pub struct FlowTable {
    slots: Vec<Option<Flow>>,
    free: Vec<FlowId>,
    index: HashMap<Tuple, (FlowId, Direction)>,
    len: usize,
    limit: usize,
    timeouts: Timeouts,
    /// Where the next eviction search starts, so searches rotate over the slab.
    evict_cursor: usize,
}

impl FlowTable {
    /// An empty table for at most `limit` flows.
    pub fn new(limit: usize, timeouts: Timeouts) -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            len: 0,
            limit: limit.max(1),
            timeouts,
            evict_cursor: 0,
        }
    }

    /// Number of flows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The flow a packet arriving with `tuple` belongs to, and its direction.
    pub fn lookup(&self, tuple: &Tuple) -> Option<(FlowId, Direction)> {
        self.index.get(tuple).copied()
    }

    /// Whether no flow's packets arrive with `tuple`.
    pub fn is_free(&self, tuple: &Tuple) -> bool {
        !self.index.contains_key(tuple)
    }

    /// The flow with this id.
    pub fn get(&self, id: FlowId) -> Option<&Flow> {
        self.slots.get(id as usize).and_then(Option::as_ref)
    }

    /// Every flow.
    pub fn iter(&self) -> impl Iterator<Item = (FlowId, &Flow)> {
        self.slots.iter().enumerate().filter_map(|(i, slot)| Some((i as FlowId, slot.as_ref()?)))
    }

    /// Adds a flow whose first packet arrived as `original` and leaves as `translated`.
    ///
    /// When the table is full, expired flows go first, then one flow that never got a reply
    /// (the likely victim of a SYN flood or a dead peer); established flows are never evicted.
    pub fn insert(
        &mut self,
        origin: Origin,
        node: NodeId,
        original: Tuple,
        translated: Tuple,
        now: Instant,
    ) -> Result<FlowId, InsertError> {
        let reply = translated.reversed();
        if original == reply || !self.is_free(&original) || !self.is_free(&reply) {
            return Err(InsertError::Taken);
        }
        if self.len >= self.limit {
            self.expire(now);
        }
        if self.len >= self.limit && !self.evict_one_unreplied() {
            return Err(InsertError::Full);
        }
        let state = match original.protocol {
            Protocol::Tcp => State::Tcp(TcpState::SynSent),
            Protocol::Udp => State::Udp,
        };
        let mut flow = Flow {
            origin,
            node,
            original,
            translated,
            state,
            fin_seen: [false; 2],
            next_seq: [None; 2],
            replied: false,
            expires: now,
        };
        flow.expires = now + flow.timeout(&self.timeouts);
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(flow);
                id
            }
            None => {
                self.slots.push(Some(flow));
                (self.slots.len() - 1) as FlowId
            }
        };
        self.index.insert(original, (id, Direction::Original));
        self.index.insert(reply, (id, Direction::Reply));
        self.len += 1;
        Ok(id)
    }

    /// Records a packet of flow `id` travelling in `direction`: state, sequence numbers, expiry.
    pub fn track(&mut self, id: FlowId, direction: Direction, segment: Option<&TcpSegment>, now: Instant) {
        let timeouts = self.timeouts;
        let Some(flow) = self.slots.get_mut(id as usize).and_then(Option::as_mut) else { return };
        if direction == Direction::Reply {
            flow.replied = true;
        }
        if let Some(segment) = segment {
            flow.track_tcp(direction, segment);
        }
        flow.expires = now + flow.timeout(&timeouts);
    }

    /// Removes flow `id`, returning it.
    pub fn remove(&mut self, id: FlowId) -> Option<Flow> {
        let flow = self.slots.get_mut(id as usize)?.take()?;
        self.index.remove(&flow.arriving(Direction::Original));
        self.index.remove(&flow.arriving(Direction::Reply));
        self.free.push(id);
        self.len -= 1;
        Some(flow)
    }

    /// Removes every flow whose time has come; returns how many.
    ///
    /// A linear pass over the slab: about a millisecond per 65,536 slots, run once a second.
    pub fn expire(&mut self, now: Instant) -> usize {
        let due: Vec<FlowId> = self.iter().filter(|(_, flow)| flow.expires <= now).map(|(id, _)| id).collect();
        for &id in &due {
            self.remove(id);
        }
        self.shrink();
        due.len()
    }

    /// Evicts one flow that never saw a reply, looking at a bounded window of slots.
    fn evict_one_unreplied(&mut self) -> bool {
        let slots = self.slots.len();
        for step in 0..EVICTION_WINDOW.min(slots) {
            let at = (self.evict_cursor + step) % slots;
            if self.slots[at].as_ref().is_some_and(|flow| !flow.replied) {
                self.evict_cursor = (at + 1) % slots;
                self.remove(at as FlowId);
                return true;
            }
        }
        self.evict_cursor = (self.evict_cursor + EVICTION_WINDOW) % slots.max(1);
        false
    }

    /// Gives back the memory of a slab that emptied out (after a burst), keeping ids stable.
    fn shrink(&mut self) {
        while self.slots.last().is_some_and(Option::is_none) {
            self.slots.pop();
        }
        let slots = self.slots.len();
        self.free.retain(|id| (*id as usize) < slots);
        if self.slots.capacity() > 4 * slots.max(1024) {
            self.slots.shrink_to(2 * slots);
            self.free.shrink_to(2 * slots);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(protocol: Protocol, src: &str, dst: &str) -> Tuple {
        Tuple { protocol, src: src.parse().expect("valid"), dst: dst.parse().expect("valid") }
    }

    fn node() -> NodeId {
        NodeId::new("node1").expect("valid")
    }

    fn seg(seq: u32, ack: u32, flags: u8, payload_len: u32) -> TcpSegment {
        TcpSegment { seq, ack, flags: TcpFlags(flags), payload_len }
    }

    const SYN: u8 = TcpFlags::SYN;
    const ACK: u8 = TcpFlags::ACK;
    const FIN: u8 = TcpFlags::FIN;
    const RST: u8 = TcpFlags::RST;

    fn inbound(table: &mut FlowTable, client_port: u16, now: Instant) -> Result<FlowId, InsertError> {
        let original = t(Protocol::Tcp, &format!("198.18.1.10:{client_port}"), "198.18.100.1:25");
        let translated = t(Protocol::Tcp, &format!("198.18.1.10:{client_port}"), "198.19.0.11:2525");
        table.insert(Origin::Inbound, node(), original, translated, now)
    }

    #[test]
    fn both_directions_find_the_flow() {
        let now = Instant::now();
        let mut table = FlowTable::new(10, Timeouts::default());
        let id = inbound(&mut table, 40000, now).expect("inserted");
        let flow = table.get(id).expect("present").clone();
        assert_eq!(table.lookup(&flow.original), Some((id, Direction::Original)));
        let reply = t(Protocol::Tcp, "198.19.0.11:2525", "198.18.1.10:40000");
        assert_eq!(table.lookup(&reply), Some((id, Direction::Reply)));
        assert_eq!(flow.leaving(Direction::Reply), t(Protocol::Tcp, "198.18.100.1:25", "198.18.1.10:40000"));
        assert_eq!(inbound(&mut table, 40000, now), Err(InsertError::Taken));
        table.remove(id);
        assert!(table.is_empty());
        assert_eq!(table.lookup(&reply), None);
    }

    #[test]
    fn tcp_life_sets_the_timeout() {
        let timeouts = Timeouts::default();
        let t0 = Instant::now();
        let mut table = FlowTable::new(10, timeouts);
        let id = inbound(&mut table, 40000, t0).expect("inserted");
        let state = |table: &FlowTable| table.get(id).map(|f| (f.state(), f.expires() - t0));
        assert_eq!(state(&table), Some((State::Tcp(TcpState::SynSent), timeouts.tcp_syn)));
        table.track(id, Direction::Reply, Some(&seg(1000, 101, SYN | ACK, 0)), t0);
        assert_eq!(state(&table), Some((State::Tcp(TcpState::SynReceived), timeouts.tcp_syn)));
        table.track(id, Direction::Original, Some(&seg(101, 1001, ACK, 0)), t0);
        assert_eq!(state(&table), Some((State::Tcp(TcpState::Established), timeouts.tcp_established)));
        table.track(id, Direction::Reply, Some(&seg(1001, 101, ACK, 50)), t0);
        assert_eq!(table.get(id).and_then(|f| f.next_seq(Direction::Reply)), Some(1051));
        // An old retransmission does not move the mark back.
        table.track(id, Direction::Reply, Some(&seg(1001, 101, ACK, 10)), t0);
        assert_eq!(table.get(id).and_then(|f| f.next_seq(Direction::Reply)), Some(1051));
        table.track(id, Direction::Original, Some(&seg(101, 1051, FIN | ACK, 0)), t0);
        assert_eq!(state(&table), Some((State::Tcp(TcpState::Closing), timeouts.tcp_closing)));
        table.track(id, Direction::Reply, Some(&seg(1051, 102, FIN | ACK, 0)), t0);
        assert_eq!(state(&table), Some((State::Tcp(TcpState::Closed), timeouts.tcp_closed)));
        assert_eq!(table.expire(t0 + timeouts.tcp_closed - Duration::from_millis(1)), 0);
        assert_eq!(table.expire(t0 + timeouts.tcp_closed), 1);
        assert!(table.is_empty());
    }

    #[test]
    fn a_reset_closes_at_once() {
        let t0 = Instant::now();
        let mut table = FlowTable::new(10, Timeouts::default());
        let id = inbound(&mut table, 40000, t0).expect("inserted");
        table.track(id, Direction::Reply, Some(&seg(0, 0, RST, 0)), t0);
        assert_eq!(table.get(id).map(Flow::state), Some(State::Tcp(TcpState::Closed)));
    }

    #[test]
    fn sequence_marks_wrap_around() {
        let t0 = Instant::now();
        let mut table = FlowTable::new(10, Timeouts::default());
        let id = inbound(&mut table, 40000, t0).expect("inserted");
        table.track(id, Direction::Original, Some(&seg(u32::MAX - 4, 0, SYN, 0)), t0);
        table.track(id, Direction::Original, Some(&seg(u32::MAX - 3, 0, ACK, 10)), t0);
        assert_eq!(table.get(id).and_then(|f| f.next_seq(Direction::Original)), Some(6));
    }

    #[test]
    fn full_table_evicts_unreplied_flows_only() {
        let t0 = Instant::now();
        let mut table = FlowTable::new(3, Timeouts::default());
        let ids: Vec<FlowId> = (0..3).map(|i| inbound(&mut table, 40000 + i, t0).expect("room")).collect();
        for &id in &ids {
            table.track(id, Direction::Reply, Some(&seg(0, 1, SYN | ACK, 0)), t0);
        }
        // All answered: nothing may be evicted.
        assert_eq!(inbound(&mut table, 41000, t0), Err(InsertError::Full));
        // One never answered: it goes.
        table.remove(ids[1]);
        let unreplied = inbound(&mut table, 41001, t0).expect("room");
        let newest = inbound(&mut table, 41002, t0).expect("evicts the unreplied one");
        assert!(table.get(unreplied).is_none() || unreplied == newest);
        assert_eq!(table.len(), 3);
        // Expired flows make room first.
        let later = t0 + Timeouts::default().tcp_syn;
        assert!(inbound(&mut table, 41003, later).is_ok());
    }

    #[test]
    fn udp_flows_expire_after_their_timeout() {
        let timeouts = Timeouts { udp: Duration::from_secs(5), ..Timeouts::default() };
        let t0 = Instant::now();
        let mut table = FlowTable::new(10, timeouts);
        let original = t(Protocol::Udp, "198.19.0.11:5353", "198.18.2.1:53");
        let translated = t(Protocol::Udp, "198.18.100.11:5353", "198.18.2.1:53");
        let id = table.insert(Origin::Outbound, node(), original, translated, t0).expect("inserted");
        table.track(id, Direction::Reply, None, t0 + Duration::from_secs(3));
        assert!(table.get(id).is_some_and(Flow::replied));
        assert_eq!(table.expire(t0 + Duration::from_secs(7)), 0);
        assert_eq!(table.expire(t0 + Duration::from_secs(8)), 1);
    }

    #[test]
    fn slots_are_reused_and_the_slab_shrinks() {
        let t0 = Instant::now();
        let mut table = FlowTable::new(10_000, Timeouts::default());
        for i in 0..5_000 {
            inbound(&mut table, 10_000 + i, t0).expect("room");
        }
        assert_eq!(table.expire(t0 + Duration::from_secs(3600)), 5_000);
        assert!(table.slots.is_empty() && table.free.is_empty());
        let id = inbound(&mut table, 9_000, t0).expect("room");
        assert_eq!(id, 0);
    }
}
