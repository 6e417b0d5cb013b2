//! APPEND with several messages, MULTIAPPEND (RFC 3502), which imap-codec does not know.
//!
//! ```text
//! append         = "APPEND" SP mailbox 1*append-message
//! append-message = append-opts SP append-data
//! append-opts    = [SP flag-list] [SP date-time]
//! ```
//!
//! imap-codec decodes an APPEND of one message. [`find`] is only asked about an APPEND it
//! refused; it cuts the command at the end of each literal ([`crate::imap::literal::spans`]) and
//! has imap-codec decode every piece as an APPEND of its own: the first as the command up to its
//! message, each further one as `t APPEND INBOX` followed by its ` [flags] [date] literal`. So
//! the flags, dates and literals are imap-codec's reading, and only the cutting is ours.
//! Flags and dates are atoms, parentheses and quoted strings, never literals: every literal
//! after the first message's is a message.

use std::ops::Range;

use bytes::Bytes;
use imap_types::IntoStatic;
use imap_types::command::{Command, CommandBody};
use imap_types::datetime::DateTime;
use imap_types::extensions::binary::LiteralOrLiteral8;
use imap_types::flag::Flag;

use super::{SYNTAX_ERROR, Scanner, whole};
use crate::imap::literal;

/// One message of a MULTIAPPEND.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendMessage {
    pub flags: Vec<Flag<'static>>,
    pub date: Option<DateTime>,
    /// The message as sent; empty when it went to a spill file (see `literal_at`).
    pub bytes: Bytes,
    /// Where the message's literal starts in the command as framed: the key of a literal the
    /// connection wrote to a spill file, which left an empty literal here.
    pub literal_at: usize,
}

/// The messages of an APPEND that has more than one, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiAppend {
    pub messages: Vec<AppendMessage>,
}

/// The placeholder command each further message is decoded after.
const PIECE_HEAD: &[u8] = b"t APPEND INBOX";

/// Reads `tag APPEND mailbox message message…`, a command imap-codec refused.
///
/// `None`: not an APPEND of several messages (imap-codec's refusal stands). Otherwise the
/// command as an APPEND of its first message, with every message, or the text of the BAD.
pub fn find(message: &[u8]) -> Option<Result<(Command<'static>, MultiAppend), &'static str>> {
    let mut s = Scanner::new(message);
    let tag = s.word();
    if tag.is_empty() || !s.take(b' ') || !s.keyword(b"APPEND") {
        return None;
    }
    let spans = literal::spans(message);
    // The mailbox may be a literal itself: then the first message's is the second.
    let (first, command) = spans.iter().take(2).enumerate().find_map(|(i, span)| {
        let head = [&message[..span.end], b"\r\n"].concat();
        let command = whole(&head).ok()?.into_static();
        matches!(command.body, CommandBody::Append { .. }).then_some((i, command))
    })?;
    let rest = &spans[first + 1..];
    if rest.is_empty() {
        return None;
    }
    let last = rest.last().map_or(0, |span| span.end);
    if !matches!(&message[last..], b"\r\n" | b"\n") {
        return Some(Err(SYNTAX_ERROR));
    }
    let CommandBody::Append { flags, date, .. } = &command.body else { return None };
    let mut messages = vec![AppendMessage {
        flags: flags.clone(),
        date: date.clone(),
        bytes: Bytes::copy_from_slice(&message[spans[first].clone()]),
        literal_at: spans[first].start,
    }];
    let mut from = spans[first].end;
    for span in rest {
        match piece(message, from, span.clone()) {
            Some(next) => messages.push(next),
            None => return Some(Err(SYNTAX_ERROR)),
        }
        from = span.end;
    }
    Some(Ok((command, MultiAppend { messages })))
}

/// The message whose options start at `from` and whose literal is `span`, as imap-codec reads
/// it after [`PIECE_HEAD`].
fn piece(message: &[u8], from: usize, span: Range<usize>) -> Option<AppendMessage> {
    let options = &message[from..span.end];
    if !options.starts_with(b" ") {
        return None;
    }
    let bytes = [PIECE_HEAD, options, b"\r\n"].concat();
    let command = whole(&bytes).ok()?;
    let CommandBody::Append { flags, date, message: data, .. } = command.body else { return None };
    // imap-codec's literal must be exactly the span cut out: nothing of the options in it.
    let decoded_len = match &data {
        LiteralOrLiteral8::Literal(literal) => literal.as_ref().len(),
        LiteralOrLiteral8::Literal8(literal) => literal.data.as_ref().len(),
    };
    if decoded_len != span.len() {
        return None;
    }
    Some(AppendMessage {
        flags: flags.into_iter().map(IntoStatic::into_static).collect(),
        date,
        bytes: Bytes::copy_from_slice(&message[span.clone()]),
        literal_at: span.start,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(message: &[u8]) -> MultiAppend {
        match find(message) {
            Some(Ok((command, multi))) => {
                assert!(matches!(command.body, CommandBody::Append { .. }));
                multi
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn several_messages_are_read_with_their_options() {
        let message = b"a1 APPEND Drafts (\\Seen) \"07-Dec-2026 10:00:00 +0000\" {3}\r\none {3+}\r\ntwo (\\Flagged $x) ~{5}\r\nth\0ee\r\n";
        let multi = found(message);
        let texts: Vec<&[u8]> = multi.messages.iter().map(|m| m.bytes.as_ref()).collect();
        assert_eq!(texts, [&b"one"[..], b"two", b"th\0ee"]);
        assert_eq!(multi.messages[0].flags, [Flag::Seen]);
        assert!(multi.messages[0].date.is_some());
        assert!(multi.messages[1].flags.is_empty() && multi.messages[1].date.is_none());
        assert_eq!(multi.messages[2].flags.len(), 2);
        for m in &multi.messages {
            assert_eq!(&message[m.literal_at..m.literal_at + m.bytes.len()], m.bytes.as_ref());
        }
    }

    #[test]
    fn a_mailbox_literal_is_not_a_message() {
        let multi = found(b"a APPEND {6}\r\nDrafts {2}\r\nhi {2}\r\nho\r\n");
        let texts: Vec<&[u8]> = multi.messages.iter().map(|m| m.bytes.as_ref()).collect();
        assert_eq!(texts, [&b"hi"[..], b"ho"]);
    }

    #[test]
    fn single_messages_and_other_commands_are_not_taken() {
        assert!(find(b"a APPEND INBOX {2}\r\nhi\r\n").is_none());
        assert!(find(b"a LOGIN {2}\r\nhi {2}\r\nho\r\n").is_none());
        assert!(find(b"a APPEND INBOX\r\n").is_none());
    }

    #[test]
    fn broken_further_messages_are_bad() {
        for message in [
            &b"a APPEND INBOX {2}\r\nhi{2}\r\nho\r\n"[..],
            b"a APPEND INBOX {2}\r\nhi (\\Bogus\\) {2}\r\nho\r\n",
            b"a APPEND INBOX {2}\r\nhi \"not a date\" {2}\r\nho\r\n",
            b"a APPEND INBOX {2}\r\nhi {2}\r\nho trailing\r\n",
            b"a APPEND INBOX {2}\r\nhi {2}\r\nho {2}\r\n",
        ] {
            assert_eq!(
                find(message).map(|r| r.map(|_| ())),
                Some(Err(SYNTAX_ERROR)),
                "{}",
                String::from_utf8_lossy(message)
            );
        }
    }
}
