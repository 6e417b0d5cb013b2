//! One conformance suite for the cluster directory, run against both of its stores: the
//! router's own sled database and a real etcd (Debian's `etcd`, started by the test). "Two
//! routers" are two directories over the same store: the same one for sled (one router owns
//! its database), two separate etcd clients for etcd.

use std::sync::Arc;
use std::time::Duration;

use sirms_integration_tests::etcd::EtcdCluster;
use sirms_proto::cluster::{
    Alias, DirectorySnapshot, DkimKey, DomainQuota, GreylistAnswer, GreylistQuery, Group, Invite, Node, NodeLoad,
    ReplicaState, User,
};
use sirms_router::directory::etcd::EtcdStore;
use sirms_router::directory::{ClusterDirectory, Copies, DirectoryError};
use sirms_router::etcd::EtcdClient;
use sirms_router::failover::{self, Liveness};
use tempfile::TempDir;

/// What backs the directories of one test.
enum Backing {
    Sled(TempDir),
    Etcd(EtcdCluster, String),
}

struct Harness {
    a: Arc<ClusterDirectory>,
    b: Arc<ClusterDirectory>,
    backing: Backing,
}

async fn loaded(dir: ClusterDirectory) -> Arc<ClusterDirectory> {
    let mut state = dir.subscribe();
    tokio::time::timeout(Duration::from_secs(10), state.wait_for(|s| s.loaded))
        .await
        .expect("the directory is read within 10 s")
        .expect("directory follower alive");
    Arc::new(dir)
}

fn etcd_directory(endpoints: &[String], prefix: &str) -> ClusterDirectory {
    let client = EtcdClient::new(endpoints, Duration::from_millis(1500)).expect("etcd client");
    let (store, state) = EtcdStore::open(Arc::new(client), prefix);
    ClusterDirectory::new(Box::new(store), state)
}

impl Harness {
    async fn sled() -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = loaded(ClusterDirectory::open(&dir.path().join("directory")).expect("open sled")).await;
        Harness { b: a.clone(), a, backing: Backing::Sled(dir) }
    }

    async fn etcd() -> Harness {
        let cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(1)).await.expect("etcd starts");
        let prefix = "/sirms-test".to_string();
        let a = loaded(etcd_directory(&cluster.endpoints(), &prefix)).await;
        let b = loaded(etcd_directory(&cluster.endpoints(), &prefix)).await;
        Harness { a, b, backing: Backing::Etcd(cluster, prefix) }
    }

    /// The directory as a router started afresh reads it.
    async fn reopen(self) -> Harness {
        let Harness { a, b, backing } = self;
        drop((a, b));
        match backing {
            Backing::Sled(dir) => {
                // sled frees its database lock when the last handle goes; its flusher thread may hold one briefly.
                let mut opened = None;
                for _ in 0..50 {
                    match ClusterDirectory::open(&dir.path().join("directory")) {
                        Ok(d) => {
                            opened = Some(d);
                            break;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
                let a = loaded(opened.expect("sled reopens")).await;
                Harness { b: a.clone(), a, backing: Backing::Sled(dir) }
            }
            Backing::Etcd(cluster, prefix) => {
                let a = loaded(etcd_directory(&cluster.endpoints(), &prefix)).await;
                let b = loaded(etcd_directory(&cluster.endpoints(), &prefix)).await;
                Harness { a, b, backing: Backing::Etcd(cluster, prefix) }
            }
        }
    }
}

fn node(id: &str, storage_only: bool) -> Node {
    Node { id: id.into(), host: "127.0.0.1".into(), smtp_port: 25, storage_only, ..Default::default() }
}

/// A mail node that serves a Store endpoint: it can hold mailboxes for others.
fn store_node(id: &str) -> Node {
    Node { store_endpoint: format!("http://{id}:7400"), ..node(id, false) }
}

fn user(address: &str) -> User {
    User { address: address.into(), password_hash: "h".into(), ..Default::default() }
}

/// Waits (bounded) until `dir` has seen `version`.
async fn sees(dir: &ClusterDirectory, version: u64) {
    let mut state = dir.subscribe();
    tokio::time::timeout(Duration::from_secs(5), state.wait_for(|s| s.version >= version))
        .await
        .unwrap_or_else(|_| panic!("version {version} not seen within 5 s (at {})", dir.current().version))
        .expect("follower alive");
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Harness::sled().await).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Harness::etcd().await).await;
                }
            )*
        }
    };
}

conformance!(
    changes_persist_and_bump_the_version,
    refuses_bad_changes,
    removals_need_the_record,
    every_router_sees_every_change,
    racing_admins_lose_no_change,
    registration_keeps_what_the_admin_set,
    users_keep_their_hash_and_home,
    an_invitation_is_taken_once_and_never_sent_to_nodes,
    new_users_get_a_replica_on_another_store,
    one_copy_places_no_replica,
    a_new_home_raises_the_epoch_and_clears_in_sync,
    replica_state_is_a_compare_and_swap,
    a_home_that_lost_its_mail_promotes_only_an_in_sync_replica,
    replica_state_over_the_directory_service,
    failover_promotes_only_a_live_in_sync_replica,
    routers_racing_to_fail_over_swap_once,
    domain_quotas_persist_and_reach_the_snapshot,
    greylisting_records_are_shared_and_survive_a_restart,
    greylisting_records_expire_and_are_pruned,
);

