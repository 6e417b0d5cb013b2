//! DNS blocklists (RFC 5782), asked when a client connects to port 25: a client whose address
//! a listed zone names is refused before the greeting. Off unless `[inbound.dnsbl] zones`
//! names some; submission is never checked (its users log in).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mail_auth::MessageAuthenticator;
use serde::Deserialize;

use super::ConfigError;

/// `[inbound.dnsbl]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsblConfig {
    /// The blocklists' zones, e.g. `"zen.spamhaus.org"`; empty: no check.
    pub zones: Vec<String>,
    /// How long one lookup may take; a list that does not answer in time lists no one.
    pub timeout_secs: u64,
}

impl Default for DnsblConfig {
    fn default() -> Self {
        DnsblConfig { zones: Vec::new(), timeout_secs: 3 }
    }
}

/// The blocklists a node asks.
pub struct Dnsbl {
    zones: Vec<String>,
    resolver: MessageAuthenticator,
}

impl Dnsbl {
    /// The lists `config` names, asked through `nameservers` (empty: the system's resolver);
    /// `None` when it names none.
    pub fn new(config: &DnsblConfig, nameservers: &[SocketAddr]) -> Result<Option<Dnsbl>, ConfigError> {
        if config.zones.is_empty() {
            return Ok(None);
        }
        for zone in &config.zones {
            let valid = !zone.is_empty()
                && zone.len() < 200
                && zone.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
            if !valid {
                return Err(ConfigError(format!("dnsbl: not a DNS zone: {zone:?}")));
            }
        }
        let timeout = Duration::from_secs(config.timeout_secs.max(1));
        let resolver = super::dns::resolver(nameservers, timeout).map_err(|e| ConfigError(format!("dnsbl: {e}")))?;
        Ok(Some(Dnsbl { zones: config.zones.clone(), resolver }))
    }

    /// The first zone (in config order) that lists `ip`, asking them all at once. A list
    /// that fails to answer lists no one: mail is never refused on a lookup error.
    pub async fn listing(&self, ip: IpAddr) -> Option<&str> {
        let lookups = self.zones.iter().map(|zone| async move {
            let name = query_name(ip, zone);
            match self.resolver.ipv4_lookup_raw(&name).await {
                Ok(answer) => answer.entry.iter().any(|a| listed(*a)),
                Err(mail_auth::Error::Dns(mail_auth::DnsError::RecordNotFound(_))) => false,
                Err(e) => {
                    tracing::warn!(%ip, %zone, error = %e, "dnsbl lookup failed: taken as not listed");
                    false
                }
            }
        });
        let answers = futures::future::join_all(lookups).await;
        self.zones.iter().zip(answers).find(|(_, listed)| *listed).map(|(zone, _)| zone.as_str())
    }
}

/// Whether an answer means "listed" (RFC 5782 §2.1: an address in 127.0.0.0/8). Answers in
/// 127.255.255.0/24 are the lists' own error codes (a query refused, say), not listings.
fn listed(answer: std::net::Ipv4Addr) -> bool {
    let [a, b, c, _] = answer.octets();
    a == 127 && !(b == 255 && c == 255)
}

/// The name to look up for `ip` in `zone` (RFC 5782 §2.1, §2.4): an IPv4 address's octets
/// reversed, an IPv6 address's 32 nibbles reversed.
pub fn query_name(ip: IpAddr, zone: &str) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.{zone}.")
        }
        IpAddr::V6(v6) => {
            let mut name = String::with_capacity(64 + zone.len());
            for byte in v6.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            format!("{name}{zone}.")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_reversed_as_rfc_5782_says() {
        assert_eq!(query_name("192.0.2.99".parse().unwrap(), "bl.example"), "99.2.0.192.bl.example.");
        let v6 = query_name("2001:db8:1:2:3:4:567:89ab".parse().unwrap(), "bl.example");
        assert_eq!(v6, "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.example.");
    }

    #[test]
    fn only_loopback_answers_list_and_error_codes_do_not() {
        assert!(listed("127.0.0.2".parse().unwrap()) && listed("127.0.0.10".parse().unwrap()));
        assert!(!listed("127.255.255.254".parse().unwrap()), "Spamhaus: query refused");
        assert!(!listed("10.0.0.2".parse().unwrap()));
    }

    #[test]
    fn zones_must_be_dns_names() {
        let config = |zone: &str| DnsblConfig { zones: vec![zone.to_string()], ..DnsblConfig::default() };
        assert!(Dnsbl::new(&config("bad zone"), &[]).is_err());
        assert!(Dnsbl::new(&config(""), &[]).is_err());
        assert!(Dnsbl::new(&DnsblConfig::default(), &[]).expect("none").is_none());
    }
}
