//! `SEARCH RETURN (…)` (ESEARCH, RFC 4731): which result options a SEARCH asks for.
//!
//! RFC 4466 §2.6 puts the options right after the command name:
//!
//! ```text
//! search             = "SEARCH" [search-return-opts] SP search-program
//! search-return-opts = SP "RETURN" SP "(" [search-return-opt *(SP search-return-opt)] ")"
//! search-return-opt  = "MIN" / "MAX" / "ALL" / "COUNT"      ; RFC 4731's
//! search-return-opt  =/ "SAVE"                             ; SEARCHRES, RFC 5182
//! ```
//!
//! so [`find`] reads `tag [UID] SEARCH RETURN (` and the atoms up to `)`, nothing further.

use std::ops::Range;

use super::Scanner;

/// The text of the BAD for a result option this server does not know.
pub const UNKNOWN_OPTION: &str = "unknown SEARCH return option (MIN, MAX, ALL, COUNT and SAVE are offered)";

/// The result options of one `SEARCH RETURN (…)`. An empty list means ALL (RFC 4731 §3.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SearchReturn {
    pub min: bool,
    pub max: bool,
    pub all: bool,
    pub count: bool,
    /// Keep the result for `$` (SEARCHRES, RFC 5182 §2.4).
    pub save: bool,
}

impl SearchReturn {
    /// Whether an ESEARCH response is sent: not for SAVE alone (RFC 5182 §2.4).
    pub fn answers(&self) -> bool {
        self.min || self.max || self.all || self.count
    }
}

/// A SEARCH to be answered with ESEARCH (RFC 4731): the command's tag and its result options.
#[derive(Debug, Clone, Copy)]
pub struct Esearch<'a> {
    pub tag: &'a str,
    pub options: SearchReturn,
}

/// Finds `RETURN (opts) ` in `tag [UID] SEARCH RETURN (opts) criteria`.
///
/// `None`: the command is not a SEARCH with RETURN. Otherwise the byte range to cut (from
/// `RETURN` to the space after `)`, so that `tag [UID] SEARCH criteria` is left) and the
/// options, or the text of the BAD when the clause is malformed.
pub fn find(message: &[u8]) -> Option<Result<(Range<usize>, SearchReturn), &'static str>> {
    let mut s = Scanner::new(message);
    let tag = s.word();
    if tag.is_empty() || !s.take(b' ') {
        return None;
    }
    s.keyword(b"UID");
    if !s.keyword(b"SEARCH") {
        return None;
    }
    let start = s.pos;
    if !s.keyword(b"RETURN") {
        return None;
    }
    // "RETURN" is no search key: from here on the command is ESEARCH or malformed.
    Some(options(&mut s).map(|options| (start..s.pos, options)))
}

