//! Messages as the store sees them: metadata, new messages, fetched messages.

use bytes::Bytes;

use crate::flags::Flags;

/// Largest message the store accepts (the SMTP and IMAP layers enforce their own, smaller limits).
pub const MAX_MESSAGE_SIZE: u64 = 256 * 1024 * 1024;

/// Largest cached item kept for one message; a larger one is not kept (and so is derived
/// again each time: only messages with thousands of MIME parts get there).
pub const MAX_CACHED_SIZE: usize = 256 * 1024;

/// What the store knows about one message without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    pub uid: u32,
    pub flags: Flags,
    /// Seconds since the Unix epoch.
    pub internal_date: i64,
    pub size: u64,
    pub modseq: u64,
}

/// A message to append.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub bytes: Bytes,
    pub flags: Flags,
    /// Seconds since the Unix epoch; `None` means now.
    pub internal_date: Option<i64>,
    /// Names this append for a store across the network: an append retried under the same key
    /// (the answer to the first was lost) stores the message once. `None`: a key of its own.
    pub idempotency_key: Option<String>,
    /// The UID the message had where it was imported from: it keeps it when no UID at or above
    /// it was handed out yet (and the mailbox has the source's UIDVALIDITY, see
    /// [`crate::MailStore::adopt_uid_validity`]); otherwise it takes the next UID as usual.
    pub keep_uid: Option<u32>,
}

impl NewMessage {
    /// A message with no flags and the current time as internal date.
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        NewMessage {
            bytes: bytes.into(),
            flags: Flags::default(),
            internal_date: None,
            idempotency_key: None,
            keep_uid: None,
        }
    }

    /// The same message, appended under `key` (see [`NewMessage::idempotency_key`]).
    pub fn with_key(mut self, key: String) -> Self {
        self.idempotency_key = Some(key);
        self
    }
}

/// Which bytes of a message FETCH wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyPart {
    /// Metadata only.
    None,
    /// The whole message.
    Full,
    /// `length` bytes from `offset` (shorter at the end of the message).
    Range { offset: u64, length: u64 },
}

/// One message returned by FETCH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedMessage {
    pub meta: MessageMeta,
    pub body: Option<Bytes>,
}

/// Data a protocol layer derived from one message's bytes (IMAP's ENVELOPE and BODYSTRUCTURE),
/// kept by the store beside the message so that it need not be read and parsed again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    pub uid: u32,
    pub data: Bytes,
}

/// The result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    pub uid_validity: u32,
    pub uid: u32,
    /// The message's MODSEQ and internal date, which a replica must be given as they are.
    pub modseq: u64,
    pub internal_date: i64,
}

/// The result of a copy or move: source UID → destination UID, for UIDPLUS's COPYUID.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CopyResult {
    pub uid_validity: u32,
    pub pairs: Vec<(u32, u32)>,
}

/// A user's storage use, for QUOTA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaUsage {
    pub bytes: u64,
    pub messages: u64,
}
