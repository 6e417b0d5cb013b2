//! The selected mailbox as this session sees it: message sequence numbers ↔ UIDs, flags, \Recent,
//! the keywords the client was told of, and the queue of changes (from this and other sessions)
//! not yet reported to the client.
//!
//! Two rules keep what the client caches consistent with what it was told:
//! - a message's MODSEQ never goes back (RFC 7162 §3.1.1): changes arrive from the store's
//!   stream and from this session's own commands in no fixed order, so one older than what the
//!   view holds is stale and dropped ([`Selected::update`]);
//! - a keyword is in FLAGS before any FETCH shows it (RFC 3501 §7.2.6): the view collects
//!   keywords as it learns flags, and [`Selected::flags_update`] gives the new FLAGS and
//!   PERMANENTFLAGS to send before the responses that use them.

use std::collections::{BTreeSet, VecDeque};

use futures::{FutureExt, StreamExt};
use imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use sirms_storage::{Change, ChangeStream, MailboxStatus, MessageMeta, UidSet};

use super::error::CommandError;
use super::flags;
use super::response::{self, Code, Status};

/// One message of the view.
#[derive(Debug, Clone)]
pub struct Entry {
    pub meta: MessageMeta,
    /// \Recent for this session.
    pub recent: bool,
}

/// The selected mailbox.
pub struct Selected {
    /// The store's (UTF-8) name.
    pub name: String,
    /// EXAMINE, or a mailbox this session may not change.
    pub read_only: bool,
    pub uid_validity: u32,
    pub uid_next: u32,
    pub highest_modseq: u64,
    /// In sequence order, which is UID order.
    messages: Vec<Entry>,
    /// The keywords of every message the view has held, as FLAGS names them.
    keywords: BTreeSet<String>,
    /// `keywords` grew since the client was last sent FLAGS.
    keywords_grew: bool,
    changes: ChangeStream,
    /// Changes read from the stream but not yet reported (EXPUNGE waits for a command that may report it).
    queued: VecDeque<Change>,
    /// The stream ended (mailbox deleted or renamed): no more changes will come.
    pub gone: bool,
    /// The UIDs of the last `SEARCH RETURN (SAVE)`, ascending, for `$` (SEARCHRES, RFC 5182).
    /// Held as UIDs, so that an expunged message drops out when `$` is resolved against the
    /// view; a new view (SELECT) starts with none.
    pub saved: Vec<u32>,
}

impl Selected {
    /// A view from a store snapshot; `changes` must have been opened before the snapshot was taken
    /// so nothing falls between them (duplicates are filtered when reported).
    pub fn new(
        name: String,
        read_only: bool,
        status: MailboxStatus,
        messages: Vec<MessageMeta>,
        recent: &[u32],
        changes: ChangeStream,
    ) -> Selected {
        let messages: Vec<Entry> =
            messages.into_iter().map(|meta| Entry { recent: recent.contains(&meta.uid), meta }).collect();
        let keywords = messages.iter().flat_map(|e| e.meta.flags.keywords.iter().cloned()).collect();
        Selected {
            name,
            read_only,
            uid_validity: status.uid_validity,
            uid_next: status.uid_next,
            highest_modseq: status.highest_modseq,
            messages,
            keywords,
            keywords_grew: false,
            changes,
            queued: VecDeque::new(),
            gone: false,
            saved: Vec::new(),
        }
    }

    /// How many messages the client knows of (the last EXISTS).
    pub fn exists(&self) -> u32 {
        u32::try_from(self.messages.len()).unwrap_or(u32::MAX)
    }

    /// The messages in sequence order.
    pub fn entries(&self) -> &[Entry] {
        &self.messages
    }

    /// The message at 0-based `index`.
    pub fn entry(&self, index: usize) -> Option<&Entry> {
        self.messages.get(index)
    }

    /// The 0-based index of `uid`.
    pub fn index_of(&self, uid: u32) -> Option<usize> {
        self.messages.binary_search_by_key(&uid, |e| e.meta.uid).ok()
    }

    /// The highest UID in the view.
    pub fn last_uid(&self) -> u32 {
        self.messages.last().map_or(0, |e| e.meta.uid)
    }

