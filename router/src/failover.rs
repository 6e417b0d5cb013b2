//! Failover: a user whose home is gone is served from its replica; and every user gets a
//! replica once the cluster has room for one.
//!
//! The rule, per user: **the home is not live, the replica is live and `replica_in_sync`**
//! → swap them (home = old replica, replica = old home), epoch + 1, `replica_in_sync` =
//! false. Why that is safe:
//!
//! 1. Only an in-sync replica is promoted. Nodes acknowledge a write only when both copies
//!    hold it; a node that cannot write the replica first marks it out of sync
//!    (`SetReplicaState`, a compare-and-swap on the epoch) and only then may acknowledge
//!    alone. So an in-sync replica holds every acknowledged write.
//! 2. The swap raises the epoch. Stores refuse writes carrying an older epoch, so an old home
//!    that was only cut off cannot take writes the new home will not have.
//! 3. The swap marks the new replica (the old home) out of sync: it must be caught up and
//!    reported in sync before it can be promoted back, so a flapping node does not bounce a
//!    user between two copies, and a second failure before the catch-up fails over nothing.
//! 4. The swap is a directory change committed only on the version it was planned against
//!    (the revision check of every change): of several routers that see the same death, one
//!    commits; the others plan again on the new directory and find nothing left to do.
//!
//! Liveness, for mail nodes, is the signal every router shares. With the etcd directory: the
//! node leases (`Membership`), so a node is dead the moment its lease expires, on every
//! router at once, and the swap follows within the time of one commit. With the sled
//! directory (one router, no leases): this router's health checks, the node failing them
//! continuously for [`DOWN_FOR`].
//!
//! Storage-only nodes hold no lease (they neither register nor heartbeat): every router
//! probes their Store service itself (a `Ping` with its cluster credentials, `store_probe.rs`)
//! with either directory, and a storage node whose probes have failed continuously for
//! [`DOWN_FOR`] (and that is down by the hysteresis, so one failed probe followed by a stall
//! of the checks is not enough) is dead; one whose latest probes pass is live; before its first
//! probe, or failing more briefly, it is unknown ([`store_liveness`]).
//!
//! That signal is each router's own: two routers may see a storage node differently (one cut
//! off from it, or probing at other moments), and one may fail its users over while the other
//! would not. That is safe, because the swap's safety never rested on the old home being
//! dead, only on the replica being in sync (1) and on the epoch (2, 4):
//!
//! - The swap commits once. It is a compare-and-swap on the directory's version: a second
//!   router that planned on the old version loses the race, plans again on the new directory,
//!   and finds the user's replica (the old home) out of sync: nothing to swap, not even back,
//!   whatever it thinks of either node. A router that saw the home live never planned anything.
//! - The stores refuse stale epochs. A home that was only cut off from one router may still
//!   be reached by mail nodes writing at the old epoch. The first write at the new epoch
//!   fences the new home; from then on it refuses the old epoch's records, so the old home
//!   cannot get a write onto both copies, and it cannot acknowledge one alone either, since
//!   marking the replica out of sync is a compare-and-swap on the old epoch, which is gone.
//!   Such writes are taken back and refused with a temporary error; the client retries on the
//!   new home. A wrong "dead" therefore costs a catch-up of the old home, never an
//!   acknowledged message.
//!
//! The check runs whenever the leases, the health checks or the directory change, and every
//! second (so a node down long enough under the health checks is noticed, and a commit that
//! failed is tried again). Users are changed in batches of [`BATCH`], one commit each, which
//! stays within etcd's operations per transaction.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sirms_proto::cluster::{Node, User};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::directory::placement::{self, Copies};
use crate::directory::{ClusterDirectory, DirectoryError, State};
use crate::health::{Health, HealthSnapshot, Streak};
use crate::membership::Live;
use crate::server::Router;
use crate::service::Service;

