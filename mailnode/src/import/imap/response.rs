//! A server's IMAP responses, read as the client of an import reads them: framed from bytes
//! (a line, with every `{n}` literal it announces inlined), then parsed into values. No I/O
//! here, so it tests and fuzzes without a server.
//!
//! Limits hold whatever the server sends: a line without its end, a literal, a whole response
//! and the nesting of lists are all bounded.

use sirms_storage::message::MAX_MESSAGE_SIZE;

/// Longest line between literals.
pub const MAX_LINE: usize = 64 * 1024;
/// Most literals in one response.
pub const MAX_LITERALS: usize = 1024;
/// Deepest nesting of parenthesized lists.
const MAX_DEPTH: usize = 16;

/// Why a response could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("a response line is over {MAX_LINE} bytes")]
    LineTooLong,
    #[error("a literal of {0} bytes is over the largest message")]
    LiteralTooLarge(u64),
    #[error("a response has over {MAX_LITERALS} literals")]
    TooManyLiterals,
    #[error("malformed response: {0}")]
    Malformed(&'static str),
}

/// One whole response: its text with each literal's bytes where the `{n}` was (a value that
/// is a literal is `Value::Literal` with its index).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frame {
    /// The line pieces, joined with a NUL marker (0x00) where each literal was.
    pub text: Vec<u8>,
    pub literals: Vec<Vec<u8>>,
}

/// Finds one whole response at the start of `buf`: `Ok(None)` when more bytes are needed;
/// otherwise the frame and how many bytes it took.
pub fn frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, ResponseError> {
    let mut at = 0;
    let mut frame = Frame::default();
    loop {
        let rest = &buf[at..];
        let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return if rest.len() > MAX_LINE { Err(ResponseError::LineTooLong) } else { Ok(None) };
        };
        if end > MAX_LINE {
            return Err(ResponseError::LineTooLong);
        }
        let line = &rest[..end];
        at += end + 2;
        match literal_length(line)? {
            None => {
                frame.text.extend(line.iter().map(|&b| if b == 0 { b' ' } else { b }));
                return Ok(Some((frame, at)));
            }
            Some((open, n)) => {
                if frame.literals.len() >= MAX_LITERALS {
                    return Err(ResponseError::TooManyLiterals);
                }
                let n = usize::try_from(n).map_err(|_| ResponseError::LiteralTooLarge(n))?;
                if buf.len() - at < n {
                    return Ok(None);
                }
                frame.text.extend(line[..open].iter().map(|&b| if b == 0 { b' ' } else { b }));
                frame.text.push(0);
                frame.literals.push(buf[at..at + n].to_vec());
                at += n;
            }
        }
    }
}

/// A line ending in `{n}` (or `{n+}`, LITERAL+): where the brace opens and `n`.
fn literal_length(line: &[u8]) -> Result<Option<(usize, u64)>, ResponseError> {
    let Some(inner) = line.strip_suffix(b"}") else { return Ok(None) };
    let Some(open) = inner.iter().rposition(|&b| b == b'{') else { return Ok(None) };
    let digits = inner[open + 1..].strip_suffix(b"+").unwrap_or(&inner[open + 1..]);
    if digits.is_empty() || digits.len() > 12 || !digits.iter().all(u8::is_ascii_digit) {
        return Ok(None);
    }
    let n: u64 =
        std::str::from_utf8(digits).ok().and_then(|d| d.parse().ok()).ok_or(ResponseError::Malformed("literal"))?;
    if n > MAX_MESSAGE_SIZE {
        return Err(ResponseError::LiteralTooLarge(n));
    }
    Ok(Some((open, n)))
}

/// A value in a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// An atom, a number or a flag (`\Seen`); `BODY[]` and such are atoms too.
    Atom(String),
    /// A quoted string.
    Quoted(Vec<u8>),
    /// The frame's literal with this index.
    Literal(usize),
    List(Vec<Value>),
    Nil,
}

impl Value {
    /// The text of an atom or quoted string.
    pub fn text(&self) -> Option<String> {
        match self {
            Value::Atom(a) => Some(a.clone()),
            Value::Quoted(q) => Some(String::from_utf8_lossy(q).into_owned()),
            _ => None,
        }
    }
}

