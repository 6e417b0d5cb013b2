//! One Maildir folder in memory: its messages, counters and watchers, and how it is
//! opened — reconciled against the directory listing, which is the truth.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;

use super::cache::{self, MessageCache};
use super::files::{self, FolderFile, KEYWORDS_FILE};
use super::index::{FolderCounters, IndexEntry, counters_key};
use super::maildir::{self, FileName, MAX_KEYWORDS};
use crate::change::Change;
use crate::error::{Result, StoreError};
use crate::flags::{Flags, SystemFlags};
use crate::mailbox::MailboxStatus;
use crate::message::MessageMeta;

/// How many changes a slow watcher may fall behind before it is told it lagged.
const WATCH_BACKLOG: usize = 1024;

/// One message of a folder.
#[derive(Debug, Clone)]
pub struct Entry {
    pub file_name: String,
    pub system: SystemFlags,
    pub letters: Vec<u8>,
    pub internal_date: i64,
    pub size: u64,
    pub modseq: u64,
}

impl Entry {
    fn index_entry(&self) -> IndexEntry {
        IndexEntry {
            file_name: self.file_name.clone(),
            size: self.size,
            internal_date: self.internal_date,
            modseq: self.modseq,
        }
    }
}

/// The sled trees a folder keeps its index and cache in.
pub struct FolderTrees {
    /// Message entries by UID.
    pub messages: sled::Tree,
    /// Every folder's counters (shared).
    pub counters: sled::Tree,
    /// Cached derived data by UID.
    pub cache: sled::Tree,
}

/// The mutable part of a folder, behind its lock.
pub struct FolderState {
    pub counters: FolderCounters,
    pub settings: FolderFile,
    pub keywords: Vec<String>,
    pub messages: BTreeMap<u32, Entry>,
    /// Set when the folder is deleted or renamed away; every later operation fails.
    pub gone: bool,
    /// UIDs that replica appends are placing: chosen by the primary, not yet published.
    placing: BTreeSet<u32>,
}

/// What [`Folder::reserve_uid`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UidClaim {
    /// The folder holds a message under the UID already.
    Present,
    /// Another append is placing a message under it.
    Busy,
    /// The caller may place its message; it calls [`Folder::release_uid`] when done.
    Reserved,
}

/// An open folder.
pub struct Folder {
    pub user: String,
    pub name: String,
    pub dir: PathBuf,
    pub cur: PathBuf,
    tree: sled::Tree,
    counters_tree: sled::Tree,
    /// Data derived from the messages (IMAP's ENVELOPE and BODYSTRUCTURE).
    pub cache: MessageCache,
    state: Mutex<FolderState>,
    changes: broadcast::Sender<Change>,
}

