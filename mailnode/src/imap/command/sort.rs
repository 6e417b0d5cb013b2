//! SORT and UID SORT (RFC 5256 §3), with SORT=DISPLAY's keys (RFC 5957): the messages SEARCH
//! criteria match, ordered by header fields, dates or size, answered with `* SORT n…`.
//!
//! What SORT and THREAD read of a message ([`MessageKeys`]) is taken from its header once, and
//! the ordering ([`sort`]) is a pure function of those keys.

use std::cmp::Ordering;

use imap_types::core::{Charset, Vec1};
use imap_types::extensions::sort::{SortCriterion, SortKey};
use imap_types::search::SearchKey;
use mail_parser::{Address, HeaderName, HeaderValue, Message};
use tokio::io::AsyncWriteExt;

use super::base_subject::{BaseSubject, base_subject};
use super::search::{Candidate, Reads};
use crate::imap::error::{CommandResult, Done};
use crate::imap::mime::{PartRef, header};
use crate::imap::response::Data;
use crate::imap::session::{Session, Sink};

/// References of one message THREAD considers: the last ones, which name its nearest
/// ancestors. A References field can be as long as the header, and each reference costs a
/// link to check; real threads are far shallower than this.
pub const MAX_REFERENCES: usize = 64;

/// What SORT and THREAD know of one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageKeys {
    /// The message sequence number, which breaks ties.
    pub seq: u32,
    /// What the response names: the sequence number, or the UID for UID SORT and UID THREAD.
    pub number: u32,
    /// MODSEQ, for `(MODSEQ n)` after a MODSEQ criterion.
    pub modseq: u64,
    /// INTERNALDATE, in seconds since the epoch.
    pub arrival: i64,
    /// RFC822.SIZE.
    pub size: u64,
    /// The Date field in seconds since the epoch, or INTERNALDATE without a valid one (§2.2).
    pub sent: i64,
    /// The base subject of the first Subject field (§2.1).
    pub subject: BaseSubject,
    /// The addr-mailbox (local part) of the first address of each field, upper-cased.
    pub from: String,
    pub to: String,
    pub cc: String,
    /// The display name of the first address, else its address (RFC 5957), upper-cased.
    pub display_from: String,
    pub display_to: String,
    /// The Message-ID, without its angle brackets.
    pub message_id: Option<String>,
    /// References, else the first In-Reply-To ID (RFC 5256 §4 step 1), oldest first.
    pub references: Vec<String>,
}

impl MessageKeys {
    /// The keys of one message: from its parsed header when one was read, else its metadata.
    pub fn of(candidate: &Candidate<'_>, number: u32) -> MessageKeys {
        let meta = &candidate.entry.meta;
        let mut keys = MessageKeys {
            seq: candidate.seq,
            number,
            modseq: meta.modseq,
            arrival: meta.internal_date,
            size: meta.size,
            sent: meta.internal_date,
            ..MessageKeys::default()
        };
        if let Some(message) = candidate.parsed {
            keys.read_header(message);
        }
        keys
    }

    fn read_header(&mut self, message: &Message<'_>) {
        let Some(root) = PartRef::root(message) else { return };
        let headers = &root.part().headers;
        // The first of each field counts, as in ENVELOPE.
        let first = |name: HeaderName<'static>| headers.iter().find(|h| h.name == name).map(|h| &h.value);
        if let Some(date) = first(HeaderName::Date).and_then(HeaderValue::as_datetime).filter(|d| d.is_valid()) {
            self.sent = date.to_timestamp();
        }
        if let Some(subject) = first(HeaderName::Subject) {
            let text = match subject {
                HeaderValue::Text(t) => t.as_ref().to_string(),
                HeaderValue::TextList(list) => list.join(" "),
                _ => String::new(),
            };
            self.subject = base_subject(&text);
        }
        let address = |name| first(name).and_then(HeaderValue::as_address).map(first_address).unwrap_or_default();
        let (from, display_from) = address(HeaderName::From);
        let (to, display_to) = address(HeaderName::To);
        let (cc, _) = address(HeaderName::Cc);
        (self.from, self.display_from, self.to, self.display_to, self.cc) = (from, display_from, to, display_to, cc);
        // Message IDs straight from the raw fields: mail-parser keeps only what it can parse
        // as msg-id, and Dovecot (which clients compare against) is as lenient as this.
        let head = root.header();
        let raw = |name: &str| header::fields(head).find(|f| f.name.eq_ignore_ascii_case(name.as_bytes()));
        self.message_id = raw("Message-ID").and_then(|f| message_ids(f.value).next());
        let mut references: Vec<String> = match raw("References") {
            Some(field) => message_ids(field.value).collect(),
            None => Vec::new(),
        };
        if references.is_empty() {
            references.extend(raw("In-Reply-To").and_then(|f| message_ids(f.value).next()));
        }
        if references.len() > MAX_REFERENCES {
            references.drain(..references.len() - MAX_REFERENCES);
        }
        self.references = references;
    }
}

