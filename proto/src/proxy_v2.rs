//! PROXY protocol version 2 headers: the encoder the router writes, and a strict decoder.
//!
//! The decoder is a pure function over a byte slice so it can be unit-tested and fuzzed
//! without sockets; mail nodes use it (through [`read_header`]) to learn the real client
//! address, accepting headers only from trusted router addresses. It never panics, never
//! asks for more than [`MAX_HEADER_LEN`] bytes, and rejects input as early as it can: a
//! client speaking SMTP instead of PROXY is turned away on its first byte.
//!
//! Spec: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>, section 2.2.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The 12 bytes every version 2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Largest header accepted, fixed part included; a longer declared length is rejected outright.
pub const MAX_HEADER_LEN: usize = 536;

/// Signature, version/command, family/transport and the 2-byte length.
const FIXED_LEN: usize = 16;

const VERSION_2: u8 = 0x20;
const CMD_LOCAL: u8 = 0x0;
const CMD_PROXY: u8 = 0x1;

const FAMILY_UNSPEC: u8 = 0x00;
const FAMILY_TCP4: u8 = 0x11;
const FAMILY_UDP4: u8 = 0x12;
const FAMILY_TCP6: u8 = 0x21;
const FAMILY_UDP6: u8 = 0x22;
const FAMILY_UNIX_STREAM: u8 = 0x31;
const FAMILY_UNIX_DGRAM: u8 = 0x32;

/// Address block sizes: two addresses plus two ports for INET/INET6, two 108-byte paths for UNIX.
const ADDR_LEN_INET: usize = 12;
const ADDR_LEN_INET6: usize = 36;
const ADDR_LEN_UNIX: usize = 216;

/// Longest header the encoder produces: the fixed part plus an IPv6 address block.
const MAX_ENCODED_LEN: usize = FIXED_LEN + ADDR_LEN_INET6;

/// What a PROXY v2 header says about the connection it precedes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A proxied TCP connection from `source` (the real client) to `destination` (the address it reached).
    Tcp {
        /// The real client's address and port.
        source: SocketAddr,
        /// The address and port the client connected to on the proxy.
        destination: SocketAddr,
    },
    /// The proxy's own connection (e.g. a health check); the socket's addresses are the real ones.
    Local,
    /// A proxied connection whose family or transport carries no usable TCP address (UNSPEC, UDP, UNIX).
    Unspecified,
}

/// Why bytes are not an acceptable PROXY v2 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input does not start with the v2 signature (it may be a v1 text header or no header at all).
    #[error("not a PROXY protocol v2 header")]
    BadSignature,
    /// The version nibble is not 2.
    #[error("unsupported PROXY protocol version {0}")]
    UnsupportedVersion(u8),
    /// The command nibble is neither LOCAL nor PROXY.
    #[error("unknown PROXY command {0:#x}")]
    UnknownCommand(u8),
    /// The family/transport byte is not one the spec defines.
    #[error("unknown PROXY address family/transport {0:#04x}")]
    UnknownFamily(u8),
    /// The declared length makes the header longer than [`MAX_HEADER_LEN`].
    #[error("PROXY header of {0} bytes exceeds the {MAX_HEADER_LEN}-byte limit")]
    TooLong(usize),
    /// The declared length is too short for the addresses of the declared family.
    #[error("PROXY header length {len} is too short for family {family:#04x}")]
    AddressesTruncated {
        /// The family/transport byte.
        family: u8,
        /// The declared length of the address block.
        len: u16,
    },
}

/// Progress of [`ProxyHeader::decode`] on a buffer that is not (yet) invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// A whole header: the first `consumed` bytes of the buffer; anything after belongs to the proxied protocol.
    Complete {
        /// The decoded header.
        header: ProxyHeader,
        /// How many bytes of the buffer it occupied.
        consumed: usize,
    },
    /// The buffer is a valid prefix; at least `needed` more bytes are required (never more than the header needs).
    Incomplete {
        /// The minimum number of additional bytes to read.
        needed: usize,
    },
}

/// An encoded header, held inline because it is at most 52 bytes.
#[derive(Debug, Clone, Copy)]
pub struct EncodedHeader {
    buf: [u8; MAX_ENCODED_LEN],
    len: usize,
}

