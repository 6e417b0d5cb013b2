//! The Store client against a real storage node: one that freezes mid-append (SIGSTOP) fails
//! the call within the client's keepalive instead of holding its caller until it thaws; the
//! serving side stores an append once however often it comes under one idempotency key, across
//! a restart of the store too; and
//! replica appends sent together in batches each get their own outcome.

use std::time::Duration;

use sirms_integration_tests::StorageNode;
use sirms_proto::store::store_client::StoreClient;
use sirms_proto::store::{AppendChunk, AppendHeader, append_chunk};
use sirms_proto::token::TokenInterceptor;
use sirms_storage::{
    Apply, BodyPart, Flags, MailStore, MessageMeta, NewMessage, RemoteStore, ReplicaStore, StoreError, UidSet,
};
use tonic::service::interceptor::InterceptedService;

const USER: &str = "alice@example.test";

fn signal(node: &StorageNode, sig: libc::c_int) {
    // SAFETY: a plain syscall on the pid of a child this test started.
    let rc = unsafe { libc::kill(node.process.pid() as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({sig})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_to_a_home_that_froze_fails_while_it_is_still_frozen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = StorageNode::start(dir.path().join("store"));
    let store = RemoteStore::connect(&node.endpoint(), node.token.clone()).expect("connect");
    store.append(USER, "INBOX", NewMessage::new(&b"Subject: first\r\n\r\none\r\n"[..])).await.expect("warm up");

    signal(&node, libc::SIGSTOP);
    let frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let thaw = tokio::spawn({
        let (pid, frozen) = (node.process.pid(), frozen.clone());
        async move {
            tokio::time::sleep(Duration::from_secs(12)).await;
            frozen.store(false, std::sync::atomic::Ordering::SeqCst);
            // SAFETY: as in `signal`.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
        }
    });
    let appended = store.append(USER, "INBOX", NewMessage::new(&b"Subject: second\r\n\r\ntwo\r\n"[..])).await;
    let still_frozen = frozen.load(std::sync::atomic::Ordering::SeqCst);
    thaw.await.expect("thaw");
    assert!(matches!(appended, Err(StoreError::Unavailable(_))), "{appended:?}");
    assert!(still_frozen, "the append waited for the node to thaw instead of failing");
    // The node answers again, and the message is there at most once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, _) = store.messages(USER, "INBOX").await.expect("messages");
    assert!((1..=2).contains(&status.messages), "{status:?}");
}

/// A raw Store client (the retry logic of `RemoteStore` left out), and an append of one small
/// message to alice's INBOX under idempotency `key`.
fn raw_client(node: &StorageNode) -> StoreClient<InterceptedService<tonic::transport::Channel, TokenInterceptor>> {
    let channel = tonic::transport::Endpoint::from_shared(node.endpoint()).expect("endpoint").connect_lazy();
    StoreClient::with_interceptor(channel, TokenInterceptor::new(&node.token).expect("token"))
}

fn keyed_append(key: &str) -> impl futures::Stream<Item = AppendChunk> + use<> {
    let body = b"Subject: once\r\n\r\nbody\r\n";
    let header = AppendHeader {
        user: USER.into(),
        mailbox: "INBOX".into(),
        size: body.len() as u64,
        idempotency_key: key.into(),
        ..Default::default()
    };
    futures::stream::iter(vec![
        AppendChunk { part: Some(append_chunk::Part::Header(header)) },
        AppendChunk { part: Some(append_chunk::Part::Data(body.to_vec().into())) },
    ])
}

/// The serving side: two appends under one key store one message, and the second is answered
/// with the first's UID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_appends_under_one_key_store_one_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = StorageNode::start(dir.path().join("store"));
    let mut client = raw_client(&node);
    let first = client.append(keyed_append("k-1")).await.expect("first").into_inner();
    let again = client.append(keyed_append("k-1")).await.expect("again").into_inner();
    let other = client.append(keyed_append("k-2")).await.expect("another key").into_inner();
    assert_eq!((first.uid, again.uid, other.uid), (1, 1, 2));
    let store = RemoteStore::connect(&node.endpoint(), node.token.clone()).expect("connect");
    assert_eq!(store.messages(USER, "INBOX").await.expect("messages").0.messages, 2);
}

/// A store killed after it committed an append (here: after it answered, which the client may
/// never have seen) and started again still knows the key: the retry gets the first UID and no
/// second copy, for a plain key and for one written as a hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_the_store_restarted_stores_nothing_twice() {
    const ODD_KEY: &str = "k/3,with:odd chars";
    let dir = tempfile::tempdir().expect("tempdir");
    let node = StorageNode::start(dir.path().join("store"));
    let mut client = raw_client(&node);
    let first = client.append(keyed_append("k-1")).await.expect("first").into_inner();
    client.append(keyed_append("k-2")).await.expect("second");
    let odd = client.append(keyed_append(ODD_KEY)).await.expect("third").into_inner();
    let (addr, token) = (node.addr, node.token.clone());
    signal(&node, libc::SIGKILL);
    drop(node);
    let node = StorageNode::start_at(addr, dir.path().join("store"), &token);
    let mut client = raw_client(&node);
    let again = client.append(keyed_append("k-1")).await.expect("retry").into_inner();
    let odd_again = client.append(keyed_append(ODD_KEY)).await.expect("odd retry").into_inner();
    let new = client.append(keyed_append("k-4")).await.expect("a new key").into_inner();
    assert_eq!((again.uid, again.uid_validity), (first.uid, first.uid_validity), "the retry is the first append");
    assert_eq!((odd.uid, odd_again.uid), (3, 3));
    assert_eq!(new.uid, 4);
    let store = RemoteStore::connect(&node.endpoint(), node.token.clone()).expect("connect");
    assert_eq!(store.messages(USER, "INBOX").await.expect("messages").0.messages, 4);
}

