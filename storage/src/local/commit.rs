//! The committer: the one thread that gives messages their UIDs and makes them visible.
//!
//! Writers put a message's bytes in `tmp/` in parallel. The committer then takes every
//! job waiting and, for the whole batch:
//!
//! 1. makes the new files' data durable: one `fsync` for a lone message, one `syncfs`
//!    (the file system's fsync of everything dirty) for a batch — one journal commit and
//!    one device flush instead of one per message;
//! 2. renames each file into `cur/` under a name that holds its new UID;
//! 3. fsyncs each touched directory once — the group commit of the renames;
//! 4. publishes the messages in UID order and answers the writers.
//!
//! Nothing is acknowledged before both its data and its rename are on disk. Because
//! `syncfs` flushes everything dirty on that file system, the store's data directory
//! is best on a file system of its own. On FUSE, where Linux does not pass `syncfs` on
//! to the file system, step 1 fsyncs each file instead. One thread doing all this keeps
//! UIDs ascending in the order clients see them.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;

use tokio::sync::oneshot;

use super::files;
use super::folder::{Entry, Folder};
use super::maildir::FileName;
use crate::change::Change;
use crate::error::{Result, StoreError};
use crate::message::{AppendResult, CopyResult};
use crate::uidset::UidSet;

/// Most jobs committed in one batch.
const MAX_BATCH: usize = 512;

/// A message written and fsynced in `tmp/`, waiting for its UID.
pub struct Prepared {
    pub folder: Arc<Folder>,
    pub tmp: PathBuf,
    /// The open file in `tmp/`, written but not yet fsynced.
    pub file: fs::File,
    pub unique: String,
    pub entry: Entry,
    pub uid: UidChoice,
}

/// Which UID a prepared message is placed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UidChoice {
    /// The folder's next.
    Next,
    /// Exactly this one: a replica's message gets its primary's UID.
    Exact(u32),
    /// This one if no UID at or above it was handed out yet, else the next: an import keeping
    /// its source's UIDs never places a message below one a client has already seen.
    Keep(u32),
}

/// Work for the committer.
pub enum Job {
    Publish {
        prepared: Prepared,
        reply: oneshot::Sender<Result<AppendResult>>,
    },
    Transfer {
        from: Arc<Folder>,
        to: Arc<Folder>,
        uids: UidSet,
        remove_source: bool,
        reply: oneshot::Sender<Result<CopyResult>>,
    },
}

/// Handle to the committer thread; the thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Job>,
}

impl Committer {
    /// Starts the committer thread.
    pub fn start() -> std::io::Result<Committer> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new().name("sirms-commit".into()).spawn(move || run(rx))?;
        Ok(Committer { tx })
    }

    /// Hands a job to the committer.
    pub fn submit(&self, job: Job) -> Result<()> {
        self.tx.send(job).map_err(|_| StoreError::Unavailable("committer stopped".into()))
    }
}

/// What a job left to do after the batch's directories are synced.
enum Done {
    Append {
        folder: Arc<Folder>,
        uid: u32,
        entry: Entry,
        reply: oneshot::Sender<Result<AppendResult>>,
    },
    Transfer {
        from: Arc<Folder>,
        to: Arc<Folder>,
        moved: Vec<(u32, u32, Entry)>,
        remove_source: bool,
        reply: oneshot::Sender<Result<CopyResult>>,
    },
}

fn run(rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(batch);
    }
}

/// Makes the data of every file in the batch durable, or says which failed.
fn sync_data(files: &[&fs::File]) -> Vec<std::io::Result<()>> {
    #[cfg(target_os = "linux")]
    if files.len() > 1 && syncfs_works(files[0]) {
        if crate::durable::skipped("commit-data") {
            return files.iter().map(|_| Ok(())).collect();
        }
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor; syncfs reads no memory of ours.
        let rc = unsafe { libc::syncfs(files[0].as_raw_fd()) };
        let result = if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) };
        return files
            .iter()
            .map(|_| match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            })
            .collect();
    }
    files.iter().map(|f| files::sync_file(f, "commit-data")).collect()
}

/// `statfs`'s `f_type` of every FUSE file system (`fuse`, `fuseblk`, virtiofs).
#[cfg(target_os = "linux")]
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Whether `syncfs` makes data on `file`'s file system durable. Linux passes it on to a
/// FUSE file system only when that asked for it (virtiofs does; nothing on `/dev/fuse`
/// can, as of 6.18): elsewhere on FUSE it returns 0 having flushed nothing, so there each
/// file is fsynced (lossyfs/README.md, "syncfs"). When `fstatfs` fails, the safe answer.
#[cfg(target_os = "linux")]
fn syncfs_works(file: &fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: statfs is plain data; zeroes are a valid value of it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid open descriptor and a pointer to a statfs we own.
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) };
    rc == 0 && st.f_type as i64 != FUSE_SUPER_MAGIC
}

