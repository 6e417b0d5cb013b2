//! `MemoryStore`: a `MailStore` kept in memory, for tests and fuzzing.
//!
//! It behaves as `LocalStore` does in everything the conformance suite
//! (`integration-tests/tests/store_conformance.rs`) checks, the same limits and errors
//! included, and so pins the contract down without a disk. Nothing is durable. One lock over
//! every user's state keeps it obviously correct: no call holds it across an await.

mod mailbox;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use self::mailbox::{Mailbox, Message};
use crate::change::{Change, ChangeStream};
use crate::error::{Result, StoreError};
use crate::flags::{FlagOp, Flags, SystemFlags};
use crate::mailbox::{self as names, DEFAULT_MAILBOXES, MAX_MAILBOXES, MailboxInfo, MailboxStatus, SpecialUse};
use crate::message::{
    AppendResult, BodyPart, Cached, CopyResult, FetchedMessage, MAX_CACHED_SIZE, MAX_MESSAGE_SIZE, MessageMeta,
    NewMessage, QuotaUsage,
};
use crate::store::MailStore;
use crate::uidset::UidSet;
use crate::user_file::{self, UserFile};

/// Longest user name accepted (as `LocalStore`).
const MAX_USER_LEN: usize = 255;

/// A mail store in memory; clones share the same mail.
#[derive(Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    maildrops: crate::MaildropLocks,
}

struct State {
    users: HashMap<String, User>,
    uid_validity: UidValidity,
    /// Most mailboxes per user, INBOX not counted.
    max_mailboxes: usize,
}

impl Default for State {
    fn default() -> Self {
        State { users: HashMap::new(), uid_validity: UidValidity::default(), max_mailboxes: MAX_MAILBOXES }
    }
}

/// Hands out UIDVALIDITY values as `LocalStore` does: the current time, but always above the
/// last one, so a mailbox made again under an old name never gets the old value.
#[derive(Default)]
struct UidValidity {
    last: u32,
}

impl UidValidity {
    fn next(&mut self) -> u32 {
        let now = now_secs().clamp(1, u32::MAX as i64) as u32;
        self.last = now.max(self.last.saturating_add(1));
        self.last
    }
}

/// One user's mailboxes (INBOX always among them) and subscriptions.
struct User {
    mailboxes: BTreeMap<String, Mailbox>,
    /// Names, whether or not such a mailbox exists (RFC 3501 allows both).
    subscriptions: BTreeSet<String>,
    files: BTreeMap<String, bytes::Bytes>,
}

impl User {
    fn new(uid_validity: &mut UidValidity) -> User {
        let mailboxes = DEFAULT_MAILBOXES
            .iter()
            .map(|(name, special_use)| (name.to_string(), Mailbox::new(uid_validity.next(), *special_use)))
            .collect();
        User { mailboxes, subscriptions: BTreeSet::new(), files: BTreeMap::new() }
    }

    fn mailbox(&mut self, name: &str) -> Result<&mut Mailbox> {
        self.mailboxes.get_mut(&names::canonical_name(name)?).ok_or(StoreError::NoSuchMailbox)
    }

    fn has_children(&self, name: &str) -> bool {
        let prefix = format!("{name}{}", names::DELIMITER);
        self.mailboxes.range(prefix.clone()..).next().is_some_and(|(n, _)| n.starts_with(&prefix))
    }

    /// The ancestors of `name` that are no mailboxes yet, outermost first.
    fn missing_parents(&self, name: &str) -> Vec<String> {
        let parts: Vec<&str> = name.split(names::DELIMITER).collect();
        (1..parts.len())
            .map(|depth| parts[..depth].join("/"))
            .filter(|parent| !self.mailboxes.contains_key(parent))
            .collect()
    }

    /// Refuses `adding` more mailboxes past `limit`, INBOX not counted (as `LocalStore`).
    fn check_room(&self, adding: usize, limit: usize) -> Result<()> {
        let existing = self.mailboxes.len().saturating_sub(1);
        if adding > 0 && existing + adding > limit { Err(StoreError::TooManyMailboxes) } else { Ok(()) }
    }
}

impl State {
    /// The user's state, made with the default mailboxes on first use.
    fn user(&mut self, name: &str) -> Result<(&mut User, &mut UidValidity)> {
        if name.is_empty() || name.len() > MAX_USER_LEN || name.chars().any(|c| c.is_control() || c == '/') {
            return Err(StoreError::InvalidUser);
        }
        let State { users, uid_validity, .. } = self;
        let user = users.entry(name.to_string()).or_insert_with(|| User::new(uid_validity));
        Ok((user, uid_validity))
    }

