//! One conformance suite for `MailStore`: every test runs against every implementation —
//! `LocalStore` in-process, `RemoteStore` talking to a real `sirms storage` process over TCP,
//! `MemoryStore`, the `Measured` wrapper around a `LocalStore`, and a mail node's `HomeStore`
//! for users homed on a storage node (so through a `RemoteStore` it makes itself). What
//! `LocalStore` does is the contract; the others must do the same.

use std::collections::{BTreeMap, HashMap};
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use sirms_integration_tests::StorageNode;
use sirms_mailnode::cluster::home_store::{Endpoints, HomeStore};
use sirms_mailnode::directory::{DirectoryData, LiveDirectory};
use sirms_proto::cluster::{DirectorySnapshot, User};
use sirms_proto::cluster_tls::Credentials;
use sirms_storage::message::MAX_MESSAGE_SIZE;
use sirms_storage::{
    BodyPart, Cached, Change, ChangeStream, FlagOp, Flags, LocalStore, MAX_CACHED_SIZE, MailStore, Measured,
    MemoryStore, MessageMeta, NewMessage, RemoteStore, ReplicaStore, SpecialUse, StoreError, StoreMetrics, SystemFlags,
    UidSet,
};
use tempfile::TempDir;

const USER: &str = "alice@example.test";
/// A second user, for what must stay apart.
const OTHER: &str = "bob@example.test";

/// The store under test as two sessions on the same mail. It derefs to the first; `second`
/// is another client of the same mail (for the remote stores, its own connection).
#[derive(Clone)]
struct Stores {
    first: Arc<dyn MailStore>,
    second: Arc<dyn MailStore>,
}

impl Deref for Stores {
    type Target = dyn MailStore;
    fn deref(&self) -> &Self::Target {
        &*self.first
    }
}

/// Keeps whatever backs a store alive for the test's duration.
struct Harness {
    stores: Stores,
    _dir: Option<TempDir>,
    _node: Option<StorageNode>,
    /// A mail directory the test must leave empty: the home store's own `LocalStore`, which
    /// none of its calls may reach, since every user is homed elsewhere.
    untouched: Option<PathBuf>,
    /// The primary and the replica of a replicated harness, which must end up the same.
    copies: Option<(RemoteStore, RemoteStore)>,
    _replica: Option<StorageNode>,
}

impl Harness {
    fn new(first: Arc<dyn MailStore>, second: Arc<dyn MailStore>) -> Harness {
        Harness {
            stores: Stores { first, second },
            _dir: None,
            _node: None,
            untouched: None,
            copies: None,
            _replica: None,
        }
    }

    async fn finish(self) {
        if let Some(dir) = &self.untouched {
            let entries: Vec<_> = std::fs::read_dir(dir).expect("read mail dir").collect();
            assert!(entries.is_empty(), "calls reached the local store instead of the user's home: {entries:?}");
        }
        if let Some((primary, replica)) = &self.copies {
            assert_copies_match(primary, replica).await;
        }
    }
}

/// Both users' mail the same on the primary and the replica: mailboxes, subscriptions,
/// UIDVALIDITY, and every message's UID, flags, MODSEQ, date, size and bytes; the replica's
/// UIDNEXT and HIGHESTMODSEQ no lower than the primary's.
async fn assert_copies_match(primary: &dyn MailStore, replica: &dyn MailStore) {
    for user in [USER, OTHER] {
        let ours = primary.list_mailboxes(user).await.unwrap();
        let theirs = replica.list_mailboxes(user).await.unwrap();
        assert_eq!(ours, theirs, "{user}'s mailboxes differ");
        let files = primary.user_files(user).await.unwrap();
        assert_eq!(files, replica.user_files(user).await.unwrap(), "{user}'s files differ");
        for m in &ours {
            let (a, a_list) = primary.messages(user, &m.name).await.unwrap();
            let (b, b_list) = replica.messages(user, &m.name).await.unwrap();
            assert_eq!(a.uid_validity, b.uid_validity, "{user}/{}: UIDVALIDITY", m.name);
            assert!(b.uid_next >= a.uid_next, "{user}/{}: replica UIDNEXT {} < {}", m.name, b.uid_next, a.uid_next);
            assert!(b.highest_modseq >= a.highest_modseq, "{user}/{}: replica HIGHESTMODSEQ behind", m.name);
            assert_eq!(a_list, b_list, "{user}/{}: messages differ", m.name);
            let a_bytes = primary.fetch(user, &m.name, &UidSet::all(), BodyPart::Full).await.unwrap();
            let b_bytes = replica.fetch(user, &m.name, &UidSet::all(), BodyPart::Full).await.unwrap();
            assert_eq!(a_bytes, b_bytes, "{user}/{}: bytes differ", m.name);
        }
    }
}

async fn local() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn MailStore> = Arc::new(LocalStore::open(dir.path()).expect("open store"));
    Harness { _dir: Some(dir), ..Harness::new(store.clone(), store) }
}

async fn remote() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = StorageNode::start(dir.path().to_path_buf());
    let connect = || RemoteStore::connect(&node.endpoint(), node.token.clone()).expect("connect");
    let (first, second) = (Arc::new(connect()), Arc::new(connect()));
    Harness { _dir: Some(dir), _node: Some(node), ..Harness::new(first, second) }
}

async fn memory() -> Harness {
    let store: Arc<dyn MailStore> = Arc::new(MemoryStore::new());
    Harness::new(store.clone(), store)
}

async fn measured() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn MailStore> = Arc::new(LocalStore::open(dir.path()).expect("open store"));
    let metrics = Arc::new(StoreMetrics::default());
    let first = Arc::new(Measured::new(store.clone(), metrics.clone()));
    let second = Arc::new(Measured::new(store, metrics));
    Harness { _dir: Some(dir), ..Harness::new(first, second) }
}

/// Two mail nodes' `HomeStore`s (as `role.rs` builds them) over one `LocalStore` of their own
/// under `dir/node`, for USER and OTHER as `user` makes their records, with the stores of
/// `endpoints`.
fn node_stores(
    dir: &std::path::Path,
    user: impl Fn(&str) -> User,
    endpoints: HashMap<String, String>,
    token: &str,
) -> (Arc<HomeStore>, Arc<HomeStore>) {
    let snapshot = DirectorySnapshot {
        domains: vec!["example.test".into()],
        users: [USER, OTHER].map(user).into(),
        ..Default::default()
    };
    let directory = Arc::new(LiveDirectory::new(DirectoryData::from_snapshot(&snapshot)));
    let endpoints: Endpoints = Arc::new(Mutex::new(endpoints));
    let own: Arc<dyn ReplicaStore> = Arc::new(LocalStore::open(dir.join("node")).expect("open store"));
    let node_store = |id: &str| {
        Arc::new(HomeStore::new(
            id.into(),
            own.clone(),
            directory.clone(),
            endpoints.clone(),
            Credentials::token(token.to_string()),
        ))
    };
    (node_store("node-a"), node_store("node-b"))
}

