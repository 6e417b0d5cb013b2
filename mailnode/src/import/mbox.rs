//! mbox files, read as a stream: memory holds one message at a time, never the file.
//!
//! A message starts at a `From ` line at the start of the file or after an empty line. Lines
//! the writer escaped (`>From `, `>>From `: mboxrd) lose one `>`; in an mboxo file, where only
//! `From ` was escaped, a line that really began `>From ` loses its `>` too — the format cannot
//! tell the two apart. The `From ` line's date becomes the internal date; `Status` and
//! `X-Status` (and Dovecot's `X-Keywords`) become flags and are dropped from the message with
//! the other headers mbox writers keep for themselves (`X-UID`, `X-IMAP`, `X-IMAPbase`), as
//! an IMAP server serving the mbox would.

use std::io::BufRead;

use sirms_storage::message::MAX_MESSAGE_SIZE;
use sirms_storage::{Flags, SystemFlags};

use super::{ImportError, SourceMessage, to_crlf};
use crate::calendar;

/// Longest line kept whole; a longer one is cut into pieces of this size (they are still
/// copied, but none of them can start a message).
const MAX_LINE: usize = 64 * 1024;
/// Headers mbox writers keep for themselves.
const PRIVATE_HEADERS: [&str; 6] = ["status", "x-status", "x-keywords", "x-uid", "x-imap", "x-imapbase"];

/// One message's raw lines, before unescaping.
struct Raw {
    /// Its `From ` line.
    from: Vec<u8>,
    body: Vec<u8>,
    /// Where the `From ` line starts in the file.
    offset: u64,
    /// Over the largest message: its bytes were dropped.
    too_large: bool,
}

/// The messages of one mbox, in order.
pub struct Mbox<R> {
    reader: R,
    name: String,
    /// The `From ` line that starts the next message, once read.
    next_from: Option<Vec<u8>>,
    /// Byte offset of `next_from` in the file.
    next_offset: u64,
    offset: u64,
    started: bool,
    done: bool,
}

impl<R: BufRead> Mbox<R> {
    /// Reads `reader`, named `name` in messages' origins.
    pub fn new(reader: R, name: impl Into<String>) -> Mbox<R> {
        Mbox { reader, name: name.into(), next_from: None, next_offset: 0, offset: 0, started: false, done: false }
    }

    /// One line (with its `\n`), at most [`MAX_LINE`] bytes; `None` at the end.
    fn line(&mut self) -> Result<Option<(Vec<u8>, bool)>, ImportError> {
        let mut line = Vec::new();
        loop {
            let buf = self.reader.fill_buf().map_err(|e| ImportError::io(self.name.as_ref(), e))?;
            if buf.is_empty() {
                break;
            }
            let room = MAX_LINE - line.len();
            let (take, ended) = match buf.iter().take(room).position(|&b| b == b'\n') {
                Some(at) => (at + 1, true),
                None => (buf.len().min(room), false),
            };
            line.extend_from_slice(&buf[..take]);
            self.reader.consume(take);
            if ended || line.len() >= MAX_LINE {
                let whole = ended;
                self.offset += line.len() as u64;
                return Ok(Some((line, whole)));
            }
        }
        self.offset += line.len() as u64;
        Ok((!line.is_empty()).then_some((line, true)))
    }

    /// Reads up to the next message's `From ` line; the message's raw lines.
    fn next_raw(&mut self) -> Result<Option<Raw>, ImportError> {
        if !self.started {
            self.started = true;
            // Whatever precedes the first `From ` line is not a message.
            let mut at_start = true;
            while let Some((line, whole)) = self.line()? {
                if at_start && line.starts_with(b"From ") {
                    self.next_offset = self.offset - line.len() as u64;
                    self.next_from = Some(line);
                    break;
                }
                at_start = whole && (line == b"\n" || line == b"\r\n");
            }
        }
        let Some(from) = self.next_from.take() else {
            self.done = true;
            return Ok(None);
        };
        let offset = self.next_offset;
        let mut body = Vec::new();
        let mut too_large = false;
        let (mut line_start, mut previous_empty) = (true, false);
        while let Some((line, whole)) = self.line()? {
            if line_start && previous_empty && line.starts_with(b"From ") {
                self.next_offset = self.offset - line.len() as u64;
                self.next_from = Some(line);
                break;
            }
            previous_empty = line_start && whole && (line == b"\n" || line == b"\r\n");
            if body.len() as u64 + line.len() as u64 > MAX_MESSAGE_SIZE {
                too_large = true;
                body.clear();
            }
            if !too_large {
                body.extend_from_slice(&line);
            }
            line_start = whole;
        }
        // The empty line before the next `From ` belongs to the separator.
        if self.next_from.is_some() || body.ends_with(b"\n\n") || body.ends_with(b"\r\n\r\n") {
            if body.ends_with(b"\r\n") {
                body.truncate(body.len() - 2);
            } else if body.ends_with(b"\n") {
                body.truncate(body.len() - 1);
            }
        }
        Ok(Some(Raw { from, body, offset, too_large }))
    }
}

