//! Outbound mail: each node delivers its own users' mail to foreign domains, from its own
//! egress address — the paper's static assignment of the sending node, which keeps an
//! outbound session and the replies to it on the node that opened it.
//!
//! The queue worker ([`crate::queue::worker`]) decides when; this module decides where
//! ([`route`]) and talks SMTP to the remote side ([`client`]); [`dsn`] writes bounces.

pub mod client;
pub mod dkim;
pub mod dsn;
pub mod reply;
pub mod route;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;

use crate::directory::Directory;
use crate::smtp::dsn::Dsn;
use client::{RcptStatus, Transfer};
use route::{Hop, RouteError, Router};

/// MX hosts tried per attempt, and addresses per host: bounded work for any DNS answer.
const MAX_HOPS: usize = 5;
const MAX_ADDRESSES_PER_HOP: usize = 4;

/// `[outbound]` in node.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    /// Source address of outbound connections (the node's own public alias); unset: the
    /// kernel's choice.
    pub egress: Option<IpAddr>,
    /// Relay all foreign mail through this `host:port` instead of looking up MX hosts.
    pub smarthost: Option<String>,
    /// Static routes, domain → `host:port`; they win over the smarthost and DNS.
    pub transports: BTreeMap<String, String>,
    /// First retry after a temporary failure; each next waits twice as long…
    pub retry_initial_secs: u64,
    /// …up to this.
    pub retry_max_secs: u64,
    /// Undelivered this long after it was queued: bounce.
    pub give_up_secs: u64,
    /// Still undelivered this long after it was queued: tell the sender once (0: never).
    pub warn_after_secs: u64,
    /// Parallel sessions to one destination domain.
    pub per_domain_connections: usize,
    /// Limit for connecting to one address.
    pub connect_timeout_secs: u64,
    /// Limit for each reply of the remote server.
    pub reply_timeout_secs: u64,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            egress: None,
            smarthost: None,
            transports: BTreeMap::new(),
            retry_initial_secs: 300,
            retry_max_secs: 4 * 3600,
            give_up_secs: 5 * 24 * 3600,
            warn_after_secs: 4 * 3600,
            per_domain_connections: 4,
            connect_timeout_secs: 30,
            reply_timeout_secs: 300,
        }
    }
}

impl OutboundConfig {
    /// The pause before retry number `attempts` (1 = the first retry).
    pub fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u64.checked_shl(attempts.saturating_sub(1)).unwrap_or(u64::MAX);
        Duration::from_secs(self.retry_initial_secs.saturating_mul(factor).min(self.retry_max_secs))
    }
}

/// A bad `[outbound]` section.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("[outbound] {what}: {value:?} is not host:port")]
    BadHop { what: String, value: String },
}

