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
    /// as one group, and says for each user whether it is durably there.
    pub async fn deliver_each(&self, users: &[String], message: Bytes) -> Vec<(String, Result<(), StoreError>)> {
        let appends = users.iter().map(|user| {
            let message = NewMessage::new(message.clone());
            async move { (user.clone(), self.store.append(user, "INBOX", message).await.map(|_| ())) }
        });
        futures::future::join_all(appends).await
    }
}
