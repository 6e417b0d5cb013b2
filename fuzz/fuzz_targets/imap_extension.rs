//! Fuzzes the IMAP command pre-decoder (`sirms_mailnode::imap::extension`): the code that
//! takes extension syntax imap-codec cannot decode out of a complete command before imap-codec
//! decodes the rest: `SEARCH RETURN (…)` (ESEARCH), extended LIST (LIST-EXTENDED,
//! LIST-STATUS), STATUS's APPENDLIMIT item, CREATE's `(USE (…))` (CREATE-SPECIAL-USE) and `$`
//! (SEARCHRES).
//!
//! The input is one complete command as the connection hands it over (line and literals).
//! Byte 0 picks a prefix put before the rest, so that most inputs reach the extensions:
//! 0 none, 1 `a SEARCH RETURN (`, 2 `A1 UID SEARCH RETURN (`, 3 `a SEARCH `, 4 `a LIST (`,
//! 5 `L LIST "" (`, 6 `L LIST "" * RETURN (`, 7 `a LIST `. Checked:
//!
//! - nothing panics;
//! - a SEARCH cut is only ever `RETURN (opt …) ` with `opt` one of MIN, MAX, ALL, COUNT (any
//!   case), right after `tag SP [UID SP] SEARCH SP` on the first line: never anything inside a
//!   quoted string or literal, never past a line end; the options it reports are the ones it
//!   cut (at least one: `()` is ALL);
//! - an extended LIST is a single line (no literal) ending the message, rewritten as
//!   `tag LIST reference first-pattern`; it has patterns, RECURSIVEMATCH only with a criterion,
//!   every pattern is one imap-codec reads back the same from a quoted string, and the first is
//!   the one imap-codec decodes from the rewritten command;
//! - a STATUS taken over keeps everything before its final `(` and has `(MESSAGES)` in place
//!   of the list, which held APPENDLIMIT;
//! - a CREATE taken over is the message without its final ` (USE (…))`, whose attributes it reports;
//! - a FETCH taken over for PREVIEW differs from the message in one stretch of its first line,
//!   which held the word PREVIEW and is now empty or `UID`, and decodes (if at all) as a FETCH;
//! - a `$` replaced is one byte `$` of the command (after any other clause was cut) turned into
//!   `searchres::MARKER`, and the command held no marker of its own;
//! - the pre-decoder only takes over commands imap-codec rejects: whenever it cuts or refuses,
//!   imap-codec does not decode the input as it is; SEARCH, LIST and STATUS never two claim one;
//! - a plain command decodes exactly as imap-codec alone decodes it, with no extension;
//! - a cut command decodes iff imap-codec decodes what is left, and then it is a SEARCH or LIST
//!   with the same tag and carries the options.

#![no_main]

use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::mailbox::ListMailbox;
use libfuzzer_sys::fuzz_target;
use sirms_mailnode::imap::extension::{
    Decoded, Extension, ListExtended, Predecoded, SearchReturn, create, decode, esearch, list, predecode, preview,
    searchres, status,
};

const PREFIXES: [&[u8]; 8] = [
    b"",
    b"a SEARCH RETURN (",
    b"A1 UID SEARCH RETURN (",
    b"a SEARCH ",
    b"a LIST (",
    b"L LIST \"\" (",
    b"L LIST \"\" * RETURN (",
    b"a LIST ",
];

/// imap-codec's decoding of all of `bytes` as one command.
fn codec(bytes: &[u8]) -> Option<Command<'_>> {
    match CommandCodec::default().decode(bytes) {
        Ok(([], command)) => Some(command),
        _ => None,
    }
}

/// The tag of a STATUS imap-codec decodes from all of `bytes`.
fn decoded_status(bytes: &[u8]) -> Option<String> {
    let command = codec(bytes)?;
    assert!(matches!(command.body, CommandBody::Status { .. }), "{command:?}");
    Some(command.tag.inner().to_string())
}

/// Splits `bytes` at single spaces, all of them (an empty word where two spaces meet).
fn words(bytes: &[u8]) -> Vec<&[u8]> {
    bytes.split(|&b| b == b' ').collect()
}

