//! `LocalStore`: Maildir on disk (the truth) plus a sled index.
//!
//! Layout under the store root:
//!
//! ```text
//! mail/<user>/                 the user's Maildir = INBOX (cur/ new/ tmp/)
//! mail/<user>/.Sent/           Maildir++ folder "Sent"; ".a.b" is "a/b"
//! mail/<user>/subscriptions    subscribed mailbox names
//! index/                       the sled index (rebuildable)
//! ```
//!
//! Only one process may own a store root at a time (sled's lock enforces it).

mod cache;
mod commit;
mod files;
mod folder;
mod index;
pub mod maildir;
mod replica;
pub mod sweep;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::oneshot;

use self::commit::{Committer, Job, Prepared, UidChoice};
use self::folder::{Entry, Folder, FolderTrees, now_secs};
use crate::change::{Change, ChangeStream};
use crate::error::{Result, StoreError};
use crate::flags::{FlagOp, Flags};
use crate::mailbox::{self, DEFAULT_MAILBOXES, MailboxInfo, MailboxStatus, SpecialUse};
use crate::message::{
    AppendResult, BodyPart, Cached, CopyResult, FetchedMessage, MAX_MESSAGE_SIZE, MessageMeta, NewMessage, QuotaUsage,
};
use crate::store::MailStore;
use crate::uidset::UidSet;
use crate::user_file::{self, UserFile};

/// Longest user name accepted.
const MAX_USER_LEN: usize = 255;

/// A mail store on the local file system.
#[derive(Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

/// The store's open folders, by user and name, locked.
type OpenFolders<'a> = std::sync::MutexGuard<'a, HashMap<(String, String), Arc<Folder>>>;

struct Inner {
    mail_root: PathBuf,
    db: sled::Db,
    counters_tree: sled::Tree,
    folders: Mutex<HashMap<(String, String), Arc<Folder>>>,
    users_ready: Mutex<HashSet<String>>,
    /// POP3 maildrops locked by sessions anywhere in the cluster.
    maildrops: crate::MaildropLocks,
    /// Serialises changes to a user's folder tree and subscription list (rare, and racy otherwise).
    tree_lock: Mutex<()>,
    committer: Committer,
    host: String,
    sequence: AtomicU64,
    last_uid_validity: AtomicU32,
    /// Most folders per user, INBOX not counted.
    max_mailboxes: AtomicUsize,
    /// The epoch floor of each user seen so far (see `replica.rs`).
    epochs: Mutex<HashMap<String, u64>>,
}

/// What a reindex found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReindexReport {
    pub users: u64,
    pub mailboxes: u64,
    pub messages: u64,
}

fn host_name() -> String {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "localhost".into());
    let clean: String = raw.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    if clean.is_empty() { "localhost".into() } else { clean }
}

/// Opens the sled index. sled releases its file lock from a background thread after the
/// last handle is dropped, so a store reopened at once (a restart in the same process, a
/// reindex right after a stop) may find it still held for a moment: wait a little.
fn open_index(path: &Path) -> Result<sled::Db> {
    let config = sled::Config::new().path(path).flush_every_ms(Some(1000));
    let mut attempts = 0;
    loop {
        match config.open() {
            // sled reports a held lock as a plain I/O error with this text.
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") && attempts < 50 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => return Ok(other?),
        }
    }
}

/// Runs blocking file-system work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Unavailable(format!("worker failed: {e}")))?
}

fn check_user(user: &str) -> Result<()> {
    if user.is_empty() || user.len() > MAX_USER_LEN || user.chars().any(|c| c.is_control() || c == '/') {
        return Err(StoreError::InvalidUser);
    }
    Ok(())
}

