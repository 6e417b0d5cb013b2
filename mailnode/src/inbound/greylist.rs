//! Greylisting (RFC 6647) at RCPT on port 25: a recipient whose triplet (client network,
//! reverse path, recipient) the cluster has not seen before gets `451 4.7.1` and passes when
//! the sender retries after the delay — through any node, since the routers keep the triplets
//! in the directory's store ([`crate::cluster::triplets`]). Off by default.
//!
//! Not greylisted: authenticated mail (submission; the session never asks) and clients in
//! `allow`. The null sender is never deferred at RCPT: RFC 6647 advises greylisting
//! null-sender mail (delivery reports), if at all, after DATA, since a 4xx at RCPT for a
//! bounce confuses some MTAs. With `null_sender = "after-data"` its triplets (client network,
//! `<>`, each local recipient) are asked at the end of DATA instead, and one `451` answers
//! for the whole transaction ([`Greylist::check_after_data`]).
//!
//! The addresses are hashed here (SHA-256): neither the router nor its store sees them. When no
//! router answers within `timeout_ms`, the recipient is accepted (fail open: a router outage
//! must not stop inbound mail), logged and counted.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use serde::Deserialize;
use sirms_proto::cidr::Cidr;
use sirms_proto::cluster::GreylistQuery;

use super::ConfigError;
use crate::cluster::triplets::Triplets;
use crate::metrics::NodeMetrics;
use crate::smtp::reply::{Reply, replies};

/// `[inbound.greylist]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GreylistConfig {
    /// Greylist mail from the Internet at RCPT.
    pub enabled: bool,
    /// How long a new triplet is deferred; a retry after it passes.
    pub delay_secs: u64,
    /// How long a passed triplet (or network) passes without delay, counted from its last use.
    pub pass_ttl_days: u64,
    /// How long a deferred triplet waits for its retry before it is forgotten.
    pub pending_ttl_hours: u64,
    /// A client network with this many passed triplets passes at once; 0: never.
    pub network_passes: u32,
    /// Client addresses or networks never greylisted (`ip` or `ip/prefix`).
    pub allow: Vec<String>,
    /// The IPv4 prefix length a client's address is widened to (a sender's pool of servers
    /// retries from neighbouring addresses).
    pub network_v4: u8,
    /// The same for IPv6.
    pub network_v6: u8,
    /// How long the routers have to answer, all of them together, before the recipient is
    /// accepted unchecked.
    pub timeout_ms: u64,
    /// Whether mail from the null sender (`MAIL FROM:<>`) is greylisted, after DATA.
    pub null_sender: NullSender,
}

/// What greylisting does with mail from the null sender (delivery reports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NullSender {
    /// Never deferred: the reports of mail really sent arrive without delay (the default;
    /// RFC 6647 advises greylisting them, if at all, after DATA).
    #[default]
    Never,
    /// Checked at the end of DATA, one triplet per local recipient, before the `250`.
    AfterData,
}

impl Default for GreylistConfig {
    fn default() -> Self {
        GreylistConfig {
            enabled: false,
            delay_secs: 300,
            pass_ttl_days: 36,
            pending_ttl_hours: 24,
            network_passes: 5,
            allow: Vec::new(),
            network_v4: 24,
            network_v6: 64,
            timeout_ms: 2000,
            null_sender: NullSender::Never,
        }
    }
}

/// Greylisting as a node runs it.
pub struct Greylist {
    config: GreylistConfig,
    allow: Vec<Cidr>,
    routers: Triplets,
    metrics: Arc<NodeMetrics>,
}

impl Greylist {
    /// Greylisting as `config` says, asking `routers`; `None` when it is off.
    pub fn new(
        config: &GreylistConfig,
        routers: Option<Triplets>,
        metrics: Arc<NodeMetrics>,
    ) -> Result<Option<Greylist>, ConfigError> {
        if !config.enabled {
            return Ok(None);
        }
        let Some(routers) = routers else {
            return Err(ConfigError(
                "greylist: needs a cluster (`[cluster] routers`): the routers keep the triplets".into(),
            ));
        };
        if config.network_v4 > 32 || config.network_v6 > 128 {
            return Err(ConfigError("greylist: network_v4 is at most 32, network_v6 at most 128".into()));
        }
        if config.delay_secs == 0 || config.pass_ttl_days == 0 || config.pending_ttl_hours == 0 {
            return Err(ConfigError(
                "greylist: delay_secs, pass_ttl_days and pending_ttl_hours must be above 0".into(),
            ));
        }
        if config.pass_ttl_days > 366 || config.pending_ttl_hours > 24 * 366 || config.delay_secs > 24 * 3600 {
            return Err(ConfigError("greylist: delay up to a day, lifetimes up to a year".into()));
        }
        let allow = (config.allow.iter())
            .map(|a| a.parse::<Cidr>().map_err(|e| ConfigError(format!("greylist: allow {a:?}: {e}"))))
            .collect::<Result<_, _>>()?;
        Ok(Some(Greylist { config: config.clone(), allow, routers, metrics }))
    }