/// Users changed by one commit: with the version key, within etcd's default of 128 operations
/// per transaction.
pub const BATCH: usize = 100;

/// How long a node must fail its health checks before its users fail over (a mail node with
/// the sled directory, from when it is down; a storage node with either, from its first
/// failed probe). A passive failure takes a node out of routing at once; moving mailboxes
/// waits for more.
pub const DOWN_FOR: Duration = Duration::from_secs(3);

/// How often the check runs when nothing wakes it.
const TICK: Duration = Duration::from_secs(1);

/// What is known of a node's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Live,
    Dead,
    /// No signal (a node the health checks do not know, leases not read yet, a storage node
    /// not probed yet, a node down too briefly): never failed over from, nor to.
    Unknown,
}

/// One user failed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failover {
    pub user: String,
    /// The home that is not live (now the replica).
    pub from: String,
    /// The replica that was in sync (now the home).
    pub to: String,
    /// The user's epoch after the swap.
    pub epoch: u64,
}

impl Failover {
    /// The failover that left `user` as it is.
    fn of(user: &User) -> Failover {
        Failover { user: user.address.clone(), from: user.replica.clone(), to: user.home.clone(), epoch: user.epoch }
    }
}

impl fmt::Display for Failover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: home {} -> {} (epoch {})", self.user, self.from, self.to, self.epoch)
    }
}

/// The users (at most `limit`) to fail over in `state`, as they are after the swap.
/// `liveness` speaks for each node of the directory, mail node or storage node; nodes missing
/// from the directory are [`Liveness::Unknown`].
pub fn plan(state: &State, liveness: &impl Fn(&Node) -> Liveness, limit: usize) -> Vec<User> {
    let of = |id: &str| state.node(id).map_or(Liveness::Unknown, liveness);
    state
        .users()
        .filter(|u| {
            !u.replica.is_empty()
                && u.replica_in_sync
                && of(&u.home) == Liveness::Dead
                && of(&u.replica) == Liveness::Live
        })
        .take(limit)
        .map(|u| User {
            home: u.replica.clone(),
            replica: u.home.clone(),
            epoch: u.epoch + 1,
            replica_in_sync: false,
            ..u.clone()
        })
        .collect()
}

/// The users (at most `limit`) that have no replica (or one on a node no longer in the
/// directory) and can now have one, as they are with it: out of sync until the nodes fill it.
pub fn plan_replicas(state: &State, copies: Copies, limit: usize) -> Vec<User> {
    if copies == Copies::One {
        return Vec::new();
    }
    state
        .users()
        .filter(|u| u.replica.is_empty() || state.node(&u.replica).is_none())
        .filter_map(|u| {
            let replica = placement::pick_replica(state.nodes(), copies, &u.address, &u.home).node()?;
            Some(User { replica, epoch: u.epoch + 1, replica_in_sync: false, ..u.clone() })
        })
        .take(limit)
        .collect()
}

/// Commits `plan` over `directory` in batches until it finds nothing left to do; returns
/// every user changed, as committed.
async fn in_batches(
    directory: &ClusterDirectory,
    plan: impl Fn(&State) -> Vec<User>,
) -> Result<Vec<User>, DirectoryError> {
    let mut changed = Vec::new();
    loop {
        // What the committed plan changed (a plan runs again after a lost race).
        let batch = Mutex::new(Vec::new());
        directory
            .change(|state| {
                let users = plan(state);
                let writes = state.replace_users(&users);
                *batch.lock().unwrap_or_else(|e| e.into_inner()) = users;
                Ok(writes)
            })
            .await?;
        let batch = batch.into_inner().unwrap_or_else(|e| e.into_inner());
        let full = batch.len() >= BATCH;
        changed.extend(batch);
        if !full {
            return Ok(changed);
        }
    }
}

