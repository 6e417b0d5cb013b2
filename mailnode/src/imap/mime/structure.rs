//! BODY and BODYSTRUCTURE (RFC 3501 §7.4.2): the MIME tree with sizes and line counts taken
//! from the raw bytes.

use mail_parser::{ContentType, HeaderName, HeaderValue};

use super::header;
use super::{PartRef, envelope, line_count};
use crate::imap::response::Data;

/// Deepest nesting rendered; deeper parts are cut off (a hostile message must not recurse forever).
const MAX_DEPTH: usize = 32;
/// Most parts opened for one message. mail-parser can list one part under several multiparts,
/// so within `MAX_DEPTH` a message of a few hundred bytes named exponentially many (fuzz
/// finding F14: one rendering ran past 30 s); past this budget, parts are shown unopened.
const MAX_PARTS: usize = 1000;

/// Appends BODYSTRUCTURE (`extended`) or BODY of the part `part`.
pub fn write(out: &mut Data, part: PartRef<'_, '_>, extended: bool) {
    let mut budget = MAX_PARTS;
    write_part(out, part, extended, 0, false, &mut budget);
}

fn content_type<'m>(part: PartRef<'m, '_>) -> Option<&'m ContentType<'m>> {
    header_value(part, HeaderName::ContentType).and_then(HeaderValue::as_content_type)
}

/// The last field named `name`: the one mail-parser obeys when it opens the part, so the type
/// shown always agrees with how the part was parsed.
fn header_value<'m>(part: PartRef<'m, '_>, name: HeaderName<'static>) -> Option<&'m HeaderValue<'m>> {
    part.part().headers.iter().rev().find(|h| h.name == name).map(|h| &h.value)
}

fn write_params(out: &mut Data, ct: Option<&ContentType<'_>>, default: Option<(&str, &str)>) {
    let attrs: Vec<(&str, &str)> = match ct.and_then(|c| c.attributes()) {
        Some(a) if !a.is_empty() => a.iter().map(|a| (a.name.as_ref(), a.value.as_ref())).collect(),
        _ => default.into_iter().collect(),
    };
    if attrs.is_empty() {
        out.raw("NIL");
        return;
    }
    out.raw("(");
    for (i, (name, value)) in attrs.iter().enumerate() {
        if i > 0 {
            out.raw(" ");
        }
        out.string(name.as_bytes()).raw(" ").string(value.as_bytes());
    }
    out.raw(")");
}

/// The disposition, language and location extension fields shared by all part kinds.
fn write_extension_tail(out: &mut Data, part: PartRef<'_, '_>) {
    let head = part.header();
    out.raw(" ");
    match header_value(part, HeaderName::ContentDisposition).and_then(HeaderValue::as_content_type) {
        Some(disposition) => {
            out.raw("(").string(disposition.ctype().as_bytes()).raw(" ");
            write_params(out, Some(disposition), None);
            out.raw(")");
        }
        None => {
            out.raw("NIL");
        }
    }
    out.raw(" ");
    match header::first(head, "Content-Language") {
        Some(langs) => {
            let langs: Vec<&[u8]> = langs.split(|&b| b == b',').map(header::trim).filter(|l| !l.is_empty()).collect();
            if langs.is_empty() {
                out.raw("NIL");
            } else {
                out.raw("(");
                for (i, lang) in langs.iter().enumerate() {
                    if i > 0 {
                        out.raw(" ");
                    }
                    out.string(lang);
                }
                out.raw(")");
            }
        }
        None => {
            out.raw("NIL");
        }
    }
    out.raw(" ");
    out.nstring(header::first(head, "Content-Location").as_deref());
}

fn write_part(
    out: &mut Data,
    part: PartRef<'_, '_>,
    extended: bool,
    depth: usize,
    in_digest: bool,
    budget: &mut usize,
) {
    let ct = content_type(part);
    // Whether this part's children or attached message may still be opened.
    let open = depth < MAX_DEPTH && *budget > 0;
    *budget = budget.saturating_sub(1);
    if let Some(children) = part.children().filter(|_| open) {
        out.raw("(");
        let digest = ct.and_then(|c| c.subtype()).is_some_and(|s| s.eq_ignore_ascii_case("digest"));
        if children.is_empty() {
            // RFC 3501's grammar needs at least one body; an empty multipart shows as empty text.
            out.raw("(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0)");
        }
        for child in children {
            write_part(out, child, extended, depth + 1, digest, budget);
        }
        out.raw(" ");
        out.string(ct.and_then(|c| c.subtype()).unwrap_or("mixed").as_bytes());
        if extended {
            out.raw(" ");
            write_params(out, ct, None);
            write_extension_tail(out, part);
        }
        out.raw(")");
        return;
    }
    let head = part.header();
    let body = part.body();
    let nested = part.nested().filter(|_| open);
    let (kind, subtype, default_params) = match ct {
        Some(c) => (c.ctype(), c.subtype().unwrap_or(""), None),
        None if in_digest || nested.is_some() => ("message", "rfc822", None),
        None => ("text", "plain", Some(("charset", "us-ascii"))),
    };
    out.raw("(");
    out.string(kind.as_bytes()).raw(" ").string(subtype.as_bytes()).raw(" ");
    write_params(out, ct, default_params);
    out.raw(" ");
    out.nstring(header::first(head, "Content-ID").as_deref());
    out.raw(" ");
    out.nstring(header::first(head, "Content-Description").as_deref());
    out.raw(" ");
    let encoding = header::first(head, "Content-Transfer-Encoding").filter(|e| !e.is_empty());
    out.string(encoding.as_deref().unwrap_or(b"7bit"));
    out.raw(format_args!(" {}", body.len()));
    if kind.eq_ignore_ascii_case("text") {
        out.raw(format_args!(" {}", line_count(body)));
    } else if kind.eq_ignore_ascii_case("message") && subtype.eq_ignore_ascii_case("rfc822") {
        // IMAP4rev1's body-type-msg is message/rfc822 only (message/global and the rest are
        // basic bodies), and it always carries envelope, body and lines: when the part could
        // not be opened, or lies past the depth limit, empty ones stand in.
        match nested {
            Some(inner) => {
                out.raw(" ");
                envelope::write(out, inner);
                out.raw(" ");
                write_part(out, inner, extended, depth + 1, false, budget);
            }
            None => {
                out.raw(" (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) (\"text\" \"plain\" NIL NIL NIL \"7bit\" 0 0)");
            }
        }
        out.raw(format_args!(" {}", line_count(body)));
    }
    if extended {
        out.raw(" ");
        out.nstring(header::first(head, "Content-MD5").as_deref());
        write_extension_tail(out, part);
    }
    out.raw(")");
}

