//! The queue runner: retries local deliveries until the home store takes them, and delivers
//! to foreign domains with backoff, delay warnings and bounces.
//!
//! Every change to an envelope is written durably before the next step relies on it, and a
//! bounce is queued durably before the envelope that caused it is updated: a crash can make
//! a message or bounce go out twice (in a window of milliseconds), never vanish. Bounces are
//! sent with the null reverse path and are never bounced themselves (RFC 5321 §4.5.5).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, Semaphore, watch};

use super::{QueuedEnvelope, Spool, now};
use crate::delivery::Delivery;
use crate::directory::{Directory, Recipient};
use crate::metrics::NodeMetrics;
use crate::outbound::client::RcptStatus;
use crate::outbound::dsn::{self, Action, RecipientReport};
use crate::outbound::{Outbound, domain_of};

/// How often the queue is looked at.
const SCAN_INTERVAL: Duration = Duration::from_secs(2);
/// Longest pause between two local delivery attempts (the home store is ours: it comes back).
const MAX_LOCAL_BACKOFF_SECS: i64 = 15 * 60;
/// Messages worked on at once.
const PARALLEL_MESSAGES: usize = 16;

/// What the queue runner needs.
#[derive(Clone)]
pub struct Worker {
    pub spool: Arc<Spool>,
    pub delivery: Delivery,
    pub outbound: Arc<Outbound>,
    pub directory: Arc<dyn Directory>,
    /// Our name, in bounces.
    pub hostname: String,
    /// Rung by `sirms ctl queue flush`: scan now rather than at the next tick.
    pub wake: Arc<Notify>,
    /// Where outcomes are counted.
    pub metrics: Arc<NodeMetrics>,
}

impl Worker {
    /// Runs the queue until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            self.run_once().await;
            tokio::select! {
                _ = tokio::time::sleep(SCAN_INTERVAL) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One pass: every message that is due gets one attempt.
    pub async fn run_once(&self) {
        let Ok(queued) = self.spool.run(Spool::list).await else { return };
        let gate = Arc::new(Semaphore::new(PARALLEL_MESSAGES));
        let mut tasks = tokio::task::JoinSet::new();
        for env in queued.into_iter().filter(|e| !e.is_done() && e.next_attempt <= now()) {
            let Ok(permit) = gate.clone().acquire_owned().await else { break };
            let worker = self.clone();
            tasks.spawn(async move {
                worker.attempt(env).await;
                drop(permit);
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// One attempt for every recipient still pending.
    async fn attempt(&self, mut env: QueuedEnvelope) {
        let id = env.id.clone();
        let message = match self.spool.run(move |s| s.message(&id)).await {
            Ok(m) => Bytes::from(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // An envelope outlived its message (removed in a race): nothing to send.
                let id = env.id.clone();
                let _ = self.spool.run(move |s| s.remove(&id)).await;
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
        let mut failed: Vec<RecipientReport> = Vec::new();

        if !env.local.is_empty() {
            let results = self.delivery.deliver_each(&env.local, message.clone()).await;
            env.local = results.into_iter().filter(|(_, r)| r.is_err()).map(|(u, _)| u).collect();
        }
        if !env.remote.is_empty() {
            let outgoing = self.outbound.outgoing(&env.from, &message);
            let mut by_domain: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for rcpt in std::mem::take(&mut env.remote) {
                by_domain.entry(domain_of(&rcpt)).or_default().push(rcpt);
            }
            let sessions = by_domain.iter().map(|(domain, rcpts)| {
                let (outbound, from, message) = (&self.outbound, &env.from, &outgoing);
                async move { (rcpts, outbound.deliver_domain(from, domain, rcpts, message).await) }
            });
            for (rcpts, statuses) in futures::future::join_all(sessions).await {
                for (rcpt, status) in rcpts.iter().zip(statuses) {
                    match status {
                        RcptStatus::Delivered(_) => {
                            self.metrics.outbound_delivered.inc();
                            env.errors.remove(rcpt);
                        }
                        RcptStatus::Failed(why) => {
                            env.errors.remove(rcpt);
                            failed.push(RecipientReport { recipient: rcpt.clone(), diagnostic: why });
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
                failed.push(RecipientReport { recipient: rcpt, diagnostic });
            }
        }
        let mut notices = Vec::new();
        if !failed.is_empty() {
            self.metrics.bounced.add(failed.len() as u64);
            notices.push((Action::Failed, failed));
        }
        if !env.warned && !env.remote.is_empty() && config.warn_after_secs > 0 && age >= config.warn_after_secs as i64 {
            env.warned = true;
            let late = env
                .remote
                .iter()
                .map(|r| RecipientReport {
                    recipient: r.clone(),
                    diagnostic: env.errors.get(r).cloned().unwrap_or_default(),
                })
                .collect();
            notices.push((Action::Delayed, late));
        }
        for (action, recipients) in notices {
            self.notify_sender(&env, action, &recipients, &message).await;
        }
        env.next_attempt = now() + self.next_pause(&env).as_secs() as i64;
        tracing::info!(
            id = %env.id, attempts = env.attempts, local_left = env.local.len(), remote_left = env.remote.len(),
            "queue attempt"
        );
        let done = env.is_done();
        let saved = self.spool.run(move |s| if done { s.remove(&env.id) } else { s.update(&env) }).await;
        if let Err(e) = saved {
            tracing::warn!(error = %e, "queue envelope not saved");
        }
    }

    /// Local retries are quick (our own store comes back); remote ones follow the schedule.
    fn next_pause(&self, env: &QueuedEnvelope) -> Duration {
        if !env.local.is_empty() {
            return Duration::from_secs((5i64 << env.attempts.min(12)).min(MAX_LOCAL_BACKOFF_SECS) as u64);
        }
        self.outbound.config().backoff(env.attempts)
    }

    /// Queues a delivery status notification to the sender, unless the message was itself
    /// a bounce (null sender): bounces of bounces would loop.
    async fn notify_sender(
        &self,
        env: &QueuedEnvelope,
        action: Action,
        recipients: &[RecipientReport],
        message: &[u8],
    ) {
        if env.from.is_empty() {
            tracing::warn!(id = %env.id, ?action, "undeliverable bounce dropped (null sender)");
            return;
        }
        let report = dsn::Report {
            reporting_mta: &self.hostname,
            to: &env.from,
            queue_id: &env.id,
            action,
            recipients,
            original: message,
        };
        let bytes = match dsn::build(&report) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(id = %env.id, error = %e, "bounce not built");
                return;
            }
        };
        let (local, remote) = match self.directory.resolve(&env.from) {
            Recipient::Local(users) => (users, Vec::new()),
            Recipient::Remote => (Vec::new(), vec![env.from.clone()]),
            Recipient::Unknown => {
                tracing::warn!(id = %env.id, from = %env.from, "bounce dropped: the sender is no user of ours");
                return;
            }
        };
        let kind = match action {
            Action::Failed => "bounce",
            Action::Delayed => "delay",
        };
        let notice = QueuedEnvelope {
            id: format!("{}.{kind}{}", env.id, env.attempts),
            from: String::new(),
            local,
            remote,
            created: now(),
            ..QueuedEnvelope::default()
        };
        let id = notice.id.clone();
        match self.spool.run(move |s| s.enqueue(&notice, &bytes)).await {
            Ok(()) => tracing::info!(id = %env.id, notice = %id, to = %env.from, ?action, "sender notified"),
            Err(e) => tracing::warn!(id = %env.id, error = %e, "sender notice not queued"),
        }
    }
}
