//! Quotas enforced: a user with `quota_bytes` or `quota_messages` in the directory gets no
//! message that would take the mailbox past either — not by SMTP delivery (`452 4.2.2` when no recipient of the message
//! has room, else the message waits in the spool for the users without room and bounces
//! `5.2.2` when it expires), not by IMAP APPEND or COPY (`NO [OVERQUOTA]`). MOVE within the
//! user's mailboxes changes nothing and is not checked.
//!
//! The check reads the usage before the write: sessions writing at the same moment can each
//! pass it, so a mailbox can end past its quota by what was in flight — never by more.
//!
//! A domain's quota (`sirms ctl domains quota`) bounds all of its users together, checked the
//! same way after the user's own; see [`Quotas`] for how its usage is counted.
//!
//! A delivery that takes a mailbox past [`WARN_AT_PERCENT`] of its quota also leaves the user
//! a warning in the INBOX, so the user learns before mail starts waiting or bouncing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mail_builder::MessageBuilder;
use mail_builder::headers::raw::Raw;
use sirms_storage::{MailStore, QuotaResource, QuotaUsage, Result, StoreError};

use crate::directory::Directory;

/// The share of a quota past which a delivery warns the user, in percent.
pub const WARN_AT_PERCENT: u64 = 90;

/// What a user may store, as the administrator set it; `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes, over all of the user's mailboxes.
    pub bytes: Option<u64>,
    /// The most messages, over all of the user's mailboxes.
    pub messages: Option<u64>,
}

impl Limits {
    /// Limits from the directory's fields, where absent and 0 both mean "no limit".
    pub fn new(bytes: Option<u64>, messages: Option<u64>) -> Limits {
        Limits { bytes: bytes.filter(|&b| b > 0), messages: messages.filter(|&m| m > 0) }
    }

    /// Whether there is any limit.
    pub fn any(&self) -> bool {
        self.bytes.is_some() || self.messages.is_some()
    }
}

/// A user's usage and limit in bytes, as read before a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub used: u64,
    pub limit: u64,
}

impl Usage {
    /// Whether adding `adding` bytes takes the mailbox from below the warning line to at or
    /// above it: one warning per crossing, not one per message above the line.
    pub fn crosses_warning(&self, adding: u64) -> bool {
        let line = self.limit.saturating_mul(WARN_AT_PERCENT) / 100;
        self.used < line && self.used.saturating_add(adding) >= line
    }
}

/// How long a domain's count lets mail in before it is counted again: mail that other nodes
/// let in (and mail users deleted) shows in the next count, so this bounds how far past its
/// quota a domain's users can go together.
const RECOUNT_AFTER: Duration = Duration::from_secs(30);
/// How old a domain's count may be to refuse mail: a full domain whose users delete mail takes
/// mail again within this long.
const FRESH_TO_REFUSE: Duration = Duration::from_secs(5);
/// Users whose usage a count reads at once.
const COUNT_CONCURRENCY: usize = 8;

/// Checks writes against the users' quotas and their domains': cloned into every service that
/// writes mail, the clones sharing the domains' counts.
///
/// A domain's usage is the sum of its users' usage, read from their homes (wherever they are)
/// when the domain's count is older than [`RECOUNT_AFTER`], plus what this node let in since.
/// Nodes do not tell each other what they let in, so until the next count a domain can end past
/// its quota by what the other nodes accepted meanwhile.
#[derive(Clone)]
pub struct Quotas {
    store: Arc<dyn MailStore>,
    directory: Arc<dyn Directory>,
    /// Domain → its count, each behind its own lock so one domain's count holds up no other.
    domains: Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<DomainCount>>>>>,
}

/// A domain's usage as this node last counted it.
#[derive(Debug, Default)]
struct DomainCount {
    counted_at: Option<Instant>,
    /// Each user's usage at the count (kept for a user whose home did not answer the next one).
    users: HashMap<String, QuotaUsage>,
    /// What this node let in since the count.
    since: QuotaUsage,
}

impl DomainCount {
    fn total(&self) -> QuotaUsage {
        let mut total = self.since;
        for usage in self.users.values() {
            total.bytes = total.bytes.saturating_add(usage.bytes);
            total.messages = total.messages.saturating_add(usage.messages);
        }
        total
    }

    fn older_than(&self, age: Duration) -> bool {
        self.counted_at.is_none_or(|at| at.elapsed() >= age)
    }
}

/// Which limit an [`over`] check is of: a user's or a domain's.
#[derive(Debug, Clone, Copy)]
enum Scope {
    User,
    Domain,
}

/// The refusal, if adding `bytes` in `messages` messages to `usage` goes past `limits`.
fn over(limits: Limits, usage: QuotaUsage, bytes: u64, messages: u64, scope: Scope) -> Option<StoreError> {
    let (by_messages, by_bytes) = match scope {
        Scope::User => (QuotaResource::Messages, QuotaResource::Bytes),
        Scope::Domain => (QuotaResource::DomainMessages, QuotaResource::DomainBytes),
    };
    if let Some(limit) = limits.messages
        && usage.messages.saturating_add(messages) > limit
    {
        return Some(StoreError::OverQuota { used: usage.messages, limit, resource: by_messages });
    }
    if let Some(limit) = limits.bytes
        && usage.bytes.saturating_add(bytes) > limit
    {
        return Some(StoreError::OverQuota { used: usage.bytes, limit, resource: by_bytes });
    }
    None
}

impl Quotas {
    /// Quotas from `directory`, over the mailboxes in `store`.
    pub fn new(store: Arc<dyn MailStore>, directory: Arc<dyn Directory>) -> Quotas {
        Quotas { store, directory, domains: Arc::default() }
    }

