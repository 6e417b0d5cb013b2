//! Local delivery: a received message goes durably into each recipient's INBOX.

use std::sync::Arc;

use bytes::Bytes;
use sirms_storage::{MailStore, NewMessage, SpecialUse, StoreError};

use crate::metrics::NodeMetrics;
use crate::quota::{self, Quotas};

/// Puts messages into mailboxes through the store (local, or remote on a storage node).
#[derive(Clone)]
pub struct Delivery {
    store: Arc<dyn MailStore>,
    quotas: Quotas,
    metrics: Arc<NodeMetrics>,
}

impl Delivery {
    /// Delivery into `store`, within `quotas`, counted in `metrics`.
    pub fn new(store: Arc<dyn MailStore>, quotas: Quotas, metrics: Arc<NodeMetrics>) -> Delivery {
        Delivery { store, quotas, metrics }
    }

    /// Appends `message` (the spool's `msg_id`) to every user's `folder`, concurrently so the
    /// store can commit them as one group, and says for each user whether it is durably there.
    /// Each append is keyed by the message (see [`append_key`]; a store keeps keys per user),
    /// so that a later attempt — the queue's retry, here or on the node holding the spool's
    /// copy — of one whose answer was lost stores it once (a store across the network
    /// remembers keys for ten minutes).
    pub async fn deliver_each(
        &self,
        msg_id: &str,
        users: &[String],
        message: Bytes,
        folder: Folder,
    ) -> Vec<(String, Result<(), StoreError>)> {
        let key = append_key(msg_id, &message);
        let appends = users.iter().map(|user| {
            let message = NewMessage::new(message.clone()).with_key(key.clone());
            async move {
                let delivered = async {
                    let adding = message.bytes.len() as u64;
                    let usage = self.quotas.room_for(user, adding, 1).await?;
                    self.append_to(user, folder, message).await?;
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

    /// Appends into `folder`; Junk is created, with its special use, the first time mail goes
    /// there (the user may have deleted it, or never had one).
    async fn append_to(&self, user: &str, folder: Folder, message: NewMessage) -> Result<(), StoreError> {
        let mailbox = folder.name();
        match self.store.append(user, mailbox, message.clone()).await {
            Err(StoreError::NoSuchMailbox) if folder == Folder::Junk => {
                match self.store.create_mailbox(user, mailbox, Some(SpecialUse::Junk)).await {
                    Ok(()) | Err(StoreError::MailboxExists) => {}
                    Err(e) => return Err(e),
                }
                self.store.append(user, mailbox, message).await.map(drop)
            }
            result => result.map(drop),
        }
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

/// Which of a user's mailboxes a delivery goes to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Folder {
    #[default]
    Inbox,
    /// Mail the node's checks judged spam or quarantined.
    Junk,
}

impl Folder {
    /// The mailbox's name.
    pub fn name(self) -> &'static str {
        match self {
            Folder::Inbox => "INBOX",
            Folder::Junk => "Junk",
        }
    }

    /// The folder [`Folder::name`] names.
    pub fn from_name(name: &str) -> Option<Folder> {
        [Folder::Inbox, Folder::Junk].into_iter().find(|f| f.name() == name)
    }
}

/// The idempotency key of `message`'s appends: its id, and its length and a hash of its bytes.
/// Ids are unique in the cluster, but a key shared by two messages would drop the second as a
/// retry of the first, acknowledged and never stored; with the bytes in it, that takes two
/// messages alike to the byte under one id.
fn append_key(msg_id: &str, message: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    message.hash(&mut hasher);
    format!("{msg_id}.{:x}.{:016x}", message.len(), hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::append_key;

    #[test]
    fn two_messages_under_one_id_get_two_keys_and_a_retry_the_same() {
        let (a, b) = (&b"Subject: a\r\n\r\nx\r\n"[..], &b"Subject: b\r\n\r\nx\r\n"[..]);
        assert_ne!(append_key("n1-1-1.2.1", a), append_key("n1-1-1.2.1", b));
        assert_eq!(append_key("n1-1-1.2.1", a), append_key("n1-1-1.2.1", a));
        assert!(append_key(&"x".repeat(60), a).len() <= 128, "within what a store takes");
    }
}
