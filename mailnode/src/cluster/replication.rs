//! Replication, the writer's side: after the primary made a write, the same write goes to the
//! replica as a record carrying the primary's UIDs and MODSEQs, and the write is acknowledged
//! only when the replica has it on disk too.
//!
//! When the replica cannot take it, the write may still be acknowledged, but only after the
//! directory has recorded the replica as out of sync (a compare-and-swap on the user's
//! epoch). If that fails too — no router answers, or the epoch moved on because this node was
//! replaced as the user's primary — the write is undone where it can be and refused: a
//! client is never told "done" for something only one copy holds without the directory
//! knowing. A replica out of sync gets writes only as a favour (for at most a second each);
//! it is caught up whole by [`HomeStore::catch_up`](super::home_store::HomeStore::catch_up).
//!
//! A replica node that stopped answering is not waited for again by every write (see
//! [`super::unreachable`]): for a few seconds after it failed, writes go on as if it had
//! failed them too (marked out of sync first where it was in sync), and one write now and
//! then tries it again. Otherwise each write would wait out a connection attempt to a dead
//! node (3 to 5 s, and the writes sharing the connection queue behind one another) or an
//! unanswered call ([`APPLY_TIMEOUT`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sirms_storage::replica::sync::{self, SyncReport};
use sirms_storage::{
    Apply, BodyPart, CopyResult, FlagOp, Flags, MailboxStatus, ReplicaStore, Result, StoreError, SystemFlags, UidSet,
};

use super::replica_state::ReplicaStates;
use super::unreachable::Unreachable;
use crate::directory::LiveDirectory;

/// How long a replica may take to store one record, beyond the time its bytes take at
/// [`APPLY_RATE`]: a healthy replica answers in milliseconds, and every write waits this long
/// for one that froze before it is marked out of sync.
const APPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// The slowest transfer to a replica allowed for, in bytes per second.
const APPLY_RATE: u64 = 8 * 1024 * 1024;
/// The pauses before a flag record that found no message is sent again.
const OVERTAKEN_RETRIES: [Duration; 3] =
    [Duration::from_millis(10), Duration::from_millis(50), Duration::from_millis(250)];
/// How long a write that met a newer epoch waits for the node's directory to show it.
const RENEW_WAIT: Duration = Duration::from_secs(3);
/// How many newer epochs one write follows before it is refused.
const MAX_RENEWALS: u8 = 3;
/// How long a write waits for a replica out of sync.
const BEST_EFFORT: Duration = Duration::from_secs(1);
/// How long comparing a whole mailbox or user with the replica may take.
const SYNC_TIMEOUT: Duration = Duration::from_secs(300);
/// A user's second copy.
pub struct Replica {
    pub id: String,
    /// Its store, or why this node cannot reach it (no endpoint known): then every record
    /// fails as if the replica were down.
    pub store: std::result::Result<Arc<dyn ReplicaStore>, String>,
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
    /// The node's view of the directory, for a write that meets a newer epoch.
    pub directory: Arc<LiveDirectory>,
    /// How many times this write's route was renewed (see [`Route::renewed`]).
    pub renewals: u8,
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

/// How long applying `record` may take.
fn apply_timeout(record: &Apply) -> Duration {
    let bytes = match record {
        Apply::Append { bytes, .. } => bytes.len() as u64,
        _ => 0,
    };
    APPLY_TIMEOUT + Duration::from_secs(bytes / APPLY_RATE)
}

async fn timed<T>(limit: Duration, what: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(limit, what)
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable(format!("no answer in {limit:?}"))))
}

impl Replica {
    fn store(&self) -> Result<&dyn ReplicaStore> {
        self.store.as_deref().map_err(|why| StoreError::Unavailable(why.clone()))
    }
}

impl Route {
    /// Sends `records` (one write's) to the replica, and settles a failure as the module
    /// says: acknowledged alone only once the directory knows.
    pub async fn replicate(&self, records: Vec<Apply>, undo: Undo) -> Result<()> {
        self.deliver(records, false, undo).await
    }

