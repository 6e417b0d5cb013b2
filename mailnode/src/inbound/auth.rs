//! Sender authentication of mail from the Internet (port 25, no login): SPF for the HELO
//! and MAIL FROM identities (RFC 7208), every DKIM signature (RFC 6376), the ARC chain
//! (RFC 8617), DMARC alignment and policy (RFC 7489), and iprev (RFC 8601 §3). The results
//! go on top of the message in one `Authentication-Results:` field naming this node; the
//! DMARC policy decides between delivery, the Junk folder and a refusal.
//!
//! mail-auth does the protocol work (including SPF's ten-lookup limit; the two-void-lookup
//! limit is ours, in [`void_lookups`]); this stage decides
//! what its results mean for the message.

mod allowlist;
mod arc_trust;
mod metrics;
mod own_results;
mod policy;
mod void_lookups;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mail_auth::dkim::DkimError;
use mail_auth::dmarc::Policy as DmarcPolicy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcOutput, DmarcResult,
    IprevOutput, MessageAuthenticator, SpfOutput, SpfResult,
};
use serde::Deserialize;

use crate::inbound::{Arrival, ConfigError, Verdict};
use crate::smtp::reply::replies;

pub use metrics::AuthMetrics;
pub use policy::{Enforcement, OnTempError};

use allowlist::Allowlist;
use policy::{Action, Dmarc, Facts, Published, Rules};

/// `[inbound.auth]` in node.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Check mail from the Internet at all (off by default: every message costs DNS lookups).
    pub enabled: bool,
    /// What a DMARC failure under `p=reject` gets: `"reject"`, `"quarantine"` or `"none"`.
    pub dmarc_reject: Enforcement,
    /// What a DMARC failure under `p=quarantine` gets.
    pub dmarc_quarantine: Enforcement,
    /// Domains (and their subdomains) and client networks whose failures are not acted on.
    pub allow: Vec<String>,
    /// ARC sealers whose `dmarc=pass` is honoured when ours fails (forwarders, lists).
    pub trusted_arc_sealers: Vec<String>,
    /// When a lookup fails for now: `"defer"` (451) or `"accept"` (delivered, marked).
    pub temperror: OnTempError,
    /// How long one DNS query may take, in seconds (asked twice).
    pub dns_timeout_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: false,
            dmarc_reject: Enforcement::Reject,
            dmarc_quarantine: Enforcement::Quarantine,
            allow: Vec::new(),
            trusted_arc_sealers: Vec::new(),
            temperror: OnTempError::Defer,
            dns_timeout_secs: 5,
        }
    }
}

/// The sender authentication stage.
pub struct Checker {
    resolver: MessageAuthenticator,
    /// The authserv-id of our `Authentication-Results:`: the node's hostname.
    authserv_id: String,
    rules: Rules,
    allow: Allowlist,
    trusted_sealers: Vec<String>,
    metrics: Arc<AuthMetrics>,
}

/// Everything the checks found for one message.
struct Results<'x> {
    spf_helo: SpfOutput,
    spf_mail: SpfOutput,
    dkim: Vec<DkimOutput<'x>>,
    arc: ArcOutput<'x>,
    dmarc: DmarcOutput,
    iprev: IprevOutput,
}

impl Checker {
    /// The stage `config` describes, resolving through `nameservers` (none: the system's),
    /// counting into `metrics`.
    pub fn new(
        config: &AuthConfig,
        nameservers: &[SocketAddr],
        hostname: &str,
        metrics: Arc<AuthMetrics>,
    ) -> Result<Checker, ConfigError> {
        let resolver = super::dns::resolver(nameservers, Duration::from_secs(config.dns_timeout_secs.max(1)))
            .map_err(|e| ConfigError(format!("auth: {e}")))?;
        Ok(Checker {
            resolver,
            authserv_id: hostname.to_string(),
            rules: Rules {
                on_reject: config.dmarc_reject,
                on_quarantine: config.dmarc_quarantine,
                temperror: config.temperror,
            },
            allow: Allowlist::parse(&config.allow)?,
            trusted_sealers: config.trusted_arc_sealers.clone(),
            metrics,
        })
    }

