//! The queue runner: retries local deliveries until the home store takes them, and delivers
//! to foreign domains with backoff, delay warnings and bounces.
//!
//! Every change to an envelope is written durably before the next step relies on it, and a
//! bounce is queued durably before the envelope that caused it is updated: a crash can make
//! a message or bounce go out twice (in a window of milliseconds), never vanish. Bounces are
//! sent with the null reverse path and are never bounced themselves (RFC 5321 §4.5.5).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, Semaphore, watch};

use super::notice::Notifier;
use super::{Claim, QueuedEnvelope, Spool, Unreadable, now};
use crate::cluster::spool_copy::SpoolPeers;
use crate::delivery::{Delivering, Delivery};
use crate::metrics::NodeMetrics;
use crate::outbound::client::RcptStatus;
use crate::outbound::dsn::{Action, RecipientReport};
use crate::outbound::{Outbound, domain_of};

/// How often the queue is looked at.
const SCAN_INTERVAL: Duration = Duration::from_secs(2);
/// Longest pause between two local delivery attempts (the home store is ours: it comes back).
const MAX_LOCAL_BACKOFF_SECS: i64 = 15 * 60;
/// Messages worked on at once.
const PARALLEL_MESSAGES: usize = 16;
/// How often peers that have not answered yet are asked which of our entries they adopted.
const ASK_ADOPTED_INTERVAL: Duration = Duration::from_secs(10);
/// How long after start an entry whose copy is on a peer that has not answered waits: that
/// peer may have delivered it already. Past this, a peer that still does not answer is taken
/// to be gone for good, and the entry is delivered from here.
const HOLD_FOR_UNASKED_PEER: Duration = Duration::from_secs(15 * 60);

/// What the queue runner needs.
#[derive(Clone)]
pub struct Worker {
    pub spool: Arc<Spool>,
    pub delivery: Delivery,
    pub outbound: Arc<Outbound>,
    /// What tells senders of failures, delays and (when asked) deliveries.
    pub notifier: Notifier,
    /// Rung by `sirms ctl queue flush`: scan now rather than at the next tick.
    pub wake: Arc<Notify>,
    /// Where outcomes are counted.
    pub metrics: Arc<NodeMetrics>,
    /// The nodes that keep copies of our entries (`None`: a node alone).
    pub spool_peers: Option<Arc<SpoolPeers>>,
    /// Unreadable envelopes already logged: each is raised once, not at every scan.
    pub reported: Arc<Mutex<HashSet<String>>>,
}