impl EncodedHeader {
    /// The header's bytes, ready to write before the proxied stream.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl AsRef<[u8]> for EncodedHeader {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl ProxyHeader {
    /// A TCP header for a client at `source` that connected to `destination`.
    ///
    /// The v2 format needs both addresses in one family: two IPv4 (or IPv4-mapped) addresses
    /// become TCP4, anything else TCP6 with IPv4 addresses mapped. Flow info and scope ids
    /// are dropped because the format has no room for them. Decoding the encoding of the
    /// result gives the result back exactly.
    pub fn tcp(source: SocketAddr, destination: SocketAddr) -> Self {
        let (src_ip, dst_ip) = (source.ip().to_canonical(), destination.ip().to_canonical());
        let (src_ip, dst_ip) = match (src_ip, dst_ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) => (src_ip, dst_ip),
            _ => (IpAddr::V6(to_v6(src_ip)), IpAddr::V6(to_v6(dst_ip))),
        };
        Self::Tcp {
            source: SocketAddr::new(src_ip, source.port()),
            destination: SocketAddr::new(dst_ip, destination.port()),
        }
    }

    /// The header's wire form.
    pub fn encode(&self) -> EncodedHeader {
        let mut out = EncodedHeader { buf: [0; MAX_ENCODED_LEN], len: FIXED_LEN };
        out.buf[..SIGNATURE.len()].copy_from_slice(&SIGNATURE);
        let (command, family) = match *self {
            Self::Local => (CMD_LOCAL, FAMILY_UNSPEC),
            Self::Unspecified => (CMD_PROXY, FAMILY_UNSPEC),
            Self::Tcp { source, destination } => {
                // Mixed families cannot be expressed; map both to IPv6, as `tcp` would.
                let block = &mut out.buf[FIXED_LEN..];
                let family = match (source.ip(), destination.ip()) {
                    (IpAddr::V4(src), IpAddr::V4(dst)) => {
                        block[0..4].copy_from_slice(&src.octets());
                        block[4..8].copy_from_slice(&dst.octets());
                        block[8..10].copy_from_slice(&source.port().to_be_bytes());
                        block[10..12].copy_from_slice(&destination.port().to_be_bytes());
                        out.len += ADDR_LEN_INET;
                        FAMILY_TCP4
                    }
                    (src, dst) => {
                        block[0..16].copy_from_slice(&to_v6(src).octets());
                        block[16..32].copy_from_slice(&to_v6(dst).octets());
                        block[32..34].copy_from_slice(&source.port().to_be_bytes());
                        block[34..36].copy_from_slice(&destination.port().to_be_bytes());
                        out.len += ADDR_LEN_INET6;
                        FAMILY_TCP6
                    }
                };
                (CMD_PROXY, family)
            }
        };
        out.buf[12] = VERSION_2 | command;
        out.buf[13] = family;
        // At most 36, so the cast cannot truncate.
        let body_len = (out.len - FIXED_LEN) as u16;
        out.buf[14..16].copy_from_slice(&body_len.to_be_bytes());
        out
    }

    /// Decodes a header from the start of `buf`; TLVs after the addresses are skipped.
    pub fn decode(buf: &[u8]) -> Result<Decoded, DecodeError> {
        // Check whatever prefix is present before asking for more, so garbage fails fast.
        let sig_len = buf.len().min(SIGNATURE.len());
        if buf[..sig_len] != SIGNATURE[..sig_len] {
            return Err(DecodeError::BadSignature);
        }
        let command = match buf.get(12) {
            Some(&byte) => parse_version_command(byte)?,
            None => return Ok(Decoded::Incomplete { needed: FIXED_LEN - buf.len() }),
        };
        let family = match buf.get(13) {
            Some(&byte) => parse_family(byte)?,
            None => return Ok(Decoded::Incomplete { needed: FIXED_LEN - buf.len() }),
        };
        let Some(len_bytes) = buf.get(14..16) else {
            return Ok(Decoded::Incomplete { needed: FIXED_LEN - buf.len() });
        };
        let body_len = u16::from_be_bytes([len_bytes[0], len_bytes[1]]);
        let total = FIXED_LEN + usize::from(body_len);
        if total > MAX_HEADER_LEN {
            return Err(DecodeError::TooLong(total));
        }
        if command == CMD_PROXY && usize::from(body_len) < address_block_len(family) {
            return Err(DecodeError::AddressesTruncated { family, len: body_len });
        }
        let Some(body) = buf.get(FIXED_LEN..total) else {
            return Ok(Decoded::Incomplete { needed: total - buf.len() });
        };
        let header = match (command, family) {
            (CMD_LOCAL, _) => Self::Local,
            (_, FAMILY_TCP4) => Self::Tcp { source: inet(body, 0, 8), destination: inet(body, 4, 10) },
            (_, FAMILY_TCP6) => Self::Tcp { source: inet6(body, 0, 32), destination: inet6(body, 16, 34) },
            _ => Self::Unspecified,
        };
        Ok(Decoded::Complete { header, consumed: total })
    }
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn parse_version_command(byte: u8) -> Result<u8, DecodeError> {
    if byte & 0xf0 != VERSION_2 {
        return Err(DecodeError::UnsupportedVersion(byte >> 4));
    }
    match byte & 0x0f {
        command @ (CMD_LOCAL | CMD_PROXY) => Ok(command),
        other => Err(DecodeError::UnknownCommand(other)),
    }
}

