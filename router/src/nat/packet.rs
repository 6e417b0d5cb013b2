//! IPv4 packets as the TUN device hands them over: a bounds-checked view of the headers NAT
//! needs, rewriting addresses and ports in place with incremental checksum updates, and
//! building the few packets the router sends itself (TCP resets).
//!
//! Nothing here trusts the bytes: every offset is checked against the IP total length before
//! use, and a packet that does not parse is an error value, never a panic. Only IPv4 is
//! handled; fragments are refused, because only the first one carries the ports that name
//! the flow (TCP sets DF, so mail traffic never fragments).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use super::checksum;

/// IP protocol numbers NAT understands.
const ICMP: u8 = 1;
const TCP: u8 = 6;
const UDP: u8 = 17;

/// Smallest IPv4, TCP, UDP and ICMP headers.
const IPV4_MIN: usize = 20;
const TCP_MIN: usize = 20;
const UDP_LEN: usize = 8;
const ICMP_LEN: usize = 8;

/// Where the checksum sits in each header.
const IPV4_CHECK: usize = 10;
const TCP_CHECK: usize = 16;
const UDP_CHECK: usize = 6;
const ICMP_CHECK: usize = 2;

/// A transport protocol NAT keeps flows for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    fn number(self) -> u8 {
        match self {
            Self::Tcp => TCP,
            Self::Udp => UDP,
        }
    }

    /// Offset of the checksum in this protocol's header.
    fn check_offset(self) -> usize {
        match self {
            Self::Tcp => TCP_CHECK,
            Self::Udp => UDP_CHECK,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

/// The 5-tuple that names a flow in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple {
    pub protocol: Protocol,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
}

impl Tuple {
    /// The tuple of a packet going the other way.
    pub fn reversed(self) -> Self {
        Self { protocol: self.protocol, src: self.dst, dst: self.src }
    }
}

impl fmt::Display for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.protocol, self.src, self.dst)
    }
}

/// TCP control bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;

    /// Whether every bit of `bits` is set.
    pub fn has(self, bits: u8) -> bool {
        self.0 & bits == bits
    }

    /// A connection request: SYN without ACK.
    pub fn is_syn_only(self) -> bool {
        self.has(Self::SYN) && !self.has(Self::ACK) && !self.has(Self::RST)
    }
}

/// The sequence-space facts of one TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment {
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    /// Payload bytes after the TCP header.
    pub payload_len: u32,
}

impl TcpSegment {
    /// Sequence space the segment takes: payload, plus one each for SYN and FIN.
    pub fn len(&self) -> u32 {
        self.payload_len + u32::from(self.flags.has(TcpFlags::SYN)) + u32::from(self.flags.has(TcpFlags::FIN))
    }

    /// Whether it takes no sequence space (a bare ACK or RST).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sequence number after this segment: what the receiver acknowledges next.
    pub fn end(&self) -> u32 {
        self.seq.wrapping_add(self.len())
    }
}

/// An ICMP error and the start of the packet it is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpError {
    /// ICMP type (3 unreachable, 11 time exceeded, 12 parameter problem).
    pub kind: u8,
    /// The quoted packet's addresses and ports, as that packet carried them.
    pub quoted: Tuple,
    /// Offset of the quoted IP header in the packet.
    quoted_at: usize,
    /// Length of the quoted IP header.
    quoted_header_len: usize,
}

/// What a packet carries, as far as NAT cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    Tcp(TcpSegment),
    Udp,
    IcmpError(IcmpError),
    /// Any other ICMP message (echo, ...).
    Icmp {
        kind: u8,
    },
    /// Another IP protocol.
    Other {
        protocol: u8,
    },
}

/// A parsed IPv4 packet: its addresses and ports, and where its headers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Ports for TCP and UDP, zero otherwise.
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: Payload,
    header_len: usize,
    total_len: usize,
}