/// Checks the clause `find` cut, `message[start..end]`, and returns the options it names.
fn check_clause(message: &[u8], start: usize, end: usize) -> SearchReturn {
    assert!(start < end && end <= message.len(), "cut {start}..{end} of {}", message.len());
    // Before the clause: `tag SP [UID SP] SEARCH SP`, all on the first line.
    let head = &message[..start];
    assert!(!head.iter().any(|&b| b == b'\r' || b == b'\n'), "cut after a line end");
    let head_words = words(head.strip_suffix(b" ").expect("clause after a space"));
    let command: &[&[u8]] = match head_words.as_slice() {
        [tag, command @ ..] => {
            assert!(!tag.is_empty() && !tag.iter().any(|&b| b == b'(' || b == b')' || b.is_ascii_control()));
            command
        }
        [] => unreachable!("split gives at least one word"),
    };
    assert!(
        matches!(command, [search] if search.eq_ignore_ascii_case(b"SEARCH"))
            || matches!(command, [uid, search] if uid.eq_ignore_ascii_case(b"UID") && search.eq_ignore_ascii_case(b"SEARCH")),
        "cut after {:?}",
        String::from_utf8_lossy(head)
    );
    // The clause: `RETURN (opt …) ` and nothing else.
    let clause = &message[start..end];
    assert!(clause.len() >= 10 && clause[..8].eq_ignore_ascii_case(b"RETURN ("), "clause {clause:?}");
    let list = clause[8..].strip_suffix(b") ").expect("clause ends with ') '");
    let mut options = SearchReturn::default();
    if !list.is_empty() {
        for word in words(list) {
            let option = match word.to_ascii_uppercase().as_slice() {
                b"MIN" => &mut options.min,
                b"MAX" => &mut options.max,
                b"ALL" => &mut options.all,
                b"COUNT" => &mut options.count,
                b"SAVE" => &mut options.save,
                _ => panic!("cut an unknown option {word:?}"),
            };
            *option = true;
        }
    }
    if options == SearchReturn::default() {
        options.all = true;
    }
    options
}

/// The pattern of a decoded LIST, as bytes.
fn pattern_bytes<'a>(pattern: &'a ListMailbox<'_>) -> &'a [u8] {
    match pattern {
        ListMailbox::Token(token) => token.as_ref(),
        ListMailbox::String(string) => string.as_ref(),
    }
}

/// Checks an extended LIST the pre-decoder rewrote as `command`.
fn check_list(message: &[u8], command: &[u8], list: &ListExtended, decoded: &Result<Decoded<'_>, &'static str>) {
    let line = message.strip_suffix(b"\r\n").expect("extended LIST ends the message with CRLF");
    assert!(!line.iter().any(|&b| b == b'\r' || b == b'\n'), "extended LIST over several lines");
    let tag = message.split(|&b| b == b' ').next().unwrap_or_default();
    let rest = command.strip_prefix(tag).and_then(|r| r.strip_prefix(b" LIST ")).expect("tag LIST …");
    let rest = rest.strip_suffix(b"\r\n").expect("rewritten command ends with CRLF");
    assert!(!rest.iter().any(|&b| b == b'\r' || b == b'\n'));
    assert!(!list.patterns.is_empty(), "no pattern");
    let s = list.selection;
    assert!(!s.recursive_match || s.subscribed || s.special_use, "RECURSIVEMATCH alone");
    for pattern in &list.patterns {
        let mut quoted = b"q LIST \"\" \"".to_vec();
        for &b in pattern {
            if b == b'"' || b == b'\\' {
                quoted.push(b'\\');
            }
            quoted.push(b);
        }
        quoted.extend_from_slice(b"\"\r\n");
        match codec(&quoted) {
            Some(Command { body: CommandBody::List { mailbox_wildcard, .. }, .. }) => {
                assert_eq!(pattern_bytes(&mailbox_wildcard), pattern.as_slice());
            }
            other => panic!("pattern {pattern:?} is no pattern for imap-codec: {other:?}"),
        }
    }
    match (decoded, codec(command)) {
        (Ok(d), Some(c)) => {
            assert_eq!(d.command, c);
            assert_eq!(d.extension, Extension::List(list.clone()));
            let CommandBody::List { mailbox_wildcard, .. } = &d.command.body else { panic!("{:?}", d.command) };
            assert_eq!(pattern_bytes(mailbox_wildcard), list.patterns[0].as_slice());
            assert_eq!(d.command.tag.inner().as_bytes(), tag);
        }
        (Err(_), None) => {}
        (d, c) => panic!("decode {d:?} but imap-codec on the rewritten command {c:?}"),
    }
}