fn parse_family(byte: u8) -> Result<u8, DecodeError> {
    match byte {
        FAMILY_UNSPEC | FAMILY_TCP4 | FAMILY_UDP4 | FAMILY_TCP6 | FAMILY_UDP6 | FAMILY_UNIX_STREAM
        | FAMILY_UNIX_DGRAM => Ok(byte),
        // The spec requires receivers to reject every value it does not list.
        other => Err(DecodeError::UnknownFamily(other)),
    }
}

fn address_block_len(family: u8) -> usize {
    match family >> 4 {
        0x1 => ADDR_LEN_INET,
        0x2 => ADDR_LEN_INET6,
        0x3 => ADDR_LEN_UNIX,
        _ => 0,
    }
}

/// An IPv4 socket address from `body`; callers have checked `body` holds a full INET block.
fn inet(body: &[u8], ip_at: usize, port_at: usize) -> SocketAddr {
    let ip = Ipv4Addr::new(body[ip_at], body[ip_at + 1], body[ip_at + 2], body[ip_at + 3]);
    SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([body[port_at], body[port_at + 1]]))
}

/// An IPv6 socket address from `body`; callers have checked `body` holds a full INET6 block.
fn inet6(body: &[u8], ip_at: usize, port_at: usize) -> SocketAddr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&body[ip_at..ip_at + 16]);
    let port = u16::from_be_bytes([body[port_at], body[port_at + 1]]);
    SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(octets), port, 0, 0))
}