/// Why a packet was not parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("shorter than an IPv4 header")]
    TooShort,
    #[error("IP version {0}, not 4")]
    NotIpv4(u8),
    #[error("bad IPv4 header length")]
    BadHeaderLength,
    #[error("IPv4 total length does not match the packet")]
    BadTotalLength,
    #[error("bad IPv4 header checksum")]
    BadChecksum,
    #[error("a fragment")]
    Fragment,
    #[error("transport header truncated or malformed")]
    BadTransport,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn addr(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

fn set16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Checks the IPv4 header at the start of `b` (version and length) and returns its length.
fn ip_header_len(b: &[u8]) -> Result<usize, ParseError> {
    if b.len() < IPV4_MIN {
        return Err(ParseError::TooShort);
    }
    let version = b[0] >> 4;
    if version != 4 {
        return Err(ParseError::NotIpv4(version));
    }
    let header_len = usize::from(b[0] & 0x0f) * 4;
    if header_len < IPV4_MIN || header_len > b.len() {
        return Err(ParseError::BadHeaderLength);
    }
    Ok(header_len)
}

fn is_fragment(b: &[u8]) -> bool {
    // More-fragments bit or a non-zero fragment offset.
    be16(b, 6) & 0x3fff != 0
}

impl Packet {
    /// Parses the IPv4 packet at the start of `buf` (bytes past its total length are ignored).
    pub fn parse(buf: &[u8]) -> Result<Packet, ParseError> {
        let header_len = ip_header_len(buf)?;
        let total_len = usize::from(be16(buf, 2));
        if total_len < header_len || total_len > buf.len() {
            return Err(ParseError::BadTotalLength);
        }
        if checksum::fold(checksum::sum(&buf[..header_len], 0)) != 0xffff {
            return Err(ParseError::BadChecksum);
        }
        if is_fragment(buf) {
            return Err(ParseError::Fragment);
        }
        let (src, dst) = (addr(buf, 12), addr(buf, 16));
        let l4 = &buf[header_len..total_len];
        let (mut src_port, mut dst_port) = (0, 0);
        let payload = match buf[9] {
            TCP => {
                if l4.len() < TCP_MIN {
                    return Err(ParseError::BadTransport);
                }
                let data_offset = usize::from(l4[12] >> 4) * 4;
                if data_offset < TCP_MIN || data_offset > l4.len() {
                    return Err(ParseError::BadTransport);
                }
                (src_port, dst_port) = (be16(l4, 0), be16(l4, 2));
                Payload::Tcp(TcpSegment {
                    seq: be32(l4, 4),
                    ack: be32(l4, 8),
                    flags: TcpFlags(l4[13]),
                    payload_len: (l4.len() - data_offset) as u32,
                })
            }
            UDP => {
                let udp_len = if l4.len() >= UDP_LEN { usize::from(be16(l4, 4)) } else { 0 };
                if udp_len < UDP_LEN || udp_len > l4.len() {
                    return Err(ParseError::BadTransport);
                }
                (src_port, dst_port) = (be16(l4, 0), be16(l4, 2));
                Payload::Udp
            }
            ICMP => {
                if l4.len() < ICMP_LEN {
                    return Err(ParseError::BadTransport);
                }
                match l4[0] {
                    // Destination unreachable, time exceeded, parameter problem: they quote a packet.
                    3 | 11 | 12 => Payload::IcmpError(parse_quoted(buf, header_len, total_len)?),
                    kind => Payload::Icmp { kind },
                }
            }
            protocol => Payload::Other { protocol },
        };
        Ok(Packet { src, dst, src_port, dst_port, payload, header_len, total_len })
    }

    /// The flow tuple of a TCP or UDP packet.
    pub fn tuple(&self) -> Option<Tuple> {
        let protocol = match self.payload {
            Payload::Tcp(_) => Protocol::Tcp,
            Payload::Udp => Protocol::Udp,
            _ => return None,
        };
        Some(Tuple {
            protocol,
            src: SocketAddrV4::new(self.src, self.src_port),
            dst: SocketAddrV4::new(self.dst, self.dst_port),
        })
    }

    /// The TCP segment, for a TCP packet.
    pub fn tcp(&self) -> Option<TcpSegment> {
        match self.payload {
            Payload::Tcp(segment) => Some(segment),
            _ => None,
        }
    }

    /// The packet's length in bytes.
    pub fn len(&self) -> usize {
        self.total_len
    }

    /// Whether the packet is empty (never, for a parsed one).
    pub fn is_empty(&self) -> bool {
        self.total_len == 0
    }
}

/// The packet quoted by the ICMP error whose IP header is at the start of `buf`.
fn parse_quoted(buf: &[u8], header_len: usize, total_len: usize) -> Result<IcmpError, ParseError> {
    let quoted_at = header_len + ICMP_LEN;
    let quoted = &buf[quoted_at..total_len];
    // The quote is truncated by design: its header is whole, its payload need not be.
    let quoted_header_len = ip_header_len(quoted).map_err(|_| ParseError::BadTransport)?;
    if is_fragment(quoted) {
        return Err(ParseError::BadTransport);
    }
    let protocol = match quoted[9] {
        TCP => Protocol::Tcp,
        UDP => Protocol::Udp,
        _ => return Err(ParseError::BadTransport),
    };
    // RFC 792: the header plus the first 8 bytes of the datagram, which hold the ports.
    if quoted.len() < quoted_header_len + 8 {
        return Err(ParseError::BadTransport);
    }
    let l4 = &quoted[quoted_header_len..];
    Ok(IcmpError {
        kind: buf[header_len],
        quoted: Tuple {
            protocol,
            src: SocketAddrV4::new(addr(quoted, 12), be16(l4, 0)),
            dst: SocketAddrV4::new(addr(quoted, 16), be16(l4, 2)),
        },
        quoted_at,
        quoted_header_len,
    })
}

/// Rewrites the addresses of the IPv4 header at the start of `ip`, and the ports and
/// checksum of the TCP or UDP header after it (as far as the bytes reach: a quoted packet
/// in an ICMP error may stop before its transport checksum), from `from` to `to`.
fn set_endpoints(ip: &mut [u8], header_len: usize, from: Tuple, to: Tuple) {
    let mut ip_check = be16(ip, IPV4_CHECK);
    let l4_check_at = header_len + from.protocol.check_offset();
    let has_l4_check = ip.len() >= l4_check_at + 2;
    let mut l4_check = if has_l4_check { be16(ip, l4_check_at) } else { 0 };
    // UDP over IPv4 may carry no checksum at all (zero); it then stays zero.
    let update_l4 = has_l4_check && !(from.protocol == Protocol::Udp && l4_check == 0);

    for (at, old, new) in [(12, *from.src.ip(), *to.src.ip()), (16, *from.dst.ip(), *to.dst.ip())] {
        if old != new {
            let (old, new) = (u32::from(old), u32::from(new));
            ip_check = checksum::update32(ip_check, old, new);
            // The address is part of the transport checksum's pseudo-header too.
            if update_l4 {
                l4_check = checksum::update32(l4_check, old, new);
            }
            ip[at..at + 4].copy_from_slice(&new.to_be_bytes());
        }
    }
    for (at, old, new) in
        [(header_len, from.src.port(), to.src.port()), (header_len + 2, from.dst.port(), to.dst.port())]
    {
        if old != new {
            if update_l4 {
                l4_check = checksum::update16(l4_check, old, new);
            }
            set16(ip, at, new);
        }
    }
    set16(ip, IPV4_CHECK, ip_check);
    if update_l4 {
        // A computed UDP checksum of zero is sent as all ones (RFC 768).
        if from.protocol == Protocol::Udp && l4_check == 0 {
            l4_check = 0xffff;
        }
        set16(ip, l4_check_at, l4_check);
    }
}

/// Rewrites a TCP or UDP packet, parsed from `buf` as `packet`, to carry tuple `to`.
///
/// # Panics
///
/// If `packet` is not a TCP or UDP packet parsed from `buf`.
pub fn rewrite(buf: &mut [u8], packet: &Packet, to: Tuple) {
    let from = packet.tuple().expect("rewrite is for TCP and UDP packets");
    assert_eq!(from.protocol, to.protocol, "rewriting keeps the protocol");
    set_endpoints(&mut buf[..packet.total_len], packet.header_len, from, to);
}

/// Rewrites an ICMP error, parsed from `buf` as `packet`: the outer addresses become
/// `src` and `dst`, the quoted packet's tuple becomes `quoted`, and the checksums follow.
///
/// # Panics
///
/// If `packet` is not an ICMP error parsed from `buf`.
pub fn rewrite_icmp_error(buf: &mut [u8], packet: &Packet, src: Ipv4Addr, dst: Ipv4Addr, quoted: Tuple) {
    let Payload::IcmpError(error) = packet.payload else { panic!("rewrite_icmp_error is for ICMP errors") };
    let buf = &mut buf[..packet.total_len];
    set_endpoints(&mut buf[error.quoted_at..], error.quoted_header_len, error.quoted, quoted);
    // The outer header: addresses only (ICMP has no pseudo-header), so a dummy tuple's ports stay put.
    let outer = |s, d| Tuple { protocol: Protocol::Udp, src: SocketAddrV4::new(s, 0), dst: SocketAddrV4::new(d, 0) };
    let header_len = packet.header_len;
    set_endpoints(&mut buf[..header_len], header_len, outer(packet.src, packet.dst), outer(src, dst));
    // The ICMP checksum covers the quote, which just changed in several places: recompute it.
    let icmp = &mut buf[header_len..];
    set16(icmp, ICMP_CHECK, 0);
    let check = checksum::checksum(icmp);
    set16(icmp, ICMP_CHECK, check);
}

/// Writes an IPv4 header for a packet of `payload_len` transport bytes into `out[..20]`.
fn write_ip_header(out: &mut [u8], protocol: u8, src: Ipv4Addr, dst: Ipv4Addr, payload_len: usize) {
    let total = (IPV4_MIN + payload_len) as u16;
    out[0] = 0x45;
    out[1] = 0;
    set16(out, 2, total);
    set16(out, 4, 0); // identification: unused with DF
    set16(out, 6, 0x4000); // don't fragment
    out[8] = 64; // TTL
    out[9] = protocol;
    set16(out, IPV4_CHECK, 0);
    out[12..16].copy_from_slice(&src.octets());
    out[16..20].copy_from_slice(&dst.octets());
    let check = checksum::checksum(&out[..IPV4_MIN]);
    set16(out, IPV4_CHECK, check);
}

/// Builds a TCP segment with no options.
pub fn tcp_packet(src: SocketAddrV4, dst: SocketAddrV4, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; IPV4_MIN + TCP_MIN + payload.len()];
    write_ip_header(&mut out, TCP, *src.ip(), *dst.ip(), TCP_MIN + payload.len());
    let tcp = &mut out[IPV4_MIN..];
    set16(tcp, 0, src.port());
    set16(tcp, 2, dst.port());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = ((TCP_MIN / 4) as u8) << 4;
    tcp[13] = flags;
    // A reset advertises no window; anything else gets a modest one.
    set16(tcp, 14, if flags & TcpFlags::RST != 0 { 0 } else { 0xffff });
    tcp[TCP_MIN..].copy_from_slice(payload);
    let pseudo = checksum::pseudo_header(src.ip().octets(), dst.ip().octets(), TCP, tcp.len() as u16);
    let check = !checksum::fold(checksum::sum(tcp, pseudo));
    set16(tcp, TCP_CHECK, check);
    out
}