/// Fails over every user whose home is dead and whose in-sync replica is live, by `liveness`.
pub async fn fail_over(
    directory: &ClusterDirectory,
    liveness: impl Fn(&Node) -> Liveness,
) -> Result<Vec<Failover>, DirectoryError> {
    let users = in_batches(directory, |state| plan(state, &liveness, BATCH)).await?;
    Ok(users.iter().map(Failover::of).collect())
}

/// Gives a replica to every user without one that can have one now (a cluster that grew to a
/// second store-capable node).
pub async fn give_replicas(directory: &ClusterDirectory) -> Result<Vec<User>, DirectoryError> {
    let copies = directory.copies();
    in_batches(directory, |state| plan_replicas(state, copies, BATCH)).await
}

/// A storage node's liveness from its Store probes, at `now`: dead once they have failed
/// continuously for [`DOWN_FOR`] and the hysteresis has it down; live while the latest pass
/// and it is up; otherwise (not probed yet, failing for less, passing again but not yet up)
/// unknown.
pub fn store_liveness(health: Health, streak: Option<Streak>, now: Instant) -> Liveness {
    match streak {
        Some(Streak { passing: true, .. }) if health.is_up() => Liveness::Live,
        Some(Streak { passing: false, since })
            if health == Health::Down && now.saturating_duration_since(since) >= DOWN_FOR =>
        {
            Liveness::Dead
        }
        _ => Liveness::Unknown,
    }
}

/// Where liveness comes from.
struct Signal {
    /// Mail nodes' etcd leases, shared by every router; `None` with the sled directory, where
    /// this router's health checks speak for them.
    leases: Option<watch::Receiver<Live>>,
    /// This router's probes: of mail nodes' services, and of storage nodes' Store service.
    health: watch::Receiver<Arc<HealthSnapshot>>,
    /// Since when each mail node has been failing every health check (sled directory).
    down_since: HashMap<String, Instant>,
}

/// Every node's liveness at one moment.
struct Seen {
    /// Mail nodes the signal names.
    mail: HashMap<String, Liveness>,
    /// A mail node the signal does not name.
    mail_missing: Liveness,
    /// Storage nodes that are probed.
    stores: HashMap<String, Liveness>,
}

impl Seen {
    /// `node`'s liveness: a storage node's from its probes (it holds no lease, so a missing
    /// one says nothing of it), a mail node's from its lease or health checks.
    fn of(&self, node: &Node) -> Liveness {
        if node.storage_only {
            self.stores.get(&node.id).copied().unwrap_or(Liveness::Unknown)
        } else {
            self.mail.get(&node.id).copied().unwrap_or(self.mail_missing)
        }
    }
}

impl Signal {
    fn of(router: &Router) -> Signal {
        Signal {
            leases: router.membership().map(|membership| membership.subscribe()),
            health: router.follow_health(),
            down_since: HashMap::new(),
        }
    }

    /// Resolves when the signal changes; never if its senders are gone.
    async fn changed(&mut self) {
        let Signal { leases, health, .. } = self;
        let leases = async {
            let gone = match leases {
                Some(live) => live.changed().await.is_err(),
                None => true,
            };
            if gone {
                std::future::pending::<()>().await;
            }
        };
        let health = async {
            if health.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = leases => {}
            () = health => {}
        }
    }

