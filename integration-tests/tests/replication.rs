//! Replicated mailboxes, the writer's rules, against real storage nodes: a write reaches both
//! copies before it is acknowledged; a replica that fails makes the write fail and leaves no
//! trace on the primary unless the directory already knows the replica is behind; a store
//! that has seen a newer epoch refuses an older one, across a restart; a replica that was
//! away is caught up whole; a write that meets a newer epoch of the same primary goes on at
//! it; a replica that stopped answering does not hold up every write; a flag change that
//! reaches the replica before the message it flags is not lost; a write the replica behind
//! missed while a catch-up ended goes to it at the new epoch; a catch-up raises the
//! primary's floor before its last compare, and resumes from it when its marking failed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sirms_integration_tests::StorageNode;
use sirms_mailnode::cluster::home_store::{Endpoints, HomeStore};
use sirms_mailnode::cluster::unreachable::Unreachable;
use sirms_mailnode::directory::{DirectoryData, LiveDirectory};
use sirms_proto::cluster::{DirectorySnapshot, User};
use sirms_proto::cluster_tls::Credentials;
use sirms_storage::{
    Apply, BodyPart, FlagOp, Flags, LocalStore, MailStore, MessageMeta, NewMessage, RemoteStore, ReplicaStore,
    StoreError, SystemFlags, UidSet,
};
use tempfile::TempDir;

const USER: &str = "alice@example.test";
const HOME: &str = "storage-1";
const REPLICA: &str = "storage-2";

/// A mail node's `HomeStore` for one user homed on one storage node with a replica on another.
struct Cluster {
    dir: TempDir,
    home: StorageNode,
    replica: StorageNode,
    directory: Arc<LiveDirectory>,
    store: HomeStore,
}

fn snapshot(epoch: u64, in_sync: bool) -> DirectoryData {
    DirectoryData::from_snapshot(&DirectorySnapshot {
        domains: vec!["example.test".into()],
        users: vec![User {
            address: USER.into(),
            home: HOME.into(),
            replica: REPLICA.into(),
            epoch,
            replica_in_sync: in_sync,
            ..Default::default()
        }],
        ..Default::default()
    })
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = StorageNode::start(dir.path().join("home"));
        let replica = StorageNode::start(dir.path().join("replica"));
        let directory = Arc::new(LiveDirectory::new(snapshot(1, true)));
        let endpoints: Endpoints = Arc::new(Mutex::new(HashMap::from([
            (HOME.to_string(), home.endpoint()),
            (REPLICA.to_string(), replica.endpoint()),
        ])));
        let own: Arc<dyn ReplicaStore> = Arc::new(LocalStore::open(dir.path().join("node")).expect("open"));
        // No router: a failed replica cannot be marked out of sync, as when none answers.
        let store =
            HomeStore::new("node-a".into(), own, directory.clone(), endpoints, Credentials::token(home.token.clone()));
        let cluster = Cluster { dir, home, replica, directory, store };
        cluster.store.catch_up(USER).await.expect("seed the replica");
        cluster
    }

    /// Another mail node's `HomeStore` for the same user, with its own view of the directory
    /// (starting at `seen`) and of unreachable peers, both handed back to the test to drive.
    fn second_writer(&self, seen: DirectoryData) -> (HomeStore, Arc<LiveDirectory>, Arc<Unreachable>) {
        let directory = Arc::new(LiveDirectory::new(seen));
        let endpoints: Endpoints = Arc::new(Mutex::new(HashMap::from([
            (HOME.to_string(), self.home.endpoint()),
            (REPLICA.to_string(), self.replica.endpoint()),
        ])));
        let own: Arc<dyn ReplicaStore> = Arc::new(LocalStore::open(self.dir.path().join("writer")).expect("open"));
        let unreachable = Arc::new(Unreachable::default());
        let credentials = Credentials::token(self.home.token.clone());
        let store = HomeStore::new("node-b".into(), own, directory.clone(), endpoints, credentials)
            .with_unreachable(unreachable.clone());
        (store, directory, unreachable)
    }

    fn remote(node: &StorageNode) -> RemoteStore {
        RemoteStore::connect(&node.endpoint(), node.token.clone()).expect("connect")
    }

    async fn inbox(node: &StorageNode) -> Vec<MessageMeta> {
        Cluster::remote(node).messages(USER, "INBOX").await.expect("messages").1
    }

    async fn bodies(node: &StorageNode) -> Vec<Vec<u8>> {
        let fetched = Cluster::remote(node).fetch(USER, "INBOX", &UidSet::all(), BodyPart::Full).await.expect("fetch");
        fetched.into_iter().map(|m| m.body.expect("body").to_vec()).collect()
    }
}

