//! SEARCH and UID SEARCH: every RFC 3501 key plus MODSEQ (RFC 7162), evaluated per message,
//! answered with SEARCH or, after `RETURN (…)`, with ESEARCH (RFC 4731). OLDER and YOUNGER
//! (WITHIN, RFC 5032) compare the internal date with the time the search started.

use chrono::Datelike;
use imap_types::core::{Charset, Vec1};
use imap_types::search::SearchKey;
use imap_types::sequence::SequenceSet;
use std::collections::HashMap;

use bytes::Bytes;
use mail_parser::{HeaderValue, Message, PartType};
use sirms_storage::{BodyPart, MailStore, SystemFlags, UidSet};
use tokio::io::AsyncWriteExt;

use crate::calendar;
use crate::header_block;
use crate::imap::error::{CommandError, CommandResult, Done};
use crate::imap::extension::esearch::Esearch;
use crate::imap::flags;
use crate::imap::mime::cache::{self, Structure};
use crate::imap::mime::{self, PartRef, header};
use crate::imap::response::{Code, Data};
use crate::imap::selected;
use crate::imap::selected::{Entry, render_uids};
use crate::imap::session::{Session, Sink};

/// Messages read from the store per round trip when a key needs their text.
const BATCH: usize = 64;

/// Cached header blocks looked up per round trip when no key needs a body: a round trip to a
/// storage node costs more than matching a few hundred headers.
const HEADER_BATCH: usize = 256;

/// Deepest nesting of NOT/OR/parentheses evaluated (the parser limits it too).
const MAX_DEPTH: usize = 64;

/// One message as SEARCH sees it.
pub struct Candidate<'a> {
    pub seq: u32,
    pub entry: &'a Entry,
    /// The message bytes, when a key needs them.
    pub raw: Option<&'a [u8]>,
    pub parsed: Option<&'a Message<'a>>,
}

/// What `*` stands for in sequence and UID sets, and when "now" is for OLDER and YOUNGER.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub last_seq: u32,
    pub last_uid: u32,
    /// Seconds since the Unix epoch, taken once so every message is judged against one instant.
    pub now: i64,
}

fn in_set(set: &SequenceSet, value: u32, star: u32) -> bool {
    selected::ranges(set, star).any(|(lo, hi)| (lo..=hi).contains(&value))
}

/// Whether evaluating `key` needs the message's bytes.
pub fn needs_content(key: &SearchKey<'_>) -> bool {
    needs_body(key) || needs_header(key)
}

/// Whether evaluating `key` needs the message's body (BODY, TEXT).
fn needs_body(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().any(needs_body),
        SearchKey::Not(k) => needs_body(k),
        SearchKey::Or(a, b) => needs_body(a) || needs_body(b),
        SearchKey::Body(_) | SearchKey::Text(_) => true,
        _ => false,
    }
}

/// Whether evaluating `key` needs the message's header (and nothing of its body).
fn needs_header(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().any(needs_header),
        SearchKey::Not(k) => needs_header(k),
        SearchKey::Or(a, b) => needs_header(a) || needs_header(b),
        SearchKey::Bcc(_)
        | SearchKey::Cc(_)
        | SearchKey::From(_)
        | SearchKey::Header(..)
        | SearchKey::SentBefore(_)
        | SearchKey::SentOn(_)
        | SearchKey::SentSince(_)
        | SearchKey::Subject(_)
        | SearchKey::To(_) => true,
        _ => false,
    }
}

fn lower(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_lowercase()
}

