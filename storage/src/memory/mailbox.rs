//! One mailbox of the memory store: its messages, counters, keyword list and watchers.

use std::collections::BTreeMap;

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::change::Change;
use crate::error::{Result, StoreError};
use crate::flags::{Flags, SystemFlags};
use crate::local::maildir::MAX_KEYWORDS;
use crate::mailbox::{MailboxStatus, SpecialUse};
use crate::message::MessageMeta;
use crate::uidset::UidSet;

/// How many changes a slow watcher may fall behind before it is told it lagged (as `LocalStore`).
pub const WATCH_BACKLOG: usize = 1024;

/// One message.
#[derive(Debug, Clone)]
pub struct Message {
    pub bytes: Bytes,
    pub flags: Flags,
    pub internal_date: i64,
    pub modseq: u64,
    /// What `cache_put` kept for it; it goes with the message, so an expunge takes it along.
    pub cached: Option<Bytes>,
}

impl Message {
    /// The public metadata.
    pub fn meta(&self, uid: u32) -> MessageMeta {
        MessageMeta {
            uid,
            flags: self.flags.clone(),
            internal_date: self.internal_date,
            size: self.bytes.len() as u64,
            modseq: self.modseq,
        }
    }
}

/// A mailbox and its counters, which start where a new `LocalStore` folder's do.
pub struct Mailbox {
    pub special_use: Option<SpecialUse>,
    pub uid_validity: u32,
    pub uid_next: u32,
    pub highest_modseq: u64,
    /// Messages from this UID on are `\Recent` to the next session that claims them.
    pub recent_floor: u32,
    /// Every keyword ever set here: `LocalStore` gives each a letter of the folder's file
    /// names and never takes one back, so the limit counts them all.
    keywords: Vec<String>,
    pub messages: BTreeMap<u32, Message>,
    changes: broadcast::Sender<Change>,
}

impl Mailbox {
    /// An empty mailbox.
    pub fn new(uid_validity: u32, special_use: Option<SpecialUse>) -> Mailbox {
        Mailbox {
            special_use,
            uid_validity,
            uid_next: 1,
            highest_modseq: 1,
            recent_floor: 1,
            keywords: Vec::new(),
            messages: BTreeMap::new(),
            changes: broadcast::channel(WATCH_BACKLOG).0,
        }
    }

    /// STATUS counters.
    pub fn status(&self) -> MailboxStatus {
        let mut status = MailboxStatus {
            messages: self.messages.len() as u32,
            uid_next: self.uid_next,
            uid_validity: self.uid_validity,
            highest_modseq: self.highest_modseq,
            ..Default::default()
        };
        for (uid, message) in &self.messages {
            if !message.flags.system.contains(SystemFlags::SEEN) {
                status.unseen += 1;
            }
            if *uid >= self.recent_floor {
                status.recent += 1;
            }
            status.size += message.bytes.len() as u64;
        }
        status
    }

    /// The UIDs of the messages in `uids`, in order.
    pub fn uids_in(&self, uids: &UidSet) -> Vec<u32> {
        uids.ranges().iter().flat_map(|&(lo, hi)| self.messages.range(lo..=hi).map(|(uid, _)| *uid)).collect()
    }

    /// Adds `flags`' keywords to the mailbox's list, with `LocalStore`'s checks and limit.
    pub fn learn_keywords(&mut self, flags: &Flags) -> Result<()> {
        if flags.keywords.iter().all(|k| self.keywords.contains(k)) {
            return Ok(());
        }
        let mut list = self.keywords.clone();
        for keyword in &flags.keywords {
            if !Flags::valid_keyword(keyword) {
                return Err(StoreError::InvalidKeyword);
            }
            if !list.contains(keyword) {
                list.push(keyword.clone());
            }
        }
        if list.len() > MAX_KEYWORDS {
            return Err(StoreError::TooManyKeywords);
        }
        self.keywords = list;
        Ok(())
    }

    /// Adds a message under the next UID with the next modseq, and tells the watchers.
    pub fn add(&mut self, message: Message) -> Result<u32> {
        self.add_keeping(None, message)
    }

    /// [`Mailbox::add`] under `keep` if no UID at or above it was handed out yet.
    pub fn add_keeping(&mut self, keep: Option<u32>, mut message: Message) -> Result<u32> {
        let uid = keep.filter(|&k| k >= self.uid_next).unwrap_or(self.uid_next);
        self.uid_next = uid.checked_add(1).ok_or(StoreError::Index("UID space exhausted".into()))?;
        self.highest_modseq += 1;
        message.modseq = self.highest_modseq;
        self.notify(Change::Appended(message.meta(uid)));
        self.messages.insert(uid, message);
        Ok(uid)
    }

    /// Removes messages (`uids` in order, all present) as one change.
    pub fn remove(&mut self, uids: &[u32]) {
        if uids.is_empty() {
            return;
        }
        for uid in uids {
            self.messages.remove(uid);
        }
        self.highest_modseq += 1;
        self.notify(Change::Expunged(uids.to_vec()));
    }

    /// A receiver of this mailbox's changes.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Tells watchers about a change.
    pub fn notify(&self, change: Change) {
        // No receivers is normal: nobody is watching.
        let _ = self.changes.send(change);
    }

    /// Tells the watchers the mailbox is gone (deleted, or renamed away).
    pub fn retire(&self) {
        self.notify(Change::MailboxGone);
    }

    /// The mailbox under a new name: its watchers are told it is gone, as `LocalStore`'s are,
    /// and watchers of the new name start afresh.
    pub fn renamed(mut self) -> Mailbox {
        self.retire();
        self.changes = broadcast::channel(WATCH_BACKLOG).0;
        self
    }
}
