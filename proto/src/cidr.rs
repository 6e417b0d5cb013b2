//! IPv4 and IPv6 networks (CIDR), shared by the router's policy table and the nodes'
//! allowlists.
//!
//! CIDRs with host bits set (`10.0.0.1/8`) are *rejected* when parsed, not silently
//! normalised: an admin who typed that probably meant something else, and the error
//! names the network they may have meant. Code that wants normalisation calls
//! [`Cidr::new_truncating`]. A bare address parses as a host network (`/32` or `/128`).
//!
//! IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`, what a dual-stack listener reports for an
//! IPv4 client) count as the IPv4 address they carry; for the same reason a CIDR inside
//! `::ffff:0:0/96` is rejected in favour of its IPv4 form.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Why a string or address/length pair is not a valid CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The part before `/` is not an IPv4 or IPv6 address.
    #[error("{0:?} is not an IP address")]
    BadAddress(String),
    /// The part after `/` is not a decimal number.
    #[error("{0:?} is not a prefix length")]
    BadPrefixLen(String),
    /// The prefix length exceeds the address width.
    #[error("prefix length {len} is longer than {max} bits")]
    PrefixTooLong {
        /// The length given.
        len: u8,
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
    /// Bits beyond the prefix are set; `network` is the CIDR with them cleared.
    #[error("{given} has host bits set; did you mean {network}?")]
    HostBitsSet {
        /// What was given, as written.
        given: String,
        /// The same prefix with the host bits cleared.
        network: Cidr,
    },
    /// An IPv4-mapped IPv6 prefix, which would never match because such sources are looked up as IPv4.
    #[error("{0} is an IPv4-mapped IPv6 prefix; write it as an IPv4 CIDR")]
    Ipv4Mapped(String),
}

/// An IPv4 or IPv6 network: an address whose bits beyond the prefix length are all zero.
///
/// Ordered by family (IPv4 first), then network address, then prefix length, which is
/// the order a table listing should show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    network: IpAddr,
    len: u8,
}

impl Cidr {
    /// Builds a CIDR, rejecting prefix lengths beyond the address width and set host bits.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, CidrError> {
        let cidr = Self::new_truncating(addr, len)?;
        // Checked first so a mapped prefix with host bits is not "corrected" to another mapped prefix.
        if let IpAddr::V6(v6) = addr
            && len >= 96
            && v6.to_ipv4_mapped().is_some()
        {
            return Err(CidrError::Ipv4Mapped(format!("{addr}/{len}")));
        }
        if cidr.network != addr {
            return Err(CidrError::HostBitsSet { given: format!("{addr}/{len}"), network: cidr });
        }
        Ok(cidr)
    }

    /// Builds a CIDR, clearing any host bits instead of rejecting them.
    pub fn new_truncating(addr: IpAddr, len: u8) -> Result<Self, CidrError> {
        let max = max_len(addr);
        if len > max {
            return Err(CidrError::PrefixTooLong { len, max });
        }
        Ok(Self { network: truncate(addr, len), len })
    }

    /// A CIDR matching exactly one address (`/32` or `/128`).
    pub fn host(addr: IpAddr) -> Self {
        let addr = addr.to_canonical();
        Self { network: addr, len: max_len(addr) }
    }

    /// The network address (host bits zero).
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether `ip` lies inside this network; IPv4-mapped IPv6 addresses count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        max_len(ip) == max_len(self.network) && truncate(ip, self.len) == self.network
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr_str, len_str) = match s.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (s, None),
        };
        let addr: IpAddr = addr_str.parse().map_err(|_| CidrError::BadAddress(addr_str.to_owned()))?;
        let len = match len_str {
            None => max_len(addr),
            // u8::from_str takes "+8"; a CIDR length is plain digits only.
            Some(l) if !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()) => {
                l.parse().map_err(|_| CidrError::BadPrefixLen(l.to_owned()))?
            }
            Some(l) => return Err(CidrError::BadPrefixLen(l.to_owned())),
        };
        Self::new(addr, len)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.len)
    }
}

fn max_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// Clears the bits beyond `len`; `len` must not exceed the address width.
fn truncate(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(a.to_bits() & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(a.to_bits() & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().expect("valid cidr")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("valid ip")
    }

    #[test]
    fn parses_and_displays() {
        for s in ["10.0.0.0/8", "0.0.0.0/0", "192.168.1.7/32", "2001:db8::/32", "::/0", "fe80::1/128"] {
            assert_eq!(cidr(s).to_string(), s);
        }
        assert_eq!(cidr("10.1.2.3").to_string(), "10.1.2.3/32");
        assert_eq!(cidr("2001:db8::1").to_string(), "2001:db8::1/128");
        assert_eq!(cidr("2001:0db8:0000::/48").to_string(), "2001:db8::/48");
    }

    #[test]
    fn rejects_bad_cidrs() {
        assert_eq!(
            "10.0.0.1/8".parse::<Cidr>(),
            Err(CidrError::HostBitsSet { given: "10.0.0.1/8".into(), network: cidr("10.0.0.0/8") })
        );
        let e = "10.0.0.1/8".parse::<Cidr>().expect_err("host bits");
        assert_eq!(e.to_string(), "10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?");
        assert!(matches!("2001:db8::1/32".parse::<Cidr>(), Err(CidrError::HostBitsSet { .. })));
        assert_eq!("10.0.0.0/33".parse::<Cidr>(), Err(CidrError::PrefixTooLong { len: 33, max: 32 }));
        assert_eq!("::/129".parse::<Cidr>(), Err(CidrError::PrefixTooLong { len: 129, max: 128 }));
        for bad_len in ["", "+8", "-1", "8 ", "0x8", "1000", "256"] {
            let s = format!("10.0.0.0/{bad_len}");
            assert!(matches!(s.parse::<Cidr>(), Err(CidrError::BadPrefixLen(_))), "{s}");
        }
        for bad_addr in ["", "10.0.0", "10.0.0.256/8", "host/8", " 10.0.0.0/8", "[::1]/128"] {
            assert!(matches!(bad_addr.parse::<Cidr>(), Err(CidrError::BadAddress(_))), "{bad_addr}");
        }
        assert!(matches!("::ffff:10.0.0.0/104".parse::<Cidr>(), Err(CidrError::Ipv4Mapped(_))));
        assert!(matches!("::ffff:10.0.0.1/104".parse::<Cidr>(), Err(CidrError::Ipv4Mapped(_))));
    }

    #[test]
    fn truncating_constructor_normalises() {
        assert_eq!(Cidr::new_truncating(ip("10.9.8.7"), 8), Ok(cidr("10.0.0.0/8")));
        assert_eq!(Cidr::new_truncating(ip("10.9.8.7"), 0), Ok(cidr("0.0.0.0/0")));
        assert_eq!(Cidr::new_truncating(ip("2001:db8:ffff::1"), 32), Ok(cidr("2001:db8::/32")));
    }

    #[test]
    fn contains_respects_family_and_mapping() {
        let net = cidr("10.0.0.0/8");
        assert!(net.contains(ip("10.255.0.1")));
        assert!(net.contains(ip("::ffff:10.1.2.3")));
        assert!(!net.contains(ip("11.0.0.0")));
        assert!(!cidr("::/0").contains(ip("10.0.0.1")));
        assert!(cidr("0.0.0.0/0").contains(ip("1.2.3.4")));
    }
}