impl<R: BufRead> Iterator for Mbox<R> {
    type Item = Result<SourceMessage, ImportError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let Raw { from, body: raw, offset, too_large } = match self.next_raw() {
            Ok(Some(found)) => found,
            Ok(None) => return None,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        let origin = format!("{} at byte {offset}", self.name);
        if too_large {
            return Some(Err(ImportError::TooLarge { origin, size: MAX_MESSAGE_SIZE + 1 }));
        }
        let (bytes, flags) = unpack(&raw);
        Some(Ok(SourceMessage {
            bytes: to_crlf(bytes),
            flags,
            internal_date: from_line_date(&from),
            uid: None,
            origin,
        }))
    }
}

/// The message without mbox escaping and private headers, and the flags those headers gave.
pub fn unpack(raw: &[u8]) -> (Vec<u8>, Flags) {
    let mut out = Vec::with_capacity(raw.len());
    let mut system = SystemFlags::empty();
    let mut keywords = Vec::new();
    let mut in_header = true;
    let mut skipping = false;
    for line in raw.split_inclusive(|&b| b == b'\n') {
        if in_header {
            if line == b"\n" || line == b"\r\n" {
                in_header = false;
            } else if skipping && (line.starts_with(b" ") || line.starts_with(b"\t")) {
                continue;
            } else {
                skipping = false;
                if let Some((name, value)) = header(line)
                    && PRIVATE_HEADERS.contains(&name.as_str())
                {
                    skipping = true;
                    match name.as_str() {
                        "status" => system = system.union(status_flags(&value, false)),
                        "x-status" => system = system.union(status_flags(&value, true)),
                        "x-keywords" => keywords
                            .extend(value.split([' ', ',']).filter(|k| Flags::valid_keyword(k)).map(str::to_string)),
                        _ => {}
                    }
                    continue;
                }
            }
        }
        let unescaped = match line.iter().position(|&b| b != b'>') {
            Some(n) if n > 0 && line[n..].starts_with(b"From ") => &line[1..],
            _ => line,
        };
        out.extend_from_slice(unescaped);
    }
    keywords.sort();
    keywords.dedup();
    (out, Flags::new(system, keywords))
}

fn header(line: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(line).ok()?;
    let (name, value) = text.split_once(':')?;
    (!name.is_empty() && !name.contains(' ')).then(|| (name.to_ascii_lowercase(), value.trim().to_string()))
}

/// `Status: RO` (R: seen) and `X-Status: AFTD` (answered, flagged, draft, deleted).
fn status_flags(value: &str, extended: bool) -> SystemFlags {
    value.chars().fold(SystemFlags::empty(), |flags, c| {
        let flag = match (c, extended) {
            ('R', false) => SystemFlags::SEEN,
            ('A', true) => SystemFlags::ANSWERED,
            ('F', true) => SystemFlags::FLAGGED,
            ('T', true) => SystemFlags::DRAFT,
            ('D', true) => SystemFlags::DELETED,
            _ => SystemFlags::empty(),
        };
        flags.union(flag)
    })
}