    fn mailbox(&mut self, user: &str, name: &str) -> Result<&mut Mailbox> {
        self.user(user)?.0.mailbox(name)
    }
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Sets the most mailboxes one user may have, INBOX not counted (as
    /// `LocalStore::set_mailbox_limit`).
    pub fn set_mailbox_limit(&self, limit: usize) {
        self.lock().max_mailboxes = limit;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing under the lock panics on what callers pass; should a bug panic there, the
        // state is still well-formed (if half changed), so later calls go on, as in `LocalStore`.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn transfer(&self, user: &str, from: &str, to: &str, uids: &UidSet, remove_source: bool) -> Result<CopyResult> {
        let mut state = self.lock();
        let (user, _) = state.user(user)?;
        let picked: Vec<(u32, Message)> = {
            let source = user.mailbox(from)?;
            source.uids_in(uids).into_iter().filter_map(|uid| Some((uid, source.messages.get(&uid)?.clone()))).collect()
        };
        let dest = user.mailbox(to)?;
        for (_, message) in &picked {
            dest.learn_keywords(&message.flags)?;
        }
        let mut result = CopyResult { uid_validity: dest.uid_validity, pairs: Vec::with_capacity(picked.len()) };
        for (source_uid, message) in picked {
            // Derived data stays behind, as in `LocalStore`, whose cache is per mailbox.
            let uid = dest.add(Message { cached: None, ..message })?;
            result.pairs.push((source_uid, uid));
        }
        if remove_source && !result.pairs.is_empty() {
            let source = user.mailbox(from)?;
            let gone: Vec<u32> = result.pairs.iter().map(|(uid, _)| *uid).collect();
            source.remove(&gone);
        }
        Ok(result)
    }
}

#[async_trait]
impl MailStore for MemoryStore {
    async fn list_mailboxes(&self, user: &str) -> Result<Vec<MailboxInfo>> {
        let mut state = self.lock();
        let (user, _) = state.user(user)?;
        // INBOX first, then the others in byte order, as `LocalStore` lists them.
        let inbox = user.mailboxes.get_key_value("INBOX");
        let others = user.mailboxes.iter().filter(|(name, _)| *name != "INBOX");
        let list = inbox.into_iter().chain(others).map(|(name, mailbox)| MailboxInfo {
            name: name.clone(),
            special_use: mailbox.special_use,
            subscribed: user.subscriptions.contains(name),
            has_children: user.has_children(name),
        });
        Ok(list.collect())
    }

    async fn create_mailbox(&self, user: &str, name: &str, special_use: Option<SpecialUse>) -> Result<()> {
        let mut state = self.lock();
        let limit = state.max_mailboxes;
        let (user, uid_validity) = state.user(user)?;
        let name = names::canonical_name(name)?;
        if user.mailboxes.contains_key(&name) {
            return Err(StoreError::MailboxExists);
        }
        let parents = user.missing_parents(&name);
        user.check_room(parents.len() + 1, limit)?;
        for parent in parents {
            user.mailboxes.insert(parent, Mailbox::new(uid_validity.next(), None));
        }
        user.mailboxes.insert(name, Mailbox::new(uid_validity.next(), special_use));
        Ok(())
    }

    async fn delete_mailbox(&self, user: &str, name: &str) -> Result<()> {
        let mut state = self.lock();
        let (user, _) = state.user(user)?;
        let name = names::canonical_name(name)?;
        if name == "INBOX" {
            return Err(StoreError::CannotDeleteInbox);
        }
        if !user.mailboxes.contains_key(&name) {
            return Err(StoreError::NoSuchMailbox);
        }
        if user.has_children(&name) {
            return Err(StoreError::HasChildren);
        }
        if let Some(mailbox) = user.mailboxes.remove(&name) {
            mailbox.retire();
        }
        Ok(())
    }

