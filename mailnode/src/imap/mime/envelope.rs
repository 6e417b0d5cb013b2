//! ENVELOPE (RFC 3501 §7.4.2): the header fields clients show in a message list.

use base64::Engine;
use mail_parser::{Addr, Address, HeaderName};

use super::PartRef;
use super::header;
use crate::imap::response::Data;

/// Appends the ENVELOPE of the message whose root part is `root`.
pub fn write(out: &mut Data, root: PartRef<'_, '_>) {
    let head = root.header();
    let text = |name: &str| header::first(head, name);
    out.raw("(");
    out.nstring(text("Date").as_deref());
    out.raw(" ");
    out.nstring(text("Subject").as_deref());
    let from = address(root, HeaderName::From);
    for field in
        [HeaderName::From, HeaderName::Sender, HeaderName::ReplyTo, HeaderName::To, HeaderName::Cc, HeaderName::Bcc]
    {
        out.raw(" ");
        let mut list = address(root, field.clone());
        // RFC 3501: sender and reply-to default to from.
        if list.is_none() && matches!(field, HeaderName::Sender | HeaderName::ReplyTo) {
            list = from;
        }
        write_addresses(out, list);
    }
    out.raw(" ");
    out.nstring(text("In-Reply-To").as_deref());
    out.raw(" ");
    out.nstring(text("Message-ID").as_deref());
    out.raw(")");
}

fn address<'m>(root: PartRef<'m, '_>, name: HeaderName<'static>) -> Option<&'m Address<'m>> {
    let part = root.part();
    // The last field wins in mail-parser's own accessors too; take the first, as Dovecot does.
    part.headers.iter().find(|h| h.name == name).and_then(|h| h.value.as_address())
}

fn write_addresses(out: &mut Data, list: Option<&Address<'_>>) {
    let mut rendered = Data::fragment();
    let mut any = false;
    match list {
        Some(Address::List(addrs)) => {
            for addr in addrs {
                any |= write_addr(&mut rendered, addr);
            }
        }
        Some(Address::Group(groups)) => {
            for group in groups {
                match &group.name {
                    Some(name) => {
                        // Group syntax: a start marker with the group name, the members, an end marker.
                        rendered.raw("(NIL NIL ");
                        rendered.string(encode_word(name).as_bytes());
                        rendered.raw(" NIL)");
                        for addr in &group.addresses {
                            write_addr(&mut rendered, addr);
                        }
                        rendered.raw("(NIL NIL NIL NIL)");
                        any = true;
                    }
                    None => {
                        for addr in &group.addresses {
                            any |= write_addr(&mut rendered, addr);
                        }
                    }
                }
            }
        }
        None => {}
    }
    if any {
        out.raw("(").bytes(&rendered.into_bytes()).raw(")");
    } else {
        out.raw("NIL");
    }
}

/// Appends one address; returns false (and writes nothing) for a name without an address.
fn write_addr(out: &mut Data, addr: &Addr<'_>) -> bool {
    let Some(address) = addr.address.as_deref().filter(|a| !a.is_empty()) else {
        return false;
    };
    // An obsolete source route (RFC 5322 §4.4 obs-route, `<@a,@b:user@host>`) is the
    // address's second field (RFC 3501 §7.4.2 "adl"), not part of the mailbox name.
    let (route, address) = match address.strip_prefix('@').and_then(|_| address.split_once(':')) {
        Some((route, rest)) => (Some(route), rest),
        None => (None, address),
    };
    let (mailbox, host) = match address.rsplit_once('@') {
        Some((m, h)) => (m, h),
        // Dovecot's marker for a missing domain: NIL would make it a group marker.
        None => (address, ".MISSING-HOST-NAME."),
    };
    out.raw("(");
    out.nstring(addr.name.as_deref().filter(|n| !n.is_empty()).map(encode_word).as_deref().map(str::as_bytes));
    out.raw(" ");
    out.nstring(route.map(str::as_bytes));
    out.raw(" ");
    out.string(mailbox.as_bytes());
    out.raw(" ");
    out.string(host.as_bytes());
    out.raw(")");
    true
}

/// mail-parser decodes RFC 2047 words; ENVELOPE strings are ASCII, so non-ASCII names go back
/// into an encoded word.
fn encode_word(text: &str) -> String {
    if text.is_ascii() {
        text.to_string()
    } else {
        format!("=?utf-8?b?{}?=", base64::engine::general_purpose::STANDARD.encode(text))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{PartRef, parse};
    use super::*;

    fn envelope(raw: &[u8]) -> String {
        let message = parse(raw).expect("parses");
        let mut out = Data::fragment();
        write(&mut out, PartRef::root(&message).expect("root"));
        String::from_utf8(out.into_bytes()).expect("utf-8")
    }

    #[test]
    fn full_envelope() {
        let raw = b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n\
From: Fred Foobar <foobar@Blurdybloop.example>\r\n\
Subject: afternoon meeting\r\n\
To: mooch@owatagu.example, \"Ann\" <ann@x.example>\r\n\
Cc: Team: a@b.example, c@d.example;\r\n\
Message-Id: <B27397-0100000@Blurdybloop.example>\r\n\
\r\n\
hi\r\n";
        assert_eq!(
            envelope(raw),
            "(\"Mon, 7 Feb 1994 21:52:25 -0800\" \"afternoon meeting\" \
((\"Fred Foobar\" NIL \"foobar\" \"Blurdybloop.example\")) \
((\"Fred Foobar\" NIL \"foobar\" \"Blurdybloop.example\")) \
((\"Fred Foobar\" NIL \"foobar\" \"Blurdybloop.example\")) \
((NIL NIL \"mooch\" \"owatagu.example\")(\"Ann\" NIL \"ann\" \"x.example\")) \
((NIL NIL \"Team\" NIL)(NIL NIL \"a\" \"b.example\")(NIL NIL \"c\" \"d.example\")(NIL NIL NIL NIL)) \
NIL NIL \"<B27397-0100000@Blurdybloop.example>\")"
        );
    }

    #[test]
    fn source_route_is_the_adl_field() {
        let route = envelope(b"From: <@route:user@domain>\r\n\r\nbody");
        assert!(route.contains("((NIL \"@route\" \"user\" \"domain\"))"), "{route}");
        let two = envelope(b"To: Real <@a.example,@b.example:user@domain>\r\n\r\nbody");
        assert!(two.contains("((\"Real\" \"@a.example,@b.example\" \"user\" \"domain\"))"), "{two}");
    }

    #[test]
    fn sparse_envelope() {
        assert_eq!(envelope(b"Subject: x\r\n\r\nbody"), "(NIL \"x\" NIL NIL NIL NIL NIL NIL NIL NIL)");
        let utf8 = envelope("From: Jürgen <j@x.example>\r\n\r\n".as_bytes());
        assert!(utf8.contains("(\"=?utf-8?b?SsO8cmdlbg==?=\" NIL \"j\" \"x.example\")"), "{utf8}");
    }
}
