//! Where mail for a domain goes: a static transport, the smarthost, or the domain's MX
//! hosts in preference order (RFC 5321 §5.1), with the implicit MX when there is none and
//! no delivery at all for a null MX (RFC 7505).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, Record};

use crate::inbound::dns::{DnsSetupError, resolver_config};

/// Limit for one DNS query to `[outbound] nameservers` (hickory's own default).
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// One host to try, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// A DNS name or an IP address.
    pub host: String,
    pub port: u16,
}

/// Why a domain has no usable route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The domain says it takes no mail, or does not exist: bounce.
    #[error("{0}")]
    Permanent(String),
    /// DNS trouble: try again later.
    #[error("{0}")]
    Temporary(String),
}

/// `host:port`, `[v6]:port` or a bare host (port 25).
pub fn parse_hop(text: &str) -> Option<Hop> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(Hop { host: addr.ip().to_string(), port: addr.port() });
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()?),
        _ => (text, 25),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty() && !host.contains(char::is_whitespace)).then(|| Hop { host: host.to_string(), port })
}

/// The hosts an MX answer names, best (lowest preference) first: the domain itself when the
/// answer holds no MX record (only CNAMEs), and a permanent failure for a null MX (RFC 7505).
fn mx_hops(domain: String, answers: &[Record]) -> Result<Vec<Hop>, RouteError> {
    let mut records: Vec<(u16, String)> = answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii().trim_end_matches('.').to_string())),
            _ => None,
        })
        .collect();
    if records.is_empty() {
        return Ok(vec![Hop { host: domain, port: 25 }]);
    }
    if records.iter().any(|(_, host)| host.is_empty()) {
        return Err(RouteError::Permanent(format!("{domain} accepts no mail (null MX)")));
    }
    records.sort();
    Ok(records.into_iter().map(|(_, host)| Hop { host, port: 25 }).collect())
}

/// The resolver routing asks: the servers `nameservers` names, or the system's when there
/// are none (`None` with a warning when the system has no resolver configuration: then only
/// transports and the smarthost work).
pub fn resolver(nameservers: &[SocketAddr]) -> Result<Option<TokioResolver>, DnsSetupError> {
    if nameservers.is_empty() {
        return match TokioResolver::builder_tokio().and_then(|builder| builder.build()) {
            Ok(resolver) => Ok(Some(resolver)),
            Err(e) => {
                tracing::warn!(error = %e, "no DNS resolver configuration: only transports and the smarthost work");
                Ok(None)
            }
        };
    }
    let (config, options) = resolver_config(nameservers, QUERY_TIMEOUT)?;
    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(options)
        .build()
        .map(Some)
        .map_err(|e| DnsSetupError::Build(e.to_string()))
}

/// Looks routes up.
pub struct Router {
    transports: BTreeMap<String, Hop>,
    smarthost: Option<Hop>,
    resolver: Option<TokioResolver>,
}

impl Router {
    /// Static transports (lower-case domain → hop) win, then the smarthost, then DNS through
    /// `resolver`.
    pub fn new(transports: BTreeMap<String, Hop>, smarthost: Option<Hop>, resolver: Option<TokioResolver>) -> Router {
        Router { transports, smarthost, resolver }
    }

    /// Whether mail for `domain` goes to its MX hosts (not a transport, the smarthost or an
    /// address literal): only then do the domain's MTA-STS and DANE policies apply.
    pub fn by_mx(&self, domain: &str) -> bool {
        let domain = domain.to_ascii_lowercase();
        self.static_hop(&domain).is_none() && !domain.starts_with('[')
    }

    fn static_hop(&self, domain: &str) -> Option<&Hop> {
        self.transports.get(domain).or(self.smarthost.as_ref())
    }