/// Parses the values of `text` from `at` to its end.
pub fn values(text: &[u8]) -> Result<Vec<Value>, ResponseError> {
    let mut at = 0;
    let mut literal = 0;
    let list = parse_list(text, &mut at, &mut literal, 0, false)?;
    Ok(list)
}

fn parse_list(
    text: &[u8],
    at: &mut usize,
    literal: &mut usize,
    depth: usize,
    nested: bool,
) -> Result<Vec<Value>, ResponseError> {
    if depth > MAX_DEPTH {
        return Err(ResponseError::Malformed("lists nested too deep"));
    }
    let mut out = Vec::new();
    loop {
        while text.get(*at) == Some(&b' ') {
            *at += 1;
        }
        let Some(&b) = text.get(*at) else {
            return if nested { Err(ResponseError::Malformed("unclosed list")) } else { Ok(out) };
        };
        match b {
            b'(' => {
                *at += 1;
                out.push(Value::List(parse_list(text, at, literal, depth + 1, true)?));
            }
            b')' if nested => {
                *at += 1;
                return Ok(out);
            }
            b'"' => out.push(Value::Quoted(quoted(text, at)?)),
            0 => {
                *at += 1;
                out.push(Value::Literal(*literal));
                *literal += 1;
            }
            _ => {
                let start = *at;
                // `BODY[HEADER.FIELDS (A B)]`: a section's brackets hold spaces and parentheses.
                let mut brackets = 0usize;
                while let Some(&c) = text.get(*at) {
                    match c {
                        b'[' => brackets += 1,
                        b']' => brackets = brackets.saturating_sub(1),
                        b' ' | b')' | b'(' | b'"' | 0 if brackets == 0 => break,
                        _ => {}
                    }
                    *at += 1;
                }
                if *at == start {
                    return Err(ResponseError::Malformed("unexpected character"));
                }
                let atom = String::from_utf8_lossy(&text[start..*at]).into_owned();
                out.push(if atom.eq_ignore_ascii_case("NIL") { Value::Nil } else { Value::Atom(atom) });
            }
        }
    }
}

fn quoted(text: &[u8], at: &mut usize) -> Result<Vec<u8>, ResponseError> {
    *at += 1;
    let mut out = Vec::new();
    loop {
        match text.get(*at) {
            None => return Err(ResponseError::Malformed("unclosed quoted string")),
            Some(b'"') => {
                *at += 1;
                return Ok(out);
            }
            Some(b'\\') => {
                let &c = text.get(*at + 1).ok_or(ResponseError::Malformed("unclosed quoted string"))?;
                out.push(c);
                *at += 2;
            }
            Some(&c) => {
                out.push(c);
                *at += 1;
            }
        }
    }
}

/// The items of a `* n FETCH (…)` response an import asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    pub uid: Option<u32>,
    pub flags: Option<Vec<String>>,
    /// INTERNALDATE as Unix seconds.
    pub internal_date: Option<i64>,
    pub size: Option<u64>,
    /// The index of `BODY[]`'s literal (or the quoted body, taken out of the frame).
    pub body: Option<Vec<u8>>,
}