/// Many writers' replica appends at once through one client: they go in batches (one call for
/// those that waited behind another), and each writer is told its own record's outcome — a
/// stale epoch among them is refused alone, and every other message is stored under its UID,
/// byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_appends_sent_together_each_get_their_own_outcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = StorageNode::start(dir.path().join("store"));
    let store = RemoteStore::connect(&node.endpoint(), node.token.clone()).expect("connect");
    store.fence(USER, 2).await.expect("fence at epoch 2");
    let mailbox = Apply::Mailbox { name: "INBOX".into(), uid_validity: 777, special_use: None };
    store.apply(USER, 2, mailbox).await.expect("the primary's INBOX");

    const WRITERS: u32 = 60;
    const STALE: u32 = 31;
    let body = |uid: u32| format!("Subject: message {uid}\r\n\r\n{}\r\n", "x".repeat(uid as usize * 37)).into_bytes();
    let writes = (1..=WRITERS).map(|uid| {
        let store = store.clone();
        async move {
            let bytes = body(uid);
            let meta = MessageMeta {
                uid,
                flags: Flags::default(),
                internal_date: 1_700_000_000 + i64::from(uid),
                size: bytes.len() as u64,
                modseq: u64::from(uid),
            };
            let record = Apply::Append { mailbox: "INBOX".into(), uid_validity: 777, meta, bytes: bytes.into() };
            let epoch = if uid == STALE { 1 } else { 2 };
            (uid, store.apply(USER, epoch, record).await)
        }
    });
    for (uid, outcome) in futures::future::join_all(writes).await {
        if uid == STALE {
            assert!(matches!(outcome, Err(StoreError::StaleEpoch(2))), "uid {uid}: {outcome:?}");
        } else {
            assert!(outcome.is_ok(), "uid {uid}: {outcome:?}");
        }
    }
    let all = UidSet::range(1, WRITERS);
    let stored = store.fetch(USER, "INBOX", &all, BodyPart::Full).await.expect("fetch");
    let uids: Vec<u32> = stored.iter().map(|m| m.meta.uid).collect();
    let expected: Vec<u32> = (1..=WRITERS).filter(|&uid| uid != STALE).collect();
    assert_eq!(uids, expected);
    for message in stored {
        assert_eq!(message.body.as_deref(), Some(&body(message.meta.uid)[..]), "uid {}", message.meta.uid);
    }
}
