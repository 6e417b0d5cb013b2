//! `sirms ctl import`: mail from a Maildir tree (Dovecot's and Courier's layouts, with
//! Dovecot's UIDs and keywords), from mbox files or from a live IMAP server, into one user's
//! mailboxes.
//!
//! The sources are read here, where the admin runs `ctl`, one message at a time, and each
//! message goes to a mail node's Import service, whose store writes it to the user's home and
//! replica as it writes delivered mail. A run can be repeated or resumed after being stopped:
//! a message whose bytes are already in the mailbox (same size and date, or its kept UID) is
//! skipped, so each message ends up there once.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use sirms_mailnode::auth::password::hash_password;
use sirms_mailnode::import::imap::response::Fetched;
use sirms_mailnode::import::imap::{ImapFolder, ImapSource, ImapUrl};
use sirms_mailnode::import::maildir::{self, MaildirFolder};
use sirms_mailnode::import::mbox::Mbox;
use sirms_mailnode::import::{ImportError, SourceMessage};
use sirms_proto::cluster::import_client::ImportClient;
use sirms_proto::cluster::{Empty, ImportChunk, ImportHeader, ImportMailbox, Name, NodeStatus, User, import_chunk};
use sirms_proto::cluster_tls::Credentials;
use sirms_proto::token::TokenInterceptor;
use sirms_router::directory::canonical_address;
use sirms_storage::grpc::body;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::users::size;
use super::{Client, CtlError, node_channel, show};

/// Longest one stored message may take (a 256 MiB one over a slow link).
const CALL_TIMEOUT: Duration = Duration::from_secs(600);
/// Failures in a row, with the node not answering, after which the run stops.
const MAX_UNANSWERED: u32 = 3;
/// Failures listed one by one in the summary.
const MAX_LISTED_FAILURES: usize = 50;
/// How often the progress line is redrawn on a terminal, and written elsewhere.
const TTY_EVERY: Duration = Duration::from_millis(250);
const LOG_EVERY: Duration = Duration::from_secs(10);

pub(super) type Importer = ImportClient<InterceptedService<Channel, TokenInterceptor>>;

/// `sirms ctl import USER --maildir DIR | --mbox PATH | --imap URL`, or
/// `sirms ctl import [USER] --vpopmail DIR`.
#[derive(Args, Debug, Default)]
pub struct ImportArgs {
    /// The user whose mailboxes receive the mail (with --vpopmail: only this one of its users).
    #[arg(required_unless_present = "vpopmail")]
    pub user: Option<String>,
    /// A Maildir tree: INBOX at its root, folders as `.A.B` (Maildir++) or nested directories.
    #[arg(long)]
    pub maildir: Option<PathBuf>,
    /// An mbox file, or a directory of them (one mailbox each; Thunderbird's `NAME.sbd/` holds
    /// NAME's children).
    #[arg(long)]
    pub mbox: Option<PathBuf>,
    /// A live IMAP server: `imaps://USER@HOST[:PORT]` (implicit TLS) or `imap://…` (STARTTLS);
    /// every folder is copied. The password comes from --password-file or
    /// SIRMS_IMPORT_PASSWORD.
    #[arg(long, alias = "from")]
    pub imap: Option<String>,
    /// A qmail/vpopmail tree (`~vpopmail`, holding `domains/*/vpasswd`): every user of every
    /// domain, each into the same address here.
    #[arg(long)]
    pub vpopmail: Option<PathBuf>,
    /// With --vpopmail: add the domains and users that do not exist yet (with the clear
    /// password vpopmail kept, hashed again; without one, the user must be given a password).
    #[arg(long)]
    pub create_users: bool,
    /// A file whose first line is the IMAP source's password.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Accept the IMAP source's certificate unchecked (a test server with a self-signed one).
    #[arg(long)]
    pub insecure_tls: bool,
    /// The mailbox to import into: an mbox file's (default: its file name, `inbox` being INBOX),
    /// or the parent of a tree's mailboxes (its INBOX goes into NAME itself).
    #[arg(long)]
    pub into: Option<String>,
    /// Only this mailbox of the source (with its children), by its name there.
    #[arg(long)]
    pub folder: Option<String>,
    /// The mail node to write through (default: the user's home if it is a mail node, else
    /// any healthy one).
    #[arg(long)]
    pub via: Option<String>,
}

