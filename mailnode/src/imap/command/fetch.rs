//! FETCH and UID FETCH: every RFC 3501 data item, MODSEQ and CHANGEDSINCE (RFC 7162), BINARY and
//! BINARY.SIZE (RFC 3516).

use std::collections::HashMap;

use bytes::Bytes;
use imap_types::IntoStatic;
use imap_types::command::FetchModifier;
use imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItemName, Part, Section as WireSection};
use imap_types::sequence::SequenceSet;
use sirms_storage::{BodyPart, FlagOp, Flags, MailStore, SystemFlags, UidSet};
use tokio::io::AsyncWriteExt;

use crate::calendar;
use crate::imap::error::{CommandError, CommandResult, Done};
use crate::imap::flags;
use crate::imap::mime::cache::{self, Structure};
use crate::imap::mime::section::{self, Section};
use crate::imap::mime::{self, PartRef, binary};
use crate::imap::response::{Code, Data};
use crate::imap::selected::Selected;
use crate::imap::session::{Session, Sink};

/// Messages read from the store per round trip: bounds memory for `1:* BODY[]`.
const BATCH: usize = 64;

/// Cached structures looked up per round trip when no item needs the messages' bytes (FLAGS,
/// ENVELOPE, BODYSTRUCTURE…): a round trip to a storage node costs more than rendering a few
/// hundred of them, and at most [`sirms_storage::MAX_CACHED_SIZE`] each, they stay bounded.
const STRUCTURE_BATCH: usize = 256;

/// One requested data item.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Uid,
    Flags,
    InternalDate,
    Size,
    Envelope,
    Body,
    BodyStructure,
    ModSeq,
    Rfc822,
    Rfc822Header,
    Rfc822Text,
    Section {
        section: Section,
        partial: Option<(u32, u32)>,
        peek: bool,
    },
    /// `BINARY[path]<partial>`: the part decoded.
    Binary {
        path: Vec<u32>,
        partial: Option<(u32, u32)>,
        peek: bool,
    },
    /// `BINARY.SIZE[path]`: the length of the part decoded.
    BinarySize {
        path: Vec<u32>,
    },
    /// `PREVIEW` (RFC 8970), made from the message each time (LAZY or not: it is cheap).
    Preview,
}

