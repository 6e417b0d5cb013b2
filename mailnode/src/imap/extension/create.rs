//! `CREATE mailbox (USE (attrs))` (CREATE-SPECIAL-USE, RFC 6154 §3), which imap-codec does not know.
//!
//! RFC 4466 §2.2 and RFC 6154 §6 put the parameters after the mailbox, ending the command:
//!
//! ```text
//! create        = "CREATE" SP mailbox [create-params]
//! create-params = SP "(" create-param *(SP create-param) ")"
//! create-param  =/ "USE" SP "(" [use-attr *(SP use-attr)] ")"
//! ```
//!
//! so [`find`] reads `(USE (attrs))` back from the end of the command, as STATUS's items are
//! read, and leaves `tag CREATE mailbox` to imap-codec. A clause that starts inside a literal
//! (a mailbox name that looks like one) is not looked into.

use super::Scanner;

/// The special uses asked for by one `CREATE … (USE (…))`, as written (`\Sent`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateUse {
    pub uses: Vec<String>,
}

/// At most this many attributes are read: there are seven special uses, so more is hostile.
const MAX_USES: usize = 16;

/// Finds `(USE (attrs))` at the end of `tag CREATE mailbox (USE (attrs))`.
///
/// `None`: not a CREATE, or one without parameters. Otherwise the command without the clause,
/// and the attributes, or the text of the BAD.
pub fn find(message: &[u8]) -> Option<Result<(Vec<u8>, CreateUse), &'static str>> {
    let mut s = Scanner::new(message);
    let tag = s.word();
    if tag.is_empty() || !s.take(b' ') || !s.keyword(b"CREATE") {
        return None;
    }
    let body = message.strip_suffix(b"\n")?;
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    let inner_end = body.strip_suffix(b"))")?.len();
    let open = body[..inner_end].iter().rposition(|&b| b == b'(')?;
    let clause = open.checked_sub(b" (USE ".len())?;
    if clause <= s.pos || !body[clause..open].eq_ignore_ascii_case(b" (USE ") || inside_literal(message, clause) {
        return None;
    }
    let inner = &body[open + 1..inner_end];
    let mut uses = CreateUse::default();
    if !inner.is_empty() {
        for word in inner.split(|&b| b == b' ') {
            if uses.uses.len() == MAX_USES {
                return Some(Err("too many special-use attributes"));
            }
            // A use-attr is a flag-like `\Atom`.
            let valid = word.len() > 1
                && word[0] == b'\\'
                && word[1..].iter().all(|&b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b));
            if !valid {
                return Some(Err("CREATE USE takes a list of attributes such as \\Sent"));
            }
            uses.uses.push(String::from_utf8_lossy(word).into_owned());
        }
    }
    let mut command = Vec::with_capacity(clause + 2);
    command.extend_from_slice(&message[..clause]);
    command.extend_from_slice(&message[body.len()..]);
    Some(Ok((command, uses)))
}

/// Whether byte `at` lies in the data of a literal (`{n}` or `{n+}` and CRLF before it).
fn inside_literal(message: &[u8], at: usize) -> bool {
    let Some(marker) = message[..at].windows(3).rposition(|w| w == b"}\r\n") else { return false };
    let Some(brace) = message[..marker].iter().rposition(|&b| b == b'{') else { return false };
    let digits = message[brace + 1..marker].strip_suffix(b"+").unwrap_or(&message[brace + 1..marker]);
    let Some(length) = std::str::from_utf8(digits).ok().and_then(|d| d.parse::<usize>().ok()) else {
        return false;
    };
    // The literal's data starts after the CRLF; a clause before its end is part of the name.
    at < (marker + 3).saturating_add(length)
}

#[cfg(test)]
mod tests {
    use imap_types::command::CommandBody;

    use super::*;
    use crate::imap::extension::{Extension, decode};

    fn uses(list: &[&str]) -> CreateUse {
        CreateUse { uses: list.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn use_clause_is_cut_and_the_rest_decoded() {
        let d = decode(b"c1 CREATE MySent (USE (\\Sent))\r\n").unwrap();
        let CommandBody::Create { mailbox } = d.command.body else { panic!("not a CREATE") };
        assert_eq!(crate::imap::command::mailbox_name(&mailbox).unwrap(), "MySent");
        assert_eq!(d.extension, Extension::CreateUse(uses(&["\\Sent"])));
        let d = decode(b"c2 create \"a b\" (use (\\Drafts \\Trash))\r\n").unwrap();
        assert_eq!(d.extension, Extension::CreateUse(uses(&["\\Drafts", "\\Trash"])));
        let d = decode(b"c3 CREATE x (USE ())\r\n").unwrap();
        assert_eq!(d.extension, Extension::CreateUse(uses(&[])));
        // A literal name that looks like a clause is a name.
        let d = decode(b"c4 CREATE {15+}\r\nx (USE (\\Sent))\r\n").unwrap();
        assert_eq!(d.extension, Extension::None);
        let d = decode(b"c5 CREATE {1+}\r\nx (USE (\\Sent))\r\n").unwrap();
        assert_eq!(d.extension, Extension::CreateUse(uses(&["\\Sent"])));
    }

    #[test]
    fn plain_and_malformed_clauses() {
        assert_eq!(find(b"c CREATE INBOX.x\r\n"), None);
        assert_eq!(find(b"c CREATE \"x (USE (\\Sent))\"\r\n"), None);
        assert!(matches!(find(b"c CREATE x (USE (Sent))\r\n"), Some(Err(_))));
        assert!(matches!(find(b"c CREATE x (USE (\\Sent  \\Drafts))\r\n"), Some(Err(_))));
        assert!(decode(b"c CREATE (USE (\\Sent))\r\n").is_err());
        let mut hostile = b"c CREATE x (USE (".to_vec();
        hostile.extend(b"\\A ".repeat(1 << 16));
        hostile.extend(b"\\A))\r\n");
        assert!(matches!(find(&hostile), Some(Err(_))));
    }
}