    /// Updates a message's metadata (after STORE or a reported change) unless the view already
    /// holds a newer state of it; true if `meta` is newer than what the view held.
    pub fn update(&mut self, meta: MessageMeta) -> bool {
        let Some(i) = self.index_of(meta.uid) else { return false };
        let held = self.messages[i].meta.modseq;
        if meta.modseq < held {
            return false;
        }
        self.highest_modseq = self.highest_modseq.max(meta.modseq);
        self.learn_keywords(&meta.flags);
        self.messages[i].meta = meta;
        held < self.messages[i].meta.modseq
    }

    /// Adds a message at the end; false if it is already known.
    pub fn push(&mut self, meta: MessageMeta) -> bool {
        if meta.uid <= self.last_uid() {
            return false;
        }
        self.uid_next = self.uid_next.max(meta.uid.saturating_add(1));
        self.highest_modseq = self.highest_modseq.max(meta.modseq);
        self.learn_keywords(&meta.flags);
        self.messages.push(Entry { meta, recent: false });
        true
    }

    fn learn_keywords(&mut self, flags: &sirms_storage::Flags) {
        for keyword in &flags.keywords {
            if !self.keywords.contains(keyword) {
                self.keywords.insert(keyword.clone());
                self.keywords_grew = true;
            }
        }
    }

    /// The untagged FLAGS and PERMANENTFLAGS of the mailbox (SELECT sends them, and so does
    /// any command after which the mailbox has keywords the client was not told of).
    pub fn flags_responses(&self) -> Vec<u8> {
        let all = flags::mailbox_flags(&self.keywords);
        let mut lines = format!("* FLAGS ({all})\r\n").into_bytes();
        // Any keyword may be created (`\*`), and each one used is kept.
        let permanent = if self.read_only { String::new() } else { format!("{all} \\*") };
        lines.extend(response::status(None, Status::Ok, Some(&Code::PermanentFlags(permanent)), "flags permitted"));
        lines
    }

    /// FLAGS and PERMANENTFLAGS again if the view learned keywords since they were last sent:
    /// to be written before any response that shows the flags of a message.
    pub fn flags_update(&mut self) -> Option<Vec<u8>> {
        if !self.keywords_grew {
            return None;
        }
        self.keywords_grew = false;
        Some(self.flags_responses())
    }

    /// Marks messages \Recent for this session.
    pub fn mark_recent(&mut self, uids: &[u32]) {
        for &uid in uids {
            if let Some(i) = self.index_of(uid) {
                self.messages[i].recent = true;
            }
        }
    }

    /// Removes one message; returns the sequence number it had (for `* n EXPUNGE`).
    pub fn remove(&mut self, uid: u32) -> Option<u32> {
        let i = self.index_of(uid)?;
        self.messages.remove(i);
        u32::try_from(i + 1).ok()
    }

    /// The 0-based indexes a sequence set names, ascending and without duplicates.
    ///
    /// Message numbers beyond EXISTS are an error (RFC 3501 §9 "seq-number"); UIDs that do not
    /// exist are skipped, as a UID set may name expunged messages.
    pub fn resolve(&self, set: &SequenceSet, uid: bool) -> Result<Vec<usize>, CommandError> {
        let count = self.messages.len();
        let mut picked = vec![false; count];
        for sequence in set.0.as_ref() {
            let (a, b) = match sequence {
                Sequence::Single(x) => (*x, *x),
                Sequence::Range(a, b) => (*a, *b),
            };
            if uid {
                let (lo, hi) = bounds(a, b, self.last_uid());
                let start = self.messages.partition_point(|e| e.meta.uid < lo);
                let end = self.messages.partition_point(|e| e.meta.uid <= hi);
                for p in picked.iter_mut().take(end).skip(start) {
                    *p = true;
                }
            } else {
                let value = |x: SeqOrUid| -> Result<usize, CommandError> {
                    let n = match x {
                        SeqOrUid::Value(v) => v.get() as usize,
                        SeqOrUid::Asterisk => count,
                    };
                    if n == 0 || n > count {
                        return Err(CommandError::bad("invalid message sequence number"));
                    }
                    Ok(n - 1)
                };
                let (x, y) = (value(a)?, value(b)?);
                for p in picked.iter_mut().take(x.max(y) + 1).skip(x.min(y)) {
                    *p = true;
                }
            }
        }
        Ok(picked.iter().enumerate().filter(|(_, p)| **p).map(|(i, _)| i).collect())
    }

