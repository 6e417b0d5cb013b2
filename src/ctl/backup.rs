//! `sirms ctl backup` and `sirms ctl restore`: the directory and users' mailboxes written to a
//! plain tree that standard tools read, and brought back from it.
//!
//! ```text
//! BACKUP/manifest.json          what was backed up, when, each mailbox's counters
//! BACKUP/directory.json         domains (and quotas), users (password hashes), aliases, transports, DKIM keys
//! BACKUP/mail/USER/Maildir/     one Maildir per user, mailboxes as nested directories
//!                               (Dovecot's LAYOUT=fs; levels in modified UTF-7), each with a
//!                               dovecot-uidlist (UIDVALIDITY, UIDs) and dovecot-keywords
//! BACKUP/mail/USER/sirms-files/ the user's files as the store keeps them: Sieve scripts
//!                               (`sieve.NAME`), the active one's name (`sieve-active`), the
//!                               vacation memory (`sieve-vacation`)
//! ```
//!
//! Dovecot reads each user's tree as it is (`mail_location = maildir:~/Maildir:LAYOUT=fs`),
//! and `restore` is `import` of it: UIDVALIDITY and UIDs come back when the mailbox is new or
//! empty, and messages already there are not stored twice. A backup into the folder of an
//! earlier one is incremental: a mailbox whose UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ and count
//! are what the last manifest says is not even listed; of the others it fetches only the
//! messages the folder lacks, renames the files whose flags changed and drops the expunged ones.
//!
//! Each mailbox is copied as it was when its turn came (one listing, then its messages):
//! mail arriving meanwhile is in the next backup. Files are written, then made durable once
//! per mailbox (syncfs) before its uidlist names them.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use sirms_mailnode::imap::mutf7;
use sirms_mailnode::import::dovecot::{self, UidList};
use sirms_mailnode::import::maildir;
use sirms_mailnode::sieve::scripts::ACTIVE_FILE;
use sirms_proto::cluster::{DirectorySnapshot, Empty, ImportUserFile, Name, User};
use sirms_proto::cluster_tls::Credentials;
use sirms_storage::{BodyPart, MailStore, RemoteStore, UidSet, UserFile};

use super::import::{self, ImportArgs};
use super::users::size;
use super::{Client, CtlError, show};

/// Messages fetched per call, so that a large mailbox never sits in memory whole.
const BATCH: usize = 64;
/// The manifest's format name.
const FORMAT: &str = "sirms-backup/1";

/// `sirms ctl backup DIR`.
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The backup's folder (made if missing; an earlier backup there is brought up to date).
    pub dir: PathBuf,
    /// Only these users' mailboxes (repeat it); the directory is always written.
    #[arg(long)]
    pub user: Vec<String>,
}

/// `sirms ctl restore DIR`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// A folder `sirms ctl backup` wrote.
    pub dir: PathBuf,
    /// Only this user (repeat it); without it, every user in the backup.
    #[arg(long)]
    pub user: Vec<String>,
    /// Only this mailbox (with its children) of each restored user.
    #[arg(long)]
    pub folder: Option<String>,
    /// Leave the directory alone: only mail comes back (into users that exist).
    #[arg(long)]
    pub mail_only: bool,
}

/// `manifest.json`.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Manifest {
    format: String,
    /// Seconds since the Unix epoch at the start of the backup.
    started: u64,
    finished: u64,
    users: BTreeMap<String, Vec<MailboxEntry>>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct MailboxEntry {
    name: String,
    uid_validity: u32,
    uid_next: u32,
    highest_modseq: u64,
    messages: u64,
    bytes: u64,
}