/// The texts a header field is searched in: its raw value and what mail-parser decoded.
fn header_texts(c: &Candidate<'_>, name: &str) -> Vec<String> {
    let mut texts = Vec::new();
    let root = c.parsed.and_then(PartRef::root);
    let head: &[u8] = match root {
        Some(root) => root.header(),
        None => c.raw.unwrap_or_default(),
    };
    for field in header::fields(head) {
        if field.name.eq_ignore_ascii_case(name.as_bytes()) {
            texts.push(lower(&header::unfold(field.value)));
        }
    }
    if let Some(root) = root {
        for h in root.part().headers.iter().filter(|h| h.name.as_str().eq_ignore_ascii_case(name)) {
            match &h.value {
                HeaderValue::Text(t) => texts.push(t.to_lowercase()),
                HeaderValue::TextList(list) => texts.push(list.join(" ").to_lowercase()),
                HeaderValue::Address(address) => {
                    for addr in address.iter() {
                        let name = addr.name.as_deref().unwrap_or_default();
                        let email = addr.address.as_deref().unwrap_or_default();
                        texts.push(format!("{name} <{email}>").to_lowercase());
                    }
                }
                _ => {}
            }
        }
    }
    texts
}

fn header_matches(c: &Candidate<'_>, name: &str, needle: &[u8]) -> bool {
    let needle = lower(needle);
    header_texts(c, name).iter().any(|t| t.contains(&needle))
}

/// The decoded text of the message's text parts, for BODY and TEXT.
fn body_text(c: &Candidate<'_>) -> String {
    match c.parsed {
        Some(message) => {
            let mut text = String::new();
            collect_text(message, &mut text, 0);
            text.to_lowercase()
        }
        None => lower(c.raw.unwrap_or_default()),
    }
}

fn collect_text(message: &Message<'_>, out: &mut String, depth: usize) {
    for part in &message.parts {
        match &part.body {
            PartType::Text(t) | PartType::Html(t) => {
                out.push_str(t);
                out.push('\n');
            }
            PartType::Message(inner) if depth < MAX_DEPTH => collect_text(inner, out, depth + 1),
            _ => {}
        }
    }
}

/// The day the Date header names, as written (RFC 3501 ignores its time zone), else the arrival day.
fn sent_day(c: &Candidate<'_>) -> i64 {
    let root = c.parsed.and_then(PartRef::root);
    let date = root.and_then(|r| {
        r.part()
            .headers
            .iter()
            .find(|h| h.name.as_str().eq_ignore_ascii_case("Date"))
            .and_then(|h| h.value.as_datetime())
    });
    match date {
        Some(d) => calendar::days_from_civil(i64::from(d.year), u32::from(d.month), u32::from(d.day)),
        None => calendar::day_of(c.entry.meta.internal_date),
    }
}

fn day(d: &imap_types::datetime::NaiveDate) -> i64 {
    let d = d.as_ref();
    calendar::days_from_civil(i64::from(d.year()), d.month(), d.day())
}

