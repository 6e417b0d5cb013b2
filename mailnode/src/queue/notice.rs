//! Notices to senders (RFC 3464 reports): failures and delays from the queue, and the
//! deliveries a sender asked to hear of (RFC 3461 NOTIFY=SUCCESS), from the queue and from
//! SMTP's direct delivery alike. A notice is itself queued (with a copy on a peer), to the
//! sender's mailbox or out to the sender's domain.

use std::sync::Arc;

use bytes::Bytes;

use super::{QueuedEnvelope, Spool, now};
use crate::cluster::spool_copy::SpoolPeers;
use crate::directory::{Directory, Recipient};
use crate::outbound::dsn::{self, Action, RecipientReport};
use crate::smtp::dsn::Ret;

/// Queues notices to senders.
#[derive(Clone)]
pub struct Notifier {
    /// Our name: the Reporting-MTA, and MAILER-DAEMON's domain.
    pub hostname: String,
    pub directory: Arc<dyn Directory>,
    pub spool: Arc<Spool>,
    /// The nodes that keep copies of our entries (`None`: a node alone).
    pub spool_peers: Option<Arc<SpoolPeers>>,
}

impl Notifier {
    /// Queues a delivery status notification to the sender about those of `recipients` the
    /// sender wants to hear of it, unless the message was itself a bounce (null sender):
    /// bounces of bounces would loop.
    pub async fn notify(&self, env: &QueuedEnvelope, action: Action, recipients: &[RecipientReport], message: &[u8]) {
        // Only the recipients whose sender wants to hear of this (RFC 3461 NOTIFY; by default,
        // failures and delays), each with the ORCPT it was given.
        let recipients: Vec<RecipientReport> = (recipients.iter())
            .filter_map(|r| {
                let wants = env.dsn.rcpt(&r.recipient);
                let told = match action {
                    Action::Failed => wants.notify.failure(),
                    Action::Delayed => wants.notify.delay(),
                    Action::Delivered | Action::Relayed => wants.notify.success(),
                };
                told.then(|| RecipientReport { original: wants.orcpt, ..r.clone() })
            })
            .collect();
        if recipients.is_empty() {
            return;
        }
        if env.from.is_empty() {
            tracing::warn!(id = %env.id, ?action, "undeliverable bounce dropped (null sender)");
            return;
        }
        let report = dsn::Report {
            reporting_mta: &self.hostname,
            to: &env.from,
            queue_id: &env.id,
            action,
            recipients: &recipients,
            original: message,
            envid: env.dsn.envid.as_deref(),
            full: env.dsn.ret == Some(Ret::Full),
        };
        let bytes = match dsn::build(&report) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::warn!(id = %env.id, error = %e, "bounce not built");
                return;
            }
        };
        let kind = match action {
            Action::Failed => "bounce",
            Action::Delayed => "delay",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
        };
        let id = format!("{}.{kind}{}", env.id, env.attempts);
        if self.send(id, "", &env.from, bytes).await {
            tracing::info!(id = %env.id, to = %env.from, ?action, "sender notified");
        }
    }

    /// Queues `bytes`, a message the node wrote (a notice, a Sieve redirect or vacation
    /// reply), from `from` to `to`, as queue entry `id`. The entry is owed as surely as the
    /// message that caused it: it gets a copy on a peer too, but nothing waits for want of one.
    /// An `id` queued already is not queued again, so a retried delivery sends nothing twice.
    /// Returns whether it is queued.
    pub async fn send(&self, id: String, from: &str, to: &str, bytes: Bytes) -> bool {
        let (local, remote) = match self.directory.resolve(to) {
            Recipient::Local(users) => (users, Vec::new()),
            Recipient::Remote => (Vec::new(), vec![to.to_string()]),
            Recipient::Unknown | Recipient::Loop(_) => {
                tracing::warn!(%id, %to, "message of ours dropped: no such recipient");
                return false;
            }
        };
        let mut entry =
            QueuedEnvelope { id, from: from.to_string(), local, remote, created: now(), ..QueuedEnvelope::default() };
        if let Some(peers) = self.spool_peers.as_ref().filter(|p| p.any()) {
            match peers.keep(&entry, &bytes).await {
                Ok(peer) => entry.copy = peer,
                Err(why) => tracing::warn!(id = %entry.id, %why, "queued without a copy"),
            }
        }
        let id = entry.id.clone();
        match self.spool.run(move |s| s.enqueue(&entry, &bytes)).await {
            Ok(()) => true,
            // Queued by an attempt that crashed before it could record so: once is enough.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                tracing::info!(%id, "already queued");
                false
            }
            Err(e) => {
                tracing::warn!(%id, error = %e, "not queued");
                false
            }
        }
    }
}