/// What a backup did.
#[derive(Debug, Default, serde::Serialize)]
struct BackupReport {
    users: usize,
    mailboxes: usize,
    /// Mailboxes whose counters (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, messages) were what the
    /// last backup's manifest says: not listed again.
    unchanged: usize,
    messages: u64,
    /// Fetched now (the rest were in the folder already).
    fetched: u64,
    bytes: u64,
    renamed: u64,
    removed: u64,
    /// Users' files (Sieve scripts and their state) written.
    files: usize,
    seconds: f64,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn io(path: &Path, e: std::io::Error) -> CtlError {
    CtlError::Input(format!("{}: {e}", path.display()))
}

/// A user's tree in the backup.
fn user_dir(root: &Path, user: &str) -> PathBuf {
    root.join("mail").join(user).join("Maildir")
}

/// A user's files in the backup (next to the Maildir: Dovecot does not read them).
fn files_dir(root: &Path, user: &str) -> PathBuf {
    root.join("mail").join(user).join("sirms-files")
}

/// Writes `files` into `dir`, each durably, and removes what the user no longer has; says
/// how many were written.
fn save_user_files(dir: &Path, files: &[UserFile]) -> Result<usize, CtlError> {
    sirms_storage::durable::create_private_dir(dir).map_err(|e| io(dir, e))?;
    for file in files {
        sirms_storage::user_file::check_name(&file.name).map_err(|e| CtlError::Input(e.to_string()))?;
        let path = dir.join(&file.name);
        sirms_storage::durable::write_atomic(&path, &file.content, "backup-user-file").map_err(|e| io(&path, e))?;
    }
    for entry in fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let entry = entry.map_err(|e| io(dir, e))?;
        let name = entry.file_name();
        if !files.iter().any(|f| name.to_str() == Some(f.name.as_str())) {
            fs::remove_file(entry.path()).map_err(|e| io(&entry.path(), e))?;
        }
    }
    Ok(files.len())
}

/// Puts a backup's files of `user` back through a mail node (so the replica gets them too);
/// the active script's name last, once the script it names is there. Says how many.
async fn restore_user_files(
    router: &mut Client,
    credentials: &Credentials,
    user: &str,
    dir: &Path,
) -> Result<usize, CtlError> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(dir, e)),
    };
    // Leftovers of an interrupted backup (temporary files) are not the user's.
    names.retain(|n| sirms_storage::user_file::check_name(n).is_ok());
    if names.is_empty() {
        return Ok(0);
    }
    names.sort_by_key(|n| (n == ACTIVE_FILE, n.clone()));
    let (_, mut client) = import::importer(router, credentials, user, None).await?;
    for name in &names {
        let path = dir.join(name);
        let content = fs::read(&path).map_err(|e| io(&path, e))?;
        let file = ImportUserFile { user: user.to_string(), name: name.clone(), content: content.into() };
        client.put_user_file(file).await.map_err(|e| CtlError::Input(format!("{user}: {name}: {}", e.message())))?;
    }
    Ok(names.len())
}

/// A mailbox's folder in a user's tree: INBOX at the root, others nested, levels in mUTF-7.
fn folder_dir(tree: &Path, mailbox: &str) -> PathBuf {
    if mailbox.eq_ignore_ascii_case("INBOX") {
        return tree.to_path_buf();
    }
    mailbox.split('/').fold(tree.to_path_buf(), |dir, level| dir.join(mutf7::encode(level)))
}

