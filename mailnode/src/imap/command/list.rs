//! LIST and LSUB with `*`/`%` patterns, CHILDREN (RFC 3348) and SPECIAL-USE (RFC 6154) attributes.

use imap_types::mailbox::{ListMailbox, Mailbox};
use tokio::io::AsyncWriteExt;

use crate::imap::error::{CommandResult, Done};
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

impl Session {
    pub(crate) async fn list(
        &mut self,
        reference: &Mailbox<'_>,
        pattern: &ListMailbox<'_>,
        lsub: bool,
        out: &mut Sink<'_>,
    ) -> CommandResult {
        let verb = if lsub { "LSUB" } else { "LIST" };
        let reference: &[u8] = match reference {
            Mailbox::Inbox => b"INBOX",
            Mailbox::Other(other) => other.as_ref(),
        };
        let pattern: &[u8] = match pattern {
            ListMailbox::Token(token) => token.as_ref(),
            ListMailbox::String(string) => string.as_ref(),
        };
        if pattern.is_empty() {
            // RFC 3501 §6.3.8: an empty pattern asks for the delimiter and the root.
            out.write_all(format!("* {verb} (\\Noselect) \"/\" \"\"\r\n").as_bytes()).await?;
            return Ok(Done::ok(format!("{verb} completed")));
        }
        let mut full = reference.to_vec();
        full.extend_from_slice(pattern);
        let full = normalize_inbox(full);
        let user = self.login_name()?;
        let mut mailboxes = self.store.list_mailboxes(&user).await?;
        mailboxes.sort_by(|a, b| (a.name != "INBOX", &a.name).cmp(&(b.name != "INBOX", &b.name)));
        let mut lines = Vec::new();
        for mailbox in mailboxes {
            if lsub && !mailbox.subscribed {
                continue;
            }
            let wire = mutf7::encode(&mailbox.name);
            if !matches(&full, wire.as_bytes()) {
                continue;
            }
            let mut attributes = vec![if mailbox.has_children { "\\HasChildren" } else { "\\HasNoChildren" }];
            if let Some(special) = mailbox.special_use {
                attributes.push(special.attribute());
            }
            if mailbox.subscribed && !lsub {
                attributes.push("\\Subscribed");
            }
            let mut data = Data::new(verb);
            data.raw(format_args!(" ({}) \"/\" ", attributes.join(" "))).astring(&wire);
            lines.extend(data.finish());
        }
        out.write_all(&lines).await?;
        Ok(Done::ok(format!("{verb} completed")))
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