/// The current time in seconds since the epoch.
pub fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn mtime_secs(meta: &fs::Metadata) -> i64 {
    meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl Folder {
    /// Opens the folder at `dir`, repairing the index from the directory listing and dropping
    /// cache entries of messages no longer there. `new_uid_validity` is used if the folder
    /// has none yet.
    pub fn open(
        user: &str,
        name: &str,
        dir: PathBuf,
        trees: FolderTrees,
        new_uid_validity: impl FnOnce() -> u32,
    ) -> Result<Folder> {
        let FolderTrees { messages: tree, counters: counters_tree, cache: cache_tree } = trees;
        let cur = dir.join("cur");
        if !cur.is_dir() {
            return Err(StoreError::NoSuchMailbox);
        }
        let settings_path = dir.join(files::FOLDER_FILE);
        let mut settings = files::read_small(&settings_path)?.map(|t| FolderFile::parse(&t)).unwrap_or_default();
        if settings.uid_validity == 0 {
            settings.uid_validity = new_uid_validity();
            files::write_atomic(&settings_path, settings.render().as_bytes(), "store-file")?;
        }
        let keywords: Vec<String> = files::read_small(&dir.join(KEYWORDS_FILE))?
            .map(|t| t.lines().take(MAX_KEYWORDS).map(str::to_string).collect())
            .unwrap_or_default();

        let key = counters_key(user, name);
        let mut counters = counters_tree
            .get(&key)?
            .and_then(|v| FolderCounters::decode(&v))
            .filter(|c| c.uid_validity == settings.uid_validity)
            .unwrap_or_default();
        let trusted_index = counters.uid_validity != 0;
        if !trusted_index {
            tree.clear()?;
            counters = FolderCounters { uid_validity: settings.uid_validity, ..Default::default() };
        }
        let mut indexed: HashMap<u32, IndexEntry> = HashMap::new();
        for item in tree.iter() {
            let (k, v) = item?;
            if let (Ok(k), Some(e)) = (<[u8; 4]>::try_from(k.as_ref()), IndexEntry::decode(&v)) {
                indexed.insert(u32::from_be_bytes(k), e);
            }
        }

        let mut messages = BTreeMap::new();
        let mut unnumbered: Vec<(PathBuf, FileName)> = Vec::new();
        let mut moved_any = false;
        for sub in ["cur", "new"] {
            let sub_dir = dir.join(sub);
            let rd = match fs::read_dir(&sub_dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            for item in rd {
                let item = item?;
                let Some(fname) = item.file_name().to_str().map(str::to_string) else { continue };
                let Some(parsed) = FileName::parse(&fname) else { continue };
                let path = sub_dir.join(&fname);
                match parsed.uid {
                    Some(uid) if !messages.contains_key(&uid) && sub == "cur" && fname.contains(":2,") => {
                        let entry = match indexed.get(&uid) {
                            Some(ix) if ix.file_name == fname => Entry {
                                file_name: fname,
                                system: parsed.system,
                                letters: parsed.keyword_letters,
                                internal_date: ix.internal_date,
                                size: ix.size,
                                modseq: ix.modseq,
                            },
                            known => {
                                let meta = item.metadata()?;
                                counters.highest_modseq += 1;
                                Entry {
                                    file_name: fname,
                                    system: parsed.system,
                                    letters: parsed.keyword_letters,
                                    internal_date: known.map(|k| k.internal_date).unwrap_or_else(|| mtime_secs(&meta)),
                                    size: parsed.size.unwrap_or(meta.len()),
                                    modseq: counters.highest_modseq,
                                }
                            }
                        };
                        messages.insert(uid, entry);
                    }
                    _ => unnumbered.push((path, parsed)),
                }
            }
        }
        let file_max = messages.keys().next_back().copied().unwrap_or(0);
        counters.uid_next = counters.uid_next.max(settings.uid_floor).max(file_max.saturating_add(1)).max(1);
        // Files delivered by other software (or with a clashing UID) get a UID now, in
        // delivery order, and move into cur/ under our naming.
        unnumbered.sort_by(|a, b| a.1.base.cmp(&b.1.base));
        for (path, parsed) in unnumbered {
            let meta = fs::metadata(&path)?;
            let uid = counters.uid_next;
            counters.uid_next = counters.uid_next.saturating_add(1);
            let size = meta.len();
            let file_name = FileName::render(&parsed.rebase(uid, size), parsed.system, &parsed.keyword_letters);
            fs::rename(&path, cur.join(&file_name))?;
            moved_any = true;
            counters.highest_modseq += 1;
            messages.insert(
                uid,
                Entry {
                    file_name,
                    system: parsed.system,
                    letters: parsed.keyword_letters,
                    internal_date: mtime_secs(&meta),
                    size,
                    modseq: counters.highest_modseq,
                },
            );
        }
        if moved_any {
            files::sync_dir(&cur, "store-dirs")?;
            files::sync_dir(&dir.join("new"), "store-dirs")?;
        }
        counters.highest_modseq = counters.highest_modseq.max(1);
        counters.recent_floor = counters.recent_floor.max(1);

        let mut batch = sled::Batch::default();
        for uid in indexed.keys() {
            if !messages.contains_key(uid) {
                batch.remove(&uid.to_be_bytes());
            }
        }
        for (uid, e) in &messages {
            if indexed.get(uid).is_none_or(|ix| ix.file_name != e.file_name || ix.modseq != e.modseq) {
                batch.insert(&uid.to_be_bytes(), e.index_entry().encode());
            }
        }
        tree.apply_batch(batch)?;
        counters_tree.insert(&key, counters.encode())?;
        // Cache entries of messages that vanished, or whose file changed, while the folder was
        // closed. Found through the index rather than by reading the whole cache, which can be
        // twenty times its size; an entry this misses is never served anyway (its file's
        // identity is checked on every read), it only takes room.
        let cache = MessageCache::new(cache_tree);
        if trusted_index {
            let stale: Vec<u32> = indexed
                .iter()
                .filter(|(uid, ix)| {
                    messages.get(uid).is_none_or(|e| cache::identity(&e.file_name) != cache::identity(&ix.file_name))
                })
                .map(|(uid, _)| *uid)
                .collect();
            cache.remove(&stale)?;
        } else {
            cache.clear()?;
        }

        let (changes, _) = broadcast::channel(WATCH_BACKLOG);
        Ok(Folder {
            user: user.to_string(),
            name: name.to_string(),
            dir,
            cur,
            tree,
            counters_tree,
            cache,
            state: Mutex::new(FolderState {
                counters,
                settings,
                keywords,
                messages,
                gone: false,
                placing: BTreeSet::new(),
            }),
            changes,
        })
    }

    /// Locks the folder's state; a folder that was deleted or renamed away is an error.
    pub fn lock(&self) -> Result<MutexGuard<'_, FolderState>> {
        let guard = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.gone {
            return Err(StoreError::NoSuchMailbox);
        }
        Ok(guard)
    }

    /// Claims `uid` for a message a replica is given, so that two records bringing the same
    /// message (a write and a catch-up racing it) place it once.
    pub fn reserve_uid(&self, uid: u32) -> Result<UidClaim> {
        let mut st = self.lock()?;
        Ok(if st.messages.contains_key(&uid) {
            UidClaim::Present
        } else if st.placing.insert(uid) {
            UidClaim::Reserved
        } else {
            UidClaim::Busy
        })
    }

    /// Gives back a UID [`Folder::reserve_uid`] reserved, whether its message was placed or not.
    pub fn release_uid(&self, uid: u32) {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).placing.remove(&uid);
    }

    /// Marks the folder gone and tells its watchers.
    pub fn retire(&self) {
        let mut guard = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.gone = true;
        let _ = self.changes.send(Change::MailboxGone);
    }

    /// A receiver of this folder's changes.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Tells watchers about a change.
    pub fn notify(&self, change: Change) {
        // No receivers is normal: nobody is watching.
        let _ = self.changes.send(change);
    }

    /// Path of a message file in `cur/`.
    pub fn path_of(&self, file_name: &str) -> PathBuf {
        self.cur.join(file_name)
    }

    /// Records an entry in the index (not flushed: the Maildir is the truth).
    pub fn index_put(&self, uid: u32, entry: &Entry) -> Result<()> {
        self.tree.insert(uid.to_be_bytes(), entry.index_entry().encode())?;
        Ok(())
    }

    /// Removes entries from the index, and the messages' cached data with them.
    pub fn index_remove(&self, uids: &[u32]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for uid in uids {
            batch.remove(&uid.to_be_bytes());
        }
        self.tree.apply_batch(batch)?;
        self.cache.remove(uids)
    }

    /// Takes `uid_validity` if the folder never held a message (blocking); the folder's
    /// UIDVALIDITY afterwards.
    pub fn adopt_uid_validity(&self, uid_validity: u32) -> Result<u32> {
        let mut st = self.lock()?;
        let fresh = st.messages.is_empty() && st.placing.is_empty() && st.counters.uid_next <= 1;
        if !fresh || uid_validity == 0 || st.counters.uid_validity == uid_validity {
            return Ok(st.counters.uid_validity);
        }
        let settings = FolderFile { uid_validity, ..st.settings };
        files::write_atomic(&self.dir.join(files::FOLDER_FILE), settings.render().as_bytes(), "store-file")?;
        st.settings = settings;
        st.counters.uid_validity = uid_validity;
        self.index_counters(&st.counters)?;
        Ok(uid_validity)
    }

    /// Records the counters in the index.
    pub fn index_counters(&self, counters: &FolderCounters) -> Result<()> {
        self.counters_tree.insert(counters_key(&self.user, &self.name), counters.encode())?;
        Ok(())
    }
}