/// A greylisting query for triplet `t` of network `n`, with a 2 s delay (times are whole
/// seconds: a shorter one could be over between two calls).
fn grey(t: u8, n: u8, pending_ttl_secs: u64) -> GreylistQuery {
    GreylistQuery {
        triplet: vec![t; 32].into(),
        network: vec![n; 32].into(),
        delay_secs: 2,
        pending_ttl_secs,
        pass_ttl_secs: 3600,
        network_passes: 2,
    }
}

async fn greylisting_records_are_shared_and_survive_a_restart(h: Harness) {
    let reason = |a: GreylistAnswer| (a.pass, a.reason);
    let (q1, q2, q3) = (grey(1, 9, 60), grey(2, 9, 60), grey(3, 9, 60));
    assert_eq!(reason(h.a.greylist(&q1).await.unwrap()), (false, "new".into()));
    // The other router knows the triplet: deferred for what is left of the delay.
    let early = h.b.greylist(&q1).await.unwrap();
    assert_eq!((early.pass, early.reason.as_str()), (false, "early"));
    assert!((1..=2).contains(&early.retry_in_secs), "{early:?}");
    assert_eq!(reason(h.b.greylist(&q2).await.unwrap()), (false, "new".into()));
    assert_eq!(h.a.current().version, 0, "greylisting is not a directory change");
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(reason(h.b.greylist(&q1).await.unwrap()), (true, "retried".into()));
    assert_eq!(reason(h.a.greylist(&q1).await.unwrap()), (true, "known".into()));
    assert_eq!(reason(h.a.greylist(&q2).await.unwrap()), (true, "retried".into()));
    // Two passed triplets of network 9: a third of it passes at once.
    assert_eq!(reason(h.b.greylist(&q3).await.unwrap()), (true, "network".into()));
    let q4 = GreylistQuery { delay_secs: 600, ..grey(4, 8, 60) };
    assert_eq!(reason(h.b.greylist(&q4).await.unwrap()), (false, "new".into()), "another network");
    let bad = GreylistQuery { triplet: vec![1; 5].into(), ..grey(1, 9, 60) };
    assert!(matches!(h.a.greylist(&bad).await, Err(DirectoryError::Invalid(_))));
    let h = h.reopen().await;
    // Asked without the network rule, so that the triplet's own record answers.
    let q1 = GreylistQuery { network_passes: 0, ..q1 };
    assert_eq!(reason(h.b.greylist(&q1).await.unwrap()), (true, "known".into()), "remembered after a restart");
    assert_eq!(reason(h.b.greylist(&q3).await.unwrap()), (true, "network".into()), "the network too");
    assert_eq!(reason(h.a.greylist(&q4).await.unwrap()), (false, "early".into()), "pending too");
    assert!(h.a.snapshot().users.is_empty() && h.a.current().version == 0);
}

async fn greylisting_records_expire_and_are_pruned(h: Harness) {
    // Triplets 1 and 2 pending for 2 s, 3 for a minute, all of network 9.
    for t in [1, 2] {
        assert!(!h.a.greylist(&grey(t, 9, 2)).await.unwrap().pass);
    }
    assert!(!h.b.greylist(&grey(3, 9, 60)).await.unwrap().pass);
    assert_eq!(h.a.prune_greylist().await.unwrap(), 3, "nothing ran out yet");
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(h.b.prune_greylist().await.unwrap(), 1, "the two short-lived ones went");
    // Gone: asked again, triplet 1 starts over; triplet 3 passes.
    assert_eq!(h.a.greylist(&grey(1, 9, 2)).await.unwrap().reason, "new");
    assert_eq!(h.a.greylist(&grey(3, 9, 60)).await.unwrap().reason, "retried");
    assert_eq!(h.a.prune_greylist().await.unwrap(), 3, "triplets 1 and 3 and network 9");
}

async fn domain_quotas_persist_and_reach_the_snapshot(h: Harness) {
    let d = h.a.clone();
    let quota = |domain: &str, bytes, messages| DomainQuota {
        domain: domain.into(),
        quota_bytes: bytes,
        quota_messages: messages,
    };
    assert!(matches!(d.set_domain_quota(&quota("example.test", 1, 0)).await, Err(DirectoryError::UnknownDomain(_))));
    d.put_domain("example.test").await.unwrap();
    d.put_domain("other.test").await.unwrap();
    d.set_domain_quota(&quota("Example.TEST", 1 << 30, 5000)).await.unwrap();
    // Adding the domain again (a restore, a script) keeps its quota.
    d.put_domain("example.test").await.unwrap();
    drop(d);
    let h = h.reopen().await;
    let snap = h.a.snapshot();
    assert_eq!(snap.domains, vec!["example.test", "other.test"]);
    assert_eq!(snap.domain_quotas, vec![quota("example.test", 1 << 30, 5000)], "only domains with a quota");
    // Both limits 0: no quota; the domain stays.
    h.a.set_domain_quota(&quota("example.test", 0, 0)).await.unwrap();
    let snap = h.a.snapshot();
    assert!(snap.domain_quotas.is_empty(), "{:?}", snap.domain_quotas);
    assert_eq!(snap.domains, vec!["example.test", "other.test"]);
}

