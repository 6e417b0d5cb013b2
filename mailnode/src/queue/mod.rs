//! The node's durable spool: messages the node accepted but could not put in their final
//! place yet — recipients whose home store was unreachable, and recipients in foreign
//! domains waiting for outbound delivery. Accepting into the spool is as durable as a
//! mailbox append (write, fsync, rename, directory fsync), so a `250` never rests on memory.

pub mod admin;
mod claim;
pub mod copies;
pub mod copy_service;
mod envelope;
pub mod notice;
pub(crate) mod rpc;
pub mod worker;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

pub use claim::Claim;
use claim::Claims;
pub use envelope::QueuedEnvelope;
use sirms_storage::durable::{create_private_dir, remove_temporaries, sync_dir, write_atomic, write_new};

/// Seconds since the epoch: the unit of every time in an envelope.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A spool directory: `msg/<id>` holds the message, `env/<id>` its envelope. One process at
/// a time has it open (the lock file `lock`), and within it one writer per entry (a [`Claim`]).
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    claims: Claims,
    /// Holds the `flock` on `lock` for as long as the spool is open.
    _lock: File,
    /// This opening's number, one more than the last: no two openings share it, so message
    /// ids made from it ([`Spool::generation`]) cannot repeat those of an earlier run.
    generation: u64,
}

/// An envelope that could not be read: its message is stuck until someone looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub id: String,
    pub reason: String,
}

/// What [`Spool::list`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Readable envelopes, by id.
    pub envelopes: Vec<QueuedEnvelope>,
    /// Envelopes that exist but could not be read or parsed.
    pub unreadable: Vec<Unreadable>,
}

/// Queue ids become file names: only these characters are allowed, and never a leading dot
/// (temporary files start with one).
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

fn invalid_id() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "invalid queue id")
}

/// The file that counts the spool's openings.
const GENERATION_FILE: &str = "generation";

