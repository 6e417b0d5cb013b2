//! LIST and LSUB with `*`/`%` patterns, CHILDREN (RFC 3348) and SPECIAL-USE (RFC 6154)
//! attributes; extended LIST (RFC 5258) with its STATUS return option (RFC 5819).

use std::collections::{BTreeSet, HashSet};

use imap_types::mailbox::{ListMailbox, Mailbox};
use sirms_storage::MailboxInfo;
use tokio::io::AsyncWriteExt;

use crate::imap::error::{CommandError, CommandResult, Done};
use crate::imap::extension::ListExtended;
use crate::imap::mutf7;
use crate::imap::response::Data;
use crate::imap::session::{Session, Sink};

/// Whether `name` matches an IMAP LIST pattern: `*` matches anything, `%` anything but `/`.
pub fn matches(pattern: &[u8], name: &[u8]) -> bool {
    // Dynamic programming over (pattern, name) prefixes: linear memory, no exponential backtracking.
    let mut row = vec![false; name.len() + 1];
    row[0] = true;
    for &p in pattern {
        let mut next = vec![false; name.len() + 1];
        match p {
            b'*' | b'%' => {
                let mut reachable = false;
                for j in 0..=name.len() {
                    reachable |= row[j];
                    next[j] = reachable;
                    if p == b'%' && j < name.len() && name[j] == b'/' {
                        // `%` cannot swallow the delimiter: what was reachable before it stays behind.
                        reachable = false;
                    }
                }
            }
            _ => {
                for j in 0..name.len() {
                    next[j + 1] = row[j] && name[j] == p;
                }
            }
        }
        row = next;
    }
    row[name.len()]
}

/// A pattern with any-case INBOX at its start written as `INBOX`, since INBOX is case-insensitive.
fn normalize_inbox(pattern: Vec<u8>) -> Vec<u8> {
    if pattern.len() >= 5 && pattern[..5].eq_ignore_ascii_case(b"INBOX") && matches!(pattern.get(5), None | Some(b'/'))
    {
        let mut out = b"INBOX".to_vec();
        out.extend_from_slice(&pattern[5..]);
        out
    } else {
        pattern
    }
}

/// The bytes of a LIST reference.
fn reference_bytes<'a>(reference: &'a Mailbox<'_>) -> &'a [u8] {
    match reference {
        Mailbox::Inbox => b"INBOX",
        Mailbox::Other(other) => other.as_ref(),
    }
}

/// A mailbox's attributes: children (RFC 3348), special use (RFC 6154) and, except in LSUB
/// (which lists only subscribed mailboxes anyway), subscription (RFC 5258).
fn attributes(mailbox: &MailboxInfo, lsub: bool) -> Vec<&'static str> {
    let mut attributes = vec![if mailbox.has_children { "\\HasChildren" } else { "\\HasNoChildren" }];
    if let Some(special) = mailbox.special_use {
        attributes.push(special.attribute());
    }
    if mailbox.subscribed && !lsub {
        attributes.push("\\Subscribed");
    }
    attributes
}

/// The parents LSUB shows with `\\Noselect` (RFC 3501 §6.3.9): those a `%` in `pattern` stops
/// at that are not subscribed themselves but have a subscribed descendant the pattern does not
/// reach, so the client learns there is something subscribed below. A parent need not exist as
/// a mailbox; every one that `mailboxes` names is one the store made on the way to a child.
fn unsubscribed_parents<'a>(pattern: &[u8], mailboxes: &'a [MailboxInfo]) -> BTreeSet<&'a str> {
    let mut parents = BTreeSet::new();
    if !pattern.contains(&b'%') {
        return parents;
    }
    let subscribed: HashSet<&str> = mailboxes.iter().filter(|m| m.subscribed).map(|m| m.name.as_str()).collect();
    for mailbox in mailboxes.iter().filter(|m| m.subscribed) {
        if matches(pattern, mutf7::encode(&mailbox.name).as_bytes()) {
            continue;
        }
        let mut name = mailbox.name.as_str();
        while let Some((parent, _)) = name.rsplit_once('/') {
            if !subscribed.contains(parent) && matches(pattern, mutf7::encode(parent).as_bytes()) {
                parents.insert(parent);
            }
            name = parent;
        }
    }
    parents
}

/// `* LIST (attributes) "/" name` or `* LSUB …`, without the line end.
fn list_data(verb: &str, attributes: &[&str], wire_name: &str) -> Data {
    let mut data = Data::new(verb);
    data.raw(format_args!(" ({}) \"/\" ", attributes.join(" "))).astring(wire_name);
    data
}

impl Session {
    /// The user's mailboxes, INBOX first, then by name.
    async fn sorted_mailboxes(&mut self) -> Result<Vec<MailboxInfo>, CommandError> {
        let user = self.login_name()?;
        let mut mailboxes = self.store.list_mailboxes(&user).await?;
        mailboxes.sort_by(|a, b| (a.name != "INBOX", &a.name).cmp(&(b.name != "INBOX", &b.name)));
        Ok(mailboxes)
    }

