//! What only the local store can show: that its message cache outlives a restart and that an
//! entry is tied to its message's file, not just to a UID; that deleted and renamed
//! mailboxes leave nothing behind in the index; and that a renamed one's modseqs go on from
//! where they were after a restart.

use std::fs;

use super::*;
use crate::replica::{Apply, ReplicaStore};

const USER: &str = "alice@example.test";

fn entry(uid: u32, data: &'static [u8]) -> Cached {
    Cached { uid, data: Bytes::from_static(data) }
}

#[tokio::test]
async fn cached_data_outlives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = LocalStore::open(dir.path()).expect("open");
        store.append(USER, "INBOX", NewMessage::new(&b"Subject: a\r\n\r\nA\r\n"[..])).await.expect("append");
        store.cache_put(USER, "INBOX", vec![entry(1, b"rendered")]).await.expect("put");
        store.flush().await.expect("flush");
    }
    let store = LocalStore::open(dir.path()).expect("reopen");
    assert_eq!(store.cache_get(USER, "INBOX", &UidSet::all()).await.expect("get"), vec![entry(1, b"rendered")]);
}

#[tokio::test]
async fn a_file_replaced_under_the_same_uid_gets_no_old_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cur = dir.path().join("mail").join(maildir::escape_component(USER)).join("cur");
    {
        let store = LocalStore::open(dir.path()).expect("open");
        store.append(USER, "INBOX", NewMessage::new(&b"Subject: a\r\n\r\nA\r\n"[..])).await.expect("append");
        store.append(USER, "INBOX", NewMessage::new(&b"Subject: b\r\n\r\nB\r\n"[..])).await.expect("append");
        store.cache_put(USER, "INBOX", vec![entry(1, b"of a"), entry(2, b"of b")]).await.expect("put");
        store.flush().await.expect("flush");
    }
    // While the store is down, other software puts a different message in place of UID 1
    // (a restored backup, say): same UID, another file.
    let old = fs::read_dir(&cur)
        .expect("cur")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().into_string().expect("utf-8"))
        .find(|n| n.contains(",U=1,"))
        .expect("UID 1");
    fs::remove_file(cur.join(&old)).expect("remove");
    fs::write(cur.join("999.M1P1Q1.restored,U=1,S=17:2,"), b"Subject: c\r\n\r\nC\r\n").expect("write");
    let store = LocalStore::open(dir.path()).expect("reopen");
    assert_eq!(store.cache_get(USER, "INBOX", &UidSet::all()).await.expect("get"), vec![entry(2, b"of b")]);
    let fetched = store.fetch(USER, "INBOX", &UidSet::single(1), BodyPart::Full).await.expect("fetch");
    assert_eq!(fetched[0].body.as_deref(), Some(&b"Subject: c\r\n\r\nC\r\n"[..]));
}

#[tokio::test]
async fn entries_of_files_gone_while_closed_are_dropped_when_the_folder_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cur = dir.path().join("mail").join(maildir::escape_component(USER)).join("cur");
    {
        let store = LocalStore::open(dir.path()).expect("open");
        for body in [&b"Subject: a\r\n\r\nA\r\n"[..], &b"Subject: b\r\n\r\nB\r\n"[..]] {
            store.append(USER, "INBOX", NewMessage::new(body)).await.expect("append");
        }
        store.cache_put(USER, "INBOX", vec![entry(1, b"of a"), entry(2, b"of b")]).await.expect("put");
        store.flush().await.expect("flush");
    }
    let gone = fs::read_dir(&cur)
        .expect("cur")
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().contains(",U=2,"))
        .expect("UID 2");
    fs::remove_file(gone.path()).expect("remove");
    let store = LocalStore::open(dir.path()).expect("reopen");
    assert_eq!(store.cache_get(USER, "INBOX", &UidSet::all()).await.expect("get"), vec![entry(1, b"of a")]);
    let tree = store.inner.db.open_tree(index::cache_tree_name(USER, "INBOX")).expect("tree");
    assert_eq!(tree.len(), 1, "the entry of the vanished file is gone from disk too");
}