impl FolderState {
    /// The public metadata of one message.
    pub fn meta(&self, uid: u32, e: &Entry) -> MessageMeta {
        MessageMeta {
            uid,
            flags: Flags::new(e.system, maildir::keyword_names(&self.keywords, &e.letters)),
            internal_date: e.internal_date,
            size: e.size,
            modseq: e.modseq,
        }
    }

    /// STATUS counters.
    pub fn status(&self) -> MailboxStatus {
        let mut s = MailboxStatus {
            messages: self.messages.len() as u32,
            uid_next: self.counters.uid_next,
            uid_validity: self.counters.uid_validity,
            highest_modseq: self.counters.highest_modseq,
            ..Default::default()
        };
        for (uid, e) in &self.messages {
            if !e.system.contains(SystemFlags::SEEN) {
                s.unseen += 1;
            }
            if *uid >= self.counters.recent_floor {
                s.recent += 1;
            }
            s.size += e.size;
        }
        s
    }

    /// Next modseq, recorded as the folder's highest.
    pub fn bump_modseq(&mut self) -> u64 {
        self.counters.highest_modseq += 1;
        self.counters.highest_modseq
    }

    /// Makes sure no UID below `uid_next` can be handed out again even if the highest
    /// messages disappear: called before expunging or moving messages away.
    pub fn persist_floor(&mut self, dir: &Path) -> Result<()> {
        if self.settings.uid_floor < self.counters.uid_next {
            let mut settings = self.settings;
            settings.uid_floor = self.counters.uid_next;
            files::write_atomic(&dir.join(files::FOLDER_FILE), settings.render().as_bytes(), "store-file")?;
            self.settings = settings;
        }
        Ok(())
    }

    /// Letters for `flags`' keywords, adding unknown keywords to the folder's list durably.
    pub fn letters_for(&mut self, dir: &Path, flags: &Flags) -> Result<Vec<u8>> {
        if let Some(letters) = maildir::keyword_letters(&self.keywords, flags) {
            return Ok(letters);
        }
        let mut list = self.keywords.clone();
        for k in &flags.keywords {
            if !Flags::valid_keyword(k) {
                return Err(StoreError::InvalidKeyword);
            }
            if !list.contains(k) {
                list.push(k.clone());
            }
        }
        if list.len() > MAX_KEYWORDS {
            return Err(StoreError::TooManyKeywords);
        }
        let mut text = list.join("\n");
        text.push('\n');
        files::write_atomic(&dir.join(KEYWORDS_FILE), text.as_bytes(), "store-file")?;
        self.keywords = list;
        maildir::keyword_letters(&self.keywords, flags).ok_or(StoreError::InvalidKeyword)
    }
}