/// Builds a UDP datagram with a checksum.
pub fn udp_packet(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; IPV4_MIN + UDP_LEN + payload.len()];
    write_ip_header(&mut out, UDP, *src.ip(), *dst.ip(), UDP_LEN + payload.len());
    let udp = &mut out[IPV4_MIN..];
    set16(udp, 0, src.port());
    set16(udp, 2, dst.port());
    set16(udp, 4, (UDP_LEN + payload.len()) as u16);
    udp[UDP_LEN..].copy_from_slice(payload);
    let pseudo = checksum::pseudo_header(src.ip().octets(), dst.ip().octets(), UDP, udp.len() as u16);
    let check = match !checksum::fold(checksum::sum(udp, pseudo)) {
        0 => 0xffff,
        check => check,
    };
    set16(udp, UDP_CHECK, check);
    out
}

/// Builds an ICMP error of `kind`/`code` from `src` to `dst` quoting the start of `original`
/// (its IP header and up to 64 more bytes).
pub fn icmp_error(src: Ipv4Addr, dst: Ipv4Addr, kind: u8, code: u8, original: &[u8]) -> Vec<u8> {
    let header_len = ip_header_len(original).unwrap_or(IPV4_MIN).min(original.len());
    let quote = &original[..original.len().min(header_len + 64)];
    let mut out = vec![0u8; IPV4_MIN + ICMP_LEN + quote.len()];
    write_ip_header(&mut out, ICMP, src, dst, ICMP_LEN + quote.len());
    let icmp = &mut out[IPV4_MIN..];
    icmp[0] = kind;
    icmp[1] = code;
    icmp[ICMP_LEN..].copy_from_slice(quote);
    let check = checksum::checksum(icmp);
    set16(icmp, ICMP_CHECK, check);
    out
}