    /// The saved result (`$`) as the messages still in the view: their UIDs, or with `uid`
    /// false their sequence numbers, as a set; `None` when none is left.
    pub fn saved_set(&self, uid: bool) -> Option<SequenceSet> {
        let numbers: Vec<u32> = self
            .saved
            .iter()
            .filter_map(|&u| self.index_of(u))
            .map(|i| if uid { self.messages[i].meta.uid } else { i as u32 + 1 })
            .collect();
        number_set(&numbers)
    }

    /// The UIDs `set` (`None`: every UID) names that no message in the view has, rendered as a set (empty: none):
    /// what VANISHED (EARLIER) reports (RFC 7162 §3.2.10). `*` and ranges reach up to the last
    /// UID ever given, not beyond. The store keeps no record of when a message was expunged, so
    /// every such UID is reported, expunged before the client's MODSEQ or never seen by it,
    /// which §3.2.5.2 allows; the answer grows with the messages present, not with the set.
    pub fn vanished(&self, set: Option<&SequenceSet>) -> String {
        let top = self.uid_next.saturating_sub(1).max(self.last_uid());
        let named: Vec<(u32, u32)> = match set {
            None => vec![(1, top)],
            Some(set) => ranges(set, top).collect(),
        };
        let mut ranges: Vec<(u32, u32)> =
            (named.into_iter()).map(|(lo, hi)| (lo, hi.min(top))).filter(|(lo, hi)| lo <= hi).collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::new();
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        let mut gaps: Vec<String> = Vec::new();
        let mut gap = |lo: u32, hi: u32| gaps.push(if lo == hi { lo.to_string() } else { format!("{lo}:{hi}") });
        for (lo, hi) in merged {
            let mut next = lo;
            let start = self.messages.partition_point(|e| e.meta.uid < lo);
            for entry in self.messages[start..].iter().take_while(|e| e.meta.uid <= hi) {
                if entry.meta.uid > next {
                    gap(next, entry.meta.uid - 1);
                }
                next = entry.meta.uid.saturating_add(1);
            }
            if next <= hi && next >= lo {
                gap(next, hi);
            }
        }
        gaps.join(",")
    }

    /// `* n FETCH (UID u FLAGS (…))` of the message at `index`, with its MODSEQ when `modseq`:
    /// how a flag change is reported.
    pub fn flags_fetch(&self, index: usize, modseq: bool) -> Vec<u8> {
        let Some(entry) = self.messages.get(index) else { return Vec::new() };
        let meta = &entry.meta;
        let mut data = response::Data::new(index + 1);
        data.raw(format_args!(" FETCH (UID {} FLAGS ({})", meta.uid, flags::render(&meta.flags, entry.recent)));
        if modseq {
            data.raw(format_args!(" MODSEQ ({})", meta.modseq));
        }
        data.raw(")");
        data.finish()
    }

    /// The UIDs at `indexes`.
    pub fn uids(&self, indexes: &[usize]) -> UidSet {
        indexes.iter().filter_map(|&i| self.messages.get(i)).map(|e| e.meta.uid).collect()
    }

    /// Moves every change the store has published so far into the queue, without waiting.
    pub fn poll_changes(&mut self) {
        while !self.gone {
            match self.changes.next().now_or_never() {
                Some(Some(change)) => {
                    if change == Change::MailboxGone {
                        self.gone = true;
                    }
                    self.queued.push_back(change);
                }
                Some(None) => self.gone = true,
                None => break,
            }
        }
    }

    /// Waits for the next change from the store and queues it (IDLE); pending forever once gone.
    pub async fn wait_change(&mut self) {
        if self.gone {
            return std::future::pending().await;
        }
        match self.changes.next().await {
            Some(change) => {
                if change == Change::MailboxGone {
                    self.gone = true;
                }
                self.queued.push_back(change);
            }
            None => self.gone = true,
        }
    }

    /// Queues a change learned other than from the stream (behind what the stream gave so far).
    pub fn enqueue(&mut self, change: Change) {
        self.poll_changes();
        self.queued.push_back(change);
    }

    /// Takes the next queued change.
    pub fn next_queued(&mut self) -> Option<Change> {
        self.queued.pop_front()
    }

    /// Puts a change back at the head of the queue (an EXPUNGE that must wait).
    pub fn requeue(&mut self, change: Change) {
        self.queued.push_front(change);
    }