fn commit_batch(batch: Vec<Job>) {
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    let mut done = Vec::with_capacity(batch.len());
    // Phase 1: make every new file's data durable.
    let synced = {
        let files: Vec<&fs::File> = batch
            .iter()
            .filter_map(|job| match job {
                Job::Publish { prepared, .. } => Some(&prepared.file),
                Job::Transfer { .. } => None,
            })
            .collect();
        sync_data(&files)
    };
    let mut synced = synced.into_iter();
    let batch: Vec<Job> = batch
        .into_iter()
        .filter_map(|job| match job {
            Job::Publish { prepared, reply } => match synced.next().unwrap_or(Ok(())) {
                Ok(()) => Some(Job::Publish { prepared, reply }),
                Err(e) => {
                    let _ = fs::remove_file(&prepared.tmp);
                    let _ = reply.send(Err(e.into()));
                    None
                }
            },
            other => Some(other),
        })
        .collect();
    for job in batch {
        match job {
            Job::Publish { prepared, reply } => match place(&prepared) {
                Ok((uid, entry)) => {
                    dirs.insert(prepared.folder.cur.clone());
                    done.push(Done::Append { folder: prepared.folder, uid, entry, reply });
                }
                Err(e) => {
                    let _ = fs::remove_file(&prepared.tmp);
                    let _ = reply.send(Err(e));
                }
            },
            Job::Transfer { from, to, uids, remove_source, reply } => {
                match transfer(&from, &to, &uids, remove_source) {
                    Ok(moved) => {
                        dirs.insert(to.cur.clone());
                        if remove_source {
                            dirs.insert(from.cur.clone());
                        }
                        done.push(Done::Transfer { from, to, moved, remove_source, reply });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
        }
    }
    let mut failed: Vec<(PathBuf, String)> = Vec::new();
    for dir in &dirs {
        if let Err(e) = files::sync_dir(dir, "commit-dir") {
            failed.push((dir.clone(), e.to_string()));
        }
    }
    let failure = |dir: &PathBuf| failed.iter().find(|(d, _)| d == dir).map(|(_, e)| e.clone());
    for d in done {
        match d {
            Done::Append { folder, uid, entry, reply } => {
                if let Some(e) = failure(&folder.cur) {
                    let _ = fs::remove_file(folder.path_of(&entry.file_name));
                    let _ = reply.send(Err(StoreError::Io(std::io::Error::other(e))));
                    continue;
                }
                let _ = reply.send(publish_append(&folder, uid, entry));
            }
            Done::Transfer { from, to, moved, remove_source, reply } => {
                if let Some(e) = failure(&to.cur).or_else(|| if remove_source { failure(&from.cur) } else { None }) {
                    let _ = reply.send(Err(StoreError::Io(std::io::Error::other(e))));
                    continue;
                }
                let _ = reply.send(publish_transfer(&from, &to, moved, remove_source));
            }
        }
    }
}

/// Gives a prepared message its UID and renames it into `cur/`.
fn place(p: &Prepared) -> Result<(u32, Entry)> {
    let uid = {
        let mut st = p.folder.lock()?;
        let uid = match p.uid {
            UidChoice::Exact(uid) if st.messages.contains_key(&uid) => {
                return Err(StoreError::Diverged(format!("UID {uid} is already taken")));
            }
            UidChoice::Exact(uid) => uid,
            UidChoice::Keep(uid) if uid >= st.counters.uid_next => uid,
            UidChoice::Keep(_) | UidChoice::Next => st.counters.uid_next,
        };
        let next = uid.checked_add(1).ok_or(StoreError::Index("UID space exhausted".into()))?;
        st.counters.uid_next = st.counters.uid_next.max(next);
        uid
    };
    let mut entry = p.entry.clone();
    entry.file_name = FileName::render(&FileName::new_base(&p.unique, uid, entry.size), entry.system, &entry.letters);
    fs::rename(&p.tmp, p.folder.path_of(&entry.file_name))?;
    Ok((uid, entry))
}

/// Links (copy) or renames (move) messages into the destination under new UIDs.
/// The source lock is held throughout so no flag change renames a file under us.
fn transfer(
    from: &Arc<Folder>,
    to: &Arc<Folder>,
    uids: &UidSet,
    remove_source: bool,
) -> Result<Vec<(u32, u32, Entry)>> {
    let same = Arc::ptr_eq(from, to);
    let mut src = from.lock()?;
    if remove_source {
        src.persist_floor(&from.dir)?;
    }
    let picked: Vec<(u32, Entry)> = uids
        .ranges()
        .iter()
        .flat_map(|&(lo, hi)| src.messages.range(lo..=hi))
        .map(|(uid, e)| (*uid, e.clone()))
        .collect();
    if picked.is_empty() {
        return Ok(Vec::new());
    }
    // Keywords are letters per folder: translate names into the destination's letters.
    let names: Vec<(u32, crate::flags::Flags)> =
        picked.iter().map(|(uid, e)| (*uid, src.meta(*uid, e).flags)).collect();
    let mut moved = Vec::with_capacity(picked.len());
    let mut placed: Vec<(PathBuf, PathBuf)> = Vec::with_capacity(picked.len());
    let mut place_all = |dst: &mut super::folder::FolderState| -> Result<()> {
        // A failed transfer hands out no UID: a replica could not know it was burnt.
        let first_uid = dst.counters.uid_next;
        for ((src_uid, e), (_, flags)) in picked.iter().zip(&names) {
            let letters = dst.letters_for(&to.dir, flags)?;
            let uid = dst.counters.uid_next;
            dst.counters.uid_next = uid.checked_add(1).ok_or(StoreError::Index("UID space exhausted".into()))?;
            let parsed = FileName::parse(&e.file_name).ok_or(StoreError::Index("bad file name".into()))?;
            let file_name = FileName::render(&parsed.rebase(uid, e.size), e.system, &letters);
            let (old, new) = (from.path_of(&e.file_name), to.path_of(&file_name));
            let linked = if remove_source {
                fs::rename(&old, &new)
            } else {
                fs::hard_link(&old, &new).or_else(|_| {
                    fs::copy(&old, &new).and_then(|_| files::sync_file(&fs::File::open(&new)?, "commit-data"))
                })
            };
            if let Err(err) = linked {
                undo(&placed, remove_source);
                dst.counters.uid_next = first_uid;
                return Err(err.into());
            }
            placed.push((old, new));
            moved.push((*src_uid, uid, Entry { file_name, letters, ..e.clone() }));
        }
        Ok(())
    };
    if same {
        drop(src);
        let mut dst = to.lock()?;
        place_all(&mut dst)?;
    } else {
        let mut dst = to.lock()?;
        place_all(&mut dst)?;
        drop(src);
    }
    Ok(moved)
}

/// Puts back what a failed transfer had already done: `(source, destination)` paths.
fn undo(placed: &[(PathBuf, PathBuf)], remove_source: bool) {
    for (old, new) in placed {
        let _ = if remove_source { fs::rename(new, old) } else { fs::remove_file(new) };
    }
}

fn publish_append(folder: &Folder, uid: u32, mut entry: Entry) -> Result<AppendResult> {
    let mut st = folder.lock()?;
    // A replica's message keeps the MODSEQ its primary gave it.
    entry.modseq = match entry.modseq {
        0 => st.bump_modseq(),
        given => {
            st.counters.highest_modseq = st.counters.highest_modseq.max(given);
            given
        }
    };
    folder.index_put(uid, &entry)?;
    folder.index_counters(&st.counters)?;
    let meta = st.meta(uid, &entry);
    st.messages.insert(uid, entry);
    let result = AppendResult {
        uid_validity: st.counters.uid_validity,
        uid,
        modseq: meta.modseq,
        internal_date: meta.internal_date,
    };
    folder.notify(Change::Appended(meta));
    Ok(result)
}

fn publish_transfer(
    from: &Folder,
    to: &Folder,
    moved: Vec<(u32, u32, Entry)>,
    remove_source: bool,
) -> Result<CopyResult> {
    let mut result = CopyResult::default();
    {
        let mut dst = to.lock()?;
        result.uid_validity = dst.counters.uid_validity;
        for (src_uid, uid, mut entry) in moved {
            entry.modseq = dst.bump_modseq();
            to.index_put(uid, &entry)?;
            let meta = dst.meta(uid, &entry);
            dst.messages.insert(uid, entry);
            to.notify(Change::Appended(meta));
            result.pairs.push((src_uid, uid));
        }
        to.index_counters(&dst.counters)?;
    }
    if remove_source && !result.pairs.is_empty() {
        let mut src = from.lock()?;
        let gone: Vec<u32> = result.pairs.iter().map(|(s, _)| *s).collect();
        for uid in &gone {
            src.messages.remove(uid);
        }
        src.bump_modseq();
        from.index_remove(&gone)?;
        from.index_counters(&src.counters)?;
        from.notify(Change::Expunged(gone));
    }
    Ok(result)
}