/// `rewritten` is `original` with some bytes `$` turned into the marker, and `original` holds
/// no marker of its own.
fn check_dollars(original: &[u8], rewritten: &[u8]) {
    let marker = searchres::MARKER;
    assert!(!original.windows(marker.len()).any(|w| w == marker));
    let (mut i, mut j, mut replaced) = (0, 0, 0);
    while i < original.len() {
        if original[i] == b'$' && rewritten[j..].starts_with(marker) {
            i += 1;
            j += marker.len();
            replaced += 1;
        } else {
            assert_eq!(original[i], rewritten[j]);
            i += 1;
            j += 1;
        }
    }
    assert_eq!(j, rewritten.len());
    assert!(replaced > 0);
}

/// The PREVIEW cut: `message` and `rewritten` share a prefix and a suffix around one stretch,
/// on the first line, that held the word PREVIEW and is now nothing or `UID`.
fn check_preview_cut(message: &[u8], rewritten: &[u8]) {
    let prefix = message.iter().zip(rewritten).take_while(|(a, b)| a == b).count();
    let suffix = message[prefix..].iter().rev().zip(rewritten[prefix..].iter().rev()).take_while(|(a, b)| a == b).count();
    let removed = &message[prefix..message.len() - suffix];
    let put = &rewritten[prefix..rewritten.len() - suffix];
    assert!(put.is_empty() || b"UID".ends_with(put) || put.starts_with(b"U"), "put {put:?}");
    let line_end = message.iter().position(|&b| b == b'\r' || b == b'\n').unwrap_or(message.len());
    assert!(prefix + removed.len() <= line_end, "cut past the first line");
    let window = &message[prefix.saturating_sub(7)..(message.len() - suffix + 7).min(message.len())];
    assert!(window.windows(7).any(|w| w.eq_ignore_ascii_case(b"PREVIEW")), "no PREVIEW where the cut was");
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let mut message = PREFIXES[usize::from(selector % 8)].to_vec();
    message.extend_from_slice(rest);
    let message = message.as_slice();

    let found = esearch::find(message);
    let listed = list::find(message);
    let statused = status::find(message);
    let created = create::find(message);
    let previewed = preview::find(message);
    let claims = [found.is_some(), listed.is_some(), statused.is_some(), created.is_some(), previewed.is_some()];
    assert!(claims.iter().filter(|c| **c).count() <= 1, "two extensions claim the command: {claims:?}");
    if let Some(Ok((command, items))) = &statused {
        assert!(items.append_limit);
        // The list's `(` is the message's last one: its items and what follows hold none.
        let open = message.iter().rposition(|&b| b == b'(').expect("a STATUS taken over has an item list");
        assert_eq!(command[..open], message[..open]);
        assert!(command[open..].starts_with(b"(MESSAGES)"), "{command:?}");
        match (&decoded_status(command), decode(message)) {
            (Some(tag), Ok(d)) => {
                assert_eq!(d.command.tag.inner(), tag);
                assert_eq!(d.extension, Extension::Status(items.clone()));
            }
            (None, Err(_)) => {}
            (c, d) => panic!("imap-codec on the rest {c:?} but decode {d:?}"),
        }
    }
    let predecoded = predecode(message);
    let decoded = decode(message);
    if predecoded != Predecoded::Plain {
        assert!(codec(message).is_none(), "imap-codec decodes a command the pre-decoder took: {predecoded:?}");
    }
    if let Some(created) = &created {
        match (created, &predecoded) {
            (Ok((rewritten, uses)), Predecoded::Cut { command, extension, .. }) => {
                assert_eq!(rewritten, command);
                let body = command.len() - if command.ends_with(b"\r\n") { 2 } else { 1 };
                assert_eq!(message[..body], command[..body]);
                assert!(message[body..].len() > command[body..].len());
                assert_eq!(*extension, Extension::CreateUse(uses.clone()));
            }
            (Err(text), Predecoded::Invalid(invalid)) => {
                assert_eq!(text, invalid);
                assert_eq!(decoded.as_ref().err(), Some(text));
            }
            (created, predecoded) => panic!("find {created:?} but predecode {predecoded:?}"),
        }
        return;
    }
    if let Some(previewed) = &previewed {
        match (previewed, &predecoded) {
            (Ok((rewritten, asked)), Predecoded::Cut { command, extension, saved_result }) => {
                if *saved_result {
                    check_dollars(rewritten, command);
                } else {
                    assert_eq!(rewritten, command);
                }
                assert_eq!(*extension, Extension::Preview(asked.clone()));
                check_preview_cut(message, rewritten);
                match (&decoded, codec(command)) {
                    (Ok(d), Some(c)) => {
                        assert_eq!(d.command, c);
                        assert_eq!(d.extension, *extension);
                        assert!(matches!(d.command.body, CommandBody::Fetch { .. }), "{:?}", d.command);
                    }
                    (Err(_), None) => {}
                    (d, c) => panic!("decode {d:?} but imap-codec on the rest {c:?}"),
                }
            }
            (Ok(_), Predecoded::Invalid(text)) => assert_eq!(*text, searchres::MARKER_USED),
            (Err(text), Predecoded::Invalid(invalid)) => {
                assert_eq!(text, invalid);
                assert_eq!(decoded.as_ref().err(), Some(text));
            }
            (previewed, predecoded) => panic!("find {previewed:?} but predecode {predecoded:?}"),
        }
        return;
    }
    if statused.is_some() {
        match (&statused, &predecoded) {
            (Some(Ok((rewritten, items))), Predecoded::Cut { command, extension, .. }) => {
                assert_eq!(rewritten, command);
                assert_eq!(*extension, Extension::Status(items.clone()));
            }
            (Some(Err(text)), Predecoded::Invalid(invalid)) => {
                assert_eq!(text, invalid);
                assert_eq!(decoded.as_ref().err(), Some(text));
            }
            (statused, predecoded) => panic!("find {statused:?} but predecode {predecoded:?}"),
        }
        return;
    }
    match (&found, &listed, &predecoded) {
        (None, None, Predecoded::Plain) => {
            // Plain commands are imap-codec's alone.
            // … but for an APPEND of several messages, which `imap_multiappend` checks.
            match (&decoded, codec(message)) {
                (Ok(d), Some(c)) => {
                    assert_eq!(d.command, c);
                    assert_eq!(d.extension, Extension::None);
                }
                (Ok(d), None) => assert!(matches!(d.extension, Extension::MultiAppend(_)), "{d:?}"),
                (Err(_), None) => {}
                (d, c) => panic!("decode {d:?} but imap-codec {c:?}"),
            }
        }
        (None, None, Predecoded::Cut { command, extension: Extension::None, saved_result: true }) => {
            check_dollars(message, command);
            match (&decoded, codec(command)) {
                (Ok(d), Some(c)) => {
                    assert_eq!(d.command, c);
                    assert!(d.saved_result && d.extension == Extension::None);
                }
                (Err(_), None) => {}
                (d, c) => panic!("decode {d:?} but imap-codec on the rewritten command {c:?}"),
            }
        }
        (None, None, Predecoded::Invalid(text)) => {
            assert_eq!(*text, searchres::MARKER_USED);
            assert_eq!(searchres::find(message), Some(Err(searchres::MARKER_USED)));
        }
        (Some(Ok((range, options))), None, Predecoded::Cut { command, extension, saved_result }) => {
            assert_eq!(check_clause(message, range.start, range.end), *options);
            assert_eq!(*extension, Extension::SearchReturn(*options));
            let mut left = message[..range.start].to_vec();
            left.extend_from_slice(&message[range.end..]);
            if *saved_result {
                check_dollars(&left, command);
            } else {
                assert_eq!(command, &left);
            }
            match (&decoded, codec(command)) {
                (Ok(d), Some(c)) => {
                    assert_eq!(d.command, c);
                    assert_eq!(d.extension, *extension);
                    assert!(matches!(d.command.body, CommandBody::Search { .. }), "{:?}", d.command);
                    let tag = message.split(|&b| b == b' ').next().unwrap_or_default();
                    assert_eq!(d.command.tag.inner().as_bytes(), tag);
                }
                (Err(_), None) => {}
                (d, c) => panic!("decode {d:?} but imap-codec on the rest {c:?}"),
            }
        }
        (None, Some(Ok((rewritten, list))), Predecoded::Cut { command, extension, .. }) => {
            assert_eq!(rewritten, command);
            assert_eq!(*extension, Extension::List(list.clone()));
            check_list(message, command, list, &decoded);
        }
        (Some(Ok(_)), None, Predecoded::Invalid(text)) => assert_eq!(*text, searchres::MARKER_USED),
        (Some(Err(text)), None, Predecoded::Invalid(invalid))
        | (None, Some(Err(text)), Predecoded::Invalid(invalid)) => {
            assert_eq!(text, invalid);
            assert_eq!(decoded.as_ref().err(), Some(text));
        }
        (found, listed, predecoded) => panic!("find {found:?} and {listed:?} but predecode {predecoded:?}"),
    }
});