/// The reset RFC 9293 §3.10.7.1 answers a segment of no known connection with, sent back to
/// its source; `None` for a segment that is itself a reset (never answered).
pub fn reset_for(tuple: Tuple, segment: &TcpSegment) -> Option<Vec<u8>> {
    if segment.flags.has(TcpFlags::RST) || tuple.protocol != Protocol::Tcp {
        return None;
    }
    Some(if segment.flags.has(TcpFlags::ACK) {
        tcp_packet(tuple.dst, tuple.src, segment.ack, 0, TcpFlags::RST, &[])
    } else {
        tcp_packet(tuple.dst, tuple.src, 0, segment.end(), TcpFlags::RST | TcpFlags::ACK, &[])
    })
}

/// Whether the TCP or UDP checksum of a parsed packet verifies (for tests and diagnostics;
/// the translator never pays for it).
pub fn transport_checksum_ok(buf: &[u8], packet: &Packet) -> bool {
    let Some(tuple) = packet.tuple() else { return false };
    let l4 = &buf[packet.header_len..packet.total_len];
    if tuple.protocol == Protocol::Udp && be16(l4, UDP_CHECK) == 0 {
        return true;
    }
    let pseudo =
        checksum::pseudo_header(packet.src.octets(), packet.dst.octets(), tuple.protocol.number(), l4.len() as u16);
    checksum::fold(checksum::sum(l4, pseudo)) == 0xffff
}