/// Two mail nodes' `HomeStore`s for users homed on a storage node.
async fn home() -> Harness {
    const HOME: &str = "storage-1";
    let dir = tempfile::tempdir().expect("tempdir");
    let node = StorageNode::start(dir.path().join("home"));
    let user = |address: &str| User { address: address.into(), home: HOME.into(), ..Default::default() };
    let endpoints = HashMap::from([(HOME.to_string(), node.endpoint())]);
    let (first, second) = node_stores(dir.path(), user, endpoints, &node.token);
    Harness {
        untouched: Some(dir.path().join("node/mail")),
        _dir: Some(dir),
        _node: Some(node),
        ..Harness::new(first, second)
    }
}

/// Two mail nodes' `HomeStore`s for users homed on one storage node with a replica on another:
/// every write goes to both, and at the end the two copies must be the same.
async fn replicated() -> Harness {
    const HOME: &str = "storage-1";
    const REPLICA: &str = "storage-2";
    let dir = tempfile::tempdir().expect("tempdir");
    let node = StorageNode::start(dir.path().join("home"));
    let replica_node = StorageNode::start(dir.path().join("replica"));
    let user = |address: &str| User {
        address: address.into(),
        home: HOME.into(),
        replica: REPLICA.into(),
        epoch: 1,
        replica_in_sync: true,
        ..Default::default()
    };
    let endpoints =
        HashMap::from([(HOME.to_string(), node.endpoint()), (REPLICA.to_string(), replica_node.endpoint())]);
    let (first, second) = node_stores(dir.path(), user, endpoints, &node.token);
    // A new replica is caught up once before it is used, as the nodes' catch-up does: that
    // gives its default mailboxes the primary's UIDVALIDITYs.
    for user in [USER, OTHER] {
        first.catch_up(user).await.expect("first catch-up");
    }
    let connect = |n: &StorageNode| RemoteStore::connect(&n.endpoint(), n.token.clone()).expect("connect");
    let copies = Some((connect(&node), connect(&replica_node)));
    Harness {
        untouched: Some(dir.path().join("node/mail")),
        _dir: Some(dir),
        _node: Some(node),
        _replica: Some(replica_node),
        copies,
        ..Harness::new(first, second)
    }
}

fn msg(text: &str) -> NewMessage {
    NewMessage::new(text.as_bytes().to_vec())
}

fn sample(i: usize) -> String {
    format!("From: a@example.test\r\nTo: {USER}\r\nSubject: test {i}\r\n\r\nBody {i}\r\n")
}

/// Runs each test against every implementation, one module per implementation.
macro_rules! conformance {
    (@on $module:ident, $harness:ident; $($name:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let h = super::$harness().await;
                    super::$name(h.stores.clone()).await;
                    h.finish().await;
                }
            )*
        }
    };
    ($($name:ident),* $(,)?) => {
        conformance!(@on local_store, local; $($name),*);
        conformance!(@on remote_store, remote; $($name),*);
        conformance!(@on memory_store, memory; $($name),*);
        conformance!(@on measured_store, measured; $($name),*);
        conformance!(@on home_store, home; $($name),*);
        conformance!(@on replicated_store, replicated; $($name),*);
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
    bytes_are_kept_exactly,
    uid_validity_and_uids,
    modseqs_only_go_up,
    keyword_limits,
    copy_and_move_within_and_across,
    rename_and_delete_with_children,
    special_use_and_subscriptions_by_name,
    quota_and_size_limits,
    two_sessions_write_at_once,
    watchers_see_copies_moves_and_renames,
    a_watcher_behind_gets_every_change_or_lagged,
    users_are_apart,
    imports_keep_uid_validity_and_uids,
    user_files_are_kept_replaced_and_removed,
);

async fn user_files_are_kept_replaced_and_removed(s: Stores) {
    assert_eq!(s.user_files(USER).await.unwrap(), Vec::new());
    let script = bytes::Bytes::from_static(b"require \"fileinto\";\r\nfileinto \"Work\";\r\n");
    s.put_user_file(USER, "sieve.work", Some(script.clone())).await.unwrap();
    s.put_user_file(USER, "sieve.active", Some(bytes::Bytes::from_static(b"work"))).await.unwrap();
    s.put_user_file(USER, "sieve.old", Some(bytes::Bytes::from_static(b"keep;"))).await.unwrap();
    s.put_user_file(USER, "sieve.old", None).await.unwrap();
    s.put_user_file(USER, "sieve.gone", None).await.unwrap();
    let files = s.second.user_files(USER).await.unwrap();
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["sieve.active", "sieve.work"], "in name order, the removed one gone");
    assert_eq!(files[1].content, script, "kept byte for byte");
    s.put_user_file(USER, "sieve.active", Some(bytes::Bytes::from_static(b"other"))).await.unwrap();
    assert_eq!(&s.user_files(USER).await.unwrap()[0].content[..], b"other", "replaced");
    assert_eq!(s.user_files(OTHER).await.unwrap(), Vec::new(), "users are apart");
    for bad in ["../escape", ".hidden", "a/b", ""] {
        let put = s.put_user_file(USER, bad, Some(script.clone())).await;
        assert!(matches!(put, Err(StoreError::InvalidName(_))), "{bad:?}: {put:?}");
    }
    let huge = bytes::Bytes::from(vec![b'#'; sirms_storage::user_file::MAX_SIZE + 1]);
    assert!(matches!(s.put_user_file(USER, "big", Some(huge)).await, Err(StoreError::TooLarge)));
    for i in 2..sirms_storage::user_file::MAX_FILES {
        s.put_user_file(USER, &format!("f{i}"), Some(bytes::Bytes::from_static(b"x"))).await.unwrap();
    }
    let over = s.put_user_file(USER, "one-more", Some(bytes::Bytes::from_static(b"x"))).await;
    assert!(matches!(over, Err(StoreError::TooManyFiles)), "{over:?}");
}

