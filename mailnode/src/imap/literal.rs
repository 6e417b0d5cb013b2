//! Literal announcements (`{n}`, `{n+}`, `~{n}`) at the ends of command lines, read the way
//! the fragmentizer frames them: the connection uses them to see lengths the fragmentizer
//! does not, and the MULTIAPPEND pre-decoder to find where each message of a framed command
//! lies.

use std::ops::Range;

use imap_types::core::LiteralMode;

/// The literal announced at the end of `line` (`{n}` or `{n+}`, then CRLF or LF): its mode and
/// length, saturated to `u64`. Unlike the fragmentizer's, this also sees lengths past `u32::MAX`.
pub fn trailing_literal(line: &[u8]) -> Option<(LiteralMode, u64)> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_suffix(b"}")?;
    let (line, mode) = match line.strip_suffix(b"+") {
        Some(line) => (line, LiteralMode::NonSync),
        None => (line, LiteralMode::Sync),
    };
    let digits = line.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    let (head, digits) = line.split_at(line.len() - digits);
    if digits.is_empty() || head.last() != Some(&b'{') {
        return None;
    }
    let length = digits.iter().fold(0u64, |n, &d| n.saturating_mul(10).saturating_add(u64::from(d - b'0')));
    Some((mode, length))
}

/// Where the literals of one complete, framed command lie, in order. A line that ends in an
/// announcement is followed by that many octets of literal, then the next line: quoted strings
/// cannot hold a line end, so an announcement is never inside one. A literal the command is too
/// short for ends the list (a command the fragmentizer framed never has one).
pub fn spans(message: &[u8]) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut pos = 0;
    while let Some(offset) = message[pos..].iter().position(|&b| b == b'\n') {
        let line_end = pos + offset + 1;
        let Some((_, length)) = trailing_literal(&message[pos..line_end]) else {
            pos = line_end;
            continue;
        };
        let Some(end) = usize::try_from(length).ok().and_then(|n| line_end.checked_add(n)) else { break };
        if end > message.len() {
            break;
        }
        spans.push(line_end..end);
        pos = end;
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_literal_sees_every_length() {
        assert_eq!(trailing_literal(b"a LOGIN {5}\r\n"), Some((LiteralMode::Sync, 5)));
        assert_eq!(trailing_literal(b"a LOGIN {5+}\n"), Some((LiteralMode::NonSync, 5)));
        assert_eq!(trailing_literal(b"a APPEND x ~{5}\n"), Some((LiteralMode::Sync, 5)));
        assert_eq!(trailing_literal(b"{10737418240}\r\n"), Some((LiteralMode::Sync, 10_737_418_240)));
        assert_eq!(
            trailing_literal(&[b"{".as_slice(), &[b'9'; 40], b"+}\r\n"].concat()),
            Some((LiteralMode::NonSync, u64::MAX))
        );
        for no in [&b"a NOOP\r\n"[..], b"a {5}", b"a {}\r\n", b"a {+}\r\n", b"a 5}\r\n", b"a {5a}\r\n", b"a {5}\r\r\n"]
        {
            assert_eq!(trailing_literal(no), None, "{}", String::from_utf8_lossy(no));
        }
    }

    #[test]
    fn spans_step_over_literal_contents() {
        // The first literal holds what looks like an announcement and a line end: it is data.
        let message = b"a APPEND {5}\r\nINBOX {9}\r\nx {3}\r\nyz (\\Seen) ~{2+}\r\nab\r\n";
        let spans = spans(message);
        let texts: Vec<&[u8]> = spans.iter().map(|s| &message[s.clone()]).collect();
        assert_eq!(texts, [&b"INBOX"[..], b"x {3}\r\nyz", b"ab"]);
        assert!(super::spans(b"a APPEND INBOX {10}\r\nshort\r\n").is_empty());
        assert!(super::spans(b"a NOOP\r\n").is_empty());
    }
}
