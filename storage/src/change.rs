//! Changes to a mailbox, streamed to every session that watches it (IMAP IDLE, NOOP).

use std::pin::Pin;

use futures::Stream;

use crate::message::MessageMeta;

/// One change to a mailbox, in the order the store made them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Appended(MessageMeta),
    FlagsChanged(MessageMeta),
    Expunged(Vec<u32>),
    /// The mailbox was deleted or renamed away; the stream ends after this.
    MailboxGone,
    /// The watcher fell behind and missed changes; it must re-read the mailbox.
    Lagged,
}

/// A stream of a mailbox's changes.
pub type ChangeStream = Pin<Box<dyn Stream<Item = Change> + Send>>;