#[cfg(test)]
mod tests {
    use super::super::{PartRef, parse};
    use super::*;

    fn structure(raw: &[u8], extended: bool) -> String {
        let message = parse(raw).expect("parses");
        let mut out = Data::fragment();
        write(&mut out, PartRef::root(&message).expect("root"), extended);
        String::from_utf8(out.into_bytes()).expect("utf-8")
    }

    #[test]
    fn message_fields_only_for_message_rfc822() {
        // The last Content-Type is the one mail-parser opens the part by (fuzz finding F9).
        let two = structure(
            b"Content-Type: message\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nx\r\n",
            false,
        );
        assert!(two.starts_with("(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 21 (NIL \"inner\""), "{two}");
        // message/global is a basic body in IMAP4rev1.
        let global = structure(b"Content-Type: message/global\r\n\r\nSubject: inner\r\n\r\nx\r\n", false);
        assert_eq!(global, "(\"message\" \"global\" NIL NIL NIL \"7bit\" 21)");
    }

    #[test]
    fn message_rfc822_at_the_depth_limit_keeps_its_fields() {
        // Fuzz finding F8: past MAX_DEPTH the attached message is not opened, but the grammar
        // still needs envelope, body and line count.
        let mut raw = Vec::new();
        for _ in 0..MAX_DEPTH + 2 {
            raw.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\n");
        }
        raw.extend_from_slice(b"Subject: last\r\n\r\nbody\r\n");
        let out = structure(&raw, false);
        let empty = "(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" ";
        let innermost = out.rfind(empty).expect("a message part");
        let tail = &out[innermost + empty.len()..];
        let after_size = tail.split_once(' ').expect("size").1;
        assert!(after_size.starts_with("(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) (\"text\""), "{after_size}");
    }

    #[test]
    fn parts_listed_under_several_multiparts_are_opened_a_bounded_number_of_times() {
        // Fuzz finding F14: 692 bytes whose parts mail-parser lists under several multiparts;
        // before the budget, rendering it did not finish within 30 s.
        let raw = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/mime-shared-parts.eml"));
        for extended in [false, true] {
            let out = structure(raw, extended);
            assert!(out.starts_with('(') && out.ends_with(')'), "{out}");
            assert!(out.len() < 4 << 20, "{} bytes", out.len());
        }
    }

    #[test]
    fn malformed_multipart_does_not_panic_in_debug_builds() {
        // Reaches mail-parser's `debug_assert!(false, …)` (F10) unless Cargo.toml turns its
        // debug assertions off, which this test checks for the dev profile.
        let raw = b"Content-Type: multipart;boundary=o\n\r\n--oContent-Type:message/rfc822\n\nContent-Type:message/rfc822\n\n\n--o--";
        structure(raw, true);
    }

    #[test]
    fn single_part() {
        assert_eq!(
            structure(b"Subject: x\r\n\r\nhello\r\nworld\r\n", true),
            "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 14 2 NIL NIL NIL NIL)"
        );
        assert_eq!(
            structure(
                b"Content-Type: TEXT/html; CHARSET=\"utf-8\"\r\nContent-Transfer-Encoding: QUOTED-PRINTABLE\r\n\r\n<p>",
                false
            ),
            "(\"text\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"QUOTED-PRINTABLE\" 3 1)"
        );
    }

    #[test]
    fn nested_multipart_with_attached_message() {
        let got = structure(crate::imap::mime::section::tests::NESTED, true);
        let expected = "(((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 23 2 NIL NIL NIL NIL)\
(\"text\" \"html\" NIL NIL NIL \"7bit\" 11 1 NIL NIL NIL NIL) \"alternative\" (\"boundary\" \"inner\") NIL NIL NIL)\
(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 94 \
(NIL \"attached\" ((\"Carol\" NIL \"carol\" \"example.test\")) ((\"Carol\" NIL \"carol\" \"example.test\")) \
((\"Carol\" NIL \"carol\" \"example.test\")) NIL NIL NIL NIL NIL) \
(\"text\" \"plain\" NIL NIL NIL \"7bit\" 13 1 NIL NIL NIL NIL) 5 NIL NIL NIL NIL)\
(\"application\" \"octet-stream\" (\"name\" \"a.bin\") NIL NIL \"base64\" 8 NIL (\"attachment\" (\"filename\" \"a.bin\")) NIL NIL) \
\"mixed\" (\"boundary\" \"outer\") NIL NIL NIL)";
        assert_eq!(got, expected);
        let body = structure(crate::imap::mime::section::tests::NESTED, false);
        assert!(body.ends_with("\"base64\" 8) \"mixed\")"), "{body}");
    }
}
