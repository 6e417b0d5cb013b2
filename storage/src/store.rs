//! The `MailStore` trait: the only way protocol code touches mail.

use async_trait::async_trait;
use bytes::Bytes;

use crate::change::ChangeStream;
use crate::error::Result;
use crate::flags::{FlagOp, Flags};
use crate::mailbox::{MailboxInfo, MailboxStatus, SpecialUse};
use crate::maildrop::MaildropLock;
use crate::message::{AppendResult, BodyPart, Cached, CopyResult, FetchedMessage, MessageMeta, NewMessage, QuotaUsage};
use crate::uidset::UidSet;
use crate::user_file::UserFile;

/// A user's mailboxes, wherever they are kept (local Maildir or a remote Store service).
///
/// Mailbox names use `/` as hierarchy delimiter and are UTF-8 (IMAP's modified UTF-7 is
/// the IMAP layer's business). A user's mailboxes spring into existence with the defaults
/// (INBOX, Sent, Drafts, Trash, Junk, Archive) on first use.
#[async_trait]
pub trait MailStore: Send + Sync {
    /// Every mailbox of `user`, with attributes.
    async fn list_mailboxes(&self, user: &str) -> Result<Vec<MailboxInfo>>;
    /// Creates a mailbox (its missing parents too).
    async fn create_mailbox(&self, user: &str, name: &str, special_use: Option<SpecialUse>) -> Result<()>;
    /// Deletes a mailbox and its messages; INBOX and mailboxes with children cannot be deleted.
    async fn delete_mailbox(&self, user: &str, name: &str) -> Result<()>;
    /// Renames a mailbox with its children; renaming INBOX moves its messages to a new mailbox.
    async fn rename_mailbox(&self, user: &str, from: &str, to: &str) -> Result<()>;
    /// Marks a mailbox (un)subscribed.
    async fn subscribe(&self, user: &str, name: &str, subscribed: bool) -> Result<()>;
    /// Stores a message durably and returns its UID.
    async fn append(&self, user: &str, mailbox: &str, message: NewMessage) -> Result<AppendResult>;
    /// The status and the metadata of every message, in UID order (what SELECT needs).
    async fn messages(&self, user: &str, mailbox: &str) -> Result<(MailboxStatus, Vec<MessageMeta>)>;
    /// Metadata and, if asked, bytes of the messages in `uids`, in UID order.
    async fn fetch(&self, user: &str, mailbox: &str, uids: &UidSet, body: BodyPart) -> Result<Vec<FetchedMessage>>;
    /// What [`MailStore::cache_put`] kept for the messages in `uids`, for those that have it, in
    /// UID order. The store may lose it (a rebuilt index), but never returns one message's data
    /// for another: it is bound to the message's stored file, not only to its UID.
    async fn cache_get(&self, user: &str, mailbox: &str, uids: &UidSet) -> Result<Vec<Cached>>;
    /// Keeps derived data beside messages, replacing what they had. Messages that are gone and
    /// data over [`crate::message::MAX_CACHED_SIZE`] are skipped. Not fsynced: it can be
    /// derived again.
    async fn cache_put(&self, user: &str, mailbox: &str, items: Vec<Cached>) -> Result<()>;
    /// Changes flags; with `unchanged_since`, messages modified after it are left alone.
    /// Returns the messages whose flags changed.
    async fn store_flags(
        &self,
        user: &str,
        mailbox: &str,
        uids: &UidSet,
        op: FlagOp,
        flags: &Flags,
        unchanged_since: Option<u64>,
    ) -> Result<Vec<MessageMeta>>;
    /// Removes the `\Deleted` messages (only those in `uids` if given); returns their UIDs.
    async fn expunge(&self, user: &str, mailbox: &str, uids: Option<&UidSet>) -> Result<Vec<u32>>;
    /// Copies messages to another mailbox, keeping flags and internal dates.
    async fn copy(&self, user: &str, from: &str, to: &str, uids: &UidSet) -> Result<CopyResult>;
    /// Moves messages to another mailbox atomically per message.
    async fn move_messages(&self, user: &str, from: &str, to: &str, uids: &UidSet) -> Result<CopyResult>;
    /// Counters of a mailbox.
    async fn status(&self, user: &str, mailbox: &str) -> Result<MailboxStatus>;
    /// Takes the `\Recent` messages for the calling session: later callers no longer see them as recent.
    async fn claim_recent(&self, user: &str, mailbox: &str) -> Result<Vec<u32>>;
    /// Gives a mailbox that never held a message the UIDVALIDITY `uid_validity`, so that an
    /// import can keep its source's UIDs (see [`crate::NewMessage::keep_uid`]). Returns the
    /// mailbox's UIDVALIDITY afterwards: unchanged when it holds or held messages, whose UIDs
    /// clients may have cached.
    async fn adopt_uid_validity(&self, user: &str, mailbox: &str, uid_validity: u32) -> Result<u32>;
    /// How much the user stores.
    async fn quota(&self, user: &str) -> Result<QuotaUsage>;
    /// Changes to a mailbox from now on.
    async fn watch(&self, user: &str, mailbox: &str) -> Result<ChangeStream>;
    /// Locks `user`'s POP3 maildrop for as long as the lock lives; `None`: another session,
    /// on this node or another, holds it.
    async fn lock_maildrop(&self, user: &str) -> Result<Option<MaildropLock>>;
    /// The user's small files other than mail (Sieve scripts, the name of the active one),
    /// each by name, in name order. Kept with the mailboxes, so they move, replicate and fail
    /// over with them.
    async fn user_files(&self, user: &str) -> Result<Vec<UserFile>>;
    /// Writes one of the user's files (`Some`), or removes it (`None`), durably. Names are
    /// checked with [`crate::user_file::check_name`], contents with its size limit.
    async fn put_user_file(&self, user: &str, name: &str, content: Option<Bytes>) -> Result<()>;
}
