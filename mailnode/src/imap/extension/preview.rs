//! `PREVIEW` and `PREVIEW (LAZY)` among FETCH's items (RFC 8970), which imap-codec does not
//! know.
//!
//! ```text
//! fetch-att   =/ "PREVIEW" [SP "(" preview-mod *(SP preview-mod) ")"]
//! preview-mod =  "LAZY"
//! ```
//!
//! [`find`] looks for the item on the command's first line, outside brackets (a header named
//! PREVIEW in `BODY[HEADER.FIELDS (PREVIEW)]` is a header) and quoted strings, and cuts it
//! out of the item list; when it was the only item, `UID` takes its place, so that what is
//! left is still a FETCH imap-codec decodes (a UID in the answer is always allowed).

use super::Scanner;

/// A FETCH asked for the preview.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preview {
    /// `(LAZY)`: the client takes NIL rather than wait for one to be made.
    pub lazy: bool,
}

const ITEM: &[u8] = b"PREVIEW";

/// Finds the PREVIEW item in `tag [UID] FETCH set items …`.
///
/// `None`: not a FETCH, or one without it. Otherwise the command without the item, and what
/// was asked, or the text of the BAD.
pub fn find(message: &[u8]) -> Option<Result<(Vec<u8>, Preview), &'static str>> {
    let mut s = Scanner::new(message);
    let tag = s.word();
    if tag.is_empty() || !s.take(b' ') {
        return None;
    }
    s.keyword(b"UID");
    if !s.keyword(b"FETCH") || s.word().is_empty() || !s.take(b' ') {
        return None;
    }
    let items = s.pos;
    let line_end = message[items..].iter().position(|&b| b == b'\r' || b == b'\n' || b == b'{')? + items;
    let start = item_at(&message[..line_end], items)?;
    let mut end = start + ITEM.len();
    let mut preview = Preview::default();
    if let Some(close) = modifiers_end(&message[..line_end], end) {
        let inner = &message[end + 2..close];
        let lazy = inner.split(|&b| b == b' ').all(|w| w.eq_ignore_ascii_case(b"LAZY"));
        match (lazy, start == items) {
            (true, _) => {
                preview.lazy = true;
                end = close + 1;
            }
            // In a list, what follows PREVIEW in parentheses can only be its modifiers.
            (false, false) => return Some(Err("PREVIEW takes only the LAZY modifier")),
            // Bare, a parenthesised list after it is FETCH's own modifiers (CHANGEDSINCE).
            (false, true) => {}
        }
    }
    let before = message[start - 1];
    let after = message.get(end).copied();
    let (cut, replacement): (std::ops::Range<usize>, &[u8]) =
        if start == items || (before == b'(' && after == Some(b')')) {
            (start..end, b"UID")
        } else if before == b' ' {
            (start - 1..end, b"")
        } else if after == Some(b' ') {
            (start..end + 1, b"")
        } else {
            // `(PREVIEW` at the end of the line: the command is broken anyway, and the line end
            // stays where it is.
            (start..end, b"UID")
        };
    let mut command = Vec::with_capacity(message.len());
    command.extend_from_slice(&message[..cut.start]);
    command.extend_from_slice(replacement);
    command.extend_from_slice(&message[cut.end..]);
    Some(Ok((command, preview)))
}

/// Where the item PREVIEW starts in `line` (from `from`): a whole word outside brackets and
/// quoted strings.
fn item_at(line: &[u8], from: usize) -> Option<usize> {
    let (mut depth, mut quoted, mut escaped) = (0usize, false, false);
    for i in from..line.len() {
        let b = line[i];
        if quoted {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => quoted = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => quoted = true,
            b'[' => depth += 1,
            b']' => depth = depth.saturating_sub(1),
            _ if depth == 0 && line[i..].len() >= ITEM.len() && line[i..i + ITEM.len()].eq_ignore_ascii_case(ITEM) => {
                let starts = i == from || matches!(line[i - 1], b' ' | b'(');
                let ends = matches!(line.get(i + ITEM.len()), None | Some(b' ' | b')'));
                if starts && ends {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// The index of the `)` closing ` (…)` right after `at`, when that follows.
fn modifiers_end(line: &[u8], at: usize) -> Option<usize> {
    if !line[at..].starts_with(b" (") {
        return None;
    }
    let close = line[at + 2..].iter().position(|&b| b == b')')? + at + 2;
    let inner = &line[at + 2..close];
    (!inner.is_empty() && !inner.contains(&b'(')).then_some(close)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(message: &str) -> Option<Result<(String, bool), &'static str>> {
        find(message.as_bytes()).map(|r| r.map(|(c, p)| (String::from_utf8(c).unwrap(), p.lazy)))
    }

    #[test]
    fn the_item_is_cut_from_the_list() {
        assert_eq!(cut("a FETCH 1:* (UID PREVIEW)\r\n"), Some(Ok(("a FETCH 1:* (UID)\r\n".into(), false))));
        assert_eq!(cut("a FETCH 1 (preview FLAGS)\r\n"), Some(Ok(("a FETCH 1 (FLAGS)\r\n".into(), false))));
        assert_eq!(
            cut("a UID FETCH 1 (FLAGS PREVIEW (LAZY) UID) (CHANGEDSINCE 5)\r\n"),
            Some(Ok(("a UID FETCH 1 (FLAGS UID) (CHANGEDSINCE 5)\r\n".into(), true)))
        );
    }

    #[test]
    fn alone_it_becomes_uid() {
        assert_eq!(cut("a FETCH 1 PREVIEW\r\n"), Some(Ok(("a FETCH 1 UID\r\n".into(), false))));
        assert_eq!(cut("a FETCH 1 (PREVIEW)\r\n"), Some(Ok(("a FETCH 1 (UID)\r\n".into(), false))));
        assert_eq!(cut("a FETCH 1 PREVIEW (LAZY)\r\n"), Some(Ok(("a FETCH 1 UID\r\n".into(), true))));
        assert_eq!(
            cut("a UID FETCH 1 PREVIEW (CHANGEDSINCE 5)\r\n"),
            Some(Ok(("a UID FETCH 1 UID (CHANGEDSINCE 5)\r\n".into(), false)))
        );
    }

    #[test]
    fn not_the_item() {
        assert_eq!(cut("a FETCH 1 (BODY.PEEK[HEADER.FIELDS (PREVIEW)])\r\n"), None);
        assert_eq!(cut("a FETCH 1 (PREVIEWS)\r\n"), None);
        assert_eq!(cut("a SEARCH PREVIEW\r\n"), None);
        assert_eq!(cut("a FETCH 1 (BODY[HEADER.FIELDS (\"x]\" PREVIEW)])\r\n"), None);
        assert_eq!(cut("a FETCH 1 (PREVIEW (FAST))\r\n"), Some(Err("PREVIEW takes only the LAZY modifier")));
    }

    /// F19: an unclosed list ending in PREVIEW lost its line end.
    #[test]
    fn the_line_end_stays() {
        assert_eq!(cut("p FETCH 1 T))(PREVIEW\n"), Some(Ok(("p FETCH 1 T))(UID\n".into(), false))));
    }
}
