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
    let mut hops = 0;
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            // The empty line that ends the header section.
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            // A folded continuation of the field before.
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        // RFC 5322 §4.5 (obsolete syntax) allows blanks between the name and the colon.
        let name = line[..colon].trim_ascii_end();
        if HOP_FIELDS.iter().any(|field| name.eq_ignore_ascii_case(field)) {
            hops += 1;
            if hops > stop_after {
                break;
            }
        }
    }
    hops
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
}
