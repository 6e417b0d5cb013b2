//! One conformance suite for the cluster directory, run against both of its stores: the
//! router's own sled database and a real etcd (Debian's `etcd`, started by the test). "Two
//! routers" are two directories over the same store: the same one for sled (one router owns
//! its database), two separate etcd clients for etcd.

use std::sync::Arc;
use std::time::Duration;

use sirms_integration_tests::etcd::EtcdCluster;
use sirms_proto::cluster::{Alias, DirectorySnapshot, DkimKey, Group, Invite, Node, User};
use sirms_router::directory::etcd::EtcdStore;
use sirms_router::directory::{ClusterDirectory, DirectoryError};
use sirms_router::etcd::EtcdClient;
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
);

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
    d.put_user(User { home: "node2".into(), quota_bytes: 5, ..user("carol@example.test") }).await.unwrap();
    // An update without hash or home keeps both.
    d.put_user(User { address: "carol@example.test".into(), quota_bytes: 9, ..Default::default() }).await.unwrap();
    let snap = d.snapshot();
    let carol = snap.users.iter().find(|u| u.address == "carol@example.test").unwrap();
    assert_eq!((carol.password_hash.as_str(), carol.home.as_str(), carol.quota_bytes), ("h", "node2", 9));
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