    /// Checks `message`, adding our `Authentication-Results:` to `verdict` and, by DMARC's
    /// policy, filing it as junk or refusing it. Submission (a login) is not checked.
    pub async fn run(&self, arrival: &Arrival<'_>, message: &[u8], verdict: &mut Verdict) {
        if arrival.login.is_some() {
            return;
        }
        verdict.checked_by = Some(self.authserv_id.clone());
        let base = verdict.rewritten.as_deref().unwrap_or(message);
        if let Some(stripped) = own_results::strip(base, &self.authserv_id) {
            tracing::info!(msg = %arrival.id, client = %arrival.client, "removed Authentication-Results claiming to be ours");
            verdict.rewritten = Some(stripped);
        }
        // Signatures are checked on the message as the sender signed it, forged fields and all.
        let Some(parsed) = AuthenticatedMessage::parse(message) else {
            // No header section: nothing to sign or to align; SPF alone still says something.
            let (spf_helo, spf_mail) = self.spf(arrival).await;
            let header = AuthenticationResults::new(&self.authserv_id)
                .with_spf_ehlo_result(&spf_helo, arrival.client, arrival.helo)
                .with_spf_mailfrom_result(&spf_mail, arrival.client, arrival.from, arrival.helo);
            verdict.headers.push_str(&format!("Authentication-Results: {header};\r\n\tdkim=none;\r\n\tdmarc=none\r\n"));
            let facts = Facts {
                dmarc: Dmarc::None,
                published: Published::None,
                temperror: spf_mail.result() == SpfResult::TempError,
                allowlisted: self.allow.allows(arrival.client, &[arrival.from.rsplit_once('@').map_or("", |(_, d)| d)]),
                arc_trusted_pass: false,
            };
            let action = policy::decide(facts, self.rules);
            self.metrics.count(facts.dmarc, action);
            tracing::info!(msg = %arrival.id, spf = ?spf_mail.result(), ?action, "sender authentication: message without headers");
            if action == Action::Defer {
                verdict.refuse = Some(replies::auth_temperror());
            }
            return;
        };
        let results = self.verify(arrival, &parsed).await;
        verdict.headers.push_str(&self.header(arrival, &parsed, &results));

        let facts = self.facts(arrival, &results);
        let action = policy::decide(facts, self.rules);
        self.metrics.count(facts.dmarc, action);
        tracing::info!(
            msg = %arrival.id, client = %arrival.client, helo = %arrival.helo, from = %arrival.from,
            header_from = %results.dmarc.domain(), spf_helo = ?results.spf_helo.result(),
            spf = ?results.spf_mail.result(), dkim = ?as_reported(&results.dkim).iter().map(|d| short(d.result())).collect::<Vec<_>>(),
            arc = short(results.arc.result()), dmarc = ?facts.dmarc, policy = ?facts.published,
            iprev = ?results.iprev.result(), allowlisted = facts.allowlisted, arc_trusted = facts.arc_trusted_pass,
            ?action, "sender authentication"
        );
        match action {
            Action::Deliver => {}
            Action::Junk => verdict.junk = true,
            Action::Reject => verdict.refuse = Some(replies::dmarc_reject(results.dmarc.domain())),
            Action::Defer => verdict.refuse = Some(replies::auth_temperror()),
        }
    }

    /// SPF for the HELO identity and for MAIL FROM (the HELO one again for the null sender,
    /// RFC 7208 §2.4).
    async fn spf(&self, arrival: &Arrival<'_>) -> (SpfOutput, SpfOutput) {
        let ip = arrival.client;
        let helo =
            void_lookups::check_spf(&self.resolver, SpfParameters::verify_ehlo(ip, arrival.helo, &self.authserv_id))
                .await;
        if arrival.from.is_empty() {
            return (helo.clone(), helo);
        }
        let mail = void_lookups::check_spf(
            &self.resolver,
            SpfParameters::verify_mail_from(ip, arrival.helo, &self.authserv_id, arrival.from),
        )
        .await;
        (helo, mail)
    }