impl Worker {
    /// Runs the queue until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        // Peers asked which of our entries they delivered while we were gone, and when we
        // last asked those that did not answer.
        let mut asked = Vec::new();
        let mut last_asked: Option<std::time::Instant> = None;
        let started = std::time::Instant::now();
        loop {
            if let Some(peers) = &self.spool_peers
                && last_asked.is_none_or(|at| at.elapsed() >= ASK_ADOPTED_INTERVAL)
            {
                peers.drop_adopted(&self.spool, &mut asked).await;
                last_asked = Some(std::time::Instant::now());
            }
            let held_back = started.elapsed() < HOLD_FOR_UNASKED_PEER;
            self.run_once(|env| held_back && !env.copy.is_empty() && !asked.contains(&env.copy)).await;
            tokio::select! {
                _ = tokio::time::sleep(SCAN_INTERVAL) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One pass: every message that is due and not `held` gets one attempt.
    pub async fn run_once(&self, held: impl Fn(&QueuedEnvelope) -> bool) {
        let listing = match self.spool.run(Spool::list).await {
            Ok(listing) => listing,
            Err(e) => {
                tracing::error!(error = %e, "queue not readable");
                return;
            }
        };
        self.raise_unreadable(&listing.unreadable);
        let gate = Arc::new(Semaphore::new(PARALLEL_MESSAGES));
        let mut tasks = tokio::task::JoinSet::new();
        for env in listing.envelopes.into_iter().filter(|e| !e.is_done() && e.next_attempt <= now() && !held(e)) {
            let Ok(permit) = gate.clone().acquire_owned().await else { break };
            let worker = self.clone();
            tasks.spawn(async move {
                worker.claim_and_attempt(env.id).await;
                drop(permit);
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Envelopes that cannot be read hold their messages back for good: each is logged as an
    /// error when first seen, and `sirms_queue_unreadable_envelopes` counts them while they last.
    fn raise_unreadable(&self, unreadable: &[Unreadable]) {
        self.metrics.queue_unreadable.set(unreadable.len() as i64);
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        reported.retain(|id| unreadable.iter().any(|u| &u.id == id));
        for bad in unreadable {
            if reported.insert(bad.id.clone()) {
                tracing::error!(
                    id = %bad.id, reason = %bad.reason,
                    "unreadable queue envelope: its message is not delivered until the file is repaired or removed"
                );
            }
        }
    }

    /// Claims entry `id` (one writer at a time: `sirms ctl queue flush` may hold it) and makes
    /// one attempt with the envelope as it is on disk now.
    async fn claim_and_attempt(&self, id: String) {
        let Some(claim) = self.spool.claim(&id) else { return };
        let reread = self.spool.run(move |s| s.envelope(&id)).await;
        match reread {
            Ok(Some(env)) if !env.is_done() && env.next_attempt <= now() => self.attempt(claim, env).await,
            Ok(_) => {}
            // Torn since the listing: the next pass reports it.
            Err(e) => tracing::warn!(id = %claim.id(), error = %e, "queue envelope unreadable"),
        }
    }

    /// One attempt for every recipient still pending; `claim` is the entry's.
    async fn attempt(&self, claim: Claim, mut env: QueuedEnvelope) {
        let id = env.id.clone();
        let message: Bytes = match self.spool.run(move |s| s.mapped_message(&id)).await {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // An envelope outlived its message (removed in a race): nothing to send.
                let _ = self.spool.run(move |s| s.remove(&claim)).await;
                return;
            }
            Err(e) => {
                tracing::warn!(id = %env.id, error = %e, "queued message unreadable");
                return;
            }
        };
        if env.created == 0 {
            env.created = now();
        }
        if env.copy.is_empty()
            && let Some(peers) = self.spool_peers.as_ref().filter(|p| p.any())
        {
            // Accepted while no peer answered: the copy is made now, if one does.
            if let Ok(peer) = peers.keep(&env, &message).await {
                env.copy = peer;
            }
        }
        let mut failed: Vec<RecipientReport> = Vec::new();

        // Recipients whose sender asked to hear of their delivery (RFC 3461 NOTIFY=SUCCESS).
        let (mut delivered, mut relayed) = (Vec::new(), Vec::new());
        if !env.local.is_empty() {
            let delivering = Delivering {
                id: &env.id,
                from: &env.from,
                folder: env.folder,
                spam_score: None,
                checked_by: Some(env.checked_by.as_str()).filter(|c| !c.is_empty()),
            };
            let results = self.delivery.deliver_each(&delivering, &env.local, message.clone()).await;
            let (ok, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(|(_, r)| r.is_ok());
            env.local = failed.into_iter().map(|(u, _)| u).collect();
            delivered.extend(ok.into_iter().map(|(user, _)| RecipientReport::new(user, "")));
        }
        if !env.remote.is_empty() {
            let outgoing = self.outbound.outgoing(&env.from, &message);
            let mut by_domain: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for rcpt in std::mem::take(&mut env.remote) {
                by_domain.entry(domain_of(&rcpt)).or_default().push(rcpt);
            }
            let sessions = by_domain.iter().map(|(domain, rcpts)| {
                let (outbound, from, message, dsn) = (&self.outbound, &env.from, &outgoing, &env.dsn);
                let requiretls = env.requiretls;
                async move { (rcpts, outbound.deliver_domain(from, domain, rcpts, message, dsn, requiretls).await) }
            });
            for (rcpts, statuses) in futures::future::join_all(sessions).await {
                for (rcpt, status) in rcpts.iter().zip(statuses) {
                    match status {
                        RcptStatus::Delivered(_) => {
                            self.metrics.outbound_delivered.inc();
                            env.errors.remove(rcpt);
                        }
                        RcptStatus::Relayed(reply) => {
                            self.metrics.outbound_delivered.inc();
                            env.errors.remove(rcpt);
                            relayed.push(RecipientReport::new(rcpt.clone(), reply));
                        }
                        RcptStatus::Failed(why) => {
                            env.errors.remove(rcpt);
                            failed.push(RecipientReport::new(rcpt.clone(), why));
                        }
                        RcptStatus::Deferred(why) => {
                            self.metrics.outbound_deferred.inc();
                            env.errors.insert(rcpt.clone(), why);
                            env.remote.push(rcpt.clone());
                        }
                    }
                }
            }
        }
        env.attempts += 1;
        let config = self.outbound.config();
        let age = now() - env.created;
        if age >= config.give_up_secs as i64 {
            let days = config.give_up_secs as f64 / 86400.0;
            for rcpt in env.local.drain(..).chain(env.remote.drain(..)) {
                let last = env.errors.remove(&rcpt).unwrap_or_else(|| "mailbox store unavailable".into());
                let diagnostic = format!("gave up after {days:.1} days; last error: {last}");
                failed.push(RecipientReport::new(rcpt, diagnostic));
            }
        }
        let mut notices = Vec::new();
        if !failed.is_empty() {
            self.metrics.bounced.add(failed.len() as u64);
            notices.push((Action::Failed, failed));
        }
        if !env.warned && !env.remote.is_empty() && config.warn_after_secs > 0 && age >= config.warn_after_secs as i64 {
            env.warned = true;
            let late = (env.remote.iter())
                .map(|r| RecipientReport::new(r.clone(), env.errors.get(r).cloned().unwrap_or_default()))
                .collect();
            notices.push((Action::Delayed, late));
        }
        notices.push((Action::Delivered, delivered));
        notices.push((Action::Relayed, relayed));
        for (action, recipients) in notices {
            self.notifier.notify(&env, action, &recipients, &message).await;
        }
        env.next_attempt = now() + self.next_pause(&env).as_secs() as i64;
        tracing::info!(
            id = %env.id, attempts = env.attempts, local_left = env.local.len(), remote_left = env.remote.len(),
            "queue attempt"
        );
        let done = env.is_done();
        let written = env.clone();
        let saved = self.spool.run(move |s| if done { s.remove(&claim) } else { s.update(&claim, &written) }).await;
        if let Err(e) = saved {
            tracing::warn!(error = %e, "queue envelope not saved");
            return;
        }
        if let Some(peers) = &self.spool_peers {
            if done {
                peers.forget(&env.copy, &env.id).await;
            } else {
                peers.update(&env).await;
            }
        }
    }

    /// Local retries are quick (our own store comes back); remote ones follow the schedule.
    fn next_pause(&self, env: &QueuedEnvelope) -> Duration {
        if !env.local.is_empty() {
            return Duration::from_secs((5i64 << env.attempts.min(12)).min(MAX_LOCAL_BACKOFF_SECS) as u64);
        }
        self.outbound.config().backoff(env.attempts)
    }
}
