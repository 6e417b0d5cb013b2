//! The node's durable spool: messages the node accepted but could not put in their final
//! place yet — recipients whose home store was unreachable, and recipients in foreign
//! domains waiting for outbound delivery. Accepting into the spool is as durable as a
//! mailbox append (write, fsync, rename, directory fsync), so a `250` never rests on memory.

pub mod admin;
mod envelope;
pub mod worker;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use envelope::QueuedEnvelope;
use sirms_storage::durable::{sync_dir, write_atomic};

/// Seconds since the epoch: the unit of every time in an envelope.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A spool directory: `msg/<id>` holds the message, `env/<id>` its envelope.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

fn write_durably(dir: &Path, name: &str, contents: &[u8]) -> io::Result<()> {
    write_atomic(&dir.join(name), contents)
}

/// Queue ids become file names: only these characters are allowed.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

impl Spool {
    /// Runs spool work (file I/O with fsyncs) on a blocking thread.
    pub async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Spool) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let spool = self.clone();
        tokio::task::spawn_blocking(move || f(&spool)).await.map_err(io::Error::other)?
    }

    /// Opens (creating) the spool under `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Spool> {
        let dir = dir.into();
        fs::create_dir_all(dir.join("msg"))?;
        fs::create_dir_all(dir.join("env"))?;
        Ok(Spool { dir })
    }

    /// Stores a message and its envelope durably (blocking). The message goes first: an
    /// envelope never points at a missing message.
    pub fn enqueue(&self, envelope: &QueuedEnvelope, message: &[u8]) -> io::Result<()> {
        if !valid_id(&envelope.id) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "invalid queue id"));
        }
        write_durably(&self.dir.join("msg"), &envelope.id, message)?;
        write_durably(&self.dir.join("env"), &envelope.id, envelope.render().as_bytes())
    }

    /// Rewrites an envelope after some recipients were done (blocking). Refused when the
    /// message is gone (removed meanwhile by the admin or another pass), so no envelope is
    /// brought back without its message.
    pub fn update(&self, envelope: &QueuedEnvelope) -> io::Result<()> {
        if !valid_id(&envelope.id) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "invalid queue id"));
        }
        fs::metadata(self.dir.join("msg").join(&envelope.id))?;
        write_durably(&self.dir.join("env"), &envelope.id, envelope.render().as_bytes())
    }

    /// Removes a message whose recipients are all done (blocking).
    pub fn remove(&self, id: &str) -> io::Result<()> {
        if !valid_id(id) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "invalid queue id"));
        }
        // Envelope first: a message without an envelope is garbage, never a redelivery.
        fs::remove_file(self.dir.join("env").join(id))?;
        sync_dir(&self.dir.join("env"))?;
        fs::remove_file(self.dir.join("msg").join(id))
    }

    /// Every queued envelope (blocking); unreadable ones are skipped and logged.
    pub fn list(&self) -> io::Result<Vec<QueuedEnvelope>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.dir.join("env"))? {
            let entry = entry?;
            let Some(id) = entry.file_name().to_str().map(str::to_string) else { continue };
            if !valid_id(&id) {
                continue;
            }
            match fs::read_to_string(entry.path()).map(|t| QueuedEnvelope::parse(&id, &t)) {
                Ok(Some(env)) => out.push(env),
                _ => tracing::warn!(%id, "unreadable queue envelope"),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// A queued message's bytes (blocking).
    pub fn message(&self, id: &str) -> io::Result<Vec<u8>> {
        fs::read(self.dir.join("msg").join(id))
    }

    /// A queued message's size in bytes (blocking).
    pub fn message_size(&self, id: &str) -> io::Result<u64> {
        Ok(fs::metadata(self.dir.join("msg").join(id))?.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enqueue_list_update_remove() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut env = QueuedEnvelope {
            id: "abc.1".into(),
            from: "a@b.test".into(),
            local: vec!["u@example.test".into()],
            remote: vec!["x@far.test".into()],
            ..Default::default()
        };
        spool.enqueue(&env, b"hello").unwrap();
        assert_eq!(spool.list().unwrap(), vec![env.clone()]);
        assert_eq!(spool.message("abc.1").unwrap(), b"hello");
        env.local.clear();
        env.attempts = 1;
        spool.update(&env).unwrap();
        assert_eq!(spool.list().unwrap(), vec![env]);
        spool.remove("abc.1").unwrap();
        assert!(spool.list().unwrap().is_empty());
        let bad = QueuedEnvelope { id: "../x".into(), ..Default::default() };
        assert!(spool.enqueue(&bad, b"x").is_err());
    }
}