/// Why [`read_header`] could not produce a header.
#[derive(Debug, thiserror::Error)]
pub enum ReadHeaderError {
    /// Reading failed, or the peer closed before a whole header arrived.
    #[error("reading PROXY header: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not an acceptable header.
    #[error(transparent)]
    Invalid(#[from] DecodeError),
}

/// Reads exactly one header from `reader`, never consuming a byte past it.
///
/// Reads at most as many bytes as the decoder says it still needs, so the proxied protocol's
/// first bytes stay in the stream. Callers bound the wait with a timeout.
pub async fn read_header<R: AsyncRead + Unpin>(reader: &mut R) -> Result<ProxyHeader, ReadHeaderError> {
    let mut buf = [0u8; MAX_HEADER_LEN];
    let mut filled = 0;
    loop {
        match ProxyHeader::decode(&buf[..filled])? {
            Decoded::Complete { header, .. } => return Ok(header),
            Decoded::Incomplete { needed } => {
                // decode never asks for more than MAX_HEADER_LEN in total, so this stays in bounds.
                // A plain read (not read_exact) lets a non-PROXY client be rejected on its first bytes.
                let n = reader.read(&mut buf[filled..filled + needed]).await?;
                if n == 0 {
                    return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
                }
                filled += n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("valid socket address")
    }

    fn complete(buf: &[u8]) -> (ProxyHeader, usize) {
        match ProxyHeader::decode(buf) {
            Ok(Decoded::Complete { header, consumed }) => (header, consumed),
            other => panic!("expected a complete header, got {other:?}"),
        }
    }

    /// A raw header with the given version/command and family bytes and body.
    fn raw(ver_cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.push(ver_cmd);
        out.push(family);
        out.extend_from_slice(&u16::try_from(body.len()).expect("short body").to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn encodes_tcp4_exactly() {
        let header = ProxyHeader::tcp(addr("192.0.2.1:40000"), addr("198.51.100.2:25"));
        let expected: Vec<u8> = [
            &SIGNATURE[..],
            &[0x21, 0x11, 0x00, 0x0c],
            &[192, 0, 2, 1, 198, 51, 100, 2],
            &40000u16.to_be_bytes(),
            &25u16.to_be_bytes(),
        ]
        .concat();
        assert_eq!(header.encode().as_bytes(), expected);
    }

    #[test]
    fn encodes_tcp6_exactly() {
        let header = ProxyHeader::tcp(addr("[2001:db8::1]:1234"), addr("[2001:db8::2]:993"));
        let bytes = header.encode();
        let bytes = bytes.as_bytes();
        assert_eq!(bytes.len(), 52);
        assert_eq!(&bytes[12..16], &[0x21, 0x21, 0x00, 0x24]);
        assert_eq!(&bytes[16..32], &"2001:db8::1".parse::<Ipv6Addr>().expect("valid").octets());
        assert_eq!(&bytes[48..52], &[0x04, 0xd2, 0x03, 0xe1]);
    }

    #[test]
    fn round_trips() {
        let cases = [
            ProxyHeader::tcp(addr("192.0.2.1:40000"), addr("198.51.100.2:25")),
            ProxyHeader::tcp(addr("0.0.0.0:0"), addr("255.255.255.255:65535")),
            ProxyHeader::tcp(addr("[2001:db8::1]:1234"), addr("[2001:db8::2]:993")),
            ProxyHeader::tcp(addr("[::ffff:192.0.2.1]:5"), addr("[::ffff:192.0.2.2]:6")),
            ProxyHeader::tcp(addr("192.0.2.1:5"), addr("[2001:db8::2]:6")),
            ProxyHeader::tcp(addr("[fe80::1%3]:5"), addr("[fe80::2]:6")),
            ProxyHeader::Local,
            ProxyHeader::Unspecified,
        ];
        for header in cases {
            let encoded = header.encode();
            let (decoded, consumed) = complete(encoded.as_bytes());
            assert_eq!(decoded, header);
            assert_eq!(consumed, encoded.as_bytes().len());
        }
    }

    #[test]
    fn tcp_constructor_unifies_families() {
        let mapped = ProxyHeader::tcp(addr("[::ffff:192.0.2.1]:5"), addr("198.51.100.2:25"));
        assert_eq!(mapped, ProxyHeader::Tcp { source: addr("192.0.2.1:5"), destination: addr("198.51.100.2:25") });
        let mixed = ProxyHeader::tcp(addr("192.0.2.1:5"), addr("[2001:db8::2]:6"));
        assert_eq!(
            mixed,
            ProxyHeader::Tcp { source: addr("[::ffff:192.0.2.1]:5"), destination: addr("[2001:db8::2]:6") }
        );
    }

    #[test]
    fn encoder_maps_mixed_families_built_by_hand() {
        let header = ProxyHeader::Tcp { source: addr("192.0.2.1:5"), destination: addr("[2001:db8::2]:6") };
        let (decoded, _) = complete(header.encode().as_bytes());
        assert_eq!(decoded, ProxyHeader::tcp(addr("192.0.2.1:5"), addr("[2001:db8::2]:6")));
    }

    #[test]
    fn leaves_the_proxied_bytes_alone() {
        let mut buf = ProxyHeader::tcp(addr("192.0.2.1:1"), addr("192.0.2.2:2")).encode().as_bytes().to_vec();
        buf.extend_from_slice(b"EHLO client\r\n");
        let (_, consumed) = complete(&buf);
        assert_eq!(&buf[consumed..], b"EHLO client\r\n");
    }

    #[test]
    fn every_truncation_is_incomplete_with_the_exact_shortfall() {
        for header in [
            ProxyHeader::tcp(addr("192.0.2.1:1"), addr("192.0.2.2:2")),
            ProxyHeader::tcp(addr("[2001:db8::1]:1"), addr("[2001:db8::2]:2")),
            ProxyHeader::Local,
        ] {
            let encoded = header.encode();
            let bytes = encoded.as_bytes();
            for cut in 0..bytes.len() {
                let expected = if cut < FIXED_LEN { FIXED_LEN - cut } else { bytes.len() - cut };
                assert_eq!(ProxyHeader::decode(&bytes[..cut]), Ok(Decoded::Incomplete { needed: expected }));
            }
        }
    }

    #[test]
    fn skips_tlvs() {
        let mut body = vec![10, 0, 0, 1, 10, 0, 0, 2, 0, 25, 0, 26];
        // PP2_TYPE_NOOP (0x04) with 3 bytes of value, then PP2_TYPE_AUTHORITY (0x02) "mx".
        body.extend_from_slice(&[0x04, 0x00, 0x03, 0xaa, 0xbb, 0xcc, 0x02, 0x00, 0x02, b'm', b'x']);
        let buf = raw(0x21, FAMILY_TCP4, &body);
        let (header, consumed) = complete(&buf);
        assert_eq!(header, ProxyHeader::Tcp { source: addr("10.0.0.1:25"), destination: addr("10.0.0.2:26") });
        assert_eq!(consumed, buf.len());
    }

    #[test]
    fn local_command_ignores_addresses() {
        assert_eq!(complete(&raw(0x20, FAMILY_UNSPEC, &[])), (ProxyHeader::Local, 16));
        // A LOCAL header may still carry an address block (and TLVs); it is skipped.
        let buf = raw(0x20, FAMILY_TCP4, &[1; 20]);
        assert_eq!(complete(&buf), (ProxyHeader::Local, 36));
        // Even one too short for its family: LOCAL means "use the socket's addresses".
        assert_eq!(complete(&raw(0x20, FAMILY_TCP6, &[])), (ProxyHeader::Local, 16));
    }

    #[test]
    fn unspecified_and_unsupported_families_carry_no_address() {
        assert_eq!(complete(&raw(0x21, FAMILY_UNSPEC, &[])), (ProxyHeader::Unspecified, 16));
        assert_eq!(complete(&raw(0x21, FAMILY_UNSPEC, &[9; 7])), (ProxyHeader::Unspecified, 23));
        assert_eq!(complete(&raw(0x21, FAMILY_UDP4, &[0; 12])).0, ProxyHeader::Unspecified);
        assert_eq!(complete(&raw(0x21, FAMILY_UDP6, &[0; 36])).0, ProxyHeader::Unspecified);
        assert_eq!(complete(&raw(0x21, FAMILY_UNIX_STREAM, &[0; 216])).0, ProxyHeader::Unspecified);
    }

    #[test]
    fn rejects_wrong_signatures_as_early_as_possible() {
        assert_eq!(ProxyHeader::decode(b"EHLO example.com\r\n"), Err(DecodeError::BadSignature));
        assert_eq!(ProxyHeader::decode(b"E"), Err(DecodeError::BadSignature));
        assert_eq!(ProxyHeader::decode(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), Err(DecodeError::BadSignature));
        let good = raw(0x21, FAMILY_UNSPEC, &[]);
        for at in 0..SIGNATURE.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            for cut in at + 1..=bad.len() {
                assert_eq!(ProxyHeader::decode(&bad[..cut]), Err(DecodeError::BadSignature), "byte {at}, cut {cut}");
            }
        }
        assert_eq!(ProxyHeader::decode(&[]), Ok(Decoded::Incomplete { needed: 16 }));
    }

    #[test]
    fn rejects_bad_version_command_and_family() {
        assert_eq!(ProxyHeader::decode(&raw(0x11, 0x11, &[0; 12])), Err(DecodeError::UnsupportedVersion(1)));
        assert_eq!(ProxyHeader::decode(&raw(0x31, 0x11, &[0; 12])), Err(DecodeError::UnsupportedVersion(3)));
        assert_eq!(ProxyHeader::decode(&raw(0x22, 0x11, &[0; 12])), Err(DecodeError::UnknownCommand(2)));
        assert_eq!(ProxyHeader::decode(&raw(0x2f, 0x11, &[0; 12])), Err(DecodeError::UnknownCommand(0xf)));
        for family in [0x01, 0x10, 0x13, 0x20, 0x30, 0x41, 0xff] {
            assert_eq!(ProxyHeader::decode(&raw(0x21, family, &[0; 36])), Err(DecodeError::UnknownFamily(family)));
        }
        // Rejected on the 13th/14th byte, without waiting for the rest.
        assert_eq!(ProxyHeader::decode(&raw(0x11, 0x11, &[])[..13]), Err(DecodeError::UnsupportedVersion(1)));
        assert_eq!(ProxyHeader::decode(&raw(0x21, 0x41, &[])[..14]), Err(DecodeError::UnknownFamily(0x41)));
    }

    #[test]
    fn rejects_lying_lengths() {
        // Too short for the family's addresses.
        assert_eq!(
            ProxyHeader::decode(&raw(0x21, FAMILY_TCP4, &[0; 11])),
            Err(DecodeError::AddressesTruncated { family: FAMILY_TCP4, len: 11 })
        );
        assert_eq!(
            ProxyHeader::decode(&raw(0x21, FAMILY_TCP6, &[0; 12])),
            Err(DecodeError::AddressesTruncated { family: FAMILY_TCP6, len: 12 })
        );
        assert_eq!(
            ProxyHeader::decode(&raw(0x21, FAMILY_UNIX_STREAM, &[0; 215])),
            Err(DecodeError::AddressesTruncated { family: FAMILY_UNIX_STREAM, len: 215 })
        );
        // Too long: refused from the fixed part alone, before any body arrives.
        let mut huge = raw(0x21, FAMILY_TCP4, &[]);
        huge[14..16].copy_from_slice(&0xffffu16.to_be_bytes());
        assert_eq!(ProxyHeader::decode(&huge), Err(DecodeError::TooLong(16 + 0xffff)));
        let mut just_over = raw(0x21, FAMILY_TCP4, &[]);
        just_over[14..16].copy_from_slice(&521u16.to_be_bytes());
        assert_eq!(ProxyHeader::decode(&just_over), Err(DecodeError::TooLong(537)));
        // Exactly at the limit is fine.
        let at_limit = raw(0x21, FAMILY_TCP4, &[0; MAX_HEADER_LEN - FIXED_LEN]);
        assert_eq!(complete(&at_limit).1, MAX_HEADER_LEN);
        // A declared length longer than what arrived is just incomplete.
        let mut short = raw(0x21, FAMILY_TCP4, &[0; 12]);
        short[14..16].copy_from_slice(&40u16.to_be_bytes());
        assert_eq!(ProxyHeader::decode(&short), Ok(Decoded::Incomplete { needed: 28 }));
    }

    /// A tiny deterministic generator (xorshift64), so the test needs no crate.
    struct Rng(u64);
    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Random and mutated inputs never panic and never claim more than they were given or allowed.
    #[test]
    fn hostile_inputs_never_panic() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let seed = ProxyHeader::tcp(addr("[2001:db8::1]:1"), addr("[2001:db8::2]:2")).encode();
        let mut buf = Vec::with_capacity(600);
        for round in 0..100_000 {
            buf.clear();
            let len = (rng.next_u64() % 600) as usize;
            if round % 2 == 0 {
                // Mostly-valid headers with a few flipped bytes exercise the deep paths.
                buf.extend_from_slice(seed.as_bytes());
                buf.resize(len.max(FIXED_LEN), 0);
                for _ in 0..(rng.next_u64() % 4) {
                    let at = (rng.next_u64() as usize) % buf.len();
                    let at = if round % 4 == 0 { FIXED_LEN - 4 + at % 4 } else { at };
                    buf[at] = rng.next_u64() as u8;
                }
            } else {
                buf.extend((0..len).map(|_| rng.next_u64() as u8));
            }
            match ProxyHeader::decode(&buf) {
                Ok(Decoded::Complete { consumed, .. }) => assert!(consumed <= buf.len() && consumed <= MAX_HEADER_LEN),
                Ok(Decoded::Incomplete { needed }) => assert!(needed > 0 && buf.len() + needed <= MAX_HEADER_LEN),
                Err(_) => {}
            }
        }
    }

    #[tokio::test]
    async fn read_header_stops_exactly_at_the_header() {
        let mut wire = ProxyHeader::tcp(addr("192.0.2.1:1"), addr("192.0.2.2:2")).encode().as_bytes().to_vec();
        wire.extend_from_slice(b"QUIT\r\n");
        let mut reader = &wire[..];
        let header = read_header(&mut reader).await.expect("valid header");
        assert_eq!(header, ProxyHeader::Tcp { source: addr("192.0.2.1:1"), destination: addr("192.0.2.2:2") });
        assert_eq!(reader, b"QUIT\r\n");

        let mut truncated = &wire[..20];
        assert!(matches!(read_header(&mut truncated).await, Err(ReadHeaderError::Io(_))));
        let mut garbage = &b"QUIT\r\n"[..];
        assert!(matches!(read_header(&mut garbage).await, Err(ReadHeaderError::Invalid(DecodeError::BadSignature))));
    }
}
