//! Byte-stuffing of message bodies for dot-terminated transfers: POP3 multi-line responses
//! (RFC 1939 §3) and outbound SMTP DATA (RFC 5321 §4.5.2).

/// What a CR that is not followed by LF means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoneCr {
    /// Content, passed through (POP3: the client gets the message as stored).
    Keep,
    /// A line end (SMTP: a bare CR is what smuggling attacks hide behind, so another server
    /// must only ever see CRLF).
    LineEnd,
}

/// Appends `body` to `out` dot-stuffed, with every line ending in CRLF, but without the terminating `.\r\n`.
///
/// Lines starting with `.` get a second `.` so the client cannot mistake them for the terminator.
/// Stored messages may use bare LF (a Maildir written by other software, mail from a sloppy client): each bare LF
/// becomes CRLF on the wire, because the protocol requires CRLF and clients undo the stuffing line by line.
/// A body whose last line lacks an ending gets a CRLF, so the caller's `.\r\n` always starts a line of its own.
/// An empty body adds nothing. Lone CRs inside a line are handled as `lone_cr` says.
pub fn dot_stuff(body: &[u8], out: &mut Vec<u8>, lone_cr: LoneCr) {
    // Each line may grow by a stuffed dot and a CR; reserving for the common case of few such lines avoids
    // repeated reallocation on large messages.
    out.reserve(body.len() + 3);
    for line in body.split_inclusive(|&b| b == b'\n') {
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        match lone_cr {
            LoneCr::Keep => push_line(content, out),
            LoneCr::LineEnd => content.split(|&b| b == b'\r').for_each(|part| push_line(part, out)),
        }
    }
}

fn push_line(content: &[u8], out: &mut Vec<u8>) {
    if content.first() == Some(&b'.') {
        out.push(b'.');
    }
    out.extend_from_slice(content);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::{LoneCr, dot_stuff};

    fn stuffed(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        dot_stuff(body, &mut out, LoneCr::Keep);
        out
    }

    #[test]
    fn empty_body_adds_nothing() {
        assert_eq!(stuffed(b""), b"");
    }

    #[test]
    fn crlf_body_passes_through() {
        assert_eq!(stuffed(b"Subject: x\r\n\r\nhello\r\n"), b"Subject: x\r\n\r\nhello\r\n");
    }

    #[test]
    fn leading_dots_are_doubled() {
        assert_eq!(stuffed(b".\r\n..x\r\na.b\r\n.end"), b"..\r\n...x\r\na.b\r\n..end\r\n");
    }

    #[test]
    fn first_line_dot_is_doubled() {
        assert_eq!(stuffed(b".hidden\r\n"), b"..hidden\r\n");
    }

    #[test]
    fn missing_final_crlf_is_added() {
        assert_eq!(stuffed(b"a\r\nb"), b"a\r\nb\r\n");
        assert_eq!(stuffed(b"x"), b"x\r\n");
    }

    #[test]
    fn bare_lf_becomes_crlf() {
        assert_eq!(stuffed(b"a\nb\n\n.c\n"), b"a\r\nb\r\n\r\n..c\r\n");
    }

    #[test]
    fn lone_cr_is_kept() {
        assert_eq!(stuffed(b"a\rb\r\n"), b"a\rb\r\n");
        assert_eq!(stuffed(b"a\r\r\n"), b"a\r\r\n");
    }

    #[test]
    fn trailing_cr_without_lf_gets_a_full_line_ending() {
        assert_eq!(stuffed(b"a\r"), b"a\r\n");
    }

    #[test]
    fn appends_to_existing_output() {
        let mut out = b"+OK\r\n".to_vec();
        dot_stuff(b".x", &mut out, LoneCr::Keep);
        assert_eq!(out, b"+OK\r\n..x\r\n");
    }

    #[test]
    fn output_never_contains_a_terminator_line() {
        let bodies: [&[u8]; 5] = [b".\r\n", b"\r\n.\r\n", b"a\n.\n", b".", b"x\r\n.\r\n.\r\n"];
        for body in bodies {
            let out = stuffed(body);
            let mut framed = b"\r\n".to_vec();
            framed.extend_from_slice(&out);
            assert!(!framed.windows(5).any(|w| w == b"\r\n.\r\n"), "{body:?}");
            assert!(out.ends_with(b"\r\n"));
        }
    }
}
