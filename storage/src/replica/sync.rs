//! Catching a replica up: the primary's mailboxes compared whole with the replica's, and
//! what differs sent as records. Used when a replica was out of reach, is new, or answered a
//! record with [`StoreError::Diverged`].
//!
//! Writes may go on meanwhile (they are sent to the replica too), so a pass can race one and
//! leave a difference; passes repeat until one finds nothing to change, and only then may the
//! caller call the replica in sync.

use std::collections::HashMap;

use crate::error::{Result, StoreError};
use crate::mailbox::{MailboxInfo, SpecialUse};
use crate::message::{BodyPart, MessageMeta};
use crate::replica::{Apply, ReplicaStore};
use crate::store::MailStore;
use crate::uidset::UidSet;

/// Most message bytes fetched from the primary in one call.
const BATCH_BYTES: u64 = 8 * 1024 * 1024;
/// Passes before a catch-up gives up on a mailbox that keeps changing under it.
const MAX_PASSES: usize = 5;

/// What a catch-up changed on the replica.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    /// Mailboxes made again (new, or with another UIDVALIDITY) or deleted.
    pub mailboxes: usize,
    pub appended: usize,
    pub flagged: usize,
    pub expunged: usize,
    /// Subscriptions and counters set.
    pub other: usize,
}

impl SyncReport {
    /// Every change counted.
    pub fn changes(&self) -> usize {
        self.mailboxes + self.appended + self.flagged + self.expunged + self.other
    }

    /// Counts `other`'s changes too.
    pub fn add(&mut self, other: SyncReport) {
        self.mailboxes += other.mailboxes;
        self.appended += other.appended;
        self.flagged += other.flagged;
        self.expunged += other.expunged;
        self.other += other.other;
    }
}

/// Makes the replica hold what the primary holds for `user`, pass after pass until one finds
/// nothing to change.
pub async fn sync_user(
    primary: &dyn MailStore,
    replica: &dyn ReplicaStore,
    user: &str,
    epoch: u64,
) -> Result<SyncReport> {
    let mut total = SyncReport::default();
    let mut last = SyncReport::default();
    for _ in 0..MAX_PASSES {
        last = sync_pass(primary, replica, user, epoch).await?;
        total.add(last);
        if last.changes() == 0 {
            return Ok(total);
        }
    }
    Err(StoreError::Unavailable(format!("{user}'s mailboxes kept changing during the catch-up (last pass: {last:?})")))
}

async fn sync_pass(primary: &dyn MailStore, replica: &dyn ReplicaStore, user: &str, epoch: u64) -> Result<SyncReport> {
    let ours = primary.list_mailboxes(user).await?;
    let theirs = replica.list_mailboxes(user).await?;
    let mut report = SyncReport::default();
    // Mailboxes the primary no longer has, children before their parents.
    let mut gone: Vec<&MailboxInfo> =
        theirs.iter().filter(|t| t.name != "INBOX" && !ours.iter().any(|o| o.name == t.name)).collect();
    gone.sort_by_key(|m| std::cmp::Reverse(m.name.matches(crate::mailbox::DELIMITER).count()));
    for m in gone {
        replica.apply(user, epoch, Apply::Delete { name: m.name.clone() }).await?;
        report.mailboxes += 1;
    }
    for m in &ours {
        let subscribed = theirs.iter().find(|t| t.name == m.name).map(|t| t.subscribed);
        report.add(sync_mailbox(primary, replica, user, epoch, &m.name, m.special_use).await?);
        if subscribed != Some(m.subscribed) {
            let record = Apply::Subscribe { name: m.name.clone(), subscribed: m.subscribed };
            replica.apply(user, epoch, record).await?;
            report.other += 1;
        }
    }
    report.other += sync_user_files(primary, replica, user, epoch).await?;
    Ok(report)
}