impl Spool {
    /// Runs spool work (file I/O with fsyncs) on a blocking thread.
    pub async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Spool) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let spool = self.clone();
        tokio::task::spawn_blocking(move || f(&spool)).await.map_err(io::Error::other)?
    }

    /// Opens (creating, owner-only) the spool under `dir`, and takes it for this process: a
    /// second process on the same spool fails here (`WouldBlock`) rather than racing this one.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Spool> {
        let dir = dir.into();
        create_private_dir(&dir)?;
        create_private_dir(&dir.join("msg"))?;
        create_private_dir(&dir.join("env"))?;
        let lock = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(dir.join("lock"))?;
        // SAFETY: flock(2) on a descriptor we own; the lock lives as long as `lock`.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("spool {} is in use by another process: {e}", dir.display())));
        }
        // Held by this process, which has written nothing yet: every temporary file here is
        // a crashed writer's, never to be renamed into place (nothing it held was acknowledged).
        let swept: usize = [dir.join("msg"), dir.join("env"), dir.clone()]
            .iter()
            .map(|d| remove_temporaries(d))
            .sum::<io::Result<_>>()?;
        if swept > 0 {
            tracing::info!(dir = %dir.display(), files = swept, "removed unfinished spool writes of a crashed run");
        }
        let path = dir.join(GENERATION_FILE);
        let last = match fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let generation = last + 1;
        // Durable before any id made from it is handed out.
        write_atomic(&path, format!("{generation}\n").as_bytes(), "spool-generation")?;
        Ok(Spool { dir, claims: Claims::default(), _lock: lock, generation })
    }

    /// This opening's number: a part of message ids that no other run of this spool shares.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Claims entry `id` for changing it; `None` while someone else holds it.
    pub fn claim(&self, id: &str) -> Option<Claim> {
        self.claims.claim(id)
    }

    /// Stores a new message and its envelope durably (blocking). The message goes first: an
    /// envelope never points at a missing message. An id already in the spool is refused
    /// (`AlreadyExists`) and the entry there is left as it was.
    pub fn enqueue(&self, envelope: &QueuedEnvelope, message: &[u8]) -> io::Result<()> {
        if !valid_id(&envelope.id) {
            return Err(invalid_id());
        }
        let msg = self.dir.join("msg").join(&envelope.id);
        write_new(&msg, message, "spool-msg")?;
        if let Err(e) = write_new(&self.dir.join("env").join(&envelope.id), envelope.render().as_bytes(), "spool-env") {
            // The message file is the one just made: without its envelope it is garbage.
            let _ = fs::remove_file(&msg);
            return Err(e);
        }
        Ok(())
    }

    /// Rewrites an envelope after some recipients were done (blocking); the caller holds its
    /// [`Claim`]. Refused when the message is gone (removed meanwhile by the admin or another
    /// pass), so no envelope is brought back without its message.
    pub fn update(&self, claim: &Claim, envelope: &QueuedEnvelope) -> io::Result<()> {
        if !valid_id(&envelope.id) || claim.id() != envelope.id {
            return Err(invalid_id());
        }
        fs::metadata(self.dir.join("msg").join(&envelope.id))?;
        write_atomic(&self.dir.join("env").join(&envelope.id), envelope.render().as_bytes(), "spool-env")
    }

    /// Removes a message whose recipients are all done, or that the admin removed (blocking);
    /// the caller holds its [`Claim`].
    pub fn remove(&self, claim: &Claim) -> io::Result<()> {
        let id = claim.id();
        if !valid_id(id) {
            return Err(invalid_id());
        }
        // Envelope first: a message without an envelope is garbage, never a redelivery.
        fs::remove_file(self.dir.join("env").join(id))?;
        sync_dir(&self.dir.join("env"), "spool-remove")?;
        fs::remove_file(self.dir.join("msg").join(id))
    }

    /// One envelope, read again (blocking): what a claim holder works from, since a listing
    /// may be older than the last write. `Ok(None)` if it is gone.
    pub fn envelope(&self, id: &str) -> io::Result<Option<QueuedEnvelope>> {
        if !valid_id(id) {
            return Err(invalid_id());
        }
        match fs::read_to_string(self.dir.join("env").join(id)) {
            Ok(text) => QueuedEnvelope::parse(id, &text)
                .map(Some)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an envelope")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every queued envelope (blocking), and the ones that could not be read: those are for
    /// the caller to raise (an error log and a metric), never to pass over in silence.
    pub fn list(&self) -> io::Result<Listing> {
        let mut listing = Listing::default();
        for entry in fs::read_dir(self.dir.join("env"))? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(id) = name.to_str() else {
                let id = name.to_string_lossy().into_owned();
                listing.unreadable.push(Unreadable { id, reason: "file name is not UTF-8".into() });
                continue;
            };
            if sirms_storage::durable::is_temporary(id) {
                continue;
            }
            if !valid_id(id) {
                listing.unreadable.push(Unreadable { id: id.to_string(), reason: "not a queue id".into() });
                continue;
            }
            match self.envelope(id) {
                Ok(Some(env)) => listing.envelopes.push(env),
                // Removed since the directory was read: done, not broken.
                Ok(None) => {}
                Err(e) => listing.unreadable.push(Unreadable { id: id.to_string(), reason: e.to_string() }),
            }
        }
        listing.envelopes.sort_by(|a, b| a.id.cmp(&b.id));
        listing.unreadable.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(listing)
    }

    /// A queued message's bytes (blocking).
    pub fn message(&self, id: &str) -> io::Result<Vec<u8>> {
        fs::read(self.dir.join("msg").join(id))
    }

    /// A queued message mapped from its file (blocking): what the queue runner delivers, without
    /// reading a large message into memory (issue 28). Its file is written once and only ever
    /// unlinked, which leaves the mapping readable.
    pub fn mapped_message(&self, id: &str) -> io::Result<bytes::Bytes> {
        crate::spill::map_file(&self.dir.join("msg").join(id))
    }

    /// A queued message's size in bytes (blocking).
    pub fn message_size(&self, id: &str) -> io::Result<u64> {
        Ok(fs::metadata(self.dir.join("msg").join(id))?.len())
    }

    /// The envelope directory, for tests and the queue-length metric.
    pub fn envelope_dir(&self) -> PathBuf {
        self.dir.join("env")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(id: &str) -> QueuedEnvelope {
        QueuedEnvelope {
            id: id.into(),
            from: "a@b.test".into(),
            local: vec!["u@example.test".into()],
            remote: vec!["x@far.test".into()],
            ..Default::default()
        }
    }

    #[test]
    fn enqueue_list_update_remove() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut env = envelope("abc.1");
        spool.enqueue(&env, b"hello").unwrap();
        assert_eq!(spool.list().unwrap().envelopes, vec![env.clone()]);
        assert_eq!(spool.message("abc.1").unwrap(), b"hello");
        env.local.clear();
        env.attempts = 1;
        let claim = spool.claim("abc.1").unwrap();
        spool.update(&claim, &env).unwrap();
        assert_eq!(spool.list().unwrap().envelopes, vec![env]);
        spool.remove(&claim).unwrap();
        assert_eq!(spool.list().unwrap(), Listing::default());
        let bad = QueuedEnvelope { id: "../x".into(), ..Default::default() };
        assert!(spool.enqueue(&bad, b"x").is_err());
        let hidden = QueuedEnvelope { id: ".abc.1.tmp".into(), ..Default::default() };
        assert!(spool.enqueue(&hidden, b"x").is_err());
    }

    /// Issue 28: two entries forced onto one id: the second is refused and the first stays
    /// whole (the spool used to open with truncate and overwrite it).
    #[test]
    fn a_colliding_id_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let first = envelope("same.1");
        spool.enqueue(&first, b"first message").unwrap();
        let second = QueuedEnvelope { local: vec!["other@example.test".into()], ..envelope("same.1") };
        let err = spool.enqueue(&second, b"second message").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(spool.message("same.1").unwrap(), b"first message");
        assert_eq!(spool.list().unwrap().envelopes, vec![first]);
    }

    /// Issue 28: ids are made from the spool's generation, which every opening advances, so a
    /// restarted node cannot hand out an id of its last run; a second process cannot open it.
    #[test]
    fn generations_advance_and_one_process_holds_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let first = Spool::open(dir.path()).unwrap().generation();
        let second = Spool::open(dir.path()).unwrap().generation();
        assert_eq!(second, first + 1);
        let held = Spool::open(dir.path()).unwrap();
        // flock locks belong to the open file, so a second opening in one process conflicts
        // just as another process would.
        let err = Spool::open(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        drop(held);
        assert!(Spool::open(dir.path()).is_ok());
    }

    /// Issue 28: an envelope that cannot be read is reported, not skipped in silence; the
    /// temporary files of writers in progress are neither envelopes nor errors.
    #[test]
    fn unreadable_envelopes_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.enqueue(&envelope("good.1"), b"m").unwrap();
        fs::write(dir.path().join("env/torn.1"), "from a@b.test\nattempts 1x\n").unwrap();
        fs::write(dir.path().join("env/.good.1.77.0.tmp"), "from a@b.te").unwrap();
        let listing = spool.list().unwrap();
        assert_eq!(listing.envelopes, vec![envelope("good.1")]);
        assert_eq!(listing.unreadable.len(), 1);
        assert_eq!(listing.unreadable[0].id, "torn.1");
    }

    /// Issue 28: a crashed writer's temporary files go when the spool opens; the spool is
    /// owner-only.
    #[test]
    fn leftovers_are_removed_at_open_and_the_spool_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path().join("queue")).unwrap();
        spool.enqueue(&envelope("kept.1"), b"m").unwrap();
        drop(spool);
        let queue = dir.path().join("queue");
        for leftover in ["msg/.lost.1.4242.0.tmp", "env/.kept.1.4242.1.tmp", ".generation.4242.2.tmp"] {
            fs::write(queue.join(leftover), "half").unwrap();
        }
        let spool = Spool::open(&queue).unwrap();
        for sub in ["msg", "env", "."] {
            let names: Vec<_> = fs::read_dir(queue.join(sub)).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert!(names.iter().all(|n| !n.to_string_lossy().ends_with(".tmp")), "{sub}: {names:?}");
        }
        assert_eq!(spool.list().unwrap().envelopes, vec![envelope("kept.1")]);
        for d in [queue.clone(), queue.join("msg"), queue.join("env")] {
            assert_eq!(fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700, "{}", d.display());
        }
    }
}