/// One mailbox to fill, and where its messages come from.
enum Folder {
    Maildir { target: String, folder: MaildirFolder },
    Mbox { target: String, path: PathBuf },
    Imap { target: String, folder: ImapFolder },
}

impl Folder {
    fn target(&self) -> &str {
        match self {
            Folder::Maildir { target, .. } | Folder::Mbox { target, .. } | Folder::Imap { target, .. } => target,
        }
    }

    /// Its name in the source (an mbox file's: the mailbox it fills).
    fn source_name(&self) -> &str {
        match self {
            Folder::Maildir { folder, .. } => &folder.name,
            Folder::Imap { folder, .. } => &folder.name,
            Folder::Mbox { target, .. } => target,
        }
    }
}

/// A folder's messages, read one at a time.
enum Messages<'a> {
    Files(Box<dyn Iterator<Item = Result<SourceMessage, ImportError>>>),
    Imap { session: &'a mut ImapSource, folder: ImapFolder, metas: std::vec::IntoIter<Fetched> },
}

impl Messages<'_> {
    async fn next(&mut self) -> Option<Result<SourceMessage, ImportError>> {
        match self {
            Messages::Files(files) => files.next(),
            Messages::Imap { session, folder, metas } => {
                let meta = metas.next()?;
                Some(session.message(folder, &meta).await)
            }
        }
    }
}

/// What a run did, for the summary (and `--json`).
#[derive(Debug, Default, serde::Serialize)]
struct Report {
    user: String,
    node: String,
    mailboxes: usize,
    imported: u64,
    bytes: u64,
    /// Already in the mailbox: not stored again.
    duplicates: u64,
    /// Imported, but under a new UID (the source's was taken, or the mailbox had other mail).
    renumbered: u64,
    failed: u64,
    /// Failed messages by reason.
    reasons: BTreeMap<String, u64>,
    failures: Vec<Failure>,
    seconds: f64,
    /// Whether the run stopped before the end (the node stopped answering).
    stopped: Option<String>,
}

#[derive(Debug, serde::Serialize)]
struct Failure {
    origin: String,
    error: String,
}

impl Report {
    fn fail(&mut self, origin: String, reason: &str, error: String) {
        self.failed += 1;
        *self.reasons.entry(reason.to_string()).or_default() += 1;
        if self.failures.len() < MAX_LISTED_FAILURES {
            self.failures.push(Failure { origin, error });
        }
    }

    fn summary(&self) -> String {
        let rate = if self.seconds > 0.0 { self.imported as f64 / self.seconds } else { 0.0 };
        let mut text = format!(
            "imported {} messages, {}, into {} mailboxes of {} through {} in {:.1} s ({rate:.1} msg/s)\n\
             skipped {} already there; {} under a new UID; {} failed\n",
            self.imported,
            size(self.bytes),
            self.mailboxes,
            self.user,
            self.node,
            self.seconds,
            self.duplicates,
            self.renumbered,
            self.failed
        );
        for (reason, n) in &self.reasons {
            text.push_str(&format!("  {n} failed: {reason}\n"));
        }
        for f in &self.failures {
            text.push_str(&format!("  {}: {}\n", f.origin, f.error));
        }
        if let Some(why) = &self.stopped {
            text.push_str(&format!("stopped early: {why}; run the same command again to go on\n"));
        }
        text
    }
}

/// The progress line: messages, bytes, rate and, when the total is known, the time left.
struct Progress {
    tty: bool,
    started: Instant,
    printed: Instant,
    messages: u64,
    total_messages: Option<u64>,
}

impl Progress {
    fn new(total_messages: Option<u64>) -> Progress {
        let now = Instant::now();
        Progress { tty: std::io::stderr().is_terminal(), started: now, printed: now, messages: 0, total_messages }
    }

