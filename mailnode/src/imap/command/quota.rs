//! GETQUOTAROOT, GETQUOTA and SETQUOTA (RFC 9208).
//!
//! A user has one quota root, `""`, over all of their mailboxes, when the directory gives them a
//! limit; its resources are STORAGE (a limit in bytes) and MESSAGE (a limit in messages). A user without a limit has no quota root at all:
//! every resource a QUOTA response lists carries a limit (RFC 9208 §5.1, and its grammar wants at
//! least one), so "unlimited" is said by listing no root. Quotas are the administrator's, set in
//! the directory: SETQUOTA is refused and QUOTASET not advertised.

use imap_types::core::AString;
use imap_types::mailbox::Mailbox;
use sirms_storage::QuotaUsage;
use tokio::io::AsyncWriteExt;

use super::mailbox_name;
use crate::imap::error::{CommandError, CommandResult, Done};
use crate::imap::mutf7;
use crate::imap::response::{Code, Data};
use crate::imap::session::{Session, Sink};
use crate::quota::Limits;

/// The name of a user's quota root.
const ROOT: &str = "";

/// The resource list of a QUOTA response (`STORAGE used limit`, in units of 1024 octets, and
/// `MESSAGE used limit`), or `None` without a limit. Storage usage rounds up and its limit
/// down, so the client never sees room that is not there.
pub fn resources(usage: QuotaUsage, limits: Limits) -> Option<String> {
    let storage = limits.bytes.map(|limit| format!("STORAGE {} {}", usage.bytes.div_ceil(1024), limit / 1024));
    let messages = limits.messages.map(|limit| format!("MESSAGE {} {limit}", usage.messages));
    let list: Vec<String> = storage.into_iter().chain(messages).collect();
    (!list.is_empty()).then(|| list.join(" "))
}

/// `* QUOTA "" (…)`.
fn quota_response(resources: &str) -> Vec<u8> {
    let mut data = Data::new("QUOTA ");
    data.string(ROOT.as_bytes()).raw(format_args!(" ({resources})"));
    data.finish()
}

impl Session {
    /// The resources of the logged-in user's quota root, if they have one.
    async fn quota_resources(&mut self, user: &str) -> CommandResult<Option<String>> {
        let limits = self.quotas.limits(user);
        if !limits.any() {
            return Ok(None);
        }
        let usage = self.store.quota(user).await?;
        Ok(resources(usage, limits))
    }

    pub(crate) async fn get_quota_root(&mut self, mailbox: &Mailbox<'_>, out: &mut Sink<'_>) -> CommandResult {
        // The mailbox need not exist (RFC 9208 §4.1.2): every mailbox of the user has the same root.
        let name = mailbox_name(mailbox)?;
        let user = self.login_name()?;
        let resources = self.quota_resources(&user).await?;
        let mut root = Data::new("QUOTAROOT ");
        root.astring(&mutf7::encode(&name));
        if resources.is_some() {
            root.raw(" ").string(ROOT.as_bytes());
        }
        let mut lines = root.finish();
        if let Some(resources) = &resources {
            lines.extend(quota_response(resources));
        }
        out.write_all(&lines).await?;
        Ok(Done::ok("GETQUOTAROOT completed"))
    }

    pub(crate) async fn get_quota(&mut self, root: &AString<'_>, out: &mut Sink<'_>) -> CommandResult {
        let user = self.login_name()?;
        let resources = if root.as_ref() == ROOT.as_bytes() { self.quota_resources(&user).await? } else { None };
        let Some(resources) = resources else {
            return Err(CommandError::no(Some(Code::Nonexistent), "no such quota root"));
        };
        out.write_all(&quota_response(&resources)).await?;
        Ok(Done::ok("GETQUOTA completed"))
    }

    pub(crate) async fn set_quota(&mut self) -> CommandResult {
        Err(CommandError::no(Some(Code::NoPerm), "quotas are set by the administrator in the directory"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_in_kibibytes() {
        let usage = |bytes| QuotaUsage { bytes, messages: 3 };
        let bytes = |limit| Limits { bytes: Some(limit), messages: None };
        assert_eq!(resources(usage(0), Limits::default()), None, "no limit, no resource");
        assert_eq!(resources(usage(0), bytes(10 * 1024)).as_deref(), Some("STORAGE 0 10"));
        assert_eq!(resources(usage(1), bytes(10 * 1024)).as_deref(), Some("STORAGE 1 10"), "usage rounds up");
        assert_eq!(resources(usage(2048), bytes(2047)).as_deref(), Some("STORAGE 2 1"), "limit rounds down");
        assert_eq!(
            resources(usage(u64::MAX), bytes(u64::MAX)).as_deref(),
            Some("STORAGE 18014398509481984 18014398509481983")
        );
    }

    #[test]
    fn messages_counted_as_they_are() {
        let usage = QuotaUsage { bytes: 5000, messages: 3 };
        let messages = Limits { bytes: None, messages: Some(10) };
        assert_eq!(resources(usage, messages).as_deref(), Some("MESSAGE 3 10"));
        let both = Limits { bytes: Some(10 * 1024), messages: Some(10) };
        assert_eq!(resources(usage, both).as_deref(), Some("STORAGE 5 10 MESSAGE 3 10"));
    }

    #[test]
    fn quota_lines() {
        assert_eq!(quota_response("STORAGE 1 2"), b"* QUOTA \"\" (STORAGE 1 2)\r\n");
    }
}
