//! Bringing replicas that fell behind up to date, then telling the directory they are in
//! sync again. Each user's catch-up is run by one node: its home if that is a mail node,
//! else its replica if that is one, else the first mail node.
//!
//! Each node also audits its own store, at start and then every few minutes: a store that lost
//! its data (a replaced disk, a wiped volume) must not go on counting as a copy. A user whose
//! replica this node is, but whose mail this store has never held, is marked out of sync (and
//! so refilled); a user whose home this node is, in the same state while the replica holds
//! the mail, has the replica made home.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::home_store::HomeStore;
use super::replica_state::ReplicaStates;
use crate::directory::{Directory, DirectoryData, LiveDirectory, UserRecord};

/// How often the directory is looked at for replicas behind.
const EVERY: Duration = Duration::from_secs(2);
/// Longest pause before a user whose catch-up failed is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often this node's own store is audited after the first time.
const AUDIT_EVERY: Duration = Duration::from_secs(300);

/// Checks that this node's store holds the copies the directory counts on (see the module).
async fn audit(store: &HomeStore, dir: &DirectoryData, states: &ReplicaStates, node_id: &str) {
    let Ok(own) = store.node_store(node_id) else { return };
    let (mut homes, mut replicas) = (0, 0);
    for (user, record) in dir.users().filter(|(_, r)| r.replica_in_sync && !r.replica.is_empty()) {
        if record.home == node_id {
            homes += 1;
            if let Ok(route) = store.route(user)
                && let Err(e) = route.refuse_a_lost_primary().await
            {
                tracing::error!(%user, error = %e, "audit: this node lost the user's mail");
            }
        } else if record.replica == node_id {
            replicas += 1;
            if own.fence(user, 0).await.is_ok_and(|epoch| epoch == 0) {
                tracing::warn!(%user, "audit: this replica holds none of the user's mail: marking it out of sync");
                if let Err(e) = states.set(user, record.epoch, false).await {
                    tracing::warn!(%user, error = %e, "audit: cannot mark the replica out of sync");
                }
            }
        }
    }
    tracing::info!(homes, replicas, "audit of this node's copies done");
}

/// Whether `node_id` runs the catch-up of a user with this record.
fn responsible(dir: &DirectoryData, record: &UserRecord, node_id: &str) -> bool {
    if dir.is_mail_node(&record.home) {
        return record.home == node_id;
    }
    if dir.is_mail_node(&record.replica) {
        return record.replica == node_id;
    }
    dir.first_mail_node() == Some(node_id)
}

