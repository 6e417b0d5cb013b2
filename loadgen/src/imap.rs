//! The IMAP client side (RFC 3501): what a server line is, where a literal follows, and the
//! two numbers the benchmark reads (EXISTS, STATUS MESSAGES), as plain functions over bytes;
//! and a session that sends tagged commands and reads to their completion, counting the
//! untagged responses and bytes, and skipping literal contents it does not need.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;
use crate::sources;
use crate::wire::Wire;

/// Longest response line (literals excluded); an ENVELOPE with BODYSTRUCTURE is a few KiB.
const MAX_LINE: usize = 1 << 20;
/// Most literals in one untagged response (a FETCH of many body sections).
const MAX_LITERALS: usize = 1000;
/// Most untagged responses to one command: a FETCH of every message in a big mailbox.
const MAX_RESPONSES: u64 = 50_000_000;

/// How a command completed.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Status {
    Ok,
    No,
    Bad,
}

/// What a line from the server is, while a command with a known tag is in flight.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// The command's completion, with the text after the status word.
    Tagged { status: Status, text: &'a [u8] },
    /// `* …`: data, or a status that is not the completion.
    Untagged,
    /// `+ …`: the server waits for more of a command (which this client never leaves open).
    Continuation,
}

/// Classifies `line` (without its line end) for the command tagged `tag`.
pub fn classify<'a>(line: &'a [u8], tag: &[u8]) -> Result<Line<'a>, Error> {
    if line.starts_with(b"* ") {
        return Ok(Line::Untagged);
    }
    if line.first() == Some(&b'+') {
        return Ok(Line::Continuation);
    }
    let Some(rest) = line.strip_prefix(tag).and_then(|r| r.strip_prefix(b" ")) else {
        return Err(Error::malformed(line));
    };
    let (word, text) = match rest.iter().position(|&b| b == b' ') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &b""[..]),
    };
    let status = match word.to_ascii_uppercase().as_slice() {
        b"OK" => Status::Ok,
        b"NO" => Status::No,
        b"BAD" => Status::Bad,
        _ => return Err(Error::malformed(line)),
    };
    Ok(Line::Tagged { status, text })
}

/// The size of the literal announced at the end of `line` (`{123}`, or `{123+}`), if any.
pub fn literal_len(line: &[u8]) -> Option<u64> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// N of an untagged `* N EXISTS`.
pub fn exists(response: &[u8]) -> Option<u32> {
    let rest = response.strip_prefix(b"* ")?;
    let (number, word) = split_word(rest);
    if !word.eq_ignore_ascii_case(b"EXISTS") {
        return None;
    }
    parse_u32(number)
}

/// The MESSAGES count of an untagged `* STATUS mailbox (… MESSAGES n …)`.
pub fn status_messages(response: &[u8]) -> Option<u32> {
    let rest = response.strip_prefix(b"* ")?;
    let (word, _) = split_word(rest);
    if !word.eq_ignore_ascii_case(b"STATUS") {
        return None;
    }
    // The item list is the last parenthesised group: a quoted mailbox name may hold "(".
    let open = response.iter().rposition(|&b| b == b'(')?;
    let close = open + response[open..].iter().position(|&b| b == b')')?;
    let mut items = response[open + 1..close].split(|&b| b == b' ').filter(|w| !w.is_empty());
    while let (Some(name), Some(value)) = (items.next(), items.next()) {
        if name.eq_ignore_ascii_case(b"MESSAGES") {
            return parse_u32(value);
        }
    }
    None
}

/// N of an untagged `* N FETCH (…)`.
pub fn fetch_number(response: &[u8]) -> Option<u32> {
    let rest = response.strip_prefix(b"* ")?;
    let (number, rest) = split_word(rest);
    let (word, _) = split_word(rest);
    if !word.eq_ignore_ascii_case(b"FETCH") {
        return None;
    }
    parse_u32(number)
}

