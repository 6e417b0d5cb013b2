//! Local delivery: a received message goes durably into each recipient's INBOX.

use std::sync::Arc;

use bytes::Bytes;
use sirms_storage::{MailStore, NewMessage, StoreError};

use crate::metrics::NodeMetrics;

/// Puts messages into mailboxes through the store (local, or remote on a storage node).
#[derive(Clone)]
pub struct Delivery {
    store: Arc<dyn MailStore>,
    metrics: Arc<NodeMetrics>,
}

impl Delivery {
    /// Delivery into `store`, counted in `metrics`.
    pub fn new(store: Arc<dyn MailStore>, metrics: Arc<NodeMetrics>) -> Delivery {
        Delivery { store, metrics }
    }

    /// Appends `message` to every user's INBOX, concurrently so the store can commit them
    /// as one group, and says for each user whether it is durably there.
    pub async fn deliver_each(&self, users: &[String], message: Bytes) -> Vec<(String, Result<(), StoreError>)> {
        let appends = users.iter().map(|user| {
            let message = NewMessage::new(message.clone());
            async move { (user.clone(), self.store.append(user, "INBOX", message).await.map(|_| ())) }
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
}
