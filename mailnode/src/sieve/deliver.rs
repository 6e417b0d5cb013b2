//! Running a user's active Sieve script on a message delivered to them. What the script
//! decides becomes a [`Plan`]: the mailboxes the message is stored in, with flags, and what
//! the node sends on the user's behalf once they are stored (redirects, rejections, vacation
//! replies). No script, or a script that fails, keeps the message where it would have gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use mail_builder::MessageBuilder;
use mail_builder::headers::raw::Raw;
use sirms_sieve::{Action, Environment, Limits, Script};
use sirms_storage::{Flags, MailStore, SystemFlags, UserFile};

use super::scripts::Scripts;
use crate::delivery::{Delivering, Folder};
use crate::outbound::arc::{self, SealingKey};
use crate::outbound::dsn::{self, RecipientReport};
use crate::outbound::{domain_of, relay_copy};
use crate::queue::QueuedEnvelope;
use crate::queue::notice::Notifier;
use crate::smtp::hops;

/// How long a user's compiled script is reused before it is read again: a change made through
/// another node's ManageSieve is in effect this much later at most.
const SCRIPT_TTL: Duration = Duration::from_secs(2);
/// Most users whose scripts are held compiled.
const MAX_CACHED: usize = 10_000;
/// The user file remembering whom a vacation reply went to, and until when not to again.
const VACATION_FILE: &str = "sieve-vacation";
/// Most senders remembered; the oldest are forgotten first.
const MAX_VACATION_ENTRIES: usize = 1000;
/// More hops than this and a redirect is dropped: the message is going round in circles.
const MAX_REDIRECT_HOPS: usize = 30;

/// One mailbox the message goes into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filing {
    pub mailbox: String,
    pub flags: Flags,
    /// Create the mailbox if missing (`fileinto :create`); otherwise a missing one is a keep.
    pub create: bool,
}

/// What to do with one message for one user.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Where it is stored (none: discarded or rejected).
    pub filings: Vec<Filing>,
    /// What the node sends once it is stored: redirects, rejections, vacation replies.
    pub sends: Vec<Action>,
}

impl Plan {
    /// The message where it would go without a script.
    pub fn keep(folder: Folder) -> Plan {
        Plan {
            filings: vec![Filing { mailbox: folder.name().to_string(), flags: Flags::default(), create: false }],
            sends: Vec::new(),
        }
    }

    /// The script's reason when all it does is refuse the message (`reject`/`ereject`, nothing
    /// stored, nothing else sent): the one plan that SMTP can carry out as a refusal.
    pub fn rejection(&self) -> Option<&str> {
        let mut reasons = self.sends.iter().map(|action| match action {
            Action::Reject { reason, .. } => Some(reason.as_str()),
            _ => None,
        });
        let first = reasons.next()??;
        (self.filings.is_empty() && reasons.all(|r| r.is_some())).then_some(first)
    }
}

/// A user's script, compiled, with when it was read.
struct Compiled {
    read: Instant,
    script: Option<Arc<Script>>,
}

/// Runs users' scripts at delivery, on every path into a mailbox (SMTP, the queue).
pub struct Sieve {
    store: Arc<dyn MailStore>,
    notifier: Notifier,
    limits: Limits,
    scripts: Mutex<HashMap<String, Compiled>>,
}

impl Sieve {
    /// Scripts read from `store`; what they send goes through `notifier`'s queue.
    pub fn new(store: Arc<dyn MailStore>, notifier: Notifier) -> Sieve {
        Sieve { store, notifier, limits: Limits::default(), scripts: Mutex::default() }
    }