/// Parses a FETCH response's item list; `None` when `values` is not `* n FETCH (…)`.
pub fn fetched(values: &[Value], frame: &mut Frame) -> Option<Fetched> {
    let [Value::Atom(star), Value::Atom(_seq), Value::Atom(fetch), Value::List(items), ..] = values else {
        return None;
    };
    if star != "*" || !fetch.eq_ignore_ascii_case("FETCH") {
        return None;
    }
    let mut out = Fetched::default();
    for pair in items.chunks(2) {
        let [Value::Atom(name), value] = pair else { continue };
        match name.to_ascii_uppercase().as_str() {
            "UID" => out.uid = value.text().and_then(|t| t.parse().ok()),
            "RFC822.SIZE" => out.size = value.text().and_then(|t| t.parse().ok()),
            "FLAGS" => {
                if let Value::List(flags) = value {
                    out.flags = Some(flags.iter().filter_map(Value::text).collect());
                }
            }
            "INTERNALDATE" => out.internal_date = value.text().as_deref().and_then(internal_date),
            "BODY[]" | "RFC822" => {
                out.body = match value {
                    Value::Literal(i) => frame.literals.get_mut(*i).map(std::mem::take),
                    Value::Quoted(q) => Some(q.clone()),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    Some(out)
}

/// `17-Jul-1996 02:44:25 -0700` as Unix seconds.
pub fn internal_date(text: &str) -> Option<i64> {
    let (date, rest) = text.trim().split_once(' ')?;
    let (time, zone) = rest.trim().split_once(' ')?;
    let mut d = date.split('-');
    let day: u32 = d.next()?.trim().parse().ok()?;
    let month = crate::calendar::month_number(d.next()?)?;
    let year: i64 = d.next()?.parse().ok()?;
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (t.next()??, t.next()??, t.next()??);
    let zone = zone.trim();
    let sign = match zone.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: i64 = zone.get(1..5)?.parse().ok()?;
    let in_range = (1..=31).contains(&day)
        && (1..=9999).contains(&year)
        && (0..=23).contains(&h)
        && (0..=59).contains(&m)
        && (0..=60).contains(&s);
    if !in_range || zone.len() != 5 {
        return None;
    }
    let offset = sign * ((digits / 100) * 3600 + (digits % 100) * 60);
    Some(crate::calendar::days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_with_literals() {
        let buf = b"* 1 FETCH (UID 7 BODY[] {5}\r\nhello FLAGS (\\Seen))\r\n* OK next";
        let (frame, used) = frame(buf).unwrap().unwrap();
        assert_eq!(used, buf.len() - b"* OK next".len());
        assert_eq!(frame.literals, vec![b"hello".to_vec()]);
        assert_eq!(super::frame(b"* OK partial").unwrap(), None);
        assert_eq!(super::frame(b"* 1 FETCH (BODY[] {10}\r\nshort").unwrap(), None);
        assert!(matches!(super::frame(b"* X {999999999999}\r\n"), Err(ResponseError::LiteralTooLarge(_))));
    }

    #[test]
    fn fetch_items() {
        let buf = b"* 3 FETCH (UID 42 FLAGS (\\Seen $Label1) INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" \
            RFC822.SIZE 5 BODY[] {5}\r\nhello)\r\n";
        let (mut frame, _) = frame(buf).unwrap().unwrap();
        let values = values(&frame.text).unwrap();
        let f = fetched(&values, &mut frame).unwrap();
        assert_eq!(f.uid, Some(42));
        assert_eq!(f.flags, Some(vec!["\\Seen".to_string(), "$Label1".to_string()]));
        assert_eq!(f.internal_date, Some(837_596_665));
        assert_eq!(f.size, Some(5));
        assert_eq!(f.body.as_deref(), Some(&b"hello"[..]));
    }

    #[test]
    fn list_and_status_lines() {
        let v = values(b"* LIST (\\HasNoChildren \\Noselect) \"/\" \"Work/a \\\"b\\\"\"").unwrap();
        assert_eq!(v[2], Value::List(vec![Value::Atom("\\HasNoChildren".into()), Value::Atom("\\Noselect".into())]));
        assert_eq!(v[4].text().as_deref(), Some("Work/a \"b\""));
        let v = values(b"* OK [UIDVALIDITY 3857529045] UIDs valid").unwrap();
        assert_eq!(v[2], Value::Atom("[UIDVALIDITY 3857529045]".into()));
        assert!(values(b"* (((").is_err());
        assert!(values(b"* \"open").is_err());
        let deep = format!("* {}", "(".repeat(40));
        assert!(values(deep.as_bytes()).is_err());
    }

    #[test]
    fn dates() {
        assert_eq!(
            internal_date(" 7-Dec-2026 09:12:44 +0000"),
            Some(crate::calendar::days_from_civil(2026, 12, 7) * 86_400 + 33_164)
        );
        assert_eq!(internal_date("x"), None);
        assert_eq!(internal_date("32-Dec-2026 09:12:44 +0000"), None);
        assert_eq!(internal_date("1-Dec-2026 -9:12:44 +0000"), None);
        assert_eq!(internal_date("1-Dec-99999999999999999 09:12:44 +0000"), None);
    }
}
