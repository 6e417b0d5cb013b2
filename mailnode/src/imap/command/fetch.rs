//! FETCH and UID FETCH: every RFC 3501 data item, MODSEQ and CHANGEDSINCE (RFC 7162), BINARY and
//! BINARY.SIZE (RFC 3516).

use std::collections::HashMap;

use bytes::Bytes;
use imap_types::IntoStatic;
use imap_types::command::FetchModifier;
use imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItemName, Part, Section as WireSection};
use imap_types::sequence::SequenceSet;
use sirms_storage::{BodyPart, FlagOp, Flags, SystemFlags, UidSet};
use tokio::io::AsyncWriteExt;

use crate::imap::date;
use crate::imap::error::{CommandError, CommandResult, Done};
use crate::imap::fetch::section::{self, Section};
use crate::imap::fetch::{self as mime, PartRef, binary, envelope, structure};
use crate::imap::flags;
use crate::imap::response::{Code, Data};
use crate::imap::selected::Selected;
use crate::imap::session::{Session, Sink};

/// Messages read from the store per round trip: bounds memory for `1:* BODY[]`.
const BATCH: usize = 64;

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

    fn needs_bytes(&self) -> bool {
        !matches!(self, Item::Uid | Item::Flags | Item::InternalDate | Item::Size | Item::ModSeq)
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
        out: &mut Sink<'_>,
    ) -> CommandResult {
        let names = match names {
            MacroOrMessageDataItemNames::Macro(m) => m.expand().into_iter().map(IntoStatic::into_static).collect(),
            MacroOrMessageDataItemNames::MessageDataItemNames(list) => list,
        };
        let mut items = names.iter().map(Item::from_wire).collect::<Result<Vec<_>, _>>()?;
        let mut changed_since = None;
        for modifier in modifiers {
            match modifier {
                FetchModifier::ChangedSince(n) => changed_since = Some(n.get()),
                FetchModifier::Vanished => return Err(CommandError::bad("VANISHED needs QRESYNC")),
            }
        }
        if changed_since.is_some() || items.contains(&Item::ModSeq) {
            self.condstore = true;
        }
        if changed_since.is_some() && !items.contains(&Item::ModSeq) {
            items.push(Item::ModSeq);
        }
        if uid && !items.contains(&Item::Uid) {
            items.insert(0, Item::Uid);
        }
        let needs_bytes = items.iter().any(Item::needs_bytes);
        let user = self.login_name()?;
        let view = self.selected()?;
        let sets_seen = !view.read_only && items.iter().any(Item::sets_seen);
        let mut indexes = view.resolve(set, uid)?;
        if let Some(since) = changed_since {
            indexes.retain(|&i| view.entry(i).is_some_and(|e| e.meta.modseq > since));
        }
        let name = view.name.clone();
        for chunk in indexes.chunks(BATCH) {
            let view = self.selected()?;
            let bodies: HashMap<u32, Bytes> = if needs_bytes {
                let uids = view.uids(chunk);
                self.store
                    .fetch(&user, &name, &uids, BodyPart::Full)
                    .await?
                    .into_iter()
                    .filter_map(|m| Some((m.meta.uid, m.body?)))
                    .collect()
            } else {
                HashMap::new()
            };
            // A BINARY item that cannot be answered fails the command before this batch sets \Seen.
            let view = self.selected()?;
            if let Some((index, encoding)) = undecodable(view, chunk, &bodies, &items) {
                return Err(unknown_cte(index, &encoding));
            }
            let mut seen_now = UidSet::new();
            if sets_seen {
                let unseen: UidSet = chunk
                    .iter()
                    .filter_map(|&i| view.entry(i))
                    .filter(|e| !e.meta.flags.system.contains(SystemFlags::SEEN))
                    .map(|e| e.meta.uid)
                    .collect();
                if !unseen.is_empty() {
                    let seen = Flags::system(SystemFlags::SEEN);
                    let changed = self.store.store_flags(&user, &name, &unseen, FlagOp::Add, &seen, None).await?;
                    let view = self.selected()?;
                    for meta in changed {
                        seen_now.insert(meta.uid);
                        view.update(meta);
                    }
                }
            }
            let view = self.selected()?;
            let mut lines = Vec::new();
            for &index in chunk {
                let Some(entry) = view.entry(index) else { continue };
                let raw = bodies.get(&entry.meta.uid).map(Bytes::as_ref);
                let mut wanted = items.clone();
                if seen_now.contains(entry.meta.uid) && !wanted.contains(&Item::Flags) {
                    // The implicit \Seen is reported with the data (RFC 3501 §6.4.5).
                    wanted.push(Item::Flags);
                }
                lines.extend(render(index + 1, entry, raw, &wanted).map_err(|e| unknown_cte(index, &e.0))?);
            }
            out.write_all(&lines).await?;
        }
        Ok(Done::ok(if uid { "UID FETCH completed" } else { "FETCH completed" }))
    }
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

/// One `* n FETCH (…)` response; fails on a BINARY item whose part's encoding is unknown.
fn render(
    seq: usize,
    entry: &crate::imap::selected::Entry,
    raw: Option<&[u8]>,
    items: &[Item],
) -> Result<Vec<u8>, binary::UnknownCte> {
    let raw = raw.unwrap_or_default();
    let parsed = if items
        .iter()
        .any(|i| !matches!(i, Item::Uid | Item::Flags | Item::InternalDate | Item::Size | Item::ModSeq | Item::Rfc822))
    {
        mime::parse(raw)
    } else {
        None
    };
    let root = parsed.as_ref().and_then(PartRef::root);
    let meta = &entry.meta;
    let mut data = Data::new(seq);
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
                data.raw(format_args!("INTERNALDATE \"{}\"", date::internal_date(meta.internal_date)));
            }
            Item::Size => {
                data.raw(format_args!("RFC822.SIZE {}", meta.size));
            }
            Item::ModSeq => {
                data.raw(format_args!("MODSEQ ({})", meta.modseq));
            }
            Item::Envelope => {
                data.raw("ENVELOPE ");
                match root {
                    Some(root) => envelope::write(&mut data, root),
                    None => {
                        data.raw("(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)");
                    }
                }
            }
            Item::Body | Item::BodyStructure => {
                let extended = *item == Item::BodyStructure;
                data.raw(if extended { "BODYSTRUCTURE " } else { "BODY " });
                match root {
                    Some(root) => structure::write(&mut data, root, extended),
                    None => {
                        data.raw(format_args!(
                            "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" {} {})",
                            raw.len(),
                            mime::line_count(raw)
                        ));
                    }
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
        }
    }
    data.raw(")");
    Ok(data.finish())
}
