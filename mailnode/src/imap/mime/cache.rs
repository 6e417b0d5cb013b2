//! ENVELOPE, BODY and BODYSTRUCTURE of a message, rendered once and kept in the store
//! ([`sirms_storage::MailStore::cache_put`]), so a client listing a mailbox again — or another
//! client, or after a restart — gets them without the message being read and parsed. The
//! message's header block rides along (when it is at most [`HEADER_KEPT`]), so SEARCH's
//! header keys (SUBJECT, FROM, HEADER…) read it instead of the message file.
//!
//! A message never changes, so its three renderings never do either; what can change is how
//! this code renders them. Every cached item therefore starts with [`FORMAT`], and an item of
//! another format is rendered afresh and replaced, never served.

use std::collections::HashMap;

use bytes::Bytes;
use sirms_storage::{Cached, MailStore, UidSet};

use super::{PartRef, envelope, line_count, structure};
use crate::header_block;
use crate::imap::response::Data;

/// The rendering's version. Bump it with any change to what `envelope::write` or
/// `structure::write` produce, so that items rendered by older code are not served.
///
/// 2: the header block as a fourth item.
const FORMAT: u8 = 2;

/// The largest header block kept with the structure; a larger one is read from the message.
pub const HEADER_KEPT: usize = 64 * 1024;

/// What `ENVELOPE` says of a message mail-parser cannot open.
const EMPTY_ENVELOPE: &str = "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)";

/// The three structure items of one message, as they go on the wire after their names, and
/// its header block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Structure {
    pub envelope: Bytes,
    pub body: Bytes,
    pub bodystructure: Bytes,
    /// The message's header block with the empty line that ends it ([`header_block::of`]);
    /// `None` when it is larger than [`HEADER_KEPT`].
    pub header: Option<Bytes>,
}