impl Item {
    fn from_wire(name: &MessageDataItemName<'_>) -> Result<Item, CommandError> {
        let path = |part: &Option<Part>| {
            part.as_ref().map(|p| p.0.as_ref().iter().map(|n| n.get()).collect()).unwrap_or_default()
        };
        let names = |list: &[imap_types::core::AString<'_>]| list.iter().map(|n| n.as_ref().to_vec()).collect();
        Ok(match name {
            MessageDataItemName::Uid => Item::Uid,
            MessageDataItemName::Flags => Item::Flags,
            MessageDataItemName::InternalDate => Item::InternalDate,
            MessageDataItemName::Rfc822Size => Item::Size,
            MessageDataItemName::Envelope => Item::Envelope,
            MessageDataItemName::Body => Item::Body,
            MessageDataItemName::BodyStructure => Item::BodyStructure,
            MessageDataItemName::ModSeq => Item::ModSeq,
            MessageDataItemName::Rfc822 => Item::Rfc822,
            MessageDataItemName::Rfc822Header => Item::Rfc822Header,
            MessageDataItemName::Rfc822Text => Item::Rfc822Text,
            MessageDataItemName::BodyExt { section, partial, peek } => {
                let section = match section {
                    None => Section::Part(Vec::new()),
                    Some(WireSection::Part(part)) => Section::Part(path(&Some(part.clone()))),
                    Some(WireSection::Header(part)) => Section::Header(path(part)),
                    Some(WireSection::Text(part)) => Section::Text(path(part)),
                    Some(WireSection::Mime(part)) => Section::Mime(path(&Some(part.clone()))),
                    Some(WireSection::HeaderFields(part, list)) => {
                        Section::Fields { path: path(part), names: names(list.as_ref()), exclude: false }
                    }
                    Some(WireSection::HeaderFieldsNot(part, list)) => {
                        Section::Fields { path: path(part), names: names(list.as_ref()), exclude: true }
                    }
                };
                Item::Section { section, partial: partial.map(|(o, l)| (o, l.get())), peek: *peek }
            }
            MessageDataItemName::Binary { section, partial, peek } => Item::Binary {
                path: section.iter().map(|n| n.get()).collect(),
                partial: partial.map(|(o, l)| (o, l.get())),
                peek: *peek,
            },
            MessageDataItemName::BinarySize { section } => {
                Item::BinarySize { path: section.iter().map(|n| n.get()).collect() }
            }
        })
    }

    /// Whether the message's bytes are needed for this item (ENVELOPE, BODY and BODYSTRUCTURE
    /// only when they are not cached).
    fn needs_bytes(&self) -> bool {
        !matches!(self, Item::Uid | Item::Flags | Item::InternalDate | Item::Size | Item::ModSeq)
            && !self.is_structure()
    }

    /// ENVELOPE, BODY and BODYSTRUCTURE: rendered once per message and cached in the store.
    fn is_structure(&self) -> bool {
        matches!(self, Item::Envelope | Item::Body | Item::BodyStructure)
    }

    /// Whether the item needs the MIME tree beyond what a [`Structure`] holds.
    fn needs_parse(&self) -> bool {
        match self {
            Item::Uid | Item::Flags | Item::InternalDate | Item::Size | Item::ModSeq | Item::Rfc822 => false,
            Item::Envelope | Item::Body | Item::BodyStructure => false,
            // The whole message is its bytes as stored: nothing to parse.
            Item::Section { section: Section::Part(path), .. } => !path.is_empty(),
            _ => true,
        }
    }

    fn sets_seen(&self) -> bool {
        matches!(
            self,
            Item::Rfc822 | Item::Rfc822Text | Item::Section { peek: false, .. } | Item::Binary { peek: false, .. }
        )
    }
}

impl Session {
    pub(crate) async fn fetch(
        &mut self,
        set: &SequenceSet,
        names: MacroOrMessageDataItemNames<'_>,
        uid: bool,
        modifiers: &[FetchModifier],
        preview: bool,
        out: &mut Sink<'_>,
    ) -> CommandResult {
        let names = match names {
            MacroOrMessageDataItemNames::Macro(m) => m.expand().into_iter().map(IntoStatic::into_static).collect(),
            MacroOrMessageDataItemNames::MessageDataItemNames(list) => list,
        };
        let mut items = names.iter().map(Item::from_wire).collect::<Result<Vec<_>, _>>()?;
        if preview {
            items.push(Item::Preview);
        }
        let (mut changed_since, mut vanished) = (None, false);
        for modifier in modifiers {
            match modifier {
                FetchModifier::ChangedSince(n) => changed_since = Some(n.get()),
                FetchModifier::Vanished => vanished = true,
            }
        }
        // RFC 7162 §3.2.6: VANISHED goes with UID FETCH and CHANGEDSINCE, once QRESYNC is on.
        if vanished && !(uid && changed_since.is_some() && self.qresync) {
            return Err(CommandError::bad("VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC"));
        }
        if changed_since.is_some() || items.contains(&Item::ModSeq) {
            self.enable_condstore(out).await?;
        }
        if changed_since.is_some() && !items.contains(&Item::ModSeq) {
            items.push(Item::ModSeq);
        }
        // With QRESYNC every FETCH names its UID (RFC 7162 §3.2.4).
        if (uid || self.qresync) && !items.contains(&Item::Uid) {
            items.insert(0, Item::Uid);
        }
        let user = self.login_name()?;
        let view = self.selected()?;
        let mut indexes = view.resolve(set, uid)?;
        if vanished {
            let gone = view.vanished(Some(set));
            if !gone.is_empty() {
                out.write_all(format!("* VANISHED (EARLIER) {gone}\r\n").as_bytes()).await?;
            }
        }
        if let Some(since) = changed_since {
            indexes.retain(|&i| view.entry(i).is_some_and(|e| e.meta.modseq > since));
        }
        let request = Request {
            needs_bytes: items.iter().any(Item::needs_bytes),
            wants_structure: items.iter().any(Item::is_structure),
            sets_seen: !view.read_only && items.iter().any(Item::sets_seen),
            items,
            user,
            mailbox: view.name.clone(),
        };
        let mut gone = false;
        // Cached structures are looked up many at a time (a round trip each, over the network
        // for a storage node); bytes are read, \Seen set and responses rendered a BATCH at a
        // time, which bounds the memory a FETCH holds.
        for lookup in indexes.chunks(if request.needs_bytes { BATCH } else { STRUCTURE_BATCH }) {
            let mut structures = if request.wants_structure {
                let uids = self.selected()?.uids(lookup);
                cache::lookup(&*self.store, &request.user, &request.mailbox, &uids).await
            } else {
                HashMap::new()
            };
            for chunk in lookup.chunks(BATCH) {
                gone |= self.fetch_batch(&request, chunk, &mut structures, out).await?;
            }
        }
        if gone {
            // RFC 2180 §4.1.3: another session expunged some of these messages; their data is
            // not invented, and the client learns why it is missing (RFC 5530).
            return Err(CommandError::no(Some(Code::ExpungeIssued), "some of the requested messages no longer exist"));
        }
        Ok(Done::ok(if uid { "UID FETCH completed" } else { "FETCH completed" }))
    }

