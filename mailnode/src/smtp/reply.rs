//! SMTP replies: the one place where reply codes and texts are written.

use std::fmt::Write;

/// One SMTP reply: a code, an optional enhanced status code (RFC 3463) and text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub status: Option<&'static str>,
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply.
    pub fn new(code: u16, status: &'static str, text: impl Into<String>) -> Reply {
        Reply { code, status: Some(status), lines: vec![text.into()] }
    }

    /// A reply without an enhanced status code (greeting, EHLO, HELO and 334 challenges).
    pub fn plain(code: u16, lines: Vec<String>) -> Reply {
        Reply { code, status: None, lines }
    }

    /// Whether this reply is a positive completion.
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// The wire form: `code-text` continuation lines, `code text` last, CRLF after each.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut s = String::new();
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            match self.status {
                Some(status) => {
                    let _ = write!(s, "{}{}{} {}\r\n", self.code, sep, status, line);
                }
                None => {
                    let _ = write!(s, "{}{}{}\r\n", self.code, sep, line);
                }
            }
        }
        if self.lines.is_empty() {
            let _ = write!(s, "{}\r\n", self.code);
        }
        out.extend_from_slice(s.as_bytes());
    }

    /// The wire form as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_to(&mut v);
        v
    }
}

/// The replies the session gives, named, so that no reply text is built in two places.
pub mod replies {
    use super::Reply;
    use crate::smtp::rate::Limited;

    pub fn ok() -> Reply {
        Reply::new(250, "2.0.0", "OK")
    }
    pub fn sender_ok() -> Reply {
        Reply::new(250, "2.1.0", "sender OK")
    }
    pub fn recipient_ok() -> Reply {
        Reply::new(250, "2.1.5", "recipient OK")
    }
    pub fn queued(id: &str) -> Reply {
        Reply::new(250, "2.0.0", format!("OK delivered as {id}"))
    }
    pub fn bye() -> Reply {
        Reply::new(221, "2.0.0", "bye")
    }
    pub fn start_data() -> Reply {
        Reply::plain(354, vec!["end data with <CR><LF>.<CR><LF>".into()])
    }
    pub fn ready_tls() -> Reply {
        Reply::new(220, "2.0.0", "ready to start TLS")
    }
    pub fn vrfy() -> Reply {
        Reply::new(252, "2.5.0", "cannot verify the user, but will accept the message")
    }
    pub fn auth_ok() -> Reply {
        Reply::new(235, "2.7.0", "authentication succeeded")
    }
    pub fn auth_failed() -> Reply {
        Reply::new(535, "5.7.8", "authentication credentials invalid")
    }
    pub fn auth_cancelled() -> Reply {
        Reply::new(501, "5.7.0", "authentication cancelled")
    }
    pub fn directory_unavailable() -> Reply {
        Reply::new(451, "4.3.0", "the user directory is not available yet; try again later")
    }
    pub fn auth_unavailable() -> Reply {
        Reply::new(454, "4.7.0", "temporary authentication failure")
    }
    pub fn auth_throttled() -> Reply {
        Reply::new(454, "4.7.0", "too many failed logins; try again later")
    }
    pub fn auth_needs_tls() -> Reply {
        Reply::new(538, "5.7.11", "encryption required for requested authentication mechanism")
    }
    pub fn auth_mechanism() -> Reply {
        Reply::new(504, "5.5.4", "unrecognized authentication mechanism")
    }
    pub fn already_authenticated() -> Reply {
        Reply::new(503, "5.5.1", "already authenticated")
    }
    pub fn auth_required() -> Reply {
        Reply::new(530, "5.7.0", "authentication required")
    }
    pub fn tls_required() -> Reply {
        Reply::new(530, "5.7.0", "must issue a STARTTLS command first")
    }
    /// RFC 8689 §4.1: REQUIRETLS only in a session over TLS (X.7.10: encryption needed).
    pub fn requiretls_needs_tls() -> Reply {
        Reply::new(530, "5.7.10", "REQUIRETLS needs a session over TLS")
    }
    pub fn bad_sequence(what: &str) -> Reply {
        Reply::new(503, "5.5.1", format!("bad sequence of commands: {what}"))
    }
    pub fn syntax(what: &str) -> Reply {
        Reply::new(501, "5.5.4", format!("syntax error: {what}"))
    }
    pub fn unknown_command() -> Reply {
        Reply::new(500, "5.5.2", "command not recognized")
    }
    pub fn not_implemented() -> Reply {
        Reply::new(502, "5.5.1", "command not implemented")
    }
    pub fn line_too_long() -> Reply {
        Reply::new(500, "5.5.2", "line too long")
    }
    pub fn bad_sender() -> Reply {
        Reply::new(553, "5.1.7", "bad sender address syntax")
    }
    pub fn sender_not_owned() -> Reply {
        Reply::new(553, "5.7.1", "sender address not owned by the authenticated user")
    }
    pub fn bad_recipient() -> Reply {
        Reply::new(553, "5.1.3", "bad recipient address syntax")
    }
    pub fn no_such_user() -> Reply {
        Reply::new(550, "5.1.1", "no such user here")
    }
    /// RFC 3463 §3.5: X.4.6 is a routing loop.
    pub fn alias_loop() -> Reply {
        Reply::new(550, "5.4.6", "routing loop detected: the recipient's aliases lead back to themselves")
    }
    pub fn too_many_hops(limit: usize) -> Reply {
        Reply::new(554, "5.4.6", format!("too many hops (more than {limit} Received headers): mail loop"))
    }
    pub fn relay_denied() -> Reply {
        Reply::new(554, "5.7.1", "relay access denied")
    }
    /// A recipient past an authenticated sender's hourly limit.
    pub fn rate_limited(limit: Limited) -> Reply {
        let text = match limit {
            Limited::User(n) => {
                format!("sending rate limit reached ({n} recipients an hour for this account); try again later")
            }
            Limited::Domain(n) => {
                format!("sending rate limit reached ({n} recipients an hour for this domain); try again later")
            }
        };
        Reply::new(450, "4.7.1", text)
    }
    pub fn too_many_recipients() -> Reply {
        Reply::new(452, "4.5.3", "too many recipients")
    }
    pub fn no_recipients() -> Reply {
        Reply::new(554, "5.5.1", "no valid recipients")
    }
    pub fn too_big() -> Reply {
        Reply::new(552, "5.3.4", "message size exceeds fixed limit")
    }
    pub fn unsupported_param() -> Reply {
        Reply::new(555, "5.5.4", "parameter not recognized or not implemented")
    }
    pub fn smtputf8_needed() -> Reply {
        Reply::new(553, "5.6.7", "non-ASCII address requires SMTPUTF8")
    }
    /// RFC 3463 X.2.2: every recipient's mailbox is full; temporary, as it may be emptied.
    pub fn mailbox_full() -> Reply {
        Reply::new(452, "4.2.2", "mailbox full: over quota, try again later")
    }
    pub fn delivery_failed() -> Reply {
        Reply::new(451, "4.3.0", "local delivery failed, try again later")
    }
    pub fn too_many_errors() -> Reply {
        Reply::new(421, "4.7.0", "too many errors, closing connection")
    }
    pub fn timeout() -> Reply {
        Reply::new(421, "4.4.2", "idle timeout, closing connection")
    }
    pub fn shutting_down() -> Reply {
        Reply::new(421, "4.3.2", "service shutting down")
    }
    pub fn tls_unavailable() -> Reply {
        Reply::new(454, "4.7.0", "TLS not available")
    }
    /// A content filter refused the message for good; `why` is the filter's text, if any.
    pub fn filter_rejected(why: Option<&str>) -> Reply {
        Reply::new(550, "5.7.1", filter_text(why, "message rejected as spam"))
    }
    /// A content filter asked for the message to be tried again later.
    pub fn filter_soft_rejected(why: Option<&str>) -> Reply {
        Reply::new(451, "4.7.1", filter_text(why, "message deferred by the content filter, try again later"))
    }
    /// A content filter greylisted the message.
    pub fn greylisted() -> Reply {
        Reply::new(451, "4.7.1", "greylisted, try again later")
    }
    /// A content filter could not be reached and its config says to defer.
    pub fn filter_unavailable() -> Reply {
        Reply::new(451, "4.7.1", "content filter unavailable, try again later")
    }