pub(super) async fn backup(
    router: &mut Client,
    credentials: &Credentials,
    json: bool,
    args: BackupArgs,
) -> Result<String, CtlError> {
    let started = (Instant::now(), now());
    sirms_storage::durable::create_private_dir(&args.dir).map_err(|e| io(&args.dir, e))?;
    let directory = router.export_directory(Empty {}).await?.into_inner();
    let text = serde_json::to_vec_pretty(&directory).map_err(|e| CtlError::Input(e.to_string()))?;
    sirms_storage::durable::write_atomic(&args.dir.join("directory.json"), &text, "backup-directory")
        .map_err(|e| io(&args.dir, e))?;
    let wanted: Vec<&User> = directory
        .users
        .iter()
        .filter(|u| args.user.is_empty() || args.user.iter().any(|w| w.eq_ignore_ascii_case(&u.address)))
        .collect();
    if wanted.len() < args.user.len() {
        return Err(CtlError::Input("a --user is not in the directory".into()));
    }
    let mut report = BackupReport::default();
    let mut earlier = earlier_manifest(&args.dir);
    let mut manifest = Manifest { format: FORMAT.into(), started: started.1, ..Default::default() };
    for user in wanted {
        let endpoint = directory
            .nodes
            .iter()
            .find(|n| n.id == user.home)
            .map(|n| n.store_endpoint.clone())
            .filter(|e| !e.is_empty())
            .ok_or_else(|| {
                CtlError::Input(format!("{}: the home {} has no store endpoint", user.address, user.home))
            })?;
        let store = RemoteStore::connect_with(&endpoint, credentials).map_err(|e| CtlError::Input(e.to_string()))?;
        let tree = user_dir(&args.dir, &user.address);
        let mut entries = Vec::new();
        let before = earlier.remove(&user.address).unwrap_or_default();
        for mailbox in store.list_mailboxes(&user.address).await.map_err(|e| CtlError::Input(e.to_string()))? {
            let was = before.iter().find(|e| e.name == mailbox.name);
            let entry = match unchanged(&store, &user.address, was, &tree).await {
                Some(entry) => {
                    report.unchanged += 1;
                    report.messages += entry.messages;
                    report.bytes += entry.bytes;
                    entry
                }
                None => backup_mailbox(&store, &user.address, &mailbox.name, &tree, &mut report).await?,
            };
            entries.push(entry);
            report.mailboxes += 1;
        }
        let files = store.user_files(&user.address).await.map_err(|e| CtlError::Input(e.to_string()))?;
        report.files += save_user_files(&files_dir(&args.dir, &user.address), &files)?;
        manifest.users.insert(user.address.clone(), entries);
        report.users += 1;
    }
    if !args.user.is_empty() {
        // The other users' folders are still in the backup as their entries say.
        manifest.users.append(&mut earlier);
    }
    manifest.finished = now();
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| CtlError::Input(e.to_string()))?;
    sirms_storage::durable::write_atomic(&args.dir.join("manifest.json"), &text, "backup-manifest")
        .map_err(|e| io(&args.dir, e))?;
    report.seconds = started.0.elapsed().as_secs_f64();
    show(json, &report, |r| {
        format!(
            "backed up {} users, {} mailboxes ({} unchanged), {} messages ({}), {} user files in {:.1} s: {} fetched, {} renamed, {} removed\n",
            r.users,
            r.mailboxes,
            r.unchanged,
            r.messages,
            size(r.bytes),
            r.files,
            r.seconds,
            r.fetched,
            r.renamed,
            r.removed
        )
    })
}

/// The mailboxes the manifest of an earlier backup in `dir` lists, by user; none if there is
/// no such manifest.
fn earlier_manifest(dir: &Path) -> BTreeMap<String, Vec<MailboxEntry>> {
    let manifest = fs::read(dir.join("manifest.json")).ok();
    let manifest = manifest.and_then(|text| serde_json::from_slice::<Manifest>(&text).ok());
    manifest.filter(|m| m.format == FORMAT).map(|m| m.users).unwrap_or_default()
}

/// The earlier backup's entry of a mailbox when the mailbox has not changed since: the same
/// UIDVALIDITY and message count, and no UID or MODSEQ handed out since (every append raises
/// UIDNEXT, every flag change HIGHESTMODSEQ, every expunge lowers the count unless an append
/// raised UIDNEXT). A manifest is written last, so the folder holds at least what it says.
async fn unchanged(store: &RemoteStore, user: &str, was: Option<&MailboxEntry>, tree: &Path) -> Option<MailboxEntry> {
    let was = was?;
    if !folder_dir(tree, &was.name).join("dovecot-uidlist").is_file() {
        return None;
    }
    let now = store.status(user, &was.name).await.ok()?;
    let same = (now.uid_validity, now.uid_next, now.highest_modseq, u64::from(now.messages))
        == (was.uid_validity, was.uid_next, was.highest_modseq, was.messages);
    same.then(|| was.clone())
}