    /// Each node's liveness now.
    fn now(&mut self) -> Seen {
        let snapshot = self.health.borrow().clone();
        let now = Instant::now();
        let stores = snapshot
            .iter()
            .filter_map(|(id, h)| {
                Some((id.to_string(), store_liveness(h.get(Service::Store)?, h.streak(Service::Store), now)))
            })
            .collect();
        let (mail, mail_missing) = match &self.leases {
            Some(live) => match live.borrow().as_ref() {
                // Before the leases were first read nothing is known.
                None => (HashMap::new(), Liveness::Unknown),
                // A mail node without a lease is dead.
                Some(live) => (live.keys().map(|id| (id.clone(), Liveness::Live)).collect(), Liveness::Dead),
            },
            None => {
                let down_since = &mut self.down_since;
                // Storage nodes are in the snapshot too, judged above.
                let mail_nodes = || snapshot.iter().filter(|(_, h)| h.get(Service::Store).is_none());
                // A node is dead only when every service fails: one wedged listener moves no mailbox.
                down_since.retain(|id, _| mail_nodes().any(|(n, h)| n.as_str() == id && h.node() == Health::Down));
                let known = mail_nodes()
                    .map(|(id, h)| {
                        let liveness = match h.node() {
                            Health::Up => Liveness::Live,
                            Health::Down => {
                                let since = *down_since.entry(id.to_string()).or_insert(now);
                                if now.duration_since(since) >= DOWN_FOR { Liveness::Dead } else { Liveness::Unknown }
                            }
                        };
                        (id.to_string(), liveness)
                    })
                    .collect();
                // The health checks say nothing of a node they do not probe.
                (known, Liveness::Unknown)
            }
        };
        Seen { mail, mail_missing, stores }
    }
}

