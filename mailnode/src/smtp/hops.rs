//! Mail loops caught by counting hops (RFC 5321 §6.3): every MTA a message passes adds a
//! `Received:` header, and final delivery agents add `Delivered-To:`. A message that comes
//! back around a forwarding loop carries more of them each time, so past a limit (Postfix's
//! `hopcount_limit`, 50) it is refused with `554 5.4.6` instead of circling for ever.
//!
//! Only the header section counts: a forwarded message quoted in the body is not a hop.

/// The trace fields that count as hops, lower-case.
const HOP_FIELDS: [&[u8]; 2] = [b"received", b"delivered-to"];

/// The number of hop fields in `message`'s header section, counting no further than
/// `stop_after + 1` (enough to know the limit is passed, without reading every header of a
/// message that has thousands).
pub fn count(message: &[u8], stop_after: usize) -> usize {
    let mut counter = Counter::new(stop_after);
    counter.feed(message);
    counter.hops()
}

/// [`count`] over a message that comes in pieces (a large one is spilled to disk as it
/// arrives): the same answer however it is cut, since it reads byte by byte and keeps only
/// where it is in the current line.
#[derive(Debug, Clone)]
pub struct Counter {
    stop_after: usize,
    hops: usize,
    /// The header section ended, or the count passed `stop_after`.
    done: bool,
    line: Line,
}

/// Where the counter is in the current line.
#[derive(Debug, Clone, Copy)]
enum Line {
    /// At its start.
    Start,
    /// After a lone CR at its start (a CRLF line is the empty line that ends the header).
    Cr,
    /// In a field name: how many octets of it, which hop fields it still matches, and whether
    /// blanks followed it (the name is trimmed at its end: RFC 5322 §4.5's obsolete syntax).
    Name { len: usize, matches: [bool; 2], blanks: bool },
    /// Past the colon, or a continuation or a line that names no hop field: up to its end.
    Rest,
}

impl Counter {
    /// A counter that stops past `stop_after` hops.
    pub fn new(stop_after: usize) -> Counter {
        Counter { stop_after, hops: 0, done: false, line: Line::Start }
    }

    /// The hops counted so far.
    pub fn hops(&self) -> usize {
        self.hops
    }

    /// Counts on through the next piece of the message.
    pub fn feed(&mut self, piece: &[u8]) {
        for &b in piece {
            if self.done {
                return;
            }
            self.step(b);
        }
    }

    fn step(&mut self, b: u8) {
        if b == b'\n' {
            if matches!(self.line, Line::Start | Line::Cr) {
                // The empty line that ends the header section.
                self.done = true;
            }
            self.line = Line::Start;
            return;
        }
        self.line = match self.line {
            // A folded continuation of the field before.
            Line::Start if b == b' ' || b == b'\t' => Line::Rest,
            Line::Start if b == b'\r' => Line::Cr,
            Line::Start => Line::Name { len: 0, matches: [true; 2], blanks: false }.next(b),
            Line::Cr => Line::Name { len: 0, matches: [true; 2], blanks: true }.next(b),
            Line::Name { .. } if b == b':' => {
                if self.line.names_a_hop_field() {
                    self.hops += 1;
                    self.done = self.hops > self.stop_after;
                }
                Line::Rest
            }
            name @ Line::Name { .. } => name.next(b),
            Line::Rest => Line::Rest,
        };
    }
}

impl Line {
    /// The name state after one more octet before the colon.
    fn next(self, b: u8) -> Line {
        let Line::Name { len, matches, blanks } = self else { return self };
        if matches!(b, b' ' | b'\t' | b'\x0c' | b'\r') {
            return Line::Name { len, matches, blanks: true };
        }
        let matches = std::array::from_fn(|i| {
            // A blank inside the name makes it no hop field's.
            matches[i] && !blanks && HOP_FIELDS[i].get(len) == Some(&b.to_ascii_lowercase())
        });
        Line::Name { len: len + 1, matches, blanks: false }
    }

    fn names_a_hop_field(self) -> bool {
        let Line::Name { len, matches, .. } = self else { return false };
        (0..HOP_FIELDS.len()).any(|i| matches[i] && HOP_FIELDS[i].len() == len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_trace_fields_in_the_header_only() {
        let message = b"Received: from a\r\n\tby b; date\r\nDelivered-To: x@example.test\r\n\
            RECEIVED : from c\r\nSubject: Received: not a hop\r\nX-Received: no\r\n\
            \r\nReceived: in the body\r\n";
        assert_eq!(count(message, 50), 3);
        assert_eq!(count(b"Subject: none\nReceived: bare LF\n\nReceived: body\n", 50), 1);
        assert_eq!(count(b"", 50), 0);
        assert_eq!(count(b"\r\nReceived: body only\r\n", 50), 0);
    }

    #[test]
    fn stops_just_past_the_limit() {
        let message = "Received: x\r\n".repeat(1000);
        assert_eq!(count(message.as_bytes(), 50), 51);
        assert_eq!(count(message.as_bytes(), 5000), 1000);
    }

    /// Fed in pieces of any size, the counter agrees with the count over the whole message.
    #[test]
    fn pieces_count_as_the_whole() {
        let message = b"Received: a\r\nReceived \t: b\r\n\rReceived: not\r\nX: 1\r\n Received: folded\r\n\
            DELIVERED-TO: c\r\nReceivedX: no\r\nRe ceived: no\r\nReceived\r: yes\r\n\r\nReceived: body\r\n";
        assert_eq!(count(message, 50), 4);
        for size in 1..message.len() {
            let mut counter = Counter::new(50);
            message.chunks(size).for_each(|piece| counter.feed(piece));
            assert_eq!(counter.hops(), 4, "pieces of {size}");
        }
        assert_eq!(count(b"Received: a\n\r\nReceived: b\n", 50), 1);
        assert_eq!(count(b"\rReceived: a\n\n", 50), 0);
    }
}
