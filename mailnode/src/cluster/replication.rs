//! Replication, the writer's side: after the primary made a write, the same write goes to the
//! replica as a record carrying the primary's UIDs and MODSEQs, and the write is acknowledged
//! only when the replica has it on disk too.
//!
//! When the replica cannot take it, the write may still be acknowledged, but only after the
//! directory has recorded the replica as out of sync (a compare-and-swap on the user's
//! epoch). If that fails too — no router answers, or the epoch moved on because this node was
//! replaced as the user's primary — the write is undone where it can be and refused: a
//! client is never told "done" for something only one copy holds without the directory
//! knowing. A replica out of sync still gets every write it can take, and is caught up whole
//! by [`HomeStore::catch_up`](super::home_store::HomeStore::catch_up).
//!
//! A replica node that stopped answering is not waited for again by every write: for
//! [`HOLD`] after it failed, writes go on as if it had failed them too (marked out of sync
//! first where it was in sync), and one write per [`HOLD`] tries it again. Otherwise each
//! write would wait out a connection attempt to a dead node (3 to 5 s, and the writes sharing
//! the connection queue behind one another) or an unanswered call ([`APPLY_TIMEOUT`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sirms_storage::replica::sync::{self, SyncReport};
use sirms_storage::{
    Apply, CopyResult, FlagOp, Flags, MailboxStatus, ReplicaStore, Result, StoreError, SystemFlags, UidSet,
};

use super::replica_state::ReplicaStates;

/// How long a replica may take to store one record.
const APPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long comparing a whole mailbox or user with the replica may take.
const SYNC_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a replica node that failed is not waited for (see the module's text).
pub const HOLD: Duration = Duration::from_secs(3);

/// Replica nodes that failed lately, and when: shared by every write of a node.
#[derive(Debug, Default)]
pub struct Unreachable {
    failed: Mutex<HashMap<String, Instant>>,
}

impl Unreachable {
    /// Whether node `id` failed less than [`HOLD`] ago.
    pub fn recently_failed(&self, id: &str) -> bool {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).get(id).is_some_and(|at| at.elapsed() < HOLD)
    }

    /// Why a write should not wait for node `id` now; `None`: try it. Once [`HOLD`] has passed
    /// the caller that gets `None` is the one that tries: the others go on skipping until it
    /// reports with [`Unreachable::failed`] or [`Unreachable::answered`].
    fn skip(&self, id: &str) -> Option<String> {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        let at = failed.get_mut(id)?;
        if at.elapsed() < HOLD {
            return Some(format!("replica {id} did not answer lately; tried again every {HOLD:?}"));
        }
        *at = Instant::now();
        None
    }

    fn failed(&self, id: &str) {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_string(), Instant::now());
    }

    fn answered(&self, id: &str) {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// Notes what a call to node `id` came to: an unanswered call marks it, any answer
    /// (an error included) clears it.
    fn note<T>(&self, id: &str, outcome: &Result<T>) {
        match outcome {
            Err(StoreError::Unavailable(_)) => self.failed(id),
            _ => self.answered(id),
        }
    }
}

/// A user's second copy.
pub struct Replica {
    pub id: String,
    pub store: Arc<dyn ReplicaStore>,
    /// Whether the directory says it holds every acknowledged write.
    pub in_sync: bool,
}

/// Where one user's mailbox is, at one epoch.
pub struct Route {
    pub user: String,
    pub primary_id: String,
    pub primary: Arc<dyn ReplicaStore>,
    pub replica: Option<Replica>,
    pub epoch: u64,
    pub states: Arc<ReplicaStates>,
    /// Replica nodes that failed lately (the node's, shared by its writes).
    pub unreachable: Arc<Unreachable>,
}

/// What to take back on the primary when a write cannot be acknowledged.
pub enum Undo {
    Nothing,
    /// Messages the write added.
    Remove {
        mailbox: String,
        uids: UidSet,
    },
}

async fn timed<T>(limit: Duration, what: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(limit, what)
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable(format!("no answer in {limit:?}"))))
}

impl Route {
    /// Sends `records` (one write's) to the replica, and settles a failure as the module
    /// says: acknowledged alone only once the directory knows.
    pub async fn replicate(&self, records: Vec<Apply>, undo: Undo) -> Result<()> {
        let Some(replica) = &self.replica else { return Ok(()) };
        let outcome = self.send(replica, records).await;
        self.settle(replica, outcome, undo).await
    }

    /// Sends `record` if there is one, then compares the user's mailboxes whole.
    pub async fn replicate_then_compare(&self, record: Option<Apply>) -> Result<()> {
        let Some(replica) = &self.replica else { return Ok(()) };
        let outcome = async {
            self.send(replica, record.into_iter().collect()).await?;
            self.sync_user(replica).await.map(drop)
        };
        let outcome = outcome.await;
        self.settle(replica, outcome, Undo::Nothing).await
    }