/// The date of a `From sender Wed Dec  2 09:12:44 2026` line (asctime, UTC; a numeric zone
/// before or after the year is honoured); `None` when there is none.
pub fn from_line_date(line: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(line).ok()?;
    let tokens: Vec<&str> = text.split_ascii_whitespace().collect();
    // From the end: the month is the first token, after the sender, that names one.
    let month_at = (2..tokens.len()).find(|&i| calendar::month_number(tokens[i]).is_some())?;
    let month = calendar::month_number(tokens[month_at])?;
    let day: u32 = tokens.get(month_at + 1)?.parse().ok()?;
    let mut clock = tokens.get(month_at + 2)?.split(':').map(|p| p.parse::<i64>());
    let (h, m) = (clock.next()?.ok()?, clock.next()?.ok()?);
    let s = clock.next().and_then(Result::ok).unwrap_or(0);
    let rest = &tokens[month_at + 3..];
    let year: i64 = rest.iter().find_map(|t| t.parse().ok().filter(|y: &i64| (1970..=9999).contains(y)))?;
    let zone = rest.iter().find_map(|t| zone_offset(t)).unwrap_or(0);
    // F17: a clock like `-0700920090` parses as a negative hour; every field is range-checked.
    if !(1..=31).contains(&day) || !(0..=23).contains(&h) || !(0..=59).contains(&m) || !(0..=60).contains(&s) {
        return None;
    }
    Some(calendar::days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s - zone)
}

/// Seconds east of UTC of a `+hhmm`/`-hhmm` token.
fn zone_offset(token: &str) -> Option<i64> {
    let (sign, digits) = match token.as_bytes().first()? {
        b'+' => (1, &token[1..]),
        b'-' => (-1, &token[1..]),
        _ => return None,
    };
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    (n / 100 <= 23 && n % 100 <= 59).then_some(sign * ((n / 100) * 3600 + (n % 100) * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &[u8]) -> Vec<SourceMessage> {
        Mbox::new(text, "test").map(|m| m.unwrap()).collect()
    }

    #[test]
    fn splits_unescapes_and_reads_flags() {
        let text = b"From a@example.test Mon Dec  7 09:12:44 2026\n\
            Subject: one\nStatus: RO\nX-Status: AF\nX-Keywords: $Label1 Work\n\n\
            >From the start\n>>From deeper\nFrom inside a paragraph is no separator\n\n\
            From b@example.test Tue Dec  8 10:00:00 2026\nSubject: two\n\nbody\n";
        let messages = all(text);
        assert_eq!(messages.len(), 2);
        assert_eq!(
            messages[0].bytes,
            b"Subject: one\r\n\r\nFrom the start\r\n>From deeper\r\nFrom inside a paragraph is no separator\r\n"
        );
        let flags = &messages[0].flags;
        for f in [SystemFlags::SEEN, SystemFlags::ANSWERED, SystemFlags::FLAGGED] {
            assert!(flags.system.contains(f));
        }
        assert_eq!(flags.keywords, vec!["$Label1".to_string(), "Work".to_string()]);
        assert_eq!(messages[0].internal_date, Some(calendar::days_from_civil(2026, 12, 7) * 86_400 + 33_164));
        assert_eq!(messages[1].bytes, b"Subject: two\r\n\r\nbody\r\n");
        assert_eq!(messages[1].flags, Flags::default());
        assert!(messages[1].origin.contains("at byte"));
    }

    #[test]
    fn from_line_dates() {
        let base = calendar::days_from_civil(2020, 2, 29) * 86_400;
        assert_eq!(from_line_date(b"From x Sat Feb 29 01:02:03 2020\n"), Some(base + 3723));
        assert_eq!(from_line_date(b"From x Sat Feb 29 01:02:03 +0100 2020\n"), Some(base + 3723 - 3600));
        assert_eq!(from_line_date(b"From MAILER-DAEMON Sat Feb 29 01:02 2020"), Some(base + 3720));
        let f17 = b"From y Seb 28 8s:at Feb 3 -0700920090 1:02 202 Sa\n";
        for bad in [&b"From x\n"[..], b"From x Sat Feb 32 01:02:03 2020", b"From x Feb 1 25:00:00 2020", b"\xff", f17] {
            assert_eq!(from_line_date(bad), None);
        }
    }

    #[test]
    fn garbage_before_the_first_message_and_endless_lines() {
        assert!(all(b"no mbox here\nat all\n").is_empty());
        let mut text = b"junk\n\nFrom x Mon Dec  7 09:12:44 2026\nSubject: long\n\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', 3 * MAX_LINE));
        text.extend_from_slice(b"From y is not a separator: it continues a line\n");
        let messages = all(&text);
        assert_eq!(messages.len(), 1);
        assert!(messages[0].bytes.ends_with(b"xFrom y is not a separator: it continues a line\r\n"));
    }
}
