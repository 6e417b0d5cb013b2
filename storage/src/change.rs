//! Changes to a mailbox, streamed to every session that watches it (IMAP IDLE, NOOP).

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

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

/// A store's change stream over its broadcast of a mailbox's changes: a receiver that fell
/// behind gets [`Change::Lagged`], and the stream ends right after [`Change::MailboxGone`].
pub fn stream(receiver: broadcast::Receiver<Change>) -> ChangeStream {
    let stream = BroadcastStream::new(receiver)
        .map(|item| match item {
            Ok(change) => change,
            Err(BroadcastStreamRecvError::Lagged(_)) => Change::Lagged,
        })
        .scan(false, |ended, change| {
            if *ended {
                return futures::future::ready(None);
            }
            *ended = change == Change::MailboxGone;
            futures::future::ready(Some(change))
        });
    Box::pin(stream)
}
