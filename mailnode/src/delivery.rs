//! Local delivery: a received message goes durably into each recipient's INBOX.

use std::sync::Arc;

use bytes::Bytes;
use sirms_storage::{MailStore, NewMessage, SpecialUse, StoreError};

use crate::metrics::NodeMetrics;
use crate::quota::{self, Quotas};
use crate::sieve::deliver::{Filing, Plan, Sieve};

/// What delivery knows of a message besides its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Delivering<'a> {
    /// The message's id (the spool's; queue ids of what a Sieve script sends derive from it).
    pub id: &'a str,
    /// The envelope sender; empty for the null sender.
    pub from: &'a str,
    /// Where it goes unless a Sieve script says otherwise: Junk when the node's checks said so.
    pub folder: Folder,
    /// The spam filter's score (0 clean … 10 spam), for Sieve's `spamtest`.
    pub spam_score: Option<u8>,
    /// The authserv-id of the `Authentication-Results:` the node's sender authentication put
    /// on the message; `None` for submission and unchecked mail. A Sieve redirect ARC-seals
    /// only what was checked.
    pub checked_by: Option<&'a str>,
}

/// Puts messages into mailboxes through the store (local, or remote on a storage node), where
/// each user's Sieve script says.
#[derive(Clone)]
pub struct Delivery {
    store: Arc<dyn MailStore>,
    quotas: Quotas,
    metrics: Arc<NodeMetrics>,
    sieve: Option<Arc<Sieve>>,
}

impl Delivery {
    /// Delivery into `store`, within `quotas`, counted in `metrics`.
    pub fn new(store: Arc<dyn MailStore>, quotas: Quotas, metrics: Arc<NodeMetrics>) -> Delivery {
        Delivery { store, quotas, metrics, sieve: None }
    }

    /// Runs users' Sieve scripts on what it delivers.
    pub fn with_sieve(self, sieve: Arc<Sieve>) -> Delivery {
        Delivery { sieve: Some(sieve), ..self }
    }

    /// What each user's Sieve script (or, without one, `msg.folder`) makes of `message`, in
    /// the order of `users`: asked before anything is stored, so that SMTP can refuse a
    /// message every recipient's script rejects (RFC 5429 §2.1) instead of accepting it and
    /// sending a bounce.
    pub async fn plans(&self, msg: &Delivering<'_>, users: &[String], message: &[u8]) -> Vec<Plan> {
        match &self.sieve {
            Some(sieve) => futures::future::join_all(users.iter().map(|user| sieve.plan(user, msg, message))).await,
            None => users.iter().map(|_| Plan::keep(msg.folder)).collect(),
        }
    }

    /// Stores `message` for every user where their script (or, without one, `msg.folder`)
    /// says: [`Self::plans`], then [`Self::deliver_planned`].
    pub async fn deliver_each(
        &self,
        msg: &Delivering<'_>,
        users: &[String],
        message: Bytes,
    ) -> Vec<(String, Result<(), StoreError>)> {
        let plans = self.plans(msg, users, &message).await;
        self.deliver_planned(msg, users, plans, message).await
    }

    /// Stores `message` for every user as their plan (one per user, in order) says,
    /// concurrently so the store can commit them as one group, and says for each user
    /// whether it is durably there. Each append is keyed by the message (see [`append_key`];
    /// a store keeps keys per user), so that a later attempt — the queue's retry, here or on
    /// the node holding the spool's copy — of one whose answer was lost stores it once (a
    /// store across the network remembers keys for ten minutes); what a script sends is
    /// queued under ids derived from the message's, once.
    pub async fn deliver_planned(
        &self,
        msg: &Delivering<'_>,
        users: &[String],
        plans: Vec<Plan>,
        message: Bytes,
    ) -> Vec<(String, Result<(), StoreError>)> {
        let key = append_key(msg.id, &message);
        let appends = users.iter().zip(plans).map(|(user, plan)| {
            let (message, key) = (message.clone(), key.clone());
            async move {
                let delivered = async {
                    let copies = plan.filings.len() as u64;
                    let adding = message.len() as u64 * copies;
                    let usage = if copies > 0 { self.quotas.room_for(user, adding, copies).await? } else { None };
                    for (n, filing) in plan.filings.iter().enumerate() {
                        // One key per mailbox: the store would take a second append under the
                        // same key for a retry of the first.
                        let key = if n == 0 { key.clone() } else { format!("{key}.{n}") };
                        let new = NewMessage {
                            flags: filing.flags.clone(),
                            ..NewMessage::new(message.clone()).with_key(key)
                        };
                        self.file(user, filing, new).await?;
                    }
                    if let Some(sieve) = &self.sieve {
                        sieve.send(user, msg, &message, &plan).await;
                    }
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

    /// Appends into `filing`'s mailbox. A missing Junk, or one the script said to create, is
    /// created (the user may have deleted it, or never had one); any other missing mailbox
    /// gets the message in INBOX instead (RFC 5228 §4.1: a failed fileinto keeps).
    async fn file(&self, user: &str, filing: &Filing, message: NewMessage) -> Result<(), StoreError> {
        let mailbox = filing.mailbox.as_str();
        match self.store.append(user, mailbox, message.clone()).await {
            Err(StoreError::NoSuchMailbox) if filing.create || mailbox == Folder::Junk.name() => {
                let special_use = (mailbox == Folder::Junk.name()).then_some(SpecialUse::Junk);
                match self.store.create_mailbox(user, mailbox, special_use).await {
                    Ok(()) | Err(StoreError::MailboxExists) => {}
                    Err(e) => return Err(e),
                }
                self.store.append(user, mailbox, message).await.map(drop)
            }
            Err(StoreError::NoSuchMailbox | StoreError::InvalidName(_)) if mailbox != "INBOX" => {
                tracing::info!(%user, %mailbox, "sieve fileinto a mailbox that is not there: kept in INBOX");
                self.store.append(user, "INBOX", message).await.map(drop)
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
