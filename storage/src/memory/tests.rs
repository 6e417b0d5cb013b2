//! What the conformance suite cannot ask of every store: that a watcher that falls behind
//! is told so (a remote watcher may instead be kept up by the network's buffers), and the
//! mailbox limit, which only in-process stores let a caller set.

use super::*;
use futures::StreamExt;

const USER: &str = "alice@example.test";

#[tokio::test]
async fn a_watcher_that_falls_behind_is_told_so() {
    let store = MemoryStore::new();
    store.append(USER, "INBOX", NewMessage::new(&b"Subject: a\r\n\r\nA\r\n"[..])).await.expect("append");
    let mut changes = store.watch(USER, "INBOX").await.expect("watch");
    let seen = Flags::system(SystemFlags::SEEN);
    for i in 0..mailbox::WATCH_BACKLOG + 1 {
        let op = if i % 2 == 0 { FlagOp::Add } else { FlagOp::Remove };
        store.store_flags(USER, "INBOX", &UidSet::all(), op, &seen, None).await.expect("store");
    }
    assert_eq!(changes.next().await, Some(Change::Lagged));
    // Then the changes it still can have, up to the last one.
    let mut last = None;
    while let Ok(Some(change)) = tokio::time::timeout(std::time::Duration::from_millis(50), changes.next()).await {
        last = Some(change);
    }
    let Some(Change::FlagsChanged(meta)) = last else { panic!("ends with a flag change: {last:?}") };
    assert_eq!(meta.modseq, store.status(USER, "INBOX").await.expect("status").highest_modseq);
}

#[tokio::test]
async fn the_mailbox_limit_counts_the_parents_a_create_or_rename_would_make() {
    let store = MemoryStore::new();
    let defaults = DEFAULT_MAILBOXES.len() - 1;
    store.set_mailbox_limit(defaults + 1);
    store.create_mailbox(USER, "a", None).await.expect("room for one");
    let before = store.list_mailboxes(USER).await.expect("list");
    assert!(matches!(store.create_mailbox(USER, "b/c", None).await, Err(StoreError::TooManyMailboxes)));
    assert!(matches!(store.rename_mailbox(USER, "a", "b/c").await, Err(StoreError::TooManyMailboxes)));
    assert_eq!(store.list_mailboxes(USER).await.expect("list"), before, "a refused change makes nothing");
    store.rename_mailbox(USER, "a", "b").await.expect("a rename that makes no parent needs no room");
    assert!(matches!(store.create_mailbox(USER, "d", None).await, Err(StoreError::TooManyMailboxes)));
    store.delete_mailbox(USER, "b").await.expect("delete");
    store.create_mailbox(USER, "d", None).await.expect("room again");
}
