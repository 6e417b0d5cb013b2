//! What the node checks on a message at the end of DATA, before it answers `250`: sender
//! authentication (SPF, DKIM, DMARC, ARC) and content filters (rspamd, milters). One stage
//! with one outcome, a [`Verdict`], so that every check refuses, marks or files mail the
//! same way and the session has one place to ask.
//!
//! Each check is a [`Stage`]; they run in order, each seeing the headers the ones before it
//! added, and the first refusal ends the run. A check that cannot reach what it needs (DNS,
//! a filter down) decides by its own config between accepting the mail marked as unchecked
//! and a temporary refusal: never a silent pass, never a lost message.

pub mod edit;
pub mod filter;
pub mod milter;
pub mod rspamd;

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use crate::metrics::NodeMetrics;
use crate::smtp::reply::Reply;
use crate::spill::Received;

pub mod auth;
pub(crate) mod dns;
pub mod dnsbl;
pub mod greylist;

/// What the session knows of a message when its data ends.
#[derive(Debug, Clone)]
pub struct Arrival<'a> {
    /// The message id the node gave it (logs, queue ids).
    pub id: &'a str,
    /// The client's address (the real one, from the router's PROXY header).
    pub client: IpAddr,
    /// The name the client gave in EHLO/HELO.
    pub helo: &'a str,
    /// The reverse path; empty for the null sender.
    pub from: &'a str,
    /// Every recipient: local users, then foreign addresses.
    pub recipients: Vec<&'a str>,
    /// The authenticated login: submission, which sender authentication does not check.
    pub login: Option<&'a str>,
    /// Whether the session runs over TLS.
    pub tls: bool,
}

/// What the checks decided about one message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// Header fields to put on top of the message (`Authentication-Results:`, a filter's
    /// `X-Spam-*`), each ending in CRLF, in the order the stages added them.
    pub headers: String,
    /// The message as a filter rewrote it (a milter's body or header changes, rspamd's
    /// rewritten subject); `None` keeps it as received.
    pub rewritten: Option<Vec<u8>>,
    /// File into the recipients' Junk instead of their INBOX (DMARC `p=quarantine`, a
    /// filter's "add header" action).
    pub junk: bool,
    /// The filter's judgement on Sieve's `spamtest` scale (RFC 5235): 1 clean … 10 spam.
    pub spam_score: Option<f64>,
    /// Refuse the message with this reply instead: a 5xx for good, a 4xx to be retried.
    pub refuse: Option<Reply>,
    /// The authserv-id of the `Authentication-Results:` sender authentication added (and
    /// whose forgeries it removed): a forwarded copy is ARC-sealed on the strength of it.
    pub checked_by: Option<String>,
}

impl Verdict {
    /// The message to deliver: the stages' header fields on top of the (possibly rewritten)
    /// message. A large message stays where it is (its spill file): the fields go in front.
    pub fn apply(&mut self, message: Received) -> Received {
        let message = match self.rewritten.take() {
            Some(rewritten) => Received::Memory(rewritten),
            None => message,
        };
        message.prepend(self.headers.as_bytes())
    }
}

/// `[inbound]` in node.toml: which checks run on mail from the Internet (port 25).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InboundConfig {
    /// DNS servers the checks ask (`"127.0.0.1:53"`); empty: the system's resolv.conf.
    pub nameservers: Vec<SocketAddr>,
    /// Sender authentication: SPF, DKIM, ARC, DMARC, iprev (`[inbound.auth]`).
    pub auth: auth::AuthConfig,
    /// DNS blocklists asked at connect (`[inbound.dnsbl]`).
    pub dnsbl: dnsbl::DnsblConfig,
    /// Greylisting at RCPT (`[inbound.greylist]`).
    pub greylist: greylist::GreylistConfig,
    /// `[inbound.rspamd]`: scan with rspamd over HTTP.
    pub rspamd: Option<rspamd::RspamdConfig>,
    /// `[[inbound.milter]]`: milters to ask, in order, after rspamd.
    pub milter: Vec<milter::MilterConfig>,
}

/// A check whose config cannot work (a bad address, an unreadable key).
#[derive(Debug, thiserror::Error)]
#[error("[inbound] {0}")]
pub struct ConfigError(pub String);

/// One check.
pub enum Stage {
    /// SPF, DKIM, ARC, DMARC and iprev, with DMARC's policy.
    Auth(Box<auth::Checker>),
    /// rspamd, over its HTTP protocol.
    Rspamd(rspamd::Client),
    /// A milter, over the milter protocol.
    Milter(milter::Client),
}

impl Stage {
    /// Runs this check on `message` (as received, plus what earlier stages added to
    /// `verdict`), adding to `verdict`.
    async fn run(&self, arrival: &Arrival<'_>, message: &[u8], verdict: &mut Verdict) {
        match self {
            Stage::Auth(checker) => checker.run(arrival, message, verdict).await,
            Stage::Rspamd(client) => client.run(arrival, message, verdict).await,
            Stage::Milter(client) => client.run(arrival, message, verdict).await,
        }
    }
}

/// The checks a node runs, in order.
#[derive(Default)]
pub struct Checks {
    stages: Vec<Stage>,
}

impl Checks {
    /// The checks `config` names, on a node called `hostname`, counting into `metrics`: sender
    /// authentication first (its results are header fields the filters then see), then rspamd,
    /// then each milter.
    pub fn new(config: &InboundConfig, hostname: &str, metrics: &NodeMetrics) -> Result<Checks, ConfigError> {
        let mut stages = Vec::new();
        if config.auth.enabled {
            let counts = metrics.inbound_auth.clone();
            stages.push(Stage::Auth(Box::new(auth::Checker::new(
                &config.auth,
                &config.nameservers,
                hostname,
                counts,
            )?)));
        }
        let filters = metrics.filters.clone();
        if let Some(rspamd) = &config.rspamd {
            stages.push(Stage::Rspamd(rspamd::Client::new(rspamd, filters.clone())?));
        }
        for milter in &config.milter {
            stages.push(Stage::Milter(milter::Client::new(milter, filters.clone())?));
        }
        Ok(Checks { stages })
    }

    /// Whether any check is configured (a node with none skips the stage entirely).
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// Runs every stage on `message` until one refuses it.
    pub async fn check(&self, arrival: &Arrival<'_>, message: &[u8]) -> Verdict {
        let mut verdict = Verdict::default();
        for stage in &self.stages {
            stage.run(arrival, message, &mut verdict).await;
            if verdict.refuse.is_some() {
                break;
            }
        }
        verdict
    }
}
