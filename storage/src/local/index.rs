//! The sled index: per-folder message entries and counters, in a compact binary form.
//!
//! The index is a cache of what the Maildir says plus what a file name cannot hold
//! (modseqs, the `\Recent` mark). It is never flushed on the hot path: a folder is
//! reconciled against its directory listing when it is opened, so an index that a crash
//! left behind is repaired, and a missing one is rebuilt.

/// One message as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub file_name: String,
    pub size: u64,
    pub internal_date: i64,
    pub modseq: u64,
}

impl IndexEntry {
    /// Binary form: size, date, modseq (8 bytes each, big-endian), then the file name.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(24 + self.file_name.len());
        v.extend_from_slice(&self.size.to_be_bytes());
        v.extend_from_slice(&self.internal_date.to_be_bytes());
        v.extend_from_slice(&self.modseq.to_be_bytes());
        v.extend_from_slice(self.file_name.as_bytes());
        v
    }

    /// Parses the binary form; `None` if it is damaged.
    pub fn decode(bytes: &[u8]) -> Option<IndexEntry> {
        let size = u64::from_be_bytes(bytes.get(0..8)?.try_into().ok()?);
        let internal_date = i64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
        let modseq = u64::from_be_bytes(bytes.get(16..24)?.try_into().ok()?);
        let file_name = String::from_utf8(bytes.get(24..)?.to_vec()).ok()?;
        Some(IndexEntry { file_name, size, internal_date, modseq })
    }
}

/// A folder's counters as the index keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FolderCounters {
    pub uid_validity: u32,
    pub uid_next: u32,
    pub highest_modseq: u64,
    pub recent_floor: u32,
}

impl FolderCounters {
    /// Binary form, 20 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(20);
        v.extend_from_slice(&self.uid_validity.to_be_bytes());
        v.extend_from_slice(&self.uid_next.to_be_bytes());
        v.extend_from_slice(&self.highest_modseq.to_be_bytes());
        v.extend_from_slice(&self.recent_floor.to_be_bytes());
        v
    }

    /// Parses the binary form; `None` if it is damaged.
    pub fn decode(b: &[u8]) -> Option<FolderCounters> {
        Some(FolderCounters {
            uid_validity: u32::from_be_bytes(b.get(0..4)?.try_into().ok()?),
            uid_next: u32::from_be_bytes(b.get(4..8)?.try_into().ok()?),
            highest_modseq: u64::from_be_bytes(b.get(8..16)?.try_into().ok()?),
            recent_floor: u32::from_be_bytes(b.get(16..20)?.try_into().ok()?),
        })
    }
}

/// The sled tree name of a folder's messages.
pub fn tree_name(user: &str, mailbox: &str) -> Vec<u8> {
    let mut v = b"msgs\0".to_vec();
    v.extend_from_slice(user.as_bytes());
    v.push(0);
    v.extend_from_slice(mailbox.as_bytes());
    v
}

/// The sled tree name of a folder's message cache.
pub fn cache_tree_name(user: &str, mailbox: &str) -> Vec<u8> {
    let mut v = b"cache\0".to_vec();
    v.extend_from_slice(user.as_bytes());
    v.push(0);
    v.extend_from_slice(mailbox.as_bytes());
    v
}

/// The key of a folder's counters in the `folders` tree.
pub fn counters_key(user: &str, mailbox: &str) -> Vec<u8> {
    let mut v = user.as_bytes().to_vec();
    v.push(0);
    v.extend_from_slice(mailbox.as_bytes());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let e = IndexEntry { file_name: "a,U=1,S=2:2,S".into(), size: 2, internal_date: -5, modseq: 9 };
        assert_eq!(IndexEntry::decode(&e.encode()), Some(e));
        assert_eq!(IndexEntry::decode(b"short"), None);
        let c = FolderCounters { uid_validity: 1, uid_next: 2, highest_modseq: 3, recent_floor: 4 };
        assert_eq!(FolderCounters::decode(&c.encode()), Some(c));
    }
}