/// `s` as an IMAP quoted string; refused if it holds what a quoted string cannot (CR, LF,
/// NUL, non-ASCII), since sending it otherwise would change the command.
pub fn quoted(s: &str) -> Result<String, Error> {
    if s.bytes().any(|b| !b.is_ascii() || b == b'\r' || b == b'\n' || b == 0) {
        return Err(Error::Usage(format!("{s:?} cannot be sent as an IMAP quoted string")));
    }
    Ok(format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
}

fn split_word(s: &[u8]) -> (&[u8], &[u8]) {
    match s.iter().position(|&b| b == b' ') {
        Some(at) => (&s[..at], &s[at + 1..]),
        None => (s, &b""[..]),
    }
}

fn parse_u32(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// What a completed command brought: untagged responses and bytes (lines with their CRLF,
/// and literals).
#[derive(Debug, Default, Clone, Copy)]
pub struct Completion {
    pub responses: u64,
    pub bytes: u64,
}

/// An IMAP session.
pub struct ImapClient {
    wire: Wire,
    timeout: Duration,
    last_tag: u32,
    /// The untagged response being read, literal contents left out.
    response: Vec<u8>,
}

impl ImapClient {
    /// Connects from `from` and reads the greeting (`* OK` or `* PREAUTH`).
    pub async fn connect(target: SocketAddr, from: Option<IpAddr>, timeout: Duration) -> Result<ImapClient, Error> {
        let deadline = Instant::now() + timeout;
        let stream = sources::connect(target, from, deadline).await?;
        let mut client = ImapClient { wire: Wire::new(stream), timeout, last_tag: 0, response: Vec::new() };
        let greeting = client.wire.read_line(MAX_LINE, deadline).await?;
        let upper = greeting.get(..9).unwrap_or(greeting).to_ascii_uppercase();
        if !(upper.starts_with(b"* OK") || upper.starts_with(b"* PREAUTH")) {
            return Err(Error::refused("greeting", greeting));
        }
        Ok(client)
    }

    /// LOGIN; `user` and `password` as quoted strings.
    pub async fn login(&mut self, user: &str, password: &str) -> Result<(), Error> {
        let line = format!("LOGIN {} {}", quoted(user)?, quoted(password)?);
        self.command("LOGIN", &line, |_| {}).await.map(drop)
    }

    /// SELECT `mailbox` (an atom such as INBOX); returns its EXISTS count.
    pub async fn select(&mut self, mailbox: &str) -> Result<u32, Error> {
        let mut count = None;
        self.command("SELECT", &format!("SELECT {mailbox}"), |r| count = exists(r).or(count)).await?;
        count.ok_or_else(|| Error::Malformed("SELECT without an EXISTS response".into()))
    }

    /// Sends `line` with the next tag and reads to its completion, which must be OK; every
    /// untagged response (literal contents left out) goes to `on_untagged`. `what` names the
    /// command in errors (not `line`, which may hold a password).
    pub async fn command(
        &mut self,
        what: &'static str,
        line: &str,
        on_untagged: impl FnMut(&[u8]),
    ) -> Result<Completion, Error> {
        let tag = self.send(line).await?;
        self.complete(what, tag, on_untagged).await
    }

    /// Sends `line` with the next tag, without waiting; returns the tag for `complete`.
    pub async fn send(&mut self, line: &str) -> Result<u32, Error> {
        self.last_tag += 1;
        let tag = self.last_tag;
        self.wire.send(format!("b{tag} {line}\r\n").as_bytes(), Instant::now() + self.timeout).await?;
        Ok(tag)
    }

    /// Reads responses until the completion of the command tagged `tag` (sent by `send`,
    /// the only one in flight).
    pub async fn complete(
        &mut self,
        what: &'static str,
        tag: u32,
        mut on_untagged: impl FnMut(&[u8]),
    ) -> Result<Completion, Error> {
        let deadline = Instant::now() + self.timeout;
        let tag = format!("b{tag}");
        let mut done = Completion::default();
        while done.responses < MAX_RESPONSES {
            let line = self.wire.read_line(MAX_LINE, deadline).await?;
            done.bytes += line.len() as u64 + 2;
            match classify(line, tag.as_bytes())? {
                Line::Tagged { status: Status::Ok, .. } => return Ok(done),
                Line::Tagged { .. } => return Err(Error::refused(what, line)),
                Line::Continuation => return Err(Error::Malformed(format!("unexpected continuation after {what}"))),
                Line::Untagged => {}
            }
            self.response.clear();
            self.response.extend_from_slice(line);
            let mut literal = literal_len(line);
            let mut literals = 0;
            while let Some(len) = literal {
                literals += 1;
                if literals > MAX_LITERALS {
                    return Err(Error::Malformed(format!("more than {MAX_LITERALS} literals in one response")));
                }
                self.wire.skip(len, deadline).await?;
                let rest = self.wire.read_line(MAX_LINE, deadline).await?;
                done.bytes += len + rest.len() as u64 + 2;
                if self.response.len() + rest.len() > MAX_LINE {
                    return Err(Error::TooLong(MAX_LINE));
                }
                self.response.extend_from_slice(rest);
                literal = literal_len(rest);
            }
            done.responses += 1;
            on_untagged(&self.response);
        }
        Err(Error::Malformed(format!("more than {MAX_RESPONSES} responses to {what}")))
    }

    /// LOGOUT, waiting (bounded) for the server to confirm; failures do not matter any more.
    pub async fn logout(mut self) {
        let _ = self.command("LOGOUT", "LOGOUT", |_| {}).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_classified() {
        assert_eq!(classify(b"* 3 EXISTS", b"b1").unwrap(), Line::Untagged);
        assert_eq!(classify(b"+ go ahead", b"b1").unwrap(), Line::Continuation);
        assert_eq!(classify(b"b1 OK done", b"b1").unwrap(), Line::Tagged { status: Status::Ok, text: b"done" });
        assert_eq!(classify(b"b1 ok", b"b1").unwrap(), Line::Tagged { status: Status::Ok, text: b"" });
        assert_eq!(
            classify(b"b12 NO [AUTHENTICATIONFAILED] no", b"b12").unwrap(),
            Line::Tagged { status: Status::No, text: b"[AUTHENTICATIONFAILED] no" }
        );
        assert_eq!(classify(b"b2 BAD what", b"b2").unwrap(), Line::Tagged { status: Status::Bad, text: b"what" });
        for bad in [&b"b2 OK other tag"[..], b"b1OK", b"b1 MAYBE", b"", b"*3 EXISTS", b"b11 OK"] {
            assert!(classify(bad, b"b1").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn literals() {
        assert_eq!(literal_len(b"* 1 FETCH (UID 7 BODY[] {4096}"), Some(4096));
        assert_eq!(literal_len(b"* 1 FETCH (BODY[] {0}"), Some(0));
        assert_eq!(literal_len(b"a LOGIN {5+}"), Some(5));
        for none in [&b"* 1 FETCH (FLAGS ())"[..], b"{}", b"{12a}", b"x {99999999999999999999}", b"}", b"{-1}"] {
            assert_eq!(literal_len(none), None, "{none:?}");
        }
    }

    #[test]
    fn exists_and_status() {
        assert_eq!(exists(b"* 172 EXISTS"), Some(172));
        assert_eq!(exists(b"* 0 exists"), Some(0));
        assert_eq!(exists(b"* 3 RECENT"), None);
        assert_eq!(exists(b"* x EXISTS"), None);
        assert_eq!(exists(b"* 99999999999 EXISTS"), None);
        assert_eq!(status_messages(b"* STATUS INBOX (MESSAGES 231)"), Some(231));
        assert_eq!(status_messages(b"* STATUS \"odd (name\" (UIDNEXT 44 MESSAGES 2 UNSEEN 1)"), Some(2));
        assert_eq!(status_messages(b"* status inbox (messages 0)"), Some(0));
        assert_eq!(status_messages(b"* STATUS INBOX (UIDNEXT 5)"), None);
        assert_eq!(status_messages(b"* STATUS INBOX (MESSAGES)"), None);
        assert_eq!(status_messages(b"* STATUS INBOX (MESSAGES 3"), None);
        assert_eq!(status_messages(b"* LIST () \"/\" INBOX"), None);
        assert_eq!(fetch_number(b"* 12 FETCH (UID 40 FLAGS (\\Seen))"), Some(12));
        assert_eq!(fetch_number(b"* 12 fetch (UID 40)"), Some(12));
        assert_eq!(fetch_number(b"* 12 EXISTS"), None);
        assert_eq!(fetch_number(b"* OK [ALERT] FETCH soon"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(quoted("u1@example.test").unwrap(), "\"u1@example.test\"");
        assert_eq!(quoted(r#"p"w\d"#).unwrap(), r#""p\"w\\d""#);
        assert!(quoted("pw\r\nb2 DELETE INBOX").is_err());
        assert!(quoted("pä").is_err());
    }
}