fn message(i: usize) -> NewMessage {
    NewMessage::new(format!("From: a@example.test\r\nTo: {USER}\r\nSubject: {i}\r\n\r\nbody {i}\r\n").into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_write_is_on_both_copies() {
    let c = Cluster::start().await;
    for i in 0..5 {
        c.store.append(USER, "INBOX", message(i)).await.expect("append");
    }
    let seen = Flags::system(SystemFlags::SEEN);
    c.store.store_flags(USER, "INBOX", &UidSet::range(2, 3), FlagOp::Add, &seen, None).await.expect("flags");
    let deleted = Flags::system(SystemFlags::DELETED);
    c.store.store_flags(USER, "INBOX", &UidSet::single(5), FlagOp::Add, &deleted, None).await.expect("flags");
    c.store.expunge(USER, "INBOX", None).await.expect("expunge");
    let (home, replica) = (Cluster::inbox(&c.home).await, Cluster::inbox(&c.replica).await);
    assert_eq!(home.iter().map(|m| m.uid).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(home, replica, "same UIDs, flags, MODSEQs and dates on both copies");
    assert_eq!(Cluster::bodies(&c.home).await, Cluster::bodies(&c.replica).await);
    let (a, b) = (
        Cluster::remote(&c.home).status(USER, "INBOX").await.unwrap(),
        Cluster::remote(&c.replica).status(USER, "INBOX").await.unwrap(),
    );
    assert_eq!(a.uid_validity, b.uid_validity);
    assert_eq!(a.uid_next, b.uid_next, "UID 5 was expunged: neither copy may hand it out again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_replica_in_sync_fails_the_write_and_leaves_no_trace() {
    let mut c = Cluster::start().await;
    c.store.append(USER, "INBOX", message(0)).await.expect("append");
    c.replica.process.kill9();
    let refused = c.store.append(USER, "INBOX", message(1)).await;
    assert!(matches!(refused, Err(StoreError::Unavailable(_))), "{refused:?}");
    let home = Cluster::inbox(&c.home).await;
    assert_eq!(home.len(), 1, "the refused message was taken back on the primary: {home:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_known_behind_is_caught_up_whole() {
    let mut c = Cluster::start().await;
    c.store.append(USER, "INBOX", message(0)).await.expect("append");
    // The directory knows the replica is behind: writes are acknowledged on the primary alone.
    c.directory.replace(snapshot(2, false));
    let addr = c.replica.addr;
    c.replica.process.kill9();
    for i in 1..4 {
        c.store.append(USER, "INBOX", message(i)).await.expect("append with the replica away");
    }
    c.store.create_mailbox(USER, "Later", None).await.expect("create with the replica away");
    c.store.append(USER, "Later", message(9)).await.expect("append with the replica away");
    let flagged = Flags::system(SystemFlags::FLAGGED);
    c.store.store_flags(USER, "INBOX", &UidSet::single(1), FlagOp::Add, &flagged, None).await.expect("flags");
    c.replica = StorageNode::start_at(addr, c.dir.path().join("replica"), &c.replica.token);
    let (_, report) = c.store.catch_up(USER).await.expect("catch up");
    assert_eq!(report.appended, 4, "{report:?}");
    assert_eq!(Cluster::inbox(&c.home).await, Cluster::inbox(&c.replica).await);
    assert_eq!(Cluster::bodies(&c.home).await, Cluster::bodies(&c.replica).await);
    let later = |n: &StorageNode| {
        let r = Cluster::remote(n);
        async move { r.messages(USER, "Later").await.expect("Later") }
    };
    let (a, b) = (later(&c.home).await, later(&c.replica).await);
    assert_eq!((a.0.uid_validity, a.1), (b.0.uid_validity, b.1));
    // A second catch-up finds nothing to do.
    assert_eq!(c.store.catch_up(USER).await.expect("again").1.changes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_primary_is_fenced_even_after_a_restart() {
    let mut c = Cluster::start().await;
    c.store.append(USER, "INBOX", message(0)).await.expect("append");
    // A failover elsewhere: the replica was promoted at epoch 3 and took a write.
    let promoted = Cluster::remote(&c.replica);
    promoted.fence(USER, 3).await.expect("fence at the new epoch");
    let addr = c.replica.addr;
    c.replica.process.kill9();
    c.replica = StorageNode::start_at(addr, c.dir.path().join("replica"), &c.replica.token);
    let old = Cluster::remote(&c.replica);
    let stale = old.apply(USER, 1, Apply::Delete { name: "Sent".into() }).await;
    assert!(matches!(stale, Err(StoreError::StaleEpoch(3))), "{stale:?}");
    // The node still at epoch 1 cannot acknowledge a message the new primary will never have.
    let refused = c.store.append(USER, "INBOX", message(1)).await;
    assert!(matches!(refused, Err(StoreError::Unavailable(_))), "{refused:?}");
    assert_eq!(Cluster::inbox(&c.home).await.len(), 1, "the refused message was taken back");
    assert_eq!(Cluster::inbox(&c.replica).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_meets_a_newer_epoch_of_the_same_primary_goes_on() {
    let c = Cluster::start().await;
    c.store.append(USER, "INBOX", message(0)).await.expect("append");
    // Another writer of this primary marked the replica behind, and it was caught up again:
    // the replica has seen epoch 3, which reaches this node's directory a moment later.
    Cluster::remote(&c.replica).fence(USER, 3).await.expect("fence at the new epoch");
    let directory = c.directory.clone();
    let later = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        directory.replace(snapshot(3, true));
    });
    c.store.append(USER, "INBOX", message(1)).await.expect("the write goes on at epoch 3");
    later.await.expect("directory update");
    assert_eq!(Cluster::inbox(&c.home).await, Cluster::inbox(&c.replica).await);
    assert_eq!(Cluster::bodies(&c.replica).await.len(), 2, "the replica holds both messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_stopped_answering_does_not_hold_up_every_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = StorageNode::start(dir.path().join("home"));
    // The replica's address takes connections (the kernel's backlog) but never answers, as a
    // node cut off or frozen does.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoints: Endpoints = Arc::new(Mutex::new(HashMap::from([
        (HOME.to_string(), home.endpoint()),
        (REPLICA.to_string(), format!("http://{}", silent.local_addr().expect("addr"))),
    ])));
    // The directory already knows the replica is behind: writes are acknowledged alone.
    let directory = Arc::new(LiveDirectory::new(snapshot(2, false)));
    let own: Arc<dyn ReplicaStore> = Arc::new(LocalStore::open(dir.path().join("node")).expect("open"));
    let store = HomeStore::new("node-a".into(), own, directory, endpoints, Credentials::token(home.token.clone()));
    let first = std::time::Instant::now();
    store.append(USER, "INBOX", message(0)).await.expect("append with the replica silent");
    let first = first.elapsed();
    // The silent connection is given up by its keepalive (about 4 s), not the 15 s a record
    // may take.
    assert!(first < std::time::Duration::from_secs(10), "the first write waited {first:?}");
    let rest = std::time::Instant::now();
    for i in 1..6 {
        store.append(USER, "INBOX", message(i)).await.expect("append with the replica silent");
    }
    let rest = rest.elapsed();
    assert!(rest < std::time::Duration::from_secs(2), "5 more writes took {rest:?}: each waited for the replica");
    assert_eq!(Cluster::inbox(&home).await.len(), 6);
    assert!(store.replica_unreachable(REPLICA));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_change_that_overtakes_its_message_is_not_lost() {
    let c = Cluster::start().await;
    // A delivery on the primary whose record has not reached the replica yet (another writer's,
    // still on its way): a client already sees it there and flags it.
    let primary = Cluster::remote(&c.home);
    let uid = primary.append(USER, "INBOX", message(0)).await.expect("append on the primary").uid;
    let seen = Flags::system(SystemFlags::SEEN);
    c.store.store_flags(USER, "INBOX", &UidSet::single(uid), FlagOp::Add, &seen, None).await.expect("flags");
    let replica = Cluster::inbox(&c.replica).await;
    assert_eq!(replica, Cluster::inbox(&c.home).await, "the flagged message is on the replica, flags and all");
    assert!(replica[0].flags.system.contains(SystemFlags::SEEN), "{replica:?}");
    // The late record changes nothing.
    let late = Cluster::remote(&c.replica);
    let meta = replica[0].clone();
    let uid_validity = late.status(USER, "INBOX").await.expect("status").uid_validity;
    let record = Apply::Append {
        mailbox: "INBOX".into(),
        uid_validity,
        meta: MessageMeta { flags: Flags::default(), ..meta },
        bytes: Cluster::bodies(&c.home).await[0].clone().into(),
    };
    late.apply(USER, 1, record).await.expect("late append");
    assert_eq!(Cluster::inbox(&c.replica).await, Cluster::inbox(&c.home).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_replica_missed_while_a_catch_up_ended_goes_to_it_at_the_new_epoch() {
    let c = Cluster::start().await;
    // A second writer (another mail node) that knows the replica is behind at epoch 2.
    let (store, directory, unreachable) = c.second_writer(snapshot(2, false));
    store.append(USER, "INBOX", message(1)).await.expect("append at epoch 2");
    // The replica failed one of this writer's calls a moment ago, so its next write skips it.
    // Meanwhile the home's catch-up ended: it marked the replica in sync (epoch 3) and raised
    // the primary's floor to 3 before its last compare. This writer's directory shows epoch 3
    // a moment later, by when the replica answers again.
    unreachable.failed(REPLICA);
    Cluster::remote(&c.home).fence(USER, 3).await.expect("the catch-up's fence");
    let later = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        directory.replace(snapshot(3, true));
        unreachable.note(REPLICA, true);
    });
    // Acknowledged alone at epoch 2, this message would be on the primary only while the
    // directory counts the replica as a full copy: a failover would lose it.
    store.append(USER, "INBOX", message(2)).await.expect("the write goes on at epoch 3");
    later.await.expect("directory update");
    assert_eq!(Cluster::inbox(&c.home).await, Cluster::inbox(&c.replica).await, "both copies hold the write");
    assert_eq!(Cluster::bodies(&c.replica).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_raises_the_primary_floor_before_its_last_compare_and_resumes_from_it() {
    let c = Cluster::start().await;
    c.directory.replace(snapshot(2, false));
    // Another mail node writing for the user, which knows the replica is behind at epoch 2.
    let (writer, _, unreachable) = c.second_writer(snapshot(2, false));
    writer.append(USER, "INBOX", message(1)).await.expect("append at epoch 2, on both copies");
    // The replica missed a message the home took meanwhile.
    Cluster::remote(&c.home).append(USER, "INBOX", message(0)).await.expect("on the home alone");
    let (route, report) = c.store.ready_to_mark_in_sync(USER).await.expect("ready");
    assert_eq!((route.epoch, report.appended), (2, 1));
    assert_eq!(Cluster::inbox(&c.replica).await, Cluster::inbox(&c.home).await, "the replica holds it");
    assert_eq!(Cluster::remote(&c.home).fence(USER, 0).await.expect("floor"), 3, "raised to the marking's epoch");

    // Before the directory shows epoch 3, a write at epoch 2 that the replica skips must not
    // be acknowledged on the home alone: the home could die the next moment, and the directory
    // would then count the replica, promoted, as a full copy without it.
    unreachable.failed(REPLICA);
    let refused = writer.append(USER, "INBOX", message(2)).await;
    assert!(matches!(refused, Err(StoreError::Unavailable(_))), "{refused:?}");
    assert_eq!(Cluster::inbox(&c.home).await.len(), 2, "the refused write was taken back");

    // The marking did not go through (no router here): the next catch-up resumes at the
    // raised floor instead of failing on it for ever.
    let (route, report) = c.store.ready_to_mark_in_sync(USER).await.expect("resumed");
    assert_eq!((route.epoch, report.appended), (2, 0));
    assert_eq!(Cluster::inbox(&c.replica).await, Cluster::inbox(&c.home).await);
}