    /// `user`'s active script, compiled: from the cache while fresh.
    async fn script(&self, user: &str) -> Option<Arc<Script>> {
        if let Some(cached) = self.lock().get(user).filter(|c| c.read.elapsed() < SCRIPT_TTL) {
            return cached.script.clone();
        }
        let files = match self.store.user_files(user).await {
            Ok(files) => files,
            Err(e) => {
                // The mail is delivered all the same: a filter never costs a message.
                tracing::warn!(%user, error = %e, "sieve scripts unreadable: delivering without them");
                return None;
            }
        };
        let script = Scripts::from_files(&files).active_script().and_then(|(name, source)| {
            let source = String::from_utf8_lossy(source);
            match sirms_sieve::parse(&source, &self.limits) {
                Ok(script) => Some(Arc::new(script)),
                Err(e) => {
                    tracing::warn!(%user, script = %name, error = %e, "sieve script does not parse: delivering to INBOX");
                    None
                }
            }
        });
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(user.to_string(), Compiled { read: Instant::now(), script: script.clone() });
        script
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Compiled>> {
        self.scripts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What `user`'s script makes of `message`.
    pub async fn plan(&self, user: &str, msg: &Delivering<'_>, message: &[u8]) -> Plan {
        let Some(script) = self.script(user).await else { return Plan::keep(msg.folder) };
        let addresses = [user.to_string()];
        let env = Environment {
            envelope_from: msg.from,
            envelope_to: user,
            spam_score: msg.spam_score,
            user_addresses: &addresses,
            ..Environment::new(message)
        };
        let outcome = script.run(&env);
        for error in &outcome.errors {
            tracing::warn!(%user, msg = %msg.id, %error, "sieve script failed: kept");
        }
        let mut plan = Plan { filings: Vec::new(), sends: Vec::new() };
        for action in outcome.actions {
            match action {
                Action::Keep { flags } => plan.filings.push(Filing {
                    mailbox: msg.folder.name().to_string(),
                    flags: to_flags(&flags),
                    create: false,
                }),
                Action::FileInto { mailbox, flags, create } => {
                    plan.filings.push(Filing { mailbox, flags: to_flags(&flags), create })
                }
                Action::Discard => {}
                other => plan.sends.push(other),
            }
        }
        tracing::info!(%user, msg = %msg.id, filings = plan.filings.len(), sends = plan.sends.len(), "sieve script ran");
        plan
    }

    /// Queues what `plan` sends for `user`: called once the message is stored. Queue ids
    /// derive from the message's, so a retried delivery sends nothing twice.
    pub async fn send(&self, user: &str, msg: &Delivering<'_>, message: &Bytes, plan: &Plan) {
        for (n, action) in plan.sends.iter().enumerate() {
            let id = format!("{}.sieve{n}.{}", msg.id, queue_safe(user));
            match action {
                Action::Redirect { address, .. } => self.redirect(id, user, msg, message, address).await,
                Action::Reject { reason, .. } => self.reject(user, msg, message, reason).await,
                Action::Vacation { handle, days, subject, from, reason, mime, to, in_reply_to } => {
                    let reply =
                        Vacation { handle, days: *days, subject, from: from.as_deref(), reason, mime: *mime, to };
                    self.vacation(id, user, reply, in_reply_to.as_deref()).await;
                }
                Action::Keep { .. } | Action::FileInto { .. } | Action::Discard => {}
            }
        }
    }

    async fn redirect(&self, id: String, user: &str, msg: &Delivering<'_>, message: &Bytes, address: &str) {
        // Each redirect adds a hop, so a loop of redirects (a to b to a) ends like any mail loop.
        if hops::count(message, MAX_REDIRECT_HOPS) >= MAX_REDIRECT_HOPS {
            tracing::warn!(%user, msg = %msg.id, %address, "sieve redirect dropped: a mail loop");
            return;
        }
        // Our Return-Path, when it leads, goes: only the final delivery writes one (RFC 5321 §4.4).
        let mut copy = format!("Delivered-To: {user}\r\n").into_bytes();
        copy.extend_from_slice(relay_copy(message));
        // Sealed here, once, before it is queued: the bytes the spool keeps are those sent.
        let copy = self.sealed(user, msg, copy);
        if self.notifier.send(id, msg.from, address, Bytes::from(copy)).await {
            tracing::info!(%user, msg = %msg.id, %address, "sieve redirect queued");
        }
    }

    /// `copy` with a new ARC set on top (RFC 8617), sealed with the DKIM key of `user`'s
    /// domain on the strength of what the node's sender authentication found on arrival.
    /// Submission and other unchecked mail has no such results to vouch for, and a domain
    /// without a key cannot seal: those go unsealed, as does a copy whose chain failed.
    fn sealed(&self, user: &str, msg: &Delivering<'_>, copy: Vec<u8>) -> Vec<u8> {
        let Some(authserv_id) = msg.checked_by else {
            tracing::debug!(%user, msg = %msg.id, "redirect not ARC-sealed: the message was not checked on arrival");
            return copy;
        };
        let domain = domain_of(user);
        let Some((selector, pem)) = self.notifier.directory.dkim_key(&domain) else {
            tracing::info!(%user, msg = %msg.id, %domain, "redirect not ARC-sealed: the domain has no DKIM key");
            return copy;
        };
        let key = SealingKey { domain: &domain, selector: &selector, pem: &pem };
        match arc::seal(&copy, authserv_id, &key) {
            Ok(mut sealed) => {
                tracing::info!(%user, msg = %msg.id, %domain, "redirect ARC-sealed");
                sealed.extend_from_slice(&copy);
                sealed
            }
            Err(e) => {
                tracing::info!(%user, msg = %msg.id, %domain, reason = %e, "redirect not ARC-sealed");
                copy
            }
        }
    }

    async fn reject(&self, user: &str, msg: &Delivering<'_>, message: &Bytes, reason: &str) {
        let rejected = QueuedEnvelope {
            id: format!("{}.{}", msg.id, queue_safe(user)),
            from: msg.from.to_string(),
            ..Default::default()
        };
        let diagnostic = format!("550 5.7.1 {}", reason.replace(['\r', '\n'], " "));
        let report = [RecipientReport::new(user, diagnostic)];
        self.notifier.notify(&rejected, dsn::Action::Failed, &report, message).await;
        tracing::info!(%user, msg = %msg.id, "sieve reject: sender told");
    }

    async fn vacation(&self, id: String, user: &str, reply: Vacation<'_>, in_reply_to: Option<&str>) {
        let now = unix_now();
        let files = match self.store.user_files(user).await {
            Ok(files) => files,
            Err(e) => {
                // Unknown whether one was sent lately: none rather than one too many.
                tracing::warn!(%user, error = %e, "vacation memory unreadable: no reply");
                return;
            }
        };
        let mut memory = VacationMemory::read(&files, now);
        if memory.replied(reply.handle, reply.to) {
            tracing::info!(%user, to = %reply.to, "vacation: answered lately, no reply");
            return;
        }
        memory.remember(reply.handle, reply.to, now + u64::from(reply.days) * 86_400);
        if let Err(e) = self.store.put_user_file(user, VACATION_FILE, Some(memory.render())).await {
            tracing::warn!(%user, error = %e, "vacation memory not written: no reply");
            return;
        }
        let Some(bytes) = reply.message(user, in_reply_to) else {
            tracing::warn!(%user, "vacation reply not built");
            return;
        };
        // RFC 5230 §5.1 and RFC 3834: automatic replies go from the null sender.
        if self.notifier.send(id, "", reply.to, Bytes::from(bytes)).await {
            tracing::info!(%user, to = %reply.to, "vacation reply queued");
        }
    }
}

/// A vacation reply the script asked for.
struct Vacation<'a> {
    handle: &'a str,
    days: u32,
    subject: &'a str,
    from: Option<&'a str>,
    reason: &'a str,
    mime: bool,
    to: &'a str,
}

impl Vacation<'_> {
    /// The reply's bytes.
    fn message(&self, user: &str, in_reply_to: Option<&str>) -> Option<Vec<u8>> {
        let from = self.from.unwrap_or(user);
        if self.mime {
            // The script wrote the MIME entity itself: our header fields above it.
            let mut out = format!(
                "From: {from}\r\nTo: {}\r\nSubject: {}\r\nAuto-Submitted: auto-replied (vacation)\r\nMIME-Version: 1.0\r\n",
                self.to,
                self.subject.replace(['\r', '\n'], " ")
            );
            if let Some(id) = in_reply_to {
                out.push_str(&format!("In-Reply-To: <{id}>\r\nReferences: <{id}>\r\n"));
            }
            let mut bytes = out.into_bytes();
            bytes.extend_from_slice(self.reason.as_bytes());
            return Some(bytes);
        }
        let mut builder = MessageBuilder::new()
            .from(from)
            .to(self.to)
            .subject(self.subject)
            .header("Auto-Submitted", Raw::new("auto-replied (vacation)"))
            .text_body(self.reason);
        if let Some(id) = in_reply_to {
            builder = builder.in_reply_to(id).references(id);
        }
        builder.write_to_vec().ok()
    }
}

