//! `[inbound.auth] allow`: senders whose failures the node does not act on (a partner with a
//! broken SPF record, a forwarder of our own), by domain or client network. Results are
//! still checked and written in `Authentication-Results:`.

use std::net::IpAddr;

use crate::inbound::ConfigError;

/// One allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// A domain and its subdomains.
    Domain(String),
    /// A network: an address and a prefix length.
    Network(IpAddr, u8),
}

/// The parsed allowlist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    entries: Vec<Entry>,
}

impl Allowlist {
    /// Parses `"example.com"`, `"192.0.2.0/24"`, `"2001:db8::1"` entries.
    pub fn parse(entries: &[String]) -> Result<Allowlist, ConfigError> {
        let entries = entries.iter().map(|e| parse_entry(e)).collect::<Result<_, _>>()?;
        Ok(Allowlist { entries })
    }

    /// Whether `client` is in an allowed network or one of `domains` is (or is under) an
    /// allowed domain.
    pub fn allows(&self, client: IpAddr, domains: &[&str]) -> bool {
        self.entries.iter().any(|entry| match entry {
            Entry::Network(net, len) => in_network(client, *net, *len),
            Entry::Domain(allowed) => domains.iter().any(|d| is_under(d, allowed)),
        })
    }
}

fn parse_entry(entry: &str) -> Result<Entry, ConfigError> {
    let bad = || ConfigError(format!("auth.allow: {entry:?} is neither a domain nor an address/prefix"));
    let (addr, len) = match entry.split_once('/') {
        Some((addr, len)) => (addr, Some(len.parse::<u8>().map_err(|_| bad())?)),
        None => (entry, None),
    };
    if let Ok(ip) = addr.parse::<IpAddr>() {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = len.unwrap_or(max);
        if len > max {
            return Err(bad());
        }
        return Ok(Entry::Network(ip, len));
    }
    let domain = entry.trim_end_matches('.').to_ascii_lowercase();
    let valid = !domain.is_empty()
        && len.is_none()
        && domain.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !valid {
        return Err(bad());
    }
    Ok(Entry::Domain(domain))
}

fn in_network(client: IpAddr, net: IpAddr, len: u8) -> bool {
    // An IPv4 client may arrive as an IPv4-mapped IPv6 address on a dual-stack listener.
    let client = match client {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(client),
        v4 => v4,
    };
    match (client, net) {
        (IpAddr::V4(c), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(c) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(c), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(c) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn is_under(domain: &str, allowed: &str) -> bool {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    domain == allowed || domain.strip_suffix(allowed).is_some_and(|head| head.ends_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Allowlist {
        Allowlist::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).expect("valid")
    }

    #[test]
    fn networks() {
        let allow = list(&["192.0.2.0/24", "2001:db8::/32", "198.51.100.7"]);
        assert!(allow.allows("192.0.2.200".parse().unwrap(), &[]));
        assert!(allow.allows("::ffff:192.0.2.1".parse().unwrap(), &[]));
        assert!(!allow.allows("192.0.3.1".parse().unwrap(), &[]));
        assert!(allow.allows("198.51.100.7".parse().unwrap(), &[]));
        assert!(!allow.allows("198.51.100.8".parse().unwrap(), &[]));
        assert!(allow.allows("2001:db8:ffff::1".parse().unwrap(), &[]));
        assert!(list(&["0.0.0.0/0"]).allows("203.0.113.9".parse().unwrap(), &[]));
    }

    #[test]
    fn domains_and_subdomains_only() {
        let allow = list(&["Partner.Test."]);
        let ip = "203.0.113.9".parse().unwrap();
        assert!(allow.allows(ip, &["partner.test"]));
        assert!(allow.allows(ip, &["", "mail.PARTNER.test"]));
        assert!(!allow.allows(ip, &["evilpartner.test", "partner.test.evil"]));
    }

    #[test]
    fn bad_entries() {
        for bad in ["", "10.0.0.0/33", "exa mple.test", "example.test/8", "a..b", "::/129", "1.2.3.4/x"] {
            assert!(Allowlist::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}
