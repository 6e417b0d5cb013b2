//! Appending several messages as one: all of them are stored, or none remains (what
//! MULTIAPPEND, RFC 3502 §6, asks of a server).
//!
//! The stores have no multi-message append: each append is its own durable write, and on a
//! replicated store its own replication record. Rather than give every store (local, remote,
//! replica, home) a batch path, the all-or-nothing is built on the contract they already keep:
//! the messages are appended one by one, and if one fails, those this call appended are
//! flagged `\Deleted` and expunged by UID. RFC 3502 allows exactly what is left to see: the
//! mailbox's UIDNEXT has moved past the UIDs that were used. A session watching the mailbox
//! may see the messages come and go in between, as it would see another client append and
//! expunge them; a crash between the append and the expunge leaves the messages stored,
//! whole, as if the client had appended them one by one.

use crate::error::Result;
use crate::flags::{FlagOp, Flags, SystemFlags};
use crate::message::{AppendResult, NewMessage};
use crate::store::MailStore;
use crate::uidset::UidSet;

/// Appends `messages` to `mailbox` in order; on any failure, removes those appended here and
/// returns the failure.
pub async fn append_all(
    store: &dyn MailStore,
    user: &str,
    mailbox: &str,
    messages: Vec<NewMessage>,
) -> Result<Vec<AppendResult>> {
    let mut appended: Vec<AppendResult> = Vec::with_capacity(messages.len());
    for message in messages {
        match store.append(user, mailbox, message).await {
            Ok(result) => appended.push(result),
            Err(error) => {
                if let Err(undo) = remove(store, user, mailbox, &appended).await {
                    tracing::error!(%user, %mailbox, error = %undo, "messages of a failed multi-append not removed");
                }
                return Err(error);
            }
        }
    }
    Ok(appended)
}

/// Expunges the messages `appended` named, and only those.
async fn remove(store: &dyn MailStore, user: &str, mailbox: &str, appended: &[AppendResult]) -> Result<()> {
    if appended.is_empty() {
        return Ok(());
    }
    let uids: UidSet = appended.iter().map(|a| a.uid).collect();
    store.store_flags(user, mailbox, &uids, FlagOp::Add, &Flags::system(SystemFlags::DELETED), None).await?;
    store.expunge(user, mailbox, Some(&uids)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStore;

    #[tokio::test]
    async fn all_are_appended_in_order() {
        let store = MemoryStore::new();
        let messages = ["a", "b", "c"].map(|s| NewMessage::new(format!("Subject: {s}\r\n\r\n{s}\r\n"))).to_vec();
        let appended = append_all(&store, "u@x.test", "INBOX", messages).await.unwrap();
        let uids: Vec<u32> = appended.iter().map(|a| a.uid).collect();
        assert_eq!(uids, [1, 2, 3]);
    }

    /// The third append fails (its keyword is no atom, which the store refuses): the first
    /// two, and only they, are gone, and UIDNEXT has moved on.
    #[tokio::test]
    async fn a_failure_leaves_nothing_of_the_call() {
        let store = MemoryStore::new();
        let user = "u@x.test";
        store.append(user, "INBOX", NewMessage::new("Subject: before\r\n\r\nx\r\n")).await.unwrap();
        let messages = vec![
            NewMessage::new("Subject: a\r\n\r\na\r\n"),
            NewMessage::new("Subject: b\r\n\r\nb\r\n"),
            NewMessage {
                flags: Flags::new(SystemFlags::empty(), ["no atom".to_string()]),
                ..NewMessage::new("Subject: c\r\n\r\nc\r\n")
            },
        ];
        assert!(append_all(&store, user, "INBOX", messages).await.is_err());
        let (status, metas) = store.messages(user, "INBOX").await.unwrap();
        assert_eq!(metas.iter().map(|m| m.uid).collect::<Vec<_>>(), [1]);
        assert!(status.uid_next > 3, "{status:?}");
    }
}
