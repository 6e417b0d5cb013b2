//! MTA-STS (RFC 8461), the sending side: before delivering to a domain by its MX records,
//! find out whether the domain asks for checked TLS, and how strictly.
//!
//! How a domain's policy is found ([`MtaSts::policy`], §5.1):
//! - the `_mta-sts.DOMAIN` TXT record names the policy's id;
//! - a cached, unexpired policy with that id is used as it is;
//! - otherwise the policy is fetched over HTTPS from `mta-sts.DOMAIN` (certificate checked),
//!   cached durably, then used;
//! - when the TXT record is gone, DNS fails or the fetch fails, an unexpired cached policy
//!   still holds: an attacker who blocks DNS or HTTPS cannot turn enforcement off before
//!   `max_age` runs out. With nothing cached, delivery is opportunistic, as without MTA-STS.
//!
//! What a policy means for delivery is in [`crate::outbound::Outbound::deliver_domain`].

pub mod cache;
pub mod fetch;
pub mod policy;

use std::net::SocketAddr;
use std::time::Duration;

use sirms_telemetry::{Counter, Exposition};

use crate::outbound::dialer::Dialer;
use crate::outbound::pkix::Pkix;
use crate::outbound::route::{Hop, RouteError, Router};
use crate::queue::now;
use cache::{Cached, PolicyCache};
use fetch::FetchError;
use policy::{Policy, PolicyError, txt_id};

/// Addresses of `mta-sts.DOMAIN` tried per fetch.
const MAX_FETCH_ADDRESSES: usize = 2;
/// The port of the policy host (§3.3: HTTPS).
const HTTPS_PORT: u16 = 443;

/// Why a policy could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum StsError {
    #[error("{0}")]
    Dns(#[from] RouteError),
    #[error("{host}[{addr}]: {error}")]
    Connect { host: String, addr: SocketAddr, error: std::io::Error },
    #[error("{0}")]
    Fetch(#[from] FetchError),
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error("no address for {0}")]
    NoAddress(String),
}

/// What MTA-STS did, for `/metrics`.
#[derive(Debug, Default)]
pub struct TlsPolicyMetrics {
    /// Sessions that met their domain's policy.
    pub met: Counter,
    /// Hosts refused because an `enforce` policy was not met (the mail waits).
    pub enforce_failures: Counter,
    /// Sessions that went ahead under a `testing` policy that was not met.
    pub testing_failures: Counter,
    /// Policy fetches that failed.
    pub fetch_failures: Counter,
}

impl TlsPolicyMetrics {
    /// Writes the counters.
    pub fn render(&self, out: &mut Exposition) {
        out.counter(
            "sirms_outbound_tls_policy_total",
            "Outbound MX hosts judged against their domain's MTA-STS policy, by result.",
            &[
                (&[("result", "met")], self.met.get()),
                (&[("result", "enforce_failure")], self.enforce_failures.get()),
                (&[("result", "testing_failure")], self.testing_failures.get()),
            ],
        );
        out.counter(
            "sirms_mta_sts_fetch_failures_total",
            "MTA-STS policy fetches that failed (a cached policy, if any, still holds).",
            &[(&[], self.fetch_failures.get())],
        );
    }
}

/// The sending side's MTA-STS: the cache and how to fetch.
pub struct MtaSts {
    cache: PolicyCache,
    pkix: Pkix,
    fetch_timeout: Duration,
}

impl MtaSts {
    /// Policies cached in `cache`, fetched with certificates checked by `pkix`, each fetch
    /// taking at most `fetch_timeout`.
    pub fn new(cache: PolicyCache, pkix: Pkix, fetch_timeout: Duration) -> MtaSts {
        MtaSts { cache, pkix, fetch_timeout }
    }

    /// The policy that holds for `domain` now (`None`: none, deliver opportunistically).
    pub async fn policy(
        &self,
        domain: &str,
        router: &Router,
        dialer: &Dialer,
        metrics: &TlsPolicyMetrics,
    ) -> Option<Policy> {
        let domain = domain.to_ascii_lowercase();
        let now = now();
        let fresh = self.cache.get(&domain).filter(|c| c.fresh(now));
        let id = match router.txt(&format!("_mta-sts.{domain}")).await {
            Ok(records) => txt_id(records.iter().map(Vec::as_slice)),
            Err(e) => {
                tracing::info!(%domain, error = %e, "MTA-STS record lookup failed; the cached policy, if any, holds");
                None
            }
        };
        let Some(id) = id else { return usable(fresh.map(|c| c.policy)) };
        if let Some(cached) = &fresh
            && cached.id == id
        {
            return usable(Some(cached.policy.clone()));
        }
        match self.fetch(&domain, router, dialer).await {
            Ok(policy) => {
                tracing::info!(%domain, %id, mode = policy.mode.name(), max_age = policy.max_age, "MTA-STS policy fetched");
                let cached = Cached { id, fetched: now, policy: policy.clone() };
                if let Err(e) = self.cache.put(&domain, cached) {
                    // Still enforced for this attempt; a restart may fetch it again.
                    tracing::warn!(%domain, error = %e, "MTA-STS policy not cached");
                }
                usable(Some(policy))
            }
            Err(e) => {
                metrics.fetch_failures.inc();
                tracing::warn!(%domain, error = %e, "MTA-STS policy fetch failed; the cached policy, if any, holds");
                usable(fresh.map(|c| c.policy))
            }
        }
    }

    async fn fetch(&self, domain: &str, router: &Router, dialer: &Dialer) -> Result<Policy, StsError> {
        let host = format!("mta-sts.{domain}");
        let ips = router.addresses(&Hop { host: host.clone(), port: HTTPS_PORT }).await?;
        let mut last = StsError::NoAddress(host.clone());
        for ip in ips.into_iter().take(MAX_FETCH_ADDRESSES) {
            let addr = SocketAddr::new(ip, HTTPS_PORT);
            let stream = match dialer.connect(addr).await {
                Ok(stream) => stream,
                Err(error) => {
                    last = StsError::Connect { host: host.clone(), addr, error };
                    continue;
                }
            };
            match fetch::fetch(Box::new(stream), self.pkix.connector(), &host, self.fetch_timeout).await {
                Ok(body) => return Ok(Policy::parse(&body)?),
                Err(e) => last = e.into(),
            }
        }
        Err(last)
    }
}

/// A `none` policy is the domain withdrawing its policy: deliver as without one.
fn usable(policy: Option<Policy>) -> Option<Policy> {
    policy.filter(|p| p.mode != policy::Mode::None)
}