async fn default_mailboxes(s: Stores) {
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

async fn create_delete_rename(s: Stores) {
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

async fn rename_inbox_moves_messages(s: Stores) {
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

async fn subscriptions(s: Stores) {
    s.subscribe(USER, "Sent", true).await.unwrap();
    s.subscribe(USER, "INBOX", true).await.unwrap();
    s.subscribe(USER, "INBOX", false).await.unwrap();
    let list = s.list_mailboxes(USER).await.unwrap();
    assert!(list.iter().find(|m| m.name == "Sent").unwrap().subscribed);
    assert!(!list.iter().find(|m| m.name == "INBOX").unwrap().subscribed);
}

async fn append_and_fetch_bytes(s: Stores) {
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

async fn fetch_ranges_and_missing(s: Stores) {
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

async fn large_and_empty_messages(s: Stores) {
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

async fn flags_and_modseq(s: Stores) {
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

async fn keywords_roundtrip(s: Stores) {
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

async fn conditional_store(s: Stores) {
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
    // A message whose modseq is exactly `since` is unchanged since; no message is unchanged
    // since 0 (modseqs start at 1).
    let flagged = Flags::system(SystemFlags::FLAGGED);
    let (_, msgs) = s.messages(USER, "INBOX").await.unwrap();
    let zero = s.store_flags(USER, "INBOX", &UidSet::all(), FlagOp::Add, &flagged, Some(0)).await.unwrap();
    assert!(zero.is_empty(), "{zero:?}");
    let exact = s.store_flags(USER, "INBOX", &UidSet::all(), FlagOp::Add, &flagged, Some(msgs[1].modseq)).await;
    assert_eq!(exact.unwrap().iter().map(|m| m.uid).collect::<Vec<_>>(), vec![2]);
    assert_eq!(s.messages(USER, "INBOX").await.unwrap().1[0].flags.system, SystemFlags::SEEN);
}

async fn expunge_semantics(s: Stores) {
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

async fn copy_and_move(s: Stores) {
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

async fn status_and_recent(s: Stores) {
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

async fn quota_usage(s: Stores) {
    s.append(USER, "INBOX", msg("12345")).await.unwrap();
    s.append(USER, "Sent", msg("123")).await.unwrap();
    let q = s.quota(USER).await.unwrap();
    assert_eq!((q.messages, q.bytes), (2, 8));
}

async fn watch_changes(s: Stores) {
    s.create_mailbox(USER, "Watched", None).await.unwrap();
    let mut changes = s.watch(USER, "Watched").await.unwrap();
    let writer = s.clone();
    let writing = tokio::spawn(async move {
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
    writing.await.expect("every write succeeded");
}

async fn errors_are_typed(s: Stores) {
    assert!(matches!(s.status(USER, "Missing").await, Err(StoreError::NoSuchMailbox)));
    assert!(matches!(s.append(USER, "Missing", msg("x")).await, Err(StoreError::NoSuchMailbox)));
    assert!(matches!(s.create_mailbox(USER, "a//b", None).await, Err(StoreError::InvalidName(_))));
    assert!(matches!(s.create_mailbox(USER, "../etc", None).await, Err(StoreError::InvalidName(_))));
    assert!(matches!(s.create_mailbox(USER, "INBOX", None).await, Err(StoreError::MailboxExists)));
    assert!(matches!(s.rename_mailbox(USER, "Missing", "X").await, Err(StoreError::NoSuchMailbox)));
    assert!(matches!(s.rename_mailbox(USER, "Sent", "Drafts").await, Err(StoreError::MailboxExists)));
    assert!(matches!(s.list_mailboxes("").await, Err(StoreError::InvalidUser)));
    assert!(matches!(s.list_mailboxes("a/../b").await, Err(StoreError::InvalidUser)));
    // Every call on a mailbox that does not exist.
    let all = UidSet::all();
    let seen = Flags::system(SystemFlags::SEEN);
    let missing = [
        s.messages(USER, "Missing").await.err(),
        s.fetch(USER, "Missing", &all, BodyPart::Full).await.err(),
        s.cache_get(USER, "Missing", &all).await.err(),
        s.store_flags(USER, "Missing", &all, FlagOp::Add, &seen, None).await.err(),
        s.expunge(USER, "Missing", None).await.err(),
        s.claim_recent(USER, "Missing").await.err(),
        s.watch(USER, "Missing").await.err(),
        s.delete_mailbox(USER, "Missing").await.err(),
        s.move_messages(USER, "Missing", "INBOX", &all).await.err(),
    ];
    for (i, error) in missing.into_iter().enumerate() {
        assert!(matches!(error, Some(StoreError::NoSuchMailbox)), "call {i}: {error:?}");
    }
    // Names the store refuses, wherever they are given.
    let deep = ["x"; 17].join("/");
    let long = "n".repeat(513);
    for bad in ["", "a//b", "/a", "a/", "a/../b", "./a", "a\nb", "a\u{7f}", &deep, &long] {
        let refused = [
            s.create_mailbox(USER, bad, None).await.err(),
            s.status(USER, bad).await.err(),
            s.append(USER, bad, msg("x")).await.err(),
            s.rename_mailbox(USER, "Sent", bad).await.err(),
            s.rename_mailbox(USER, "INBOX", bad).await.err(),
            s.subscribe(USER, bad, true).await.err(),
            s.copy(USER, "INBOX", bad, &all).await.err(),
        ];
        for (i, error) in refused.into_iter().enumerate() {
            assert!(matches!(error, Some(StoreError::InvalidName(_))), "{bad:?}, call {i}: {error:?}");
        }
    }
    // User names the store refuses, whatever the call.
    let long = "u".repeat(256);
    for bad in ["", "a/b", "a\u{7}b", &long] {
        let refused = [
            s.list_mailboxes(bad).await.err(),
            s.status(bad, "INBOX").await.err(),
            s.append(bad, "INBOX", msg("x")).await.err(),
            s.create_mailbox(bad, "X", None).await.err(),
            s.subscribe(bad, "INBOX", true).await.err(),
            s.quota(bad).await.err(),
            s.watch(bad, "INBOX").await.err(),
        ];
        for (i, error) in refused.into_iter().enumerate() {
            assert!(matches!(error, Some(StoreError::InvalidUser)), "{bad:?}, call {i}: {error:?}");
        }
    }
    // Nothing a refused call touched came into being.
    let list = s.list_mailboxes(USER).await.unwrap();
    assert_eq!(list.len(), 6, "{list:?}");
}

async fn concurrent_appends_unique_uids(s: Stores) {
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

async fn message_cache(s: Stores) {
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

/// Waits for a watcher's next change (`None`: the stream ended).
async fn next_change(changes: &mut ChangeStream) -> Option<Change> {
    tokio::time::timeout(Duration::from_secs(30), changes.next()).await.expect("a change, or the end, in time")
}

/// The bodies of a mailbox's messages in UID order, each checked against its size.
async fn bodies(s: &dyn MailStore, mailbox: &str) -> Vec<Vec<u8>> {
    let fetched = s.fetch(USER, mailbox, &UidSet::all(), BodyPart::Full).await.unwrap();
    let body = |m: sirms_storage::FetchedMessage| {
        let body = m.body.expect("a body").to_vec();
        assert_eq!(m.meta.size, body.len() as u64);
        body
    };
    fetched.into_iter().map(body).collect()
}

/// What a message is, apart from its modseq: UID, flags, date and size.
fn identity(m: &MessageMeta) -> (u32, Flags, i64, u64) {
    (m.uid, m.flags.clone(), m.internal_date, m.size)
}

fn keywords(names: impl IntoIterator<Item = String>) -> Flags {
    Flags::new(SystemFlags::empty(), names)
}

/// RemoteStore's chunk on the wire: bodies of about this size cross chunk boundaries.
const CHUNK: usize = 64 * 1024;

/// Bytes a careless store would mangle: NULs, bare CRs and LFs, every byte value, and no
/// line end at the end.
fn odd_bytes(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| match i % 7 {
            0 => b'\r',
            3 => b'\n',
            5 => 0,
            _ => (i * 31 % 256) as u8,
        })
        .collect()
}

async fn bytes_are_kept_exactly(s: Stores) {
    let originals: Vec<Vec<u8>> = [1, 2, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5].map(odd_bytes).into();
    for body in &originals {
        s.append(USER, "INBOX", NewMessage::new(body.clone())).await.unwrap();
    }
    assert_eq!(bodies(&*s, "INBOX").await, originals);
    let big = originals.last().unwrap();
    let len = big.len() as u64;
    for (offset, length) in [(0, 1), (CHUNK as u64 - 1, 2), (CHUNK as u64, CHUNK as u64), (len - 1, 10), (len, 1)]
        .into_iter()
        .chain([(0, u64::MAX), (len + 10, 5)])
    {
        let part = BodyPart::Range { offset, length };
        let got = s.fetch(USER, "INBOX", &UidSet::single(6), part).await.unwrap();
        let (from, to) = (offset.min(len) as usize, offset.saturating_add(length).min(len) as usize);
        assert_eq!(got[0].body.as_deref(), Some(&big[from..to]), "{offset}+{length}");
        assert_eq!(got[0].meta.size, len);
    }
    // Nothing the store does to a message changes its bytes.
    let all = Flags::new(SystemFlags::SEEN | SystemFlags::FLAGGED, ["Work".to_string()]);
    s.store_flags(USER, "INBOX", &UidSet::all(), FlagOp::Add, &all, None).await.unwrap();
    assert_eq!(bodies(&*s, "INBOX").await, originals);
    s.copy(USER, "INBOX", "Archive", &UidSet::all()).await.unwrap();
    assert_eq!(bodies(&*s, "Archive").await, originals);
    s.create_mailbox(USER, "Keep", None).await.unwrap();
    s.move_messages(USER, "INBOX", "Keep", &UidSet::all()).await.unwrap();
    s.rename_mailbox(USER, "Keep", "Kept").await.unwrap();
    assert_eq!(bodies(&*s, "Kept").await, originals);
}

async fn uid_validity_and_uids(s: Stores) {
    s.create_mailbox(USER, "A", None).await.unwrap();
    let a = s.status(USER, "A").await.unwrap().uid_validity;
    assert_ne!(a, s.status(USER, "INBOX").await.unwrap().uid_validity);
    // A mailbox deleted and made again numbers from 1 again, under another UIDVALIDITY: no
    // (UIDVALIDITY, UID) ever names two messages.
    for i in 0..2 {
        s.append(USER, "A", msg(&sample(i))).await.unwrap();
    }
    s.delete_mailbox(USER, "A").await.unwrap();
    s.create_mailbox(USER, "A", None).await.unwrap();
    let again = s.status(USER, "A").await.unwrap();
    assert_eq!((again.messages, again.uid_next), (0, 1));
    assert_ne!(again.uid_validity, a);
    let r = s.append(USER, "A", msg("again")).await.unwrap();
    assert_eq!((r.uid_validity, r.uid), (again.uid_validity, 1));

    // Moving the highest messages away frees no UID.
    s.create_mailbox(USER, "B", None).await.unwrap();
    for i in 0..3 {
        let mut m = msg(&sample(i));
        m.flags = Flags::new(SystemFlags::FLAGGED, ["Tag".to_string()]);
        m.internal_date = Some(1_650_000_000 + i as i64);
        s.append(USER, "B", m).await.unwrap();
    }
    s.move_messages(USER, "B", "Archive", &UidSet::single(3)).await.unwrap();
    assert_eq!(s.status(USER, "B").await.unwrap().uid_next, 4);
    assert_eq!(s.append(USER, "B", msg("fourth")).await.unwrap().uid, 4);

    // A renamed mailbox is the same mailbox, its children too: UIDVALIDITY, UIDs, the next
    // UID, flags and dates stay.
    s.create_mailbox(USER, "B/Child", None).await.unwrap();
    s.append(USER, "B/Child", msg("child")).await.unwrap();
    let before = [s.messages(USER, "B").await.unwrap(), s.messages(USER, "B/Child").await.unwrap()];
    for (from, to) in [("B", "C"), ("C", "B")] {
        s.rename_mailbox(USER, from, to).await.unwrap();
        for ((was, was_messages), name) in before.iter().zip([to.to_string(), format!("{to}/Child")]) {
            let (now, messages) = s.messages(USER, &name).await.unwrap();
            assert_eq!((now.uid_validity, now.uid_next, now.messages), (was.uid_validity, was.uid_next, was.messages));
            let ids: Vec<_> = messages.iter().map(identity).collect();
            assert_eq!(ids, was_messages.iter().map(identity).collect::<Vec<_>>(), "{name}");
        }
    }

    // Renaming INBOX empties it but keeps its UIDVALIDITY and UID counter; the new mailbox
    // numbers its messages itself.
    for i in 0..2 {
        s.append(USER, "INBOX", msg(&sample(i))).await.unwrap();
    }
    let inbox = s.status(USER, "INBOX").await.unwrap();
    s.rename_mailbox(USER, "INBOX", "Old").await.unwrap();
    let now = s.status(USER, "INBOX").await.unwrap();
    assert_eq!((now.uid_validity, now.uid_next, now.messages), (inbox.uid_validity, inbox.uid_next, 0));
    assert_eq!(s.append(USER, "INBOX", msg("new")).await.unwrap().uid, inbox.uid_next);
    let (old, messages) = s.messages(USER, "Old").await.unwrap();
    assert_ne!(old.uid_validity, inbox.uid_validity);
    assert_eq!(messages.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![1, 2]);
}

fn kept(text: &str, uid: u32) -> NewMessage {
    NewMessage { keep_uid: Some(uid), ..msg(text) }
}

async fn imports_keep_uid_validity_and_uids(s: Stores) {
    // A mailbox that never held a message takes the source's UIDVALIDITY, and messages keep
    // their UIDs while those are above every UID handed out.
    s.create_mailbox(USER, "Imported", None).await.unwrap();
    assert_eq!(s.adopt_uid_validity(USER, "Imported", 4242).await.unwrap(), 4242);
    assert_eq!(s.status(USER, "Imported").await.unwrap().uid_validity, 4242);
    let uids = [kept("five", 5), kept("three", 3), kept("ten", 10), msg("plain")];
    let mut got = Vec::new();
    for m in uids {
        let r = s.append(USER, "Imported", m).await.unwrap();
        assert_eq!(r.uid_validity, 4242);
        got.push(r.uid);
    }
    // 3 is below UIDNEXT once 5 is there: a client may have seen 5, so 3 would appear behind it.
    assert_eq!(got, vec![5, 6, 10, 11]);
    assert_eq!(s.status(USER, "Imported").await.unwrap().uid_next, 12);
    let (_, metas) = s.messages(USER, "Imported").await.unwrap();
    assert_eq!(metas.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![5, 6, 10, 11]);
    // Once it holds messages, or ever held one, its UIDVALIDITY stays.
    assert_eq!(s.adopt_uid_validity(USER, "Imported", 777).await.unwrap(), 4242);
    s.create_mailbox(USER, "Used", None).await.unwrap();
    let used = s.append(USER, "Used", msg("gone soon")).await.unwrap();
    s.store_flags(USER, "Used", &UidSet::all(), FlagOp::Add, &Flags::new(SystemFlags::DELETED, []), None)
        .await
        .unwrap();
    s.expunge(USER, "Used", None).await.unwrap();
    assert_eq!(s.adopt_uid_validity(USER, "Used", 777).await.unwrap(), used.uid_validity);
    // A fresh INBOX adopts too; a mailbox that does not exist is an error.
    assert_eq!(s.adopt_uid_validity(USER, "INBOX", 99).await.unwrap(), 99);
    assert!(s.adopt_uid_validity(USER, "Nowhere", 1).await.is_err());
}

/// What a client has seen of a mailbox: HIGHESTMODSEQ never goes down, and no message has a
/// modseq above it. Returns the messages and moves `highest` up to the mailbox's.
async fn modseqs(s: &dyn MailStore, mailbox: &str, highest: &mut u64) -> Vec<MessageMeta> {
    let (status, messages) = s.messages(USER, mailbox).await.unwrap();
    assert!(status.highest_modseq >= *highest, "{mailbox}: HIGHESTMODSEQ {} after {highest}", status.highest_modseq);
    for m in &messages {
        assert!(m.modseq > 0 && m.modseq <= status.highest_modseq, "{mailbox}: {m:?} above {status:?}");
    }
    *highest = status.highest_modseq;
    messages
}

async fn modseqs_only_go_up(s: Stores) {
    let mut inbox = 0;
    modseqs(&*s, "INBOX", &mut inbox).await;
    // Every change gives the message a modseq above all reported before.
    for i in 0..3 {
        let before = inbox;
        s.append(USER, "INBOX", msg(&sample(i))).await.unwrap();
        let messages = modseqs(&*s, "INBOX", &mut inbox).await;
        assert!(messages[i].modseq > before);
    }
    let before = inbox;
    let seen = Flags::system(SystemFlags::SEEN);
    let changed = s.store_flags(USER, "INBOX", &UidSet::range(1, 2), FlagOp::Add, &seen, None).await.unwrap();
    assert_eq!(changed.len(), 2);
    assert!(changed[0].modseq > before && changed[1].modseq > changed[0].modseq, "{changed:?}");
    modseqs(&*s, "INBOX", &mut inbox).await;
    assert!(inbox >= changed[1].modseq);
    // Calls that change nothing, or are refused, leave HIGHESTMODSEQ alone.
    let before = inbox;
    assert!(s.store_flags(USER, "INBOX", &UidSet::range(1, 2), FlagOp::Add, &seen, None).await.unwrap().is_empty());
    assert!(s.store_flags(USER, "INBOX", &UidSet::range(50, 60), FlagOp::Add, &seen, None).await.unwrap().is_empty());
    let bad = keywords(["no good".to_string()]);
    assert!(s.store_flags(USER, "INBOX", &UidSet::all(), FlagOp::Add, &bad, None).await.is_err());
    assert!(s.expunge(USER, "INBOX", None).await.unwrap().is_empty());
    modseqs(&*s, "INBOX", &mut inbox).await;
    assert_eq!(inbox, before);
    // An expunge is a change.
    let deleted = Flags::system(SystemFlags::DELETED);
    s.store_flags(USER, "INBOX", &UidSet::single(1), FlagOp::Add, &deleted, None).await.unwrap();
    let before = modseqs(&*s, "INBOX", &mut inbox).await.iter().map(|m| m.modseq).max().unwrap();
    assert_eq!(s.expunge(USER, "INBOX", None).await.unwrap(), vec![1]);
    modseqs(&*s, "INBOX", &mut inbox).await;
    assert!(inbox > before);
    // Copies and moves change both mailboxes.
    let mut archive = 0;
    modseqs(&*s, "Archive", &mut archive).await;
    let (inbox_before, archive_before) = (inbox, archive);
    s.copy(USER, "INBOX", "Archive", &UidSet::single(2)).await.unwrap();
    s.move_messages(USER, "INBOX", "Archive", &UidSet::single(3)).await.unwrap();
    let arrived = modseqs(&*s, "Archive", &mut archive).await;
    assert!(arrived.iter().all(|m| m.modseq > archive_before), "{arrived:?}");
    modseqs(&*s, "INBOX", &mut inbox).await;
    assert!(inbox > inbox_before);
    s.claim_recent(USER, "Archive").await.unwrap();
    modseqs(&*s, "Archive", &mut archive).await;

    // A mailbox renamed away and back has the same UIDVALIDITY, so to a client it is the same
    // mailbox: its modseqs must go on from where they were.
    s.create_mailbox(USER, "R", None).await.unwrap();
    for i in 0..2 {
        s.append(USER, "R", msg(&sample(i))).await.unwrap();
    }
    for op in [FlagOp::Add, FlagOp::Remove, FlagOp::Add, FlagOp::Remove] {
        s.store_flags(USER, "R", &UidSet::all(), op, &seen, None).await.unwrap();
    }
    let mut r = 0;
    modseqs(&*s, "R", &mut r).await;
    s.rename_mailbox(USER, "R", "R2").await.unwrap();
    s.rename_mailbox(USER, "R2", "R").await.unwrap();
    modseqs(&*s, "R", &mut r).await;
    let changed = s.store_flags(USER, "R", &UidSet::single(1), FlagOp::Add, &seen, None).await.unwrap();
    assert!(changed[0].modseq > r, "{changed:?} after HIGHESTMODSEQ {r}");
}

async fn keyword_limits(s: Stores) {
    const MAX_KEYWORDS: usize = sirms_storage::local::maildir::MAX_KEYWORDS;
    let kw = |i: usize| format!("kw{i}");
    s.append(USER, "INBOX", msg("a")).await.unwrap();
    let first_half = keywords((0..MAX_KEYWORDS / 2).map(kw));
    let second_half = keywords((MAX_KEYWORDS / 2..MAX_KEYWORDS).map(kw));
    for half in [first_half, second_half] {
        s.store_flags(USER, "INBOX", &UidSet::all(), FlagOp::Add, &half, None).await.unwrap();
    }
    let (_, messages) = s.messages(USER, "INBOX").await.unwrap();
    assert_eq!(messages[0].flags.keywords.len(), MAX_KEYWORDS);
    // One more keyword is refused, by STORE and by APPEND, and nothing changes.
    let before = s.messages(USER, "INBOX").await.unwrap();
    let one_more = keywords([kw(MAX_KEYWORDS)]);
    let refused = s.store_flags(USER, "INBOX", &UidSet::all(), FlagOp::Add, &one_more, None).await;
    assert!(matches!(refused, Err(StoreError::TooManyKeywords)), "{refused:?}");
    let mut m = msg("b");
    m.flags = one_more.clone();
    assert!(matches!(s.append(USER, "INBOX", m).await, Err(StoreError::TooManyKeywords)));
    assert_eq!(s.messages(USER, "INBOX").await.unwrap(), before);
    // A keyword keeps its place once used, even when no message has it any more.
    s.store_flags(USER, "INBOX", &UidSet::all(), FlagOp::Set, &Flags::default(), None).await.unwrap();
    let refused = s.store_flags(USER, "INBOX", &UidSet::all(), FlagOp::Add, &one_more, None).await;
    assert!(matches!(refused, Err(StoreError::TooManyKeywords)), "{refused:?}");
    s.store_flags(USER, "INBOX", &UidSet::all(), FlagOp::Add, &keywords([kw(0)]), None).await.unwrap();
    // The limit is per mailbox; a copy into a mailbox without room for its keywords is refused.
    let mut m = msg("c");
    m.flags = one_more;
    let r = s.append(USER, "Archive", m).await.unwrap();
    let refused = s.copy(USER, "Archive", "INBOX", &UidSet::single(r.uid)).await;
    assert!(matches!(refused, Err(StoreError::TooManyKeywords)), "{refused:?}");
    assert_eq!(s.status(USER, "INBOX").await.unwrap().messages, 1);
    // Invalid keywords are refused wherever they are given; the longest valid one is taken.
    for bad in ["", "a b", "\\Seen", "(x", "x]", "caf\u{e9}", &"k".repeat(65)] {
        let bad = keywords([bad.to_string()]);
        let refused = s.store_flags(USER, "Archive", &UidSet::all(), FlagOp::Add, &bad, None).await;
        assert!(matches!(refused, Err(StoreError::InvalidKeyword)), "{bad:?}: {refused:?}");
        let mut m = msg("d");
        m.flags = bad.clone();
        let refused = s.append(USER, "Archive", m).await;
        assert!(matches!(refused, Err(StoreError::InvalidKeyword)), "{bad:?}: {refused:?}");
    }
    assert_eq!(s.status(USER, "Archive").await.unwrap().messages, 1);
    let longest = keywords(["k".repeat(64)]);
    assert_eq!(s.store_flags(USER, "Archive", &UidSet::all(), FlagOp::Add, &longest, None).await.unwrap().len(), 1);
}

async fn copy_and_move_within_and_across(s: Stores) {
    for i in 0..2 {
        let mut m = msg(&sample(i));
        m.flags = Flags::new(SystemFlags::ANSWERED, ["Tag".to_string()]);
        s.append(USER, "INBOX", m).await.unwrap();
    }
    let uids =
        async |mailbox: &str| s.messages(USER, mailbox).await.unwrap().1.iter().map(|m| m.uid).collect::<Vec<_>>();
    // Within one mailbox, a copy is a new message and a move renumbers.
    let inbox = s.status(USER, "INBOX").await.unwrap().uid_validity;
    let copied = s.copy(USER, "INBOX", "INBOX", &UidSet::range(1, 2)).await.unwrap();
    assert_eq!((copied.uid_validity, copied.pairs), (inbox, vec![(1, 3), (2, 4)]));
    let moved = s.move_messages(USER, "INBOX", "INBOX", &UidSet::single(1)).await.unwrap();
    assert_eq!(moved.pairs, vec![(1, 5)]);
    assert_eq!(uids("INBOX").await, vec![2, 3, 4, 5]);
    let texts = [sample(1), sample(0), sample(1), sample(0)].map(String::into_bytes);
    assert_eq!(bodies(&*s, "INBOX").await, texts);
    // Copies arrive \Recent in the destination, with their flags.
    assert!(s.claim_recent(USER, "Archive").await.unwrap().is_empty());
    let copied = s.copy(USER, "INBOX", "Archive", &UidSet::all()).await.unwrap();
    assert_eq!(copied.pairs, vec![(2, 1), (3, 2), (4, 3), (5, 4)]);
    assert_eq!(s.status(USER, "Archive").await.unwrap().recent, 4);
    let (_, archived) = s.messages(USER, "Archive").await.unwrap();
    assert!(archived.iter().all(|m| m.flags == Flags::new(SystemFlags::ANSWERED, ["Tag".to_string()])));
    // Nothing to copy or move: no pairs, and the destination's UIDVALIDITY.
    let archive = s.status(USER, "Archive").await.unwrap().uid_validity;
    for result in [
        s.copy(USER, "INBOX", "Archive", &UidSet::range(100, 200)).await.unwrap(),
        s.move_messages(USER, "INBOX", "Archive", &UidSet::range(100, 200)).await.unwrap(),
    ] {
        assert_eq!((result.uid_validity, result.pairs), (archive, vec![]));
    }
    // A move to nowhere, or from nowhere, is refused and leaves the messages where they were.
    let refused = s.move_messages(USER, "INBOX", "Nope", &UidSet::all()).await;
    assert!(matches!(refused, Err(StoreError::NoSuchMailbox)), "{refused:?}");
    let refused = s.move_messages(USER, "Nope", "INBOX", &UidSet::all()).await;
    assert!(matches!(refused, Err(StoreError::NoSuchMailbox)), "{refused:?}");
    assert_eq!(uids("INBOX").await, vec![2, 3, 4, 5]);
}

async fn rename_and_delete_with_children(s: Stores) {
    s.create_mailbox(USER, "a/b/c", None).await.unwrap();
    for (i, name) in ["a", "a/b", "a/b/c"].into_iter().enumerate() {
        s.append(USER, name, msg(&sample(i))).await.unwrap();
    }
    let mut watchers = vec![s.watch(USER, "a").await.unwrap(), s.watch(USER, "a/b/c").await.unwrap()];
    s.rename_mailbox(USER, "a", "x/y").await.unwrap();
    let list: BTreeMap<String, bool> =
        s.list_mailboxes(USER).await.unwrap().into_iter().map(|m| (m.name, m.has_children)).collect();
    assert!(!list.keys().any(|n| n == "a" || n.starts_with("a/")), "{list:?}");
    for (name, children) in [("x", true), ("x/y", true), ("x/y/b", true), ("x/y/b/c", false)] {
        assert_eq!(list.get(name), Some(&children), "{name} in {list:?}");
    }
    for (i, name) in ["x/y", "x/y/b", "x/y/b/c"].into_iter().enumerate() {
        assert_eq!(bodies(&*s, name).await, vec![sample(i).into_bytes()], "{name}");
    }
    // Watchers of the old names are told they are gone, the children's too.
    for changes in &mut watchers {
        assert_eq!(next_change(changes).await, Some(Change::MailboxGone));
        assert_eq!(next_change(changes).await, None);
    }
    // Renames the store refuses.
    let refused = s.rename_mailbox(USER, "x/y", "x/y/b/d").await;
    assert!(matches!(refused, Err(StoreError::InvalidName(_))), "into itself: {refused:?}");
    for taken in ["INBOX", "inbox", "Sent", "x/y", "x"] {
        let refused = s.rename_mailbox(USER, "x/y", taken).await;
        assert!(matches!(refused, Err(StoreError::MailboxExists)), "{taken}: {refused:?}");
    }
    // Deleting goes leaf first.
    for parent in ["x/y", "x"] {
        assert!(matches!(s.delete_mailbox(USER, parent).await, Err(StoreError::HasChildren)), "{parent}");
    }
    for name in ["x/y/b/c", "x/y/b", "x/y", "x"] {
        s.delete_mailbox(USER, name).await.unwrap();
    }
    assert!(matches!(s.delete_mailbox(USER, "x").await, Err(StoreError::NoSuchMailbox)));
    // INBOX may have children, which may go.
    let inbox_children =
        async || s.list_mailboxes(USER).await.unwrap().into_iter().find(|m| m.name == "INBOX").unwrap();
    s.create_mailbox(USER, "inbox/Sub", None).await.unwrap();
    assert!(inbox_children().await.has_children);
    assert!(s.list_mailboxes(USER).await.unwrap().iter().any(|m| m.name == "INBOX/Sub"));
    s.delete_mailbox(USER, "INBOX/Sub").await.unwrap();
    assert!(!inbox_children().await.has_children);
    // Renaming INBOX to a name in use is refused and leaves INBOX as it was.
    s.append(USER, "INBOX", msg("stays")).await.unwrap();
    assert!(matches!(s.rename_mailbox(USER, "INBOX", "Sent").await, Err(StoreError::MailboxExists)));
    assert_eq!(s.status(USER, "INBOX").await.unwrap().messages, 1);
}

async fn special_use_and_subscriptions_by_name(s: Stores) {
    let info = async |name: &str| s.list_mailboxes(USER).await.unwrap().into_iter().find(|m| m.name == name);
    s.create_mailbox(USER, "Receipts", Some(SpecialUse::Flagged)).await.unwrap();
    assert_eq!(info("Receipts").await.unwrap().special_use, Some(SpecialUse::Flagged));
    s.rename_mailbox(USER, "Receipts", "Bills").await.unwrap();
    assert_eq!(info("Bills").await.unwrap().special_use, Some(SpecialUse::Flagged));
    // Subscriptions are names (RFC 3501 6.3.6): one may come before its mailbox and outlive it.
    s.subscribe(USER, "Later", true).await.unwrap();
    assert!(info("Later").await.is_none(), "only mailboxes that exist are listed");
    s.create_mailbox(USER, "Later", None).await.unwrap();
    assert!(info("Later").await.unwrap().subscribed);
    s.delete_mailbox(USER, "Later").await.unwrap();
    s.create_mailbox(USER, "Later", None).await.unwrap();
    assert!(info("Later").await.unwrap().subscribed);
    // A rename leaves the subscription with the old name.
    s.subscribe(USER, "Bills", true).await.unwrap();
    s.rename_mailbox(USER, "Bills", "Paid").await.unwrap();
    assert!(!info("Paid").await.unwrap().subscribed);
    s.create_mailbox(USER, "Bills", None).await.unwrap();
    let bills = info("Bills").await.unwrap();
    assert!(bills.subscribed && bills.special_use.is_none(), "{bills:?}");
    // Subscribing twice, or unsubscribing what never was, is no error; names are canonical.
    s.subscribe(USER, "Bills", true).await.unwrap();
    s.subscribe(USER, "Never", false).await.unwrap();
    s.subscribe(USER, "inbox", true).await.unwrap();
    assert!(info("INBOX").await.unwrap().subscribed);
}

async fn quota_and_size_limits(s: Stores) {
    let quota = async || {
        let q = s.quota(USER).await.unwrap();
        (q.messages, q.bytes)
    };
    s.append(USER, "INBOX", msg("12345")).await.unwrap();
    s.append(USER, "Sent", msg("123")).await.unwrap();
    s.copy(USER, "INBOX", "Archive", &UidSet::single(1)).await.unwrap();
    assert_eq!(quota().await, (3, 13));
    s.move_messages(USER, "Sent", "Trash", &UidSet::single(1)).await.unwrap();
    assert_eq!(quota().await, (3, 13));
    s.store_flags(USER, "INBOX", &UidSet::all(), FlagOp::Add, &Flags::system(SystemFlags::DELETED), None)
        .await
        .unwrap();
    s.expunge(USER, "INBOX", None).await.unwrap();
    assert_eq!(quota().await, (2, 8));
    s.delete_mailbox(USER, "Trash").await.unwrap();
    assert_eq!(quota().await, (1, 5));
    let other = s.quota(OTHER).await.unwrap();
    assert_eq!((other.messages, other.bytes), (0, 0));
    // A message over the store's limit is refused before anything is kept. The zeroed buffer
    // is never touched, so it costs no memory.
    let huge = vec![0u8; MAX_MESSAGE_SIZE as usize + 1];
    let refused = s.append(USER, "INBOX", NewMessage::new(huge)).await;
    assert!(matches!(refused, Err(StoreError::TooLarge)), "{refused:?}");
    assert_eq!(quota().await, (1, 5));
    assert_eq!(s.status(USER, "INBOX").await.unwrap().messages, 0);
}

async fn two_sessions_write_at_once(s: Stores) {
    const EACH: u32 = 30;
    let mut changes = s.second.watch(USER, "INBOX").await.unwrap();
    let writer = async |store: Arc<dyn MailStore>, name: &'static str| {
        let mut mine = Vec::new();
        let seen = Flags::system(SystemFlags::SEEN);
        for i in 0..EACH {
            let r = store.append(USER, "INBOX", msg(&format!("{name} {i}"))).await.unwrap();
            let tag = keywords([name.to_string()]);
            let changed = store.store_flags(USER, "INBOX", &UidSet::single(r.uid), FlagOp::Add, &tag, None).await;
            assert_eq!(changed.unwrap().len(), 1);
            if i % 10 == 9 {
                store.store_flags(USER, "INBOX", &UidSet::all(), FlagOp::Add, &seen, None).await.unwrap();
            }
            mine.push(r.uid);
        }
        mine
    };
    let first = tokio::spawn(writer(s.first.clone(), "first"));
    let second = tokio::spawn(writer(s.second.clone(), "second"));
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    // Each session sees its own UIDs rising; together they are every UID once.
    assert!(first.windows(2).all(|w| w[0] < w[1]) && second.windows(2).all(|w| w[0] < w[1]));
    let mut all: Vec<u32> = first.iter().chain(&second).copied().collect();
    all.sort();
    assert_eq!(all, (1..=2 * EACH).collect::<Vec<_>>());
    let fetched = s.fetch(USER, "INBOX", &UidSet::all(), BodyPart::Full).await.unwrap();
    for m in &fetched {
        let body = String::from_utf8(m.body.as_deref().unwrap().to_vec()).unwrap();
        let writer = if first.contains(&m.meta.uid) { "first" } else { "second" };
        assert!(body.starts_with(writer), "{body} as UID {}", m.meta.uid);
        assert_eq!(m.meta.flags.keywords, vec![writer], "UID {}", m.meta.uid);
    }

    // The second session's watcher saw every change, whoever made it, in modseq order, and
    // ends up where the mailbox is.
    let (status, messages) = s.messages(USER, "INBOX").await.unwrap();
    let mut latest: BTreeMap<u32, MessageMeta> = BTreeMap::new();
    let mut appended = Vec::new();
    let mut modseq = 0;
    while modseq < status.highest_modseq {
        let meta = match next_change(&mut changes).await {
            Some(Change::Appended(meta)) => {
                appended.push(meta.uid);
                meta
            }
            Some(Change::FlagsChanged(meta)) => {
                assert!(latest.contains_key(&meta.uid), "flags of UID {} before it was appended", meta.uid);
                meta
            }
            other => panic!("unexpected change {other:?}"),
        };
        assert!(meta.modseq > modseq, "modseq {} after {modseq}", meta.modseq);
        modseq = meta.modseq;
        latest.insert(meta.uid, meta);
    }
    assert_eq!(appended, all);
    assert_eq!(latest.into_values().collect::<Vec<_>>(), messages);

    // Both claim \Recent at once: each message is recent to one of them.
    let (a, b) = tokio::join!(s.first.claim_recent(USER, "INBOX"), s.second.claim_recent(USER, "INBOX"));
    let mut claimed: Vec<u32> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    claimed.sort();
    assert_eq!(claimed, all);
}

async fn watchers_see_copies_moves_and_renames(s: Stores) {
    for i in 0..2 {
        s.append(USER, "INBOX", msg(&sample(i))).await.unwrap();
    }
    s.create_mailbox(USER, "W", None).await.unwrap();
    let mut w = s.watch(USER, "W").await.unwrap();
    let mut inbox = s.watch(USER, "INBOX").await.unwrap();
    let appended_uid = |change: Option<Change>| match change {
        Some(Change::Appended(m)) => m.uid,
        other => panic!("expected Appended, got {other:?}"),
    };
    s.copy(USER, "INBOX", "W", &UidSet::all()).await.unwrap();
    assert_eq!(appended_uid(next_change(&mut w).await), 1);
    assert_eq!(appended_uid(next_change(&mut w).await), 2);
    s.move_messages(USER, "W", "INBOX", &UidSet::single(1)).await.unwrap();
    assert_eq!(next_change(&mut w).await, Some(Change::Expunged(vec![1])));
    assert_eq!(appended_uid(next_change(&mut inbox).await), 3);
    // Renaming INBOX empties it; INBOX itself stays, and so does its watcher.
    s.rename_mailbox(USER, "INBOX", "Old").await.unwrap();
    assert_eq!(next_change(&mut inbox).await, Some(Change::Expunged(vec![1, 2, 3])));
    s.append(USER, "INBOX", msg("new")).await.unwrap();
    assert_eq!(appended_uid(next_change(&mut inbox).await), 4);
    s.rename_mailbox(USER, "W", "W2").await.unwrap();
    assert_eq!(next_change(&mut w).await, Some(Change::MailboxGone));
    assert_eq!(next_change(&mut w).await, None);
    assert!(matches!(s.watch(USER, "W").await, Err(StoreError::NoSuchMailbox)));
}

async fn a_watcher_behind_gets_every_change_or_lagged(s: Stores) {
    const MESSAGES: u32 = 40;
    // 28 × 40 = 1,120 changes, more than LocalStore keeps for a watcher (1,024).
    const ROUNDS: usize = 28;
    s.create_mailbox(USER, "Busy", None).await.unwrap();
    for i in 0..MESSAGES {
        s.append(USER, "Busy", msg(&sample(i as usize))).await.unwrap();
    }
    let mut changes = s.watch(USER, "Busy").await.unwrap();
    let seen = Flags::system(SystemFlags::SEEN);
    for round in 0..ROUNDS {
        let op = if round % 2 == 0 { FlagOp::Add } else { FlagOp::Remove };
        s.store_flags(USER, "Busy", &UidSet::all(), op, &seen, None).await.unwrap();
    }
    s.delete_mailbox(USER, "Busy").await.unwrap();
    let mut got = Vec::new();
    while let Some(change) = next_change(&mut changes).await {
        got.push(change);
    }
    // Never a change lost without a word: either all of them, or `Lagged` where they went.
    let modseqs: Vec<u64> = got
        .iter()
        .filter_map(|c| match c {
            Change::FlagsChanged(m) => Some(m.modseq),
            _ => None,
        })
        .collect();
    assert!(modseqs.windows(2).all(|w| w[0] < w[1]), "changes out of order");
    if !got.contains(&Change::Lagged) {
        assert_eq!(modseqs.len(), ROUNDS * MESSAGES as usize);
        assert_eq!(got.last(), Some(&Change::MailboxGone));
    }
}

async fn users_are_apart(s: Stores) {
    s.create_mailbox(USER, "Mine", None).await.unwrap();
    s.append(USER, "INBOX", msg("for alice")).await.unwrap();
    assert!(!s.list_mailboxes(OTHER).await.unwrap().iter().any(|m| m.name == "Mine"));
    assert_eq!(s.status(OTHER, "INBOX").await.unwrap().messages, 0);
    assert!(matches!(s.status(OTHER, "Mine").await, Err(StoreError::NoSuchMailbox)));
    s.create_mailbox(OTHER, "Mine", None).await.unwrap();
    s.append(OTHER, "Mine", msg("for bob")).await.unwrap();
    assert_eq!(s.status(USER, "Mine").await.unwrap().messages, 0);
    s.delete_mailbox(USER, "Mine").await.unwrap();
    assert_eq!(s.status(OTHER, "Mine").await.unwrap().messages, 1);
    assert_eq!(s.quota(OTHER).await.unwrap().messages, 1);
}
