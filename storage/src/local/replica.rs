//! `LocalStore` as a replica: the primary's records applied with its UIDs and MODSEQs, and
//! the user's epoch floor kept in `mail/<user>/sirms-epoch`.

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::oneshot;

use super::commit::{Job, UidChoice};
use super::folder::{Entry, Folder, UidClaim};
use super::{LocalStore, blocking, files, maildir};
use crate::change::Change;
use crate::error::{Result, StoreError};
use crate::mailbox::{self, SpecialUse};
use crate::message::{AppendResult, BodyPart, MessageMeta, NewMessage};
use crate::replica::{Apply, ReplicaStore};
use crate::uidset::UidSet;

/// The file holding the newest epoch this store has seen for a user.
const EPOCH_FILE: &str = "sirms-epoch";

/// How long an append waits for another placing the same message (a commit takes
/// milliseconds; this bounds a stuck one).
const PLACING_WAIT: Duration = Duration::from_secs(10);

/// A UID reserved in a folder for one append, given back when dropped.
struct Reservation {
    folder: Arc<Folder>,
    uid: u32,
}

impl Reservation {
    /// Reserves `uid`, waiting while another append places it; `None` once the folder holds it.
    async fn wait(folder: &Arc<Folder>, uid: u32) -> Result<Option<Reservation>> {
        let deadline = tokio::time::Instant::now() + PLACING_WAIT;
        loop {
            match folder.reserve_uid(uid)? {
                UidClaim::Present => return Ok(None),
                UidClaim::Reserved => return Ok(Some(Reservation { folder: folder.clone(), uid })),
                UidClaim::Busy if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                UidClaim::Busy => {
                    return Err(StoreError::Unavailable(format!(
                        "UID {uid} of {} is still being placed after {PLACING_WAIT:?}",
                        folder.name
                    )));
                }
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.folder.release_uid(self.uid);
    }
}

/// A record's UIDVALIDITY must be the folder's: otherwise UIDs name other messages.
fn same_mailbox(folder: &Folder, uid_validity: u32) -> Result<()> {
    let ours = folder.lock()?.counters.uid_validity;
    if ours == uid_validity {
        Ok(())
    } else {
        Err(StoreError::Diverged(format!("{} has UIDVALIDITY {ours}, the primary's is {uid_validity}", folder.name)))
    }
}

impl LocalStore {
    /// The epoch floor of `user`, read from disk the first time (blocking).
    fn epoch_floor(&self, user: &str) -> Result<u64> {
        if let Some(epoch) = self.inner.epochs.lock().unwrap_or_else(|p| p.into_inner()).get(user) {
            return Ok(*epoch);
        }
        self.ensure_user(user)?;
        let text = files::read_small(&self.user_dir(user).join(EPOCH_FILE))?;
        let epoch = text.and_then(|t| t.trim().parse().ok()).unwrap_or(0);
        self.inner.epochs.lock().unwrap_or_else(|p| p.into_inner()).insert(user.to_string(), epoch);
        Ok(epoch)
    }

    /// Refuses an epoch below the floor and raises the floor to a newer one (blocking);
    /// returns the floor before.
    fn fence_blocking(&self, user: &str, epoch: u64) -> Result<u64> {
        let floor = self.epoch_floor(user)?;
        if epoch == 0 {
            return Ok(floor);
        }
        if epoch < floor {
            return Err(StoreError::StaleEpoch(floor));
        }
        if epoch > floor {
            // One writer at a time, so a lower epoch never overwrites a higher one on disk.
            let _tree = self.lock_tree();
            let floor = self.epoch_floor(user)?;
            if epoch < floor {
                return Err(StoreError::StaleEpoch(floor));
            }
            files::write_atomic(&self.user_dir(user).join(EPOCH_FILE), format!("{epoch}\n").as_bytes(), "store-file")?;
            self.inner.epochs.lock().unwrap_or_else(|p| p.into_inner()).insert(user.to_string(), epoch);
        }
        Ok(floor)
    }

    /// Makes `name` exist with exactly `uid_validity`, emptying it if it had another (blocking).
    fn ensure_mailbox_blocking(
        &self,
        user: &str,
        name: &str,
        uid_validity: u32,
        special_use: Option<SpecialUse>,
    ) -> Result<()> {
        let name = mailbox::canonical_name(name)?;
        match self.create_blocking(user, &name, special_use) {
            Ok(()) | Err(StoreError::MailboxExists) => {}
            Err(e) => return Err(e),
        }
        // The open folder's UIDVALIDITY, not the file's, is the one every reader is told: a
        // folder opened while the file was being replaced keeps the one it read.
        if self.open_folder(user, &name)?.lock()?.counters.uid_validity == uid_validity {
            return Ok(());
        }
        let dir = self.folder_dir(user, &name);
        let settings_path = dir.join(files::FOLDER_FILE);
        let settings = files::read_small(&settings_path)?.map(|t| files::FolderFile::parse(&t)).unwrap_or_default();
        let _tree = self.lock_tree();
        // Its messages are not the primary's: they go, with the folder's index; no one opens
        // it again before the file names the primary's UIDVALIDITY.
        let _open = self.retire_folders(user, &name, std::slice::from_ref(&name), None)?;
        for sub in ["cur", "new", "tmp"] {
            for item in fs::read_dir(dir.join(sub))? {
                let path = item?.path();
                if path.is_file() {
                    fs::remove_file(path)?;
                }
            }
            files::sync_dir(&dir.join(sub), "store-dirs")?;
        }
        let settings =
            files::FolderFile { uid_validity, uid_floor: 1, special_use: special_use.or(settings.special_use) };
        files::write_atomic(&settings_path, settings.render().as_bytes(), "store-file")?;
        Ok(())
    }

    async fn apply_append(
        &self,
        user: &str,
        mailbox: &str,
        uid_validity: u32,
        meta: MessageMeta,
        bytes: Bytes,
    ) -> Result<()> {
        let folder = self.folder(user, mailbox).await?;
        same_mailbox(&folder, uid_validity)?;
        let Some(_reserved) = Reservation::wait(&folder, meta.uid).await? else { return Ok(()) };
        let message = NewMessage {
            bytes,
            flags: meta.flags.clone(),
            internal_date: Some(meta.internal_date),
            idempotency_key: None,
            keep_uid: None,
        };
        let mut prepared = self.prepared(folder, message).await?;
        prepared.uid = UidChoice::Exact(meta.uid);
        prepared.entry.modseq = meta.modseq.max(1);
        let (reply, rx) = oneshot::channel();
        self.inner.committer.submit(Job::Publish { prepared, reply })?;
        rx.await.map_err(|_| StoreError::Unavailable("committer stopped".into()))??;
        Ok(())
    }

    async fn apply_copy(
        &self,
        user: &str,
        from: &str,
        to: &str,
        uid_validity: u32,
        pairs: Vec<(u32, MessageMeta)>,
    ) -> Result<()> {
        let source = self.folder(user, from).await?;
        for (source_uid, meta) in pairs {
            let read = self.fetch_source(&source, source_uid).await?;
            self.apply_append(user, to, uid_validity, meta, read).await?;
        }
        Ok(())
    }

    async fn fetch_source(&self, source: &Arc<Folder>, uid: u32) -> Result<Bytes> {
        let folder = source.clone();
        let fetched = blocking(move || Self::fetch_blocking(&folder, &UidSet::single(uid), BodyPart::Full)).await?;
        fetched
            .into_iter()
            .next()
            .and_then(|m| m.body)
            .ok_or_else(|| StoreError::Diverged(format!("{} has no UID {uid} to copy", source.name)))
    }

    fn apply_flags_blocking(folder: &Folder, metas: &[MessageMeta], exact: bool) -> Result<()> {
        let mut st = folder.lock()?;
        // A flag change for a message this copy lacks overtook the record that brings the
        // message (another writer's append, still on its way: a client may flag a message on
        // the primary before its delivery is acknowledged), or this copy is behind. Skipping
        // it would lose a change the client was told is done; the writer compares the user
        // whole instead, which brings the message with its flags.
        if let Some(meta) = metas.iter().find(|m| !st.messages.contains_key(&m.uid)) {
            return Err(StoreError::Diverged(format!("{} has no UID {} to flag", folder.name, meta.uid)));
        }
        let mut changed = Vec::new();
        for meta in metas {
            let Some(entry) = st.messages.get(&meta.uid).cloned() else { continue };
            if !exact && entry.modseq >= meta.modseq {
                continue;
            }
            let mut letters = st.letters_for(&folder.dir, &meta.flags)?;
            letters.sort_unstable();
            let system = meta.flags.system;
            let file_name = if system == entry.system && letters == entry.letters {
                entry.file_name.clone()
            } else {
                let parsed =
                    maildir::FileName::parse(&entry.file_name).ok_or(StoreError::Index("bad file name".into()))?;
                let file_name = maildir::FileName::render(&parsed.base, system, &letters);
                fs::rename(folder.path_of(&entry.file_name), folder.path_of(&file_name))?;
                file_name
            };
            st.counters.highest_modseq = st.counters.highest_modseq.max(meta.modseq);
            let updated = Entry { file_name, system, letters, modseq: meta.modseq, ..entry };
            folder.index_put(meta.uid, &updated)?;
            changed.push(st.meta(meta.uid, &updated));
            st.messages.insert(meta.uid, updated);
        }
        if !changed.is_empty() {
            files::sync_dir(&folder.cur, "replica-dir")?;
            folder.index_counters(&st.counters)?;
            for meta in changed {
                folder.notify(Change::FlagsChanged(meta));
            }
        }
        Ok(())
    }

    fn apply_expunge_blocking(folder: &Folder, uids: &[u32]) -> Result<()> {
        let mut st = folder.lock()?;
        let doomed: Vec<(u32, String)> =
            uids.iter().filter_map(|uid| st.messages.get(uid).map(|e| (*uid, e.file_name.clone()))).collect();
        Self::remove_messages(folder, &mut st, doomed).map(drop)
    }

    fn apply_counters_blocking(folder: &Folder, uid_next: u32, highest_modseq: u64) -> Result<()> {
        let mut st = folder.lock()?;
        if st.counters.uid_next >= uid_next && st.counters.highest_modseq >= highest_modseq {
            return Ok(());
        }
        st.counters.uid_next = st.counters.uid_next.max(uid_next);
        st.counters.highest_modseq = st.counters.highest_modseq.max(highest_modseq);
        st.persist_floor(&folder.dir)?;
        folder.index_counters(&st.counters)
    }

    /// The folder of a record, checked to be the primary's.
    async fn replica_folder(&self, user: &str, mailbox: &str, uid_validity: u32) -> Result<Arc<Folder>> {
        let folder = self.folder(user, mailbox).await?;
        same_mailbox(&folder, uid_validity)?;
        Ok(folder)
    }
}

/// A missing mailbox on the replica is a divergence, not a client's mistake.
fn diverged_if_missing(result: Result<()>) -> Result<()> {
    match result {
        Err(StoreError::NoSuchMailbox) => Err(StoreError::Diverged("mailbox missing on the replica".into())),
        Err(StoreError::MailboxExists) => Err(StoreError::Diverged("mailbox already on the replica".into())),
        other => other,
    }
}

/// How many of a mailbox's latest messages [`ReplicaStore::appended_under`] looks through: a
/// retry comes within seconds of its append, so the message is among the last few, unless
/// this many others arrived in the mailbox in between.
const KEYED_LOOKBACK: usize = 1024;

#[async_trait]
impl ReplicaStore for LocalStore {
    async fn appended_under(&self, user: &str, mailbox: &str, key: &str) -> Result<Option<AppendResult>> {
        let folder = match self.folder(user, mailbox).await {
            Ok(folder) => folder,
            Err(StoreError::NoSuchMailbox) => return Ok(None),
            Err(e) => return Err(e),
        };
        let needle = maildir::key_field(key) + ",";
        let st = folder.lock()?;
        let found = st.messages.iter().rev().take(KEYED_LOOKBACK).find(|(_, e)| e.file_name.contains(&needle));
        Ok(found.map(|(&uid, e)| AppendResult {
            uid_validity: st.counters.uid_validity,
            uid,
            modseq: e.modseq,
            internal_date: e.internal_date,
        }))
    }

    async fn fence(&self, user: &str, epoch: u64) -> Result<u64> {
        super::check_user(user)?;
        if let Some(&floor) = self.inner.epochs.lock().unwrap_or_else(|p| p.into_inner()).get(user)
            && (epoch == floor || epoch == 0)
        {
            return Ok(floor);
        }
        let (store, user) = (self.clone(), user.to_string());
        blocking(move || store.fence_blocking(&user, epoch)).await
    }

    async fn apply(&self, user: &str, epoch: u64, record: Apply) -> Result<()> {
        if epoch == 0 {
            return Err(StoreError::Protocol("a replication record needs an epoch".into()));
        }
        self.fence(user, epoch).await?;
        let store = self.clone();
        let owned = user.to_string();
        let result = async move {
            match record {
                Apply::Mailbox { name, uid_validity, special_use } => {
                    blocking(move || store.ensure_mailbox_blocking(&owned, &name, uid_validity, special_use)).await
                }
                Apply::Delete { name } => match blocking(move || store.delete_blocking(&owned, &name)).await {
                    Err(StoreError::NoSuchMailbox) => Ok(()),
                    other => other,
                },
                Apply::Rename { from, to } => blocking(move || store.rename_blocking(&owned, &from, &to)).await,
                Apply::Subscribe { name, subscribed } => {
                    blocking(move || store.subscribe_blocking(&owned, &name, subscribed)).await
                }
                Apply::UserFile { name, content } => {
                    blocking(move || store.put_user_file_blocking(&owned, &name, content)).await
                }
                Apply::Append { mailbox, uid_validity, meta, bytes } => {
                    self.apply_append(user, &mailbox, uid_validity, meta, bytes).await
                }
                Apply::Copy { from, to, uid_validity, pairs } => {
                    self.apply_copy(user, &from, &to, uid_validity, pairs).await
                }
                Apply::Flags { mailbox, uid_validity, metas, exact } => {
                    let folder = self.replica_folder(user, &mailbox, uid_validity).await?;
                    blocking(move || Self::apply_flags_blocking(&folder, &metas, exact)).await
                }
                Apply::Expunge { mailbox, uid_validity, uids } => {
                    let folder = self.replica_folder(user, &mailbox, uid_validity).await?;
                    blocking(move || Self::apply_expunge_blocking(&folder, &uids)).await
                }
                Apply::Counters { mailbox, uid_validity, uid_next, highest_modseq } => {
                    let folder = self.replica_folder(user, &mailbox, uid_validity).await?;
                    blocking(move || Self::apply_counters_blocking(&folder, uid_next, highest_modseq)).await
                }
            }
        };
        diverged_if_missing(result.await)
    }
}
