//! Building POP3 responses, so status lines and multi-line framing are formatted in one place.

use std::fmt::{self, Display};
use std::io::Write;

use crate::stuffing::{LoneCr, dot_stuff};

/// Extended response codes (RFC 2449 §8, RFC 3206) that tell a client why a command failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    /// The credentials are wrong or not acceptable here (RFC 3206).
    Auth,
    /// Authenticated, but another session holds the maildrop (RFC 2449).
    InUse,
    /// A temporary failure the client may retry later (RFC 3206).
    SysTemp,
    /// A failure that retrying will not fix (RFC 3206).
    SysPerm,
}

impl Code {
    fn as_str(self) -> &'static str {
        match self {
            Code::Auth => "AUTH",
            Code::InUse => "IN-USE",
            Code::SysTemp => "SYS/TEMP",
            Code::SysPerm => "SYS/PERM",
        }
    }
}

/// Writes into a `Vec<u8>`, which cannot fail, so the `io::Result` carries nothing worth handling.
fn put(out: &mut Vec<u8>, args: fmt::Arguments<'_>) {
    let _ = out.write_fmt(args);
}

/// `+OK text\r\n`; an empty text gives a bare `+OK\r\n`.
pub(crate) fn ok(text: impl Display) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    put(&mut out, format_args!("+OK {text}"));
    if out.ends_with(b" ") {
        out.pop();
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// `-ERR [CODE] text\r\n`.
pub(crate) fn err(code: Option<Code>, text: impl Display) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    match code {
        Some(code) => put(&mut out, format_args!("-ERR [{}] {text}\r\n", code.as_str())),
        None => put(&mut out, format_args!("-ERR {text}\r\n")),
    }
    out
}

/// A `+OK` response followed by lines and the `.\r\n` terminator.
pub(crate) struct MultiLine {
    out: Vec<u8>,
}

impl MultiLine {
    /// Starts with `+OK status`, reserving room for `capacity` more octets.
    pub(crate) fn new(status: impl Display, capacity: usize) -> Self {
        let mut out = ok(status);
        out.reserve(capacity.saturating_add(3));
        MultiLine { out }
    }

    /// A line the server generates itself; such lines never start with `.`, so they need no stuffing.
    pub(crate) fn line(&mut self, line: impl Display) {
        put(&mut self.out, format_args!("{line}\r\n"));
    }

    /// Message content, dot-stuffed.
    pub(crate) fn body(&mut self, body: &[u8]) {
        dot_stuff(body, &mut self.out, LoneCr::Keep);
    }

    /// The finished response, terminator included.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(b".\r\n");
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(ok("2 320"), b"+OK 2 320\r\n");
        assert_eq!(ok(""), b"+OK\r\n");
        assert_eq!(err(None, "no such message"), b"-ERR no such message\r\n");
        assert_eq!(err(Some(Code::InUse), "locked"), b"-ERR [IN-USE] locked\r\n");
        assert_eq!(err(Some(Code::SysTemp), "later"), b"-ERR [SYS/TEMP] later\r\n");
    }

    #[test]
    fn multi_line() {
        let mut reply = MultiLine::new("2 messages", 0);
        reply.line("1 120");
        reply.body(b".x");
        assert_eq!(reply.finish(), b"+OK 2 messages\r\n1 120\r\n..x\r\n.\r\n");
        assert_eq!(MultiLine::new("", 0).finish(), b"+OK\r\n.\r\n");
    }
}
