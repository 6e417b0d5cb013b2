//! A message's MIME tree as IMAP shows it: sections, decoded parts, header fields, ENVELOPE,
//! BODYSTRUCTURE (for FETCH, and SEARCH's header and body keys). Pure functions over the tree
//! mail-parser builds, so they are unit-tested without a store.

pub mod binary;
pub mod cache;
pub mod envelope;
pub mod header;
pub mod preview;
pub mod section;
pub mod structure;

use mail_parser::{Message, MessageParser, MessagePart, PartType};

/// Parses a stored message; a message mail-parser cannot make sense of is treated as one
/// text part with an empty header, so FETCH still answers something sensible.
pub fn parse(raw: &[u8]) -> Option<Message<'_>> {
    MessageParser::default().parse(raw)
}

/// One MIME part and the message whose raw bytes its offsets index.
///
/// Offsets of parts inside an attached message/rfc822 are relative to that message's own
/// bytes, which is why a part is always paired with the message it belongs to.
#[derive(Clone, Copy)]
pub struct PartRef<'m, 'x> {
    pub message: &'m Message<'x>,
    pub id: usize,
}

impl<'m, 'x> PartRef<'m, 'x> {
    /// The root part of `message`.
    pub fn root(message: &'m Message<'x>) -> Option<Self> {
        (!message.parts.is_empty()).then_some(PartRef { message, id: 0 })
    }

    /// The part itself.
    pub fn part(&self) -> &'m MessagePart<'x> {
        &self.message.parts[self.id]
    }

    fn slice(&self, from: u32, to: u32) -> &'m [u8] {
        let raw: &'m [u8] = self.message.raw_message.as_ref();
        let end = (to as usize).min(raw.len());
        let start = (from as usize).min(end);
        &raw[start..end]
    }

    /// The part's header block, with the empty line that ends it.
    pub fn header(&self) -> &'m [u8] {
        let p = self.part();
        self.slice(p.offset_header, p.offset_body)
    }

    /// The part's body as stored (still transfer-encoded).
    pub fn body(&self) -> &'m [u8] {
        let p = self.part();
        self.slice(p.offset_body, p.offset_end)
    }

    /// The bytes from the end of the part's header up to offset `end` (clamped): a message's
    /// TEXT, when `end` is where the message ends.
    pub fn text_to(&self, end: u32) -> &'m [u8] {
        self.slice(self.part().offset_body, end)
    }

    /// The children of a multipart part.
    pub fn children(&self) -> Option<Vec<PartRef<'m, 'x>>> {
        match &self.part().body {
            PartType::Multipart(ids) => Some(
                ids.iter()
                    .filter(|&&id| (id as usize) < self.message.parts.len())
                    .map(|&id| PartRef { message: self.message, id: id as usize })
                    .collect(),
            ),
            _ => None,
        }
    }

    /// The root of the message a message/rfc822 part encapsulates.
    pub fn nested(&self) -> Option<PartRef<'m, 'x>> {
        match &self.part().body {
            PartType::Message(message) => PartRef::root(message),
            _ => None,
        }
    }

    /// The part that an IMAP part number path names (RFC 3501 §6.4.5).
    pub fn find(self, path: &[u32]) -> Option<PartRef<'m, 'x>> {
        let mut current = self;
        for (i, &n) in path.iter().enumerate() {
            if i > 0
                && let Some(inner) = current.nested()
            {
                current = inner;
            }
            match current.children() {
                Some(children) => current = *children.get((n as usize).checked_sub(1)?)?,
                // A non-multipart part has exactly one part: its own body.
                None if n == 1 => {}
                None => return None,
            }
        }
        Some(current)
    }
}

/// The number of lines of a body, as BODYSTRUCTURE counts them.
pub fn line_count(body: &[u8]) -> usize {
    let newlines = body.iter().filter(|&&b| b == b'\n').count();
    if body.last().is_some_and(|&b| b != b'\n') { newlines + 1 } else { newlines }
}