impl LocalStore {
    /// Opens (creating if needed) the store rooted at `root`.
    pub fn open(root: impl AsRef<Path>) -> Result<LocalStore> {
        let root = root.as_ref();
        crate::durable::create_private_dir(root)?;
        let mail_root = root.join("mail");
        crate::durable::create_dir_all(&mail_root, "setup-dirs")?;
        let db = open_index(&root.join("index"))?;
        // The index's lock makes this process the store's only writer, and it has written
        // nothing yet: whatever crashed writers left is an orphan now.
        let swept = sweep::sweep(&mail_root)?;
        if swept != sweep::Swept::default() {
            tracing::info!(
                messages = swept.messages,
                temporaries = swept.temporaries,
                "removed unfinished writes of a crashed run from tmp/"
            );
        }
        let counters_tree = db.open_tree("folders")?;
        Ok(LocalStore {
            inner: Arc::new(Inner {
                mail_root,
                db,
                counters_tree,
                folders: Mutex::new(HashMap::new()),
                users_ready: Mutex::new(HashSet::new()),
                maildrops: crate::MaildropLocks::default(),
                tree_lock: Mutex::new(()),
                committer: Committer::start()?,
                host: host_name(),
                sequence: AtomicU64::new(0),
                last_uid_validity: AtomicU32::new(0),
                max_mailboxes: AtomicUsize::new(mailbox::MAX_MAILBOXES),
                epochs: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Sets the most mailboxes one user may have, INBOX not counted (default
    /// `mailbox::MAX_MAILBOXES`). It bounds creating and renaming; what exists stays.
    pub fn set_mailbox_limit(&self, limit: usize) {
        self.inner.max_mailboxes.store(limit, Ordering::Relaxed);
    }

    /// Throws the index away and rebuilds it from the Maildirs. The store must not be open.
    pub fn reindex(root: impl AsRef<Path>) -> Result<ReindexReport> {
        let root = root.as_ref();
        match fs::remove_dir_all(root.join("index")) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let store = LocalStore::open(root)?;
        let mut report = ReindexReport::default();
        for user_dir in fs::read_dir(&store.inner.mail_root)? {
            let user_dir = user_dir?;
            let Some(user) = user_dir.file_name().to_str().and_then(maildir::unescape_component) else { continue };
            if !user_dir.path().join("cur").is_dir() {
                continue;
            }
            report.users += 1;
            for name in store.folder_names(&user)? {
                let folder = store.open_folder(&user, &name)?;
                report.mailboxes += 1;
                report.messages += folder.lock()?.messages.len() as u64;
            }
        }
        store.inner.db.flush()?;
        Ok(report)
    }

    /// Writes the index to disk (done periodically anyway; call before a clean exit).
    pub async fn flush(&self) -> Result<()> {
        self.inner.db.flush_async().await?;
        Ok(())
    }

    fn lock_tree(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner.tree_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn user_dir(&self, user: &str) -> PathBuf {
        self.inner.mail_root.join(maildir::escape_component(user))
    }

    fn folder_dir(&self, user: &str, name: &str) -> PathBuf {
        if name == "INBOX" { self.user_dir(user) } else { self.user_dir(user).join(maildir::folder_dir(name)) }
    }

    fn next_uid_validity(&self) -> u32 {
        let now = now_secs().clamp(1, u32::MAX as i64) as u32;
        let mut last = self.inner.last_uid_validity.load(Ordering::Relaxed);
        loop {
            let next = now.max(last.saturating_add(1));
            match self.inner.last_uid_validity.compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    fn unique(&self) -> String {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let seq = self.inner.sequence.fetch_add(1, Ordering::Relaxed);
        format!("{}.M{}P{}Q{}.{}", now.as_secs(), now.subsec_micros(), std::process::id(), seq, self.inner.host)
    }

    /// Creates a folder's directories and settings (blocking).
    fn make_folder_dir(&self, dir: &Path, special_use: Option<SpecialUse>, is_inbox: bool) -> Result<()> {
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        if !is_inbox {
            fs::File::create(dir.join(files::MAILDIRFOLDER_FILE))?;
        }
        let settings = files::FolderFile { uid_validity: self.next_uid_validity(), uid_floor: 1, special_use };
        files::write_atomic(&dir.join(files::FOLDER_FILE), settings.render().as_bytes(), "store-file")?;
        files::sync_dir(dir, "store-dirs")?;
        if let Some(parent) = dir.parent() {
            files::sync_dir(parent, "store-dirs")?;
        }
        Ok(())
    }

    /// Makes sure the user's Maildir and default folders exist (blocking).
    fn ensure_user(&self, user: &str) -> Result<()> {
        check_user(user)?;
        if self.inner.users_ready.lock().unwrap_or_else(|p| p.into_inner()).contains(user) {
            return Ok(());
        }
        let _tree = self.lock_tree();
        let root = self.user_dir(user);
        if !root.join("cur").is_dir() {
            for (name, special_use) in DEFAULT_MAILBOXES {
                let dir = self.folder_dir(user, name);
                if !dir.join("cur").is_dir() {
                    self.make_folder_dir(&dir, *special_use, *name == "INBOX")?;
                }
            }
        }
        self.inner.users_ready.lock().unwrap_or_else(|p| p.into_inner()).insert(user.to_string());
        Ok(())
    }

    /// The folder if it is already open (never blocks on I/O).
    fn open_folder_cached(&self, user: &str, name: &str) -> Option<Arc<Folder>> {
        check_user(user).ok()?;
        if !self.inner.users_ready.lock().unwrap_or_else(|p| p.into_inner()).contains(user) {
            return None;
        }
        let name = mailbox::canonical_name(name).ok()?;
        let folders = self.inner.folders.lock().unwrap_or_else(|p| p.into_inner());
        folders.get(&(user.to_string(), name)).cloned()
    }

    /// Opens a folder or returns the open one (blocking).
    fn open_folder(&self, user: &str, name: &str) -> Result<Arc<Folder>> {
        self.ensure_user(user)?;
        let name = mailbox::canonical_name(name)?;
        let key = (user.to_string(), name.clone());
        let mut folders = self.inner.folders.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = folders.get(&key) {
            return Ok(f.clone());
        }
        let dir = self.folder_dir(user, &name);
        // Checked before the trees are opened, since opening creates them: a name that is no
        // folder (a SELECT of any string) would otherwise leave two empty trees in sled for ever.
        if !dir.join("cur").is_dir() {
            return Err(StoreError::NoSuchMailbox);
        }
        let trees = FolderTrees {
            messages: self.inner.db.open_tree(index::tree_name(user, &name))?,
            counters: self.inner.counters_tree.clone(),
            cache: self.inner.db.open_tree(index::cache_tree_name(user, &name))?,
        };
        let folder = Folder::open(user, &name, dir, trees, || self.next_uid_validity())?;
        let folder = Arc::new(folder);
        folders.insert(key, folder.clone());
        Ok(folder)
    }

    async fn folder(&self, user: &str, name: &str) -> Result<Arc<Folder>> {
        // An open folder is a map lookup: skip the trip to a blocking thread, which would
        // cost more than the lookup on every command of a busy session.
        if let Some(folder) = self.open_folder_cached(user, name) {
            return Ok(folder);
        }
        let (store, user, name) = (self.clone(), user.to_string(), name.to_string());
        blocking(move || store.open_folder(&user, &name)).await
    }

    /// Every folder name of a user, INBOX first (blocking).
    fn folder_names(&self, user: &str) -> Result<Vec<String>> {
        self.ensure_user(user)?;
        let mut names = vec!["INBOX".to_string()];
        let mut others = Vec::new();
        for item in fs::read_dir(self.user_dir(user))? {
            let item = item?;
            let Some(dir) = item.file_name().to_str().map(str::to_string) else { continue };
            if let Some(name) = maildir::folder_name(&dir).filter(|_| item.path().join("cur").is_dir())
                && mailbox::canonical_name(&name).is_ok_and(|c| c == name)
            {
                others.push(name);
            }
        }
        others.sort();
        names.extend(others);
        Ok(names)
    }

    fn subscriptions(&self, user: &str) -> Result<Vec<String>> {
        let text = files::read_small(&self.user_dir(user).join(files::SUBSCRIPTIONS_FILE))?;
        Ok(text.map(|t| t.lines().filter(|l| !l.is_empty()).map(str::to_string).collect()).unwrap_or_default())
    }

    /// Retires the open folders at `name` and below (`names` lists the user's folders) and
    /// drops their index, cache and counters, open or not. The trees are dropped, not
    /// emptied: sled keeps every tree's name in one list that it rewrites each time a tree is
    /// opened, so the empty trees of deleted and renamed mailboxes would pile up in it for
    /// ever (found by the imap_session fuzzer, whose index grew by gigabytes in minutes).
    ///
    /// Folders renamed to `renamed_to` (and below) take their counters along: their
    /// UIDVALIDITY goes with them (in the settings file), so HIGHESTMODSEQ may not start
    /// over (RFC 7162: a client that saw a modseq would miss later changes below it). Their
    /// messages, found in no index when the folder opens, get modseqs above the old highest.
    /// Closes `name` and its descendants among `names` and drops their indexes (blocking).
    /// Returns the map of open folders still locked: the caller holds it until the folders
    /// are gone from disk too (renamed, removed or emptied), or a reader could open one again
    /// in between and keep a stale copy open for as long as the store runs.
    fn retire_folders(
        &self,
        user: &str,
        name: &str,
        names: &[String],
        renamed_to: Option<&str>,
    ) -> Result<OpenFolders<'_>> {
        let doomed = |n: &str| n == name || mailbox::is_descendant(n, name);
        let mut folders = self.inner.folders.lock().unwrap_or_else(|p| p.into_inner());
        folders.retain(|(u, n), folder| {
            let retire = u == user && doomed(n);
            if retire {
                // Under the folder's lock: writers see it gone before the trees go.
                folder.retire();
            }
            !retire
        });
        for n in names.iter().filter(|n| doomed(n)) {
            self.inner.db.drop_tree(index::tree_name(user, n))?;
            self.inner.db.drop_tree(index::cache_tree_name(user, n))?;
            let counters = self.inner.counters_tree.remove(index::counters_key(user, n))?;
            if let (Some(to), Some(counters)) = (renamed_to, counters) {
                let new_name = format!("{to}{}", &n[name.len()..]);
                self.inner.counters_tree.insert(index::counters_key(user, &new_name), counters)?;
            }
        }
        Ok(folders)
    }

    fn list_blocking(&self, user: &str) -> Result<Vec<MailboxInfo>> {
        let names = self.folder_names(user)?;
        let subscribed: HashSet<String> = self.subscriptions(user)?.into_iter().collect();
        let mut out = Vec::with_capacity(names.len());
        for name in &names {
            let settings = files::read_small(&self.folder_dir(user, name).join(files::FOLDER_FILE))?
                .map(|t| files::FolderFile::parse(&t))
                .unwrap_or_default();
            out.push(MailboxInfo {
                name: name.clone(),
                special_use: settings.special_use,
                subscribed: subscribed.contains(name),
                has_children: names.iter().any(|n| mailbox::is_descendant(n, name)),
            });
        }
        Ok(out)
    }

    fn create_blocking(&self, user: &str, name: &str, special_use: Option<SpecialUse>) -> Result<()> {
        self.ensure_user(user)?;
        let _tree = self.lock_tree();
        let name = mailbox::canonical_name(name)?;
        if name == "INBOX" || self.folder_dir(user, &name).join("cur").is_dir() {
            return Err(StoreError::MailboxExists);
        }
        let parents = self.missing_parents(user, &name);
        self.check_room(user, parents.len() + 1)?;
        self.make_parents(user, &parents)?;
        self.make_folder_dir(&self.folder_dir(user, &name), special_use, false)
    }

    /// The ancestors of `name` that are not folders yet, outermost first (blocking).
    fn missing_parents(&self, user: &str, name: &str) -> Vec<String> {
        let parts: Vec<&str> = name.split(mailbox::DELIMITER).collect();
        (1..parts.len())
            .map(|depth| parts[..depth].join("/"))
            .filter(|parent| !self.folder_dir(user, parent).join("cur").is_dir())
            .collect()
    }

    /// Creates the folders `missing_parents` found (blocking).
    fn make_parents(&self, user: &str, parents: &[String]) -> Result<()> {
        for parent in parents {
            self.make_folder_dir(&self.folder_dir(user, parent), None, false)?;
        }
        Ok(())
    }

    /// Refuses `adding` more folders when they would take the user past the mailbox limit
    /// (blocking). Counts the Maildir++ folder directories (their names start with a dot)
    /// without parsing their names: this runs on every CREATE.
    fn check_room(&self, user: &str, adding: usize) -> Result<()> {
        if adding == 0 {
            return Ok(());
        }
        let limit = self.inner.max_mailboxes.load(Ordering::Relaxed);
        let mut existing = 0;
        for item in fs::read_dir(self.user_dir(user))? {
            if item?.file_name().as_encoded_bytes().first() == Some(&b'.') {
                existing += 1;
            }
        }
        if existing + adding > limit { Err(StoreError::TooManyMailboxes) } else { Ok(()) }
    }

    fn delete_blocking(&self, user: &str, name: &str) -> Result<()> {
        self.ensure_user(user)?;
        let _tree = self.lock_tree();
        let name = mailbox::canonical_name(name)?;
        if name == "INBOX" {
            return Err(StoreError::CannotDeleteInbox);
        }
        let dir = self.folder_dir(user, &name);
        if !dir.join("cur").is_dir() {
            return Err(StoreError::NoSuchMailbox);
        }
        let names = self.folder_names(user)?;
        if names.iter().any(|n| mailbox::is_descendant(n, &name)) {
            return Err(StoreError::HasChildren);
        }
        let open = self.retire_folders(user, &name, &names, None)?;
        // Rename away first so the folder vanishes atomically, then remove at leisure.
        let doomed = self.user_dir(user).join(format!("sirms-deleted.{}", self.unique()));
        fs::rename(&dir, &doomed)?;
        drop(open);
        files::sync_dir(&self.user_dir(user), "store-dirs")?;
        fs::remove_dir_all(&doomed)?;
        Ok(())
    }

    fn rename_blocking(&self, user: &str, from: &str, to: &str) -> Result<()> {
        self.ensure_user(user)?;
        let _tree = self.lock_tree();
        let from = mailbox::canonical_name(from)?;
        let to = mailbox::canonical_name(to)?;
        let names = self.folder_names(user)?;
        if !names.contains(&from) {
            return Err(StoreError::NoSuchMailbox);
        }
        if names.contains(&to) || to == "INBOX" {
            return Err(StoreError::MailboxExists);
        }
        if mailbox::is_descendant(&to, &from) {
            return Err(StoreError::InvalidName("cannot move a mailbox into itself"));
        }
        if from == "INBOX" {
            return Err(StoreError::Protocol("INBOX rename is done by moving messages".into()));
        }
        let parents = self.missing_parents(user, &to);
        self.check_room(user, parents.len())?;
        self.make_parents(user, &parents)?;
        let _open = self.retire_folders(user, &from, &names, Some(&to))?;
        for name in names.iter().filter(|n| **n == from || mailbox::is_descendant(n, &from)) {
            let new_name = format!("{to}{}", &name[from.len()..]);
            fs::rename(self.folder_dir(user, name), self.folder_dir(user, &new_name))?;
        }
        files::sync_dir(&self.user_dir(user), "store-dirs")?;
        Ok(())
    }

    fn user_files_blocking(&self, user: &str) -> Result<Vec<UserFile>> {
        check_user(user)?;
        let dir = self.user_dir(user).join(files::USER_FILES_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry?;
            // Leftovers of a write cut short (`.name.tmp`) and anything not ours are skipped.
            let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
            if user_file::check_name(&name).is_err() || !entry.file_type()?.is_file() {
                continue;
            }
            if entry.metadata()?.len() > user_file::MAX_SIZE as u64 {
                continue;
            }
            out.push(UserFile { name, content: Bytes::from(fs::read(entry.path())?) });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn put_user_file_blocking(&self, user: &str, name: &str, content: Option<Bytes>) -> Result<()> {
        self.ensure_user(user)?;
        let _tree = self.lock_tree();
        let existing = self.user_files_blocking(user)?;
        user_file::check_write(name, content.as_ref(), existing.iter().map(|f| f.name.as_str()))?;
        let dir = self.user_dir(user).join(files::USER_FILES_DIR);
        match content {
            Some(content) => {
                if !dir.exists() {
                    fs::create_dir(&dir)?;
                    files::sync_dir(&self.user_dir(user), "store-dirs")?;
                }
                files::write_atomic(&dir.join(name), &content, "store-file")?;
            }
            None => match fs::remove_file(dir.join(name)) {
                Ok(()) => files::sync_dir(&dir, "store-dirs")?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            },
        }
        Ok(())
    }

    fn subscribe_blocking(&self, user: &str, name: &str, subscribed: bool) -> Result<()> {
        self.ensure_user(user)?;
        let _tree = self.lock_tree();
        let name = mailbox::canonical_name(name)?;
        let mut list = self.subscriptions(user)?;
        let present = list.contains(&name);
        if subscribed == present {
            return Ok(());
        }
        if subscribed {
            list.push(name);
        } else {
            list.retain(|n| *n != name);
        }
        let mut text = list.join("\n");
        text.push('\n');
        files::write_atomic(&self.user_dir(user).join(files::SUBSCRIPTIONS_FILE), text.as_bytes(), "store-file")?;
        Ok(())
    }

    /// Writes a message into `tmp/` (blocking; runs in parallel with other writers). The
    /// committer makes it durable.
    fn prepare(&self, folder: Arc<Folder>, message: NewMessage) -> Result<Prepared> {
        let size = message.bytes.len() as u64;
        if size > MAX_MESSAGE_SIZE {
            return Err(StoreError::TooLarge);
        }
        let letters = folder.lock()?.letters_for(&folder.dir, &message.flags)?;
        let internal_date = message.internal_date.unwrap_or_else(now_secs);
        let unique = match &message.idempotency_key {
            Some(key) => self.unique() + &maildir::key_field(key),
            None => self.unique(),
        };
        let tmp = folder.dir.join("tmp").join(&unique);
        let written = (|| -> io::Result<fs::File> {
            let mut f = fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(&message.bytes)?;
            let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(internal_date.max(0) as u64);
            f.set_modified(mtime)?;
            Ok(f)
        })();
        let file = match written {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e.into());
            }
        };
        let entry =
            Entry { file_name: String::new(), system: message.flags.system, letters, internal_date, size, modseq: 0 };
        let uid = message.keep_uid.map_or(UidChoice::Next, UidChoice::Keep);
        Ok(Prepared { folder, tmp, file, unique, entry, uid })
    }

    /// [`Self::prepare`], on the calling thread for a small message: writing a few KiB to the
    /// page cache takes microseconds, and the trip to a blocking thread and back cost two
    /// context switches per message (a quarter of a replicated delivery's switches, seen with
    /// perf and /proc's counters).
    async fn prepared(&self, folder: Arc<Folder>, message: NewMessage) -> Result<Prepared> {
        const INLINE_BYTES: usize = 64 * 1024;
        if message.bytes.len() <= INLINE_BYTES {
            return self.prepare(folder, message);
        }
        let store = self.clone();
        blocking(move || store.prepare(folder, message)).await
    }

    fn store_flags_blocking(
        folder: &Folder,
        uids: &UidSet,
        op: FlagOp,
        change: &Flags,
        unchanged_since: Option<u64>,
    ) -> Result<Vec<MessageMeta>> {
        let mut st = folder.lock()?;
        let add_letters = st.letters_for(&folder.dir, &Flags::new(change.system, change.keywords.clone()))?;
        let targets: Vec<u32> =
            uids.ranges().iter().flat_map(|&(lo, hi)| st.messages.range(lo..=hi).map(|(u, _)| *u)).collect();
        let mut changed = Vec::new();
        for uid in targets {
            let Some(entry) = st.messages.get(&uid).cloned() else { continue };
            if unchanged_since.is_some_and(|since| entry.modseq > since) {
                continue;
            }
            let (system, letters) = match op {
                FlagOp::Set => (change.system, add_letters.clone()),
                FlagOp::Add => {
                    let mut l = entry.letters.clone();
                    l.extend(&add_letters);
                    l.sort_unstable();
                    l.dedup();
                    (entry.system.union(change.system), l)
                }
                FlagOp::Remove => (
                    entry.system.difference(change.system),
                    entry.letters.iter().copied().filter(|l| !add_letters.contains(l)).collect(),
                ),
            };
            let mut letters = letters;
            letters.sort_unstable();
            if system == entry.system && letters == entry.letters {
                continue;
            }
            let parsed = maildir::FileName::parse(&entry.file_name).ok_or(StoreError::Index("bad file name".into()))?;
            let file_name = maildir::FileName::render(&parsed.base, system, &letters);
            fs::rename(folder.path_of(&entry.file_name), folder.path_of(&file_name))?;
            let modseq = st.bump_modseq();
            let updated = Entry { file_name, system, letters, modseq, ..entry };
            folder.index_put(uid, &updated)?;
            changed.push(st.meta(uid, &updated));
            st.messages.insert(uid, updated);
        }
        if !changed.is_empty() {
            files::sync_dir(&folder.cur, "flags-dir")?;
            folder.index_counters(&st.counters)?;
            for meta in &changed {
                folder.notify(Change::FlagsChanged(meta.clone()));
            }
        }
        Ok(changed)
    }

    fn expunge_blocking(folder: &Folder, uids: Option<&UidSet>) -> Result<Vec<u32>> {
        let mut st = folder.lock()?;
        let doomed: Vec<(u32, String)> = st
            .messages
            .iter()
            .filter(|(uid, e)| e.system.contains(crate::SystemFlags::DELETED) && uids.is_none_or(|s| s.contains(**uid)))
            .map(|(uid, e)| (*uid, e.file_name.clone()))
            .collect();
        Self::remove_messages(folder, &mut st, doomed)
    }

    /// Removes the `doomed` messages (UID, file name) of a locked folder; returns the UIDs gone.
    fn remove_messages(folder: &Folder, st: &mut folder::FolderState, doomed: Vec<(u32, String)>) -> Result<Vec<u32>> {
        if doomed.is_empty() {
            return Ok(Vec::new());
        }
        st.persist_floor(&folder.dir)?;
        let mut gone = Vec::with_capacity(doomed.len());
        let mut failure = None;
        for (uid, file_name) in doomed {
            match fs::remove_file(folder.path_of(&file_name)) {
                Ok(()) => gone.push(uid),
                Err(e) if e.kind() == io::ErrorKind::NotFound => gone.push(uid),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        files::sync_dir(&folder.cur, "expunge-dir")?;
        for uid in &gone {
            st.messages.remove(uid);
        }
        st.bump_modseq();
        folder.index_remove(&gone)?;
        folder.index_counters(&st.counters)?;
        if !gone.is_empty() {
            folder.notify(Change::Expunged(gone.clone()));
        }
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(gone),
        }
    }

    /// Whether a fetch reads so little that it is cheaper on the calling thread.
    fn small_read(folder: &Folder, uids: &UidSet) -> Result<bool> {
        const INLINE_MESSAGES: usize = 4;
        const INLINE_BYTES: u64 = 64 * 1024;
        let st = folder.lock()?;
        let wanted = uids.ranges().iter().flat_map(|&(lo, hi)| st.messages.range(lo..=hi)).take(INLINE_MESSAGES + 1);
        let (mut count, mut bytes) = (0, 0);
        for (_, entry) in wanted {
            count += 1;
            bytes += entry.size;
        }
        Ok(count <= INLINE_MESSAGES && bytes <= INLINE_BYTES)
    }

    fn fetch_blocking(folder: &Folder, uids: &UidSet, body: BodyPart) -> Result<Vec<FetchedMessage>> {
        let wanted: Vec<(MessageMeta, String)> = {
            let st = folder.lock()?;
            uids.ranges()
                .iter()
                .flat_map(|&(lo, hi)| st.messages.range(lo..=hi))
                .map(|(uid, e)| (st.meta(*uid, e), e.file_name.clone()))
                .collect()
        };
        let mut out = Vec::with_capacity(wanted.len());
        for (meta, file_name) in wanted {
            let body = match body {
                BodyPart::None => None,
                _ => match Self::read_body(folder, meta.uid, &file_name, body)? {
                    Some(bytes) => Some(bytes),
                    // Expunged while we read: leave it out, as if it had gone a moment earlier.
                    None => continue,
                },
            };
            out.push(FetchedMessage { meta, body });
        }
        Ok(out)
    }

    /// Reads a message's bytes; a flag change may rename the file under us, so on
    /// "not found" look the name up again once.
    fn read_body(folder: &Folder, uid: u32, file_name: &str, part: BodyPart) -> Result<Option<Bytes>> {
        let mut name = file_name.to_string();
        for _ in 0..3 {
            match Self::read_file(&folder.path_of(&name), part) {
                Ok(bytes) => return Ok(Some(bytes)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => match folder.lock()?.messages.get(&uid) {
                    Some(e) if e.file_name != name => name = e.file_name.clone(),
                    _ => return Ok(None),
                },
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    fn read_file(path: &Path, part: BodyPart) -> io::Result<Bytes> {
        let mut f = fs::File::open(path)?;
        let len = f.metadata()?.len();
        let (offset, length) = match part {
            BodyPart::Range { offset, length } => (offset.min(len), length.min(len.saturating_sub(offset))),
            _ => (0, len),
        };
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::with_capacity(length.min(MAX_MESSAGE_SIZE) as usize);
        f.take(length).read_to_end(&mut buf)?;
        Ok(Bytes::from(buf))
    }

    async fn transfer(
        &self,
        user: &str,
        from: &str,
        to: &str,
        uids: &UidSet,
        remove_source: bool,
    ) -> Result<CopyResult> {
        let source = self.folder(user, from).await?;
        let dest = self.folder(user, to).await?;
        let (reply, rx) = oneshot::channel();
        self.inner.committer.submit(Job::Transfer {
            from: source,
            to: dest,
            uids: uids.clone(),
            remove_source,
            reply,
        })?;
        rx.await.map_err(|_| StoreError::Unavailable("committer stopped".into()))?
    }
}

#[async_trait]
impl MailStore for LocalStore {
    async fn list_mailboxes(&self, user: &str) -> Result<Vec<MailboxInfo>> {
        let (store, user) = (self.clone(), user.to_string());
        blocking(move || store.list_blocking(&user)).await
    }

    async fn create_mailbox(&self, user: &str, name: &str, special_use: Option<SpecialUse>) -> Result<()> {
        let (store, user, name) = (self.clone(), user.to_string(), name.to_string());
        blocking(move || store.create_blocking(&user, &name, special_use)).await
    }

    async fn delete_mailbox(&self, user: &str, name: &str) -> Result<()> {
        let (store, user, name) = (self.clone(), user.to_string(), name.to_string());
        blocking(move || store.delete_blocking(&user, &name)).await
    }

    async fn rename_mailbox(&self, user: &str, from: &str, to: &str) -> Result<()> {
        if mailbox::canonical_name(from)? == "INBOX" {
            // RFC 3501: renaming INBOX moves its messages to the new name and leaves INBOX empty.
            self.create_mailbox(user, to, None).await?;
            self.move_messages(user, "INBOX", to, &UidSet::all()).await?;
            return Ok(());
        }
        let (store, user, from, to) = (self.clone(), user.to_string(), from.to_string(), to.to_string());
        blocking(move || store.rename_blocking(&user, &from, &to)).await
    }

    async fn subscribe(&self, user: &str, name: &str, subscribed: bool) -> Result<()> {
        let (store, user, name) = (self.clone(), user.to_string(), name.to_string());
        blocking(move || store.subscribe_blocking(&user, &name, subscribed)).await
    }

    async fn append(&self, user: &str, mailbox: &str, message: NewMessage) -> Result<AppendResult> {
        let folder = self.folder(user, mailbox).await?;
        let prepared = self.prepared(folder, message).await?;
        let (reply, rx) = oneshot::channel();
        self.inner.committer.submit(Job::Publish { prepared, reply })?;
        rx.await.map_err(|_| StoreError::Unavailable("committer stopped".into()))?
    }

    async fn messages(&self, user: &str, mailbox: &str) -> Result<(MailboxStatus, Vec<MessageMeta>)> {
        let folder = self.folder(user, mailbox).await?;
        let st = folder.lock()?;
        Ok((st.status(), st.messages.iter().map(|(uid, e)| st.meta(*uid, e)).collect()))
    }

    async fn fetch(&self, user: &str, mailbox: &str, uids: &UidSet, body: BodyPart) -> Result<Vec<FetchedMessage>> {
        let folder = self.folder(user, mailbox).await?;
        if Self::small_read(&folder, uids)? {
            // A few KiB from the page cache take microseconds; the trip to a blocking thread
            // and back took most of a POP3 RETR's CPU (two context switches, seen with perf).
            return Self::fetch_blocking(&folder, uids, body);
        }
        let uids = uids.clone();
        blocking(move || Self::fetch_blocking(&folder, &uids, body)).await
    }

    async fn cache_get(&self, user: &str, mailbox: &str, uids: &UidSet) -> Result<Vec<Cached>> {
        let folder = self.folder(user, mailbox).await?;
        let wanted: Vec<(u32, String)> = {
            let st = folder.lock()?;
            uids.ranges()
                .iter()
                .flat_map(|&(lo, hi)| st.messages.range(lo..=hi))
                .map(|(uid, e)| (*uid, cache::identity(&e.file_name).to_string()))
                .collect()
        };
        // Read on the calling thread, outside the folder lock: sled serves these from memory
        // nearly always, and a trip to a blocking thread per FETCH batch would cost more.
        folder.cache.get(&wanted)
    }

    async fn cache_put(&self, user: &str, mailbox: &str, items: Vec<Cached>) -> Result<()> {
        let folder = self.folder(user, mailbox).await?;
        // Under the folder lock, so an expunge cannot slip in between finding the message and
        // keeping its data: it removes the entry after, or finds no message to keep data for.
        let st = folder.lock()?;
        let known = items.iter().filter_map(|item| {
            let entry = st.messages.get(&item.uid)?;
            Some((item.uid, cache::identity(&entry.file_name), item.data.as_ref()))
        });
        folder.cache.put_many(known)
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
        let folder = self.folder(user, mailbox).await?;
        let (uids, flags) = (uids.clone(), flags.clone());
        blocking(move || Self::store_flags_blocking(&folder, &uids, op, &flags, unchanged_since)).await
    }

    async fn expunge(&self, user: &str, mailbox: &str, uids: Option<&UidSet>) -> Result<Vec<u32>> {
        let folder = self.folder(user, mailbox).await?;
        let uids = uids.cloned();
        blocking(move || Self::expunge_blocking(&folder, uids.as_ref())).await
    }

    async fn copy(&self, user: &str, from: &str, to: &str, uids: &UidSet) -> Result<CopyResult> {
        self.transfer(user, from, to, uids, false).await
    }

    async fn move_messages(&self, user: &str, from: &str, to: &str, uids: &UidSet) -> Result<CopyResult> {
        self.transfer(user, from, to, uids, true).await
    }

    async fn status(&self, user: &str, mailbox: &str) -> Result<MailboxStatus> {
        let folder = self.folder(user, mailbox).await?;
        let st = folder.lock()?;
        Ok(st.status())
    }

    async fn claim_recent(&self, user: &str, mailbox: &str) -> Result<Vec<u32>> {
        let folder = self.folder(user, mailbox).await?;
        let mut st = folder.lock()?;
        let floor = st.counters.recent_floor;
        let recent: Vec<u32> = st.messages.range(floor..).map(|(uid, _)| *uid).collect();
        st.counters.recent_floor = st.counters.uid_next;
        folder.index_counters(&st.counters)?;
        Ok(recent)
    }

    async fn adopt_uid_validity(&self, user: &str, mailbox: &str, uid_validity: u32) -> Result<u32> {
        let folder = self.folder(user, mailbox).await?;
        blocking(move || folder.adopt_uid_validity(uid_validity)).await
    }

    async fn quota(&self, user: &str) -> Result<QuotaUsage> {
        let (store, user) = (self.clone(), user.to_string());
        blocking(move || {
            let mut usage = QuotaUsage::default();
            for name in store.folder_names(&user)? {
                let folder = store.open_folder(&user, &name)?;
                let st = folder.lock()?;
                usage.messages += st.messages.len() as u64;
                usage.bytes += st.messages.values().map(|e| e.size).sum::<u64>();
            }
            Ok(usage)
        })
        .await
    }

    async fn watch(&self, user: &str, mailbox: &str) -> Result<ChangeStream> {
        let folder = self.folder(user, mailbox).await?;
        let rx = folder.subscribe();
        Ok(crate::change::stream(rx))
    }
    async fn lock_maildrop(&self, user: &str) -> Result<Option<crate::MaildropLock>> {
        check_user(user)?;
        Ok(self.inner.maildrops.try_lock(user))
    }

    async fn user_files(&self, user: &str) -> Result<Vec<UserFile>> {
        let (store, user) = (self.clone(), user.to_string());
        blocking(move || store.user_files_blocking(&user)).await
    }

    async fn put_user_file(&self, user: &str, name: &str, content: Option<Bytes>) -> Result<()> {
        let (store, user, name) = (self.clone(), user.to_string(), name.to_string());
        blocking(move || store.put_user_file_blocking(&user, &name, content)).await
    }
}