/// Keeps users' homes on live nodes and gives users replicas, until `shutdown` turns true.
pub async fn run(router: Arc<Router>, mut shutdown: watch::Receiver<bool>) {
    let directory = router.directory().clone();
    let mut versions = directory.subscribe();
    let mut signal = Signal::of(&router);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_error = None;
    loop {
        tokio::select! {
            result = versions.changed() => if result.is_err() { return },
            () = signal.changed() => {}
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if !directory.current().loaded {
            continue;
        }
        let seen = signal.now();
        let liveness = |node: &Node| seen.of(node);
        let result = async {
            for failover in fail_over(&directory, liveness).await? {
                tracing::warn!(
                    user = %failover.user, from = %failover.from, to = %failover.to, epoch = failover.epoch,
                    "failover: home not live, the in-sync replica is the home now"
                );
            }
            for user in give_replicas(&directory).await? {
                tracing::info!(user = %user.address, home = %user.home, replica = %user.replica, epoch = user.epoch,
                    "replica placed; the nodes fill it");
            }
            Ok::<(), DirectoryError>(())
        }
        .await;
        // Logged once per distinct error: the check runs every second.
        match result {
            Ok(()) => last_error = None,
            Err(e) => {
                let text = e.to_string();
                if last_error.as_ref() != Some(&text) {
                    tracing::warn!(error = %text, "failover check could not change the directory; trying again");
                    last_error = Some(text);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use sirms_proto::cluster::Node;

    use super::*;
    use crate::directory::Write;

    fn state(users: &[User]) -> State {
        let mut state = State::default();
        state.apply(&Write::Put(crate::directory::Table::Domains, "example.test".into(), Vec::new()));
        for (id, storage_only) in [("m1", false), ("m2", false), ("m3", false), ("s1", true), ("s2", true)] {
            let node = Node {
                id: id.into(),
                host: "127.0.0.1".into(),
                store_endpoint: format!("http://{id}:7400"),
                storage_only,
                ..Default::default()
            };
            state.apply(&Write::Put(crate::directory::Table::Nodes, id.into(), prost::Message::encode_to_vec(&node)));
        }
        for write in state.replace_users(users) {
            state.apply(&write);
        }
        state
    }

    fn user(address: &str, home: &str, replica: &str, in_sync: bool) -> User {
        User {
            address: address.into(),
            password_hash: "h".into(),
            home: home.into(),
            replica: replica.into(),
            epoch: 4,
            replica_in_sync: in_sync,
            ..Default::default()
        }
    }

    fn alive<'a>(live: &'a [&'a str]) -> impl Fn(&Node) -> Liveness + 'a {
        move |node| if live.contains(&node.id.as_str()) { Liveness::Live } else { Liveness::Dead }
    }

    /// Live and dead nodes by name; every other node unknown.
    fn seen<'a>(live: &'a [&'a str], dead: &'a [&'a str]) -> impl Fn(&Node) -> Liveness + 'a {
        move |node| match node.id.as_str() {
            id if live.contains(&id) => Liveness::Live,
            id if dead.contains(&id) => Liveness::Dead,
            _ => Liveness::Unknown,
        }
    }

    #[test]
    fn a_dead_home_fails_over_to_its_live_in_sync_replica() {
        let s = state(&[user("a@example.test", "m1", "m2", true)]);
        let swapped = plan(&s, &alive(&["m2", "m3"]), BATCH);
        assert_eq!(
            swapped,
            vec![User {
                home: "m2".into(),
                replica: "m1".into(),
                epoch: 5,
                ..user("a@example.test", "m1", "m2", false)
            }]
        );
        assert_eq!(Failover::of(&swapped[0]).to_string(), "a@example.test: home m1 -> m2 (epoch 5)");
    }

    #[test]
    fn no_failover_without_an_in_sync_live_replica_or_a_dead_home() {
        let s = state(&[
            user("out-of-sync@example.test", "m1", "m2", false),
            user("replica-dead@example.test", "m1", "m3", true),
            user("home-live@example.test", "m2", "m3", true),
            user("one-copy@example.test", "m1", "", true),
            user("gone-replica@example.test", "m1", "gone", true),
        ]);
        assert_eq!(plan(&s, &alive(&["m2"]), BATCH), Vec::new());
        let unknown = |_: &Node| Liveness::Unknown;
        let s = state(&[user("a@example.test", "m1", "m2", true)]);
        assert_eq!(plan(&s, &unknown, BATCH), Vec::new(), "no signal, no failover");
    }

    #[test]
    fn a_dead_storage_home_fails_over_to_a_live_in_sync_replica_of_either_kind() {
        let s = state(&[
            user("to-mail@example.test", "s1", "m2", true),
            user("to-storage@example.test", "s1", "s2", true),
            user("mail-to-storage@example.test", "m1", "s2", true),
        ]);
        let mut swapped = plan(&s, &seen(&["m2", "s2"], &["s1", "m1"]), BATCH);
        swapped.sort_by(|a, b| a.address.cmp(&b.address));
        let moves: Vec<String> = swapped.iter().map(|u| Failover::of(u).to_string()).collect();
        assert_eq!(
            moves,
            [
                "mail-to-storage@example.test: home m1 -> s2 (epoch 5)",
                "to-mail@example.test: home s1 -> m2 (epoch 5)",
                "to-storage@example.test: home s1 -> s2 (epoch 5)",
            ]
        );
        assert!(swapped.iter().all(|u| !u.replica_in_sync), "the old home must be caught up first");
    }

    #[test]
    fn a_storage_node_without_a_verdict_moves_nobody() {
        let s = state(&[
            user("unknown-home@example.test", "s1", "m2", true),
            user("unknown-replica@example.test", "m1", "s1", true),
            user("dead-replica@example.test", "s2", "s1", true),
            user("out-of-sync@example.test", "s2", "m2", false),
        ]);
        assert_eq!(plan(&s, &seen(&["m2"], &["m1", "s2"]), BATCH), Vec::new());
    }

    /// Two routers see a storage node differently: one fails its user over, the other plans
    /// on the directory that commit left and finds nothing to do, whichever node it thinks
    /// is alive: the CAS commits the swap once, and never swaps back an out-of-sync copy.
    #[test]
    fn routers_that_disagree_swap_once() {
        let mut s = state(&[user("a@example.test", "s1", "s2", true)]);
        let first = plan(&s, &seen(&["s2"], &["s1"]), BATCH);
        assert_eq!(first.len(), 1);
        for write in s.replace_users(&first) {
            s.apply(&write);
        }
        for (live, dead) in [(&["s1", "s2"][..], &[][..]), (&["s1"], &["s2"]), (&["s2"], &["s1"])] {
            assert_eq!(plan(&s, &seen(live, dead), BATCH), Vec::new(), "live {live:?}, dead {dead:?}");
        }
    }

    #[test]
    fn a_storage_node_is_dead_after_failing_its_probes_for_down_for() {
        let now = Instant::now();
        let failing = |secs: u64| Some(Streak { passing: false, since: now - Duration::from_secs(secs) });
        let passing = Some(Streak { passing: true, since: now - Duration::from_secs(60) });
        assert_eq!(store_liveness(Health::Up, None, now), Liveness::Unknown, "the initial health is a guess");
        assert_eq!(store_liveness(Health::Up, passing, now), Liveness::Live);
        assert_eq!(store_liveness(Health::Up, failing(1), now), Liveness::Unknown, "one failed probe");
        assert_eq!(store_liveness(Health::Down, failing(1), now), Liveness::Unknown, "not for long enough");
        assert_eq!(store_liveness(Health::Up, failing(10), now), Liveness::Unknown, "too few failed probes");
        assert_eq!(store_liveness(Health::Down, failing(3), now), Liveness::Dead);
        assert_eq!(store_liveness(Health::Down, passing, now), Liveness::Unknown, "passing again, not up yet");
    }

    /// With etcd, a node without a lease is dead: but a storage node never has one, so its
    /// probes alone decide; and a storage node that is not probed is unknown, not dead.
    #[test]
    fn storage_nodes_are_judged_by_their_probes_beside_the_leases() {
        use crate::health::{HealthConfig, HealthMonitor, ProbeTarget};
        use crate::node::NodeId;
        let monitor = HealthMonitor::new(HealthConfig { fall: 3, rise: 2, ..Default::default() });
        let (s1, s2) = (NodeId::new("s1").expect("name"), NodeId::new("s2").expect("name"));
        for id in [&s1, &s2] {
            monitor.add_node(id.clone(), [(Service::Store, ProbeTarget::Endpoint(format!("http://{id}:7400").into()))]);
        }
        let start = Instant::now() - Duration::from_secs(10);
        for i in 0..4 {
            let at = start + Duration::from_secs(i);
            monitor.record_at(&s1, Service::Store, false, at);
            monitor.record_at(&s2, Service::Store, true, at);
        }
        let leases: Live = Some(Arc::new([("m2".to_string(), Default::default())].into_iter().collect()));
        let (_keep, leases) = watch::channel(leases);
        let mut signal = Signal { leases: Some(leases), health: monitor.subscribe(), down_since: HashMap::new() };
        let seen = signal.now();
        let s = state(&[]);
        let of = |id: &str| seen.of(s.node(id).expect("in the directory"));
        assert_eq!(
            [of("s1"), of("s2"), of("m1"), of("m2")],
            [Liveness::Dead, Liveness::Live, Liveness::Dead, Liveness::Live]
        );
        monitor.remove_node(&s2);
        assert_eq!(signal.now().of(s.node("s2").expect("in the directory")), Liveness::Unknown, "not probed");
    }

    #[test]
    fn a_batch_is_bounded() {
        let users: Vec<User> = (0..5).map(|i| user(&format!("u{i}@example.test"), "m1", "m2", true)).collect();
        assert_eq!(plan(&state(&users), &alive(&["m2"]), 3).len(), 3);
    }

    #[test]
    fn users_without_a_replica_get_one_out_of_sync() {
        let s = state(&[user("a@example.test", "m1", "", true), user("b@example.test", "m1", "gone", true)]);
        let placed = plan_replicas(&s, Copies::Two, BATCH);
        assert_eq!(placed.len(), 2);
        for u in &placed {
            assert!(!u.replica.is_empty() && u.replica != "m1" && u.replica != "gone", "{u:?}");
            assert_eq!((u.epoch, u.replica_in_sync), (5, false));
        }
        assert_eq!(plan_replicas(&s, Copies::One, BATCH), Vec::new());
    }
}