/// Whom vacation replies went to: `expiry handle sender` a line, in the user's files.
struct VacationMemory {
    entries: Vec<(u64, String, String)>,
}

impl VacationMemory {
    /// The entries of `files` that have not expired by `now`.
    fn read(files: &[UserFile], now: u64) -> VacationMemory {
        let text =
            files.iter().find(|f| f.name == VACATION_FILE).map(|f| String::from_utf8_lossy(&f.content).into_owned());
        let entries = text
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let mut parts = line.splitn(3, ' ');
                let expiry = parts.next()?.parse::<u64>().ok()?;
                Some((expiry, parts.next()?.to_string(), parts.next()?.to_string()))
            })
            .filter(|(expiry, _, _)| *expiry > now)
            .collect();
        VacationMemory { entries }
    }

    fn key(handle: &str) -> String {
        handle.chars().map(|c| if c.is_whitespace() || c.is_control() { '_' } else { c }).take(64).collect()
    }

    fn replied(&self, handle: &str, to: &str) -> bool {
        let handle = Self::key(handle);
        self.entries.iter().any(|(_, h, s)| *h == handle && s.eq_ignore_ascii_case(to))
    }

    fn remember(&mut self, handle: &str, to: &str, until: u64) {
        if self.entries.len() >= MAX_VACATION_ENTRIES {
            self.entries.sort_by_key(|(expiry, _, _)| *expiry);
            self.entries.drain(..self.entries.len() + 1 - MAX_VACATION_ENTRIES);
        }
        let to: String = to.chars().filter(|c| !c.is_control()).collect();
        self.entries.push((until, Self::key(handle), to));
    }

    fn render(&self) -> Bytes {
        let text: String = self.entries.iter().map(|(e, h, s)| format!("{e} {h} {s}\n")).collect();
        Bytes::from(text)
    }
}

