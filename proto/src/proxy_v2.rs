//! PROXY protocol version 2 (the HAProxy spec): how the router tells a node who the
//! client really is. The router encodes, nodes decode. Pure functions over bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12-byte signature every v2 header starts with.
pub const SIGNATURE: [u8; 12] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];
/// Signature, version/command, family and length: the part of fixed size.
pub const FIXED_LEN: usize = 16;
/// Longest address block accepted (IPv6 addresses plus generous TLVs).
pub const MAX_PAYLOAD: usize = 520;

const VERSION_2: u8 = 0x20;
const CMD_LOCAL: u8 = 0x00;
const CMD_PROXY: u8 = 0x01;
const TCP4: u8 = 0x11;
const TCP6: u8 = 0x21;
const UNSPEC: u8 = 0x00;

/// What is wrong with a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("not a PROXY v2 signature")]
    Signature,
    #[error("unsupported PROXY version")]
    Version,
    #[error("unsupported PROXY command")]
    Command,
    #[error("unsupported address family")]
    Family,
    #[error("address block too long")]
    TooLong,
    #[error("address block shorter than its family needs")]
    Truncated,
}

/// The header for a TCP connection from `client` to `server` (both of one family;
/// an IPv4 address mixed with IPv6 is sent as IPv4-mapped IPv6).
pub fn encode(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(FIXED_LEN + 36);
    out.extend_from_slice(&SIGNATURE);
    out.push(VERSION_2 | CMD_PROXY);
    match (client.ip(), server.ip()) {
        (IpAddr::V4(c), IpAddr::V4(s)) => {
            out.push(TCP4);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&c.octets());
            out.extend_from_slice(&s.octets());
        }
        (c, s) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(TCP6);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(c).octets());
            out.extend_from_slice(&v6(s).octets());
        }
    }
    out.extend_from_slice(&client.port().to_be_bytes());
    out.extend_from_slice(&server.port().to_be_bytes());
    out
}

/// From the fixed part, the number of bytes that follow it.
pub fn remaining_len(fixed: &[u8; FIXED_LEN]) -> Result<usize, ProxyError> {
    if fixed[..12] != SIGNATURE {
        return Err(ProxyError::Signature);
    }
    if fixed[12] & 0xF0 != VERSION_2 {
        return Err(ProxyError::Version);
    }
    let len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(ProxyError::TooLong);
    }
    Ok(len)
}

/// Decodes a whole header (exactly the fixed part plus what it announces). Returns the
/// client address, or `None` for a LOCAL header (the sender's own health check) or an
/// UNSPEC family. TLVs after the addresses are skipped.
pub fn decode_complete(header: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    let fixed: &[u8; FIXED_LEN] =
        header.get(..FIXED_LEN).and_then(|f| f.try_into().ok()).ok_or(ProxyError::Truncated)?;
    let len = remaining_len(fixed)?;
    let payload = header.get(FIXED_LEN..FIXED_LEN + len).ok_or(ProxyError::Truncated)?;
    match fixed[12] & 0x0F {
        CMD_LOCAL => return Ok(None),
        CMD_PROXY => {}
        _ => return Err(ProxyError::Command),
    }
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    match fixed[13] {
        TCP4 => {
            let p = payload.get(..12).ok_or(ProxyError::Truncated)?;
            let ip = Ipv4Addr::new(p[0], p[1], p[2], p[3]);
            Ok(Some(SocketAddr::new(IpAddr::V4(ip), port(&p[8..10]))))
        }
        TCP6 => {
            let p = payload.get(..36).ok_or(ProxyError::Truncated)?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&p[..16]);
            let ip = Ipv6Addr::from(octets);
            // An IPv4 client behind a dual-stack router shows as IPv4-mapped: unmap it.
            let ip = ip.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(ip));
            Ok(Some(SocketAddr::new(ip, port(&p[32..34]))))
        }
        UNSPEC => Ok(None),
        _ => Err(ProxyError::Family),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(c: &str, s: &str) -> Option<SocketAddr> {
        let h = encode(c.parse().unwrap(), s.parse().unwrap());
        let fixed: [u8; FIXED_LEN] = h[..FIXED_LEN].try_into().unwrap();
        assert_eq!(remaining_len(&fixed).unwrap(), h.len() - FIXED_LEN);
        decode_complete(&h).unwrap()
    }

    #[test]
    fn roundtrips() {
        assert_eq!(roundtrip("192.0.2.1:4000", "10.0.0.1:25"), Some("192.0.2.1:4000".parse().unwrap()));
        assert_eq!(roundtrip("[2001:db8::1]:5", "[::1]:143"), Some("[2001:db8::1]:5".parse().unwrap()));
        assert_eq!(roundtrip("192.0.2.9:7", "[::1]:143"), Some("192.0.2.9:7".parse().unwrap()));
    }

    #[test]
    fn hostile_headers() {
        let good = encode("192.0.2.1:4000".parse().unwrap(), "10.0.0.1:25".parse().unwrap());
        assert_eq!(decode_complete(&good[..20]), Err(ProxyError::Truncated));
        let mut bad = good.clone();
        bad[0] = b'G';
        assert_eq!(decode_complete(&bad), Err(ProxyError::Signature));
        let mut lying = good.clone();
        lying[14..16].copy_from_slice(&600u16.to_be_bytes());
        assert_eq!(decode_complete(&lying), Err(ProxyError::TooLong));
        let mut short = good.clone();
        short[15] = 4;
        assert_eq!(decode_complete(&short[..20]), Err(ProxyError::Truncated));
        let mut v1 = good.clone();
        v1[12] = 0x11;
        assert_eq!(decode_complete(&v1), Err(ProxyError::Version));
        let mut local = good.clone();
        local[12] = 0x20;
        assert_eq!(decode_complete(&local), Ok(None));
        let mut udp = good.clone();
        udp[13] = 0x12;
        assert_eq!(decode_complete(&udp), Err(ProxyError::Family));
        let mut tlv = good.clone();
        tlv[15] += 3;
        tlv.extend_from_slice(&[0x04, 0x00, 0x00]);
        assert_eq!(decode_complete(&tlv), Ok(Some("192.0.2.1:4000".parse().unwrap())));
    }
}
