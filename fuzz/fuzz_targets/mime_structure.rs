//! Fuzzes ENVELOPE, BODY and BODYSTRUCTURE generation and section extraction
//! (`sirms_mailnode::imap::mime`) with arbitrary message bytes.
//!
//! Checked:
//!
//! - nothing panics, whatever mail-parser makes of the bytes;
//! - ENVELOPE, BODY and BODYSTRUCTURE follow RFC 3501's grammar (checked by a strict
//!   recursive-descent parser here, at any depth): quoted strings only of printable ASCII,
//!   literals with the announced length and no NUL (CHAR8), the right fields per body type
//!   (message/rfc822 has envelope, body and lines; text has lines), addresses of four fields;
//! - imap-codec (the parser the project uses for commands; it stops at 8 levels) parses
//!   `* 1 FETCH (ENVELOPE … BODYSTRUCTURE … BODY …)` when the MIME tree is shallow;
//! - the message cache's form of the three (`mime::cache::Structure`) holds the same bytes
//!   and reads back as them, and arbitrary bytes read as a cached form (a damaged entry)
//!   give nothing rather than a panic;
//! - every part's section bytes (`n`, `n.MIME`, `n.HEADER`, `n.TEXT`, `HEADER.FIELDS`) and
//!   `partial` are cut without panics, and paths that do not exist give nothing.

#![no_main]

use imap_codec::ResponseCodec;
use imap_codec::decode::Decoder;
use libfuzzer_sys::fuzz_target;
use sirms_mailnode::imap::mime::cache::Structure;
use sirms_mailnode::imap::mime::section::{Section, extract, partial};
use sirms_mailnode::imap::mime::{PartRef, envelope, parse, structure};
use sirms_mailnode::imap::response::Data;

/// RFC 3501 §9, for what ENVELOPE and BODYSTRUCTURE contain.
struct P<'a> {
    s: &'a [u8],
    at: usize,
    depth: usize,
    max_depth: usize,
    /// Nesting of `body` productions.
    bodies: usize,
}

type R<T = ()> = Result<T, String>;