async fn changes_persist_and_bump_the_version(h: Harness) {
    let d = h.a.clone();
    assert_eq!(d.current().version, 0);
    d.put_node(node("node1", false)).await.unwrap();
    d.put_node(node("store1", true)).await.unwrap();
    d.put_domain("Example.TEST").await.unwrap();
    d.put_user(user("Alice@Example.test")).await.unwrap();
    assert_eq!(d.current().version, 4);
    d.put_route("192.0.2.0/24", "node1").await.unwrap();
    d.put_alias(Alias { address: "team@example.test".into(), targets: vec!["alice@example.test".into()] })
        .await
        .unwrap();
    d.put_group(Group { name: "g1".into(), members: vec!["node1".into()] }).await.unwrap();
    d.put_transport("partner.test", "relay.partner.test:2525").await.unwrap();
    drop(d);

    let h = h.reopen().await;
    let snap = h.a.snapshot();
    assert_eq!(snap.version, 8);
    assert_eq!(snap.domains, vec!["example.test"]);
    assert_eq!(snap.users[0].address, "alice@example.test");
    // With a storage node in the cluster, new users are homed there.
    assert_eq!(snap.users[0].home, "store1");
    assert_eq!(snap.aliases[0].targets, vec!["alice@example.test"]);
    assert_eq!(snap.transports[0].relay, "relay.partner.test:2525");
    assert_eq!(h.a.routes()[0].target, "node1");
    assert_eq!(h.a.groups()[0].members, vec!["node1"]);
    assert_eq!(snap.nodes.iter().find(|n| n.id == "node1").unwrap().weight, 100);
}

async fn refuses_bad_changes(h: Harness) {
    let d = &h.a;
    assert!(matches!(d.put_user(user("a@nowhere.test")).await, Err(DirectoryError::UnknownDomain(_))));
    d.put_domain("example.test").await.unwrap();
    assert!(matches!(d.put_user(user("a@example.test")).await, Err(DirectoryError::Invalid(_))), "no node to home on");
    assert!(matches!(d.put_route("10.0.0.1/8", "node1").await, Err(DirectoryError::Cidr(_))));
    assert!(matches!(d.put_route("10.0.0.0/8", "not a target").await, Err(DirectoryError::Target(_))));
    assert!(matches!(d.put_node(node("bad name", false)).await, Err(DirectoryError::Name(_))));
    assert!(matches!(d.set_drained("ghost", true).await, Err(DirectoryError::UnknownNode(_))));
    assert!(matches!(d.put_domain("a b").await, Err(DirectoryError::Invalid(_))));
    assert!(matches!(d.put_user(user("no-at-sign")).await, Err(DirectoryError::Address(_))));
    let key = DkimKey { domain: "example.test".into(), selector: "s1".into(), private_key_pem: "nope".into() };
    assert!(matches!(d.put_dkim_key(key).await, Err(DirectoryError::Invalid(_))));
    let foreign = DkimKey { domain: "other.test".into(), selector: "s1".into(), private_key_pem: "x".into() };
    assert!(matches!(d.put_dkim_key(foreign).await, Err(DirectoryError::UnknownDomain(_))));
    assert!(matches!(d.put_transport("partner.test", "relay:0").await, Err(DirectoryError::Invalid(_))));
    // A refused change changes nothing, the version included.
    assert_eq!(d.current().version, 1);
}

async fn removals_need_the_record(h: Harness) {
    let d = &h.a;
    assert!(matches!(d.remove_user("x@example.test").await, Err(DirectoryError::NotFound(_))));
    assert!(matches!(d.remove_node("node1").await, Err(DirectoryError::NotFound(_))));
    assert!(matches!(d.remove_route("192.0.2.0/24").await, Err(DirectoryError::NotFound(_))));
    assert!(matches!(d.remove_domain("example.test").await, Err(DirectoryError::NotFound(_))));
    d.put_node(node("node1", false)).await.unwrap();
    d.put_domain("example.test").await.unwrap();
    d.put_user(user("bob@example.test")).await.unwrap();
    d.put_route("192.0.2.0/24", "node1").await.unwrap();
    d.remove_route("192.0.2.0/24").await.unwrap();
    d.remove_user("BOB@example.test").await.unwrap();
    d.remove_node("node1").await.unwrap();
    let snap = d.snapshot();
    assert!(snap.users.is_empty() && snap.nodes.is_empty() && d.routes().is_empty(), "{snap:?}");
    assert_eq!(snap.version, 7);
}

