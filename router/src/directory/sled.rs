//! The directory in a sled database on the router's disk: the default for `sirms dev` and a
//! one-router cluster. One tree per table, and the version under its own key.

use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::state::{State, Table, Write};
use super::{DirectoryError, Expired, Store};

const VERSION_KEY: &[u8] = b"version";
/// The tree of greylisting records: not a directory table, so never read into the copy.
const GREYLIST_TREE: &str = "greylist";

/// A sled database holding the directory.
pub struct SledStore {
    db: sled::Db,
    /// Serialises commits: the version check and the writes are one step.
    state: Mutex<watch::Sender<Arc<State>>>,
}

fn tree(db: &sled::Db, table: Table) -> Result<sled::Tree, DirectoryError> {
    Ok(db.open_tree(table.name())?)
}

impl SledStore {
    /// Opens (creating if needed) the database at `path` and reads the whole directory.
    pub fn open(path: &Path) -> Result<(SledStore, watch::Receiver<Arc<State>>), DirectoryError> {
        let db = sled::open(path)?;
        let mut state = State::default();
        state.loaded = true;
        for table in Table::ALL {
            for entry in tree(&db, table)?.iter() {
                let (key, value) = entry?;
                if let Ok(key) = String::from_utf8(key.to_vec()) {
                    state.apply(&Write::Put(table, key, value.to_vec()));
                }
            }
        }
        state.version = db
            .get(VERSION_KEY)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        let (sender, receiver) = watch::channel(Arc::new(state));
        Ok((SledStore { db, state: Mutex::new(sender) }, receiver))
    }
}

#[tonic::async_trait]
impl Store for SledStore {
    async fn commit(&self, base: u64, writes: &[Write]) -> Result<bool, DirectoryError> {
        // Admin changes are rare and small: doing them on the async thread, flush included,
        // costs less than handing them to another.
        let sender = self.state.lock().map_err(|_| DirectoryError::Invalid("directory lock poisoned".into()))?;
        if sender.borrow().version != base {
            return Ok(false);
        }
        for write in writes {
            match write {
                Write::Put(table, key, value) => tree(&self.db, *table)?.insert(key.as_bytes(), value.as_slice())?,
                Write::Delete(table, key) => tree(&self.db, *table)?.remove(key.as_bytes())?,
            };
        }
        self.db.insert(VERSION_KEY, &(base + 1).to_be_bytes())?;
        // Pay for the flush so an acknowledged change survives a crash.
        self.db.flush()?;
        sender.send_modify(|state| {
            let state = Arc::make_mut(state);
            for write in writes {
                state.apply(write);
            }
            state.version = base + 1;
        });
        Ok(true)
    }

    async fn latest(&self) -> Result<u64, DirectoryError> {
        let sender = self.state.lock().map_err(|_| DirectoryError::Invalid("directory lock poisoned".into()))?;
        Ok(sender.borrow().version)
    }

    fn describe(&self) -> String {
        "the router's sled directory".into()
    }

    async fn grey_record(&self, key: &str) -> Result<Option<Vec<u8>>, DirectoryError> {
        Ok(self.db.open_tree(GREYLIST_TREE)?.get(key.as_bytes())?.map(|v| v.to_vec()))
    }

    async fn put_grey_records(&self, records: &[(String, Vec<u8>)]) -> Result<(), DirectoryError> {
        let tree = self.db.open_tree(GREYLIST_TREE)?;
        for (key, value) in records {
            tree.insert(key.as_bytes(), value.as_slice())?;
        }
        // A passed triplet forgotten in a crash would make its sender wait once more: flushed
        // (sled's flush is an fsync) before the node is answered.
        tree.flush_async().await?;
        Ok(())
    }

    async fn prune_grey_records(&self, expired: &Expired) -> Result<u64, DirectoryError> {
        let tree = self.db.open_tree(GREYLIST_TREE)?;
        let mut left = 0;
        for entry in tree.iter() {
            let (key, value) = entry?;
            if expired(&value) {
                // Removed only if unchanged since read: a record just refreshed stays.
                let _ = tree.compare_and_swap(&key, Some(&value), None as Option<&[u8]>)?;
            } else {
                left += 1;
            }
        }
        tree.flush_async().await?;
        Ok(left)
    }
}