    async fn verify<'x>(&self, arrival: &Arrival<'_>, message: &'x AuthenticatedMessage<'x>) -> Results<'x> {
        let ((spf_helo, spf_mail), dkim, arc, iprev) = tokio::join!(
            self.spf(arrival),
            self.resolver.verify_dkim(message),
            self.resolver.verify_arc(message),
            self.resolver.verify_iprev(arrival.client),
        );
        let mail_from_domain = match arrival.from.rsplit_once('@') {
            Some((_, domain)) => domain,
            None => arrival.helo,
        };
        let dmarc = self.resolver.verify_dmarc(DmarcParameters::new(message, &dkim, mail_from_domain, &spf_mail)).await;
        Results { spf_helo, spf_mail, dkim, arc, dmarc, iprev }
    }

    /// Our `Authentication-Results:` field, CRLF-terminated.
    fn header(&self, arrival: &Arrival<'_>, message: &AuthenticatedMessage<'_>, r: &Results<'_>) -> String {
        let ip = arrival.client;
        let header = AuthenticationResults::new(&self.authserv_id)
            .with_spf_ehlo_result(&r.spf_helo, ip, arrival.helo)
            .with_spf_mailfrom_result(&r.spf_mail, ip, arrival.from, arrival.helo)
            .with_dkim_results(&as_reported(&r.dkim), message.from())
            .with_arc_result(&r.arc, ip)
            .with_dmarc_result(&r.dmarc)
            .with_iprev_result(&r.iprev, ip);
        // RFC 8601 §2.7.1: an unsigned message is `dkim=none`, not silence.
        let unsigned = if r.dkim.is_empty() { ";\r\n\tdkim=none" } else { "" };
        format!("Authentication-Results: {header}{unsigned}\r\n")
    }

    fn facts(&self, arrival: &Arrival<'_>, r: &Results<'_>) -> Facts {
        let dmarc = match r.dmarc.result() {
            DmarcResult::Pass => Dmarc::Pass,
            DmarcResult::Fail(_) => Dmarc::Fail,
            DmarcResult::TempError(_) => Dmarc::TempError,
            DmarcResult::PermError(_) => Dmarc::PermError,
            DmarcResult::None => Dmarc::None,
        };
        let published = match r.dmarc.policy() {
            DmarcPolicy::Reject => Published::Reject,
            DmarcPolicy::Quarantine => Published::Quarantine,
            DmarcPolicy::None | DmarcPolicy::Unspecified => Published::None,
        };
        let temperror = r.spf_mail.result() == SpfResult::TempError
            || r.dkim.iter().any(|d| matches!(d.result(), DkimResult::TempError(_)))
            || matches!(r.arc.result(), DkimResult::TempError(_));
        let mail_from_domain = arrival.from.rsplit_once('@').map_or("", |(_, d)| d);
        let allowlisted = self.allow.allows(arrival.client, &[r.dmarc.domain(), mail_from_domain]);
        let arc_trusted_pass = arc_trust::trusted_dmarc_pass(&r.arc, &self.trusted_sealers);
        Facts { dmarc, published, temperror, allowlisted, arc_trusted_pass }
    }
}

/// DKIM results as RFC 8601 names them: mail-auth calls a body that does not match its
/// signature's hash `neutral`, but RFC 6376 §6.1.3 makes it a PERMFAIL, which is `fail`,
/// and readers (and filters) act on `fail`.
fn as_reported<'a>(dkim: &'a [DkimOutput<'_>]) -> Vec<DkimOutput<'a>> {
    dkim.iter()
        .map(|d| match (d.result(), d.signature()) {
            (DkimResult::Neutral(e @ mail_auth::Error::Dkim(DkimError::FailedBodyHashMatch)), Some(signature)) => {
                DkimOutput::fail(e.clone()).with_signature(signature)
            }
            _ => d.clone(),
        })
        .collect()
}

/// A result's name, without the error details that make logs unreadable.
fn short(result: &DkimResult) -> &'static str {
    match result {
        DkimResult::Pass => "pass",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbound::InboundConfig;

    #[test]
    fn config_keys() {
        let config: InboundConfig = toml::from_str(
            r#"
nameservers = ["127.0.26.53:5353"]
[auth]
enabled = true
dmarc_reject = "quarantine"
dmarc_quarantine = "none"
allow = ["partner.test", "192.0.2.0/24"]
trusted_arc_sealers = ["lists.test"]
temperror = "accept"
dns_timeout_secs = 2
"#,
        )
        .expect("valid config");
        assert_eq!(config.nameservers, vec!["127.0.26.53:5353".parse::<SocketAddr>().unwrap()]);
        let auth = &config.auth;
        assert!(auth.enabled);
        assert_eq!((auth.dmarc_reject, auth.dmarc_quarantine), (Enforcement::Quarantine, Enforcement::None));
        assert_eq!(auth.temperror, OnTempError::Accept);
        assert_eq!(auth.dns_timeout_secs, 2);

        let default = InboundConfig::default().auth;
        assert!(!default.enabled, "off unless asked: every message would cost DNS lookups");
        assert_eq!((default.dmarc_reject, default.temperror), (Enforcement::Reject, OnTempError::Defer));

        for bad in ["[auth]\ndmarc_reject = \"bounce\"", "[auth]\ntemperror = \"pass\"", "[auth]\nspf = true"] {
            assert!(toml::from_str::<InboundConfig>(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_bad_allow_entry_is_a_config_error() {
        let config = AuthConfig { enabled: true, allow: vec!["10.0.0.0/40".into()], ..AuthConfig::default() };
        let nameservers = ["127.0.0.1:53".parse().unwrap()];
        assert!(Checker::new(&config, &nameservers, "mx.test", Arc::default()).is_err());
        assert!(Checker::new(&AuthConfig::default(), &nameservers, "mx.test", Arc::default()).is_ok());
    }
}
