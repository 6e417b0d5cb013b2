//! ManageSieve replies (RFC 5804 §1.3, §4): the one place their bytes are written.

/// `OK [(code)] "text"`.
pub fn ok(out: &mut Vec<u8>, code: Option<&str>, text: &str) {
    status(out, "OK", code, text);
}

/// `NO [(code)] "text"`.
pub fn no(out: &mut Vec<u8>, code: Option<&str>, text: &str) {
    status(out, "NO", code, text);
}

/// `BYE [(code)] "text"`: the server closes after it.
pub fn bye(out: &mut Vec<u8>, code: Option<&str>, text: &str) {
    status(out, "BYE", code, text);
}

/// NOOP's answer with the client's tag (RFC 5804 §2.13).
pub fn ok_tag(out: &mut Vec<u8>, tag: &str) {
    out.extend_from_slice(b"OK (TAG ");
    string(out, tag.as_bytes());
    out.extend_from_slice(b") \"done\"\r\n");
}

fn status(out: &mut Vec<u8>, word: &str, code: Option<&str>, text: &str) {
    out.extend_from_slice(word.as_bytes());
    if let Some(code) = code {
        out.extend_from_slice(b" (");
        out.extend_from_slice(code.as_bytes());
        out.push(b')');
    }
    out.push(b' ');
    string(out, text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A string: quoted when it can be, a literal when it holds line ends, NULs or is long.
pub fn string(out: &mut Vec<u8>, text: &[u8]) {
    if text.len() > 1024 || text.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)) {
        literal(out, text);
        return;
    }
    out.push(b'"');
    for &b in text {
        if matches!(b, b'"' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// `{N}` CRLF and the bytes.
pub fn literal(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", bytes.len()).as_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_quoted_or_literal_as_their_bytes_need() {
        let mut out = Vec::new();
        string(&mut out, b"say \"hi\" \\ bye");
        assert_eq!(out, b"\"say \\\"hi\\\" \\\\ bye\"");
        out.clear();
        no(&mut out, Some("NONEXISTENT"), "line 1:\r\nbad");
        assert_eq!(out, b"NO (NONEXISTENT) {12}\r\nline 1:\r\nbad\r\n");
    }
}
