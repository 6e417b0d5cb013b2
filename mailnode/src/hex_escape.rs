//! Text with two-hex-digit escapes after a marker byte: URLs' `%XX` (RFC 3986), SMTP's
//! xtext `+XX` (RFC 3461) and the file names of Sieve scripts. One decoder for all, strict: a
//! marker not followed by two hex digits, or bytes that are not UTF-8, make the text invalid.

/// `text` with every byte that `keep` refuses, and the marker itself, as `marker` + two
/// upper-case hex digits.
pub fn encode(text: &str, marker: u8, keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b != marker && keep(b) {
            out.push(char::from(b));
        } else {
            out.push(char::from(marker));
            out.push_str(&format!("{b:02X}"));
        }
    }
    out
}

/// `text` with every `marker` + two hex digits replaced by that byte; `None` if it is not valid.
pub fn decode(text: &str, marker: u8) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == marker {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::{decode, encode};

    #[test]
    fn what_is_encoded_decodes_back() {
        let keep = |b: u8| b.is_ascii_alphanumeric();
        for text in ["plain", "a+b", "vacation 2026/ünï", ""] {
            let encoded = encode(text, b'+', keep);
            assert!(encoded.bytes().all(|b| b == b'+' || keep(b)), "{encoded}");
            assert_eq!(decode(&encoded, b'+').as_deref(), Some(text));
        }
    }

    #[test]
    fn escapes_are_decoded_and_broken_ones_refused() {
        assert_eq!(decode("a%40b%2Fc", b'%').as_deref(), Some("a@b/c"));
        assert_eq!(decode("QQ+2B314", b'+').as_deref(), Some("QQ+314"));
        assert_eq!(decode("50%", b'%'), None);
        assert_eq!(decode("+zz", b'+'), None);
        assert_eq!(decode("%ff", b'%'), None, "not UTF-8");
    }
}
