//! Extended LIST (RFC 5258) with the STATUS (RFC 5819) and SPECIAL-USE (RFC 6154) options:
//! selection options, several patterns and return options.
//!
//! ```text
//! list             = "LIST" [SP list-select-opts] SP mailbox SP mbox-or-pat [SP list-return-opts]
//! list-select-opts = "(" [option *(SP option)] ")"    ; SUBSCRIBED REMOTE RECURSIVEMATCH SPECIAL-USE
//! mbox-or-pat      = list-mailbox / "(" list-mailbox *(SP list-mailbox) ")"
//! list-return-opts = "RETURN" SP "(" [return-option *(SP return-option)] ")"
//! return-option    = "SUBSCRIBED" / "CHILDREN" / "SPECIAL-USE" / "STATUS" SP "(" status-att *(SP status-att) ")"
//! ```
//!
//! The return options come after the mailbox arguments, so [`find`] reads the whole command:
//! the reference and the patterns as atoms or quoted strings. A LIST with a literal is left to
//! imap-codec (a plain LIST decodes; an extended one is refused): clients send mailbox names
//! as quoted strings, and reading past a literal is what this pre-decoder never does.
//! What imap-codec is given is `tag LIST reference first-pattern`, with both as sent, so it
//! still checks the tag and the mailbox syntax; the options and every pattern, unquoted,
//! travel in [`ListExtended`].

use std::ops::Range;

use imap_types::status::StatusDataItemName;

use super::Scanner;

/// The BAD for a selection option this server does not know.
pub const UNKNOWN_SELECTION: &str =
    "unknown LIST selection option (SUBSCRIBED, REMOTE, RECURSIVEMATCH and SPECIAL-USE are offered)";
/// The BAD for a return option this server does not know.
pub const UNKNOWN_RETURN: &str =
    "unknown LIST return option (SUBSCRIBED, CHILDREN, SPECIAL-USE and STATUS are offered)";

/// LIST selection options (RFC 5258 §3.1, RFC 6154 §3): which mailboxes are listed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only subscribed mailboxes.
    pub subscribed: bool,
    /// Remote mailboxes too (there are none here).
    pub remote: bool,
    /// Parents of selected mailboxes too, with CHILDINFO.
    pub recursive_match: bool,
    /// Only mailboxes with a special use.
    pub special_use: bool,
}

/// LIST return options (RFC 5258 §3.2, RFC 5819, RFC 6154 §3): what is said about each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListReturn {
    pub subscribed: bool,
    pub children: bool,
    pub special_use: bool,
    /// STATUS data items to answer after each selected mailbox's LIST line; empty for none.
    pub status: Vec<StatusDataItemName>,
    /// `STATUS (APPENDLIMIT)` (RFC 7889), which has no `StatusDataItemName`.
    pub append_limit: bool,
}

/// An extended LIST: what imap-codec cannot decode of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListExtended {
    pub selection: Selection,
    /// Every pattern as the client meant it (quoted strings unquoted), in order; at least one.
    pub patterns: Vec<Vec<u8>>,
    pub returns: ListReturn,
}

/// Recognises an extended LIST and rewrites it as `tag LIST reference first-pattern`.
///
/// `None`: not a LIST, or a plain one (left as it is to imap-codec). Otherwise the rewritten
/// command and the options, or the text of the BAD for a malformed extended LIST.
pub fn find(message: &[u8]) -> Option<Result<(Vec<u8>, ListExtended), &'static str>> {
    let mut s = Scanner::new(message);
    let tag = s.word();
    if tag.is_empty() || !s.take(b' ') {
        return None;
    }
    let head = s.pos;
    if !s.keyword(b"LIST") {
        return None;
    }
    let mut list = ListExtended::default();
    // Extended once selection options, a pattern list or return options show up; from then
    // on, anything wrong is this extension's BAD rather than imap-codec's plain syntax error.
    let mut extended = false;
    let fail = |extended: bool, text: &'static str| if extended { Some(Err(text)) } else { None };
    if s.peek() == Some(b'(') {
        extended = true;
        list.selection = match selection(&mut s) {
            Ok(selection) => selection,
            Err(text) => return Some(Err(text)),
        };
        if !s.take(b' ') {
            return Some(Err(SYNTAX));
        }
    }
    let Some((reference, _)) = string(&mut s, false) else { return fail(extended, ARGUMENTS) };
    if !s.take(b' ') {
        return fail(extended, ARGUMENTS);
    }
    let first = if s.take(b'(') {
        extended = true;
        let mut first = None;
        loop {
            let Some((range, pattern)) = string(&mut s, true) else { return Some(Err(ARGUMENTS)) };
            first.get_or_insert(range);
            list.patterns.push(pattern);
            if s.take(b')') {
                break;
            }
            if !s.take(b' ') {
                return Some(Err(ARGUMENTS));
            }
        }
        first.unwrap_or_default()
    } else {
        let Some((range, pattern)) = string(&mut s, true) else { return fail(extended, ARGUMENTS) };
        list.patterns.push(pattern);
        range
    };
    if s.take(b' ') {
        if !s.keyword(b"RETURN") {
            return fail(extended, SYNTAX);
        }
        extended = true;
        list.returns = match returns(&mut s) {
            Ok(returns) => returns,
            Err(text) => return Some(Err(text)),
        };
    }
    if !extended {
        return None;
    }
    if &message[s.pos..] != b"\r\n" {
        return Some(Err(SYNTAX));
    }
    let mut command = Vec::with_capacity(head + reference.len() + first.len() + 8);
    command.extend_from_slice(&message[..head]);
    command.extend_from_slice(b"LIST ");
    command.extend_from_slice(&message[reference]);
    command.push(b' ');
    command.extend_from_slice(&message[first]);
    command.extend_from_slice(b"\r\n");
    Some(Ok((command, list)))
}