/// Whether the IPv4 header checksum and, for ICMP, the ICMP checksum verify.
pub fn ip_and_icmp_checksums_ok(buf: &[u8], packet: &Packet) -> bool {
    let header_ok = checksum::fold(checksum::sum(&buf[..packet.header_len], 0)) == 0xffff;
    let icmp_ok = match packet.payload {
        Payload::IcmpError(_) | Payload::Icmp { .. } => {
            checksum::fold(checksum::sum(&buf[packet.header_len..packet.total_len], 0)) == 0xffff
        }
        _ => true,
    };
    header_ok && icmp_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::SplitMix64;

    fn sa(s: &str) -> SocketAddrV4 {
        s.parse().expect("valid socket address")
    }

    fn tcp_tuple(src: &str, dst: &str) -> Tuple {
        Tuple { protocol: Protocol::Tcp, src: sa(src), dst: sa(dst) }
    }

    #[test]
    fn parses_what_it_builds() {
        let buf = tcp_packet(sa("198.18.1.10:40000"), sa("198.18.100.1:25"), 7, 9, TcpFlags::SYN, b"hello");
        let p = Packet::parse(&buf).expect("parses");
        assert_eq!(p.tuple(), Some(tcp_tuple("198.18.1.10:40000", "198.18.100.1:25")));
        let seg = p.tcp().expect("tcp");
        assert_eq!((seg.seq, seg.ack, seg.payload_len, seg.len(), seg.end()), (7, 9, 5, 6, 13));
        assert!(seg.flags.is_syn_only());
        assert!(transport_checksum_ok(&buf, &p));

        let buf = udp_packet(sa("198.19.0.11:5353"), sa("198.18.2.1:53"), b"query");
        let p = Packet::parse(&buf).expect("parses");
        assert_eq!(p.payload, Payload::Udp);
        assert_eq!(p.tuple().map(|t| t.protocol), Some(Protocol::Udp));
        assert!(transport_checksum_ok(&buf, &p));
    }

    #[test]
    fn refuses_what_is_not_a_whole_ipv4_packet() {
        let good = tcp_packet(sa("10.0.0.1:1"), sa("10.0.0.2:2"), 0, 0, TcpFlags::SYN, &[]);
        assert_eq!(Packet::parse(&good[..19]), Err(ParseError::TooShort));
        let mut v6 = good.clone();
        v6[0] = 0x60;
        assert_eq!(Packet::parse(&v6), Err(ParseError::NotIpv4(6)));
        assert_eq!(Packet::parse(&good[..good.len() - 1]), Err(ParseError::BadTotalLength));
        let mut bad_sum = good.clone();
        bad_sum[8] = 1;
        assert_eq!(Packet::parse(&bad_sum), Err(ParseError::BadChecksum));
        let mut fragment = good.clone();
        set16(&mut fragment, 6, 0x2000);
        set16(&mut fragment, IPV4_CHECK, 0);
        let check = checksum::checksum(&fragment[..20]);
        set16(&mut fragment, IPV4_CHECK, check);
        assert_eq!(Packet::parse(&fragment), Err(ParseError::Fragment));
        // Trailing bytes past the total length are ignored (some devices pad).
        let mut padded = good.clone();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(Packet::parse(&padded).expect("parses").len(), good.len());
    }

    #[test]
    fn rewrite_keeps_checksums_valid() {
        let mut buf = tcp_packet(sa("198.18.1.10:40000"), sa("198.18.100.1:25"), 1, 2, TcpFlags::ACK, b"EHLO x\r\n");
        let p = Packet::parse(&buf).expect("parses");
        let to = tcp_tuple("198.18.1.10:40000", "198.19.0.11:2525");
        rewrite(&mut buf, &p, to);
        let q = Packet::parse(&buf).expect("still parses: IP checksum valid");
        assert_eq!(q.tuple(), Some(to));
        assert!(transport_checksum_ok(&buf, &q));
        assert_eq!(&buf[40..], b"EHLO x\r\n");

        let mut buf = udp_packet(sa("198.19.0.11:5353"), sa("198.18.2.1:53"), b"q");
        let p = Packet::parse(&buf).expect("parses");
        let to = Tuple { protocol: Protocol::Udp, src: sa("198.18.100.11:5353"), dst: sa("198.18.2.1:53") };
        rewrite(&mut buf, &p, to);
        let q = Packet::parse(&buf).expect("parses");
        assert_eq!(q.tuple(), Some(to));
        assert!(transport_checksum_ok(&buf, &q));
    }

    #[test]
    fn udp_without_checksum_stays_without() {
        let mut buf = udp_packet(sa("10.0.0.1:1"), sa("10.0.0.2:2"), b"x");
        set16(&mut buf, 20 + UDP_CHECK, 0);
        let p = Packet::parse(&buf).expect("parses");
        let to = Tuple { protocol: Protocol::Udp, src: sa("10.9.9.9:99"), dst: sa("10.0.0.2:2") };
        rewrite(&mut buf, &p, to);
        assert_eq!(be16(&buf, 20 + UDP_CHECK), 0);
    }

    /// Rewriting random packets to random tuples always leaves every checksum valid.
    #[test]
    fn random_rewrites_keep_checksums_valid() {
        let mut rng = SplitMix64::new(793);
        let random_sa = |rng: &mut SplitMix64| {
            let bits = rng.next_u64();
            // Include the edge values that trip one's-complement arithmetic.
            let ip = match bits % 5 {
                0 => Ipv4Addr::new(0, 0, 0, 0),
                1 => Ipv4Addr::new(255, 255, 255, 255),
                _ => Ipv4Addr::from((bits >> 16) as u32),
            };
            let port = match (bits >> 8) % 4 {
                0 => 0,
                1 => 0xffff,
                _ => (bits >> 48) as u16,
            };
            SocketAddrV4::new(ip, port)
        };
        for i in 0..5_000 {
            let payload: Vec<u8> = (0..(rng.next_u64() % 40)).map(|_| rng.next_u64() as u8).collect();
            let (src, dst) = (random_sa(&mut rng), random_sa(&mut rng));
            let mut buf = if i % 2 == 0 {
                tcp_packet(src, dst, rng.next_u64() as u32, rng.next_u64() as u32, TcpFlags::ACK, &payload)
            } else {
                udp_packet(src, dst, &payload)
            };
            let p = Packet::parse(&buf).expect("parses");
            let protocol = p.tuple().expect("tcp or udp").protocol;
            let to = Tuple { protocol, src: random_sa(&mut rng), dst: random_sa(&mut rng) };
            rewrite(&mut buf, &p, to);
            let q = Packet::parse(&buf).expect("IP checksum still valid");
            assert_eq!(q.tuple(), Some(to));
            assert!(transport_checksum_ok(&buf, &q), "{to}");
        }
    }

    #[test]
    fn icmp_errors_quote_a_tuple_and_rewrite_consistently() {
        let original = tcp_packet(sa("198.18.100.1:25"), sa("198.18.1.10:40000"), 5, 6, TcpFlags::ACK, &[0; 1400]);
        let mut buf = icmp_error(Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 100, 1), 3, 4, &original);
        let p = Packet::parse(&buf).expect("parses");
        let Payload::IcmpError(error) = p.payload else { panic!("not an error: {p:?}") };
        assert_eq!((error.kind, error.quoted), (3, tcp_tuple("198.18.100.1:25", "198.18.1.10:40000")));
        assert!(ip_and_icmp_checksums_ok(&buf, &p));

        let quoted = tcp_tuple("198.19.0.11:2525", "198.18.1.10:40000");
        rewrite_icmp_error(&mut buf, &p, Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 19, 0, 11), quoted);
        let q = Packet::parse(&buf).expect("parses");
        assert_eq!(q.dst, Ipv4Addr::new(198, 19, 0, 11));
        let Payload::IcmpError(error) = q.payload else { panic!("not an error") };
        assert_eq!(error.quoted, quoted);
        assert!(ip_and_icmp_checksums_ok(&buf, &q));
        // The quoted IP header's own checksum was kept valid too.
        let at = error.quoted_at;
        assert_eq!(checksum::fold(checksum::sum(&buf[at..at + 20], 0)), 0xffff);
    }

    #[test]
    fn icmp_errors_must_quote_tcp_or_udp_with_ports() {
        let original = tcp_packet(sa("10.0.0.1:1"), sa("10.0.0.2:2"), 0, 0, TcpFlags::SYN, &[]);
        let short = icmp_error(Ipv4Addr::new(10, 0, 0, 3), Ipv4Addr::new(10, 0, 0, 1), 3, 1, &original[..24]);
        assert_eq!(Packet::parse(&short), Err(ParseError::BadTransport));
        let echo = {
            let mut b = icmp_error(Ipv4Addr::new(10, 0, 0, 3), Ipv4Addr::new(10, 0, 0, 1), 8, 0, &original);
            b[20] = 8;
            b
        };
        assert_eq!(Packet::parse(&echo).map(|p| p.payload), Ok(Payload::Icmp { kind: 8 }));
    }

    #[test]
    fn resets_follow_rfc_9293() {
        let tuple = tcp_tuple("198.18.1.10:40000", "198.18.100.1:25");
        // A segment with ACK: RST with SEQ = its ACK.
        let with_ack = TcpSegment { seq: 100, ack: 5000, flags: TcpFlags(TcpFlags::ACK), payload_len: 10 };
        let rst = reset_for(tuple, &with_ack).expect("answered");
        let p = Packet::parse(&rst).expect("parses");
        assert_eq!(p.tuple(), Some(tuple.reversed()));
        let seg = p.tcp().expect("tcp");
        assert_eq!((seg.seq, seg.flags), (5000, TcpFlags(TcpFlags::RST)));
        assert!(transport_checksum_ok(&rst, &p));
        // Without ACK (a SYN): RST+ACK acknowledging it.
        let syn = TcpSegment { seq: 100, ack: 0, flags: TcpFlags(TcpFlags::SYN), payload_len: 0 };
        let seg = Packet::parse(&reset_for(tuple, &syn).expect("answered")).expect("parses").tcp().expect("tcp");
        assert_eq!((seg.seq, seg.ack, seg.flags), (0, 101, TcpFlags(TcpFlags::RST | TcpFlags::ACK)));
        // A reset is never answered.
        let rst_in = TcpSegment { flags: TcpFlags(TcpFlags::RST), ..syn };
        assert_eq!(reset_for(tuple, &rst_in), None);
    }

    /// Random bytes, and random corruptions of good packets, never panic the parser or the rewriter.
    #[test]
    fn random_input_never_panics() {
        let mut rng = SplitMix64::new(4242);
        let good = [
            tcp_packet(sa("10.0.0.1:1"), sa("10.0.0.2:2"), 1, 2, TcpFlags::ACK, b"data"),
            udp_packet(sa("10.0.0.1:1"), sa("10.0.0.2:2"), b"data"),
            icmp_error(
                Ipv4Addr::new(10, 0, 0, 3),
                Ipv4Addr::new(10, 0, 0, 1),
                3,
                3,
                &udp_packet(sa("10.0.0.1:1"), sa("10.0.0.2:2"), b"data"),
            ),
        ];
        for i in 0..50_000 {
            let mut buf = if i % 3 == 0 {
                (0..(rng.next_u64() % 80)).map(|_| rng.next_u64() as u8).collect::<Vec<u8>>()
            } else {
                let mut b = good[i % good.len()].clone();
                for _ in 0..(1 + rng.next_u64() % 3) {
                    let at = rng.next_u64() as usize % b.len();
                    b[at] = rng.next_u64() as u8;
                }
                b.truncate(b.len() - (rng.next_u64() % 4) as usize);
                b
            };
            let Ok(p) = Packet::parse(&buf) else { continue };
            if let Some(t) = p.tuple() {
                rewrite(&mut buf, &p, t.reversed());
            }
            if let Payload::IcmpError(e) = p.payload {
                rewrite_icmp_error(&mut buf, &p, p.dst, p.src, e.quoted.reversed());
            }
            if let (Some(t), Some(seg)) = (p.tuple(), p.tcp()) {
                let _ = reset_for(t, &seg);
            }
        }
    }
}
