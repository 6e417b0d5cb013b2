//! `$`, the saved search result (SEARCHRES, RFC 5182 §2.1), where imap-codec wants a sequence set.
//!
//! ```text
//! sequence-set =/ seq-last-command
//! seq-last-command = "$"
//! ```
//!
//! imap-codec knows no `$`, so [`find`] puts [`MARKER`], a sequence set imap-codec does decode,
//! in its place, and the session swaps the saved result in for the marker after decoding.
//! `$` is recognised as the first argument of `[UID] FETCH`, `STORE`, `COPY`, `MOVE` and of
//! `UID EXPUNGE`, and as a search key (or UID's argument) in `[UID] SEARCH`'s criteria. The
//! criteria are read as tokens, without building anything: quoted strings and literals are
//! skipped whole, and after a key that takes arguments (`SUBJECT x`, `HEADER x y`) those
//! arguments are skipped, so that `SUBJECT $` still searches for a dollar sign.

/// What stands for `$` in the command imap-codec decodes. A command whose own text holds it
/// is refused, so that a marker the session finds is always one [`find`] put there.
pub const MARKER: &[u8] = b"4294967295:4294967295";

/// Commands whose first argument may be `$`.
const SET_FIRST: [&[u8]; 4] = [b"FETCH", b"STORE", b"COPY", b"MOVE"];

/// The text of the BAD for a command that writes the marker itself alongside `$`.
pub const MARKER_USED: &str = "a sequence set of 4294967295:4294967295 cannot be combined with $";

/// Replaces `$` with [`MARKER`] where it stands for the saved result.
///
/// `None`: no `$` there (imap-codec decodes the command as it is). Otherwise the command with
/// the markers in, or the text of the BAD.
pub fn find(message: &[u8]) -> Option<Result<Vec<u8>, &'static str>> {
    let mut s = super::Scanner::new(message);
    let tag = s.word();
    if tag.is_empty() || !s.take(b' ') {
        return None;
    }
    let uid = s.keyword(b"UID");
    let name = s.word();
    if !s.take(b' ') {
        return None;
    }
    let positions =
        if SET_FIRST.iter().any(|n| name.eq_ignore_ascii_case(n)) || (uid && name.eq_ignore_ascii_case(b"EXPUNGE")) {
            let after = message.get(s.pos + 1).copied();
            if s.peek() != Some(b'$') || !matches!(after, Some(b' ' | b'\r' | b'\n')) {
                return None;
            }
            vec![s.pos]
        } else if name.eq_ignore_ascii_case(b"SEARCH") {
            search_dollars(message, s.pos)
        } else {
            return None;
        };
    if positions.is_empty() {
        return None;
    }
    if message.windows(MARKER.len()).any(|w| w == MARKER) {
        return Some(Err(MARKER_USED));
    }
    let mut command = Vec::with_capacity(message.len() + positions.len() * MARKER.len());
    let mut last = 0;
    for at in positions {
        command.extend_from_slice(&message[last..at]);
        command.extend_from_slice(MARKER);
        last = at + 1;
    }
    command.extend_from_slice(&message[last..]);
    Some(Ok(command))
}

/// How many arguments follow a search key (or CHARSET) before the next key.
fn arguments(key: &[u8]) -> usize {
    const ONE: [&[u8]; 20] = [
        b"BCC",
        b"BEFORE",
        b"BODY",
        b"CC",
        b"FROM",
        b"KEYWORD",
        b"ON",
        b"SINCE",
        b"SENTBEFORE",
        b"SENTON",
        b"SENTSINCE",
        b"SUBJECT",
        b"TEXT",
        b"TO",
        b"UNKEYWORD",
        b"LARGER",
        b"SMALLER",
        b"OLDER",
        b"YOUNGER",
        b"CHARSET",
    ];
    if key.eq_ignore_ascii_case(b"HEADER") {
        2
    } else if ONE.iter().any(|k| key.eq_ignore_ascii_case(k)) {
        1
    } else {
        0
    }
}