/// Whether the message matches `key`.
pub fn matches(key: &SearchKey<'_>, c: &Candidate<'_>, bounds: Bounds, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    let meta = &c.entry.meta;
    let has = |f: SystemFlags| meta.flags.system.contains(f);
    let arrived = calendar::day_of(meta.internal_date);
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().all(|k| matches(k, c, bounds, depth + 1)),
        SearchKey::Not(k) => !matches(k, c, bounds, depth + 1),
        SearchKey::Or(a, b) => matches(a, c, bounds, depth + 1) || matches(b, c, bounds, depth + 1),
        SearchKey::SequenceSet(set) => in_set(set, c.seq, bounds.last_seq),
        SearchKey::Uid(set) => in_set(set, meta.uid, bounds.last_uid),
        SearchKey::All => true,
        SearchKey::Answered => has(SystemFlags::ANSWERED),
        SearchKey::Deleted => has(SystemFlags::DELETED),
        SearchKey::Draft => has(SystemFlags::DRAFT),
        SearchKey::Flagged => has(SystemFlags::FLAGGED),
        SearchKey::Seen => has(SystemFlags::SEEN),
        SearchKey::Unanswered => !has(SystemFlags::ANSWERED),
        SearchKey::Undeleted => !has(SystemFlags::DELETED),
        SearchKey::Undraft => !has(SystemFlags::DRAFT),
        SearchKey::Unflagged => !has(SystemFlags::FLAGGED),
        SearchKey::Unseen => !has(SystemFlags::SEEN),
        SearchKey::Recent => c.entry.recent,
        SearchKey::New => c.entry.recent && !has(SystemFlags::SEEN),
        SearchKey::Old => !c.entry.recent,
        SearchKey::Keyword(k) => flags::has_keyword(&meta.flags, k.inner()),
        SearchKey::Unkeyword(k) => !flags::has_keyword(&meta.flags, k.inner()),
        SearchKey::Larger(n) => meta.size > u64::from(*n),
        SearchKey::Smaller(n) => meta.size < u64::from(*n),
        SearchKey::Before(d) => arrived < day(d),
        SearchKey::On(d) => arrived == day(d),
        SearchKey::Since(d) => arrived >= day(d),
        SearchKey::SentBefore(d) => sent_day(c) < day(d),
        SearchKey::SentOn(d) => sent_day(c) == day(d),
        SearchKey::SentSince(d) => sent_day(c) >= day(d),
        SearchKey::Bcc(s) => header_matches(c, "Bcc", s.as_ref()),
        SearchKey::Cc(s) => header_matches(c, "Cc", s.as_ref()),
        SearchKey::From(s) => header_matches(c, "From", s.as_ref()),
        SearchKey::To(s) => header_matches(c, "To", s.as_ref()),
        SearchKey::Subject(s) => header_matches(c, "Subject", s.as_ref()),
        SearchKey::Header(name, value) => header_matches(c, &String::from_utf8_lossy(name.as_ref()), value.as_ref()),
        SearchKey::Body(s) => body_text(c).contains(&lower(s.as_ref())),
        SearchKey::Text(s) => {
            let needle = lower(s.as_ref());
            let head = c.parsed.and_then(PartRef::root).map(|r| r.header()).unwrap_or_default();
            lower(head).contains(&needle) || body_text(c).contains(&needle)
        }
        SearchKey::ModSequence { modseq, .. } => meta.modseq >= *modseq,
        // RFC 5032 §3: OLDER n is at least n seconds old, YOUNGER n less; they partition the mailbox.
        SearchKey::Older(n) => meta.internal_date <= cutoff(bounds, *n),
        SearchKey::Younger(n) => meta.internal_date > cutoff(bounds, *n),
    }
}

/// The instant `seconds` before the search started.
fn cutoff(bounds: Bounds, seconds: std::num::NonZeroU32) -> i64 {
    bounds.now.saturating_sub(i64::from(seconds.get()))
}

fn uses_modseq(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().any(uses_modseq),
        SearchKey::Not(k) => uses_modseq(k),
        SearchKey::Or(a, b) => uses_modseq(a) || uses_modseq(b),
        SearchKey::ModSequence { .. } => true,
        _ => false,
    }
}

/// `* SEARCH n…`, with `(MODSEQ m)` when the criteria used MODSEQ (RFC 7162 §3.1.5).
///
/// `found`: the matching numbers (sequence numbers or UIDs) with their modseqs, ascending.
pub fn search_response(found: &[(u32, u64)], with_modseq: bool) -> Vec<u8> {
    let mut data = Data::new("SEARCH");
    for (n, _) in found {
        data.raw(format_args!(" {n}"));
    }
    if let Some(highest) = found.iter().map(|f| f.1).max().filter(|_| with_modseq) {
        data.raw(format_args!(" (MODSEQ {highest})"));
    }
    data.finish()
}