    /// Answers for the messages at `chunk`, taking their structures out of `structures`
    /// (and rendering and caching those not there). True if some message's data was needed
    /// but the store no longer has the message (another session expunged it): it is left out.
    async fn fetch_batch(
        &mut self,
        request: &Request,
        chunk: &[usize],
        structures: &mut HashMap<u32, Structure>,
        out: &mut Sink<'_>,
    ) -> CommandResult<bool> {
        let (user, name, items) = (&request.user, &request.mailbox, &request.items);
        let view = self.selected()?;
        // The bytes of every message when an item needs them, else of those whose structure is
        // not cached yet.
        let wanted: UidSet = chunk
            .iter()
            .filter_map(|&i| view.entry(i))
            .map(|e| e.meta.uid)
            .filter(|uid| request.needs_bytes || (request.wants_structure && !structures.contains_key(uid)))
            .collect();
        let bodies = if wanted.is_empty() { HashMap::new() } else { read(&*self.store, user, name, &wanted).await? };
        if request.wants_structure {
            remember(&*self.store, user, name, &bodies, structures).await;
        }
        // A BINARY item that cannot be answered fails the command before this batch sets \Seen.
        let view = self.selected()?;
        if let Some((index, encoding)) = undecodable(view, chunk, &bodies, items) {
            return Err(unknown_cte(index, &encoding));
        }
        let mut seen_now = UidSet::new();
        if request.sets_seen {
            let unseen: UidSet = chunk
                .iter()
                .filter_map(|&i| view.entry(i))
                .filter(|e| !e.meta.flags.system.contains(SystemFlags::SEEN))
                .map(|e| e.meta.uid)
                .collect();
            if !unseen.is_empty() {
                let seen = Flags::system(SystemFlags::SEEN);
                let changed = self.store.store_flags(user, name, &unseen, FlagOp::Add, &seen, None).await?;
                let view = self.selected()?;
                for meta in changed {
                    seen_now.insert(meta.uid);
                    view.update(meta);
                }
            }
        }
        let view = self.selected()?;
        let mut lines = view.flags_update().unwrap_or_default();
        let mut gone = false;
        for &index in chunk {
            let Some(entry) = view.entry(index) else { continue };
            let raw = bodies.get(&entry.meta.uid).map(Bytes::as_ref);
            let structure = structures.remove(&entry.meta.uid);
            if raw.is_none() && (request.needs_bytes || (request.wants_structure && structure.is_none())) {
                gone = true;
                continue;
            }
            let with_flags;
            let wanted = if seen_now.contains(entry.meta.uid) && !items.contains(&Item::Flags) {
                // The implicit \Seen is reported with the data (RFC 3501 §6.4.5).
                with_flags = [items.as_slice(), &[Item::Flags]].concat();
                &with_flags
            } else {
                items
            };
            lines.extend(
                render(index + 1, entry, raw, structure.as_ref(), wanted).map_err(|e| unknown_cte(index, &e.0))?,
            );
        }
        out.write_all(&lines).await?;
        Ok(gone)
    }
}

/// What one FETCH command asks for, as its batches need it.
struct Request {
    items: Vec<Item>,
    user: String,
    mailbox: String,
    /// Some item needs the messages' bytes (not only their structures).
    needs_bytes: bool,
    /// ENVELOPE, BODY or BODYSTRUCTURE is asked for.
    wants_structure: bool,
    /// The FETCH sets \Seen (a non-peek body item in a read-write mailbox).
    sets_seen: bool,
}

/// The bytes of the messages in `uids` (those still there).
async fn read(store: &dyn MailStore, user: &str, mailbox: &str, uids: &UidSet) -> CommandResult<HashMap<u32, Bytes>> {
    let fetched = store.fetch(user, mailbox, uids, BodyPart::Full).await?;
    Ok(fetched.into_iter().filter_map(|m| Some((m.meta.uid, m.body?))).collect())
}

/// Renders the structures of the messages in `bodies` that have none in `structures`, adds
/// them, and has the store keep them.
async fn remember(
    store: &dyn MailStore,
    user: &str,
    mailbox: &str,
    bodies: &HashMap<u32, Bytes>,
    structures: &mut HashMap<u32, Structure>,
) {
    let fresh: Vec<(u32, Structure)> = bodies
        .iter()
        .filter(|(uid, _)| !structures.contains_key(uid))
        .map(|(&uid, raw)| (uid, Structure::of(raw)))
        .collect();
    cache::keep(store, user, mailbox, fresh.iter().map(|(uid, s)| (*uid, s)).collect()).await;
    structures.extend(fresh);
}

/// The first message of `chunk` (its index and the encoding) with a part a BINARY item asks
/// for in a Content-Transfer-Encoding that cannot be undone.
fn undecodable(
    view: &Selected,
    chunk: &[usize],
    bodies: &HashMap<u32, Bytes>,
    items: &[Item],
) -> Option<(usize, String)> {
    let paths: Vec<&[u32]> = items
        .iter()
        .filter_map(|item| match item {
            Item::Binary { path, .. } | Item::BinarySize { path } => Some(path.as_slice()),
            _ => None,
        })
        .collect();
    if paths.is_empty() {
        return None;
    }
    for &index in chunk {
        let Some(raw) = view.entry(index).and_then(|e| bodies.get(&e.meta.uid)) else { continue };
        let parsed = mime::parse(raw);
        for path in &paths {
            if let Err(binary::UnknownCte(encoding)) = binary::extract(raw, parsed.as_ref(), path) {
                return Some((index, encoding));
            }
        }
    }
    None
}

/// The tagged NO of a BINARY FETCH that met an unknown encoding (RFC 3516 §4.1); what was
/// answered before it stands.
fn unknown_cte(index: usize, encoding: &str) -> CommandError {
    let text = format!("message {} has a part in Content-Transfer-Encoding {encoding:?}", index + 1);
    CommandError::no(Some(Code::UnknownCte), text)
}

/// One `* n FETCH (…)` response, with the message's cached `structure` if there is one; fails
/// on a BINARY item whose part's encoding is unknown.
fn render(
    seq: usize,
    entry: &crate::imap::selected::Entry,
    raw: Option<&[u8]>,
    structure: Option<&Structure>,
    items: &[Item],
) -> Result<Vec<u8>, binary::UnknownCte> {
    let raw = raw.unwrap_or_default();
    let wants_structure = items.iter().any(Item::is_structure);
    let parsed = if items.iter().any(Item::needs_parse) || (wants_structure && structure.is_none()) {
        mime::parse(raw)
    } else {
        None
    };
    let root = parsed.as_ref().and_then(PartRef::root);
    let computed;
    let structure = match structure {
        Some(s) => Some(s),
        None if wants_structure => {
            computed = Structure::render(raw, root);
            Some(&computed)
        }
        None => None,
    };
    let meta = &entry.meta;
    let mut data = Data::new(seq);
    // One allocation for the line: a structure is most of it, and growing by doubling from a
    // small start cost a few reallocations per message in a FETCH of many.
    data.reserve(64 + structure.map_or(0, |s| s.envelope.len() + s.body.len() + s.bodystructure.len()));
    data.raw(" FETCH (");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            data.raw(" ");
        }
        match item {
            Item::Uid => {
                data.raw(format_args!("UID {}", meta.uid));
            }
            Item::Flags => {
                data.raw(format_args!("FLAGS ({})", flags::render(&meta.flags, entry.recent)));
            }
            Item::InternalDate => {
                data.raw(format_args!("INTERNALDATE \"{}\"", calendar::internal_date(meta.internal_date)));
            }
            Item::Size => {
                data.raw(format_args!("RFC822.SIZE {}", meta.size));
            }
            Item::ModSeq => {
                data.raw(format_args!("MODSEQ ({})", meta.modseq));
            }
            Item::Envelope | Item::Body | Item::BodyStructure => {
                // Set above whenever one of these is asked for.
                if let Some(s) = structure {
                    let (name, bytes) = match item {
                        Item::Envelope => ("ENVELOPE ", &s.envelope),
                        Item::Body => ("BODY ", &s.body),
                        _ => ("BODYSTRUCTURE ", &s.bodystructure),
                    };
                    data.raw(name).bytes(bytes);
                }
            }
            Item::Rfc822 => {
                data.raw("RFC822 ").literal(raw);
            }
            Item::Rfc822Header => {
                let bytes = section::extract(raw, parsed.as_ref(), &Section::Header(Vec::new()));
                data.raw("RFC822.HEADER ").literal(&bytes);
            }
            Item::Rfc822Text => {
                let bytes = section::extract(raw, parsed.as_ref(), &Section::Text(Vec::new()));
                data.raw("RFC822.TEXT ").literal(&bytes);
            }
            Item::Section { section: wanted, partial, .. } => {
                let bytes = section::extract(raw, parsed.as_ref(), wanted);
                data.raw(format_args!("BODY[{}]", wanted.spec()));
                match partial {
                    Some((origin, length)) => {
                        data.raw(format_args!("<{origin}> ")).literal(section::partial(&bytes, *origin, *length));
                    }
                    None => {
                        data.raw(" ").literal(&bytes);
                    }
                }
            }
            Item::Binary { path, partial, .. } => {
                let bytes = binary::extract(raw, parsed.as_ref(), path)?;
                data.raw(format_args!("BINARY[{}]", Section::Part(path.clone()).spec()));
                match partial {
                    Some((origin, length)) => {
                        data.raw(format_args!("<{origin}> ")).binary(section::partial(&bytes, *origin, *length));
                    }
                    None => {
                        data.raw(" ").binary(&bytes);
                    }
                }
            }
            Item::BinarySize { path } => {
                let bytes = binary::extract(raw, parsed.as_ref(), path)?;
                data.raw(format_args!("BINARY.SIZE[{}] {}", Section::Part(path.clone()).spec(), bytes.len()));
            }
            Item::Preview => {
                let text = parsed.as_ref().map(mime::preview::text).unwrap_or_default();
                data.raw("PREVIEW ").string(text.as_bytes());
            }
        }
    }
    data.raw(")");
    Ok(data.finish())
}
