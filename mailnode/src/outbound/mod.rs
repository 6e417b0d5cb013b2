//! Outbound mail: each node delivers its own users' mail to foreign domains, from its own
//! egress address — the paper's static assignment of the sending node, which keeps an
//! outbound session and the replies to it on the node that opened it.
//!
//! The queue worker ([`crate::queue::worker`]) decides when; this module decides where
//! ([`route`]), how safely ([`mta_sts`]) and talks SMTP to the remote side ([`client`]);
//! [`dsn`] writes bounces.

pub mod arc;
pub mod client;
pub mod dialer;
pub mod dkim;
pub mod dsn;
pub mod mta_sts;
pub mod pkix;
pub mod reply;
pub mod route;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;

use crate::directory::Directory;
use crate::inbound::dns::DnsSetupError;
use crate::smtp::dsn::Dsn;
use client::{NotTaken, RcptStatus, StartTls, Transfer};
use dialer::Dialer;
use mta_sts::policy::{Mode, Policy};
use mta_sts::{MtaSts, TlsPolicyMetrics};
use pkix::{Pkix, PkixError, Verdict};
use route::{Hop, RouteError, Router};

/// MX hosts tried per attempt, and addresses per host: bounded work for any DNS answer.
const MAX_HOPS: usize = 5;
const MAX_ADDRESSES_PER_HOP: usize = 4;
/// Limit for one MTA-STS policy fetch, connect to last byte (RFC 8461 §3.3 suggests a minute).
const POLICY_FETCH_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// DNS servers for MX, address and MTA-STS lookups (`ip:port`); empty: the system's.
    pub nameservers: Vec<SocketAddr>,
    /// Look up and obey the MTA-STS policies of destination domains (RFC 8461).
    pub mta_sts: bool,
    /// A PEM file of CA certificates trusted besides the system's roots when a certificate
    /// is checked (MTA-STS policy hosts and MX hosts); for private CAs and tests.
    pub extra_ca_file: Option<PathBuf>,
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
            nameservers: Vec::new(),
            mta_sts: true,
            extra_ca_file: None,
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
    #[error("[outbound] nameservers: {0}")]
    Dns(#[from] DnsSetupError),
    #[error("{0}")]
    Pkix(#[from] PkixError),
    #[error("MTA-STS cache {path}: {error}")]
    Cache { path: String, error: std::io::Error },
}

/// Delivers messages to foreign domains.
pub struct Outbound {
    config: OutboundConfig,
    hostname: String,
    router: Router,
    dialer: Dialer,
    directory: Arc<dyn Directory>,
    tls: TlsConnector,
    /// Checked TLS: for MTA-STS and REQUIRETLS.
    pkix: Pkix,
    /// Off with `mta_sts = false`.
    mta_sts: Option<MtaSts>,
    tls_metrics: Arc<TlsPolicyMetrics>,
    domains: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// How one MX session is held to its domain's policy.
enum Judged {
    /// No policy: opportunistic TLS.
    Opportunistic,
    /// `enforce`: checked TLS or nothing.
    Enforce,
    /// Checked TLS or nothing for the message's sake (REQUIRETLS), not a policy's.
    Checked,
    /// `testing`: go on, but record what the check said.
    Testing { connector: TlsConnector, verdict: Verdict, host_listed: bool },
}

impl Outbound {
    /// An outbound deliverer that says `hostname` in EHLO, takes the admin's transports from
    /// `directory`, caches MTA-STS policies under `data_dir` and counts into `tls_metrics`.
    pub fn new(
        config: &OutboundConfig,
        hostname: &str,
        directory: Arc<dyn Directory>,
        data_dir: &Path,
        tls_metrics: Arc<TlsPolicyMetrics>,
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
        let pkix = Pkix::load(config.extra_ca_file.as_deref())?;
        let mta_sts = if config.mta_sts {
            let dir = data_dir.join("mta-sts");
            let cache = mta_sts::cache::PolicyCache::open(&dir)
                .map_err(|error| OutboundError::Cache { path: dir.display().to_string(), error })?;
            Some(MtaSts::new(cache, pkix.clone(), POLICY_FETCH_TIMEOUT))
        } else {
            None
        };
        Ok(Outbound {
            config: config.clone(),
            hostname: hostname.to_string(),
            router: Router::new(transports, smarthost, route::resolver(&config.nameservers)?),
            dialer: Dialer { egress: config.egress, timeout: Duration::from_secs(config.connect_timeout_secs) },
            directory,
            tls: client::opportunistic_tls(),
            pkix,
            mta_sts,
            tls_metrics,
            domains: Mutex::new(HashMap::new()),
        })
    }

    /// The retry schedule and limits.
    pub fn config(&self) -> &OutboundConfig {
        &self.config
    }

    /// Sends `message` to `rcpts`, all in `domain`, with the sender's `dsn` requests, and says
    /// what became of each. With `requiretls` (RFC 8689) only a host with checked TLS that
    /// offers REQUIRETLS gets it; when none does, the recipients fail with 5.7.30.
    pub async fn deliver_domain(
        &self,
        from: &str,
        domain: &str,
        rcpts: &[String],
        message: &[u8],
        dsn: &Dsn,
        requiretls: bool,
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
        let by_mx = admin_hop.is_none() && self.router.by_mx(domain);
        let hops = match admin_hop {
            Some(hop) => Ok(vec![hop]),
            None => self.router.hops(domain).await,
        };
        let mut hops = match hops {
            Ok(hops) => hops,
            Err(RouteError::Permanent(e)) => return vec![RcptStatus::Failed(e); rcpts.len()],
            Err(RouteError::Temporary(e)) => return vec![RcptStatus::Deferred(e); rcpts.len()],
        };
        let policy = match &self.mta_sts {
            Some(sts) if by_mx => sts.policy(domain, &self.router, &self.dialer, &self.tls_metrics).await,
            _ => None,
        };
        if let Some(policy) = policy.as_ref().filter(|p| p.mode == Mode::Enforce) {
            // Only the MX hosts the policy names (§4.1): a forged MX answer leads nowhere.
            hops.retain(|hop| policy.allows(&hop.host));
            if hops.is_empty() {
                self.tls_metrics.enforce_failures.inc();
                let why = format!("MTA-STS enforce: no MX host of {domain} matches its policy");
                tracing::warn!(%domain, error = %why, "outbound delivery deferred");
                return vec![RcptStatus::Deferred(why); rcpts.len()];
            }
        }
        let transfer = Transfer {
            helo: &self.hostname,
            from,
            rcpts,
            message,
            timeout: Duration::from_secs(self.config.reply_timeout_secs),
            dsn,
            requiretls,
        };
        // Whether some host was refused for REQUIRETLS's sake (not merely unreachable).
        let mut requiretls_refused = false;
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
                let stream = match self.dialer.connect(addr).await {
                    Ok(stream) => stream,
                    Err(e) => {
                        last = format!("{}[{addr}]: {e}", hop.host);
                        continue;
                    }
                };
                let judged = match self.judge(policy.as_ref(), &hop.host) {
                    // REQUIRETLS: checked TLS to every host, with or without a policy.
                    Judged::Opportunistic | Judged::Testing { .. } if requiretls => Judged::Checked,
                    judged => judged,
                };
                let name = ServerName::try_from(hop.host.clone()).ok();
                let checked = self.pkix.connector();
                let tls = name.map(|name| match &judged {
                    Judged::Opportunistic => StartTls { connector: &self.tls, name, required: false },
                    Judged::Enforce | Judged::Checked => StartTls { connector: checked, name, required: true },
                    Judged::Testing { connector, .. } => StartTls { connector, name, required: false },
                });
                if tls.is_none() && matches!(judged, Judged::Enforce | Judged::Checked) {
                    last = format!("{}: no host name to check a certificate for", hop.host);
                    continue;
                }
                match client::deliver(Box::new(stream), tls, &transfer).await {
                    Ok(statuses) => {
                        self.account(domain, &hop.host, &judged);
                        tracing::info!(%domain, host = %hop.host, %addr, statuses = ?statuses, "outbound session");
                        return statuses;
                    }
                    Err(e) => {
                        requiretls_refused |= requiretls && e.fails_requiretls();
                        last = self.refused(domain, &hop.host, addr, &judged, e);
                    }
                }
            }
        }
        if requiretls_refused {
            // RFC 8689 §5: not relayed without it, and returned to the sender.
            let why = format!("550 5.7.30 REQUIRETLS support required: {last}");
            tracing::warn!(%domain, error = %why, "REQUIRETLS message bounced");
            return vec![RcptStatus::Failed(why); rcpts.len()];
        }
        tracing::info!(%domain, error = %last, "outbound delivery deferred");
        vec![RcptStatus::Deferred(last); rcpts.len()]
    }

    /// How a session to MX `host` is held to `policy`.
    fn judge(&self, policy: Option<&Policy>, host: &str) -> Judged {
        match policy {
            Some(p) if p.mode == Mode::Enforce => Judged::Enforce,
            Some(p) => {
                let (connector, verdict) = self.pkix.recording();
                Judged::Testing { connector, verdict, host_listed: p.allows(host) }
            }
            None => Judged::Opportunistic,
        }
    }

    /// Counts and logs a session that took the message, as its policy judges it.
    fn account(&self, domain: &str, host: &str, judged: &Judged) {
        match judged {
            Judged::Opportunistic | Judged::Checked => {}
            Judged::Enforce => self.tls_metrics.met.inc(),
            Judged::Testing { verdict, host_listed, .. } => {
                let verdict = verdict.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
                let failure = match (verdict, host_listed) {
                    (_, false) => Some("MX host not in the policy".to_string()),
                    (None, true) => Some("no TLS".to_string()),
                    (Some(Err(e)), true) => Some(format!("certificate: {e}")),
                    (Some(Ok(())), true) => None,
                };
                match failure {
                    Some(why) => {
                        self.tls_metrics.testing_failures.inc();
                        tracing::warn!(%domain, %host, error = %why, "MTA-STS testing policy not met; delivered anyway");
                    }
                    None => self.tls_metrics.met.inc(),
                }
            }
        }
    }

    /// The error text of a host that did not take the message; counted when an `enforce`
    /// policy was why.
    fn refused(&self, domain: &str, host: &str, addr: SocketAddr, judged: &Judged, e: NotTaken) -> String {
        if matches!(judged, Judged::Enforce) && e.is_tls() {
            self.tls_metrics.enforce_failures.inc();
            let why = format!("MTA-STS enforce: {host}[{addr}]: {e}");
            tracing::warn!(%domain, error = %why, "MX host refused by policy; the mail waits");
            return why;
        }
        format!("{host}[{addr}]: {e}")
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
        let dir = tempfile::tempdir().unwrap();
        assert!(Outbound::new(&c, "n1", directory, dir.path(), Arc::default()).is_err());
    }
}