async fn every_router_sees_every_change(h: Harness) {
    let follower = h.b.subscribe();
    h.a.put_node(node("node1", false)).await.unwrap();
    h.a.set_drained("node1", true).await.unwrap();
    sees(&h.b, 2).await;
    assert!(h.b.node("node1").expect("node1 on the other router").drained);
    assert!(follower.has_changed().unwrap());
    // And back the other way: a change through b shows on a.
    h.b.set_drained("node1", false).await.unwrap();
    sees(&h.a, 3).await;
    assert!(!h.a.node("node1").unwrap().drained);
    assert_eq!(h.a.snapshot(), h.b.snapshot());
}

async fn racing_admins_lose_no_change(h: Harness) {
    h.a.put_node(node("node1", false)).await.unwrap();
    h.a.put_domain("example.test").await.unwrap();
    let per_router = 15;
    let mut tasks = Vec::new();
    for (name, dir) in [("a", h.a.clone()), ("b", h.b.clone())] {
        for i in 0..per_router {
            let dir = dir.clone();
            tasks.push(tokio::spawn(async move { dir.put_user(user(&format!("{name}{i}@example.test"))).await }));
        }
    }
    for task in tasks {
        task.await.expect("task").expect("every change commits, planned again when it loses a race");
    }
    let want = 2 + 2 * per_router as u64;
    sees(&h.a, want).await;
    sees(&h.b, want).await;
    let snap = h.a.snapshot();
    assert_eq!(snap.users.len(), 2 * per_router, "{:?}", snap.users.iter().map(|u| &u.address).collect::<Vec<_>>());
    assert_eq!(snap.version, want, "one version per change");
    assert_eq!(h.b.snapshot(), snap);
}

async fn registration_keeps_what_the_admin_set(h: Harness) {
    let d = &h.a;
    d.put_node(Node { weight: 7, ..node("node1", false) }).await.unwrap();
    d.set_drained("node1", true).await.unwrap();
    d.register_node(Node { host: "127.0.0.9".into(), imap_port: 143, ..node("node1", false) }).await.unwrap();
    let n = d.node("node1").unwrap();
    assert_eq!((n.weight, n.drained, n.host.as_str(), n.imap_port), (7, true, "127.0.0.9", 143));
    // A node never seen before is taken as it announces itself, with the default weight.
    d.register_node(node("node2", false)).await.unwrap();
    assert_eq!(d.node("node2").unwrap().weight, 100);
}

async fn users_keep_their_hash_and_home(h: Harness) {
    let d = &h.a;
    d.put_node(node("node1", false)).await.unwrap();
    d.put_node(node("node2", false)).await.unwrap();
    d.put_domain("example.test").await.unwrap();
    d.put_user(User {
        home: "node2".into(),
        quota_bytes: Some(5),
        quota_messages: Some(3),
        ..user("carol@example.test")
    })
    .await
    .unwrap();
    // An update without hash or home keeps both, and a quota it does not name.
    let update = User { address: "carol@example.test".into(), quota_bytes: Some(9), ..Default::default() };
    d.put_user(update).await.unwrap();
    let carol = stored(d, "carol@example.test");
    assert_eq!((carol.password_hash.as_str(), carol.home.as_str(), carol.quota_bytes), ("h", "node2", Some(9)));
    assert_eq!(carol.quota_messages, Some(3), "a limit the update did not name is kept");
    // A password change keeps both limits; 0 removes one.
    d.put_user(User { password_hash: "h2".into(), ..user("carol@example.test") }).await.unwrap();
    assert_eq!(
        (stored(d, "carol@example.test").quota_bytes, stored(d, "carol@example.test").quota_messages),
        (Some(9), Some(3))
    );
    let unlimited = User { address: "carol@example.test".into(), quota_messages: Some(0), ..Default::default() };
    d.put_user(unlimited).await.unwrap();
    let carol = stored(d, "carol@example.test");
    assert_eq!((carol.quota_bytes, carol.quota_messages), (Some(9), None), "0 removes the limit");
    assert!(matches!(
        d.put_user(User { home: "ghost".into(), ..user("dave@example.test") }).await,
        Err(DirectoryError::UnknownNode(_))
    ));
    let fresh = User { address: "erin@example.test".into(), ..Default::default() };
    assert!(matches!(d.put_user(fresh).await, Err(DirectoryError::Invalid(_))), "a new user needs a password");
}