/// The sled trees of alice's folders (each folder has a message tree and a cache tree).
fn folder_trees(store: &LocalStore) -> Vec<String> {
    let mut names: Vec<String> = store
        .inner
        .db
        .tree_names()
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .filter(|n| n.contains(USER))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn deleted_and_renamed_mailboxes_leave_no_trees_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::open(dir.path()).expect("open");
    store.append(USER, "INBOX", NewMessage::new(&b"Subject: a\r\n\r\nA\r\n"[..])).await.expect("append");
    let before = folder_trees(&store);
    for i in 0..20 {
        let name = format!("Temp{i}");
        store.create_mailbox(USER, &name, None).await.expect("create");
        store.create_mailbox(USER, &format!("{name}/Child"), None).await.expect("create child");
        store
            .append(USER, &format!("{name}/Child"), NewMessage::new(&b"Subject: b\r\n\r\nB\r\n"[..]))
            .await
            .expect("append");
        store.cache_put(USER, &format!("{name}/Child"), vec![entry(1, b"of b")]).await.expect("put");
        store.rename_mailbox(USER, &name, &format!("Moved{i}")).await.expect("rename");
        store.messages(USER, &format!("Moved{i}/Child")).await.expect("open the renamed child");
        store.delete_mailbox(USER, &format!("Moved{i}/Child")).await.expect("delete child");
        store.delete_mailbox(USER, &format!("Moved{i}")).await.expect("delete");
    }
    assert_eq!(folder_trees(&store), before, "only INBOX's trees are left");
    // A recreated mailbox starts empty, with a new UIDVALIDITY.
    store.create_mailbox(USER, "Temp0", None).await.expect("create again");
    let (status, messages) = store.messages(USER, "Temp0").await.expect("messages");
    assert!(messages.is_empty());
    let (inbox, _) = store.messages(USER, "INBOX").await.expect("inbox");
    assert_ne!(status.uid_validity, inbox.uid_validity);
}

#[tokio::test]
async fn a_mailbox_deleted_after_a_restart_leaves_no_trees_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = LocalStore::open(dir.path()).expect("open");
        store.create_mailbox(USER, "Old", None).await.expect("create");
        store.append(USER, "Old", NewMessage::new(&b"Subject: a\r\n\r\nA\r\n"[..])).await.expect("append");
        store.flush().await.expect("flush");
    }
    let store = LocalStore::open(dir.path()).expect("reopen");
    assert!(folder_trees(&store).iter().any(|n| n.ends_with("Old")), "the index of Old outlived the restart");
    // Deleted without being opened in this process.
    store.delete_mailbox(USER, "Old").await.expect("delete");
    assert!(!folder_trees(&store).iter().any(|n| n.ends_with("Old")));
}

#[tokio::test]
async fn opening_a_mailbox_that_does_not_exist_leaves_no_trees_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::open(dir.path()).expect("open");
    store.messages(USER, "INBOX").await.expect("inbox");
    let before = folder_trees(&store);
    for i in 0..20 {
        let err = store.messages(USER, &format!("Nowhere{i}")).await.expect_err("no such mailbox");
        assert!(matches!(err, StoreError::NoSuchMailbox), "{err}");
    }
    assert_eq!(folder_trees(&store), before);
}

#[tokio::test]
async fn the_mailbox_limit_counts_the_parents_a_create_or_rename_would_make() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::open(dir.path()).expect("open");
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