impl<'a> P<'a> {
    fn new(s: &'a [u8]) -> Self {
        P { s, at: 0, depth: 0, max_depth: 0, bodies: 0 }
    }
    fn err<T>(&self, what: &str) -> R<T> {
        let end = (self.at + 40).min(self.s.len());
        Err(format!("expected {what} at {}: {:?}", self.at, String::from_utf8_lossy(&self.s[self.at..end])))
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }
    fn lit(&mut self, t: &[u8]) -> R {
        if self.s[self.at..].starts_with(t) {
            self.at += t.len();
            Ok(())
        } else {
            self.err(&format!("{:?}", String::from_utf8_lossy(t)))
        }
    }
    fn try_lit(&mut self, t: &[u8]) -> bool {
        self.lit(t).is_ok()
    }
    fn sp(&mut self) -> R {
        self.lit(b" ")
    }
    fn open(&mut self) -> R {
        self.lit(b"(")?;
        self.depth += 1;
        self.max_depth = self.max_depth.max(self.depth);
        Ok(())
    }
    fn close(&mut self) -> R {
        self.lit(b")")?;
        self.depth -= 1;
        Ok(())
    }
    fn number(&mut self) -> R<u64> {
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        let digits = std::str::from_utf8(&self.s[start..self.at]).unwrap();
        // RFC 3501 numbers are 32-bit.
        match digits.parse::<u32>() {
            Ok(n) => Ok(n.into()),
            Err(_) => {
                self.at = start;
                self.err("number (32-bit)")
            }
        }
    }
    /// `string = quoted / literal`; returns the string's value.
    fn string(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"') => {
                self.at += 1;
                let mut value = Vec::new();
                loop {
                    match self.peek() {
                        Some(b'"') => {
                            self.at += 1;
                            return Ok(value);
                        }
                        Some(b'\\') => match self.s.get(self.at + 1) {
                            Some(&c @ (b'"' | b'\\')) => {
                                value.push(c);
                                self.at += 2;
                            }
                            _ => return self.err("quoted-special after backslash"),
                        },
                        // TEXT-CHAR; 8-bit needs a literal.
                        Some(c) if (0x01..0x80).contains(&c) && c != b'\r' && c != b'\n' => {
                            value.push(c);
                            self.at += 1;
                        }
                        _ => return self.err("QUOTED-CHAR"),
                    }
                }
            }
            Some(b'{') => {
                self.at += 1;
                let n = self.number()? as usize;
                self.lit(b"}\r\n")?;
                let Some(data) = self.s.get(self.at..self.at + n) else { return self.err("literal data") };
                if data.contains(&0) {
                    return self.err("literal without NUL (CHAR8)");
                }
                self.at += n;
                Ok(data.to_vec())
            }
            _ => self.err("string"),
        }
    }
    fn nstring(&mut self) -> R<Option<Vec<u8>>> {
        if self.try_lit(b"NIL") { Ok(None) } else { self.string().map(Some) }
    }
    /// `body-fld-param = "(" string SP string *(SP string SP string) ")" / nil`
    fn params(&mut self) -> R {
        if self.try_lit(b"NIL") {
            return Ok(());
        }
        self.open()?;
        loop {
            self.string()?;
            self.sp()?;
            self.string()?;
            if !self.try_lit(b" ") {
                break;
            }
        }
        self.close()
    }
    /// `address = "(" addr-name SP addr-adl SP addr-mailbox SP addr-host ")"`
    fn address(&mut self) -> R {
        self.open()?;
        self.nstring()?;
        self.sp()?;
        self.nstring()?;
        self.sp()?;
        self.nstring()?;
        self.sp()?;
        self.nstring()?;
        self.close()
    }
    /// `"(" 1*address ")" / nil`
    fn addresses(&mut self) -> R {
        if self.try_lit(b"NIL") {
            return Ok(());
        }
        self.open()?;
        self.address()?;
        while self.peek() == Some(b'(') {
            self.address()?;
        }
        self.close()
    }
    fn envelope(&mut self) -> R {
        self.open()?;
        self.nstring()?; // date
        self.sp()?;
        self.nstring()?; // subject
        for _ in 0..6 {
            self.sp()?;
            self.addresses()?; // from, sender, reply-to, to, cc, bcc
        }
        self.sp()?;
        self.nstring()?; // in-reply-to
        self.sp()?;
        self.nstring()?; // message-id
        self.close()
    }
    /// `body-fld-dsp = "(" string SP body-fld-param ")" / nil`
    fn disposition(&mut self) -> R {
        if self.try_lit(b"NIL") {
            return Ok(());
        }
        self.open()?;
        self.string()?;
        self.sp()?;
        self.params()?;
        self.close()
    }
    /// `body-fld-lang = nstring / "(" string *(SP string) ")"`
    fn language(&mut self) -> R {
        if self.peek() != Some(b'(') {
            return self.nstring().map(drop);
        }
        self.open()?;
        self.string()?;
        while self.try_lit(b" ") {
            self.string()?;
        }
        self.close()
    }
    /// `[SP body-fld-dsp [SP body-fld-lang [SP body-fld-loc *(SP body-extension)]]]`
    fn extension_tail(&mut self) -> R {
        if !self.try_lit(b" ") {
            return Ok(());
        }
        self.disposition()?;
        if !self.try_lit(b" ") {
            return Ok(());
        }
        self.language()?;
        if !self.try_lit(b" ") {
            return Ok(());
        }
        self.nstring()?;
        while self.try_lit(b" ") {
            self.extension()?;
        }
        Ok(())
    }
    /// `body-extension = nstring / number / "(" body-extension *(SP body-extension) ")"`
    fn extension(&mut self) -> R {
        match self.peek() {
            Some(b'(') => {
                self.open()?;
                self.extension()?;
                while self.try_lit(b" ") {
                    self.extension()?;
                }
                self.close()
            }
            Some(b'0'..=b'9') => self.number().map(drop),
            _ => self.nstring().map(drop),
        }
    }
    /// `body = "(" (body-type-1part / body-type-mpart) ")"`
    fn body(&mut self, extended: bool) -> R {
        self.bodies += 1;
        let r = self.body_inner(extended);
        self.bodies -= 1;
        r
    }
    fn body_inner(&mut self, extended: bool) -> R {
        self.open()?;
        if self.peek() == Some(b'(') {
            // body-type-mpart = 1*body SP media-subtype [SP body-ext-mpart]
            while self.peek() == Some(b'(') {
                self.body(extended)?;
            }
            self.sp()?;
            self.string()?;
            // BODY has no extension data; BODYSTRUCTURE may have it.
            if extended && self.try_lit(b" ") {
                self.params()?;
                self.extension_tail()?;
            }
            return self.close();
        }
        let kind = self.string()?;
        self.sp()?;
        let subtype = self.string()?;
        // body-fields = param SP id SP description SP encoding SP octets
        self.sp()?;
        self.params()?;
        self.sp()?;
        self.nstring()?;
        self.sp()?;
        self.nstring()?;
        self.sp()?;
        self.string()?;
        self.sp()?;
        self.number()?;
        // IMAP4rev1: only message/rfc822 is body-type-msg (IMAP4rev2 adds message/global).
        let msg = subtype.eq_ignore_ascii_case(b"rfc822");
        if kind.eq_ignore_ascii_case(b"message") && msg {
            self.sp()?;
            self.envelope()?;
            self.sp()?;
            self.body(extended)?;
            self.sp()?;
            self.number()?;
        } else if kind.eq_ignore_ascii_case(b"text") {
            self.sp()?;
            self.number()?;
        }
        if extended && self.try_lit(b" ") {
            // body-ext-1part = body-fld-md5 [SP body-fld-dsp [SP body-fld-lang [SP body-fld-loc …]]]
            self.nstring()?;
            self.extension_tail()?;
        }
        self.close()
    }
    fn end(&self) -> R {
        if self.at == self.s.len() { Ok(()) } else { self.err("end") }
    }
}