    fn tick(&mut self, report: &Report, mailbox: &str) {
        self.messages += 1;
        let every = if self.tty { TTY_EVERY } else { LOG_EVERY };
        if self.printed.elapsed() < every {
            return;
        }
        self.printed = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.messages as f64 / secs;
        let of = self.total_messages.map(|t| format!("/{t}")).unwrap_or_default();
        let eta = match self.total_messages {
            Some(t) if rate > 0.0 => format!(", {:.0} s left", t.saturating_sub(self.messages) as f64 / rate),
            _ => String::new(),
        };
        let line = format!(
            "{}{of} messages, {}, {rate:.0} msg/s{eta} ({} failed) [{mailbox}]",
            self.messages,
            size(report.bytes),
            report.failed
        );
        if self.tty {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }

    fn done(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

pub(super) async fn run(
    router: &mut Client,
    credentials: &Credentials,
    json: bool,
    args: ImportArgs,
) -> Result<String, CtlError> {
    let sources = [args.maildir.is_some(), args.mbox.is_some(), args.imap.is_some(), args.vpopmail.is_some()];
    if sources.iter().filter(|&&s| s).count() != 1 {
        return Err(CtlError::Input(
            "give one source: --maildir DIR, --mbox PATH, --imap URL or --vpopmail DIR".into(),
        ));
    }
    match (&args.vpopmail, &args.user) {
        (Some(root), _) => vpopmail(router, credentials, json, root.clone(), args).await,
        (None, Some(user)) => one_user(router, credentials, json, user.clone(), args).await,
        (None, None) => Err(CtlError::Input("which user?".into())),
    }
}

/// Every user of a vpopmail tree (or the one asked for), added first with --create-users.
async fn vpopmail(
    router: &mut Client,
    credentials: &Credentials,
    json: bool,
    root: PathBuf,
    args: ImportArgs,
) -> Result<String, CtlError> {
    let found = sirms_mailnode::import::vpopmail::users(&root).map_err(|e| CtlError::Input(e.to_string()))?;
    let only = args.user.as_deref().map(str::to_ascii_lowercase);
    let existing: Vec<String> =
        router.get_directory(Empty {}).await?.into_inner().users.into_iter().map(|u| u.address).collect();
    let mut text = String::new();
    let mut failed = Vec::new();
    for found in found.into_iter().filter(|f| only.as_ref().is_none_or(|o| *o == f.address)) {
        if args.create_users && !existing.contains(&found.address) {
            text.push_str(&create_user(router, &found).await?);
        }
        let one = ImportArgs {
            maildir: Some(found.maildir.clone()),
            into: args.into.clone(),
            folder: args.folder.clone(),
            via: args.via.clone(),
            ..Default::default()
        };
        match Box::pin(one_user(router, credentials, json, found.address.clone(), one)).await {
            Ok(summary) => text.push_str(&summary),
            Err(e) => failed.push(format!("{}: {e}", found.address)),
        }
    }
    if !failed.is_empty() {
        return Err(CtlError::Input(format!("{text}{}", failed.join("\n"))));
    }
    Ok(text)
}

/// Adds a vpopmail user here: its domain, and the user with its clear password hashed again
/// (crypt hashes cannot be checked here); without one, a random password the admin replaces.
async fn create_user(router: &mut Client, found: &sirms_mailnode::import::vpopmail::Found) -> Result<String, CtlError> {
    let domain = found.address.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap_or_default();
    router.put_domain(Name { name: domain }).await?;
    let (password, note) = match &found.user.clear {
        Some(clear) => (clear.clone(), String::new()),
        None => (
            unknown_password()?,
            format!(" (vpopmail kept only a crypt hash: set a password with sirms ctl users passwd {})", found.address),
        ),
    };
    let password_hash = hash_password(&password).map_err(|e| CtlError::Input(e.to_string()))?;
    router.put_user(User { address: found.address.clone(), password_hash, ..Default::default() }).await?;
    Ok(format!("added {}{note}\n", found.address))
}

/// A password no one knows, until the admin sets the real one.
fn unknown_password() -> Result<String, CtlError> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| CtlError::Input(format!("/dev/urandom: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

async fn one_user(
    router: &mut Client,
    credentials: &Credentials,
    json: bool,
    user: String,
    args: ImportArgs,
) -> Result<String, CtlError> {
    let (local, domain) = canonical_address(&user).map_err(|e| CtlError::Input(e.to_string()))?;
    let user = format!("{local}@{domain}");
    let (node, mut client) = importer(router, credentials, &user, args.via.as_deref()).await?;

    let mut imap = match &args.imap {
        Some(url) => Some(imap_session(url, &args).await?),
        None => None,
    };
    let mut folders = match imap.as_mut() {
        Some(session) => {
            let found = session.folders().await.map_err(|e| CtlError::Input(e.to_string()))?;
            found.into_iter().map(|folder| Folder::Imap { target: under(&args.into, &folder.name), folder }).collect()
        }
        None => plan(&args)?,
    };
    if let Some(only) = &args.folder {
        let only = only.trim_end_matches('/');
        folders.retain(|f| f.source_name() == only || f.source_name().starts_with(&format!("{only}/")));
        if folders.is_empty() {
            return Err(CtlError::Input(format!("no folder {only} in the source")));
        }
    }
    let mut listings = Vec::with_capacity(folders.len());
    let mut total = Some(0u64);
    for folder in &folders {
        let listing = match folder {
            Folder::Maildir { folder, .. } => {
                let listing = maildir::list(folder).map_err(|e| CtlError::Input(e.to_string()))?;
                total = total.map(|t| t + listing.files.len() as u64);
                Some(listing)
            }
            Folder::Mbox { .. } | Folder::Imap { .. } => {
                total = None;
                None
            }
        };
        listings.push(listing);
    }

    let mut report = Report { user: user.clone(), node, ..Default::default() };
    let mut progress = Progress::new(total);
    let started = Instant::now();
    for (folder, listing) in folders.into_iter().zip(listings) {
        let target = folder.target().to_string();
        let (uid_validity, messages) = match (folder, listing) {
            (Folder::Maildir { .. }, Some(listing)) => {
                let files = listing.files.into_iter().map(|f| maildir::read(&f));
                (listing.uid_validity, Messages::Files(Box::new(files)))
            }
            (Folder::Maildir { .. }, None) => continue,
            (Folder::Mbox { path, .. }, _) => {
                let file =
                    std::fs::File::open(&path).map_err(|e| CtlError::Input(format!("{}: {e}", path.display())))?;
                let reader = std::io::BufReader::with_capacity(256 * 1024, file);
                (None, Messages::Files(Box::new(Mbox::new(reader, path.display().to_string()))))
            }
            (Folder::Imap { folder, .. }, _) => {
                let Some(session) = imap.as_mut() else { continue };
                let (uid_validity, metas) =
                    session.examine(&folder).await.map_err(|e| CtlError::Input(e.to_string()))?;
                (uid_validity, Messages::Imap { session, folder, metas: metas.into_iter() })
            }
        };
        report.mailboxes += 1;
        let into = Target { user: &user, mailbox: &target, uid_validity };
        import_folder(&mut client, into, messages, &mut report, &mut progress).await?;
        if report.stopped.is_some() {
            break;
        }
    }
    progress.done();
    report.seconds = started.elapsed().as_secs_f64();
    if report.failed > 0 || report.stopped.is_some() {
        return Err(CtlError::Input(report.summary()));
    }
    show(json, &report, Report::summary)
}

/// The Import service of the node that writes for `user` (see [`pick_node`]), and its name.
pub(super) async fn importer(
    router: &mut Client,
    credentials: &Credentials,
    user: &str,
    via: Option<&str>,
) -> Result<(String, Importer), CtlError> {
    let directory = router.get_directory(Empty {}).await?.into_inner();
    let home = directory
        .users
        .iter()
        .find(|u| u.address == user)
        .map(|u| u.home.clone())
        .ok_or_else(|| CtlError::Input(format!("no user {user}: add it first (sirms ctl users add)")))?;
    let nodes = router.list_nodes(Empty {}).await?.into_inner().nodes;
    let (node, endpoint) = pick_node(&nodes, &home, via)?;
    let (channel, interceptor) = node_channel(&endpoint, credentials, CALL_TIMEOUT)
        .await
        .map_err(|e| CtlError::Connect(format!("{node} ({endpoint})"), e))?;
    let client = ImportClient::with_interceptor(channel, interceptor)
        .max_decoding_message_size(128 * 1024 * 1024)
        .max_encoding_message_size(128 * 1024 * 1024);
    Ok((node, client))
}

/// The node to write through: `via`, else the home if it is a mail node, else a healthy one.
fn pick_node(nodes: &[NodeStatus], home: &str, via: Option<&str>) -> Result<(String, String), CtlError> {
    let mail_node = |s: &&NodeStatus| s.node.as_ref().is_some_and(|n| !n.storage_only && !n.store_endpoint.is_empty());
    let chosen = match via {
        Some(via) => {
            nodes.iter().find(|s| s.node.as_ref().is_some_and(|n| n.id == via)).filter(mail_node).ok_or_else(|| {
                CtlError::Input(format!("{via} is not a mail node serving the cluster (sirms ctl nodes list)"))
            })?
        }
        None => nodes
            .iter()
            .filter(mail_node)
            .find(|s| s.healthy && s.node.as_ref().is_some_and(|n| n.id == home))
            .or_else(|| nodes.iter().filter(mail_node).find(|s| s.healthy))
            .ok_or_else(|| CtlError::Input("no healthy mail node to import through".into()))?,
    };
    let node = chosen.node.as_ref().map(|n| (n.id.clone(), n.store_endpoint.clone()));
    node.ok_or_else(|| CtlError::Input("no node".into()))
}

/// Logs in to the IMAP source.
async fn imap_session(url: &str, args: &ImportArgs) -> Result<ImapSource, CtlError> {
    let url = ImapUrl::parse(url).map_err(|e| CtlError::Input(e.to_string()))?;
    let password = match &args.password_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| CtlError::Input(format!("{}: {e}", path.display())))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
        ),
        None => std::env::var("SIRMS_IMPORT_PASSWORD").ok(),
    };
    if args.insecure_tls {
        eprintln!("warning: not checking the certificate of {}", url.host);
    }
    ImapSource::connect(&url, password.as_deref(), !args.insecure_tls).await.map_err(|e| CtlError::Input(e.to_string()))
}

/// `name` under `into`, where the admin asked for one (a tree's INBOX becomes `into` itself).
fn under(into: &Option<String>, name: &str) -> String {
    match (into, name) {
        (Some(into), "INBOX") => into.clone(),
        (Some(into), name) => format!("{into}/{name}"),
        (None, name) => name.to_string(),
    }
}

/// The mailboxes the file sources fill, in order.
fn plan(args: &ImportArgs) -> Result<Vec<Folder>, CtlError> {
    let under = |name: &str| under(&args.into, name);
    if let Some(root) = &args.maildir {
        let folders = maildir::folders(root).map_err(|e| CtlError::Input(e.to_string()))?;
        return Ok(folders.into_iter().map(|folder| Folder::Maildir { target: under(&folder.name), folder }).collect());
    }
    let Some(path) = &args.mbox else { return Err(CtlError::Input("nothing to import: --maildir or --mbox".into())) };
    if path.is_file() {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("INBOX");
        let target = args.into.clone().unwrap_or_else(|| mbox_name(stem));
        return Ok(vec![Folder::Mbox { target, path: path.clone() }]);
    }
    let mut found = Vec::new();
    mbox_dir(path, "", 0, &mut found).map_err(|e| CtlError::Input(format!("{}: {e}", path.display())))?;
    if found.is_empty() {
        return Err(CtlError::Input(format!("{}: no mbox file in it", path.display())));
    }
    Ok(found.into_iter().map(|(name, path)| Folder::Mbox { target: under(&name), path }).collect())
}

fn mbox_name(stem: &str) -> String {
    if stem.eq_ignore_ascii_case("inbox") { "INBOX".into() } else { stem.to_string() }
}

/// Files of a directory of mboxes, as (mailbox, path); `NAME.sbd/` holds NAME's children.
fn mbox_dir(dir: &Path, prefix: &str, depth: usize, found: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
    if depth > 16 || found.len() > maildir::MAX_FOLDERS {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_string) else { continue };
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            let level = name.strip_suffix(".sbd").unwrap_or(&name);
            mbox_dir(&path, &format!("{prefix}{level}/"), depth + 1, found)?;
        } else if path.is_file() && !name.ends_with(".msf") && !name.ends_with(".dat") && !name.ends_with(".json") {
            let level = if prefix.is_empty() { mbox_name(&name) } else { name };
            found.push((format!("{prefix}{level}"), path));
        }
    }
    Ok(())
}