    /// The records of an expunge from `mailbox`, whose status is now `status`.
    pub fn expunged(&self, mailbox: &str, status: &MailboxStatus, uids: Vec<u32>) -> Vec<Apply> {
        let uid_validity = status.uid_validity;
        vec![
            Apply::Expunge { mailbox: mailbox.to_string(), uid_validity, uids },
            // UIDNEXT may be past UIDs the replica never saw (appended and expunged while it
            // was out of reach): it must not hand them out after a failover.
            Apply::Counters {
                mailbox: mailbox.to_string(),
                uid_validity,
                uid_next: status.uid_next,
                highest_modseq: status.highest_modseq,
            },
        ]
    }

    /// Replicates a copy (or a move, with `remove_source`) the primary made.
    pub async fn replicate_transfer(
        &self,
        from: &str,
        to: &str,
        result: &CopyResult,
        remove_source: bool,
    ) -> Result<()> {
        if self.replica.is_none() || result.pairs.is_empty() {
            return Ok(());
        }
        let user = self.user.as_str();
        let dest: UidSet = result.pairs.iter().map(|(_, d)| *d).fold(UidSet::new(), |mut set, uid| {
            set.insert(uid);
            set
        });
        let metas = self.primary.fetch(user, to, &dest, sirms_storage::BodyPart::None).await?;
        let pairs = result
            .pairs
            .iter()
            .filter_map(|(source, d)| metas.iter().find(|m| m.meta.uid == *d).map(|m| (*source, m.meta.clone())))
            .collect();
        let mut records =
            vec![Apply::Copy { from: from.to_string(), to: to.to_string(), uid_validity: result.uid_validity, pairs }];
        let undo = if remove_source {
            let status = self.primary.status(user, from).await?;
            records.extend(self.expunged(from, &status, result.pairs.iter().map(|(s, _)| *s).collect()));
            // The messages left the source on the primary: there is nothing to put back.
            Undo::Nothing
        } else {
            Undo::Remove { mailbox: to.to_string(), uids: dest }
        };
        let Some(replica) = &self.replica else { return Ok(()) };
        let outcome = self.send(replica, records).await;
        self.settle(replica, outcome, undo).await
    }

    /// Applies the records in order. A replica that differs from the primary (a mailbox it
    /// lacks or has under another UIDVALIDITY) has the user compared whole instead, which
    /// brings it the record's write too.
    /// A replica node that failed lately is not waited for (see [`Unreachable`]).
    async fn send(&self, replica: &Replica, records: Vec<Apply>) -> Result<()> {
        if let Some(why) = self.unreachable.skip(&replica.id) {
            return Err(StoreError::Unavailable(why));
        }
        for record in records {
            let outcome = timed(APPLY_TIMEOUT, replica.store.apply(&self.user, self.epoch, record)).await;
            self.unreachable.note(&replica.id, &outcome);
            match outcome {
                Err(StoreError::Diverged(why)) => {
                    tracing::info!(user = %self.user, replica = %replica.id, %why, "replica differs: comparing");
                    self.sync_user(replica).await?;
                    return Ok(());
                }
                other => other?,
            }
        }
        Ok(())
    }

    /// Compares every mailbox of the user with the replica until they match.
    pub async fn sync_user(&self, replica: &Replica) -> Result<SyncReport> {
        let sync = sync::sync_user(&*self.primary, &*replica.store, &self.user, self.epoch);
        let outcome = timed(SYNC_TIMEOUT, sync).await;
        // A failed compare says nothing of the replica alone (the primary's side, or writes
        // racing it, can fail it too): only a record the replica did not answer marks it.
        if outcome.is_ok() {
            self.unreachable.answered(&replica.id);
        }
        outcome
    }

    async fn settle(&self, replica: &Replica, outcome: Result<()>, undo: Undo) -> Result<()> {
        let error = match outcome {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if let StoreError::StaleEpoch(newer) = error {
            self.undo(undo).await;
            return Err(StoreError::Unavailable(format!(
                "{} was replaced as {}'s primary (epoch {} is older than {newer}); try again",
                self.primary_id, self.user, self.epoch
            )));
        }
        if !replica.in_sync {
            tracing::debug!(user = %self.user, replica = %replica.id, %error, "replica behind: left to the catch-up");
            return Ok(());
        }
        match self.states.set(&self.user, self.epoch, false).await {
            Ok(()) => {
                tracing::warn!(user = %self.user, replica = %replica.id, %error,
                    "replica failed: marked out of sync, the write is on the primary alone until it catches up");
                Ok(())
            }
            Err(state) => {
                self.undo(undo).await;
                Err(StoreError::Unavailable(format!(
                    "replica {} failed ({error}) and could not be marked out of sync ({state})",
                    replica.id
                )))
            }
        }
    }

    /// Takes back what a refused write added on the primary, so a client told "no" does not
    /// find it later.
    async fn undo(&self, undo: Undo) {
        let Undo::Remove { mailbox, uids } = undo else { return };
        let deleted = Flags::system(SystemFlags::DELETED);
        let user = self.user.as_str();
        let removed = async {
            self.primary.store_flags(user, &mailbox, &uids, FlagOp::Add, &deleted, None).await?;
            self.primary.expunge(user, &mailbox, Some(&uids)).await
        };
        if let Err(e) = removed.await {
            tracing::error!(user, %mailbox, error = %e, "cannot take back a write that was refused");
        }
    }
}
