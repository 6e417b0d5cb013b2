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
//! Liveness is the signal every router shares. With the etcd directory: the node leases
//! (`Membership`), so a node is dead the moment its lease expires, on every router at once,
//! and the swap follows within the time of one commit. With the sled directory (one router,
//! no leases): this router's health checks, the node failing them continuously for
//! [`DOWN_FOR`]. Storage-only nodes neither heartbeat nor are health-checked, so their
//! liveness is unknown: a user whose home or replica is a storage-only node is never failed
//! over automatically (`sirms ctl users add --home` moves it by hand).
//!
//! The check runs whenever the live set or the directory changes, and every second (so a node
//! down long enough under the health checks is noticed, and a commit that failed is tried
//! again). Users are changed in batches of [`BATCH`], one commit each, which stays within
//! etcd's operations per transaction.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sirms_proto::cluster::User;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::directory::placement::{self, Copies};
use crate::directory::{ClusterDirectory, DirectoryError, State};
use crate::health::{Health, HealthSnapshot};
use crate::membership::Live;
use crate::server::Router;

/// Users changed by one commit: with the version key, within etcd's default of 128 operations
/// per transaction.
pub const BATCH: usize = 100;

/// How long a node must fail its health checks before its users fail over (sled directory).
/// A passive failure takes a node out of routing at once; moving mailboxes waits for more.
pub const DOWN_FOR: Duration = Duration::from_secs(3);

/// How often the check runs when nothing wakes it.
const TICK: Duration = Duration::from_secs(1);

/// What is known of a node's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Live,
    Dead,
    /// No signal (a storage-only node, a node the health checks do not know, leases not read
    /// yet, a node down too briefly): never failed over from, nor to.
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
/// `liveness` speaks for mail nodes; storage-only nodes and nodes missing from the directory
/// are [`Liveness::Unknown`] whatever it says.
pub fn plan(state: &State, liveness: &impl Fn(&str) -> Liveness, limit: usize) -> Vec<User> {
    let of = |id: &str| match state.node(id) {
        Some(node) if !node.storage_only => liveness(id),
        _ => Liveness::Unknown,
    };
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
    liveness: impl Fn(&str) -> Liveness,
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

/// Where liveness comes from.
enum Signal {
    /// The etcd node leases, shared by every router.
    Leases(watch::Receiver<Live>),
    /// This router's health checks, and since when each node has been failing them.
    Health { health: watch::Receiver<Arc<HealthSnapshot>>, down_since: HashMap<String, Instant> },
}

impl Signal {
    fn of(router: &Router) -> Signal {
        match router.membership() {
            Some(membership) => Signal::Leases(membership.subscribe()),
            None => Signal::Health { health: router.follow_health(), down_since: HashMap::new() },
        }
    }

    /// Resolves when the signal changes; never if its sender is gone.
    async fn changed(&mut self) {
        let gone = match self {
            Signal::Leases(live) => live.changed().await.is_err(),
            Signal::Health { health, .. } => health.changed().await.is_err(),
        };
        if gone {
            std::future::pending::<()>().await;
        }
    }

    /// Each node's liveness now, and that of a node the signal does not name.
    fn now(&mut self) -> (HashMap<String, Liveness>, Liveness) {
        match self {
            Signal::Leases(live) => match live.borrow().as_ref() {
                // Before the leases were first read nothing is known.
                None => (HashMap::new(), Liveness::Unknown),
                // A mail node without a lease is dead.
                Some(live) => (live.keys().map(|id| (id.clone(), Liveness::Live)).collect(), Liveness::Dead),
            },
            Signal::Health { health, down_since } => {
                let snapshot = health.borrow().clone();
                let now = Instant::now();
                down_since.retain(|id, _| snapshot.iter().any(|(n, h)| n.as_str() == id && h == Health::Down));
                let known = snapshot
                    .iter()
                    .map(|(id, h)| {
                        let liveness = match h {
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
        }
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
        let (known, missing) = signal.now();
        let liveness = |id: &str| known.get(id).copied().unwrap_or(missing);
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
        for (id, storage_only) in [("m1", false), ("m2", false), ("m3", false), ("s1", true)] {
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

    fn alive<'a>(live: &'a [&'a str]) -> impl Fn(&str) -> Liveness + 'a {
        move |id| if live.contains(&id) { Liveness::Live } else { Liveness::Dead }
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
            user("storage-home@example.test", "s1", "m2", true),
            user("storage-replica@example.test", "m1", "s1", true),
        ]);
        assert_eq!(plan(&s, &alive(&["m2"]), BATCH), Vec::new());
        let unknown = |_: &str| Liveness::Unknown;
        let s = state(&[user("a@example.test", "m1", "m2", true)]);
        assert_eq!(plan(&s, &unknown, BATCH), Vec::new(), "no signal, no failover");
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
