//! Quotas enforced: a user with `quota_bytes` or `quota_messages` in the directory gets no
//! message that would take the mailbox past either — not by SMTP delivery (`452 4.2.2` when no recipient of the message
//! has room, else the message waits in the spool for the users without room and bounces
//! `5.2.2` when it expires), not by IMAP APPEND or COPY (`NO [OVERQUOTA]`). MOVE within the
//! user's mailboxes changes nothing and is not checked.
//!
//! The check reads the usage before the write: sessions writing at the same moment can each
//! pass it, so a mailbox can end past its quota by what was in flight — never by more.
//!
//! A delivery that takes a mailbox past [`WARN_AT_PERCENT`] of its quota also leaves the user
//! a warning in the INBOX, so the user learns before mail starts waiting or bouncing.

use mail_builder::MessageBuilder;
use mail_builder::headers::raw::Raw;
use sirms_storage::{MailStore, QuotaResource, Result, StoreError};

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

/// Whether `user` has room for one more message of `adding` bytes: [`StoreError::OverQuota`]
/// if not; the usage in bytes it read, when the user has a limit in bytes.
pub async fn room_for(
    store: &dyn MailStore,
    directory: &dyn Directory,
    user: &str,
    adding: u64,
) -> Result<Option<Usage>> {
    let limits = directory.quota(user);
    if !limits.any() {
        return Ok(None);
    }
    let usage = store.quota(user).await?;
    if let Some(limit) = limits.messages
        && usage.messages.saturating_add(1) > limit
    {
        return Err(StoreError::OverQuota { used: usage.messages, limit, resource: QuotaResource::Messages });
    }
    let Some(limit) = limits.bytes else { return Ok(None) };
    if usage.bytes.saturating_add(adding) > limit {
        return Err(StoreError::OverQuota { used: usage.bytes, limit, resource: QuotaResource::Bytes });
    }
    Ok(Some(Usage { used: usage.bytes, limit }))
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