/// Reads `(opts) ` after `RETURN `.
fn options(s: &mut Scanner<'_>) -> Result<SearchReturn, &'static str> {
    if !s.take(b'(') {
        return Err("SEARCH RETURN needs a parenthesized list of options");
    }
    let mut options = SearchReturn::default();
    if !s.take(b')') {
        loop {
            let word = s.word();
            let option = if word.eq_ignore_ascii_case(b"MIN") {
                &mut options.min
            } else if word.eq_ignore_ascii_case(b"MAX") {
                &mut options.max
            } else if word.eq_ignore_ascii_case(b"ALL") {
                &mut options.all
            } else if word.eq_ignore_ascii_case(b"COUNT") {
                &mut options.count
            } else if word.eq_ignore_ascii_case(b"SAVE") {
                &mut options.save
            } else {
                return Err(UNKNOWN_OPTION);
            };
            *option = true;
            if s.take(b')') {
                break;
            }
            if !s.take(b' ') {
                return Err("SEARCH RETURN options must be separated by spaces and closed by ')'");
            }
        }
    }
    if !s.take(b' ') {
        return Err("SEARCH RETURN (…) must be followed by search criteria");
    }
    if options == SearchReturn::default() {
        options.all = true;
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN_MAX: SearchReturn = SearchReturn { min: true, max: true, all: false, count: false, save: false };
    const ALL: SearchReturn = SearchReturn { min: false, max: false, all: true, count: false, save: false };

    fn cut(message: &[u8]) -> Option<Result<(Vec<u8>, SearchReturn), &'static str>> {
        find(message).map(|r| {
            r.map(|(range, options)| {
                assert!(range.end <= message.len());
                let mut left = message[..range.start].to_vec();
                left.extend_from_slice(&message[range.end..]);
                (left, options)
            })
        })
    }

    #[test]
    fn recognises_return_options() {
        assert_eq!(cut(b"a SEARCH RETURN (MIN MAX) ALL\r\n"), Some(Ok((b"a SEARCH ALL\r\n".to_vec(), MIN_MAX))));
        assert_eq!(
            cut(b"x.1 uid search return (max min) UNSEEN\r\n"),
            Some(Ok((b"x.1 uid search UNSEEN\r\n".to_vec(), MIN_MAX)))
        );
        assert_eq!(cut(b"a SEARCH RETURN () ALL\r\n"), Some(Ok((b"a SEARCH ALL\r\n".to_vec(), ALL))));
        // SAVE alone is no ALL: it asks for no ESEARCH at all.
        let save = SearchReturn { save: true, ..SearchReturn::default() };
        assert_eq!(cut(b"a SEARCH RETURN (save) ALL\r\n"), Some(Ok((b"a SEARCH ALL\r\n".to_vec(), save))));
        let every = SearchReturn { min: true, max: true, all: true, count: true, save: false };
        assert_eq!(
            cut(b"a SEARCH RETURN (COUNT ALL MIN MAX COUNT) 1:*\r\n"),
            Some(Ok((b"a SEARCH 1:*\r\n".to_vec(), every)))
        );
        // The criteria after the clause are left as they are, literals included.
        let message = b"a SEARCH RETURN (ALL) SUBJECT {9}\r\nRETURN ()\r\n";
        assert_eq!(cut(message), Some(Ok((b"a SEARCH SUBJECT {9}\r\nRETURN ()\r\n".to_vec(), ALL))));
    }

    #[test]
    fn other_commands_are_not_looked_into() {
        for message in [
            &b"a SEARCH ALL\r\n"[..],
            b"a SEARCH SUBJECT \"RETURN (MIN)\"\r\n",
            b"a SEARCH SUBJECT RETURN (MIN) ALL\r\n",
            b"a SEARCH \"RETURN\" (MIN) ALL\r\n",
            b"a SEARCH {6}\r\nRETURN (MIN) ALL\r\n",
            b"a SEARCH\r\nRETURN (MIN) ALL\r\n",
            b"a FETCH RETURN (MIN) ALL\r\n",
            b"a UID UID SEARCH RETURN (MIN) ALL\r\n",
            b"SEARCH RETURN (MIN) ALL\r\n",
            b" SEARCH RETURN (MIN) ALL\r\n",
            b"a  SEARCH RETURN (MIN) ALL\r\n",
            b"a SEARCH  RETURN (MIN) ALL\r\n",
            b"a SEARCH RETURNS (MIN) ALL\r\n",
            b"a SEARCH RETURN",
            b"a\0SEARCH RETURN (MIN) ALL\r\n",
            b"",
            b"a",
        ] {
            assert_eq!(find(message), None, "{:?}", String::from_utf8_lossy(message));
        }
    }

    #[test]
    fn malformed_clauses_are_refused() {
        for (message, text) in [
            (&b"a SEARCH RETURN (MIN ALL\r\n"[..], "separated"),
            (b"a SEARCH RETURN (MIN ALL", "separated"),
            (b"a SEARCH RETURN ((MIN)) ALL\r\n", "unknown"),
            (b"a SEARCH RETURN MIN ALL\r\n", "parenthesized"),
            (b"a SEARCH RETURN (MIN  MAX) ALL\r\n", "unknown"),
            (b"a SEARCH RETURN ( MIN) ALL\r\n", "unknown"),
            (b"a SEARCH RETURN (MIN)ALL\r\n", "criteria"),
            (b"a SEARCH RETURN (MIN)\r\n", "criteria"),
            (b"a SEARCH RETURN (PARTIAL 1:10) ALL\r\n", "unknown"),
            (b"a SEARCH RETURN (MIN\0) ALL\r\n", "separated"),
            (b"a SEARCH RETURN (\"MIN\") ALL\r\n", "unknown"),
            (b"a SEARCH RETURN ({3}\r\nMIN) ALL\r\n", "unknown"),
            (b"a SEARCH RETURN (MIN\r\nMAX) ALL\r\n", "separated"),
            (b"a SEARCH RETURN {5}\r\n(MIN) ALL\r\n", "parenthesized"),
        ] {
            let err = find(message).expect("recognised").expect_err("refused");
            assert!(err.contains(text), "{:?}: {err}", String::from_utf8_lossy(message));
        }
    }

    #[test]
    fn huge_input_is_read_once_and_refused() {
        let mut message = b"a SEARCH RETURN (".to_vec();
        message.extend(b"MIN ".repeat(1 << 18));
        assert!(matches!(find(&message), Some(Err(_))));
        message.extend(b"MAX) ALL\r\n");
        let (range, options) = find(&message).expect("recognised").expect("valid");
        assert_eq!((range.start, range.end, options), (9, message.len() - 5, MIN_MAX));
        let mut message = vec![b'a'; 1 << 20];
        message.extend(b" SEARCH RETURN (MIN) ALL\r\n");
        assert!(matches!(find(&message), Some(Ok(_))));
        assert_eq!(find(&vec![0u8; 1 << 20]), None);
        assert_eq!(find(&vec![b'('; 1 << 20]), None);
    }
}