    /// Sends `record` if there is one, then compares the user's mailboxes whole.
    pub async fn replicate_then_compare(&self, record: Option<Apply>) -> Result<()> {
        self.deliver(record.into_iter().collect(), true, Undo::Nothing).await
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
        self.deliver(records, false, undo).await
    }

    /// Sends one write's records (then, if `compare`, compares the user whole). To a replica in
    /// sync, as the module says. To one out of sync, briefly and as a favour: a catch-up under
    /// way then misses as little as possible, and a replica that is down stalls nothing.
    async fn deliver(&self, records: Vec<Apply>, compare: bool, undo: Undo) -> Result<()> {
        let Some(replica) = &self.replica else { return Ok(()) };
        let sent = records.clone();
        let work = async {
            self.send(replica, sent).await?;
            if compare {
                self.sync_user(replica).await?;
            }
            Ok(())
        };
        let outcome = if replica.in_sync {
            work.await
        } else {
            let favour = match tokio::time::timeout(BEST_EFFORT, work).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    self.unreachable.failed(&replica.id);
                    Err(StoreError::Unavailable(format!("no answer in {BEST_EFFORT:?}")))
                }
            };
            match favour {
                Ok(()) => Ok(()),
                Err(StoreError::StaleEpoch(newer)) => Err(StoreError::StaleEpoch(newer)),
                Err(_) => self.behind_still().await,
            }
        };
        if let Err(StoreError::StaleEpoch(newer)) = outcome
            && let Some(renewed) = self.renewed(newer).await
        {
            return Box::pin(renewed.deliver(records, compare, undo)).await;
        }
        self.settle(replica, outcome, undo).await
    }

    /// Whether a write the replica out of sync did not take may be acknowledged on the primary
    /// alone: only while the primary's epoch floor is still this route's. A catch-up raises
    /// the floor to the epoch its marking will make before its last compare, and marks the
    /// replica in sync only after that compare (`HomeStore::ready_to_mark_in_sync`): a write
    /// the primary took before the raise is copied by the compare; one after it finds the floor
    /// moved, and goes to the replica at the new epoch like any write to a replica in sync, or
    /// is refused. Either way, no write is acknowledged on one copy while the directory counts
    /// two.
    async fn behind_still(&self) -> Result<()> {
        match self.primary.fence(&self.user, 0).await {
            Ok(floor) if floor > self.epoch => Err(StoreError::StaleEpoch(floor)),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// This route at the user's epoch `newer` (which a replica reported), once the node's
    /// directory has it, if it still names the same primary and replica: the epoch moved on
    /// for the replica's state (marked behind by another write or an audit, or caught up),
    /// not because this node was replaced, and the write is sent again at the new epoch.
    /// `None` when the home or the replica changed, or the directory did not catch up in time.
    async fn renewed(&self, newer: u64) -> Option<Route> {
        let replica = self.replica.as_ref()?;
        if self.renewals >= MAX_RENEWALS {
            return None;
        }
        let record = self.directory.user_at_epoch(&self.user, newer, RENEW_WAIT).await?;
        if record.home != self.primary_id || record.replica != replica.id {
            return None;
        }
        self.primary.fence(&self.user, record.epoch).await.ok()?;
        let in_sync = record.replica_in_sync && !self.states.marked_behind(&self.user, record.epoch);
        tracing::debug!(user = %self.user, from = self.epoch, to = record.epoch, in_sync, "write goes on at a newer epoch");
        Some(Route {
            user: self.user.clone(),
            primary_id: self.primary_id.clone(),
            primary: self.primary.clone(),
            replica: Some(Replica { id: replica.id.clone(), store: replica.store.clone(), in_sync }),
            epoch: record.epoch,
            states: self.states.clone(),
            unreachable: self.unreachable.clone(),
            directory: self.directory.clone(),
            renewals: self.renewals + 1,
        })
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
            let limit = apply_timeout(&record);
            // A flag change can overtake the append of its message (another session's write,
            // still on its way): that append lands in milliseconds, so the record is tried
            // again before the user is compared whole. Only flag records are kept for that.
            let again = matches!(record, Apply::Flags { .. }).then(|| record.clone());
            let mut outcome = timed(limit, replica.store()?.apply(&self.user, self.epoch, record)).await;
            if let Some(record) = again {
                for pause in OVERTAKEN_RETRIES {
                    if !matches!(outcome, Err(StoreError::Diverged(_))) {
                        break;
                    }
                    tokio::time::sleep(pause).await;
                    outcome = timed(limit, replica.store()?.apply(&self.user, self.epoch, record.clone())).await;
                }
            }
            self.unreachable.note(&replica.id, !matches!(outcome, Err(StoreError::Unavailable(_))));
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
        let sync = sync::sync_user(&*self.primary, replica.store()?, &self.user, self.epoch);
        let outcome = timed(SYNC_TIMEOUT, sync).await;
        // A failed compare says nothing of the replica alone (the primary's side, or writes
        // racing it, can fail it too): only a record the replica did not answer marks it.
        if outcome.is_ok() {
            self.unreachable.note(&replica.id, true);
        }
        outcome
    }

    async fn settle(&self, replica: &Replica, outcome: Result<()>, undo: Undo) -> Result<()> {
        let error = match outcome {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if let StoreError::StaleEpoch(newer) = error {
            // Replaced as the primary mid-write (a move or a failover). A catch-up pass may have
            // copied the message to the replica — now perhaps the home — before the change:
            // then both copies hold it, and taking it back here while telling the client to try
            // again would leave it there twice once the client does.
            if self.replica_holds(replica, &undo).await {
                tracing::info!(user = %self.user, replica = %replica.id,
                    "replaced as primary during the write, but the other copy holds it: acknowledged");
                return Ok(());
            }
            self.undo(undo).await;
            return Err(StoreError::Unavailable(format!(
                "{} was replaced as {}'s primary (epoch {} is older than {newer}); try again",
                self.primary_id, self.user, self.epoch
            )));
        }
        match self.states.mark_behind(&self.user, self.epoch).await {
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

    /// Whether the primary's store lost the user's mail: it has never seen an epoch of the user
    /// while the in-sync replica has (the replica only ever gets what the primary got first).
    /// Then nothing is written to it — it would hand out the replica's UIDs again for other
    /// messages — and the replica is made the home. `Ok(false)`: the replica could not be
    /// asked, so nothing is known.
    pub async fn refuse_a_lost_primary(&self) -> Result<bool> {
        let Some(replica) = self.replica.as_ref().filter(|r| r.in_sync) else { return Ok(true) };
        if self.primary.fence(&self.user, 0).await? > 0 {
            return Ok(true);
        }
        let Ok(store) = replica.store() else { return Ok(false) };
        let theirs = match timed(APPLY_TIMEOUT, store.fence(&self.user, 0)).await {
            Ok(epoch) => epoch,
            // An unreachable replica cannot tell: the write goes on, and fails over it as usual.
            Err(_) => return Ok(false),
        };
        if theirs == 0 {
            return Ok(true);
        }
        tracing::error!(user = %self.user, home = %self.primary_id, replica = %replica.id,
            "the home's store has none of the user's mail, the replica has: making the replica the home");
        let promoted = self.states.promote(&self.user, self.epoch).await;
        Err(StoreError::Unavailable(format!(
            "{}'s mail is missing on its home {} (promoting the replica {}: {promoted:?}); try again",
            self.user, self.primary_id, replica.id
        )))
    }

    /// Whether every message `undo` would take back is on the replica too: the same UIDs, with
    /// the same sizes and internal dates as on the primary.
    async fn replica_holds(&self, replica: &Replica, undo: &Undo) -> bool {
        let Undo::Remove { mailbox, uids } = undo else { return false };
        let Ok(store) = replica.store() else { return false };
        let user = self.user.as_str();
        let ours = self.primary.fetch(user, mailbox, uids, BodyPart::None).await;
        let theirs = timed(APPLY_TIMEOUT, store.fetch(user, mailbox, uids, BodyPart::None)).await;
        let (Ok(ours), Ok(theirs)) = (ours, theirs) else { return false };
        !ours.is_empty()
            && ours.iter().all(|o| {
                theirs.iter().any(|t| {
                    t.meta.uid == o.meta.uid
                        && t.meta.size == o.meta.size
                        && t.meta.internal_date == o.meta.internal_date
                })
            })
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