    async fn rename_mailbox(&self, user: &str, from: &str, to: &str) -> Result<()> {
        if names::canonical_name(from)? == "INBOX" {
            // RFC 3501: renaming INBOX moves its messages to the new name and leaves INBOX empty.
            self.create_mailbox(user, to, None).await?;
            self.move_messages(user, "INBOX", to, &UidSet::all()).await?;
            return Ok(());
        }
        let mut state = self.lock();
        let limit = state.max_mailboxes;
        let (user, uid_validity) = state.user(user)?;
        let from = names::canonical_name(from)?;
        let to = names::canonical_name(to)?;
        if !user.mailboxes.contains_key(&from) {
            return Err(StoreError::NoSuchMailbox);
        }
        if user.mailboxes.contains_key(&to) {
            return Err(StoreError::MailboxExists);
        }
        if names::is_descendant(&to, &from) {
            return Err(StoreError::InvalidName("cannot move a mailbox into itself"));
        }
        let parents = user.missing_parents(&to);
        user.check_room(parents.len(), limit)?;
        for parent in parents {
            user.mailboxes.insert(parent, Mailbox::new(uid_validity.next(), None));
        }
        let moving: Vec<String> =
            user.mailboxes.keys().filter(|n| **n == from || names::is_descendant(n, &from)).cloned().collect();
        for old in moving {
            if let Some(mailbox) = user.mailboxes.remove(&old) {
                // Its watchers are told it is gone; the mailbox goes on, UIDs and all, elsewhere.
                let renamed = mailbox.renamed();
                user.mailboxes.insert(format!("{to}{}", &old[from.len()..]), renamed);
            }
        }
        Ok(())
    }

    async fn subscribe(&self, user: &str, name: &str, subscribed: bool) -> Result<()> {
        let mut state = self.lock();
        let (user, _) = state.user(user)?;
        let name = names::canonical_name(name)?;
        if subscribed {
            user.subscriptions.insert(name);
        } else {
            user.subscriptions.remove(&name);
        }
        Ok(())
    }

    async fn append(&self, user: &str, mailbox: &str, message: NewMessage) -> Result<AppendResult> {
        let mut state = self.lock();
        let mailbox = state.mailbox(user, mailbox)?;
        if message.bytes.len() as u64 > MAX_MESSAGE_SIZE {
            return Err(StoreError::TooLarge);
        }
        mailbox.learn_keywords(&message.flags)?;
        let internal_date = message.internal_date.unwrap_or_else(now_secs);
        let uid = mailbox.add_keeping(
            message.keep_uid,
            Message {
                bytes: message.bytes,
                flags: Flags::new(message.flags.system, message.flags.keywords),
                internal_date,
                modseq: 0,
                cached: None,
            },
        )?;
        Ok(AppendResult { uid_validity: mailbox.uid_validity, uid, modseq: mailbox.highest_modseq, internal_date })
    }

    async fn messages(&self, user: &str, mailbox: &str) -> Result<(MailboxStatus, Vec<MessageMeta>)> {
        let mut state = self.lock();
        let mailbox = state.mailbox(user, mailbox)?;
        Ok((mailbox.status(), mailbox.messages.iter().map(|(uid, m)| m.meta(*uid)).collect()))
    }

    async fn fetch(&self, user: &str, mailbox: &str, uids: &UidSet, body: BodyPart) -> Result<Vec<FetchedMessage>> {
        let mut state = self.lock();
        let mailbox = state.mailbox(user, mailbox)?;
        let fetched = mailbox.uids_in(uids).into_iter().filter_map(|uid| {
            let message = mailbox.messages.get(&uid)?;
            let len = message.bytes.len() as u64;
            let body = match body {
                BodyPart::None => None,
                BodyPart::Full => Some(message.bytes.clone()),
                BodyPart::Range { offset, length } => {
                    let start = offset.min(len);
                    let end = start + length.min(len - start);
                    Some(message.bytes.slice(start as usize..end as usize))
                }
            };
            Some(FetchedMessage { meta: message.meta(uid), body })
        });
        Ok(fetched.collect())
    }

    async fn cache_get(&self, user: &str, mailbox: &str, uids: &UidSet) -> Result<Vec<Cached>> {
        let mut state = self.lock();
        let mailbox = state.mailbox(user, mailbox)?;
        let found = mailbox.uids_in(uids).into_iter().filter_map(|uid| {
            let data = mailbox.messages.get(&uid)?.cached.clone()?;
            Some(Cached { uid, data })
        });
        Ok(found.collect())
    }

    async fn cache_put(&self, user: &str, mailbox: &str, items: Vec<Cached>) -> Result<()> {
        let mut state = self.lock();
        let mailbox = state.mailbox(user, mailbox)?;
        for item in items.into_iter().filter(|item| item.data.len() <= MAX_CACHED_SIZE) {
            if let Some(message) = mailbox.messages.get_mut(&item.uid) {
                message.cached = Some(item.data);
            }
        }
        Ok(())
    }

