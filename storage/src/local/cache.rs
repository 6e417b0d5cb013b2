//! A folder's message cache: data derived from each message's bytes (IMAP keeps ENVELOPE and
//! BODYSTRUCTURE here), in a sled tree beside the folder's index.
//!
//! Like the index it is never fsynced and may be lost; unlike the index it cannot be rebuilt
//! from a directory listing, only derived again from the messages by whoever put it. Each
//! entry is bound to the message's identity, the file name's base (`<unique>,U=<uid>,S=<size>`,
//! which flag changes leave alone): an entry whose base is not the current file's is never
//! served, so neither a reused key nor a file replaced behind our back can return another
//! message's data.

use bytes::Bytes;

use crate::error::Result;
use crate::message::{Cached, MAX_CACHED_SIZE};

/// The identity of a message file: its name without the `:2,flags` info.
pub fn identity(file_name: &str) -> &str {
    file_name.rfind(':').map_or(file_name, |i| &file_name[..i])
}

/// Stored form: the identity's length (2 bytes, big-endian), the identity, the data.
fn encode(identity: &str, data: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(identity.len()).ok()?;
    let mut v = Vec::with_capacity(2 + identity.len() + data.len());
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(identity.as_bytes());
    v.extend_from_slice(data);
    Some(v)
}

/// The identity and the data of a stored entry; `None` if it is damaged.
fn decode(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u16::from_be_bytes(value.get(0..2)?.try_into().ok()?) as usize;
    let identity = value.get(2..2 + len)?;
    Some((identity, &value[2 + len..]))
}

/// One folder's cache.
pub struct MessageCache {
    tree: sled::Tree,
}

impl MessageCache {
    /// The cache kept in `tree`.
    pub fn new(tree: sled::Tree) -> MessageCache {
        MessageCache { tree }
    }

    /// The data of the messages in `wanted` (UID and current identity, in UID order) whose
    /// entry was made for that identity.
    pub fn get(&self, wanted: &[(u32, String)]) -> Result<Vec<Cached>> {
        let mut out = Vec::new();
        for (uid, current) in wanted {
            let Some(value) = self.tree.get(uid.to_be_bytes())? else { continue };
            if let Some((identity, data)) = decode(&value)
                && identity == current.as_bytes()
            {
                out.push(Cached { uid: *uid, data: Bytes::copy_from_slice(data) });
            }
        }
        Ok(out)
    }

    /// Keeps data for messages (UID, the file's identity, data) in one sled batch: a FETCH or
    /// SEARCH renders a few hundred at a time. Too large data is dropped.
    pub fn put_many<'a>(&self, items: impl IntoIterator<Item = (u32, &'a str, &'a [u8])>) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (uid, identity, data) in items {
            if data.len() > MAX_CACHED_SIZE {
                continue;
            }
            if let Some(value) = encode(identity, data) {
                batch.insert(&uid.to_be_bytes(), value);
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Forgets the entries of messages that are gone.
    pub fn remove(&self, uids: &[u32]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for uid in uids {
            batch.remove(&uid.to_be_bytes());
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Forgets everything (the folder's index could not be trusted to find stale entries).
    pub fn clear(&self) -> Result<()> {
        self.tree.clear()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> (MessageCache, sled::Db) {
        let db = sled::Config::new().temporary(true).open().expect("sled");
        (MessageCache::new(db.open_tree("c").expect("tree")), db)
    }

    #[test]
    fn identity_is_the_name_without_flags() {
        assert_eq!(identity("1.M2P3Q4.host,U=7,S=99:2,FS"), "1.M2P3Q4.host,U=7,S=99");
        assert_eq!(identity("1.M2P3Q4.host,U=7,S=99:2,"), "1.M2P3Q4.host,U=7,S=99");
        assert_eq!(identity("plain"), "plain");
    }

    #[test]
    fn entries_serve_only_the_file_they_were_made_for() {
        let (c, _db) = cache();
        c.put_many([(7, "a,U=7,S=10", &b"seven"[..])]).unwrap();
        c.put_many([(8, "b,U=8,S=10", &b"eight"[..])]).unwrap();
        let got = c.get(&[(7, "a,U=7,S=10".into()), (8, "other,U=8,S=10".into()), (9, "c,U=9,S=1".into())]).unwrap();
        assert_eq!(got, vec![Cached { uid: 7, data: Bytes::from_static(b"seven") }]);
        c.remove(&[7]).unwrap();
        assert!(c.get(&[(7, "a,U=7,S=10".into())]).unwrap().is_empty());
        c.put_many([(9, "c,U=9,S=1", &vec![0; MAX_CACHED_SIZE + 1][..])]).unwrap();
        assert!(c.get(&[(9, "c,U=9,S=1".into())]).unwrap().is_empty());
    }

    #[test]
    fn clear_forgets_everything() {
        let (c, _db) = cache();
        c.put_many([(1, "a,U=1,S=1", &b"x"[..])]).unwrap();
        c.put_many([(2, "b,U=2,S=1", &b"y"[..])]).unwrap();
        c.clear().unwrap();
        assert!(c.get(&[(1, "a,U=1,S=1".into()), (2, "b,U=2,S=1".into())]).unwrap().is_empty());
    }
}