fn check<'a>(what: &str, bytes: &'a [u8], f: impl FnOnce(&mut P<'a>) -> R) -> usize {
    let mut p = P::new(bytes);
    if let Err(e) = f(&mut p).and_then(|()| p.end()) {
        panic!("{what} is not RFC 3501: {e}\nfull: {:?}", String::from_utf8_lossy(bytes));
    }
    p.max_depth
}

/// How deep the MIME tree is, counting multiparts and attached messages, up to 5: only
/// "at most 4" is asked, and a part listed under several multiparts (F14) must not make the
/// walk exponential.
fn tree_depth(part: PartRef<'_, '_>, level: usize) -> usize {
    if level > 4 {
        return level;
    }
    let mut deepest = level;
    if let Some(children) = part.children() {
        for child in children {
            deepest = deepest.max(tree_depth(child, level + 1));
        }
    }
    if let Some(inner) = part.nested() {
        deepest = deepest.max(tree_depth(inner, level + 1));
    }
    deepest
}

/// Part numbers of every part (RFC 3501 §6.4.5), up to a bound.
fn paths(part: PartRef<'_, '_>, prefix: &mut Vec<u32>, out: &mut Vec<Vec<u32>>) {
    if out.len() >= 64 || prefix.len() > 40 {
        return;
    }
    let children = part.children().or_else(|| part.nested().and_then(|m| m.children()));
    match children {
        Some(children) => {
            for (i, child) in children.into_iter().enumerate() {
                prefix.push(i as u32 + 1);
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        // A non-multipart message/rfc822 body is part 1 of it.
        None if part.nested().is_some() => {
            prefix.push(1);
            out.push(prefix.clone());
            prefix.pop();
        }
        None => {}
    }
}

fuzz_target!(|raw: &[u8]| {
    let cached = Structure::of(raw);
    assert_eq!(Structure::decode(&cached.encode()).as_ref(), Some(&cached));
    if let Some(damaged) = Structure::decode(&raw.to_vec().into()) {
        assert_eq!(Structure::decode(&damaged.encode()), Some(damaged));
    }

    let message = parse(raw);
    let Some(root) = message.as_ref().and_then(PartRef::root) else {
        // Nothing parsed: only BODY[] exists.
        assert_eq!(&*extract(raw, message.as_ref(), &Section::Part(vec![])), raw);
        assert!(extract(raw, message.as_ref(), &Section::Part(vec![1])).is_empty());
        return;
    };

    let mut env = Data::fragment();
    envelope::write(&mut env, root);
    let env = env.into_bytes();
    check("ENVELOPE", &env, P::envelope);

    let mut bodystructure = Data::fragment();
    structure::write(&mut bodystructure, root, true);
    let bodystructure = bodystructure.into_bytes();
    check("BODYSTRUCTURE", &bodystructure, |p| p.body(true));

    let mut body = Data::fragment();
    structure::write(&mut body, root, false);
    let body = body.into_bytes();
    check("BODY", &body, |p| p.body(false));
    assert_eq!(
        (&cached.envelope[..], &cached.body[..], &cached.bodystructure[..]),
        (&env[..], &body[..], &bodystructure[..]),
        "the cached form differs from a fresh rendering"
    );

    // imap-codec bounds its recursion (8 levels); compare where it can follow.
    if tree_depth(root, 0) <= 4 {
        let mut response = b"* 1 FETCH (ENVELOPE ".to_vec();
        response.extend_from_slice(&env);
        response.extend_from_slice(b" BODYSTRUCTURE ");
        response.extend_from_slice(&bodystructure);
        response.extend_from_slice(b" BODY ");
        response.extend_from_slice(&body);
        response.extend_from_slice(b")\r\n");
        match ResponseCodec::default().decode(&response) {
            Ok((rest, _)) => assert!(rest.is_empty(), "imap-codec left {rest:?}"),
            Err(e) => {
                panic!("imap-codec rejects our FETCH response ({e:?}):\n{:?}", String::from_utf8_lossy(&response))
            }
        }
    }

    // Sections of every part, and of paths that do not exist.
    let mut all = vec![vec![]];
    paths(root, &mut vec![], &mut all);
    all.push(vec![0]);
    all.push(vec![u32::MAX]);
    all.push(vec![1; 50]);
    let names = vec![b"subject".to_vec(), b"FROM".to_vec(), raw.get(..8).unwrap_or_default().to_vec()];
    for path in all {
        let sections = [
            Section::Part(path.clone()),
            Section::Header(path.clone()),
            Section::Text(path.clone()),
            Section::Mime(path.clone()),
            Section::Fields { path: path.clone(), names: names.clone(), exclude: false },
            Section::Fields { path: path.clone(), names: names.clone(), exclude: true },
        ];
        for section in &sections {
            let bytes = extract(raw, message.as_ref(), section);
            let _ = section.spec();
            let n = bytes.len() as u32;
            assert_eq!(partial(&bytes, 0, n), &*bytes);
            assert!(partial(&bytes, n / 2, u32::MAX).len() <= bytes.len());
            assert!(partial(&bytes, u32::MAX, u32::MAX).is_empty());
            if let Section::Fields { exclude: false, .. } = section {
                // Only the named fields (line ends made CRLF) and the blank line are sent.
                assert!(bytes.len() <= 2 * raw.len() + 4, "HEADER.FIELDS larger than the message");
            }
        }
    }
    assert_eq!(&*extract(raw, message.as_ref(), &Section::Part(vec![])), raw);
});