    async fn store_flags(
        &self,
        user: &str,
        mailbox: &str,
        uids: &UidSet,
        op: FlagOp,
        flags: &Flags,
        unchanged_since: Option<u64>,
    ) -> Result<Vec<MessageMeta>> {
        let mut state = self.lock();
        let mailbox = state.mailbox(user, mailbox)?;
        let change = Flags::new(flags.system, flags.keywords.iter().cloned());
        // Before looking at any message, as `LocalStore` does: a bad keyword fails the call
        // even when no message matches.
        mailbox.learn_keywords(&change)?;
        let mut changed = Vec::new();
        for uid in mailbox.uids_in(uids) {
            let Some(message) = mailbox.messages.get_mut(&uid) else { continue };
            if unchanged_since.is_some_and(|since| message.modseq > since) {
                continue;
            }
            let flags = message.flags.apply(op, &change);
            if flags == message.flags {
                continue;
            }
            mailbox.highest_modseq += 1;
            message.flags = flags;
            message.modseq = mailbox.highest_modseq;
            changed.push(message.meta(uid));
        }
        for meta in &changed {
            mailbox.notify(Change::FlagsChanged(meta.clone()));
        }
        Ok(changed)
    }

    async fn expunge(&self, user: &str, mailbox: &str, uids: Option<&UidSet>) -> Result<Vec<u32>> {
        let mut state = self.lock();
        let mailbox = state.mailbox(user, mailbox)?;
        let doomed: Vec<u32> = mailbox
            .messages
            .iter()
            .filter(|(uid, m)| m.flags.system.contains(SystemFlags::DELETED) && uids.is_none_or(|s| s.contains(**uid)))
            .map(|(uid, _)| *uid)
            .collect();
        mailbox.remove(&doomed);
        Ok(doomed)
    }

    async fn copy(&self, user: &str, from: &str, to: &str, uids: &UidSet) -> Result<CopyResult> {
        self.transfer(user, from, to, uids, false)
    }

    async fn move_messages(&self, user: &str, from: &str, to: &str, uids: &UidSet) -> Result<CopyResult> {
        self.transfer(user, from, to, uids, true)
    }

    async fn status(&self, user: &str, mailbox: &str) -> Result<MailboxStatus> {
        Ok(self.lock().mailbox(user, mailbox)?.status())
    }

    async fn claim_recent(&self, user: &str, mailbox: &str) -> Result<Vec<u32>> {
        let mut state = self.lock();
        let mailbox = state.mailbox(user, mailbox)?;
        let recent = mailbox.messages.range(mailbox.recent_floor..).map(|(uid, _)| *uid).collect();
        mailbox.recent_floor = mailbox.uid_next;
        Ok(recent)
    }

    async fn adopt_uid_validity(&self, user: &str, mailbox: &str, uid_validity: u32) -> Result<u32> {
        let mut state = self.lock();
        let mailbox = state.mailbox(user, mailbox)?;
        if mailbox.messages.is_empty() && mailbox.uid_next <= 1 && uid_validity != 0 {
            mailbox.uid_validity = uid_validity;
        }
        Ok(mailbox.uid_validity)
    }

    async fn quota(&self, user: &str) -> Result<QuotaUsage> {
        let mut state = self.lock();
        let (user, _) = state.user(user)?;
        let mut usage = QuotaUsage::default();
        for message in user.mailboxes.values().flat_map(|mailbox| mailbox.messages.values()) {
            usage.messages += 1;
            usage.bytes += message.bytes.len() as u64;
        }
        Ok(usage)
    }

    async fn watch(&self, user: &str, mailbox: &str) -> Result<ChangeStream> {
        let receiver = self.lock().mailbox(user, mailbox)?.subscribe();
        Ok(crate::change::stream(receiver))
    }
    async fn lock_maildrop(&self, user: &str) -> Result<Option<crate::MaildropLock>> {
        Ok(self.maildrops.try_lock(user))
    }

    async fn user_files(&self, user: &str) -> Result<Vec<UserFile>> {
        let mut state = self.lock();
        let (user, _) = state.user(user)?;
        Ok(user.files.iter().map(|(name, content)| UserFile { name: name.clone(), content: content.clone() }).collect())
    }

    async fn put_user_file(&self, user: &str, name: &str, content: Option<bytes::Bytes>) -> Result<()> {
        let mut state = self.lock();
        let (user, _) = state.user(user)?;
        user_file::check_write(name, content.as_ref(), user.files.keys().map(String::as_str))?;
        match content {
            Some(content) => user.files.insert(name.to_string(), content),
            None => user.files.remove(name),
        };
        Ok(())
    }
}
