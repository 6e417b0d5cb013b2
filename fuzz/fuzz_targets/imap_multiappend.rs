//! Fuzzes the MULTIAPPEND pre-decoder (`sirms_mailnode::imap::extension::append::find`, through
//! `extension::decode`) and the literal finder under it (`imap::literal::spans`).
//!
//! The input is one complete command as the connection hands it over (line and literals).
//! Byte 0 picks a prefix put before the rest, so that most inputs are APPENDs: 0 none,
//! 1 `a APPEND INBOX `, 2 `a APPEND INBOX {3}\r\none `, 3 `a APPEND {5}\r\nINBOX (\Seen) {2}\r\nhi`.
//! Checked:
//!
//! - nothing panics;
//! - every span `spans` finds lies within the input, after a line that announces exactly its
//!   length, and the spans are in order without overlap;
//! - a command imap-codec decodes as it is decodes the same through `decode`, with no
//!   extension (MULTIAPPEND only takes over what imap-codec refuses);
//! - a MULTIAPPEND found has at least two messages, each one's octets exactly a literal of the
//!   input at its `literal_at`, in order; the command is an APPEND with the input's tag and the
//!   first message's flags and date; after the last literal comes only the line end.

#![no_main]

use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::{Command, CommandBody};
use libfuzzer_sys::fuzz_target;
use sirms_mailnode::imap::extension::{Extension, decode};
use sirms_mailnode::imap::literal::{spans, trailing_literal};

const PREFIXES: [&[u8]; 4] =
    [b"", b"a APPEND INBOX ", b"a APPEND INBOX {3}\r\none ", b"a APPEND {5}\r\nINBOX (\\Seen) {2}\r\nhi"];

fn codec(bytes: &[u8]) -> Option<Command<'_>> {
    match CommandCodec::default().decode(bytes) {
        Ok(([], command)) => Some(command),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let mut message = PREFIXES[usize::from(selector % 4)].to_vec();
    message.extend_from_slice(rest);
    let message = message.as_slice();

    let found = spans(message);
    let mut previous_end = 0;
    for span in &found {
        assert!(span.start >= previous_end && span.end <= message.len() && span.start <= span.end);
        let line_start = message[..span.start - 1].iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        let line_start = line_start.max(previous_end);
        let (_, length) = trailing_literal(&message[line_start..span.start]).expect("a span after an announcement");
        assert_eq!(length, span.len() as u64);
        previous_end = span.end;
    }

    let decoded = decode(message);
    if let Some(command) = codec(message) {
        let d = decoded.as_ref().expect("decode takes what imap-codec takes");
        assert_eq!(d.command, command);
        return;
    }
    let Ok(d) = decoded else { return };
    let Extension::MultiAppend(multi) = &d.extension else { return };
    assert!(multi.messages.len() >= 2);
    let CommandBody::Append { flags, date, .. } = &d.command.body else { panic!("{:?}", d.command) };
    let tag = message.split(|&b| b == b' ').next().unwrap_or_default();
    assert_eq!(d.command.tag.inner().as_bytes(), tag);
    assert_eq!(&multi.messages[0].flags, flags);
    assert_eq!(&multi.messages[0].date, date);
    let mut at = 0;
    for m in &multi.messages {
        assert!(m.literal_at >= at);
        let span = found.iter().find(|s| s.start == m.literal_at).expect("a message is a literal");
        assert_eq!(&message[span.clone()], m.bytes.as_ref());
        at = span.end;
    }
    assert!(matches!(&message[at..], b"\r\n" | b"\n"), "after the last message");
});
