//! The benchmark's messages: well-formed RFC 5322 plain text of about `--size` bytes, each
//! with its own Message-ID and the run's `X-Bench-Run` header, so a run's mail can be told
//! apart in a mailbox. The text is cheap to make: the client must not eat the CPU that the
//! servers under test share with it.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::rng::Rng;

/// Body lines made at start; each message strings together a random selection.
const POOL_LINES: usize = 512;
/// Length of a pool line, CRLF included (RFC 5322 §2.1.1 recommends at most 78 + CRLF).
const LINE_LEN: usize = 72;

const WORDS: &[&str] = &[
    "router", "node", "mailbox", "queue", "source", "address", "cluster", "message", "delivery", "storage", "policy",
    "kernel", "route", "table", "session", "reply", "header", "body", "envelope", "maildir", "fsync", "rename",
    "index", "client", "server", "packet", "hash", "weight", "health", "drain", "paper", "figure", "seven", "scale",
    "cheap", "machine", "quiet", "load", "time", "count", "north", "south", "river", "stone", "lantern", "harbour",
    "meadow", "copper", "violet", "thunder",
];

/// Makes the messages of one run.
pub struct MessageFactory {
    sender: String,
    run_id: String,
    id_domain: String,
    date: String,
    size: usize,
    pool: Vec<Vec<u8>>,
}

impl MessageFactory {
    /// Messages of about `size` bytes from `sender`, marked with `run_id` (dot-atom text, so
    /// it can sit in a Message-ID), dated `date`.
    pub fn new(sender: &str, run_id: &str, size: usize, date: SystemTime) -> MessageFactory {
        let mut rng = Rng::new(0x5152_4d53);
        let pool = (0..POOL_LINES)
            .map(|_| {
                let mut line = String::with_capacity(LINE_LEN);
                while line.len() < LINE_LEN - 2 {
                    if !line.is_empty() {
                        line.push(' ');
                    }
                    line.push_str(WORDS[rng.below(WORDS.len() as u32) as usize]);
                }
                // Cut to length; a line that now ends in a space still never starts with a dot.
                let mut line = line.into_bytes();
                line.truncate(LINE_LEN - 2);
                line.extend_from_slice(b"\r\n");
                line
            })
            .collect();
        let id_domain = match sender.rsplit_once('@') {
            Some((_, domain)) if !domain.is_empty() => domain.to_string(),
            _ => "bench.sirms.test".to_string(),
        };
        MessageFactory {
            sender: sender.to_string(),
            run_id: run_id.to_string(),
            id_domain,
            date: rfc5322_date(date),
            size,
            pool,
        }
    }

    /// Message number `seq` of the run, to `rcpt`.
    pub fn build(&self, seq: u64, rcpt: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size + LINE_LEN);
        let header = format!(
            "From: SIRMS bench <{sender}>\r\nTo: <{rcpt}>\r\nSubject: sirms bench {run} message {seq}\r\n\
             Date: {date}\r\nMessage-ID: <{run}.{seq}@{domain}>\r\nX-Bench-Run: {run}\r\nX-Bench-Tag: t{tag}\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n\
             bench message {seq} token zq{token:03}zq\r\n",
            sender = self.sender,
            run = self.run_id,
            date = self.date,
            domain = self.id_domain,
            tag = seq % 10,
            token = seq % 100,
        );
        out.extend_from_slice(header.as_bytes());
        let mut rng = Rng::new(seq);
        while self.size.saturating_sub(out.len()) >= LINE_LEN {
            out.extend_from_slice(&self.pool[rng.below(POOL_LINES as u32) as usize]);
        }
        // The rest as one shorter line; one or two bytes short of `size` stay short.
        let rest = self.size.saturating_sub(out.len());
        if rest > 2 {
            let line = &self.pool[rng.below(POOL_LINES as u32) as usize];
            out.extend_from_slice(&line[..rest - 2]);
            out.extend_from_slice(b"\r\n");
        }
        out
    }
}

/// `Tue, 14 Nov 2023 22:13:20 +0000` (RFC 5322 §3.3), in UTC.
pub fn rfc5322_date(at: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let secs = at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = secs / 86_400;
    let leap = |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let (mut year, mut left) = (1970, days);
    // At most one pass per year since 1970.
    while left >= if leap(year) { 366 } else { 365 } {
        left -= if leap(year) { 366 } else { 365 };
        year += 1;
    }
    let lengths = [31, if leap(year) { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut month = 0;
    while left >= lengths[month] {
        left -= lengths[month];
        month += 1;
    }
    let time = secs % 86_400;
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        left + 1,
        MONTHS[month],
        year,
        time / 3600,
        time / 60 % 60,
        time % 60
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(at(0)), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(at(1_700_000_000)), "Tue, 14 Nov 2023 22:13:20 +0000");
        assert_eq!(rfc5322_date(at(951_782_400)), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(rfc5322_date(at(951_868_799)), "Tue, 29 Feb 2000 23:59:59 +0000");
        assert_eq!(rfc5322_date(at(4_102_444_800)), "Fri, 01 Jan 2100 00:00:00 +0000");
    }

    #[test]
    fn messages_are_well_formed_sized_and_unique() {
        let f = MessageFactory::new("bench@example.test", "r1", 4096, at(1_700_000_000));
        let a = f.build(1, "u1@example.test");
        let b = f.build(2, "u1@example.test");
        assert_eq!(a.len(), 4096);
        assert_eq!(b.len(), 4096);
        let text = String::from_utf8(a.clone()).unwrap();
        let (header, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(header.contains("\r\nMessage-ID: <r1.1@example.test>\r\n"), "{header}");
        assert!(header.contains("\r\nX-Bench-Run: r1\r\n"));
        assert!(header.contains("\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\n"));
        assert!(header.starts_with("From: SIRMS bench <bench@example.test>\r\nTo: <u1@example.test>\r\n"));
        assert!(b.windows(20).any(|w| w == b"<r1.2@example.test>\r"));
        assert!(body.ends_with("\r\n"));
        for line in text.split("\r\n") {
            assert!(line.len() <= 78, "{line:?}");
            assert!(!line.contains(['\r', '\n']), "bare line end in {line:?}");
            assert!(!line.starts_with('.'));
            assert!(line.is_ascii());
        }
        // Different messages, different text.
        assert_ne!(a[a.len() - 500..], b[b.len() - 500..]);
        // Tiny sizes give the header and the first line, never less.
        assert!(MessageFactory::new("bench@example.test", "r1", 10, at(0)).build(1, "x@y").ends_with(b"zq001zq\r\n"));
    }

    #[test]
    fn every_size_is_met_or_within_two_bytes() {
        let f = MessageFactory::new("bench", "r", 0, at(0));
        let header_len = f.build(5, "u@x").len();
        for size in header_len..header_len + 300 {
            let f = MessageFactory::new("bench", "r", size, at(0));
            let m = f.build(5, "u@x");
            assert!(m.len() <= size && size - m.len() <= 2, "size {size}: got {}", m.len());
            assert!(m.ends_with(b"\r\n"));
        }
        assert!(String::from_utf8(f.build(1, "u@x")).unwrap().contains("Message-ID: <r.1@bench.sirms.test>"));
    }
}