async fn an_invitation_is_taken_once_and_never_sent_to_nodes(h: Harness) {
    let later = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let invite = Invite { node: "node9".into(), role: "node".into(), hosts: vec!["node9".into()], expires_unix: later };
    h.a.put_invite("hash-1", invite.clone()).await.unwrap();
    let expired = Invite { expires_unix: 1, ..invite.clone() };
    assert!(h.a.put_invite("hash-0", expired).await.is_err(), "an invitation that expired already");
    let admin = Invite { role: "admin".into(), ..invite.clone() };
    assert!(h.a.put_invite("hash-2", admin).await.is_err(), "an invitation for an administrator");
    sees(&h.b, 1).await;
    // Nodes get the directory, and never the invitations in it.
    assert_eq!(h.a.snapshot(), DirectorySnapshot { version: 1, ..Default::default() });
    // Two routers spend the same token at once: exactly one gets the invitation.
    let (first, second) = tokio::join!(h.a.take_invite("hash-1"), h.b.take_invite("hash-1"));
    let taken: Vec<Invite> = [first, second].into_iter().filter_map(Result::ok).collect();
    assert_eq!(taken, vec![invite], "one router takes it, the other finds it gone");
    assert!(h.a.take_invite("hash-1").await.is_err());
    assert!(h.b.take_invite("unknown").await.is_err());
    // Spent is spent after a restart too.
    let h = h.reopen().await;
    assert!(h.a.take_invite("hash-1").await.is_err());
}

/// The user at `address` as `dir` has it now.
fn stored(dir: &ClusterDirectory, address: &str) -> User {
    dir.current().user(address).cloned().unwrap_or_else(|| panic!("{address} is in the directory"))
}