const SYNTAX: &str = "extended LIST syntax error";
const ARGUMENTS: &str = "extended LIST needs a reference and patterns as atoms or quoted strings";

/// Reads `(opt …)`: the selection options.
fn selection(s: &mut Scanner<'_>) -> Result<Selection, &'static str> {
    let mut selection = Selection::default();
    for word in options(s)? {
        let option = if word.eq_ignore_ascii_case(b"SUBSCRIBED") {
            &mut selection.subscribed
        } else if word.eq_ignore_ascii_case(b"REMOTE") {
            &mut selection.remote
        } else if word.eq_ignore_ascii_case(b"RECURSIVEMATCH") {
            &mut selection.recursive_match
        } else if word.eq_ignore_ascii_case(b"SPECIAL-USE") {
            &mut selection.special_use
        } else {
            return Err(UNKNOWN_SELECTION);
        };
        *option = true;
    }
    // RFC 5258 §3.1: RECURSIVEMATCH only makes sense with a criterion for the children to meet.
    if selection.recursive_match && !selection.subscribed && !selection.special_use {
        return Err("RECURSIVEMATCH needs SUBSCRIBED or SPECIAL-USE");
    }
    Ok(selection)
}

/// Reads `(opt …)` after `RETURN `: the return options.
fn returns(s: &mut Scanner<'_>) -> Result<ListReturn, &'static str> {
    let mut returns = ListReturn::default();
    if !s.take(b'(') {
        return Err("LIST RETURN needs a parenthesized list of options");
    }
    if s.take(b')') {
        return Ok(returns);
    }
    loop {
        let word = s.word();
        if word.eq_ignore_ascii_case(b"SUBSCRIBED") {
            returns.subscribed = true;
        } else if word.eq_ignore_ascii_case(b"CHILDREN") {
            returns.children = true;
        } else if word.eq_ignore_ascii_case(b"SPECIAL-USE") {
            returns.special_use = true;
        } else if word.eq_ignore_ascii_case(b"STATUS") {
            if !s.take(b' ') || s.peek() != Some(b'(') {
                return Err("STATUS needs a parenthesized list of status items");
            }
            let items = options(s)?;
            if items.is_empty() {
                return Err("STATUS needs at least one status item");
            }
            for item in items {
                if item.eq_ignore_ascii_case(b"APPENDLIMIT") {
                    returns.append_limit = true;
                    continue;
                }
                let item = status_item(item).ok_or("unknown STATUS item")?;
                if !returns.status.contains(&item) {
                    returns.status.push(item);
                }
            }
        } else {
            return Err(UNKNOWN_RETURN);
        }
        if s.take(b')') {
            return Ok(returns);
        }
        if !s.take(b' ') {
            return Err("LIST RETURN options must be separated by spaces and closed by ')'");
        }
    }
}

/// Reads `(word …)`, possibly empty, and gives the words.
fn options<'a>(s: &mut Scanner<'a>) -> Result<Vec<&'a [u8]>, &'static str> {
    let mut words = Vec::new();
    if !s.take(b'(') {
        return Err(SYNTAX);
    }
    if s.take(b')') {
        return Ok(words);
    }
    loop {
        let word = s.word();
        if word.is_empty() {
            return Err(SYNTAX);
        }
        words.push(word);
        if s.take(b')') {
            return Ok(words);
        }
        if !s.take(b' ') {
            return Err(SYNTAX);
        }
    }
}

/// The STATUS data items imap-codec knows (APPENDLIMIT is not one: [`ListReturn::append_limit`]).
pub(super) fn status_item(word: &[u8]) -> Option<StatusDataItemName> {
    let upper = word.to_ascii_uppercase();
    Some(match upper.as_slice() {
        b"MESSAGES" => StatusDataItemName::Messages,
        b"RECENT" => StatusDataItemName::Recent,
        b"UIDNEXT" => StatusDataItemName::UidNext,
        b"UIDVALIDITY" => StatusDataItemName::UidValidity,
        b"UNSEEN" => StatusDataItemName::Unseen,
        b"DELETED" => StatusDataItemName::Deleted,
        b"DELETED-STORAGE" => StatusDataItemName::DeletedStorage,
        b"HIGHESTMODSEQ" => StatusDataItemName::HighestModSeq,
        b"SIZE" => StatusDataItemName::Size,
        _ => return None,
    })
}

/// Reads a quoted string or an atom (an astring, or with `wildcards` a list-mailbox, which
/// may hold `%` and `*`): its bytes as sent and its value. `None` for anything else, a
/// literal included, and for bytes a quoted string may not hold (CR, LF, NUL, 8-bit).
fn string(s: &mut Scanner<'_>, wildcards: bool) -> Option<(Range<usize>, Vec<u8>)> {
    let start = s.pos;
    let mut value = Vec::new();
    if s.take(b'"') {
        loop {
            let &b = s.bytes.get(s.pos)?;
            s.pos += 1;
            match b {
                b'"' => return Some((start..s.pos, value)),
                b'\\' => {
                    let &escaped = s.bytes.get(s.pos).filter(|&&e| e == b'"' || e == b'\\')?;
                    s.pos += 1;
                    value.push(escaped);
                }
                0 | b'\r' | b'\n' | 0x80.. => return None,
                _ => value.push(b),
            }
        }
    }
    while let Some(&b) = s.bytes.get(s.pos) {
        let atom = b.is_ascii_graphic() && !matches!(b, b'(' | b')' | b'{' | b'"' | b'\\');
        if !atom || (!wildcards && (b == b'%' || b == b'*')) {
            break;
        }
        value.push(b);
        s.pos += 1;
    }
    (s.pos > start).then_some((start..s.pos, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(message: &str) -> (String, ListExtended) {
        let (command, list) = find(message.as_bytes()).expect("recognised").expect("valid");
        (String::from_utf8(command).expect("ASCII"), list)
    }

    fn err(message: &[u8]) -> &'static str {
        find(message).expect("recognised").expect_err("refused")
    }

    #[test]
    fn list_status_and_special_use() {
        let (command, list) = ok("A01 LIST \"\" % RETURN (STATUS (MESSAGES UNSEEN))\r\n");
        assert_eq!(command, "A01 LIST \"\" %\r\n");
        assert_eq!(list.patterns, [b"%".to_vec()]);
        assert_eq!(list.selection, Selection::default());
        assert_eq!(list.returns.status, [StatusDataItemName::Messages, StatusDataItemName::Unseen]);
        let (command, list) =
            ok("t list \"\" \"*\" return (special-use children status (uidnext uidnext) subscribed)\r\n");
        assert_eq!(command, "t LIST \"\" \"*\"\r\n");
        let returns = ListReturn {
            subscribed: true,
            children: true,
            special_use: true,
            status: vec![StatusDataItemName::UidNext],
            append_limit: false,
        };
        assert_eq!(list.returns, returns);
        let (_, list) = ok("t LIST \"\" * RETURN ()\r\n");
        assert_eq!(list.returns, ListReturn::default());
    }

    #[test]
    fn selection_options_and_patterns() {
        let (command, list) = ok(
            "A02 LIST (SUBSCRIBED RECURSIVEMATCH REMOTE) Archive/ (\"a \\\"b\\\"\" %/x INBOX) RETURN (CHILDREN)\r\n",
        );
        assert_eq!(command, "A02 LIST Archive/ \"a \\\"b\\\"\"\r\n");
        let selection = Selection { subscribed: true, remote: true, recursive_match: true, special_use: false };
        assert_eq!(list.selection, selection);
        assert_eq!(list.patterns, [b"a \"b\"".to_vec(), b"%/x".to_vec(), b"INBOX".to_vec()]);
        assert!(list.returns.children);
        let (command, list) = ok("s LIST (SPECIAL-USE) \"\" (\"\")\r\n");
        assert_eq!(command, "s LIST \"\" \"\"\r\n");
        assert!(list.selection.special_use && list.patterns == [Vec::<u8>::new()]);
        let (command, list) = ok("s LIST () \"\" *\r\n");
        assert_eq!((command.as_str(), list.selection), ("s LIST \"\" *\r\n", Selection::default()));
    }

    #[test]
    fn plain_lists_and_other_commands_are_left_alone() {
        for message in [
            &b"a LIST \"\" *\r\n"[..],
            b"a LIST \"\" \"RETURN (STATUS (MESSAGES))\"\r\n",
            b"a LIST {0}\r\n {1}\r\n*\r\n",
            b"a LIST \"\" {1}\r\n* RETURN (CHILDREN)\r\n",
            b"a LSUB \"\" * RETURN (CHILDREN)\r\n",
            b"a STATUS INBOX (MESSAGES)\r\n",
            b"a LIST \"\" * BOGUS\r\n",
            b"a LIST \"\"",
            b"LIST \"\" * RETURN (CHILDREN)\r\n",
            b"",
        ] {
            assert_eq!(find(message), None, "{:?}", String::from_utf8_lossy(message));
        }
    }

    #[test]
    fn malformed_extended_lists_are_refused() {
        for (message, text) in [
            (&b"a LIST (FOO) \"\" *\r\n"[..], "selection"),
            (b"a LIST (RECURSIVEMATCH) \"\" *\r\n", "RECURSIVEMATCH"),
            (b"a LIST (REMOTE RECURSIVEMATCH) \"\" *\r\n", "RECURSIVEMATCH"),
            (b"a LIST (SUBSCRIBED \"\" *\r\n", "syntax"),
            (b"a LIST (SUBSCRIBED)\"\" *\r\n", "syntax"),
            (b"a LIST (SUBSCRIBED) {0}\r\n *\r\n", "atoms or quoted"),
            (b"a LIST \"\" (\"a\" {1}\r\nb)\r\n", "atoms or quoted"),
            (b"a LIST \"\" ()\r\n", "atoms or quoted"),
            (b"a LIST \"\" (a b\r\n", "atoms or quoted"),
            (b"a LIST \"\" (\"a\0\")\r\n", "atoms or quoted"),
            (b"a LIST \"\" (\"a\r\n", "atoms or quoted"),
            (b"a LIST \"\" (\"\\a\")\r\n", "atoms or quoted"),
            (b"a LIST \"\" (\"\xc3\xa9\")\r\n", "atoms or quoted"),
            (b"a LIST \"\" * RETURN (FOO)\r\n", "return option"),
            (b"a LIST \"\" * RETURN (STATUS (BOGUS))\r\n", "STATUS item"),
            (b"a LIST \"\" * RETURN (STATUS ())\r\n", "at least one"),
            (b"a LIST \"\" * RETURN (STATUS MESSAGES)\r\n", "parenthesized"),
            (b"a LIST \"\" * RETURN (STATUS (MESSAGES)\r\n", "separated"),
            (b"a LIST \"\" * RETURN CHILDREN\r\n", "parenthesized"),
            (b"a LIST \"\" * RETURN (CHILDREN) x\r\n", "syntax"),
            (b"a LIST \"\" * RETURN (CHILDREN)\r\n{1}\r\nx", "syntax"),
            (b"a LIST \"\" * RETURN (CHILDREN)", "syntax"),
            (b"a LIST \"\" (*) trailing\r\n", "syntax"),
        ] {
            let got = err(message);
            assert!(got.contains(text), "{:?}: {got}", String::from_utf8_lossy(message));
        }
    }

    #[test]
    fn hostile_input() {
        let mut message = b"a LIST \"\" (".to_vec();
        message.extend(b"x ".repeat(1 << 17));
        assert!(matches!(find(&message), Some(Err(_))));
        message.extend(b"y) RETURN (CHILDREN)\r\n");
        let (command, list) = find(&message).expect("recognised").expect("valid");
        assert_eq!((command.as_slice(), list.patterns.len()), (&b"a LIST \"\" x\r\n"[..], (1 << 17) + 1));
        let mut message = b"a LIST \"\" \"".to_vec();
        message.extend(vec![b'\\'; 1 << 20]);
        assert_eq!(find(&message), None);
        assert_eq!(find(&vec![b'('; 1 << 20]), None);
        assert!(matches!(find(&[b"a LIST ".to_vec(), vec![b'('; 1 << 20]].concat()), Some(Err(_))));
    }
}
