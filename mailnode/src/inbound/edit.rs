//! A message taken apart into header fields and body, for filters that change them (rspamd's
//! rewritten subject and removed headers, a milter's header and body changes): edits by field
//! name and occurrence, as both protocols count them, then the bytes back.

/// A message as header fields (each with its folded lines and CRLF) and a body.
#[derive(Debug, Clone, PartialEq)]
pub struct Edit {
    fields: Vec<Vec<u8>>,
    /// Everything after the header block, the blank line included.
    body: Vec<u8>,
}

impl Edit {
    /// Splits `message`; a message without a blank line is all header (or all body when its
    /// first line is no field), which is how it would be read anyway.
    pub fn parse(message: &[u8]) -> Edit {
        let mut fields: Vec<Vec<u8>> = Vec::new();
        let mut at = 0;
        while at < message.len() {
            let end = message[at..].iter().position(|&b| b == b'\n').map_or(message.len(), |i| at + i + 1);
            let line = &message[at..end];
            if line == b"\r\n" || line == b"\n" {
                break;
            }
            let continuation = line[0] == b' ' || line[0] == b'\t';
            match fields.last_mut() {
                Some(field) if continuation => field.extend_from_slice(line),
                _ if continuation || !line.contains(&b':') => break,
                _ => fields.push(line.to_vec()),
            }
            at = end;
        }
        Edit { fields, body: message[at..].to_vec() }
    }

    /// The header fields, each with its name and value (unfolded only of its final CRLF).
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields.iter().map(|f| split_field(f))
    }

    /// The body, after the blank line.
    pub fn body(&self) -> &[u8] {
        self.body.strip_prefix(b"\r\n").or_else(|| self.body.strip_prefix(b"\n")).unwrap_or(&self.body)
    }

    /// Replaces the body (after the blank line).
    pub fn set_body(&mut self, body: Vec<u8>) {
        let mut new = b"\r\n".to_vec();
        new.extend_from_slice(&body);
        self.body = new;
    }

    /// Removes the `occurrence`th (from 1) field called `name`, or every one for 0.
    pub fn remove(&mut self, name: &str, occurrence: usize) {
        let mut seen = 0;
        self.fields.retain(|f| {
            if !named(f, name) {
                return true;
            }
            seen += 1;
            occurrence != 0 && seen != occurrence
        });
    }

    /// Sets the `occurrence`th (from 1) field called `name` to `value`; an empty value removes
    /// it, and one past the last adds it at the end (the milter protocol's rules).
    pub fn change(&mut self, name: &str, occurrence: usize, value: &str) {
        let occurrence = occurrence.max(1);
        let position =
            self.fields.iter().enumerate().filter(|(_, f)| named(f, name)).nth(occurrence - 1).map(|(i, _)| i);
        match (position, value.is_empty()) {
            (Some(i), true) => {
                self.fields.remove(i);
            }
            (Some(i), false) => self.fields[i] = field(name, value),
            (None, true) => {}
            (None, false) => self.fields.push(field(name, value)),
        }
    }

    /// Inserts a field before the `index`th (from 0), or at the end past the last.
    pub fn insert(&mut self, index: usize, name: &str, value: &str) {
        let index = index.min(self.fields.len());
        self.fields.insert(index, field(name, value));
    }

    /// Puts a field at the end of the header block.
    pub fn append(&mut self, name: &str, value: &str) {
        self.fields.push(field(name, value));
    }

    /// The message's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.fields.iter().map(Vec::len).sum::<usize>() + self.body.len());
        for f in &self.fields {
            out.extend_from_slice(f);
        }
        out.extend_from_slice(&self.body);
        out
    }
}

/// One header field's bytes. A line break in the value stays only as folding (followed by a
/// space or tab, written CRLF); any other is dropped, so that a filter's text cannot end the
/// field early and add fields of its own.
pub fn field(name: &str, value: &str) -> Vec<u8> {
    let mut out = format!("{name}: ");
    let mut chars = value.trim().chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\r' && c != '\n' {
            out.push(c);
            continue;
        }
        while chars.next_if(|&n| n == '\r' || n == '\n').is_some() {}
        if chars.peek().is_some_and(|&n| n == ' ' || n == '\t') {
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// A field's name and value, the value without the space after the colon and the final CRLF.
fn split_field(f: &[u8]) -> (&[u8], &[u8]) {
    let colon = f.iter().position(|&b| b == b':').unwrap_or(f.len());
    let name = f[..colon].trim_ascii_end();
    let mut value = f.get(colon + 1..).unwrap_or(&[]);
    value = value.strip_prefix(b" ").unwrap_or(value);
    value = value.strip_suffix(b"\n").unwrap_or(value);
    value = value.strip_suffix(b"\r").unwrap_or(value);
    (name, value)
}

fn named(f: &[u8], name: &str) -> bool {
    split_field(f).0.eq_ignore_ascii_case(name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] = b"Subject: hi\r\nX-A: 1\r\n folded\r\nX-A: 2\r\n\r\nbody\r\n";

    #[test]
    fn parses_and_gives_the_same_bytes_back() {
        let e = Edit::parse(MESSAGE);
        assert_eq!(e.to_bytes(), MESSAGE);
        let fields: Vec<_> = e.fields().collect();
        assert_eq!(fields[1], (&b"X-A"[..], &b"1\r\n folded"[..]));
        assert_eq!(e.body(), b"body\r\n");
    }

    #[test]
    fn edits_by_occurrence() {
        let mut e = Edit::parse(MESSAGE);
        e.change("x-a", 2, "two");
        e.remove("X-A", 1);
        e.insert(0, "X-Top", "t\r\nInjected: yes");
        e.change("Subject", 1, "");
        e.set_body(b"new\r\n".to_vec());
        assert_eq!(e.to_bytes(), b"X-Top: tInjected: yes\r\nx-a: two\r\n\r\nnew\r\n");
        e.remove("X-A", 0);
        e.change("X-New", 3, "n");
        assert_eq!(e.to_bytes(), b"X-Top: tInjected: yes\r\nX-New: n\r\n\r\nnew\r\n");
    }

    #[test]
    fn values_keep_folding_but_no_new_fields() {
        assert_eq!(field("X-R", "a;\n\tb;\r\n c"), b"X-R: a;\r\n\tb;\r\n c\r\n");
        assert_eq!(field("X-R", "a\r\nBcc: x@y\r\n"), b"X-R: aBcc: x@y\r\n");
    }

    #[test]
    fn a_message_without_a_header_block_is_all_body() {
        let e = Edit::parse(b"no header here\r\n");
        assert_eq!(e.fields().count(), 0);
        assert_eq!(e.to_bytes(), b"no header here\r\n");
    }
}