    /// The hosts to try for `domain`, best first.
    pub async fn hops(&self, domain: &str) -> Result<Vec<Hop>, RouteError> {
        let domain = domain.to_ascii_lowercase();
        if let Some(hop) = self.static_hop(&domain) {
            return Ok(vec![hop.clone()]);
        }
        // A literal address (`user@[192.0.2.1]`, RFC 5321 §4.1.3).
        if let Some(ip) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
            let ip = ip.strip_prefix("ipv6:").unwrap_or(ip);
            return match ip.parse::<IpAddr>() {
                Ok(ip) => Ok(vec![Hop { host: ip.to_string(), port: 25 }]),
                Err(_) => Err(RouteError::Permanent(format!("bad address literal [{ip}]"))),
            };
        }
        let resolver = self.resolver.as_ref().ok_or_else(|| RouteError::Temporary("no DNS resolver".into()))?;
        match resolver.mx_lookup(format!("{domain}.")).await {
            Ok(answer) => mx_hops(domain, answer.answers()),
            Err(e) if e.is_nx_domain() => Err(RouteError::Permanent(format!("domain {domain} does not exist"))),
            // No MX: the domain itself is the implicit MX (RFC 5321 §5.1).
            Err(e) if e.is_no_records_found() => Ok(vec![Hop { host: domain, port: 25 }]),
            Err(e) => Err(RouteError::Temporary(format!("MX lookup for {domain}: {e}"))),
        }
    }

    /// The TXT records at `name`, each one's strings joined; none when the name or the
    /// records do not exist.
    pub async fn txt(&self, name: &str) -> Result<Vec<Vec<u8>>, RouteError> {
        let resolver = self.resolver.as_ref().ok_or_else(|| RouteError::Temporary("no DNS resolver".into()))?;
        match resolver.txt_lookup(format!("{name}.")).await {
            Ok(answer) => Ok(answer
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::TXT(txt) => Some(txt.txt_data.concat()),
                    _ => None,
                })
                .collect()),
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(RouteError::Temporary(format!("TXT lookup for {name}: {e}"))),
        }
    }

    /// The addresses of a hop's host (an IP address is itself).
    pub async fn addresses(&self, hop: &Hop) -> Result<Vec<IpAddr>, RouteError> {
        if let Ok(ip) = hop.host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let resolver = self.resolver.as_ref().ok_or_else(|| RouteError::Temporary("no DNS resolver".into()))?;
        match resolver.lookup_ip(format!("{}.", hop.host)).await {
            Ok(ips) => Ok(ips.iter().collect()),
            Err(e) => Err(RouteError::Temporary(format!("address lookup for {}: {e}", hop.host))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::rr::Name;
    use hickory_resolver::proto::rr::rdata::{CNAME, MX};

    #[test]
    fn hops_parse() {
        let hop = |h: &str, p| Some(Hop { host: h.into(), port: p });
        assert_eq!(parse_hop("127.0.0.4:2525"), hop("127.0.0.4", 2525));
        assert_eq!(parse_hop("[::1]:26"), hop("::1", 26));
        assert_eq!(parse_hop("mx.example.test"), hop("mx.example.test", 25));
        assert_eq!(parse_hop("mx.example.test:587"), hop("mx.example.test", 587));
        assert_eq!(parse_hop("mx:port"), None);
        assert_eq!(parse_hop(""), None);
    }

    #[tokio::test]
    async fn transports_and_literals_need_no_dns() {
        let transports = [("far.test".to_string(), Hop { host: "127.0.0.9".into(), port: 2600 })].into();
        let router = Router::new(transports, None, None);
        assert_eq!(router.hops("FAR.test").await.unwrap(), [Hop { host: "127.0.0.9".into(), port: 2600 }]);
        assert_eq!(router.hops("[127.0.0.7]").await.unwrap(), [Hop { host: "127.0.0.7".into(), port: 25 }]);
        assert!(matches!(router.hops("[nonsense]").await, Err(RouteError::Permanent(_))));
        let ips = router.addresses(&Hop { host: "127.0.0.9".into(), port: 1 }).await.unwrap();
        assert_eq!(ips, ["127.0.0.9".parse::<IpAddr>().unwrap()]);
    }

    fn mx(preference: u16, exchange: &str) -> Record {
        let name = Name::from_ascii("example.test.").unwrap();
        Record::from_rdata(name, 300, RData::MX(MX::new(preference, Name::from_ascii(exchange).unwrap())))
    }

    #[test]
    fn mx_answers_become_hops_in_preference_order() {
        let hop = |h: &str| Hop { host: h.into(), port: 25 };
        let cname = Record::from_rdata(
            Name::from_ascii("alias.test.").unwrap(),
            300,
            RData::CNAME(CNAME(Name::from_ascii("example.test.").unwrap())),
        );
        let answers = [cname.clone(), mx(20, "b.mx.test."), mx(10, "a.mx.test.")];
        assert_eq!(mx_hops("example.test".into(), &answers).unwrap(), [hop("a.mx.test"), hop("b.mx.test")]);
        // Only the CNAME: the domain is its own (implicit) MX.
        assert_eq!(mx_hops("example.test".into(), &[cname]).unwrap(), [hop("example.test")]);
        // RFC 7505: `MX 0 .` means no mail at all, whatever else is listed.
        assert!(matches!(mx_hops("example.test".into(), &[mx(0, ".")]), Err(RouteError::Permanent(_))));
    }
}
