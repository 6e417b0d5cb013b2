//! Local delivery: a received message goes durably into each recipient's INBOX.

use std::sync::Arc;

use bytes::Bytes;
use sirms_storage::{MailStore, NewMessage, StoreError};

/// Puts messages into mailboxes through the store (local, or remote on a storage node).
#[derive(Clone)]
pub struct Delivery {
    store: Arc<dyn MailStore>,
}

impl Delivery {
    /// Delivery into `store`.
    pub fn new(store: Arc<dyn MailStore>) -> Delivery {
        Delivery { store }
    }

    /// Appends `message` to every user's INBOX, concurrently so the store can commit them
    /// as one group. Returns only when every copy is durable; any failure fails the whole
    /// delivery (the client retries; copies already stored may then arrive twice, which
    /// SMTP allows and losing mail does not).
    pub async fn deliver(&self, users: &[String], message: Bytes) -> Result<(), StoreError> {
        let appends = users.iter().map(|user| {
            let message = NewMessage::new(message.clone());
            async move { self.store.append(user, "INBOX", message).await }
        });
        for result in futures::future::join_all(appends).await {
            result?;
        }
        Ok(())
    }
}