/// Brings one mailbox's folder up to date with the store.
async fn backup_mailbox(
    store: &RemoteStore,
    user: &str,
    mailbox: &str,
    tree: &Path,
    report: &mut BackupReport,
) -> Result<MailboxEntry, CtlError> {
    let failed = |e: sirms_storage::StoreError| CtlError::Input(format!("{user} {mailbox}: {e}"));
    let (status, metas) = store.messages(user, mailbox).await.map_err(failed)?;
    let dir = folder_dir(tree, mailbox);
    for sub in ["cur", "new", "tmp"] {
        sirms_storage::durable::create_dir_all(&dir.join(sub), "backup-dirs").map_err(|e| io(&dir, e))?;
    }
    let cur = dir.join("cur");
    // What an earlier backup left here, if it was of the same mailbox (same UIDVALIDITY).
    let earlier = fs::read(dir.join("dovecot-uidlist")).ok().and_then(|t| UidList::parse(&t));
    let mut present: HashMap<u32, String> = HashMap::new();
    for item in fs::read_dir(&cur).map_err(|e| io(&cur, e))? {
        let name = item.map_err(|e| io(&cur, e))?.file_name().to_string_lossy().into_owned();
        match earlier.as_ref().filter(|l| l.uid_validity == status.uid_validity).and_then(|l| l.uid_of(&name)) {
            Some(uid) => {
                present.insert(uid, name);
            }
            None => {
                fs::remove_file(cur.join(&name)).map_err(|e| io(&cur, e))?;
                report.removed += 1;
            }
        }
    }
    let mut keywords: Vec<String> = metas.iter().flat_map(|m| m.flags.keywords.iter().cloned()).collect();
    keywords.sort();
    keywords.dedup();
    keywords.truncate(dovecot::MAX_KEYWORDS);
    let mut listed = Vec::with_capacity(metas.len());
    let mut missing = Vec::new();
    for meta in &metas {
        let base = format!("{}.{}.sirms,S={}", meta.uid, status.uid_validity, meta.size);
        let name = format!("{base}{}", maildir::info(&meta.flags, &keywords));
        match present.remove(&meta.uid) {
            Some(old) if old == name => {}
            Some(old) => {
                fs::rename(cur.join(&old), cur.join(&name)).map_err(|e| io(&cur, e))?;
                report.renamed += 1;
            }
            None => missing.push((meta.uid, name.clone(), meta.internal_date)),
        }
        listed.push((meta.uid, base));
        report.messages += 1;
        report.bytes += meta.size;
    }
    // Gone from the mailbox since the earlier backup.
    for (_, name) in present {
        fs::remove_file(cur.join(&name)).map_err(|e| io(&cur, e))?;
        report.removed += 1;
    }
    for batch in missing.chunks(BATCH) {
        let uids = UidSet::from_ranges(batch.iter().map(|(uid, _, _)| (*uid, *uid)));
        let fetched = store.fetch(user, mailbox, &uids, BodyPart::Full).await.map_err(failed)?;
        let by_uid: HashMap<u32, _> = fetched.into_iter().map(|m| (m.meta.uid, m)).collect();
        for (uid, name, date) in batch {
            // Expunged between the listing and now: not in this backup.
            let Some(body) = by_uid.get(uid).and_then(|m| m.body.as_ref()) else { continue };
            let path = cur.join(name);
            fs::write(&path, body).map_err(|e| io(&path, e))?;
            let mtime = UNIX_EPOCH + std::time::Duration::from_secs((*date).max(0) as u64);
            fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(mtime))
                .map_err(|e| io(&path, e))?;
            report.fetched += 1;
        }
    }
    // The files are durable before the uidlist that names them.
    let folder = fs::File::open(&cur).map_err(|e| io(&cur, e))?;
    syncfs(&folder).map_err(|e| io(&cur, e))?;
    let uidlist = dovecot::render_uidlist(status.uid_validity, status.uid_next, &listed);
    sirms_storage::durable::write_atomic(&dir.join("dovecot-uidlist"), uidlist.as_bytes(), "backup-uidlist")
        .map_err(|e| io(&dir, e))?;
    let words = dovecot::render_keywords(&keywords);
    sirms_storage::durable::write_atomic(&dir.join("dovecot-keywords"), words.as_bytes(), "backup-keywords")
        .map_err(|e| io(&dir, e))?;
    Ok(MailboxEntry {
        name: mailbox.to_string(),
        uid_validity: status.uid_validity,
        uid_next: status.uid_next,
        highest_modseq: status.highest_modseq,
        messages: metas.len() as u64,
        bytes: metas.iter().map(|m| m.size).sum(),
    })
}