/// IMAP flag names as the store's flags; names the store cannot keep are left out.
fn to_flags(names: &[String]) -> Flags {
    let mut system = SystemFlags::empty();
    let mut keywords = Vec::new();
    for name in names {
        match name.to_ascii_lowercase().as_str() {
            "\\seen" => system = system.union(SystemFlags::SEEN),
            "\\answered" => system = system.union(SystemFlags::ANSWERED),
            "\\flagged" => system = system.union(SystemFlags::FLAGGED),
            "\\deleted" => system = system.union(SystemFlags::DELETED),
            "\\draft" => system = system.union(SystemFlags::DRAFT),
            _ if Flags::valid_keyword(name) => keywords.push(name.clone()),
            _ => {}
        }
    }
    Flags::new(system, keywords)
}

/// `user` as a queue id's part (ids are letters, digits, dots and dashes): a hash, so that
/// what one message makes a script send for two users gets two ids.
fn queue_safe(user: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    user.to_ascii_lowercase().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_by_imap_name() {
        let flags = to_flags(&["\\Seen".into(), "$Work".into(), "\\Recent".into(), "bad flag".into()]);
        assert_eq!(flags, Flags::new(SystemFlags::SEEN, ["$Work".to_string()]));
    }

    #[test]
    fn only_a_plan_that_does_nothing_but_reject_is_a_rejection() {
        let reject = |reason: &str| Action::Reject { reason: reason.into(), extended: true };
        let plan = |filings: Vec<Filing>, sends: Vec<Action>| Plan { filings, sends };
        assert_eq!(plan(vec![], vec![reject("no")]).rejection(), Some("no"));
        assert_eq!(plan(vec![], vec![reject("no"), reject("never")]).rejection(), Some("no"));
        assert_eq!(Plan::keep(Folder::Inbox).rejection(), None);
        assert_eq!(plan(vec![], vec![]).rejection(), None, "a discard is not a rejection");
        let redirect = Action::Redirect { address: "x@y.test".into(), copy: false };
        assert_eq!(plan(vec![], vec![reject("no"), redirect]).rejection(), None);
        let kept = Plan::keep(Folder::Inbox).filings;
        assert_eq!(plan(kept, vec![reject("no")]).rejection(), None);
    }

    #[test]
    fn vacation_memory_forgets_the_expired_and_the_oldest() {
        let file = |text: &str| UserFile { name: VACATION_FILE.into(), content: Bytes::from(text.to_string()) };
        let memory = VacationMemory::read(&[file("100 h a@x.test\n300 h b@x.test\ngarbage\n")], 200);
        assert!(!memory.replied("h", "a@x.test"), "expired");
        assert!(memory.replied("h", "B@x.test") && !memory.replied("other", "b@x.test"));
        let mut memory = VacationMemory { entries: Vec::new() };
        for i in 0..MAX_VACATION_ENTRIES + 5 {
            memory.remember("h", &format!("s{i}@x.test"), 1000 + i as u64);
        }
        assert_eq!(memory.entries.len(), MAX_VACATION_ENTRIES);
        assert!(
            !memory.replied("h", "s0@x.test") && memory.replied("h", &format!("s{}@x.test", MAX_VACATION_ENTRIES + 4))
        );
        let back = VacationMemory::read(&[file(std::str::from_utf8(&memory.render()).unwrap())], 0);
        assert_eq!(back.entries, memory.entries);
    }
}