/// Where one folder's messages go.
struct Target<'a> {
    user: &'a str,
    mailbox: &'a str,
    /// The source's UIDVALIDITY, when it has UIDs to keep.
    uid_validity: Option<u32>,
}

async fn import_folder(
    client: &mut Importer,
    into: Target<'_>,
    mut messages: Messages<'_>,
    report: &mut Report,
    progress: &mut Progress,
) -> Result<(), CtlError> {
    let opened = client
        .open_mailbox(ImportMailbox {
            user: into.user.to_string(),
            mailbox: into.mailbox.to_string(),
            uid_validity: into.uid_validity.unwrap_or(0),
        })
        .await?
        .into_inner();
    // UIDs mean something only under their UIDVALIDITY: kept if the mailbox took the source's.
    let keep_uids = into.uid_validity == Some(opened.uid_validity);
    let mut present: HashMap<(i64, u64), Vec<u32>> = HashMap::new();
    let mut uids = std::collections::HashSet::new();
    for m in &opened.messages {
        present.entry((m.internal_date, m.size)).or_default().push(m.uid);
        uids.insert(m.uid);
    }
    let mut unanswered = 0;
    while let Some(message) = messages.next().await {
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                let (origin, reason) = match &e {
                    ImportError::TooLarge { origin, .. } => (origin.clone(), "too large"),
                    ImportError::Io { path, .. } => (path.clone(), "unreadable"),
                    ImportError::NotASource(_) => (into.mailbox.to_string(), "not a source"),
                };
                report.fail(origin, reason, e.to_string());
                progress.tick(report, into.mailbox);
                continue;
            }
        };
        let size = message.bytes.len() as u64;
        let kept = message.uid.filter(|_| keep_uids);
        let mut same_as = message.internal_date.and_then(|d| present.get(&(d, size))).cloned().unwrap_or_default();
        same_as.extend(kept.filter(|uid| uids.contains(uid)));
        let header = ImportHeader {
            user: into.user.to_string(),
            mailbox: into.mailbox.to_string(),
            system_flags: message.flags.system.bits(),
            keywords: message.flags.keywords.clone(),
            internal_date: message.internal_date.unwrap_or(0),
            size,
            keep_uid: kept.unwrap_or(0),
            same_as,
        };
        let parts = std::iter::once(import_chunk::Part::Header(header))
            .chain(body::chunks(Bytes::from(message.bytes)).map(import_chunk::Part::Data))
            .map(|part| ImportChunk { part: Some(part) });
        match client.message(tokio_stream::iter(parts)).await {
            Ok(reply) => {
                unanswered = 0;
                let reply = reply.into_inner();
                if reply.duplicate {
                    report.duplicates += 1;
                } else {
                    report.imported += 1;
                    report.bytes += size;
                    if kept.is_some_and(|uid| uid != reply.uid) {
                        report.renumbered += 1;
                    }
                }
            }
            Err(status) => {
                let unreachable = matches!(status.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded);
                report.fail(message.origin, status.code().description(), status.message().to_string());
                unanswered = if unreachable { unanswered + 1 } else { 0 };
                if unanswered >= MAX_UNANSWERED {
                    report.stopped = Some(format!("{} stopped answering ({})", report.node, status.message()));
                    return Ok(());
                }
            }
        }
        progress.tick(report, into.mailbox);
    }
    Ok(())
}
