//! Replication, the replica's side: a store that takes the primary's writes as the primary
//! made them — same UIDVALIDITY, UIDs, MODSEQs, flags and internal dates — so that a client
//! sees the same mailbox after a failover and keeps its cache.
//!
//! Every record carries the user's epoch. A store remembers the newest epoch it has seen for
//! each user (durably) and refuses anything older: that is the fencing which keeps a primary
//! that was cut off and replaced from writing to the copy that replaced it.

pub mod sync;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
use crate::mailbox::SpecialUse;
use crate::message::{AppendResult, MessageMeta};
use crate::store::MailStore;

/// One write, as the primary made it. Applying a record twice changes nothing the second time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Apply {
    /// The mailbox exists with exactly this UIDVALIDITY: one with another is emptied and made
    /// again (its messages were not the primary's).
    Mailbox { name: String, uid_validity: u32, special_use: Option<SpecialUse> },
    /// The mailbox and its messages are gone.
    Delete { name: String },
    /// As `MailStore::rename_mailbox`, for a mailbox other than INBOX.
    Rename { from: String, to: String },
    /// As `MailStore::subscribe`.
    Subscribe { name: String, subscribed: bool },
    /// As `MailStore::put_user_file`.
    UserFile { name: String, content: Option<Bytes> },
    /// A message under the UID the primary gave it; nothing happens if that UID is there.
    Append { mailbox: String, uid_validity: u32, meta: MessageMeta, bytes: Bytes },
    /// Messages copied inside the store: each source UID with the copy's metadata.
    Copy { from: String, to: String, uid_validity: u32, pairs: Vec<(u32, MessageMeta)> },
    /// New flags and MODSEQs. Without `exact`, a message whose MODSEQ is already as high is
    /// left alone (records of two writers may cross); with it, the message is made to match.
    /// A message the replica lacks makes the record `Diverged` (its append is still on the
    /// way, or the replica is behind): the writer then compares the user whole.
    Flags { mailbox: String, uid_validity: u32, metas: Vec<MessageMeta>, exact: bool },
    /// These UIDs are gone.
    Expunge { mailbox: String, uid_validity: u32, uids: Vec<u32> },
    /// UIDNEXT and HIGHESTMODSEQ are at least these (so no UID is handed out twice, even one
    /// whose message was expunged before the replica saw it).
    Counters { mailbox: String, uid_validity: u32, uid_next: u32, highest_modseq: u64 },
}

impl Apply {
    /// The mailbox the record writes to (for a copy, the destination).
    pub fn mailbox(&self) -> &str {
        match self {
            Apply::Mailbox { name, .. } | Apply::Delete { name } | Apply::Subscribe { name, .. } => name,
            // Not a mailbox's: INBOX stands for "the user" where a record is keyed by mailbox.
            Apply::UserFile { .. } => "INBOX",
            Apply::Rename { to, .. } | Apply::Copy { to, .. } => to,
            Apply::Append { mailbox, .. }
            | Apply::Flags { mailbox, .. }
            | Apply::Expunge { mailbox, .. }
            | Apply::Counters { mailbox, .. } => mailbox,
        }
    }
}

/// A store that can hold a replica: it applies the primary's records and fences by epoch.
#[async_trait]
pub trait ReplicaStore: MailStore {
    /// Refuses ([`crate::StoreError::StaleEpoch`]) an epoch older than the newest this store
    /// has seen for `user`, and remembers a newer one durably before answering. Returns the
    /// newest epoch seen before the call (0: this store never held the user's replicated mail
    /// — new to it, or lost); epoch 0 only reads it.
    async fn fence(&self, user: &str, epoch: u64) -> Result<u64>;
    /// Fences by `epoch`, then applies `record` durably.
    async fn apply(&self, user: &str, epoch: u64, record: Apply) -> Result<()>;
    /// The append to `mailbox` that stored its message under idempotency `key`, among the
    /// mailbox's latest, if the store can tell from what it keeps on disk: how a store
    /// restarted since the append answers its retry. `None`: no such append, or no way to know.
    async fn appended_under(&self, _user: &str, _mailbox: &str, _key: &str) -> Result<Option<AppendResult>> {
        Ok(None)
    }
}
