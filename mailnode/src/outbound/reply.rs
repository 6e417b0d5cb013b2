//! Replies of a remote SMTP server, read line by line with limits: the other side is as
//! untrusted as any client.

/// Longest reply line we accept (RFC 5321 §4.5.3.1.5 says 512; servers exceed it).
pub const MAX_REPLY_LINE: usize = 2048;
/// Most lines in one multi-line reply (an EHLO answer has a dozen).
pub const MAX_REPLY_LINES: usize = 100;

/// One complete reply: its code and its text lines, without the code prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// 2xx or 3xx.
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// 5xx: retrying will not help.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The reply as one line for logs, envelopes and bounces (`550 5.1.1 no such user`).
    pub fn summary(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" / "))
    }

    /// Whether an EHLO reply announces `keyword` (case-insensitive, first word of a line).
    pub fn has_extension(&self, keyword: &str) -> bool {
        self.lines.iter().skip(1).any(|l| l.split_whitespace().next().is_some_and(|w| w.eq_ignore_ascii_case(keyword)))
    }
}

/// Why bytes from the server are not a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("reply line longer than {MAX_REPLY_LINE} bytes")]
    LineTooLong,
    #[error("reply longer than {MAX_REPLY_LINES} lines")]
    TooManyLines,
    #[error("malformed reply line {0:?}")]
    Malformed(String),
}

/// Assembles a reply from lines (each without its CRLF), rejecting mixed codes and garbage.
#[derive(Debug, Default)]
pub struct ReplyParser {
    code: Option<u16>,
    lines: Vec<String>,
}

impl ReplyParser {
    /// Takes one line; `Some` when it was the last line of the reply.
    pub fn line(&mut self, raw: &[u8]) -> Result<Option<Reply>, ReplyError> {
        if raw.len() > MAX_REPLY_LINE {
            return Err(ReplyError::LineTooLong);
        }
        if self.lines.len() >= MAX_REPLY_LINES {
            return Err(ReplyError::TooManyLines);
        }
        let text = String::from_utf8_lossy(raw);
        let malformed = || ReplyError::Malformed(text.chars().take(80).collect());
        let digits = raw.get(..3).filter(|d| d.iter().all(u8::is_ascii_digit)).ok_or_else(malformed)?;
        let code = digits.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
        if !(200..600).contains(&code) || self.code.is_some_and(|c| c != code) {
            return Err(malformed());
        }
        self.code = Some(code);
        let last = match raw.get(3) {
            None | Some(b' ') => true,
            Some(b'-') => false,
            Some(_) => return Err(malformed()),
        };
        self.lines.push(text.get(4..).unwrap_or("").trim_end().to_string());
        if !last {
            return Ok(None);
        }
        let reply = Reply { code, lines: std::mem::take(&mut self.lines) };
        self.code = None;
        Ok(Some(reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> Result<Vec<Reply>, ReplyError> {
        let mut p = ReplyParser::default();
        let mut out = Vec::new();
        for l in lines {
            if let Some(r) = p.line(l.as_bytes())? {
                out.push(r);
            }
        }
        Ok(out)
    }

    #[test]
    fn single_and_multi_line() {
        let r = parse(&["220 mx.example ESMTP", "250-mx.example hi", "250-SIZE 1000", "250 STARTTLS"]).unwrap();
        assert_eq!(r[0], Reply { code: 220, lines: vec!["mx.example ESMTP".into()] });
        assert!(r[1].has_extension("starttls") && r[1].has_extension("SIZE") && !r[1].has_extension("mx.example"));
        assert_eq!(parse(&["250"]).unwrap()[0].lines, [""]);
        assert_eq!(parse(&["550 5.1.1 no such user"]).unwrap()[0].summary(), "550 5.1.1 no such user");
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [&["25"][..], &["abc hello"], &["250-a", "251 b"], &["250xhello"], &["199 x"], &["600 x"]] {
            assert!(matches!(parse(bad), Err(ReplyError::Malformed(_))), "{bad:?}");
        }
        let long = format!("250 {}", "a".repeat(MAX_REPLY_LINE));
        assert_eq!(parse(&[&long]), Err(ReplyError::LineTooLong));
        let many: Vec<&str> = std::iter::repeat_n("250-x", MAX_REPLY_LINES + 1).collect();
        assert_eq!(parse(&many), Err(ReplyError::TooManyLines));
    }
}