impl Structure {
    /// Renders the items of the message `raw` whose parsed root part is `root`.
    pub fn render(raw: &[u8], root: Option<PartRef<'_, '_>>) -> Structure {
        let item = |write: &dyn Fn(&mut Data)| {
            let mut out = Data::fragment();
            write(&mut out);
            Bytes::from(out.into_bytes())
        };
        // A message mail-parser could not make sense of reads as one text part.
        let fallback = || {
            format!(
                "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" {} {})",
                raw.len(),
                line_count(raw)
            )
        };
        let header = header_block::of(raw);
        let header = (header.len() <= HEADER_KEPT).then(|| Bytes::copy_from_slice(header));
        match root {
            Some(root) => Structure {
                envelope: item(&|out| envelope::write(out, root)),
                body: item(&|out| structure::write(out, root, false)),
                bodystructure: item(&|out| structure::write(out, root, true)),
                header,
            },
            None => Structure {
                envelope: Bytes::from_static(EMPTY_ENVELOPE.as_bytes()),
                body: Bytes::from(fallback()),
                bodystructure: Bytes::from(fallback()),
                header,
            },
        }
    }

    /// Parses and renders the message `raw`.
    pub fn of(raw: &[u8]) -> Structure {
        let parsed = super::parse(raw);
        Structure::render(raw, parsed.as_ref().and_then(PartRef::root))
    }

    /// The stored form: the format, then each item's length (4 bytes, big-endian) and bytes;
    /// the header block is the fourth item, absent when it was not kept.
    pub fn encode(&self) -> Bytes {
        let items = [Some(&self.envelope), Some(&self.body), Some(&self.bodystructure), self.header.as_ref()];
        let items: Vec<&Bytes> = items.into_iter().flatten().collect();
        let mut out = Vec::with_capacity(1 + items.iter().map(|i| 4 + i.len()).sum::<usize>());
        out.push(FORMAT);
        for item in items {
            out.extend_from_slice(&u32::try_from(item.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(item);
        }
        Bytes::from(out)
    }

    /// The items of a stored form; `None` if it is of another format or damaged.
    pub fn decode(stored: &Bytes) -> Option<Structure> {
        if stored.first() != Some(&FORMAT) {
            return None;
        }
        let mut items = Vec::with_capacity(4);
        let mut at = 1;
        while at < stored.len() && items.len() < 4 {
            let len = u32::from_be_bytes(stored.get(at..at + 4)?.try_into().ok()?) as usize;
            let end = (at + 4).checked_add(len).filter(|&end| end <= stored.len())?;
            items.push(stored.slice(at + 4..end));
            at = end;
        }
        if at != stored.len() {
            return None;
        }
        let mut items = items.into_iter();
        let (envelope, body, bodystructure) = (items.next()?, items.next()?, items.next()?);
        Some(Structure { envelope, body, bodystructure, header: items.next() })
    }
}

/// The cached structures of `uids` that are of the current format. A store that cannot say
/// (a storage node from before the cache) counts as having none: the caller reads the messages.
pub async fn lookup(store: &dyn MailStore, user: &str, mailbox: &str, uids: &UidSet) -> HashMap<u32, Structure> {
    match store.cache_get(user, mailbox, uids).await {
        Ok(items) => items.into_iter().filter_map(|c| Some((c.uid, Structure::decode(&c.data)?))).collect(),
        Err(e) => {
            tracing::debug!(error = %e, "message cache unavailable");
            HashMap::new()
        }
    }
}

/// Has the store keep freshly rendered structures. Keeping them is an optimisation: a
/// failure is logged.
pub async fn keep(store: &dyn MailStore, user: &str, mailbox: &str, mut fresh: Vec<(u32, &Structure)>) {
    if fresh.is_empty() {
        return;
    }
    fresh.sort_unstable_by_key(|(uid, _)| *uid);
    let items = fresh.into_iter().map(|(uid, s)| Cached { uid, data: s.encode() }).collect();
    if let Err(e) = store.cache_put(user, mailbox, items).await {
        tracing::debug!(error = %e, "cannot keep rendered message structures");
    }
}

#[cfg(test)]
mod tests {
    use super::super::{PartRef, parse};
    use super::*;
    use crate::imap::mime::section::tests::NESTED;

    fn fresh(raw: &[u8]) -> (String, String, String) {
        let message = parse(raw).expect("parses");
        let root = PartRef::root(&message).expect("root");
        let render = |f: &dyn Fn(&mut Data)| {
            let mut out = Data::fragment();
            f(&mut out);
            String::from_utf8(out.into_bytes()).expect("utf-8")
        };
        (
            render(&|o| envelope::write(o, root)),
            render(&|o| structure::write(o, root, false)),
            render(&|o| structure::write(o, root, true)),
        )
    }

    #[test]
    fn stored_items_are_the_fresh_renderings_byte_for_byte() {
        let stored = Structure::of(NESTED).encode();
        let back = Structure::decode(&stored).expect("decodes");
        let (envelope, body, bodystructure) = fresh(NESTED);
        assert_eq!(back.envelope, envelope.as_bytes());
        assert_eq!(back.body, body.as_bytes());
        assert_eq!(back.bodystructure, bodystructure.as_bytes());
        assert!(back.bodystructure.starts_with(b"(((\"text\" \"plain\""), "{:?}", back.bodystructure);
    }

    #[test]
    fn other_formats_and_damage_are_not_served() {
        let stored = Structure::of(NESTED).encode();
        let mut older = stored.to_vec();
        older[0] = FORMAT.wrapping_sub(1);
        assert_eq!(Structure::decode(&Bytes::from(older)), None);
        for cut in [0, 1, 3, 10, stored.len() - 1] {
            assert_eq!(Structure::decode(&stored.slice(..cut)), None, "cut at {cut}");
        }
        let mut longer = stored.to_vec();
        longer.push(b'x');
        assert_eq!(Structure::decode(&Bytes::from(longer)), None);
        let mut huge = stored.to_vec();
        huge[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(Structure::decode(&Bytes::from(huge)), None);
    }

    #[test]
    fn unparsable_messages_get_the_fallback() {
        let s = Structure::render(b"x\r\ny", None);
        assert_eq!(s.envelope, EMPTY_ENVELOPE.as_bytes());
        assert_eq!(s.bodystructure, "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 4 2)".as_bytes());
        assert_eq!(Structure::decode(&s.encode()), Some(s));
    }
}