#[tokio::test]
async fn a_renamed_mailbox_goes_on_from_its_highest_modseq_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seen = Flags::system(crate::SystemFlags::SEEN);
    let highest = {
        let store = LocalStore::open(dir.path()).expect("open");
        store.create_mailbox(USER, "R", None).await.expect("create");
        store.append(USER, "R", NewMessage::new(&b"Subject: a\r\n\r\nA\r\n"[..])).await.expect("append");
        for op in [FlagOp::Add, FlagOp::Remove, FlagOp::Add] {
            store.store_flags(USER, "R", &UidSet::all(), op, &seen, None).await.expect("store");
        }
        let highest = store.status(USER, "R").await.expect("status").highest_modseq;
        assert_eq!(store.claim_recent(USER, "R").await.expect("claim"), vec![1]);
        store.rename_mailbox(USER, "R", "S").await.expect("rename");
        store.flush().await.expect("flush");
        highest
    };
    // Reopened, and never opened under its new name before: same UIDVALIDITY, so no going back.
    let store = LocalStore::open(dir.path()).expect("reopen");
    let (status, messages) = store.messages(USER, "S").await.expect("messages");
    assert!(status.highest_modseq >= highest, "{} after {highest}", status.highest_modseq);
    assert!(messages.iter().all(|m| m.modseq <= status.highest_modseq));
    assert_eq!(status.recent, 0, "what was claimed as \\Recent stays claimed");
}

#[tokio::test]
async fn a_replica_mailbox_takes_the_primarys_uidvalidity_even_when_its_file_already_names_it() {
    // A folder opened while a catch-up replaced its settings file keeps the UIDVALIDITY it
    // read, though the file names the primary's: the record must still make the open folder
    // the primary's, or every later record is refused as coming from another mailbox.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::open(dir.path()).expect("open");
    store.append(USER, "INBOX", NewMessage::new(&b"Subject: a\r\n\r\nA\r\n"[..])).await.expect("append");
    let ours = store.status(USER, "INBOX").await.expect("status").uid_validity;
    let primarys = ours + 7;
    let settings = dir.path().join("mail").join(maildir::escape_component(USER)).join(files::FOLDER_FILE);
    let file = files::FolderFile { uid_validity: primarys, uid_floor: 1, special_use: None };
    fs::write(&settings, file.render()).expect("write the settings file");
    let record = Apply::Mailbox { name: "INBOX".into(), uid_validity: primarys, special_use: None };
    store.apply(USER, 1, record).await.expect("apply");
    let status = store.status(USER, "INBOX").await.expect("status");
    assert_eq!(status.uid_validity, primarys);
    assert_eq!(status.messages, 0, "the messages of the other UIDVALIDITY are gone");
}

#[tokio::test]
async fn a_message_two_records_bring_at_once_is_placed_once_and_both_succeed() {
    // A writer's record and a catch-up racing it can bring a replica the same message at the
    // same time: both must succeed (neither is a divergence) and the message exists once.
    let dir = tempfile::tempdir().expect("tempdir");
    let primary_dir = tempfile::tempdir().expect("tempdir");
    let primary = LocalStore::open(primary_dir.path()).expect("open");
    let bytes = Bytes::from_static(b"Subject: twice\r\n\r\nbody\r\n");
    let appended = primary.append(USER, "INBOX", NewMessage::new(bytes.clone())).await.expect("append");
    let (_, metas) = primary.messages(USER, "INBOX").await.expect("messages");
    let replica = LocalStore::open(dir.path()).expect("open");
    let mailbox = Apply::Mailbox { name: "INBOX".into(), uid_validity: appended.uid_validity, special_use: None };
    replica.apply(USER, 1, mailbox).await.expect("mailbox");
    let record = || Apply::Append {
        mailbox: "INBOX".into(),
        uid_validity: appended.uid_validity,
        meta: metas[0].clone(),
        bytes: bytes.clone(),
    };
    let outcomes = futures::future::join_all((0..8).map(|_| replica.apply(USER, 1, record()))).await;
    for outcome in outcomes {
        outcome.expect("every copy of the record succeeds");
    }
    let (status, list) = replica.messages(USER, "INBOX").await.expect("messages");
    assert_eq!((status.messages, list.len()), (1, 1));
    let cur = dir.path().join("mail").join(maildir::escape_component(USER)).join("cur");
    assert_eq!(fs::read_dir(cur).expect("cur").count(), 1, "one file");
}