    /// Replaces the queue's head with changes that bring the view to `snapshot` (after `Lagged`).
    pub fn resync(&mut self, snapshot: Vec<MessageMeta>) {
        let mut synthetic = Vec::new();
        let known: UidSet = snapshot.iter().map(|m| m.uid).collect();
        let gone: Vec<u32> = self.messages.iter().map(|e| e.meta.uid).filter(|&u| !known.contains(u)).collect();
        if !gone.is_empty() {
            synthetic.push(Change::Expunged(gone));
        }
        let last = self.last_uid();
        for meta in snapshot {
            if meta.uid > last {
                synthetic.push(Change::Appended(meta));
            } else {
                synthetic.push(Change::FlagsChanged(meta));
            }
        }
        for change in synthetic.into_iter().rev() {
            self.queued.push_front(change);
        }
    }
}

/// A sequence's two ends as numbers, lower first, with `*` standing for `star`.
fn bounds(a: SeqOrUid, b: SeqOrUid, star: u32) -> (u32, u32) {
    let value = |x: SeqOrUid| match x {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => star,
    };
    let (x, y) = (value(a), value(b));
    (x.min(y), x.max(y))
}

/// The ranges a sequence set names, lower end first, with `*` standing for `star`.
pub fn ranges(set: &SequenceSet, star: u32) -> impl Iterator<Item = (u32, u32)> + '_ {
    set.0.as_ref().iter().map(move |sequence| match sequence {
        Sequence::Single(x) => bounds(*x, *x, star),
        Sequence::Range(a, b) => bounds(*a, *b, star),
    })
}

/// Renders UIDs as a compact set in the given order (`1:3,7`), for COPYUID and MODIFIED.
/// Ascending numbers as a set of ranges; `None` for none.
pub fn number_set(numbers: &[u32]) -> Option<SequenceSet> {
    let value = |n: u32| std::num::NonZeroU32::new(n).map(SeqOrUid::Value);
    let mut ranges = Vec::new();
    let mut i = 0;
    while i < numbers.len() {
        let mut j = i;
        while j + 1 < numbers.len() && numbers[j + 1] == numbers[j].wrapping_add(1) {
            j += 1;
        }
        if let (Some(a), Some(b)) = (value(numbers[i]), value(numbers[j])) {
            ranges.push(if i == j { Sequence::Single(a) } else { Sequence::Range(a, b) });
        }
        i = j + 1;
    }
    SequenceSet::try_from(ranges).ok()
}

pub fn render_uids(uids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut j = i;
        while j + 1 < uids.len() && uids[j + 1] == uids[j].wrapping_add(1) {
            j += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if j > i {
            out.push_str(&format!("{start}:{}", uids[j]));
        } else {
            out.push_str(&start.to_string());
        }
        i = j + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use sirms_storage::Flags;

    use super::*;

    fn view(uids: &[u32]) -> Selected {
        let metas = uids
            .iter()
            .map(|&uid| MessageMeta { uid, flags: Flags::default(), internal_date: 0, size: 1, modseq: 1 })
            .collect();
        Selected::new("INBOX".into(), false, MailboxStatus::default(), metas, &[], Box::pin(futures::stream::empty()))
    }

    fn set(text: &str) -> SequenceSet {
        SequenceSet::try_from(text).expect("sequence set")
    }

    #[test]
    fn resolves_sequence_numbers_and_uids() {
        let v = view(&[3, 5, 9, 10]);
        assert_eq!(v.resolve(&set("1:*"), false).unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(v.resolve(&set("4,2"), false).unwrap(), vec![1, 3]);
        assert!(v.resolve(&set("5"), false).is_err());
        assert_eq!(v.resolve(&set("4:9"), true).unwrap(), vec![1, 2]);
        assert_eq!(v.resolve(&set("11:*"), true).unwrap(), vec![3], "n:* always names the last UID");
        assert_eq!(v.resolve(&set("1,2,4"), true).unwrap(), Vec::<usize>::new());
    }

    #[test]
    fn removes_and_renders() {
        let mut v = view(&[3, 5, 9]);
        assert_eq!(v.remove(5), Some(2));
        assert_eq!(v.remove(5), None);
        assert_eq!(v.exists(), 2);
        assert_eq!(render_uids(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(render_uids(&[5, 4]), "5,4");
    }
}
