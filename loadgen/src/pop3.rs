//! The POP3 client side (RFC 1939): status lines, scan listings and multi-line framing as
//! plain functions over bytes, and a session for USER/PASS, LIST, RETR and QUIT.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;
use crate::sources;
use crate::wire::Wire;

/// Longest line: a status line, or a line of a message (RFC 5322 allows 998, mail in the
/// wild is longer).
const MAX_LINE: usize = 1 << 20;
/// Most entries in a LIST answer, and most lines of one message.
const MAX_LINES: u64 = 50_000_000;

/// Whether `line` is `+OK` (Ok, with the text after it) or `-ERR` (Err, refused).
pub fn status<'a>(what: &'static str, line: &'a [u8]) -> Result<&'a [u8], Error> {
    if let Some(rest) = line.strip_prefix(b"+OK") {
        match rest.first() {
            None => return Ok(b""),
            Some(b' ') => return Ok(&rest[1..]),
            Some(_) => {}
        }
    }
    if line.starts_with(b"-ERR") {
        return Err(Error::refused(what, line));
    }
    Err(Error::malformed(line))
}

/// A scan listing `msg size` (RFC 1939 §5, LIST); text after the size is allowed.
pub fn scan_listing(line: &[u8]) -> Option<(u32, u64)> {
    let mut words = line.split(|&b| b == b' ');
    let number = std::str::from_utf8(words.next()?).ok()?;
    let size = std::str::from_utf8(words.next()?).ok()?;
    if !number.bytes().chain(size.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((number.parse().ok()?, size.parse().ok()?))
}

/// Whether `line` ends a multi-line response, and otherwise its length as the message has
/// it: without the stuffed dot (RFC 1939 §3), with its CRLF.
pub fn content_line(line: &[u8]) -> Option<u64> {
    match line {
        b"." => None,
        _ if line.starts_with(b".") => Some(line.len() as u64 + 1),
        _ => Some(line.len() as u64 + 2),
    }
}

/// A POP3 session.
pub struct Pop3Client {
    wire: Wire,
    timeout: Duration,
}

impl Pop3Client {
    /// Connects from `from` and reads the `+OK` greeting.
    pub async fn connect(target: SocketAddr, from: Option<IpAddr>, timeout: Duration) -> Result<Pop3Client, Error> {
        let deadline = Instant::now() + timeout;
        let stream = sources::connect(target, from, deadline).await?;
        let mut client = Pop3Client { wire: Wire::new(stream), timeout };
        status("greeting", client.wire.read_line(MAX_LINE, deadline).await?)?;
        Ok(client)
    }

    /// USER then PASS.
    pub async fn login(&mut self, user: &str, password: &str) -> Result<(), Error> {
        if [user, password].iter().any(|s| s.contains(['\r', '\n'])) {
            return Err(Error::Usage("a POP3 user or password cannot hold a line end".into()));
        }
        self.simple("USER", &format!("USER {user}\r\n")).await?;
        self.simple("PASS", &format!("PASS {password}\r\n")).await
    }

    /// LIST: every message's number and size.
    pub async fn list(&mut self) -> Result<Vec<(u32, u64)>, Error> {
        let deadline = self.simple("LIST", "LIST\r\n").await.map(|_| Instant::now() + self.timeout)?;
        let mut out = Vec::new();
        while (out.len() as u64) < MAX_LINES {
            let line = self.wire.read_line(MAX_LINE, deadline).await?;
            if line == b"." {
                return Ok(out);
            }
            out.push(scan_listing(line).ok_or_else(|| Error::malformed(line))?);
        }
        Err(Error::Malformed(format!("more than {MAX_LINES} LIST entries")))
    }

    /// RETR `number`; returns the message's size as received (stuffing removed).
    pub async fn retr(&mut self, number: u32) -> Result<u64, Error> {
        self.simple("RETR", &format!("RETR {number}\r\n")).await?;
        let deadline = Instant::now() + self.timeout;
        let mut bytes = 0;
        for _ in 0..MAX_LINES {
            match content_line(self.wire.read_line(MAX_LINE, deadline).await?) {
                None => return Ok(bytes),
                Some(n) => bytes += n,
            }
        }
        Err(Error::Malformed(format!("a message of more than {MAX_LINES} lines")))
    }

    /// QUIT, waiting (bounded) for the reply; failures do not matter any more.
    pub async fn quit(mut self) {
        let _ = self.simple("QUIT", "QUIT\r\n").await;
    }

    /// Sends `command` and reads its status line, which must be `+OK`.
    async fn simple(&mut self, what: &'static str, command: &str) -> Result<(), Error> {
        let deadline = Instant::now() + self.timeout;
        self.wire.send(command.as_bytes(), deadline).await?;
        status(what, self.wire.read_line(MAX_LINE, deadline).await?).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status("x", b"+OK 2 messages").unwrap(), b"2 messages");
        assert_eq!(status("x", b"+OK").unwrap(), b"");
        let e = status("PASS", b"-ERR [AUTH] invalid").unwrap_err();
        assert_eq!(e.to_string(), "PASS refused: -ERR [AUTH] invalid");
        for bad in [&b"+OKAY"[..], b"OK", b"", b"+ok"] {
            assert!(matches!(status("x", bad), Err(Error::Malformed(_))), "{bad:?}");
        }
    }

    #[test]
    fn listings() {
        assert_eq!(scan_listing(b"1 4096"), Some((1, 4096)));
        assert_eq!(scan_listing(b"12 300 extra"), Some((12, 300)));
        for bad in [&b"1"[..], b"a 3", b"1 -3", b"", b"1  3", b"99999999999 1"] {
            assert_eq!(scan_listing(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn multi_line_framing() {
        assert_eq!(content_line(b"."), None);
        assert_eq!(content_line(b"..starts with a dot"), Some(20));
        assert_eq!(content_line(b"plain"), Some(7));
        assert_eq!(content_line(b""), Some(2));
    }
}