/// Catches replicas up until `shutdown` turns true.
pub async fn run(
    store: Arc<HomeStore>,
    directory: Arc<LiveDirectory>,
    states: Arc<ReplicaStates>,
    node_id: String,
    mut shutdown: watch::Receiver<bool>,
) {
    // User → (not before, failures in a row).
    let mut waiting: HashMap<String, (Instant, u32)> = HashMap::new();
    let mut tick = tokio::time::interval(EVERY);
    let mut audited: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let dir = directory.current();
        if directory.available() && audited.is_none_or(|at| at.elapsed() >= AUDIT_EVERY) {
            audit(&store, &dir, &states, &node_id).await;
            audited = Some(Instant::now());
        }
        let behind: Vec<(String, u64)> = dir
            .replicas_behind()
            .filter(|(_, r)| responsible(&dir, r, &node_id))
            .map(|(u, r)| (u.to_string(), r.epoch))
            .collect();
        // Users whose replica node failed lately wait without a back-off of their own: one
        // attempt per hold tells when it is back, and then every user goes at once.
        let away = |user: &str| dir.user(user).is_some_and(|r| store.replica_unreachable(&r.replica));
        waiting.retain(|user, _| behind.iter().any(|(u, _)| u == user));
        let now = Instant::now();
        for (user, epoch) in behind {
            if waiting.get(&user).is_some_and(|(until, _)| *until > now) || away(&user) {
                continue;
            }
            let outcome = async {
                let (route, report) = store.catch_up(&user).await.map_err(|e| e.to_string())?;
                if route.epoch != epoch {
                    return Err(format!("epoch moved from {epoch} to {}", route.epoch));
                }
                states.set(&user, epoch, true).await.map_err(|e| e.to_string())?;
                // A write acknowledged after the last pass, before the writers learnt the replica
                // is in sync, may have reached the primary alone: one more pass copies it.
                match store.catch_up(&user).await {
                    Ok((_, late)) if late.changes() > 0 => {
                        tracing::warn!(%user, changes = late.changes(), "writes during the catch-up copied after it");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(%user, error = %e, "pass after the catch-up failed"),
                }
                Ok(report)
            };
            match outcome.await {
                Ok(report) => {
                    tracing::info!(%user, epoch, changes = report.changes(), appended = report.appended,
                        "replica caught up and in sync");
                    waiting.remove(&user);
                }
                Err(error) => {
                    let failures = waiting.get(&user).map_or(0, |(_, n)| *n) + 1;
                    let pause = (EVERY * 2u32.saturating_pow(failures.min(6))).min(MAX_BACKOFF);
                    tracing::warn!(%user, epoch, %error, retry_in = ?pause, "replica catch-up failed");
                    waiting.insert(user, (Instant::now() + pause, failures));
                }
            }
        }
    }
}

/// How long a node that started on a new, empty store keeps trying to tell the directory
/// (through routers that may be away).
const LOST_WINDOW: Duration = Duration::from_secs(300);

/// A node that starts on a new, empty store (a new disk, a lost volume) no longer holds the
/// replicas the directory says it keeps in sync: it tells the directory they are out of sync,
/// so their homes catch them up whole now — not after a failover promoted an empty copy. The
/// users are those of the first directory the node gets, taken as soon as it has one (users
/// added later start empty on both copies); the copies homed here are gone too, and only
/// logged (their replicas hold the mail: nothing here can tell which copy to trust).
pub async fn report_lost_copies(
    directory: Arc<LiveDirectory>,
    states: Arc<ReplicaStates>,
    node_id: String,
    mut shutdown: watch::Receiver<bool>,
) {
    use crate::directory::Directory;
    let started = Instant::now();
    while !directory.available() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = shutdown.changed() => return,
        }
    }
    let mut lost: Option<std::collections::BTreeSet<String>> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let dir = directory.current();
        let lost = lost.get_or_insert_with(|| {
            let homed = dir.users_homed_on(&node_id).count();
            if homed > 0 {
                tracing::error!(
                    homed,
                    "this node's store is new and empty, yet users are homed here: their mail \
                    is on their replicas, if any; make each one's replica its home (sirms ctl users add \
                    ADDRESS --home REPLICA --keep-password) before it gets mail"
                );
            }
            dir.users_replicated_on(&node_id).filter(|(_, r)| r.replica_in_sync).map(|(u, _)| u.to_string()).collect()
        });
        // Those still said to be here and in sync (another node may have marked one already).
        lost.retain(|user| dir.user(user).is_some_and(|r| r.replica == node_id && r.replica_in_sync));
        for user in lost.clone() {
            let Some(epoch) = dir.user(&user).map(|r| r.epoch) else { continue };
            match states.set(&user, epoch, false).await {
                Ok(()) => {
                    tracing::warn!(%user, epoch, "replica lost with the store: marked out of sync to be caught up");
                    lost.remove(&user);
                }
                Err(e) => tracing::info!(%user, epoch, error = %e, "cannot mark a lost replica yet; trying again"),
            }
        }
        if lost.is_empty() {
            return;
        }
        if started.elapsed() >= LOST_WINDOW {
            tracing::error!(users = lost.len(), "could not tell the directory that these replicas were lost");
            return;
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
    }
}
