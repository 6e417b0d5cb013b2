//! Copies of other nodes' spool entries, held so that mail a node accepted for later delivery
//! survives the loss of that node's disk.
//!
//! `spool-copies/<origin>/` is a [`Spool`] per origin node, written as durably as the node's own
//! spool. When the origin has been gone long enough, its copies are *adopted*: moved into this
//! node's own spool, delivered from there, and their ids recorded in `adopted/<origin>` until the
//! origin, back again, has been told and has dropped its own entries of the same ids.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use sirms_storage::durable::{create_private_dir, write_atomic};

use super::{Claim, QueuedEnvelope, Spool, valid_id};

/// Where a node keeps other nodes' spool entries.
#[derive(Debug)]
pub struct Copies {
    dir: PathBuf,
    /// Each origin's spool, opened once (opening takes the spool's lock for this process).
    spools: Mutex<HashMap<String, Arc<Spool>>>,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("invalid {what}"))
}

/// A claim on copy `id` of `spool`, or why not: another call is changing that copy now.
fn claim(spool: &Spool, id: &str) -> io::Result<Claim> {
    spool.claim(id).ok_or_else(|| io::Error::new(io::ErrorKind::ResourceBusy, format!("copy {id} is busy")))
}

impl Copies {
    /// Opens (creating, owner-only) the copies under `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Copies> {
        let dir = dir.into();
        create_private_dir(&dir)?;
        create_private_dir(&dir.join("adopted"))?;
        Ok(Copies { dir, spools: Mutex::default() })
    }

    fn spool_of(&self, origin: &str) -> io::Result<Arc<Spool>> {
        if !valid_id(origin) {
            return Err(invalid("origin node"));
        }
        let mut spools = self.spools.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(spool) = spools.get(origin) {
            return Ok(spool.clone());
        }
        create_private_dir(&self.dir.join("nodes"))?;
        let spool = Arc::new(Spool::open(self.dir.join("nodes").join(origin))?);
        spools.insert(origin.to_string(), spool.clone());
        Ok(spool)
    }

    /// Keeps a copy of `origin`'s entry durably (blocking); `message` `None` replaces only the
    /// envelope of a copy already kept. Keeping a copy kept already (a call repeated after a
    /// lost answer) changes nothing.
    pub fn keep(&self, origin: &str, envelope: &QueuedEnvelope, message: Option<&[u8]>) -> io::Result<()> {
        let spool = self.spool_of(origin)?;
        match message {
            Some(message) => match spool.enqueue(envelope, message) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                other => other,
            },
            None => spool.update(&claim(&spool, &envelope.id)?, envelope),
        }
    }

    /// Drops a copy (blocking); one already gone is not an error.
    pub fn forget(&self, origin: &str, id: &str) -> io::Result<()> {
        let spool = self.spool_of(origin)?;
        match spool.remove(&claim(&spool, id)?) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// The nodes this node holds copies for (blocking).
    pub fn origins(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        let dir = self.dir.join("nodes");
        if !dir.exists() {
            return Ok(out);
        }
        for entry in fs::read_dir(dir)? {
            if let Some(name) = entry?.file_name().to_str().filter(|n| valid_id(n)) {
                out.push(name.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    /// How many copies of `origin`'s entries are held (blocking).
    pub fn count(&self, origin: &str) -> io::Result<usize> {
        Ok(self.spool_of(origin)?.list()?.envelopes.len())
    }

    /// Moves every copy of `origin`'s entries into `own` (this node's spool), recording their
    /// ids as adopted first (blocking); returns the ids. A crash half-way leaves a copy both
    /// here and in `own` at worst: adopted again, it replaces itself, and is delivered once.
    pub fn adopt(&self, origin: &str, own: &Spool) -> io::Result<Vec<String>> {
        let spool = self.spool_of(origin)?;
        let copies = spool.list()?.envelopes;
        let mut adopted = self.adopted(origin)?;
        let new: Vec<String> = copies.iter().map(|c| c.id.clone()).filter(|id| !adopted.contains(id)).collect();
        adopted.extend(new);
        self.write_adopted(origin, &adopted)?;
        let mut ids = Vec::with_capacity(copies.len());
        for envelope in copies {
            let message = spool.message(&envelope.id)?;
            // Due now: the origin's backoff was for its own attempts.
            let envelope = QueuedEnvelope { next_attempt: 0, copy: String::new(), ..envelope };
            match own.enqueue(&envelope, &message) {
                // Moved already by an adoption that crashed before removing the copy.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                other => other?,
            }
            spool.remove(&claim(&spool, &envelope.id)?)?;
            ids.push(envelope.id);
        }
        Ok(ids)
    }

    /// The ids of `origin`'s entries adopted here and not yet cleared (blocking).
    pub fn adopted(&self, origin: &str) -> io::Result<Vec<String>> {
        if !valid_id(origin) {
            return Err(invalid("origin node"));
        }
        match fs::read_to_string(self.dir.join("adopted").join(origin)) {
            Ok(text) => Ok(text.lines().filter(|l| valid_id(l)).map(str::to_string).collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Clears `ids` from `origin`'s adopted record (blocking).
    pub fn clear_adopted(&self, origin: &str, ids: &[String]) -> io::Result<()> {
        let left: Vec<String> = self.adopted(origin)?.into_iter().filter(|id| !ids.contains(id)).collect();
        self.write_adopted(origin, &left)
    }

    fn write_adopted(&self, origin: &str, ids: &[String]) -> io::Result<()> {
        let path = self.dir.join("adopted").join(origin);
        if ids.is_empty() {
            return match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let text: String = ids.iter().map(|id| format!("{id}\n")).collect();
        write_atomic(&path, text.as_bytes(), "spool-adopted")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(id: &str) -> QueuedEnvelope {
        QueuedEnvelope {
            id: id.into(),
            from: "a@b.test".into(),
            remote: vec!["x@far.test".into()],
            next_attempt: 4_000_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn kept_updated_forgotten_and_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let copies = Copies::open(dir.path().join("copies")).unwrap();
        let own = Spool::open(dir.path().join("own")).unwrap();
        copies.keep("node1", &envelope("node1.a"), Some(b"one")).unwrap();
        copies.keep("node1", &envelope("node1.b"), Some(b"two")).unwrap();
        let mut updated = envelope("node1.b");
        updated.attempts = 3;
        copies.keep("node1", &updated, None).unwrap();
        assert!(copies.keep("node1", &envelope("node1.c"), None).is_err(), "an update needs its message");
        copies.forget("node1", "node1.a").unwrap();
        copies.forget("node1", "node1.a").unwrap();
        assert_eq!(copies.origins().unwrap(), vec!["node1"]);
        assert_eq!(copies.count("node1").unwrap(), 1);

        assert_eq!(copies.adopt("node1", &own).unwrap(), vec!["node1.b"]);
        let queued = own.list().unwrap().envelopes;
        assert_eq!(queued.len(), 1);
        assert_eq!((queued[0].attempts, queued[0].next_attempt), (3, 0));
        assert_eq!(own.message("node1.b").unwrap(), b"two");
        assert_eq!(copies.count("node1").unwrap(), 0);
        assert_eq!(copies.adopted("node1").unwrap(), vec!["node1.b"]);
        copies.clear_adopted("node1", &["node1.b".into()]).unwrap();
        assert!(copies.adopted("node1").unwrap().is_empty());

        assert!(copies.keep("../x", &envelope("q"), Some(b"x")).is_err());
        assert!(copies.adopted("../x").is_err());
    }
}