    /// Whether mail from `client` with reverse path `from` is greylisted at RCPT.
    pub fn applies(&self, client: IpAddr, from: &str) -> bool {
        !from.is_empty() && !self.allowed(client)
    }

    /// Whether null-sender mail from `client` is greylisted at the end of DATA.
    pub fn applies_after_data(&self, client: IpAddr, from: &str) -> bool {
        from.is_empty() && self.config.null_sender == NullSender::AfterData && !self.allowed(client)
    }

    fn allowed(&self, client: IpAddr) -> bool {
        let client = client.to_canonical();
        self.allow.iter().any(|net| net.contains(client))
    }

    /// What the routers are asked for one recipient: the triplet and its network, hashed.
    pub fn query(&self, client: IpAddr, from: &str, rcpt: &str) -> GreylistQuery {
        let network = network(client, self.config.network_v4, self.config.network_v6);
        GreylistQuery {
            triplet: hash(&["triplet", &network, &from.to_lowercase(), &rcpt.to_lowercase()]),
            network: hash(&["network", &network]),
            delay_secs: self.config.delay_secs,
            pending_ttl_secs: self.config.pending_ttl_hours * 3600,
            pass_ttl_secs: self.config.pass_ttl_days * 24 * 3600,
            network_passes: self.config.network_passes,
        }
    }

    /// `None` when `rcpt` may be taken, or the `451` to answer. Fails open: no answer from
    /// the routers in time takes the recipient.
    pub async fn check(&self, session: &str, client: IpAddr, from: &str, rcpt: &str) -> Option<Reply> {
        if !self.applies(client, from) {
            return None;
        }
        self.ask(session, client, from, rcpt).await.map(|(_, reply)| reply)
    }

    /// At the end of DATA, for null-sender mail: `None` when every local recipient's triplet
    /// (client network, `<>`, recipient) has passed, or the one `451` for the transaction
    /// (the longest wait any of them has left). Each triplet is asked, so that each new one
    /// is recorded by this attempt and its retry can pass them all at once.
    pub async fn check_after_data(
        &self,
        session: &str,
        client: IpAddr,
        from: &str,
        recipients: &[String],
    ) -> Option<Reply> {
        if !self.applies_after_data(client, from) {
            return None;
        }
        let answers =
            futures::future::join_all(recipients.iter().map(|rcpt| self.ask(session, client, from, rcpt))).await;
        answers.into_iter().flatten().max_by_key(|(retry_in, _)| *retry_in).map(|(_, reply)| reply)
    }

    /// Asks the routers about one triplet, counting and logging the answer: `None` when it
    /// passes (or no router answered), or the seconds left to wait and the `451`.
    async fn ask(&self, session: &str, client: IpAddr, from: &str, rcpt: &str) -> Option<(u64, Reply)> {
        let query = self.query(client, from, rcpt);
        match self.routers.ask(&query, Duration::from_millis(self.config.timeout_ms.max(1))).await {
            Ok(answer) if answer.pass => {
                self.metrics.greylist_passed.inc();
                tracing::debug!(%session, %client, %from, %rcpt, reason = %answer.reason, "greylisting: passed");
                None
            }
            Ok(answer) => {
                self.metrics.greylist_deferred.inc();
                tracing::info!(%session, %client, %from, %rcpt, reason = %answer.reason,
                    retry_in = answer.retry_in_secs, "greylisting: deferred");
                Some((
                    answer.retry_in_secs,
                    replies::greylisted_triplet(answer.retry_in_secs, answer.reason == "early"),
                ))
            }
            Err(e) => {
                self.metrics.greylist_failed_open.inc();
                tracing::warn!(%session, %client, %from, %rcpt, error = %e, "greylisting: no answer, recipient accepted");
                None
            }
        }
    }
}

/// The client's network, as text: its address widened to `v4` or `v6` bits.
fn network(client: IpAddr, v4: u8, v6: u8) -> String {
    let client = client.to_canonical();
    let len = if client.is_ipv4() { v4 } else { v6 };
    Cidr::new_truncating(client, len).map_or_else(|_| client.to_string(), |net| net.to_string())
}