/// The sort keys of the first address of a field: its addr-mailbox, and what SORT=DISPLAY
/// shows (display name, else the address). A group counts by its name, as the group's
/// start marker is the first address ENVELOPE gives.
fn first_address(address: &Address<'_>) -> (String, String) {
    let addr = match address {
        Address::List(list) => list.first(),
        Address::Group(groups) => match groups.first() {
            Some(group) => match &group.name {
                Some(name) => return (name.to_uppercase(), name.trim().to_uppercase()),
                None => group.addresses.first(),
            },
            None => None,
        },
    };
    let Some(addr) = addr else { return (String::new(), String::new()) };
    let email = addr.address.as_deref().unwrap_or_default();
    let mailbox = email.rsplit_once('@').map_or(email, |(mailbox, _)| mailbox);
    let display = match addr.name.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => name,
        _ => email,
    };
    (mailbox.to_uppercase(), display.to_uppercase())
}

/// The msg-ids in a Message-ID, References or In-Reply-To value, without angle brackets and
/// whitespace; text outside `<…>` (comments, phrases) is skipped.
pub fn message_ids(value: &[u8]) -> impl Iterator<Item = String> + '_ {
    let mut rest = value;
    std::iter::from_fn(move || {
        loop {
            let open = rest.iter().position(|&b| b == b'<')?;
            let after = &rest[open + 1..];
            let Some(close) = after.iter().position(|&b| b == b'>') else {
                rest = &[];
                return None;
            };
            let id: Vec<u8> = after[..close].iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
            rest = &after[close + 1..];
            // A nested '<' starts the ID over: "<a <b@c>" names b@c.
            let id = match id.iter().rposition(|&b| b == b'<') {
                Some(p) => id[p + 1..].to_vec(),
                None => id,
            };
            if !id.is_empty() {
                return Some(String::from_utf8_lossy(&id).into_owned());
            }
        }
    })
}

/// Whether any criterion needs the message header.
pub fn needs_header(criteria: &[SortCriterion]) -> bool {
    criteria.iter().any(|c| !matches!(c.key, SortKey::Arrival | SortKey::Size))
}

fn compare(key: &SortKey, a: &MessageKeys, b: &MessageKeys) -> Ordering {
    match key {
        SortKey::Arrival => a.arrival.cmp(&b.arrival),
        SortKey::Cc => a.cc.cmp(&b.cc),
        SortKey::Date => a.sent.cmp(&b.sent),
        SortKey::From => a.from.cmp(&b.from),
        SortKey::Size => a.size.cmp(&b.size),
        SortKey::Subject => a.subject.key.cmp(&b.subject.key),
        SortKey::To => a.to.cmp(&b.to),
        SortKey::DisplayFrom => a.display_from.cmp(&b.display_from),
        SortKey::DisplayTo => a.display_to.cmp(&b.display_to),
    }
}

/// Orders `messages` by `criteria`, each possibly reversed, then by sequence number (§3:
/// REVERSE applies to its key alone, so ties stay in ascending sequence order).
pub fn sort(messages: &mut [MessageKeys], criteria: &[SortCriterion]) {
    messages.sort_by(|a, b| {
        criteria
            .iter()
            .map(|c| {
                let order = compare(&c.key, a, b);
                if c.reverse { order.reverse() } else { order }
            })
            .find(|o| o.is_ne())
            .unwrap_or_else(|| a.seq.cmp(&b.seq))
    });
}

/// `* SORT n…`, with `(MODSEQ m)` when the criteria used MODSEQ (RFC 7162 §3.1.5).
pub fn sort_response(sorted: &[MessageKeys], with_modseq: bool) -> Vec<u8> {
    let mut data = Data::new("SORT");
    for message in sorted {
        data.raw(format_args!(" {}", message.number));
    }
    if let Some(highest) = sorted.iter().map(|m| m.modseq).max().filter(|_| with_modseq) {
        data.raw(format_args!(" (MODSEQ {highest})"));
    }
    data.finish()
}

