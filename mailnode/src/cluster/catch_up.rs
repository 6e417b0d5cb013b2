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
/// How long an audit waits for a user's home to say whether it was ever written to.
const HOME_ANSWER: Duration = Duration::from_secs(3);
/// How often this node's own store is audited after an audit that checked every copy.
const AUDIT_EVERY: Duration = Duration::from_secs(300);
/// How soon an audit that could not check every copy (a peer not known or not answering yet,
/// typically just after the start) is run again.
const AUDIT_RETRY: Duration = Duration::from_secs(4);

/// Checks that this node's store holds the copies the directory counts on (see the module);
/// returns whether every copy could be checked.
async fn audit(store: &HomeStore, dir: &DirectoryData, states: &ReplicaStates, node_id: &str) -> bool {
    let Ok(own) = store.node_store(node_id) else { return false };
    let (mut homes, mut replicas, mut unchecked) = (0, 0, 0);
    for (user, record) in dir.users().filter(|(_, r)| r.replica_in_sync && !r.replica.is_empty()) {
        if record.home == node_id {
            homes += 1;
            let checked = match store.route(user) {
                Ok(route) => route.refuse_a_lost_primary().await,
                Err(e) => Err(e),
            };
            match checked {
                Ok(true) => {}
                Ok(false) => unchecked += 1,
                Err(e) => {
                    // Refused because this store lost the mail: the promotion it asked for is
                    // seen at the next audit, soon, or asked for again.
                    tracing::error!(%user, error = %e, "audit: this node lost the user's mail");
                    unchecked += 1;
                }
            }
        } else if record.replica == node_id {
            replicas += 1;
            // A store that never saw an epoch of the user lost its copy, unless the home never
            // saw one either: then no write was ever made (a user added, never written to).
            // A home that cannot tell counts as written to: an empty copy must not be promoted.
            let lost = own.fence(user, 0).await.is_ok_and(|epoch| epoch == 0) && {
                let home_floor = match store.node_store(&record.home) {
                    Ok(home) => tokio::time::timeout(HOME_ANSWER, home.fence(user, 0)).await.ok().and_then(Result::ok),
                    Err(_) => None,
                };
                home_floor != Some(0)
            };
            if lost {
                tracing::warn!(%user, "audit: this replica holds none of the user's mail: marking it out of sync");
                if let Err(e) = states.mark_behind(user, record.epoch).await {
                    tracing::warn!(%user, error = %e, "audit: cannot mark the replica out of sync");
                    unchecked += 1;
                }
            }
        }
    }
    tracing::info!(homes, replicas, unchecked, "audit of this node's copies done");
    unchecked == 0
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
    let mut next_audit = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let dir = directory.current();
        if directory.available() && Instant::now() >= next_audit {
            let complete = audit(&store, &dir, &states, &node_id).await;
            next_audit = Instant::now() + if complete { AUDIT_EVERY } else { AUDIT_RETRY };
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
                let (route, report) = store.ready_to_mark_in_sync(&user).await.map_err(|e| e.to_string())?;
                if route.epoch != epoch {
                    return Err(format!("epoch moved from {epoch} to {}", route.epoch));
                }
                states.mark_in_sync(&user, epoch).await.map_err(|e| e.to_string())?;
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