/// SHA-256 over `parts`, each preceded by its length: no two lists hash the same input.
fn hash(parts: &[&str]) -> bytes::Bytes {
    let mut input = b"sirms-greylist-v1".to_vec();
    for part in parts {
        input.extend_from_slice(&(part.len() as u64).to_be_bytes());
        input.extend_from_slice(part.as_bytes());
    }
    bytes::Bytes::copy_from_slice(digest(&SHA256, &input).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Arc<NodeMetrics> {
        Arc::new(NodeMetrics::new(std::path::PathBuf::new()))
    }

    fn greylist(config: GreylistConfig) -> Greylist {
        let routers = Triplets::new(&[], &sirms_proto::cluster_tls::Credentials::token("t")).expect("no routers");
        Greylist::new(&config, Some(routers), metrics()).expect("valid").expect("enabled")
    }

    fn on() -> GreylistConfig {
        GreylistConfig { enabled: true, allow: vec!["192.0.2.0/24".into()], ..GreylistConfig::default() }
    }

    #[test]
    fn neighbours_share_a_triplet_and_strangers_do_not() {
        let g = greylist(on());
        let q = |ip: &str, from: &str, rcpt: &str| g.query(ip.parse().expect("ip"), from, rcpt);
        let first = q("198.51.100.7", "a@x.example", "u@ours.example");
        assert_eq!(first.triplet.len(), 32);
        assert_eq!(first.triplet, q("198.51.100.200", "A@X.example", "u@OURS.example").triplet, "same /24, any case");
        assert_eq!(first.network, q("::ffff:198.51.100.9", "b@y", "v@z").network, "a mapped IPv4 is IPv4");
        assert_ne!(first.triplet, q("198.51.101.7", "a@x.example", "u@ours.example").triplet);
        assert_ne!(first.triplet, q("198.51.100.7", "b@x.example", "u@ours.example").triplet);
        assert_ne!(first.triplet, q("198.51.100.7", "a@x.example", "w@ours.example").triplet);
        let v6 = |ip: &str| q(ip, "a@x", "u@y").triplet;
        assert_eq!(v6("2001:db8:1:2::1"), v6("2001:db8:1:2:ffff::9"), "same /64");
        assert_ne!(v6("2001:db8:1:2::1"), v6("2001:db8:1:3::1"));
        assert_eq!(first.delay_secs, 300);
        assert_eq!(first.pass_ttl_secs, 36 * 86_400);
    }

    #[test]
    fn the_null_sender_and_allowed_clients_are_not_greylisted() {
        let g = greylist(on());
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(g.applies(ip("198.51.100.7"), "a@x.example"));
        assert!(!g.applies(ip("198.51.100.7"), ""), "the null sender");
        assert!(!g.applies(ip("192.0.2.55"), "a@x.example"), "allowed network");
        assert!(!g.applies(ip("::ffff:192.0.2.55"), "a@x.example"), "allowed, mapped");
        assert!(!g.applies_after_data(ip("198.51.100.7"), ""), "null sender: never, by default");
        let after = greylist(GreylistConfig { null_sender: NullSender::AfterData, ..on() });
        assert!(after.applies_after_data(ip("198.51.100.7"), ""));
        assert!(!after.applies(ip("198.51.100.7"), ""), "never at RCPT");
        assert!(!after.applies_after_data(ip("198.51.100.7"), "a@x.example"), "senders are checked at RCPT");
        assert!(!after.applies_after_data(ip("192.0.2.55"), ""), "allowed network");
    }

    #[test]
    fn null_sender_config() {
        let parse = |text: &str| toml::from_str::<GreylistConfig>(text).map(|c| c.null_sender);
        assert_eq!(parse("").expect("default"), NullSender::Never);
        assert_eq!(parse("null_sender = \"after-data\"").expect("valid"), NullSender::AfterData);
        assert!(parse("null_sender = \"at-rcpt\"").is_err());
    }

    #[tokio::test]
    async fn no_router_fails_open_and_is_counted() {
        let g = greylist(GreylistConfig { null_sender: NullSender::AfterData, ..on() });
        let client = "198.51.100.7".parse().expect("ip");
        assert_eq!(g.check("s", client, "a@x", "u@y").await, None);
        assert_eq!(g.metrics.greylist_failed_open.get(), 1);
        let users = ["u@y".to_string(), "v@y".to_string()];
        assert_eq!(g.check_after_data("s", client, "", &users).await, None);
        assert_eq!(g.metrics.greylist_failed_open.get(), 3, "one per recipient");
    }

    #[test]
    fn config_is_checked() {
        assert!(Greylist::new(&GreylistConfig::default(), None, metrics()).expect("off").is_none());
        assert!(Greylist::new(&on(), None, metrics()).is_err(), "needs routers");
        let bad = |config: GreylistConfig| {
            let routers = Triplets::new(&[], &sirms_proto::cluster_tls::Credentials::token("t")).expect("routers");
            Greylist::new(&config, Some(routers), metrics()).is_err()
        };
        assert!(bad(GreylistConfig { network_v4: 33, ..on() }));
        assert!(bad(GreylistConfig { delay_secs: 0, ..on() }));
        assert!(bad(GreylistConfig { allow: vec!["nonsense".into()], ..on() }));
    }
}
