//! Local delivery: a received message goes durably into each recipient's INBOX.

use std::sync::Arc;

use bytes::Bytes;
use sirms_storage::{MailStore, NewMessage, StoreError};

use crate::directory::Directory;
use crate::metrics::NodeMetrics;
use crate::quota;

/// Puts messages into mailboxes through the store (local, or remote on a storage node).
#[derive(Clone)]
pub struct Delivery {
    store: Arc<dyn MailStore>,
    /// Where users' quotas are.
    directory: Arc<dyn Directory>,
    metrics: Arc<NodeMetrics>,
}

impl Delivery {
    /// Delivery into `store`, within the quotas of `directory`, counted in `metrics`.
    pub fn new(store: Arc<dyn MailStore>, directory: Arc<dyn Directory>, metrics: Arc<NodeMetrics>) -> Delivery {
        Delivery { store, directory, metrics }
    }

    /// Appends `message` (the spool's `msg_id`) to every user's INBOX, concurrently so the
    /// store can commit them as one group, and says for each user whether it is durably there.
    /// Each append is keyed by the message (a store keeps keys per user), so that a later
    /// attempt — the queue's retry, here or on the node holding the spool's copy — of one whose
    /// answer was lost stores it once (a store across the network remembers keys for ten
    /// minutes).
    pub async fn deliver_each(
        &self,
        msg_id: &str,
        users: &[String],
        message: Bytes,
    ) -> Vec<(String, Result<(), StoreError>)> {
        let appends = users.iter().map(|user| {
            let message = NewMessage::new(message.clone()).with_key(msg_id.to_string());
            async move {
                let delivered = async {
                    let adding = message.bytes.len() as u64;
                    let usage = quota::room_for(&*self.store, &*self.directory, user, adding).await?;
                    self.store.append(user, "INBOX", message).await?;
                    if let Some(usage) = usage.filter(|u| u.crosses_warning(adding)) {
                        self.warn(user, usage.used + adding, usage.limit).await;
                    }
                    Ok(())
                };
                (user.clone(), delivered.await)
            }
        });
        let results = futures::future::join_all(appends).await;
        for (_, result) in &results {
            match result {
                Ok(()) => self.metrics.local_delivered.inc(),
                Err(_) => self.metrics.local_deferred.inc(),
            }
        }
        results
    }

    /// Leaves `user` the quota warning (see [`quota`]). The delivery that crossed the line is
    /// done whatever becomes of the warning, which is logged if it cannot be stored.
    async fn warn(&self, user: &str, used: u64, limit: u64) {
        let notice = NewMessage::new(Bytes::from(quota::warning(user, used, limit)));
        match self.store.append(user, "INBOX", notice).await {
            Ok(_) => tracing::info!(user, used, limit, "quota warning delivered"),
            Err(e) => tracing::warn!(user, used, limit, error = %e, "quota warning not delivered"),
        }
    }
}