/// Delivers messages to foreign domains.
pub struct Outbound {
    config: OutboundConfig,
    hostname: String,
    router: Router,
    directory: Arc<dyn Directory>,
    tls: TlsConnector,
    domains: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Outbound {
    /// An outbound deliverer that says `hostname` in EHLO and takes the admin's transports
    /// from `directory`.
    pub fn new(
        config: &OutboundConfig,
        hostname: &str,
        directory: Arc<dyn Directory>,
    ) -> Result<Outbound, OutboundError> {
        let hop = |what: &str, value: &str| {
            route::parse_hop(value).ok_or_else(|| OutboundError::BadHop { what: what.into(), value: value.into() })
        };
        let transports = config
            .transports
            .iter()
            .map(|(domain, value)| Ok((domain.to_ascii_lowercase(), hop(&format!("transports.{domain}"), value)?)))
            .collect::<Result<BTreeMap<String, Hop>, OutboundError>>()?;
        let smarthost = config.smarthost.as_deref().map(|s| hop("smarthost", s)).transpose()?;
        Ok(Outbound {
            config: config.clone(),
            hostname: hostname.to_string(),
            router: Router::new(transports, smarthost),
            directory,
            tls: client::opportunistic_tls(),
            domains: Mutex::new(HashMap::new()),
        })
    }

    /// The retry schedule and limits.
    pub fn config(&self) -> &OutboundConfig {
        &self.config
    }

    /// Sends `message` to `rcpts`, all in `domain`, with the sender's `dsn` requests, and says
    /// what became of each.
    pub async fn deliver_domain(
        &self,
        from: &str,
        domain: &str,
        rcpts: &[String],
        message: &[u8],
        dsn: &Dsn,
    ) -> Vec<RcptStatus> {
        let gate = {
            let mut domains = self.domains.lock().unwrap_or_else(|p| p.into_inner());
            let limit = self.config.per_domain_connections.max(1);
            domains.entry(domain.to_ascii_lowercase()).or_insert_with(|| Arc::new(Semaphore::new(limit))).clone()
        };
        let Ok(_permit) = gate.acquire_owned().await else {
            return vec![RcptStatus::Deferred("shutting down".into()); rcpts.len()];
        };
        // The cluster-wide transports (`sirms ctl transports`) win over this node's config.
        let admin_hop = self.directory.transport(domain).and_then(|relay| route::parse_hop(&relay));
        let hops = match admin_hop {
            Some(hop) => Ok(vec![hop]),
            None => self.router.hops(domain).await,
        };
        let hops = match hops {
            Ok(hops) => hops,
            Err(RouteError::Permanent(e)) => return vec![RcptStatus::Failed(e); rcpts.len()],
            Err(RouteError::Temporary(e)) => return vec![RcptStatus::Deferred(e); rcpts.len()],
        };
        let transfer = Transfer {
            helo: &self.hostname,
            from,
            rcpts,
            message,
            timeout: Duration::from_secs(self.config.reply_timeout_secs),
            dsn,
        };
        let mut last = format!("no host for {domain}");
        for hop in hops.iter().take(MAX_HOPS) {
            let ips = match self.router.addresses(hop).await {
                Ok(ips) => ips,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            for ip in ips.into_iter().take(MAX_ADDRESSES_PER_HOP) {
                let addr = SocketAddr::new(ip, hop.port);
                let stream = match self.connect(addr).await {
                    Ok(stream) => stream,
                    Err(e) => {
                        last = format!("{}[{addr}]: {e}", hop.host);
                        continue;
                    }
                };
                let name = ServerName::try_from(hop.host.clone()).ok();
                let tls = name.map(|n| (&self.tls, n));
                match client::deliver(Box::new(stream), tls, &transfer).await {
                    Ok(statuses) => {
                        tracing::info!(%domain, host = %hop.host, %addr, statuses = ?statuses, "outbound session");
                        return statuses;
                    }
                    Err(e) => last = format!("{}[{addr}]: {e}", hop.host),
                }
            }
        }
        tracing::info!(%domain, error = %last, "outbound delivery deferred");
        vec![RcptStatus::Deferred(last); rcpts.len()]
    }

    /// Connects from the egress address when it is of the right family.
    async fn connect(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        if let Some(egress) = self.config.egress.filter(|e| e.is_ipv4() == addr.is_ipv4()) {
            socket.bind(SocketAddr::new(egress, 0))?;
        }
        let limit = Duration::from_secs(self.config.connect_timeout_secs);
        tokio::time::timeout(limit, socket.connect(addr))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
    }
}

impl Outbound {
    /// The message as it leaves for other servers: our `Return-Path:` removed, and signed
    /// with the sender's domain's DKIM key if the directory has one.
    pub fn outgoing(&self, from: &str, message: &[u8]) -> Vec<u8> {
        let message = relay_copy(message);
        let domain = domain_of(from);
        let Some((selector, pem)) = self.directory.dkim_key(&domain) else { return message.to_vec() };
        match dkim::signature(message, &domain, &selector, &pem) {
            Ok(mut signed) => {
                signed.extend_from_slice(message);
                signed
            }
            Err(e) => {
                // Unsigned mail may land in spam; undelivered mail is worse.
                tracing::warn!(%domain, error = %e, "sending unsigned");
                message.to_vec()
            }
        }
    }
}

/// The message as it leaves for another server: without the `Return-Path:` line the node
/// put first when it took the message, since only the final delivery adds one (RFC 5321 §4.4).
pub fn relay_copy(message: &[u8]) -> &[u8] {
    let is_return_path = message.get(..12).is_some_and(|h| h.eq_ignore_ascii_case(b"Return-Path:"));
    match message.iter().position(|&b| b == b'\n') {
        Some(end) if is_return_path => &message[end + 1..],
        _ => message,
    }
}

/// The domain part of an address, lower-cased (empty if there is none).
pub fn domain_of(address: &str) -> String {
    address.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = OutboundConfig { retry_initial_secs: 300, retry_max_secs: 4 * 3600, ..Default::default() };
        let secs: Vec<u64> = (1..=8).map(|a| c.backoff(a).as_secs()).collect();
        assert_eq!(secs, [300, 600, 1200, 2400, 4800, 9600, 14400, 14400]);
        assert_eq!(c.backoff(200).as_secs(), 14400);
    }

    #[test]
    fn relayed_copies_lose_our_return_path_only() {
        assert_eq!(relay_copy(b"Return-Path: <a@b>\r\nReceived: x\r\n\r\nbody"), b"Received: x\r\n\r\nbody");
        assert_eq!(relay_copy(b"Received: x\r\nReturn-Path: <a@b>\r\n"), b"Received: x\r\nReturn-Path: <a@b>\r\n");
    }

    #[test]
    fn bad_transports_are_config_errors() {
        let c = OutboundConfig { transports: [("x.test".into(), "host:port".into())].into(), ..Default::default() };
        let directory = Arc::new(crate::directory::DirectoryData::default());
        assert!(Outbound::new(&c, "n1", directory).is_err());
    }
}
