//! One conformance suite for `MailStore`, run against `LocalStore` in-process and against
//! `RemoteStore` talking to a real `sirms storage` process over TCP: same tests, both
//! implementations.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sirms_integration_tests::StorageNode;
use sirms_storage::{
    BodyPart, Cached, Change, FlagOp, Flags, LocalStore, MAX_CACHED_SIZE, MailStore, NewMessage, RemoteStore,
    SpecialUse, StoreError, SystemFlags, UidSet,
};
use tempfile::TempDir;

const USER: &str = "alice@example.test";

/// Keeps whatever backs a store alive for the test's duration.
struct Harness {
    store: Arc<dyn MailStore>,
    _dir: TempDir,
    _node: Option<StorageNode>,
}

fn local() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::open(dir.path()).expect("open store");
    Harness { store: Arc::new(store), _dir: dir, _node: None }
}

fn remote() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = StorageNode::start(dir.path().to_path_buf());
    let store = RemoteStore::connect(&node.endpoint(), node.token.clone()).expect("connect");
    Harness { store: Arc::new(store), _dir: dir, _node: Some(node) }
}

fn msg(text: &str) -> NewMessage {
    NewMessage::new(text.as_bytes().to_vec())
}

fn sample(i: usize) -> String {
    format!("From: a@example.test\r\nTo: {USER}\r\nSubject: test {i}\r\n\r\nBody {i}\r\n")
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod local_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let h = super::local();
                    super::$name(h.store.clone()).await;
                }
            )*
        }
        mod remote_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let h = super::remote();
                    super::$name(h.store.clone()).await;
                }
            )*
        }
    };
}

conformance!(
    default_mailboxes,
    create_delete_rename,
    rename_inbox_moves_messages,
    subscriptions,
    append_and_fetch_bytes,
    fetch_ranges_and_missing,
    large_and_empty_messages,
    flags_and_modseq,
    keywords_roundtrip,
    conditional_store,
    expunge_semantics,
    copy_and_move,
    status_and_recent,
    quota_usage,
    watch_changes,
    errors_are_typed,
    concurrent_appends_unique_uids,
    message_cache,
);