/// Gives the replica the primary's user files (Sieve scripts) exactly; returns how many records
/// that took.
async fn sync_user_files(primary: &dyn MailStore, replica: &dyn ReplicaStore, user: &str, epoch: u64) -> Result<usize> {
    let ours = primary.user_files(user).await?;
    let theirs = replica.user_files(user).await?;
    let mut records = 0;
    for gone in theirs.iter().filter(|t| !ours.iter().any(|o| o.name == t.name)) {
        replica.apply(user, epoch, Apply::UserFile { name: gone.name.clone(), content: None }).await?;
        records += 1;
    }
    for file in ours.into_iter().filter(|o| !theirs.contains(o)) {
        replica.apply(user, epoch, Apply::UserFile { name: file.name, content: Some(file.content) }).await?;
        records += 1;
    }
    Ok(records)
}

/// One pass over one mailbox.
pub async fn sync_mailbox(
    primary: &dyn MailStore,
    replica: &dyn ReplicaStore,
    user: &str,
    epoch: u64,
    name: &str,
    special_use: Option<SpecialUse>,
) -> Result<SyncReport> {
    let mut report = SyncReport::default();
    let (status, ours) = primary.messages(user, name).await?;
    let uid_validity = status.uid_validity;
    let (their_status, theirs) = match replica.messages(user, name).await {
        Ok((s, list)) if s.uid_validity == uid_validity => (s, list),
        Ok(_) | Err(StoreError::NoSuchMailbox) => {
            replica.apply(user, epoch, Apply::Mailbox { name: name.to_string(), uid_validity, special_use }).await?;
            report.mailboxes += 1;
            replica.messages(user, name).await?
        }
        Err(e) => return Err(e),
    };
    let theirs: HashMap<u32, MessageMeta> = theirs.into_iter().map(|m| (m.uid, m)).collect();
    let same_message = |a: &MessageMeta, b: &MessageMeta| a.size == b.size && a.internal_date == b.internal_date;
    let ours_by_uid: HashMap<u32, &MessageMeta> = ours.iter().map(|m| (m.uid, m)).collect();
    // On the replica but not the primary, or another message under the same UID (written by
    // a primary that was replaced before it could acknowledge it).
    let extra: Vec<u32> = theirs
        .values()
        .filter(|t| ours_by_uid.get(&t.uid).is_none_or(|o| !same_message(o, t)))
        .map(|t| t.uid)
        .collect();
    if !extra.is_empty() {
        report.expunged += extra.len();
        let record = Apply::Expunge { mailbox: name.to_string(), uid_validity, uids: extra.clone() };
        replica.apply(user, epoch, record).await?;
    }
    let missing: Vec<&MessageMeta> =
        ours.iter().filter(|o| !theirs.contains_key(&o.uid) || extra.contains(&o.uid)).collect();
    for batch in batches(&missing) {
        for fetched in primary.fetch(user, name, &batch, BodyPart::Full).await? {
            let Some(bytes) = fetched.body else { continue };
            let record = Apply::Append { mailbox: name.to_string(), uid_validity, meta: fetched.meta, bytes };
            replica.apply(user, epoch, record).await?;
            report.appended += 1;
        }
    }
    let stale: Vec<MessageMeta> = ours
        .iter()
        .filter(|o| {
            theirs.get(&o.uid).is_some_and(|t| same_message(o, t) && (t.flags != o.flags || t.modseq != o.modseq))
        })
        .cloned()
        .collect();
    if !stale.is_empty() {
        report.flagged += stale.len();
        let record = Apply::Flags { mailbox: name.to_string(), uid_validity, metas: stale, exact: true };
        replica.apply(user, epoch, record).await?;
    }
    if their_status.uid_next < status.uid_next || their_status.highest_modseq < status.highest_modseq {
        report.other += 1;
        let record = Apply::Counters {
            mailbox: name.to_string(),
            uid_validity,
            uid_next: status.uid_next,
            highest_modseq: status.highest_modseq,
        };
        replica.apply(user, epoch, record).await?;
    }
    Ok(report)
}

/// The messages as UID sets of at most [`BATCH_BYTES`] each (a bigger message alone).
fn batches(messages: &[&MessageMeta]) -> Vec<UidSet> {
    let mut out = Vec::new();
    let (mut set, mut bytes) = (UidSet::new(), 0u64);
    for m in messages {
        if !set.is_empty() && bytes + m.size > BATCH_BYTES {
            out.push(std::mem::take(&mut set));
            bytes = 0;
        }
        set.insert(m.uid);
        bytes += m.size;
    }
    if !set.is_empty() {
        out.push(set);
    }
    out
}
