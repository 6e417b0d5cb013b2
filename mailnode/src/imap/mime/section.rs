//! BODY[section]<partial>: which bytes of a message a section names (RFC 3501 §6.4.5).

use std::borrow::Cow;

use mail_parser::Message;

use super::PartRef;
use super::header;

/// A section specification, independent of the parser's types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Section {
    /// `BODY[]` or `BODY[1.2]`: the whole message, or a part's body.
    Part(Vec<u32>),
    /// `HEADER` of the message or of an attached message part.
    Header(Vec<u32>),
    /// `HEADER.FIELDS (…)` or, with `exclude`, `HEADER.FIELDS.NOT (…)`.
    Fields { path: Vec<u32>, names: Vec<Vec<u8>>, exclude: bool },
    /// `TEXT` of the message or of an attached message part.
    Text(Vec<u32>),
    /// `1.2.MIME`: the MIME header of a part.
    Mime(Vec<u32>),
}

/// The bytes `section` names in the message `raw` (parsed as `message`); empty when the
/// section does not exist, as IMAP servers answer a FETCH of a missing part.
pub fn extract<'a>(raw: &'a [u8], message: Option<&'a Message<'a>>, section: &Section) -> Cow<'a, [u8]> {
    let Some(root) = message.and_then(PartRef::root) else {
        return match section {
            Section::Part(path) if path.is_empty() => Cow::Borrowed(raw),
            _ => Cow::Borrowed(&[]),
        };
    };
    // The message a HEADER/TEXT/HEADER.FIELDS section addresses: the top one, or the one an
    // attached message/rfc822 part holds.
    let message_root = |path: &[u32]| -> Option<PartRef<'_, '_>> {
        if path.is_empty() { Some(root) } else { root.find(path)?.nested() }
    };
    match section {
        Section::Part(path) if path.is_empty() => Cow::Borrowed(raw),
        Section::Part(path) => root.find(path).map_or(Cow::Borrowed(&[]), |p| Cow::Borrowed(p.body())),
        Section::Header(path) => message_root(path).map_or(Cow::Borrowed(&[]), |p| Cow::Borrowed(p.header())),
        Section::Text(path) => Cow::Borrowed(text(root, path).unwrap_or_default()),
        Section::Fields { path, names, exclude } => match message_root(path) {
            Some(p) => {
                let names: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
                Cow::Owned(header::select(p.header(), &names, *exclude))
            }
            None => Cow::Borrowed(&[]),
        },
        Section::Mime(path) => root.find(path).map_or(Cow::Borrowed(&[]), |p| Cow::Borrowed(p.header())),
    }
}

/// The TEXT of the message at `path` (RFC 3501 §6.4.5): all of that message after its header.
/// A multipart body as the parser bounds it stops at the closing boundary, so TEXT runs to the
/// end of the message's bytes instead, keeping the epilogue after that boundary.
fn text<'a>(root: PartRef<'a, 'a>, path: &[u32]) -> Option<&'a [u8]> {
    if path.is_empty() {
        return Some(root.text_to(u32::MAX));
    }
    let enclosing = root.find(path)?;
    let inner = enclosing.nested()?;
    // mail-parser keeps an attached message's parts at offsets into the outer bytes (the
    // attached message ends where the enclosing part does), unless it had to decode the part
    // first (a base64 message/rfc822), when they index a copy that holds just that message.
    let shared = std::ptr::eq(inner.message.raw_message.as_ptr(), enclosing.message.raw_message.as_ptr());
    Some(inner.text_to(if shared { enclosing.part().offset_end } else { u32::MAX }))
}

/// Cuts `<origin.length>` out of section bytes.
pub fn partial(bytes: &[u8], origin: u32, length: u32) -> &[u8] {
    let start = (origin as usize).min(bytes.len());
    let end = start.saturating_add(length as usize).min(bytes.len());
    &bytes[start..end]
}

