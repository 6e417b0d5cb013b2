//! Mailbox names, attributes and status.

use crate::error::{Result, StoreError};

/// The hierarchy delimiter of mailbox names in the API (what IMAP shows).
pub const DELIMITER: char = '/';
/// Longest mailbox name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 512;
/// Deepest hierarchy accepted.
pub const MAX_DEPTH: usize = 16;
/// Most mailboxes one user may have, INBOX not counted (the default of `LocalStore`): each is
/// four directories and two index trees, so without a bound one account could use up a
/// node's inodes, and listing them costs every LIST.
pub const MAX_MAILBOXES: usize = 10_000;

/// The special-use attributes of RFC 6154.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecialUse {
    Sent,
    Drafts,
    Trash,
    Junk,
    Archive,
    All,
    Flagged,
}

impl SpecialUse {
    /// The IMAP attribute, e.g. `\Sent`.
    pub fn attribute(self) -> &'static str {
        match self {
            SpecialUse::Sent => "\\Sent",
            SpecialUse::Drafts => "\\Drafts",
            SpecialUse::Trash => "\\Trash",
            SpecialUse::Junk => "\\Junk",
            SpecialUse::Archive => "\\Archive",
            SpecialUse::All => "\\All",
            SpecialUse::Flagged => "\\Flagged",
        }
    }

    /// Parses an IMAP attribute such as `\Sent` (case-insensitive).
    pub fn from_attribute(s: &str) -> Option<SpecialUse> {
        [
            SpecialUse::Sent,
            SpecialUse::Drafts,
            SpecialUse::Trash,
            SpecialUse::Junk,
            SpecialUse::Archive,
            SpecialUse::All,
            SpecialUse::Flagged,
        ]
        .into_iter()
        .find(|u| u.attribute().eq_ignore_ascii_case(s))
    }
}

/// The mailboxes every new user gets, with their special use.
pub const DEFAULT_MAILBOXES: &[(&str, Option<SpecialUse>)] = &[
    ("INBOX", None),
    ("Sent", Some(SpecialUse::Sent)),
    ("Drafts", Some(SpecialUse::Drafts)),
    ("Trash", Some(SpecialUse::Trash)),
    ("Junk", Some(SpecialUse::Junk)),
    ("Archive", Some(SpecialUse::Archive)),
];

/// One entry of a mailbox listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxInfo {
    pub name: String,
    pub special_use: Option<SpecialUse>,
    pub subscribed: bool,
    pub has_children: bool,
}

/// What STATUS and SELECT report about a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MailboxStatus {
    pub messages: u32,
    pub unseen: u32,
    pub recent: u32,
    pub uid_next: u32,
    pub uid_validity: u32,
    pub highest_modseq: u64,
    /// Total size of the messages in bytes.
    pub size: u64,
}

/// Checks a mailbox name and returns its canonical form (`INBOX` in any case becomes `INBOX`).
pub fn canonical_name(name: &str) -> Result<String> {
    if name.is_empty() {
        return Err(StoreError::InvalidName("empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(StoreError::InvalidName("too long"));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(StoreError::InvalidName("control character"));
    }
    let parts: Vec<&str> = name.split(DELIMITER).collect();
    if parts.len() > MAX_DEPTH {
        return Err(StoreError::InvalidName("too deep"));
    }
    if parts.iter().any(|p| p.is_empty()) {
        return Err(StoreError::InvalidName("empty hierarchy level"));
    }
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(StoreError::InvalidName("'.' or '..' level"));
    }
    let mut out = String::with_capacity(name.len());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(DELIMITER);
        }
        if i == 0 && part.eq_ignore_ascii_case("INBOX") {
            out.push_str("INBOX");
        } else {
            out.push_str(part);
        }
    }
    Ok(out)
}

/// Whether `child` lies below `parent` in the hierarchy.
pub fn is_descendant(child: &str, parent: &str) -> bool {
    child.len() > parent.len() + 1 && child.starts_with(parent) && child[parent.len()..].starts_with(DELIMITER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names() {
        assert_eq!(canonical_name("inbox").unwrap(), "INBOX");
        assert_eq!(canonical_name("Inbox/Sub").unwrap(), "INBOX/Sub");
        assert_eq!(canonical_name("a/inbox").unwrap(), "a/inbox");
        assert!(canonical_name("").is_err());
        assert!(canonical_name("a//b").is_err());
        assert!(canonical_name("/a").is_err());
        assert!(canonical_name("a/").is_err());
        assert!(canonical_name("a/../b").is_err());
        assert!(canonical_name("a\nb").is_err());
        assert!(canonical_name("a/".repeat(20).trim_end_matches('/')).is_err());
    }

    #[test]
    fn descendants() {
        assert!(is_descendant("a/b", "a"));
        assert!(!is_descendant("ab", "a"));
        assert!(!is_descendant("a", "a"));
    }
}