    pub(crate) async fn list(
        &mut self,
        reference: &Mailbox<'_>,
        pattern: &ListMailbox<'_>,
        lsub: bool,
        out: &mut Sink<'_>,
    ) -> CommandResult {
        let verb = if lsub { "LSUB" } else { "LIST" };
        let pattern: &[u8] = match pattern {
            ListMailbox::Token(token) => token.as_ref(),
            ListMailbox::String(string) => string.as_ref(),
        };
        if pattern.is_empty() {
            // RFC 3501 §6.3.8: an empty pattern asks for the delimiter and the root.
            out.write_all(format!("* {verb} (\\Noselect) \"/\" \"\"\r\n").as_bytes()).await?;
            return Ok(Done::ok(format!("{verb} completed")));
        }
        let full = normalize_inbox([reference_bytes(reference), pattern].concat());
        let mailboxes = self.sorted_mailboxes().await?;
        let parents = if lsub { unsubscribed_parents(&full, &mailboxes) } else { BTreeSet::new() };
        let mut lines = Vec::new();
        for mailbox in &mailboxes {
            let wire = mutf7::encode(&mailbox.name);
            if parents.contains(mailbox.name.as_str()) {
                lines.extend(list_data(verb, &["\\Noselect"], &wire).finish());
                continue;
            }
            if lsub && !mailbox.subscribed {
                continue;
            }
            if matches(&full, wire.as_bytes()) {
                lines.extend(list_data(verb, &attributes(mailbox, lsub), &wire).finish());
            }
        }
        out.write_all(&lines).await?;
        Ok(Done::ok(format!("{verb} completed")))
    }

    /// Extended LIST (RFC 5258): selection options (SUBSCRIBED, REMOTE, RECURSIVEMATCH,
    /// SPECIAL-USE), several patterns, and return options, STATUS (RFC 5819) among them.
    ///
    /// CHILDREN, SPECIAL-USE and SUBSCRIBED as return options change nothing: their
    /// attributes are always sent. There are no remote mailboxes, so REMOTE changes nothing.
    pub(crate) async fn list_extended(
        &mut self,
        reference: &Mailbox<'_>,
        list: &ListExtended,
        out: &mut Sink<'_>,
    ) -> CommandResult {
        let reference = reference_bytes(reference);
        // §3: in an extended LIST an empty pattern matches nothing; it does not ask for the delimiter.
        let patterns: Vec<Vec<u8>> =
            list.patterns.iter().filter(|p| !p.is_empty()).map(|p| normalize_inbox([reference, p].concat())).collect();
        let selection = list.selection;
        let selected = |m: &MailboxInfo| {
            (!selection.subscribed || m.subscribed) && (!selection.special_use || m.special_use.is_some())
        };
        let mailboxes = self.sorted_mailboxes().await?;
        let wires: Vec<String> = mailboxes.iter().map(|m| mutf7::encode(&m.name)).collect();
        let listed: Vec<bool> = wires.iter().map(|w| patterns.iter().any(|p| matches(p, w.as_bytes()))).collect();
        // RECURSIVEMATCH (§3.5): a listed mailbox gets CHILDINFO when one of its descendants is
        // selected but not listed itself, and is listed for that even when not selected.
        let mut childinfo: HashSet<&str> = HashSet::new();
        if selection.recursive_match {
            for (mailbox, _) in mailboxes.iter().zip(&listed).filter(|(m, listed)| selected(m) && !**listed) {
                let mut name = mailbox.name.as_str();
                while let Some((parent, _)) = name.rsplit_once('/') {
                    childinfo.insert(parent);
                    name = parent;
                }
            }
        }
        let criteria: Vec<&str> =
            [(selection.subscribed, "\"SUBSCRIBED\""), (selection.special_use, "\"SPECIAL-USE\"")]
                .into_iter()
                .filter_map(|(on, name)| on.then_some(name))
                .collect();
        let mut lines = Vec::new();
        for ((mailbox, wire), _) in mailboxes.iter().zip(&wires).zip(&listed).filter(|(_, listed)| **listed) {
            let is_selected = selected(mailbox);
            let has_childinfo = childinfo.contains(mailbox.name.as_str());
            if !is_selected && !has_childinfo {
                continue;
            }
            let mut attributes = attributes(mailbox, false);
            // RFC 5819 §2: a STATUS after the LIST line of every selected mailbox; one that
            // cannot be had leaves the mailbox \Noselect, without a STATUS.
            let mut status = None;
            if is_selected && (!list.returns.status.is_empty() || list.returns.append_limit) {
                let (items, append_limit) = (&list.returns.status, list.returns.append_limit);
                match self.status_response(&mailbox.name, items, append_limit).await {
                    Ok(response) => status = Some(response),
                    Err(e) => {
                        tracing::debug!(mailbox = %mailbox.name, error = %e, "LIST-STATUS without STATUS");
                        attributes.push("\\Noselect");
                    }
                }
            }
            let mut data = list_data("LIST", &attributes, wire);
            if has_childinfo {
                data.raw(format_args!(" (\"CHILDINFO\" ({}))", criteria.join(" ")));
            }
            lines.extend(data.finish());
            lines.extend(status.unwrap_or_default());
        }
        out.write_all(&lines).await?;
        Ok(Done::ok("LIST completed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(matches(b"*", b"a/b/c"));
        assert!(matches(b"%", b"Sent"));
        assert!(!matches(b"%", b"a/b"));
        assert!(matches(b"a/%", b"a/b"));
        assert!(!matches(b"a/%", b"a/b/c"));
        assert!(matches(b"a/*", b"a/b/c"));
        assert!(matches(b"*b*", b"abc"));
        assert!(!matches(b"a", b"ab"));
        assert!(matches(b"%/%", b"x/y"));
        assert!(matches(&normalize_inbox(b"inbox".to_vec()), b"INBOX"));
        assert!(matches(&[b'%'; 200], b"x"));
    }
}