    /// Every recipient's Sieve script rejected the message (RFC 5429 §2.1: refused in SMTP,
    /// with the script's reason, rather than accepted and bounced).
    pub fn sieve_rejected(reason: &str) -> Reply {
        Reply::new(550, "5.7.1", filter_text(Some(reason), "rejected by the recipient's mail filter"))
    }

    /// A filter's text, cut to one short printable line: it goes on the wire after our code.
    fn filter_text(why: Option<&str>, default: &str) -> String {
        let clean: String = why.unwrap_or("").chars().map(|c| if c.is_control() { ' ' } else { c }).take(200).collect();
        let clean = clean.trim();
        if clean.is_empty() { default.to_string() } else { clean.to_string() }
    }
    /// The greeting of a client a DNS blocklist names (RFC 5321 §3.1: no service here).
    /// Greylisting (RFC 6647): the first attempt of this sender to this recipient from this
    /// network, or a retry before the delay was over (`early`); a retry after it passes.
    pub fn greylisted_triplet(retry_in_secs: u64, early: bool) -> Reply {
        let why =
            if early { "retried too early" } else { "first attempt from your network for this sender and recipient" };
        Reply::new(451, "4.7.1", format!("greylisted: {why}; please retry in {retry_in_secs} seconds"))
    }
    pub fn dnsbl_listed(client: std::net::IpAddr, zone: &str) -> Reply {
        Reply::new(554, "5.7.1", format!("service unavailable; client host [{client}] is listed by {zone}"))
    }
    /// DMARC (RFC 7489 §6.7): the author domain asks for a reject and the message failed.
    pub fn dmarc_reject(domain: &str) -> Reply {
        Reply::new(550, "5.7.1", format!("rejected by the DMARC policy of {domain}: the message failed SPF and DKIM"))
    }
    /// Sender authentication could not finish (DNS timeout, server failure): the sender
    /// retries, and the next try may get an answer.
    pub fn auth_temperror() -> Reply {
        Reply::new(451, "4.7.0", "temporary failure checking the sender's SPF, DKIM or DMARC records; try again later")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form() {
        assert_eq!(replies::ok().to_bytes(), b"250 2.0.0 OK\r\n");
        let multi = Reply::plain(250, vec!["host".into(), "PIPELINING".into(), "SIZE 10".into()]);
        assert_eq!(multi.to_bytes(), b"250-host\r\n250-PIPELINING\r\n250 SIZE 10\r\n");
    }

    #[test]
    fn filter_text_stays_on_one_line() {
        assert_eq!(replies::filter_rejected(Some("bad\r\n250 ok")).to_bytes(), b"550 5.7.1 bad  250 ok\r\n");
        assert_eq!(replies::filter_rejected(None).to_bytes(), b"550 5.7.1 message rejected as spam\r\n");
    }
}