impl Session {
    /// SORT and UID SORT: the matches of `search`, ordered by `criteria`.
    pub(crate) async fn sort(
        &mut self,
        criteria: &Vec1<SortCriterion>,
        charset: &Charset<'_>,
        search: &Vec1<SearchKey<'_>>,
        uid: bool,
        out: &mut Sink<'_>,
    ) -> CommandResult {
        let reads = if needs_header(criteria.as_ref()) { Reads::Header } else { Reads::Meta };
        let (mut found, with_modseq) = self
            .search_matches(Some(charset), search, reads, out, |c| {
                MessageKeys::of(c, if uid { c.entry.meta.uid } else { c.seq })
            })
            .await?;
        sort(&mut found, criteria.as_ref());
        out.write_all(&sort_response(&found, with_modseq)).await?;
        Ok(Done::ok(if uid { "UID SORT completed" } else { "SORT completed" }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn criterion(reverse: bool, key: SortKey) -> SortCriterion {
        SortCriterion { reverse, key }
    }

    fn message(seq: u32, f: impl FnOnce(&mut MessageKeys)) -> MessageKeys {
        let mut m = MessageKeys { seq, number: seq * 10, ..MessageKeys::default() };
        f(&mut m);
        m
    }

    fn order(messages: &[MessageKeys], criteria: &[SortCriterion]) -> Vec<u32> {
        let mut sorted = messages.to_vec();
        sort(&mut sorted, criteria);
        sorted.iter().map(|m| m.seq).collect()
    }

    fn keys_of(raw: &str, internal_date: i64) -> MessageKeys {
        let message = crate::imap::mime::parse(raw.as_bytes()).expect("parses");
        let mut keys = MessageKeys { sent: internal_date, ..MessageKeys::default() };
        keys.read_header(&message);
        keys
    }

    #[test]
    fn reverse_applies_to_its_key_and_ties_go_by_sequence() {
        // imaptest's sort-arrival: arrival times 0, 2, 1, 2, 2 hours; sizes grow.
        let arrivals = [0, 2, 1, 2, 2];
        let messages: Vec<MessageKeys> = (1..=5)
            .map(|seq| {
                message(seq, |m| {
                    m.arrival = arrivals[seq as usize - 1];
                    m.size = u64::from(seq);
                })
            })
            .collect();
        assert_eq!(order(&messages, &[criterion(false, SortKey::Arrival)]), [1, 3, 2, 4, 5]);
        assert_eq!(order(&messages, &[criterion(true, SortKey::Arrival)]), [2, 4, 5, 3, 1]);
        assert_eq!(
            order(&messages, &[criterion(false, SortKey::Arrival), criterion(true, SortKey::Size)]),
            [1, 3, 5, 4, 2]
        );
    }

    #[test]
    fn address_keys() {
        // imaptest's sort-addresses: the addr-mailbox alone counts, and a group by its name.
        let from = |value: &str| keys_of(&format!("From: {value}\r\nCc: {value}\r\n\r\n"), 0);
        let (a, b, c) = (from("user2@domain2.org"), from("user2@domain1.org"), from("user1@domain1.org"));
        assert_eq!((a.from.as_str(), b.from.as_str(), c.from.as_str()), ("USER2", "USER2", "USER1"));
        assert_eq!(from("user2: blah@domain1.org;").cc, "USER2");
        assert_eq!(from("foo bar <a@b.c>").display_from, "FOO BAR");
        assert_eq!(from("b@c.d").display_from, "B@C.D");
        assert_eq!(from("=?iso-8859-1?q?foo_aar?= <e@f.g>").display_from, "FOO AAR");
        assert_eq!(from("x@y.z (comment)").from, "X");
        let to = keys_of("To: a: xx@xx.org, yy@yy.org;\r\n\r\n", 0);
        assert_eq!(to.display_to, "A");
        assert_eq!(keys_of("Subject: x\r\n\r\n", 0).from, "");
    }

    #[test]
    fn dates_fall_back_to_the_internal_date() {
        let dated = keys_of("Date: Fri, 22 Feb 2008 02:00:00 +0200\r\n\r\n", 7);
        assert_eq!(dated.sent, 1_203_638_400);
        assert_eq!(keys_of("Date: not a date\r\n\r\n", 7).sent, 7);
        assert_eq!(keys_of("Subject: x\r\n\r\n", 7).sent, 7);
    }

    #[test]
    fn display_sort() {
        // imaptest's sort-display-to.
        let fields =
            ["foo bar <a@b.c>", "b@c.d", "d", "=?iso-8859-1?q?foo_aar?= <e@f.g>", "=?iso-8859-1?q?foo_car?= <f@g.h>"];
        let mut messages: Vec<MessageKeys> = fields
            .iter()
            .chain(&["a: xx@xx.org, yy@yy.org;", "z: aa@aa.org, bb@bb.org;", "empty:;"])
            .enumerate()
            .map(|(i, to)| MessageKeys { seq: i as u32 + 1, ..keys_of(&format!("To: {to}\r\n\r\n"), 0) })
            .collect();
        assert_eq!(order(&messages, &[criterion(false, SortKey::DisplayTo)]), [6, 2, 3, 8, 4, 1, 5, 7]);
        assert_eq!(order(&messages, &[criterion(true, SortKey::DisplayTo)]), [7, 5, 1, 4, 8, 3, 2, 6]);
        messages.truncate(5);
        for m in &mut messages {
            m.display_from = std::mem::take(&mut m.display_to);
        }
        assert_eq!(order(&messages, &[criterion(false, SortKey::DisplayFrom)]), [2, 3, 4, 1, 5]);
    }

    #[test]
    fn subject_sort() {
        // imaptest's sort-subject, whose expected order is Dovecot's.
        let subjects = [
            Some("a"),
            Some("C"),
            Some("b"),
            Some("_"),
            Some("[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)"),
            Some("b (a)"),
            Some("Re: [FWD: c]"),
            Some("[xyz]"),
            None,
            Some("=?iso-8859-1?q?_?="),
            Some("Re: =?utf-8?q?b?="),
            Some("=?iso-8859-1?q?RE:_C?="),
            Some("=?us-ascii?b?UmU6IGM=?="),
            Some("Ad: Re: Ad: Re: Ad: x"),
            Some("re: [fwd: [fwd: re: [fwd: babylon]]]"),
        ];
        let sizes = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 100, 200, 300, 14, 15];
        let messages: Vec<MessageKeys> = subjects
            .iter()
            .enumerate()
            .map(|(i, subject)| {
                let raw = match subject {
                    Some(s) => format!("Subject: {s}\r\n\r\n"),
                    None => "X-None: 1\r\n\r\n".to_string(),
                };
                MessageKeys { seq: i as u32 + 1, size: sizes[i], ..keys_of(&raw, 0) }
            })
            .collect();
        let subject = criterion(false, SortKey::Subject);
        assert_eq!(
            order(&messages, std::slice::from_ref(&subject)),
            [9, 10, 1, 14, 3, 5, 11, 6, 15, 2, 7, 12, 13, 8, 4]
        );
        assert_eq!(
            order(&messages, &[criterion(true, SortKey::Subject)]),
            [4, 8, 2, 7, 12, 13, 15, 6, 3, 5, 11, 14, 1, 9, 10]
        );
        assert_eq!(
            order(&messages, &[subject, criterion(true, SortKey::Size)]),
            [10, 9, 1, 14, 11, 5, 3, 6, 15, 13, 12, 7, 2, 8, 4]
        );
    }

    #[test]
    fn references_are_parsed_leniently_and_capped() {
        let ids: Vec<String> = message_ids(b" <a@b> junk (c) <c@d>\r\n <e\r\n @f> <> <g <h@i> <unclosed").collect();
        assert_eq!(ids, ["a@b", "c@d", "e@f", "h@i"]);
        let keys = keys_of("Message-ID: <m@x>\r\nIn-Reply-To: <p@x> <q@x>\r\n\r\n", 0);
        assert_eq!((keys.message_id.as_deref(), keys.references), (Some("m@x"), vec!["p@x".to_string()]));
        let keys = keys_of("References: <r@x>\r\nIn-Reply-To: <p@x>\r\n\r\n", 0);
        assert_eq!(keys.references, ["r@x"]);
        let many: String = (0..100_000).map(|i| format!("<{i}@x> ")).collect();
        let keys = keys_of(&format!("References: {many}\r\n\r\n"), 0);
        assert_eq!(keys.references.len(), MAX_REFERENCES);
        assert_eq!(keys.references.last().map(String::as_str), Some("99999@x"));
    }

    #[test]
    fn responses() {
        let found = [message(2, |m| m.modseq = 5), message(1, |m| m.modseq = 9)];
        assert_eq!(sort_response(&found, false), b"* SORT 20 10\r\n");
        assert_eq!(sort_response(&found, true), b"* SORT 20 10 (MODSEQ 9)\r\n");
        assert_eq!(sort_response(&[], false), b"* SORT\r\n");
    }
}
