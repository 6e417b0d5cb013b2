//! `Authentication-Results:` fields that claim to be ours but came with the message
//! (RFC 8601 §5): a sender's forgery, or a leftover of a loop. Readers trust the fields
//! naming our authserv-id, so only the one we add may carry it.

/// The message without the `Authentication-Results:` fields whose authserv-id is
/// `authserv_id`; `None` when it has none.
pub fn strip(message: &[u8], authserv_id: &str) -> Option<Vec<u8>> {
    let header_end = header_end(message);
    let mut out = Vec::with_capacity(message.len());
    let mut stripped = false;
    let mut at = 0;
    while at < header_end {
        let end = field_end(message, at, header_end);
        let field = &message[at..end];
        if is_ours(field, authserv_id) {
            stripped = true;
        } else {
            out.extend_from_slice(field);
        }
        at = end;
    }
    if !stripped {
        return None;
    }
    out.extend_from_slice(&message[header_end..]);
    Some(out)
}

/// Where the header section ends: at the start of the empty line, or the message's end.
fn header_end(message: &[u8]) -> usize {
    let mut at = 0;
    while at < message.len() {
        if message[at..].starts_with(b"\r\n") || message[at] == b'\n' {
            return at;
        }
        at = line_end(message, at, message.len());
    }
    message.len()
}

/// The end of the line that starts at `at` (after its LF), at most `limit`.
fn line_end(message: &[u8], at: usize, limit: usize) -> usize {
    match message[at..limit].iter().position(|&b| b == b'\n') {
        Some(i) => at + i + 1,
        None => limit,
    }
}

/// The end of the field that starts at `at`: its continuation lines start with WSP.
fn field_end(message: &[u8], at: usize, limit: usize) -> usize {
    let mut end = line_end(message, at, limit);
    while end < limit && matches!(message[end], b' ' | b'\t') {
        end = line_end(message, end, limit);
    }
    end
}

/// Whether `field` is an `Authentication-Results:` field naming `authserv_id`.
fn is_ours(field: &[u8], authserv_id: &str) -> bool {
    let Some(colon) = field.iter().position(|&b| b == b':') else { return false };
    if !field[..colon].trim_ascii_end().eq_ignore_ascii_case(b"Authentication-Results") {
        return false;
    }
    let value = skip_cfws(&field[colon + 1..]);
    // The authserv-id ends at CFWS, the optional version number's start, or the `;`.
    let id_len =
        value.iter().position(|&b| matches!(b, b';' | b' ' | b'\t' | b'\r' | b'\n' | b'(')).unwrap_or(value.len());
    let id = &value[..id_len];
    let id = id.strip_prefix(b"\"").and_then(|i| i.strip_suffix(b"\"")).unwrap_or(id);
    id.eq_ignore_ascii_case(authserv_id.as_bytes())
}

/// `value` after leading whitespace and (possibly nested) comments.
fn skip_cfws(mut value: &[u8]) -> &[u8] {
    loop {
        value = value.trim_ascii_start();
        if value.first() != Some(&b'(') {
            return value;
        }
        let mut depth = 0usize;
        let mut end = value.len();
        for (i, &b) in value.iter().enumerate() {
            match b {
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        value = &value[end..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_ours_keeps_others_and_the_body() {
        let message = b"Received: from x\r\nAuthentication-Results: mx.ours.test;\r\n\tdkim=pass header.d=bank.test\r\nauthentication-results:  (forged) MX.OURS.TEST 1; spf=pass\r\nAuthentication-Results: mx.theirs.test; spf=fail\r\nSubject: hi\r\n\r\nAuthentication-Results: mx.ours.test; body text\r\n";
        let out = strip(message, "mx.ours.test").expect("stripped");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Received: from x\r\nAuthentication-Results: mx.theirs.test; spf=fail\r\nSubject: hi\r\n\r\nAuthentication-Results: mx.ours.test; body text\r\n"
        );
    }

    #[test]
    fn nothing_to_strip() {
        let message = b"Authentication-Results: mx.ours.test.evil; spf=pass\r\nX-Authentication-Results: mx.ours.test\r\n\r\nbody";
        assert_eq!(strip(message, "mx.ours.test"), None);
        assert_eq!(strip(b"", "mx.ours.test"), None);
        assert_eq!(strip(b"Authentication-Results: mx.ours.test", "mx.ours.test"), Some(Vec::new()));
    }

    #[test]
    fn bare_lf_and_unterminated_comment() {
        let message = b"Authentication-Results: ((nested) c) mx.ours.test;\n none\nA: b\n\nbody";
        assert_eq!(strip(message, "mx.ours.test").unwrap(), b"A: b\n\nbody");
        assert_eq!(strip(b"Authentication-Results: (mx.ours.test\r\n\r\n", "mx.ours.test"), None);
    }
}