/// `* ESEARCH (TAG "t") [UID] [MIN n] [MAX n] [COUNT n] [ALL set] [MODSEQ m]` (RFC 4731 §3).
///
/// `found` as for [`search_response`]. MIN, MAX and ALL are left out when nothing matched;
/// COUNT never is. MODSEQ (§3.2, with a MODSEQ criterion) is the highest of the messages
/// returned: those MIN and MAX name, or every match when ALL or COUNT was asked for.
pub fn esearch_response(esearch: Esearch<'_>, uid: bool, found: &[(u32, u64)], with_modseq: bool) -> Vec<u8> {
    let options = esearch.options;
    let mut data = Data::new("ESEARCH (TAG ");
    data.string(esearch.tag.as_bytes()).raw(")");
    if uid {
        data.raw(" UID");
    }
    let (Some(first), Some(last)) = (found.first(), found.last()) else {
        if options.count {
            data.raw(" COUNT 0");
        }
        return data.finish();
    };
    if options.min {
        data.raw(format_args!(" MIN {}", first.0));
    }
    if options.max {
        data.raw(format_args!(" MAX {}", last.0));
    }
    if options.count {
        data.raw(format_args!(" COUNT {}", found.len()));
    }
    if options.all {
        let numbers: Vec<u32> = found.iter().map(|f| f.0).collect();
        data.raw(format_args!(" ALL {}", render_uids(&numbers)));
    }
    if with_modseq {
        let highest = if options.all || options.count {
            found.iter().map(|f| f.1).max().unwrap_or(0)
        } else {
            let min = if options.min { first.1 } else { 0 };
            let max = if options.max { last.1 } else { 0 };
            min.max(max)
        };
        data.raw(format_args!(" MODSEQ {highest}"));
    }
    data.finish()
}

/// What a search reads of each message, besides what the view holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Flags, dates and sizes only (the criteria may still need the message).
    Meta,
    /// The header, for SORT and THREAD keys.
    Header,
}

/// The most of a message read for its header alone: header fields past it are not seen.
const HEADER_READ: u64 = 64 * 1024;

/// What a search reads of each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Texts {
    /// Nothing: the view holds what the criteria ask about.
    None,
    /// The header block, from the message cache ([`mime::cache`]) where it is kept. Messages
    /// without one are read whole and their structure cached (`fill`, for header keys), or
    /// only their first [`HEADER_READ`] bytes (SORT and THREAD keys alone).
    Header { fill: bool },
    /// The whole message (BODY, TEXT).
    Full,
}

/// Refuses a CHARSET other than UTF-8 and its subset US-ASCII.
pub fn check_charset(charset: Option<&Charset<'_>>) -> Result<(), CommandError> {
    if let Some(charset) = charset {
        let name = charset.as_ref();
        if !name.eq_ignore_ascii_case("UTF-8") && !name.eq_ignore_ascii_case("US-ASCII") {
            return Err(CommandError::no(Some(Code::BadCharset), "unsupported charset"));
        }
    }
    Ok(())
}

/// What `texts` says to read of the messages in `uids`, by UID: whole messages, or header
/// blocks. A header block is the same bytes whether it comes from the cache or from the file,
/// so the answer does not depend on what is cached.
async fn read_texts(
    store: &dyn MailStore,
    user: &str,
    mailbox: &str,
    uids: &UidSet,
    texts: Texts,
) -> Result<HashMap<u32, Bytes>, CommandError> {
    let fill = match texts {
        Texts::None => return Ok(HashMap::new()),
        Texts::Full => {
            let fetched = store.fetch(user, mailbox, uids, BodyPart::Full).await?;
            return Ok(fetched.into_iter().filter_map(|m| Some((m.meta.uid, m.body?))).collect());
        }
        Texts::Header { fill } => fill,
    };
    let mut headers: HashMap<u32, Bytes> = cache::lookup(store, user, mailbox, uids)
        .await
        .into_iter()
        .filter_map(|(uid, s)| Some((uid, s.header?)))
        .collect();
    let missing: UidSet =
        uids.ranges().iter().flat_map(|&(lo, hi)| lo..=hi).filter(|uid| !headers.contains_key(uid)).collect();
    if missing.is_empty() {
        return Ok(headers);
    }
    let part = if fill { BodyPart::Full } else { BodyPart::Range { offset: 0, length: HEADER_READ } };
    let fetched = store.fetch(user, mailbox, &missing, part).await?;
    let mut fresh = Vec::new();
    for (uid, body) in fetched.into_iter().filter_map(|m| Some((m.meta.uid, m.body?))) {
        if fill {
            fresh.push((uid, Structure::of(&body)));
        }
        // A header read is cut at the header's end: the start of a body is no message.
        let header = header_block::of(&body).len();
        headers.insert(uid, body.slice(..header));
    }
    cache::keep(store, user, mailbox, fresh.iter().map(|(uid, s)| (*uid, s)).collect()).await;
    Ok(headers)
}