/// `live` alive, every other mail node dead, storage nodes not probed yet (unknown).
fn alive<'a>(live: &'a [&'a str]) -> impl Fn(&Node) -> Liveness + 'a {
    move |node| {
        if live.contains(&node.id.as_str()) {
            Liveness::Live
        } else if node.storage_only {
            Liveness::Unknown
        } else {
            Liveness::Dead
        }
    }
}

async fn new_users_get_a_replica_on_another_store(h: Harness) {
    let d = &h.a;
    d.put_domain("example.test").await.unwrap();
    // One store-capable node (node1 serves no store): one copy.
    d.put_node(node("node1", false)).await.unwrap();
    d.put_node(node("store1", true)).await.unwrap();
    d.put_user(user("alone@example.test")).await.unwrap();
    let alone = stored(d, "alone@example.test");
    assert_eq!((alone.home.as_str(), alone.replica.as_str(), alone.epoch), ("store1", "", 1));
    // A second one: every new user has a replica that is not its home, in sync, at epoch 1.
    d.put_node(node("store2", true)).await.unwrap();
    d.put_node(node("store3", true)).await.unwrap();
    for i in 0..8 {
        let address = format!("u{i}@example.test");
        d.put_user(user(&address)).await.unwrap();
        let u = stored(d, &address);
        assert!(u.home.starts_with("store") && u.replica.starts_with("store"), "{u:?}");
        assert_ne!(u.home, u.replica);
        assert_eq!((u.epoch, u.replica_in_sync), (1, true), "both copies of a new user are empty");
    }
    // The user placed while there was one store gets a replica from the reconcile, to be filled.
    let placed = failover::give_replicas(d).await.unwrap();
    assert_eq!(placed.iter().map(|u| u.address.as_str()).collect::<Vec<_>>(), ["alone@example.test"]);
    let alone = stored(d, "alone@example.test");
    assert!(alone.replica.starts_with("store") && alone.replica != "store1", "{alone:?}");
    assert_eq!((alone.epoch, alone.replica_in_sync), (2, false));
    assert!(failover::give_replicas(d).await.unwrap().is_empty(), "nothing left to place");
    sees(&h.b, d.current().version).await;
    assert_eq!(stored(&h.b, "alone@example.test"), alone);
    // A replica named by the admin must be a known node other than the home.
    let named = User { home: "store1".into(), replica: "node1".into(), ..user("named@example.test") };
    d.put_user(named).await.unwrap();
    assert_eq!(stored(d, "named@example.test").replica, "node1");
    let ghost = User { replica: "ghost".into(), ..user("ghost@example.test") };
    assert!(matches!(d.put_user(ghost).await, Err(DirectoryError::UnknownNode(_))));
    let same = User { home: "store2".into(), replica: "store2".into(), ..user("same@example.test") };
    assert!(matches!(d.put_user(same).await, Err(DirectoryError::Invalid(_))));
}

async fn one_copy_places_no_replica(h: Harness) {
    let Harness { a, b, backing } = h;
    drop(b);
    let d = Arc::into_inner(a).expect("the only handle").with_copies(Copies::One);
    d.put_domain("example.test").await.unwrap();
    d.put_node(store_node("node1")).await.unwrap();
    d.put_node(store_node("node2")).await.unwrap();
    d.put_user(user("a@example.test")).await.unwrap();
    assert_eq!(stored(&d, "a@example.test").replica, "");
    assert!(failover::give_replicas(&d).await.unwrap().is_empty());
    drop(backing);
}

async fn a_new_home_raises_the_epoch_and_clears_in_sync(h: Harness) {
    let d = &h.a;
    d.put_domain("example.test").await.unwrap();
    for id in ["store1", "store2", "store3"] {
        d.put_node(node(id, true)).await.unwrap();
    }
    d.put_user(User { home: "store1".into(), replica: "store2".into(), ..user("carol@example.test") }).await.unwrap();
    // What an admin says of the epoch and the replica's state is not taken.
    let claims = User { address: "carol@example.test".into(), quota_bytes: Some(7), epoch: 99, ..Default::default() };
    d.put_user(claims).await.unwrap();
    let carol = stored(d, "carol@example.test");
    assert_eq!((carol.epoch, carol.replica_in_sync, carol.quota_bytes), (1, true, Some(7)), "no move, no new epoch");
    // A new home: a new epoch, and the copy there must be filled first.
    d.put_user(User { address: "carol@example.test".into(), home: "store3".into(), ..Default::default() })
        .await
        .unwrap();
    let carol = stored(d, "carol@example.test");
    assert_eq!((carol.home.as_str(), carol.replica.as_str()), ("store3", "store2"));
    assert_eq!((carol.epoch, carol.replica_in_sync), (2, false));
    // In sync again, then a new replica: the same.
    d.set_replica_state(ReplicaState { user: carol.address.clone(), epoch: 2, in_sync: true, promote: false })
        .await
        .unwrap();
    d.put_user(User { address: "carol@example.test".into(), replica: "store1".into(), ..Default::default() })
        .await
        .unwrap();
    let carol = stored(d, "carol@example.test");
    assert_eq!((carol.replica.as_str(), carol.epoch, carol.replica_in_sync), ("store1", 4, false));
    // A home moved onto the replica: another replica is picked.
    d.put_user(User { address: "carol@example.test".into(), home: "store1".into(), ..Default::default() })
        .await
        .unwrap();
    let carol = stored(d, "carol@example.test");
    assert_eq!(carol.home, "store1");
    assert!(!carol.replica.is_empty() && carol.replica != "store1", "{carol:?}");
    assert_eq!((carol.epoch, carol.replica_in_sync), (5, false));
}

/// `promote`: a home whose store lost the user's mail hands the home to the replica, only if
/// that replica is in sync and the epoch is still the caller's.
async fn a_home_that_lost_its_mail_promotes_only_an_in_sync_replica(h: Harness) {
    let d = &h.a;
    d.put_domain("example.test").await.unwrap();
    d.put_node(store_node("node1")).await.unwrap();
    d.put_node(store_node("node2")).await.unwrap();
    d.put_user(User { home: "node1".into(), replica: "node2".into(), ..user("fay@example.test") }).await.unwrap();
    let promote = |epoch| ReplicaState { user: "fay@example.test".into(), epoch, in_sync: false, promote: true };
    assert!(matches!(d.set_replica_state(promote(7)).await, Err(DirectoryError::StaleEpoch(1))));
    let out = d.set_replica_state(promote(1)).await.unwrap();
    assert_eq!((out.epoch, out.in_sync), (2, false));
    let fay = stored(d, "fay@example.test");
    assert_eq!((fay.home.as_str(), fay.replica.as_str(), fay.epoch, fay.replica_in_sync), ("node2", "node1", 2, false));
    // node1 is now a replica behind: it may not be promoted back until caught up.
    assert!(d.set_replica_state(promote(2)).await.is_err());
    assert_eq!(stored(d, "fay@example.test").home, "node2");
}

async fn replica_state_is_a_compare_and_swap(h: Harness) {
    let d = &h.a;
    d.put_domain("example.test").await.unwrap();
    d.put_node(store_node("node1")).await.unwrap();
    d.put_node(store_node("node2")).await.unwrap();
    d.put_node(node("solo", true)).await.unwrap();
    d.put_user(User { home: "node1".into(), ..user("dave@example.test") }).await.unwrap();
    let state = |epoch, in_sync| ReplicaState { user: "Dave@example.test".into(), epoch, in_sync, promote: false };
    // The right epoch: the state changes and the epoch rises.
    let out = d.set_replica_state(state(1, false)).await.unwrap();
    assert_eq!(out, ReplicaState { user: "dave@example.test".into(), epoch: 2, in_sync: false, promote: false });
    let dave = stored(d, "dave@example.test");
    assert_eq!((dave.epoch, dave.replica_in_sync), (2, false));
    // The same state again: nothing changes, the current epoch comes back.
    let version = d.current().version;
    assert_eq!(d.set_replica_state(state(2, false)).await.unwrap().epoch, 2);
    assert_eq!(d.current().version, version, "no commit for no change");
    // A stale epoch is refused and changes nothing.
    assert!(matches!(d.set_replica_state(state(1, true)).await, Err(DirectoryError::StaleEpoch(2))));
    assert!(!stored(d, "dave@example.test").replica_in_sync);
    assert!(matches!(
        d.set_replica_state(ReplicaState {
            user: "nobody@example.test".into(),
            epoch: 1,
            in_sync: true,
            promote: false
        })
        .await,
        Err(DirectoryError::NotFound(_))
    ));
    // Two routers, the same epoch, at once: exactly one wins, the other is told the epoch moved.
    for round in 0..6u64 {
        let current = stored(d, "dave@example.test");
        let want = !current.replica_in_sync;
        let (first, second) = tokio::join!(
            h.a.set_replica_state(state(current.epoch, want)),
            h.b.set_replica_state(state(current.epoch, want))
        );
        let won: Vec<ReplicaState> = [&first, &second].into_iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
        assert_eq!(
            won,
            vec![ReplicaState {
                user: "dave@example.test".into(),
                epoch: current.epoch + 1,
                in_sync: want,
                promote: false
            }]
        );
        let lost = if first.is_ok() { second } else { first };
        assert!(
            matches!(lost, Err(DirectoryError::StaleEpoch(now)) if now == current.epoch + 1),
            "round {round}: {lost:?}"
        );
    }
    let version = d.current().version;
    sees(&h.b, version).await;
    assert_eq!(stored(&h.b, "dave@example.test"), stored(d, "dave@example.test"));
}

async fn replica_state_over_the_directory_service(h: Harness) {
    use sirms_integration_tests::directory_client;
    use sirms_proto::cluster_tls::{ClientAuth, Credentials};
    let d = &h.a;
    d.put_domain("example.test").await.unwrap();
    d.put_node(store_node("node1")).await.unwrap();
    d.put_node(store_node("node2")).await.unwrap();
    d.put_user(User { home: "node2".into(), ..user("erin@example.test") }).await.unwrap();
    // This harness's directory behind a router's Directory service, on a loopback port.
    let token = "conformance-token";
    let config = sirms_router::config::RouterConfig::default();
    let credentials = sirms_proto::cluster_tls::Credentials::token(config.token.clone());
    let router = sirms_router::server::Router::new(h.a.clone(), None, &config, credentials);
    let (_admin, directory) = sirms_router::admin::AdminService::new(router, token).into_servers();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = tonic::transport::Server::builder().add_service(directory);
    let forever = std::future::pending::<()>();
    let served = tokio::spawn(sirms_proto::cluster_tls::serve(routes, None, ClientAuth::Optional, listener, forever));
    let mut client = directory_client(addr, &Credentials { token: token.into(), tls: None }).await;
    let request = |epoch, in_sync| ReplicaState { user: "erin@example.test".into(), epoch, in_sync, promote: false };
    let reply = client.set_replica_state(request(1, false)).await.expect("the right epoch").into_inner();
    assert_eq!(reply, ReplicaState { user: "erin@example.test".into(), epoch: 2, in_sync: false, promote: false });
    let stale = client.set_replica_state(request(1, true)).await.expect_err("a stale epoch");
    assert_eq!((stale.code(), stale.message()), (tonic::Code::FailedPrecondition, "stale epoch: now 2"));
    let unknown = ReplicaState { user: "nobody@example.test".into(), epoch: 1, in_sync: true, promote: false };
    assert_eq!(client.set_replica_state(unknown).await.expect_err("unknown").code(), tonic::Code::NotFound);
    let mut stranger = directory_client(addr, &Credentials { token: "wrong".into(), tls: None }).await;
    let refused = stranger.set_replica_state(request(2, true)).await.expect_err("no token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert_eq!(stored(d, "erin@example.test").epoch, 2, "only the first call changed anything");
    served.abort();
}

async fn failover_promotes_only_a_live_in_sync_replica(h: Harness) {
    let d = &h.a;
    d.put_domain("example.test").await.unwrap();
    for id in ["node1", "node2", "node3"] {
        d.put_node(store_node(id)).await.unwrap();
    }
    d.put_node(node("store1", true)).await.unwrap();
    let placed =
        |address: &str, home: &str, replica: &str| User { home: home.into(), replica: replica.into(), ..user(address) };
    d.put_user(placed("swap@example.test", "node1", "node2")).await.unwrap();
    d.put_user(placed("behind@example.test", "node1", "node2")).await.unwrap();
    d.set_replica_state(ReplicaState { user: "behind@example.test".into(), epoch: 1, in_sync: false, promote: false })
        .await
        .unwrap();
    d.put_user(placed("replica-dead@example.test", "node1", "node3")).await.unwrap();
    d.put_user(placed("home-live@example.test", "node2", "node3")).await.unwrap();
    d.put_user(placed("on-storage@example.test", "store1", "node2")).await.unwrap();
    let before = d.current().version;
    // node1 and node3 are dead, node2 alive; store1 has no verdict yet.
    let done = failover::fail_over(d, alive(&["node2"])).await.unwrap();
    let swapped: Vec<String> = done.iter().map(|f| f.to_string()).collect();
    assert_eq!(swapped, ["swap@example.test: home node1 -> node2 (epoch 2)"]);
    assert_eq!(d.current().version, before + 1, "one commit");
    let swap = stored(d, "swap@example.test");
    assert_eq!(
        (swap.home.as_str(), swap.replica.as_str(), swap.epoch, swap.replica_in_sync),
        ("node2", "node1", 2, false)
    );
    for (address, home) in [
        ("behind@example.test", "node1"),
        ("replica-dead@example.test", "node1"),
        ("home-live@example.test", "node2"),
        ("on-storage@example.test", "store1"),
    ] {
        assert_eq!(stored(d, address).home, home, "{address} stays");
    }
    // Again with the same liveness: nothing (the promoted copy's replica is out of sync).
    assert!(failover::fail_over(d, alive(&["node2"])).await.unwrap().is_empty());
    assert!(failover::fail_over(d, alive(&["node1"])).await.unwrap().is_empty(), "no swap back before a catch-up");
    assert_eq!(d.current().version, before + 1);
    // Nothing known: nothing moves.
    let _ = d
        .set_replica_state(ReplicaState { user: "swap@example.test".into(), epoch: 2, in_sync: true, promote: false })
        .await;
    assert!(failover::fail_over(d, |_: &Node| Liveness::Unknown).await.unwrap().is_empty());
    // store1 found dead by the probes: its user moves to its in-sync replica, and no one else.
    let store1_dead = |n: &Node| if n.id == "node2" { Liveness::Live } else { Liveness::Dead };
    let done = failover::fail_over(d, store1_dead).await.unwrap();
    let swapped: Vec<String> = done.iter().map(|f| f.to_string()).collect();
    assert_eq!(swapped, ["on-storage@example.test: home store1 -> node2 (epoch 2)"]);
}

async fn routers_racing_to_fail_over_swap_once(h: Harness) {
    h.a.put_domain("example.test").await.unwrap();
    h.a.put_node(store_node("node1")).await.unwrap();
    h.a.put_node(store_node("node2")).await.unwrap();
    let users = 2 * failover::BATCH + 5;
    for i in 0..users {
        let u = User { home: "node1".into(), replica: "node2".into(), ..user(&format!("u{i}@example.test")) };
        h.a.put_user(u).await.unwrap();
    }
    let before = h.a.current().version;
    sees(&h.b, before).await;
    let (a, b) =
        tokio::join!(failover::fail_over(&h.a, alive(&["node2"])), failover::fail_over(&h.b, alive(&["node2"])));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len() + b.len(), users, "every user failed over once, by one router or the other");
    let after = h.a.current().version;
    assert!(after - before <= 4, "in batches of {}: {} commits", failover::BATCH, after - before);
    sees(&h.b, after).await;
    for u in h.b.snapshot().users {
        assert_eq!((u.home.as_str(), u.replica.as_str(), u.epoch), ("node2", "node1", 2), "{u:?}");
    }
}

/// With the etcd directory, liveness is the node leases every router follows: a lease that
/// expires fails the node's users over within about a second, through the router's own task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_failover_follows_an_expiring_lease() {
    let h = Harness::etcd().await;
    let Backing::Etcd(cluster, prefix) = &h.backing else { unreachable!("an etcd harness") };
    let client = EtcdClient::new(&cluster.endpoints(), Duration::from_millis(1500)).expect("etcd client");
    let membership = sirms_router::membership::Membership::start(Arc::new(client), prefix);
    let config = sirms_router::config::RouterConfig::default();
    let credentials = sirms_proto::cluster_tls::Credentials::token(config.token.clone());
    let router = sirms_router::server::Router::new(h.a.clone(), Some(membership), &config, credentials);
    h.a.put_domain("example.test").await.unwrap();
    h.a.put_node(store_node("node1")).await.unwrap();
    h.a.put_node(store_node("node2")).await.unwrap();
    h.a.put_user(User { home: "node1".into(), ..user("frank@example.test") }).await.unwrap();
    assert_eq!(stored(&h.a, "frank@example.test").replica, "node2");
    let members = router.membership().expect("membership");
    let load = |id: &str| NodeLoad { node_id: id.into(), ..Default::default() };
    members.join("node1", &load("node1")).await.unwrap();
    members.join("node2", &load("node2")).await.unwrap();
    let mut live = members.subscribe();
    tokio::time::timeout(Duration::from_secs(5), live.wait_for(|l| l.as_ref().is_some_and(|l| l.len() == 2)))
        .await
        .expect("both leases seen")
        .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(failover::run(router.clone(), stopped));
    // node2 heartbeats; node1 stops.
    let beating = tokio::spawn({
        let router = router.clone();
        async move {
            loop {
                let _ = router.membership().expect("membership").alive("node2", &load("node2")).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    });
    // Both alive for a while: nothing moves.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(stored(&h.a, "frank@example.test").home, "node1");
    tokio::time::timeout(
        Duration::from_secs(10),
        live.wait_for(|l| l.as_ref().is_some_and(|l| !l.contains_key("node1"))),
    )
    .await
    .expect("node1's lease expires")
    .unwrap();
    let expired = std::time::Instant::now();
    let mut other = h.b.subscribe();
    tokio::time::timeout(
        Duration::from_secs(5),
        other.wait_for(|s| s.user("frank@example.test").is_some_and(|u| u.home == "node2")),
    )
    .await
    .expect("failed over")
    .unwrap();
    let took = expired.elapsed();
    assert!(took < Duration::from_secs(1), "failed over {took:?} after the lease expired");
    let frank = stored(&h.b, "frank@example.test");
    assert_eq!((frank.replica.as_str(), frank.epoch, frank.replica_in_sync), ("node1", 2, false));
    let _ = stop.send(true);
    task.await.unwrap();
    beating.abort();
}
