//! `STATUS mailbox (… APPENDLIMIT …)`: the status item of APPENDLIMIT (RFC 7889), which
//! imap-codec does not know.
//!
//! ```text
//! status     = "STATUS" SP mailbox SP "(" status-att *(SP status-att) ")"
//! status-att =/ "APPENDLIMIT"                  ; RFC 7889
//! ```
//!
//! The item list ends the command, after the mailbox and any literal the mailbox came in, and
//! holds only atoms: [`find`] reads it back from the final `)` to its `(`. Only a list that
//! holds APPENDLIMIT is taken over; the pre-decoder reads its items itself, and imap-codec
//! decodes the command with `(MESSAGES)` in their place, for the tag and the mailbox.

use imap_types::status::StatusDataItemName;

use super::Scanner;
use super::list::status_item;

/// What the items of a STATUS that asks for APPENDLIMIT are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusItems {
    /// The items imap-codec knows, in the order asked, without repeats.
    pub items: Vec<StatusDataItemName>,
    /// APPENDLIMIT was asked for (always, when the pre-decoder took the command).
    pub append_limit: bool,
}

/// The BAD for a STATUS item this server does not know.
pub const UNKNOWN_ITEM: &str = "unknown STATUS item";

/// What imap-codec decodes in place of the item list.
const PLACEHOLDER: &[u8] = b"(MESSAGES)";

/// Finds the item list of `tag STATUS mailbox (items)` when it holds APPENDLIMIT.
///
/// `None`: not a STATUS, or no APPENDLIMIT in its list (imap-codec decodes it alone).
/// Otherwise the command with `(MESSAGES)` as its list, and the items, or the text of the BAD.
pub fn find(message: &[u8]) -> Option<Result<(Vec<u8>, StatusItems), &'static str>> {
    let mut s = Scanner::new(message);
    let tag = s.word();
    if tag.is_empty() || !s.take(b' ') || !s.keyword(b"STATUS") {
        return None;
    }
    let body = message.strip_suffix(b"\n")?;
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    let inner_end = body.len().checked_sub(1).filter(|&end| body[end] == b')')?;
    let open = body[..inner_end].iter().rposition(|&b| b == b'(')?;
    // The list is the command's last argument: a space before it, the mailbox before that.
    if open <= s.pos || body[open - 1] != b' ' {
        return None;
    }
    let words: Vec<&[u8]> = body[open + 1..inner_end].split(|&b| b == b' ').collect();
    if !words.iter().any(|w| w.eq_ignore_ascii_case(b"APPENDLIMIT")) {
        return None;
    }
    let mut items = StatusItems { items: Vec::new(), append_limit: true };
    for word in words {
        if word.eq_ignore_ascii_case(b"APPENDLIMIT") {
            continue;
        }
        if word.is_empty() {
            return Some(Err(super::SYNTAX_ERROR));
        }
        let Some(item) = status_item(word) else { return Some(Err(UNKNOWN_ITEM)) };
        if !items.items.contains(&item) {
            items.items.push(item);
        }
    }
    let mut command = Vec::with_capacity(open + PLACEHOLDER.len() + 2);
    command.extend_from_slice(&message[..open]);
    command.extend_from_slice(PLACEHOLDER);
    command.extend_from_slice(&message[body.len()..]);
    Some(Ok((command, items)))
}

#[cfg(test)]
mod tests {
    use imap_types::command::CommandBody;

    use super::*;
    use crate::imap::extension::{Extension, decode};

    #[test]
    fn appendlimit_is_taken_out_and_the_rest_decoded() {
        let d = decode(b"s1 STATUS INBOX (appendlimit)\r\n").unwrap();
        assert_eq!(d.command.tag.inner(), "s1");
        assert!(matches!(d.command.body, CommandBody::Status { .. }));
        assert_eq!(d.extension, Extension::Status(StatusItems { items: vec![], append_limit: true }));

        // A literal mailbox name that looks like an item list is not looked into.
        let d = decode(b"s2 STATUS {6+}\r\na (b c (UIDNEXT APPENDLIMIT MESSAGES UIDNEXT)\r\n").unwrap();
        let CommandBody::Status { mailbox, .. } = d.command.body else { panic!("not a STATUS") };
        assert_eq!(crate::imap::command::mailbox_name(&mailbox).unwrap(), "a (b c");
        let items = vec![StatusDataItemName::UidNext, StatusDataItemName::Messages];
        assert_eq!(d.extension, Extension::Status(StatusItems { items, append_limit: true }));
    }

    #[test]
    fn plain_and_malformed_lists() {
        assert_eq!(find(b"s STATUS INBOX (MESSAGES)\r\n"), None);
        assert_eq!(find(b"s STATUS \"x (APPENDLIMIT)\"\r\n"), None);
        assert_eq!(find(b"s STATUS INBOX (APPENDLIMIT FOO)\r\n"), Some(Err(UNKNOWN_ITEM)));
        assert_eq!(find(b"s STATUS INBOX (APPENDLIMIT  SIZE)\r\n"), Some(Err(crate::imap::extension::SYNTAX_ERROR)));
        // What is left is imap-codec's to judge: no mailbox is a syntax error.
        assert!(decode(b"s STATUS (APPENDLIMIT)\r\n").is_err());
    }
}