    /// The limits the administrator set on what `user` may store.
    pub fn limits(&self, user: &str) -> Limits {
        self.directory.quota(user)
    }

    /// Whether `user` has room for `messages` more messages of `bytes` bytes in all, within
    /// their own quota and their domain's: [`StoreError::OverQuota`] if not; the user's usage in
    /// bytes it read, when the user has a limit in bytes.
    pub async fn room_for(&self, user: &str, bytes: u64, messages: u64) -> Result<Option<Usage>> {
        let usage = self.user_room(user, bytes, messages).await?;
        self.domain_room(user, bytes, messages).await?;
        Ok(usage)
    }

    async fn user_room(&self, user: &str, bytes: u64, messages: u64) -> Result<Option<Usage>> {
        let limits = self.directory.quota(user);
        if !limits.any() {
            return Ok(None);
        }
        let usage = self.store.quota(user).await?;
        if let Some(refusal) = over(limits, usage, bytes, messages, Scope::User) {
            return Err(refusal);
        }
        Ok(limits.bytes.map(|limit| Usage { used: usage.bytes, limit }))
    }

    /// Checks the domain's quota and, when there is room, counts the write in: a check that
    /// lets a write in reserves its room, so concurrent writes on this node cannot all pass.
    async fn domain_room(&self, user: &str, bytes: u64, messages: u64) -> Result<()> {
        let Some((_, domain)) = user.rsplit_once('@') else { return Ok(()) };
        let limits = self.directory.domain_quota(domain);
        if !limits.any() {
            return Ok(());
        }
        let count = self.count_of(domain);
        let mut count = count.lock().await;
        if count.older_than(RECOUNT_AFTER) {
            self.recount(domain, &mut count).await;
        }
        let mut refusal = over(limits, count.total(), bytes, messages, Scope::Domain);
        if refusal.is_some() && count.older_than(FRESH_TO_REFUSE) {
            self.recount(domain, &mut count).await;
            refusal = over(limits, count.total(), bytes, messages, Scope::Domain);
        }
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        let before = count.total();
        count.since.bytes = count.since.bytes.saturating_add(bytes);
        count.since.messages = count.since.messages.saturating_add(messages);
        if let Some(limit) = limits.bytes
            && (Usage { used: before.bytes, limit }).crosses_warning(bytes)
        {
            tracing::warn!(domain, used = before.bytes + bytes, limit, "domain past {WARN_AT_PERCENT}% of its quota");
        }
        Ok(())
    }

    fn count_of(&self, domain: &str) -> Arc<tokio::sync::Mutex<DomainCount>> {
        let mut domains = self.domains.lock().unwrap_or_else(|p| p.into_inner());
        domains.entry(domain.to_string()).or_default().clone()
    }

    /// Reads the usage of every user of `domain` from their homes. A home that does not answer
    /// leaves its users at what the last count found (nothing, the first time), logged: mail
    /// keeps flowing while a node is down, and the next count corrects it.
    async fn recount(&self, domain: &str, count: &mut DomainCount) {
        let users = self.directory.domain_users(domain);
        let reads = futures::stream::iter(users)
            .map(|user| async move {
                let usage = self.store.quota(&user).await;
                (user, usage)
            })
            .buffer_unordered(COUNT_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut users = HashMap::with_capacity(reads.len());
        for (user, usage) in reads {
            match usage {
                Ok(usage) => {
                    users.insert(user, usage);
                }
                Err(e) => {
                    tracing::warn!(domain, user, error = %e, "domain quota: usage not read, last count kept");
                    if let Some(&last) = count.users.get(&user) {
                        users.insert(user, last);
                    }
                }
            }
        }
        *count = DomainCount { counted_at: Some(Instant::now()), users, since: QuotaUsage::default() };
    }
}

/// The warning left in `user`'s INBOX when a delivery took the mailbox to `used` of `limit`
/// bytes.
pub fn warning(user: &str, used: u64, limit: u64) -> Vec<u8> {
    let percent = used.saturating_mul(100) / limit.max(1);
    let domain = user.rsplit_once('@').map_or("localhost", |(_, d)| d);
    let postmaster = format!("postmaster@{domain}");
    let body = format!(
        "Your mailbox holds {used} bytes of the {limit} it may hold ({percent}%).\r\n\r\n\
         When it is full, new mail for you waits at the sender's side and is returned to the\r\n\
         sender if it cannot be delivered in time. Delete or archive mail you no longer need.\r\n"
    );
    MessageBuilder::new()
        .from(("Mail System", postmaster.as_str()))
        .to(user)
        .subject(format!("Your mailbox is {percent}% full"))
        // RFC 3834: a notice made by the system, which vacation replies must not answer.
        .header("Auto-Submitted", Raw::new("auto-generated"))
        .text_body(body)
        .write_to_vec()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_warning_is_given_once_when_the_line_is_crossed() {
        let at = |used| Usage { used, limit: 1000 };
        assert!(!at(0).crosses_warning(899), "below the line");
        assert!(at(0).crosses_warning(900), "exactly at the line");
        assert!(at(850).crosses_warning(100));
        assert!(!at(900).crosses_warning(50), "already past the line: warned before");
        assert!(!at(0).crosses_warning(0));
    }

    #[test]
    fn the_warning_names_the_usage() {
        let text = String::from_utf8(warning("dave@example.test", 950, 1000)).expect("utf-8");
        assert!(text.contains("Subject: Your mailbox is 95% full"), "{text}");
        assert!(text.contains("postmaster@example.test"), "{text}");
        assert!(text.contains("Auto-Submitted: auto-generated"), "{text}");
        assert!(text.contains("950 bytes of the 1000"), "{text}");
    }
}
