//! Raw header fields of a message or MIME part, as the bytes on disk: HEADER.FIELDS, ENVELOPE
//! strings and SEARCH HEADER all need them unparsed.

/// One header field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// The field name, without the colon.
    pub name: &'a [u8],
    /// The value after the colon, with its folding, without the final line end.
    pub value: &'a [u8],
    /// The whole field with its line end, exactly as stored.
    pub raw: &'a [u8],
}

/// The fields of a header block; stops at the empty line that ends it.
pub fn fields(header: &[u8]) -> impl Iterator<Item = Field<'_>> {
    let mut rest = header;
    std::iter::from_fn(move || {
        loop {
            if rest.is_empty() || rest.starts_with(b"\r\n") || rest.starts_with(b"\n") {
                return None;
            }
            // A field runs until a line end followed by something that is not folding whitespace.
            let mut end = 0;
            let mut value_end = rest.len();
            while end < rest.len() {
                match rest[end..].iter().position(|&b| b == b'\n') {
                    None => {
                        end = rest.len();
                        value_end = end;
                        break;
                    }
                    Some(p) => {
                        let nl = end + p;
                        end = nl + 1;
                        if !matches!(rest.get(end), Some(b' ' | b'\t')) {
                            value_end = if nl > 0 && rest[nl - 1] == b'\r' { nl - 1 } else { nl };
                            break;
                        }
                    }
                }
            }
            let raw = &rest[..end];
            let line = &rest[..value_end.min(end)];
            rest = &rest[end..];
            if let Some(colon) = line.iter().position(|&b| b == b':') {
                let name = trim(&line[..colon]);
                if !name.is_empty() {
                    return Some(Field { name, value: &line[colon + 1..], raw });
                }
            }
            // A line without a colon is not a field; skip it as mail readers do.
        }
    })
}

/// Trims ASCII whitespace at both ends.
pub fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |p| p + 1);
    &bytes[start..end.max(start)]
}

/// A value with its folding removed (RFC 5322 §2.2.3) and outer whitespace trimmed.
pub fn unfold(value: &[u8]) -> Vec<u8> {
    let unfolded: Vec<u8> = value.iter().copied().filter(|&b| b != b'\r' && b != b'\n').collect();
    trim(&unfolded).to_vec()
}

/// The first field named `name` (case-insensitive), unfolded.
pub fn first(header: &[u8], name: &str) -> Option<Vec<u8>> {
    fields(header).find(|f| f.name.eq_ignore_ascii_case(name.as_bytes())).map(|f| unfold(f.value))
}

/// The fields whose name is (or, with `exclude`, is not) in `names`, then the empty line, as
/// BODY[HEADER.FIELDS (…)] and BODY[HEADER.FIELDS.NOT (…)] return them.
pub fn select(header: &[u8], names: &[&[u8]], exclude: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for field in fields(header) {
        let listed = names.iter().any(|n| n.eq_ignore_ascii_case(field.name));
        if listed != exclude {
            out.extend_from_slice(field.raw);
            if !field.raw.ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &[u8] = b"From: a@b.c\r\nSubject: hello\r\n  world\r\nbogus line\r\nX-Empty:\r\n\r\nbody";

    #[test]
    fn splits_fields() {
        let f: Vec<Field<'_>> = fields(HEADER).collect();
        assert_eq!(f.len(), 3);
        assert_eq!(f[1].name, b"Subject");
        assert_eq!(f[1].raw, b"Subject: hello\r\n  world\r\n");
        assert_eq!(unfold(f[1].value), b"hello  world");
        assert_eq!(f[2].value, b"");
        assert_eq!(first(HEADER, "subject").as_deref(), Some(&b"hello  world"[..]));
    }

    #[test]
    fn selects_fields() {
        assert_eq!(select(HEADER, &[b"FROM"], false), b"From: a@b.c\r\n\r\n");
        assert_eq!(select(HEADER, &[b"from", b"subject"], true), b"X-Empty:\r\n\r\n");
        assert_eq!(select(b"Foo: bar", &[b"foo"], false), b"Foo: bar\r\n\r\n");
    }
}
