//! The SMTP client side (RFC 5321): reply parsing over bytes, dot-stuffing, and a session
//! that sends one transaction at a time and waits for each reply (no PIPELINING, as the
//! paper's senders did).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;
use crate::sources;
use crate::wire::Wire;

/// Longest reply line accepted (RFC 5321 §4.5.3.1.5 says 512; servers send longer texts).
const MAX_REPLY_LINE: usize = 4096;
/// Most lines in one multi-line reply (an EHLO reply has one per extension).
const MAX_REPLY_LINES: usize = 100;

/// One line of a reply: its code, whether more lines follow (`250-`), and its text.
#[derive(Debug, PartialEq, Eq)]
pub struct ReplyLine<'a> {
    pub code: u16,
    pub more: bool,
    pub text: &'a [u8],
}

/// Parses one reply line (without its line end): three digits, the first 2-5, then a space,
/// a hyphen (more lines follow) or nothing.
pub fn parse_reply_line(line: &[u8]) -> Result<ReplyLine<'_>, Error> {
    let digits = line.get(..3).filter(|d| d.iter().all(u8::is_ascii_digit) && (b'2'..=b'5').contains(&d[0]));
    let Some(digits) = digits else {
        return Err(Error::malformed(line));
    };
    let code = digits.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    match line.get(3) {
        None => Ok(ReplyLine { code, more: false, text: b"" }),
        Some(b' ') => Ok(ReplyLine { code, more: false, text: &line[4..] }),
        Some(b'-') => Ok(ReplyLine { code, more: true, text: &line[4..] }),
        Some(_) => Err(Error::malformed(line)),
    }
}

/// A complete reply: its code and the text of its last line (the one that says what happened).
#[derive(Debug)]
pub struct Reply {
    pub code: u16,
    pub last_line: Vec<u8>,
}

impl Reply {
    /// The reply as the server sent its last line, for reports.
    fn shown(&self) -> Vec<u8> {
        let mut out = self.code.to_string().into_bytes();
        if !self.last_line.is_empty() {
            out.push(b' ');
            out.extend_from_slice(&self.last_line);
        }
        out
    }
}

/// Appends `message` to `out` as DATA content: a dot doubled at the start of every line
/// (RFC 5321 §4.5.2), a final CRLF if the message lacks one, then the `.` line.
pub fn dot_stuff(message: &[u8], out: &mut Vec<u8>) {
    out.reserve(message.len() + 8);
    let mut line_start = true;
    for &b in message {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    if !message.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

/// An SMTP session, greeted and past EHLO.
pub struct SmtpClient {
    wire: Wire,
    timeout: Duration,
    /// DATA content of the current message, kept to reuse its allocation.
    data: Vec<u8>,
}

impl SmtpClient {
    /// Connects from `from`, reads the 220 greeting and says EHLO.
    pub async fn connect(
        target: SocketAddr,
        from: Option<IpAddr>,
        helo: &str,
        timeout: Duration,
    ) -> Result<SmtpClient, Error> {
        let stream = sources::connect(target, from, Instant::now() + timeout).await?;
        let mut client = SmtpClient { wire: Wire::new(stream), timeout, data: Vec::new() };
        client.expect("greeting", None, 2).await?;
        client.expect("EHLO", Some(format!("EHLO {helo}\r\n").as_bytes()), 2).await?;
        Ok(client)
    }

    /// One transaction: MAIL, RCPT, DATA, the content; Ok means the server answered 250
    /// (2xx) to the end of data, that is, it took responsibility for the message.
    pub async fn send_mail(&mut self, from: &str, rcpt: &str, message: &[u8]) -> Result<(), Error> {
        self.expect("MAIL", Some(format!("MAIL FROM:<{from}>\r\n").as_bytes()), 2).await?;
        self.expect("RCPT", Some(format!("RCPT TO:<{rcpt}>\r\n").as_bytes()), 2).await?;
        self.expect("DATA", Some(b"DATA\r\n"), 3).await?;
        let mut data = std::mem::take(&mut self.data);
        data.clear();
        dot_stuff(message, &mut data);
        let sent = self.expect("end of data", Some(data.as_slice()), 2).await;
        self.data = data;
        sent.map(drop)
    }

    /// Says QUIT and waits (bounded) for the reply, so the server closes first and its
    /// side of the connection is the one in TIME_WAIT; failures do not matter any more.
    pub async fn quit(mut self) {
        let _ = self.expect("QUIT", Some(b"QUIT\r\n"), 2).await;
    }

    /// Sends `command` (if any) and reads the reply, which must be of class `class` (2, 3).
    async fn expect(&mut self, what: &'static str, command: Option<&[u8]>, class: u16) -> Result<Reply, Error> {
        let deadline = Instant::now() + self.timeout;
        if let Some(command) = command {
            self.wire.send(command, deadline).await?;
        }
        let reply = self.read_reply(deadline).await?;
        if reply.code / 100 != class {
            return Err(Error::refused(what, &reply.shown()));
        }
        Ok(reply)
    }

    async fn read_reply(&mut self, deadline: Instant) -> Result<Reply, Error> {
        let mut first_code = None;
        for _ in 0..MAX_REPLY_LINES {
            let line = parse_reply_line(self.wire.read_line(MAX_REPLY_LINE, deadline).await?)?;
            if *first_code.get_or_insert(line.code) != line.code {
                return Err(Error::Malformed(format!("reply codes differ between lines ({first_code:?})")));
            }
            if !line.more {
                return Ok(Reply { code: line.code, last_line: line.text.to_vec() });
            }
        }
        Err(Error::TooLong(MAX_REPLY_LINES * MAX_REPLY_LINE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lines() {
        assert_eq!(parse_reply_line(b"250 2.0.0 Ok").unwrap(), ReplyLine { code: 250, more: false, text: b"2.0.0 Ok" });
        assert_eq!(parse_reply_line(b"250-SIZE 100").unwrap(), ReplyLine { code: 250, more: true, text: b"SIZE 100" });
        assert_eq!(parse_reply_line(b"354").unwrap(), ReplyLine { code: 354, more: false, text: b"" });
        assert_eq!(parse_reply_line(b"550 ").unwrap().code, 550);
        for bad in [&b""[..], b"25", b"2x0 ok", b"150 ok", b"650 no", b"250_ok", b"-250 x", b"\xff\xfe\xfd"] {
            assert!(matches!(parse_reply_line(bad), Err(Error::Malformed(_))), "{bad:?}");
        }
    }

    #[test]
    fn stuffing() {
        let mut out = Vec::new();
        dot_stuff(b".hidden\r\nmid.dle\r\n.\r\n..two\r\nend", &mut out);
        assert_eq!(out, b"..hidden\r\nmid.dle\r\n..\r\n...two\r\nend\r\n.\r\n");
        out.clear();
        dot_stuff(b"plain\r\n", &mut out);
        assert_eq!(out, b"plain\r\n.\r\n");
        out.clear();
        dot_stuff(b"", &mut out);
        assert_eq!(out, b"\r\n.\r\n");
    }

    #[test]
    fn refusals_show_the_last_line() {
        let reply = Reply { code: 550, last_line: b"5.1.1 <x@example.test>: no such user".to_vec() };
        assert_eq!(
            Error::refused("RCPT", &reply.shown()).to_string(),
            "RCPT refused: 550 5.1.1 <x@example.test>: no such user"
        );
    }
}
