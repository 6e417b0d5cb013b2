//! The one error type of the mail store.

use std::io;

/// Everything a `MailStore` operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such mailbox")]
    NoSuchMailbox,
    #[error("mailbox already exists")]
    MailboxExists,
    #[error("invalid mailbox name: {0}")]
    InvalidName(&'static str),
    #[error("invalid user name")]
    InvalidUser,
    #[error("INBOX cannot be deleted")]
    CannotDeleteInbox,
    #[error("mailbox has children; delete them first")]
    HasChildren,
    #[error("too many keywords in this mailbox")]
    TooManyKeywords,
    #[error("too many mailboxes; delete some first")]
    TooManyMailboxes,
    #[error("too many files; delete some first")]
    TooManyFiles,
    /// The write would take the user past their quota (enforced by the caller, who knows it).
    #[error("over quota: {used} of {limit} {resource} used")]
    OverQuota { used: u64, limit: u64, resource: QuotaResource },
    #[error("invalid keyword")]
    InvalidKeyword,
    #[error("message too large")]
    TooLarge,
    #[error("message size does not match what was announced")]
    SizeMismatch,
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("not authorized")]
    Unauthorized,
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("index error: {0}")]
    Index(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A replication write of an epoch older than one this store has seen: its sender was
    /// replaced as the user's primary.
    #[error("stale epoch: this store has seen epoch {0}")]
    StaleEpoch(u64),
    /// A replica's mailbox is not the primary's (another UIDVALIDITY, or a message missing that
    /// a record needs): it must be compared whole.
    #[error("replica diverged: {0}")]
    Diverged(String),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        match e {
            // A tree dropped under a reader: its mailbox was deleted or renamed meanwhile.
            sled::Error::CollectionNotFound(_) => StoreError::NoSuchMailbox,
            e => StoreError::Index(e.to_string()),
        }
    }
}

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What a quota limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaResource {
    /// The bytes of every message of the user.
    Bytes,
    /// The number of the user's messages.
    Messages,
    /// The bytes of every message of every user of the user's domain.
    DomainBytes,
    /// The number of messages of every user of the user's domain.
    DomainMessages,
}

impl std::fmt::Display for QuotaResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QuotaResource::Bytes => "bytes",
            QuotaResource::Messages => "messages",
            QuotaResource::DomainBytes => "domain bytes",
            QuotaResource::DomainMessages => "domain messages",
        })
    }
}
