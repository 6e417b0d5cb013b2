//! BINARY[part] and BINARY.SIZE[part] (RFC 3516): a part's content with its
//! Content-Transfer-Encoding undone, by mail-parser's base64 and quoted-printable decoders.

use std::borrow::Cow;

use mail_parser::Message;
use mail_parser::decoders::base64::base64_decode;
use mail_parser::decoders::quoted_printable::quoted_printable_decode;

use super::{PartRef, header};

/// A part whose Content-Transfer-Encoding is none this server can undo: the FETCH fails with
/// `NO [UNKNOWN-CTE]` (RFC 3516 §4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownCte(pub String);

/// The decoded content of the part `path` names.
///
/// An empty path (`BINARY[]`) is the whole message as stored: a message's header is never
/// transfer-encoded, so there is nothing to undo. A part that does not exist is empty, as
/// BODY[] answers it; so are multipart and message/rfc822 parts left as they are, since RFC
/// 2045 §6.4 allows them only the identity encodings.
pub fn extract<'a>(raw: &'a [u8], message: Option<&'a Message<'a>>, path: &[u32]) -> Result<Cow<'a, [u8]>, UnknownCte> {
    if path.is_empty() {
        return Ok(Cow::Borrowed(raw));
    }
    let Some(part) = message.and_then(PartRef::root).and_then(|root| root.find(path)) else {
        return Ok(Cow::Borrowed(&[]));
    };
    decode(part.body(), header::first(part.header(), "Content-Transfer-Encoding").as_deref())
}

/// Undoes the Content-Transfer-Encoding named by `encoding` (the field's value; `None` when the
/// part has no such field, which means 7bit).
///
/// Decoding is lenient, as mail readers are: base64 ignores characters outside its alphabet
/// (RFC 2045 §6.8 asks for that), and quoted-printable that does not decode (an `=` followed by
/// something other than two hex digits or a line end) is returned as stored.
pub fn decode<'a>(body: &'a [u8], encoding: Option<&[u8]>) -> Result<Cow<'a, [u8]>, UnknownCte> {
    let name = encoding.map(mechanism).unwrap_or_default();
    match name.as_str() {
        "" | "7bit" | "8bit" | "binary" => Ok(Cow::Borrowed(body)),
        "base64" => {
            let alphabet: Vec<u8> =
                body.iter().copied().filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')).collect();
            Ok(Cow::Owned(base64_decode(&alphabet).unwrap_or_default()))
        }
        "quoted-printable" => Ok(quoted_printable_decode(body).map_or(Cow::Borrowed(body), Cow::Owned)),
        _ => Err(UnknownCte(name)),
    }
}

/// The mechanism of a Content-Transfer-Encoding value, lower-cased, without a trailing comment.
fn mechanism(value: &[u8]) -> String {
    let token = value.split(|&b| b.is_ascii_whitespace() || b == b'(').next().unwrap_or_default();
    String::from_utf8_lossy(token).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::super::section::tests::NESTED;
    use super::*;

    fn get(raw: &[u8], path: &[u32]) -> Result<Vec<u8>, UnknownCte> {
        let message = parse(raw);
        extract(raw, message.as_ref(), path).map(Cow::into_owned)
    }

    #[test]
    fn encodings() {
        assert_eq!(decode(b"plain\r\n", None).unwrap().as_ref(), b"plain\r\n");
        assert_eq!(decode(b"8-bit \xff", Some(b"8BIT")).unwrap().as_ref(), b"8-bit \xff");
        assert_eq!(decode(b"AAEC\r\nAw==\r\n", Some(b"Base64")).unwrap().as_ref(), b"\0\x01\x02\x03");
        assert_eq!(decode(b"AA*EC Aw==", Some(b"base64 (with a comment)")).unwrap().as_ref(), b"\0\x01\x02\x03");
        assert_eq!(
            decode(b"caf=C3=A9 soft=\r\nbreak\r\n", Some(b"quoted-printable")).unwrap().as_ref(),
            "café softbreak\r\n".as_bytes()
        );
        assert_eq!(decode(b"bad =ZZ\r\n", Some(b"quoted-printable")).unwrap().as_ref(), b"bad =ZZ\r\n");
        assert_eq!(decode(b"begin 644 x", Some(b"x-uuencode")), Err(UnknownCte("x-uuencode".into())));
    }

    #[test]
    fn parts_of_a_message() {
        assert_eq!(get(NESTED, &[]).unwrap(), NESTED, "BINARY[] is the message as stored");
        assert_eq!(get(NESTED, &[1, 1]).unwrap(), b"plain text\r\nsecond line");
        assert_eq!(get(NESTED, &[3]).unwrap(), b"\0\x01\x02\x03", "the base64 attachment, decoded");
        assert!(get(NESTED, &[2]).unwrap().starts_with(b"From: Carol"), "an attached message is left as it is");
        assert_eq!(get(NESTED, &[9]).unwrap(), b"");
        let single = b"Subject: x\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\na=3Db\r\n";
        assert_eq!(get(single, &[1]).unwrap(), b"a=b\r\n", "part 1 of a single-part message is its body");
        let unknown = b"Subject: x\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n";
        assert_eq!(get(unknown, &[1]), Err(UnknownCte("x-uuencode".into())));
        assert_eq!(get(unknown, &[]).unwrap(), unknown.to_vec(), "the whole message needs no decoding");
    }
}