impl Section {
    /// How the section is named in the FETCH response (`BODY[<this>]`).
    pub fn spec(&self) -> String {
        let path = |p: &[u32]| p.iter().map(u32::to_string).collect::<Vec<_>>().join(".");
        let with = |p: &[u32], what: &str| if p.is_empty() { what.to_string() } else { format!("{}.{what}", path(p)) };
        match self {
            Section::Part(p) => path(p),
            Section::Header(p) => with(p, "HEADER"),
            Section::Text(p) => with(p, "TEXT"),
            Section::Mime(p) => with(p, "MIME"),
            Section::Fields { path: p, names, exclude } => {
                let names: Vec<String> = names.iter().map(|n| String::from_utf8_lossy(n).into_owned()).collect();
                let what = if *exclude { "HEADER.FIELDS.NOT" } else { "HEADER.FIELDS" };
                format!("{} ({})", with(p, what), names.join(" "))
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::parse;
    use super::*;

    pub(crate) const NESTED: &[u8] = b"From: Alice <alice@example.test>\r\n\
To: bob@example.test\r\n\
Subject: nested\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"outer\"\r\n\
\r\n\
preamble\r\n\
--outer\r\n\
Content-Type: multipart/alternative; boundary=\"inner\"\r\n\
\r\n\
--inner\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
plain text\r\n\
second line\r\n\
--inner\r\n\
Content-Type: text/html\r\n\
\r\n\
<p>html</p>\r\n\
--inner--\r\n\
--outer\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
From: Carol <carol@example.test>\r\n\
Subject: attached\r\n\
Content-Type: text/plain\r\n\
\r\n\
attached body\r\n\
--outer\r\n\
Content-Type: application/octet-stream; name=\"a.bin\"\r\n\
Content-Transfer-Encoding: base64\r\n\
Content-Disposition: attachment; filename=\"a.bin\"\r\n\
\r\n\
AAECAw==\r\n\
--outer--\r\n";

    fn get(section: Section) -> Vec<u8> {
        let message = parse(NESTED);
        extract(NESTED, message.as_ref(), &section).into_owned()
    }

    #[test]
    fn top_level_sections() {
        assert_eq!(get(Section::Part(vec![])), NESTED);
        let header = get(Section::Header(vec![]));
        assert!(header.starts_with(b"From: Alice"));
        assert!(header.ends_with(b"boundary=\"outer\"\r\n\r\n"));
        assert!(get(Section::Text(vec![])).starts_with(b"preamble\r\n--outer"));
    }

    #[test]
    fn part_numbers() {
        assert_eq!(get(Section::Part(vec![1, 1])), b"plain text\r\nsecond line");
        assert_eq!(get(Section::Part(vec![1, 2])), b"<p>html</p>");
        assert_eq!(get(Section::Mime(vec![1, 2])), b"Content-Type: text/html\r\n\r\n");
        assert_eq!(get(Section::Part(vec![3])), b"AAECAw==");
        assert_eq!(get(Section::Part(vec![4])), b"");
        assert_eq!(get(Section::Part(vec![9, 1])), b"");
    }

    #[test]
    fn attached_message() {
        let whole = get(Section::Part(vec![2]));
        assert!(whole.starts_with(b"From: Carol"));
        assert!(whole.ends_with(b"attached body"));
        assert_eq!(get(Section::Part(vec![2, 1])), b"attached body");
        assert_eq!(get(Section::Text(vec![2])), b"attached body");
        assert_eq!(
            get(Section::Fields { path: vec![2], names: vec![b"subject".to_vec()], exclude: false }),
            b"Subject: attached\r\n\r\n"
        );
        assert!(get(Section::Header(vec![2])).ends_with(b"text/plain\r\n\r\n"));
    }

    #[test]
    fn single_part_message() {
        let raw = b"Subject: x\r\n\r\nbody\r\n";
        let message = parse(raw);
        assert_eq!(extract(raw, message.as_ref(), &Section::Part(vec![1])).as_ref(), b"body\r\n");
        assert_eq!(extract(raw, message.as_ref(), &Section::Part(vec![2])).as_ref(), b"");
        assert_eq!(partial(b"0123456789", 8, 5), b"89");
        assert_eq!(partial(b"0123", 9, 5), b"");
    }

    #[test]
    fn text_of_an_attached_message_runs_to_its_end() {
        // The TEXT of a message/rfc822 part is all of the attached message after its header:
        // the epilogue after the closing boundary of its multipart body too (imaptest's
        // fetch-body-message-rfc822-mime).
        let raw = b"From: a@example.test\r\nContent-Type: message/rfc822\r\n\r\n\
From: b@example.test\r\nContent-Type: multipart/digest; boundary=\"foo\"\r\n\r\n\
prologue\r\n\r\n--foo \r\n\r\nFrom: m1@example.test\r\n\r\nm1 body\r\n\r\n--foo--\r\n\r\nepilogue\r\n";
        let message = parse(raw);
        let text = extract(raw, message.as_ref(), &Section::Text(vec![1]));
        assert_eq!(
            String::from_utf8_lossy(&text),
            "prologue\r\n\r\n--foo \r\n\r\nFrom: m1@example.test\r\n\r\nm1 body\r\n\r\n--foo--\r\n\r\nepilogue\r\n"
        );
        let whole = extract(raw, message.as_ref(), &Section::Part(vec![1]));
        assert!(whole.ends_with(b"epilogue\r\n"), "{}", String::from_utf8_lossy(&whole));
        let top = extract(raw, message.as_ref(), &Section::Text(vec![]));
        assert!(top.ends_with(b"epilogue\r\n"));
    }
}