async fn default_mailboxes(s: Arc<dyn MailStore>) {
    let list = s.list_mailboxes(USER).await.unwrap();
    let names: Vec<&str> = list.iter().map(|m| m.name.as_str()).collect();
    for want in ["INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let sent = list.iter().find(|m| m.name == "Sent").unwrap();
    assert_eq!(sent.special_use, Some(SpecialUse::Sent));
    assert_eq!(list.iter().find(|m| m.name == "INBOX").unwrap().special_use, None);
    let st = s.status(USER, "inbox").await.unwrap();
    assert_eq!((st.messages, st.uid_next), (0, 1));
    assert!(st.uid_validity > 0);
}

async fn create_delete_rename(s: Arc<dyn MailStore>) {
    s.create_mailbox(USER, "Work/Projects/2026", None).await.unwrap();
    let names =
        |l: Vec<sirms_storage::MailboxInfo>| l.into_iter().map(|m| (m.name, m.has_children)).collect::<Vec<_>>();
    let list = names(s.list_mailboxes(USER).await.unwrap());
    assert!(list.contains(&("Work".into(), true)), "{list:?}");
    assert!(list.contains(&("Work/Projects".into(), true)));
    assert!(list.contains(&("Work/Projects/2026".into(), false)));
    assert!(matches!(s.create_mailbox(USER, "Work", None).await, Err(StoreError::MailboxExists)));
    assert!(matches!(s.delete_mailbox(USER, "Work").await, Err(StoreError::HasChildren)));

    s.append(USER, "Work/Projects", msg(&sample(1))).await.unwrap();
    s.rename_mailbox(USER, "Work", "Job").await.unwrap();
    let list = names(s.list_mailboxes(USER).await.unwrap());
    assert!(!list.iter().any(|(n, _)| n.starts_with("Work")), "{list:?}");
    assert!(list.contains(&("Job/Projects/2026".into(), false)));
    let (st, msgs) = s.messages(USER, "Job/Projects").await.unwrap();
    assert_eq!(st.messages, 1);
    let got = s.fetch(USER, "Job/Projects", &UidSet::single(msgs[0].uid), BodyPart::Full).await.unwrap();
    assert_eq!(got[0].body.as_deref(), Some(sample(1).as_bytes()));

    s.delete_mailbox(USER, "Job/Projects/2026").await.unwrap();
    s.delete_mailbox(USER, "Job/Projects").await.unwrap();
    assert!(matches!(s.status(USER, "Job/Projects").await, Err(StoreError::NoSuchMailbox)));
    assert!(matches!(s.delete_mailbox(USER, "INBOX").await, Err(StoreError::CannotDeleteInbox)));
    // Names with characters that mean something on disk.
    for odd in ["Sent Items", "a.b", "50% off", "Ünïcödé/日本"] {
        s.create_mailbox(USER, odd, None).await.unwrap();
        s.append(USER, odd, msg("x")).await.unwrap();
        assert_eq!(s.status(USER, odd).await.unwrap().messages, 1, "{odd}");
    }
    let list = names(s.list_mailboxes(USER).await.unwrap());
    assert!(list.contains(&("a.b".into(), false)) && list.contains(&("Ünïcödé/日本".into(), false)), "{list:?}");
}

async fn rename_inbox_moves_messages(s: Arc<dyn MailStore>) {
    for i in 0..3 {
        s.append(USER, "INBOX", msg(&sample(i))).await.unwrap();
    }
    s.rename_mailbox(USER, "INBOX", "Old").await.unwrap();
    assert_eq!(s.status(USER, "INBOX").await.unwrap().messages, 0);
    let (_, msgs) = s.messages(USER, "Old").await.unwrap();
    assert_eq!(msgs.len(), 3);
    let bodies = s.fetch(USER, "Old", &UidSet::all(), BodyPart::Full).await.unwrap();
    for (i, m) in bodies.iter().enumerate() {
        assert_eq!(m.body.as_deref(), Some(sample(i).as_bytes()));
    }
}

async fn subscriptions(s: Arc<dyn MailStore>) {
    s.subscribe(USER, "Sent", true).await.unwrap();
    s.subscribe(USER, "INBOX", true).await.unwrap();
    s.subscribe(USER, "INBOX", false).await.unwrap();
    let list = s.list_mailboxes(USER).await.unwrap();
    assert!(list.iter().find(|m| m.name == "Sent").unwrap().subscribed);
    assert!(!list.iter().find(|m| m.name == "INBOX").unwrap().subscribed);
}

async fn append_and_fetch_bytes(s: Arc<dyn MailStore>) {
    let mut uids = Vec::new();
    for i in 0..5 {
        let mut m = msg(&sample(i));
        m.internal_date = Some(1_700_000_000 + i as i64);
        m.flags = Flags::system(SystemFlags::SEEN);
        let r = s.append(USER, "INBOX", m).await.unwrap();
        uids.push(r.uid);
        assert_eq!(r.uid_validity, s.status(USER, "INBOX").await.unwrap().uid_validity);
    }
    assert_eq!(uids, vec![1, 2, 3, 4, 5]);
    let got = s.fetch(USER, "INBOX", &UidSet::range(2, 4), BodyPart::Full).await.unwrap();
    assert_eq!(got.len(), 3);
    for (m, i) in got.iter().zip(1..) {
        assert_eq!(m.meta.uid, i + 1);
        assert_eq!(m.body.as_deref(), Some(sample(i as usize).as_bytes()));
        assert_eq!(m.meta.size, sample(i as usize).len() as u64);
        assert_eq!(m.meta.internal_date, 1_700_000_000 + i as i64);
        assert!(m.meta.flags.system.contains(SystemFlags::SEEN));
    }
    let meta_only = s.fetch(USER, "INBOX", &UidSet::all(), BodyPart::None).await.unwrap();
    assert_eq!(meta_only.len(), 5);
    assert!(meta_only.iter().all(|m| m.body.is_none()));
}

async fn fetch_ranges_and_missing(s: Arc<dyn MailStore>) {
    let text = "0123456789abcdef";
    s.append(USER, "INBOX", msg(text)).await.unwrap();
    let part = |offset, length| BodyPart::Range { offset, length };
    let got = s.fetch(USER, "INBOX", &UidSet::single(1), part(4, 6)).await.unwrap();
    assert_eq!(got[0].body.as_deref(), Some(&b"456789"[..]));
    let got = s.fetch(USER, "INBOX", &UidSet::single(1), part(10, 100)).await.unwrap();
    assert_eq!(got[0].body.as_deref(), Some(&b"abcdef"[..]));
    let got = s.fetch(USER, "INBOX", &UidSet::single(1), part(100, 5)).await.unwrap();
    assert_eq!(got[0].body.as_deref(), Some(&b""[..]));
    assert!(s.fetch(USER, "INBOX", &UidSet::range(2, 50), BodyPart::Full).await.unwrap().is_empty());
}

async fn large_and_empty_messages(s: Arc<dyn MailStore>) {
    // Larger than any single gRPC chunk, with every byte value.
    let big: Vec<u8> = (0..5 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
    let r = s.append(USER, "INBOX", NewMessage::new(big.clone())).await.unwrap();
    let got = s.fetch(USER, "INBOX", &UidSet::single(r.uid), BodyPart::Full).await.unwrap();
    assert_eq!(got[0].body.as_deref(), Some(&big[..]));
    assert_eq!(got[0].meta.size, big.len() as u64);
    let e = s.append(USER, "INBOX", NewMessage::new(Vec::new())).await.unwrap();
    let got = s.fetch(USER, "INBOX", &UidSet::single(e.uid), BodyPart::Full).await.unwrap();
    assert_eq!(got[0].body.as_deref(), Some(&b""[..]));
}

async fn flags_and_modseq(s: Arc<dyn MailStore>) {
    for i in 0..3 {
        s.append(USER, "INBOX", msg(&sample(i))).await.unwrap();
    }
    let before = s.status(USER, "INBOX").await.unwrap().highest_modseq;
    let changed = s
        .store_flags(USER, "INBOX", &UidSet::range(1, 2), FlagOp::Add, &Flags::system(SystemFlags::FLAGGED), None)
        .await
        .unwrap();
    assert_eq!(changed.len(), 2);
    assert!(changed.iter().all(|m| m.modseq > before));
    let after = s.status(USER, "INBOX").await.unwrap().highest_modseq;
    assert!(after >= changed.iter().map(|m| m.modseq).max().unwrap());
    // Adding what is already there changes nothing.
    let again = s
        .store_flags(USER, "INBOX", &UidSet::range(1, 2), FlagOp::Add, &Flags::system(SystemFlags::FLAGGED), None)
        .await
        .unwrap();
    assert!(again.is_empty());
    s.store_flags(USER, "INBOX", &UidSet::single(1), FlagOp::Set, &Flags::system(SystemFlags::SEEN), None)
        .await
        .unwrap();
    s.store_flags(USER, "INBOX", &UidSet::single(2), FlagOp::Remove, &Flags::system(SystemFlags::FLAGGED), None)
        .await
        .unwrap();
    let (st, msgs) = s.messages(USER, "INBOX").await.unwrap();
    assert_eq!(msgs[0].flags.system, SystemFlags::SEEN);
    assert_eq!(msgs[1].flags.system, SystemFlags::empty());
    assert_eq!(msgs[2].flags.system, SystemFlags::empty());
    assert_eq!(st.unseen, 2);
    // Flags survive fetching bytes (the file was renamed under the hood).
    let got = s.fetch(USER, "INBOX", &UidSet::single(1), BodyPart::Full).await.unwrap();
    assert_eq!(got[0].body.as_deref(), Some(sample(0).as_bytes()));
}

async fn keywords_roundtrip(s: Arc<dyn MailStore>) {
    s.append(USER, "INBOX", msg("a")).await.unwrap();
    let mut m = msg("b");
    m.flags = Flags::new(SystemFlags::empty(), ["$Forwarded".to_string(), "Work".to_string()]);
    s.append(USER, "INBOX", m).await.unwrap();
    let kw = Flags::new(SystemFlags::empty(), ["$Junk".to_string()]);
    s.store_flags(USER, "INBOX", &UidSet::all(), FlagOp::Add, &kw, None).await.unwrap();
    let (_, msgs) = s.messages(USER, "INBOX").await.unwrap();
    assert_eq!(msgs[0].flags.keywords, vec!["$Junk"]);
    assert_eq!(msgs[1].flags.keywords, vec!["$Forwarded", "$Junk", "Work"]);
    let bad = Flags::new(SystemFlags::empty(), ["bad keyword".to_string()]);
    assert!(matches!(
        s.store_flags(USER, "INBOX", &UidSet::all(), FlagOp::Add, &bad, None).await,
        Err(StoreError::InvalidKeyword)
    ));
    // Copying translates keywords into the destination folder's own list.
    let r = s.copy(USER, "INBOX", "Archive", &UidSet::single(2)).await.unwrap();
    let got = s.fetch(USER, "Archive", &UidSet::single(r.pairs[0].1), BodyPart::None).await.unwrap();
    assert_eq!(got[0].meta.flags.keywords, vec!["$Forwarded", "$Junk", "Work"]);
}

async fn conditional_store(s: Arc<dyn MailStore>) {
    s.append(USER, "INBOX", msg("a")).await.unwrap();
    s.append(USER, "INBOX", msg("b")).await.unwrap();
    let (_, msgs) = s.messages(USER, "INBOX").await.unwrap();
    let since = msgs[0].modseq;
    // Message 2 was modified after `since` (appended later), so it is left alone.
    let changed = s
        .store_flags(USER, "INBOX", &UidSet::all(), FlagOp::Add, &Flags::system(SystemFlags::SEEN), Some(since))
        .await
        .unwrap();
    assert_eq!(changed.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![1]);
}

async fn expunge_semantics(s: Arc<dyn MailStore>) {
    for i in 0..5 {
        s.append(USER, "INBOX", msg(&sample(i))).await.unwrap();
    }
    let del = Flags::system(SystemFlags::DELETED);
    s.store_flags(USER, "INBOX", &[2, 3, 5].into_iter().collect(), FlagOp::Add, &del, None).await.unwrap();
    // UID EXPUNGE: only the named \Deleted messages go.
    assert_eq!(s.expunge(USER, "INBOX", Some(&UidSet::range(1, 2))).await.unwrap(), vec![2]);
    assert_eq!(s.expunge(USER, "INBOX", None).await.unwrap(), vec![3, 5]);
    let (st, msgs) = s.messages(USER, "INBOX").await.unwrap();
    assert_eq!(msgs.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![1, 4]);
    assert_eq!(st.messages, 2);
    // UIDs are never handed out again, even those of expunged messages at the top.
    assert_eq!(st.uid_next, 6);
    assert_eq!(s.append(USER, "INBOX", msg("new")).await.unwrap().uid, 6);
    assert!(s.expunge(USER, "INBOX", None).await.unwrap().is_empty());
}

async fn copy_and_move(s: Arc<dyn MailStore>) {
    for i in 0..4 {
        let mut m = msg(&sample(i));
        m.flags = Flags::system(SystemFlags::ANSWERED);
        m.internal_date = Some(1_600_000_000);
        s.append(USER, "INBOX", m).await.unwrap();
    }
    let copied = s.copy(USER, "INBOX", "Archive", &UidSet::range(1, 2)).await.unwrap();
    assert_eq!(copied.pairs, vec![(1, 1), (2, 2)]);
    assert_eq!(copied.uid_validity, s.status(USER, "Archive").await.unwrap().uid_validity);
    let moved = s.move_messages(USER, "INBOX", "Archive", &UidSet::range(3, 10)).await.unwrap();
    assert_eq!(moved.pairs, vec![(3, 3), (4, 4)]);
    let (_, inbox) = s.messages(USER, "INBOX").await.unwrap();
    assert_eq!(inbox.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![1, 2]);
    let archive = s.fetch(USER, "Archive", &UidSet::all(), BodyPart::Full).await.unwrap();
    assert_eq!(archive.len(), 4);
    for (m, i) in archive.iter().zip(0..) {
        assert_eq!(m.body.as_deref(), Some(sample(i).as_bytes()));
        assert_eq!(m.meta.flags.system, SystemFlags::ANSWERED);
        assert_eq!(m.meta.internal_date, 1_600_000_000);
    }
    // A copy is independent of its original.
    s.store_flags(USER, "INBOX", &UidSet::single(1), FlagOp::Add, &Flags::system(SystemFlags::DELETED), None)
        .await
        .unwrap();
    s.expunge(USER, "INBOX", None).await.unwrap();
    let got = s.fetch(USER, "Archive", &UidSet::single(1), BodyPart::Full).await.unwrap();
    assert_eq!(got[0].body.as_deref(), Some(sample(0).as_bytes()));
    assert!(s.copy(USER, "INBOX", "Archive", &UidSet::range(50, 60)).await.unwrap().pairs.is_empty());
    assert!(matches!(s.copy(USER, "INBOX", "Nope", &UidSet::all()).await, Err(StoreError::NoSuchMailbox)));
}

async fn status_and_recent(s: Arc<dyn MailStore>) {
    for i in 0..3 {
        s.append(USER, "INBOX", msg(&sample(i))).await.unwrap();
    }
    let st = s.status(USER, "INBOX").await.unwrap();
    assert_eq!((st.messages, st.unseen, st.recent, st.uid_next), (3, 3, 3, 4));
    assert_eq!(st.size, (0..3).map(|i| sample(i).len() as u64).sum::<u64>());
    assert_eq!(s.claim_recent(USER, "INBOX").await.unwrap(), vec![1, 2, 3]);
    assert!(s.claim_recent(USER, "INBOX").await.unwrap().is_empty());
    s.append(USER, "INBOX", msg("later")).await.unwrap();
    assert_eq!(s.status(USER, "INBOX").await.unwrap().recent, 1);
    assert_eq!(s.claim_recent(USER, "INBOX").await.unwrap(), vec![4]);
}

async fn quota_usage(s: Arc<dyn MailStore>) {
    s.append(USER, "INBOX", msg("12345")).await.unwrap();
    s.append(USER, "Sent", msg("123")).await.unwrap();
    let q = s.quota(USER).await.unwrap();
    assert_eq!((q.messages, q.bytes), (2, 8));
}

async fn watch_changes(s: Arc<dyn MailStore>) {
    s.create_mailbox(USER, "Watched", None).await.unwrap();
    let mut changes = s.watch(USER, "Watched").await.unwrap();
    let writer = s.clone();
    tokio::spawn(async move {
        writer.append(USER, "Watched", msg("hello")).await.unwrap();
        writer
            .store_flags(USER, "Watched", &UidSet::all(), FlagOp::Add, &Flags::system(SystemFlags::DELETED), None)
            .await
            .unwrap();
        writer.expunge(USER, "Watched", None).await.unwrap();
        writer.delete_mailbox(USER, "Watched").await.unwrap();
    });
    let mut next =
        async || tokio::time::timeout(Duration::from_secs(10), changes.next()).await.expect("change in time");
    match next().await {
        Some(Change::Appended(m)) => assert_eq!((m.uid, m.size), (1, 5)),
        other => panic!("expected Appended, got {other:?}"),
    }
    match next().await {
        Some(Change::FlagsChanged(m)) => assert!(m.flags.system.contains(SystemFlags::DELETED)),
        other => panic!("expected FlagsChanged, got {other:?}"),
    }
    assert_eq!(next().await, Some(Change::Expunged(vec![1])));
    assert_eq!(next().await, Some(Change::MailboxGone));
    assert_eq!(next().await, None);
}

async fn errors_are_typed(s: Arc<dyn MailStore>) {
    assert!(matches!(s.status(USER, "Missing").await, Err(StoreError::NoSuchMailbox)));
    assert!(matches!(s.append(USER, "Missing", msg("x")).await, Err(StoreError::NoSuchMailbox)));
    assert!(matches!(s.create_mailbox(USER, "a//b", None).await, Err(StoreError::InvalidName(_))));
    assert!(matches!(s.create_mailbox(USER, "../etc", None).await, Err(StoreError::InvalidName(_))));
    assert!(matches!(s.create_mailbox(USER, "INBOX", None).await, Err(StoreError::MailboxExists)));
    assert!(matches!(s.rename_mailbox(USER, "Missing", "X").await, Err(StoreError::NoSuchMailbox)));
    assert!(matches!(s.rename_mailbox(USER, "Sent", "Drafts").await, Err(StoreError::MailboxExists)));
    assert!(matches!(s.list_mailboxes("").await, Err(StoreError::InvalidUser)));
    assert!(matches!(s.list_mailboxes("a/../b").await, Err(StoreError::InvalidUser)));
}

async fn concurrent_appends_unique_uids(s: Arc<dyn MailStore>) {
    const TASKS: usize = 32;
    const EACH: usize = 10;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..EACH {
                let body = format!("task {t} message {i}\r\n");
                let r = s.append(USER, "INBOX", msg(&body)).await.unwrap();
                got.push((r.uid, body));
            }
            got
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        let got = h.await.unwrap();
        // Each writer sees its own UIDs strictly increasing.
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
        all.extend(got);
    }
    all.sort();
    let uids: Vec<u32> = all.iter().map(|(u, _)| *u).collect();
    assert_eq!(uids, (1..=(TASKS * EACH) as u32).collect::<Vec<_>>());
    let fetched = s.fetch(USER, "INBOX", &UidSet::all(), BodyPart::Full).await.unwrap();
    assert_eq!(fetched.len(), TASKS * EACH);
    for (m, (uid, body)) in fetched.iter().zip(&all) {
        assert_eq!(m.meta.uid, *uid);
        assert_eq!(m.body.as_deref(), Some(body.as_bytes()));
    }
}

fn cached(uid: u32, data: &str) -> Cached {
    Cached { uid, data: data.as_bytes().to_vec().into() }
}

async fn message_cache(s: Arc<dyn MailStore>) {
    for i in 0..3 {
        s.append(USER, "INBOX", msg(&sample(i))).await.unwrap();
    }
    assert!(s.cache_get(USER, "INBOX", &UidSet::all()).await.unwrap().is_empty());
    // Data for a message that does not exist is not kept.
    s.cache_put(USER, "INBOX", vec![cached(1, "one"), cached(2, "two"), cached(9, "nine")]).await.unwrap();
    assert_eq!(s.cache_get(USER, "INBOX", &UidSet::all()).await.unwrap(), vec![cached(1, "one"), cached(2, "two")]);
    assert_eq!(s.cache_get(USER, "INBOX", &UidSet::range(2, 9)).await.unwrap(), vec![cached(2, "two")]);
    s.cache_put(USER, "INBOX", vec![cached(1, "uno")]).await.unwrap();
    // A flag change leaves the message, and so its data, as it was.
    s.store_flags(USER, "INBOX", &UidSet::single(1), FlagOp::Add, &Flags::system(SystemFlags::SEEN), None)
        .await
        .unwrap();
    assert_eq!(s.cache_get(USER, "INBOX", &UidSet::single(1)).await.unwrap(), vec![cached(1, "uno")]);
    let big = Cached { uid: 3, data: vec![b'x'; MAX_CACHED_SIZE + 1].into() };
    s.cache_put(USER, "INBOX", vec![big]).await.unwrap();
    assert!(s.cache_get(USER, "INBOX", &UidSet::single(3)).await.unwrap().is_empty());

    // Moved and expunged messages take their data with them; new messages start with none.
    let moved = s.move_messages(USER, "INBOX", "Archive", &UidSet::single(2)).await.unwrap();
    assert!(s.cache_get(USER, "Archive", &UidSet::single(moved.pairs[0].1)).await.unwrap().is_empty());
    s.store_flags(USER, "INBOX", &UidSet::single(1), FlagOp::Add, &Flags::system(SystemFlags::DELETED), None)
        .await
        .unwrap();
    s.expunge(USER, "INBOX", None).await.unwrap();
    s.append(USER, "INBOX", msg("new")).await.unwrap();
    assert!(s.cache_get(USER, "INBOX", &UidSet::all()).await.unwrap().is_empty());

    // A mailbox deleted and made again under the same name starts empty, cache included,
    // though its first message has the UID the old one's had.
    s.create_mailbox(USER, "Work", None).await.unwrap();
    let old = s.append(USER, "Work", msg("old")).await.unwrap();
    s.cache_put(USER, "Work", vec![cached(old.uid, "old")]).await.unwrap();
    s.delete_mailbox(USER, "Work").await.unwrap();
    s.create_mailbox(USER, "Work", None).await.unwrap();
    let new = s.append(USER, "Work", msg("new")).await.unwrap();
    assert_eq!(new.uid, old.uid);
    assert!(s.cache_get(USER, "Work", &UidSet::all()).await.unwrap().is_empty());
    // And so does one that takes the name of a mailbox renamed away.
    s.cache_put(USER, "Work", vec![cached(new.uid, "work")]).await.unwrap();
    s.rename_mailbox(USER, "Work", "Play").await.unwrap();
    s.create_mailbox(USER, "Work", None).await.unwrap();
    s.append(USER, "Work", msg("newer")).await.unwrap();
    assert!(s.cache_get(USER, "Work", &UidSet::all()).await.unwrap().is_empty());
    for found in s.cache_get(USER, "Play", &UidSet::all()).await.unwrap() {
        assert_eq!(found, cached(new.uid, "work"), "a renamed mailbox keeps its messages' data or none");
    }

    assert!(matches!(s.cache_get(USER, "Nope", &UidSet::all()).await, Err(StoreError::NoSuchMailbox)));
    assert!(matches!(s.cache_put(USER, "Nope", vec![cached(1, "x")]).await, Err(StoreError::NoSuchMailbox)));
}