/// Flushes the file system holding `file`: one call for all of a mailbox's new files.
fn syncfs(file: &fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for the duration of the call.
    if unsafe { libc::syncfs(file.as_raw_fd()) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

pub(super) async fn restore(
    router: &mut Client,
    credentials: &Credentials,
    json: bool,
    args: RestoreArgs,
) -> Result<String, CtlError> {
    let manifest: Manifest = read_json(&args.dir.join("manifest.json"))?;
    if manifest.format != FORMAT {
        return Err(CtlError::Input(format!("{}: not a {FORMAT} backup", args.dir.display())));
    }
    let directory: DirectorySnapshot = read_json(&args.dir.join("directory.json"))?;
    let chosen: Vec<&String> = manifest
        .users
        .keys()
        .filter(|u| args.user.is_empty() || args.user.iter().any(|w| w.eq_ignore_ascii_case(u)))
        .collect();
    if chosen.is_empty() {
        return Err(CtlError::Input("no such user in the backup".into()));
    }
    let mut text = String::new();
    if !args.mail_only {
        text.push_str(&restore_directory(router, &directory, &chosen, args.user.is_empty()).await?);
    }
    for user in chosen {
        let tree = user_dir(&args.dir, user);
        let import = ImportArgs {
            user: Some(user.clone()),
            maildir: Some(tree),
            folder: args.folder.clone(),
            ..Default::default()
        };
        text.push_str(&import::run(router, credentials, json, import).await?);
        // A restore of one folder is of mail only; a user's whole restore brings their
        // Sieve scripts back too.
        if args.folder.is_none() {
            let files = restore_user_files(router, credentials, user, &files_dir(&args.dir, user)).await?;
            if !json {
                text.push_str(&format!("{user}: {files} user files restored\n"));
            }
        }
    }
    Ok(text)
}

/// Puts the backup's directory entries back: its domains, the chosen users (with their
/// password hashes and quotas; homes kept where the node still exists), and, for a whole
/// restore, aliases, transports, DKIM keys and domain quotas.
async fn restore_directory(
    router: &mut Client,
    directory: &DirectorySnapshot,
    users: &[&String],
    everything: bool,
) -> Result<String, CtlError> {
    let nodes: Vec<String> =
        router.get_directory(Empty {}).await?.into_inner().nodes.into_iter().map(|n| n.id).collect();
    let known = |id: &str| if nodes.iter().any(|n| n == id) { id.to_string() } else { String::new() };
    for domain in &directory.domains {
        router.put_domain(Name { name: domain.clone() }).await?;
    }
    let mut restored = 0;
    for user in directory.users.iter().filter(|u| users.contains(&&u.address)) {
        let user = User {
            home: known(&user.home),
            replica: known(&user.replica),
            epoch: 0,
            replica_in_sync: false,
            quota_bytes: Some(user.quota_bytes.unwrap_or(0)),
            quota_messages: Some(user.quota_messages.unwrap_or(0)),
            ..user.clone()
        };
        router.put_user(user).await?;
        restored += 1;
    }
    if everything {
        for alias in &directory.aliases {
            router.put_alias(alias.clone()).await?;
        }
        for transport in &directory.transports {
            router.put_transport(transport.clone()).await?;
        }
        for key in &directory.dkim_keys {
            router.put_dkim_key(key.clone()).await?;
        }
        for quota in &directory.domain_quotas {
            router.set_domain_quota(quota.clone()).await?;
        }
    }
    Ok(format!(
        "directory: {} domains, {restored} users{}\n",
        directory.domains.len(),
        if everything {
            let (aliases, transports, keys) =
                (directory.aliases.len(), directory.transports.len(), directory.dkim_keys.len());
            format!(", {aliases} aliases, {transports} transports, {keys} DKIM keys")
        } else {
            String::new()
        }
    ))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, CtlError> {
    let text = fs::read(path).map_err(|e| io(path, e))?;
    serde_json::from_slice(&text).map_err(|e| CtlError::Input(format!("{}: {e}", path.display())))
}