/// The offsets of the `$` search keys in the criteria starting at `start`.
///
/// One pass over the bytes: each step moves forward, and a literal's length only skips ahead.
fn search_dollars(message: &[u8], start: usize) -> Vec<usize> {
    let mut found = Vec::new();
    let mut pos = start;
    // Arguments still to skip after the last key.
    let mut skip = 0usize;
    // The last token was MODSEQ, whose optional entry name (a string) brings two more arguments.
    let mut modseq = false;
    while pos < message.len() {
        let was_modseq = std::mem::take(&mut modseq);
        match message[pos] {
            b' ' | b'(' | b')' | b'\r' | b'\n' => {
                modseq = was_modseq;
                pos += 1;
                continue;
            }
            b'"' => {
                pos += 1;
                while pos < message.len() && message[pos] != b'"' {
                    pos += if message[pos] == b'\\' { 2 } else { 1 };
                }
                pos += 1;
            }
            b'{' => {
                let Some(close) = message[pos..].iter().position(|&c| c == b'}') else { break };
                let digits = &message[pos + 1..pos + close];
                let digits = digits.strip_suffix(b"+").unwrap_or(digits);
                let length = std::str::from_utf8(digits).ok().and_then(|d| d.parse::<usize>().ok()).unwrap_or(0);
                // `}` CRLF, then the literal's bytes.
                pos = (pos + close + 3).saturating_add(length);
            }
            _ => {
                let end = message[pos..]
                    .iter()
                    .position(|&c| matches!(c, b' ' | b'(' | b')' | b'"' | b'{') || c.is_ascii_control())
                    .map_or(message.len(), |n| pos + n);
                let word = &message[pos..end];
                if skip > 0 {
                    skip -= 1;
                } else if word == b"$" {
                    found.push(pos);
                } else if word.eq_ignore_ascii_case(b"MODSEQ") {
                    skip = 1;
                    modseq = true;
                } else {
                    skip = arguments(word);
                }
                pos = end.max(pos + 1);
                continue;
            }
        }
        // A string or literal: an argument, or MODSEQ's entry name followed by its type and number.
        skip = if was_modseq { 2 } else { skip.saturating_sub(1) };
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replaced(message: &[u8]) -> Option<String> {
        find(message).map(|r| String::from_utf8_lossy(&r.expect("valid")).into_owned())
    }

    #[test]
    fn dollar_as_the_set_of_message_commands() {
        let m = "4294967295:4294967295";
        assert_eq!(replaced(b"a FETCH $ FLAGS\r\n"), Some(format!("a FETCH {m} FLAGS\r\n")));
        assert_eq!(
            replaced(b"a uid store $ +FLAGS (\\Seen)\r\n"),
            Some(format!("a uid store {m} +FLAGS (\\Seen)\r\n"))
        );
        assert_eq!(replaced(b"a COPY $ Trash\r\n"), Some(format!("a COPY {m} Trash\r\n")));
        assert_eq!(replaced(b"a UID MOVE $ Trash\r\n"), Some(format!("a UID MOVE {m} Trash\r\n")));
        assert_eq!(replaced(b"a UID EXPUNGE $\r\n"), Some(format!("a UID EXPUNGE {m}\r\n")));
        assert_eq!(replaced(b"a FETCH 1:$ FLAGS\r\n"), None);
        assert_eq!(replaced(b"a FETCH $1 FLAGS\r\n"), None);
        assert_eq!(replaced(b"a EXPUNGE $\r\n"), None);
        assert_eq!(replaced(b"a SELECT $\r\n"), None);
        assert_eq!(find(b"a FETCH $ (UID) 4294967295:4294967295\r\n"), Some(Err(MARKER_USED)));
    }

    #[test]
    fn dollar_as_a_search_key() {
        let m = "4294967295:4294967295";
        assert_eq!(replaced(b"a SEARCH $\r\n"), Some(format!("a SEARCH {m}\r\n")));
        assert_eq!(
            replaced(b"a UID SEARCH OR $ (UID $ SEEN) NOT $\r\n"),
            Some(format!("a UID SEARCH OR {m} (UID {m} SEEN) NOT {m}\r\n"))
        );
        assert_eq!(
            replaced(b"a SEARCH CHARSET UTF-8 SUBJECT $ $\r\n"),
            Some(format!("a SEARCH CHARSET UTF-8 SUBJECT $ {m}\r\n"))
        );
        assert_eq!(replaced(b"a SEARCH HEADER $ $ $\r\n"), Some(format!("a SEARCH HEADER $ $ {m}\r\n")));
        assert_eq!(replaced(b"a SEARCH SUBJECT \"x $\" $\r\n"), Some(format!("a SEARCH SUBJECT \"x $\" {m}\r\n")));
        assert_eq!(replaced(b"a SEARCH SUBJECT {3+}\r\n$ $\r\n"), None);
        assert_eq!(
            replaced(b"a SEARCH SUBJECT {1+}\r\n$ $\r\n"),
            Some(format!("a SEARCH SUBJECT {{1+}}\r\n$ {m}\r\n"))
        );
        assert_eq!(replaced(b"a SEARCH MODSEQ 5 $\r\n"), Some(format!("a SEARCH MODSEQ 5 {m}\r\n")));
        assert_eq!(
            replaced(b"a SEARCH MODSEQ \"/flags/\\\\seen\" all 5 $\r\n"),
            Some(format!("a SEARCH MODSEQ \"/flags/\\\\seen\" all 5 {m}\r\n"))
        );
        assert_eq!(replaced(b"a SEARCH KEYWORD $ ALL\r\n"), None);
        assert_eq!(replaced(b"a SEARCH $$ ALL\r\n"), None);
    }

    #[test]
    fn hostile_input_is_read_once() {
        let mut message = b"a SEARCH ".to_vec();
        message.extend(b"(\"\\".repeat(1 << 18));
        assert_eq!(find(&message), None);
        let mut message = b"a SEARCH ".to_vec();
        message.extend(b"$ {99999999999999999999}\r\n".repeat(1 << 12));
        assert!(matches!(find(&message), Some(Ok(_))));
    }
}