impl Session {
    /// Evaluates search criteria on every message of the selected mailbox, for SEARCH, SORT
    /// and THREAD: `keep` turns each match into what the command needs. Also says whether the
    /// criteria used MODSEQ (which turns CONDSTORE on).
    pub(crate) async fn search_matches<T>(
        &mut self,
        charset: Option<&Charset<'_>>,
        criteria: &Vec1<SearchKey<'_>>,
        reads: Reads,
        out: &mut Sink<'_>,
        mut keep: impl FnMut(&Candidate<'_>) -> T,
    ) -> Result<(Vec<T>, bool), CommandError> {
        check_charset(charset)?;
        let keys = criteria.as_ref();
        let key = match keys {
            [single] => single.clone(),
            _ => SearchKey::And(criteria.clone()),
        };
        let with_modseq = uses_modseq(&key);
        if with_modseq {
            self.enable_condstore(out).await?;
        }
        let texts = if needs_body(&key) {
            Texts::Full
        } else if needs_header(&key) {
            Texts::Header { fill: true }
        } else if reads == Reads::Header {
            Texts::Header { fill: false }
        } else {
            Texts::None
        };
        let user = self.login_name()?;
        let view = self.selected()?;
        let name = view.name.clone();
        let now = crate::queue::now();
        let bounds = Bounds { last_seq: view.exists(), last_uid: view.last_uid(), now };
        let count = view.entries().len();
        let mut found = Vec::new();
        let all: Vec<usize> = (0..count).collect();
        for chunk in all.chunks(if texts == Texts::Full { BATCH } else { HEADER_BATCH }) {
            let uids = self.selected()?.uids(chunk);
            let raws = read_texts(&*self.store, &user, &name, &uids, texts).await?;
            let view = self.selected()?;
            for &index in chunk {
                let Some(entry) = view.entry(index) else { continue };
                let raw = raws.get(&entry.meta.uid).map(|b| b.as_ref());
                let parsed = raw.and_then(mime::parse);
                let candidate = Candidate { seq: index as u32 + 1, entry, raw, parsed: parsed.as_ref() };
                if matches(&key, &candidate, bounds, 0) {
                    found.push(keep(&candidate));
                }
            }
        }
        Ok((found, with_modseq))
    }

    pub(crate) async fn search(
        &mut self,
        charset: Option<&Charset<'_>>,
        criteria: &Vec1<SearchKey<'_>>,
        uid: bool,
        esearch: Option<Esearch<'_>>,
        out: &mut Sink<'_>,
    ) -> CommandResult {
        let save = esearch.is_some_and(|e| e.options.save);
        let matched = self
            .search_matches(charset, criteria, Reads::Meta, out, |c| {
                ((if uid { c.entry.meta.uid } else { c.seq }, c.entry.meta.modseq), c.entry.meta.uid)
            })
            .await;
        let (matched, with_modseq) = match matched {
            Ok(matched) => matched,
            Err(e) => {
                // A failed SAVE leaves an empty result, not the previous one (RFC 5182 §2.4).
                if let (true, Some(view)) = (save, self.selected.as_mut()) {
                    view.saved.clear();
                }
                return Err(e);
            }
        };
        let found: Vec<(u32, u64)> = matched.iter().map(|m| m.0).collect();
        if save {
            let options = esearch.map(|e| e.options).unwrap_or_default();
            let uids = matched.iter().map(|m| m.1);
            // With MIN or MAX alone, the result is what they name (RFC 5182 §2.4).
            let saved: Vec<u32> = if (options.min || options.max) && !(options.all || options.count) {
                let (first, last) = (uids.clone().next(), uids.clone().next_back());
                let mut picked: Vec<u32> =
                    [first.filter(|_| options.min), last.filter(|_| options.max)].into_iter().flatten().collect();
                picked.dedup();
                picked
            } else {
                uids.collect()
            };
            self.selected()?.saved = saved;
        }
        let response = match esearch {
            Some(esearch) if !esearch.options.answers() => Vec::new(),
            Some(esearch) => esearch_response(esearch, uid, &found, with_modseq),
            None => search_response(&found, with_modseq),
        };
        out.write_all(&response).await?;
        Ok(Done::ok(if uid { "UID SEARCH completed" } else { "SEARCH completed" }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::extension::SearchReturn;

    fn esearch(tag: &str, min: bool, max: bool, all: bool, count: bool) -> Esearch<'_> {
        Esearch { tag, options: SearchReturn { min, max, all, count, save: false } }
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).expect("ASCII")
    }

    #[test]
    fn search_responses() {
        let found = [(2, 10), (3, 30), (9, 20)];
        assert_eq!(text(search_response(&found, false)), "* SEARCH 2 3 9\r\n");
        assert_eq!(text(search_response(&found, true)), "* SEARCH 2 3 9 (MODSEQ 30)\r\n");
        assert_eq!(text(search_response(&[], true)), "* SEARCH\r\n");
    }

    #[test]
    fn esearch_responses() {
        let found = [(1, 5), (2, 40), (3, 7), (7, 9), (9, 8), (10, 6)];
        let every = esearch("A282", true, true, true, true);
        assert_eq!(
            text(esearch_response(every, false, &found, false)),
            "* ESEARCH (TAG \"A282\") MIN 1 MAX 10 COUNT 6 ALL 1:3,7,9:10\r\n"
        );
        assert_eq!(
            text(esearch_response(every, true, &found, true)),
            "* ESEARCH (TAG \"A282\") UID MIN 1 MAX 10 COUNT 6 ALL 1:3,7,9:10 MODSEQ 40\r\n"
        );
        // MODSEQ of the messages returned: MIN's and MAX's only, unless ALL or COUNT.
        let min_max = esearch("t", true, true, false, false);
        assert_eq!(
            text(esearch_response(min_max, false, &found, true)),
            "* ESEARCH (TAG \"t\") MIN 1 MAX 10 MODSEQ 6\r\n"
        );
        let max = esearch("t", false, true, false, false);
        assert_eq!(text(esearch_response(max, true, &found, false)), "* ESEARCH (TAG \"t\") UID MAX 10\r\n");
        let count = esearch("t", false, false, false, true);
        assert_eq!(text(esearch_response(count, false, &found, true)), "* ESEARCH (TAG \"t\") COUNT 6 MODSEQ 40\r\n");
        // Nothing found: COUNT 0 and nothing else, but always a response.
        assert_eq!(text(esearch_response(every, true, &[], true)), "* ESEARCH (TAG \"A282\") UID COUNT 0\r\n");
        let all = esearch("t", false, false, true, false);
        assert_eq!(text(esearch_response(all, false, &[], false)), "* ESEARCH (TAG \"t\")\r\n");
        assert_eq!(text(esearch_response(all, false, &[(4, 1)], false)), "* ESEARCH (TAG \"t\") ALL 4\r\n");
    }
}
