//! Large message bodies kept on disk on their way to the store, so that what a session holds in
//! memory is bounded by a buffer, not by the message (issue 28: four 43 MB messages used to
//! cost 360 MB of RSS, two copies of each).
//!
//! 1. Past [`SPILL_THRESHOLD`] octets, the SMTP session hands its data out in chunks
//!    (`smtp::session::Next::Spill`) and the connection loop writes them to a [`SpillFile`],
//!    created with `create_new` (owner-only) in the node's spill directory and unlinked at
//!    once: the file has no name while it is in use, and nothing is left behind when the last
//!    reference to it drops (the transaction ends, or the process dies).
//! 2. The data is written [`GAP`] octets into the file. At the end of the data the trace
//!    header fields (and later the inbound checks' fields) are written into that gap, just in
//!    front of the data, so that the whole message is one contiguous range of the file.
//! 3. The file is mapped read-only and shared, and the message goes on as a [`Bytes`] over the
//!    mapping: the store, the spool and the checks read it from the page cache, which the
//!    kernel can drop under pressure, instead of from anonymous memory, which it cannot.
//!
//! No mapped octet ever changes: prepending writes only below the part already handed out,
//! and no one else can truncate a file without a name (which would fault the mapping).
//!
//! The directory is emptied at start: a file can only be left there by a crash between its
//! creation and its unlinking.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

/// Message data past this size goes to a spill file; smaller messages stay in memory, where
/// the common few-KiB delivery is fastest.
pub const SPILL_THRESHOLD: usize = 256 * 1024;

/// The threshold in force: [`SPILL_THRESHOLD`]; in a debug build with `SIRMS_TEST_NO_SPILL=1`,
/// none (every message held whole in memory, as before issue 28), so that a test can show its
/// memory bound comes from spilling.
pub fn threshold() -> usize {
    #[cfg(debug_assertions)]
    if std::env::var_os("SIRMS_TEST_NO_SPILL").is_some_and(|v| v == "1") {
        tracing::warn!("SIRMS_TEST_NO_SPILL: messages are held whole in memory");
        return usize::MAX;
    }
    SPILL_THRESHOLD
}

/// Room left in front of the data for the header fields the node adds (`Return-Path:`,
/// `Received:`, `Authentication-Results:`, a filter's `X-Spam-*`).
pub const GAP: usize = 64 * 1024;

/// The node's directory of spill files (`<data_dir>/spill`).
#[derive(Debug)]
pub struct SpillDir {
    path: PathBuf,
    /// Makes file names unique within this process; the pid keeps them apart between runs.
    next: AtomicU64,
}

impl SpillDir {
    /// Creates the directory (owner-only) if needed and removes whatever a crash left in it.
    pub fn open(path: &Path) -> io::Result<SpillDir> {
        sirms_storage::durable::create_private_dir(path)?;
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            if let Err(e) = fs::remove_file(entry.path()) {
                tracing::warn!(file = %entry.path().display(), error = %e, "stale spill file not removed");
            }
        }
        Ok(SpillDir { path: path.to_path_buf(), next: AtomicU64::new(0) })
    }

    /// A new, empty spill file, already unlinked.
    pub fn create(&self) -> io::Result<SpillFile> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.path.join(format!("{}.{n}", std::process::id()));
        let file = OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path)?;
        fs::remove_file(&path)?;
        Ok(SpillFile { file: Arc::new(file), len: 0 })
    }
}

/// A message's data being written to disk as it arrives.
#[derive(Debug)]
pub struct SpillFile {
    file: Arc<File>,
    /// Octets of data written so far (they start at [`GAP`]).
    len: u64,
}

impl SpillFile {
    /// Octets of data written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no data was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `chunk` to the data, on a blocking thread (a write can wait for the disk).
    pub async fn write(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        let file = self.file.clone();
        let at = GAP as u64 + self.len;
        let n = chunk.len() as u64;
        tokio::task::spawn_blocking(move || file.write_all_at(&chunk, at))
            .await
            .map_err(|e| io::Error::other(format!("spill write: {e}")))??;
        self.len += n;
        Ok(())
    }

    /// Appends `tail`, puts `head` in front of the data and maps the file: the whole message.
    pub async fn finish(mut self, head: &[u8], tail: Vec<u8>) -> io::Result<Spilled> {
        if !tail.is_empty() {
            self.write(tail).await?;
        }
        let start = GAP
            .checked_sub(head.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "trace fields larger than the spill gap"))?;
        self.file.write_all_at(head, start as u64)?;
        let total = GAP + usize::try_from(self.len).map_err(io::Error::other)?;
        let (map, mapped) = match Mapping::new(self.file.clone(), total) {
            Ok(mapping) => (Bytes::from_owner(mapping), true),
            Err(e) => {
                // A file system that cannot map (FUSE with direct I/O): read it, as before.
                tracing::warn!(error = %e, size = total, "spill file not mappable: read into memory");
                let mut bytes = vec![0; total];
                self.file.read_exact_at(&mut bytes, 0)?;
                (Bytes::from(bytes), false)
            }
        };
        Ok(Spilled { file: self.file, map, start, mapped })
    }
}

/// The message in the file at `path` as `Bytes`: mapped, or read where the file system cannot
/// map. The caller vouches that no one writes to or truncates the file while it is used (a
/// spool entry's message is written once, under a temporary name, and only ever unlinked).
pub fn map_file(path: &Path) -> io::Result<Bytes> {
    let file = Arc::new(File::open(path)?);
    let len = usize::try_from(file.metadata()?.len()).map_err(io::Error::other)?;
    if len == 0 {
        return Ok(Bytes::new());
    }
    match Mapping::new(file, len) {
        Ok(mapping) => Ok(Bytes::from_owner(mapping)),
        Err(_) => fs::read(path).map(Bytes::from),
    }
}

/// A spilled message, mapped: [`Spilled::bytes`] is the message, header fields can still be
/// put in front of it.
#[derive(Debug)]
pub struct Spilled {
    file: Arc<File>,
    /// The whole file, gap included.
    map: Bytes,
    /// Where the message starts in the file.
    start: usize,
    /// `map` is the file's mapping (else a copy read into memory, which a prepend would miss).
    mapped: bool,
}

impl Spilled {
    /// The message (no copy: a view of the mapping).
    pub fn bytes(&self) -> Bytes {
        self.map.slice(self.start..)
    }

    /// The message with `head` in front of it: written into the gap when it fits (a few KiB of
    /// header fields always do), else the message is copied into memory with it.
    pub fn prepend(self, head: &[u8]) -> io::Result<Spilled> {
        if head.is_empty() {
            return Ok(self);
        }
        if !self.mapped {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "spilled message read into memory"));
        }
        let Some(start) = self.start.checked_sub(head.len()) else {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "header fields larger than the spill gap"));
        };
        // Below `self.start`: no `Bytes` handed out so far covers these octets.
        self.file.write_all_at(head, start as u64)?;
        Ok(Spilled { start, ..self })
    }
}

/// A message as it goes through the node's checks to the store: in memory when small, mapped
/// from its spill file when large.
#[derive(Debug)]
pub enum Received {
    Memory(Vec<u8>),
    Spilled(Spilled),
}

impl Received {
    /// The message's octets.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Received::Memory(bytes) => bytes,
            Received::Spilled(spilled) => &spilled.map[spilled.start..],
        }
    }

    /// The message with `head` (header fields ending in CRLF) in front of it. A spilled message
    /// whose gap cannot take them is copied into memory (logged: only filters adding more
    /// than [`GAP`] octets of fields get there).
    pub fn prepend(self, head: &[u8]) -> Received {
        match self {
            _ if head.is_empty() => self,
            Received::Memory(body) => {
                let mut out = Vec::with_capacity(head.len() + body.len());
                out.extend_from_slice(head);
                out.extend_from_slice(&body);
                Received::Memory(out)
            }
            Received::Spilled(spilled) => {
                let bytes = spilled.bytes();
                match spilled.prepend(head) {
                    Ok(spilled) => Received::Spilled(spilled),
                    Err(e) => {
                        tracing::warn!(error = %e, size = bytes.len(), "spilled message copied into memory");
                        Received::Memory([head, &bytes[..]].concat())
                    }
                }
            }
        }
    }

    /// The message as the store takes it.
    pub fn into_bytes(self) -> Bytes {
        match self {
            Received::Memory(bytes) => Bytes::from(bytes),
            Received::Spilled(spilled) => spilled.bytes(),
        }
    }
}

/// A read-only, shared mapping of a spill file; unmapped when the last `Bytes` over it drops.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
    /// Kept open as long as it is mapped (the mapping would outlive it anyway; this says so).
    _file: Arc<File>,
}

// SAFETY: the mapping is read-only and never remapped; the pointer is only read through
// `as_ref`, from any thread, and unmapped once, on drop.
unsafe impl Send for Mapping {}
// SAFETY: as above: shared reads of memory no one writes through this mapping.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(file: Arc<File>, len: usize) -> io::Result<Mapping> {
        use std::os::fd::AsRawFd;
        // Callers never ask for the zero length mmap refuses.
        // SAFETY: a fresh mapping of a file we hold open; the kernel checks the arguments. No
        // one truncates it under the mapping: a spill file has no name, a spool message is
        // only ever unlinked (see `map_file`).
        let ptr =
            unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr, len, _file: file })
    }
}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable octets for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: mapped in `new` with this length, unmapped only here.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_spilled_message_is_head_then_data_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stale"), b"x").unwrap();
        let spill = SpillDir::open(&dir.path().join("spill")).unwrap();
        let mut file = spill.create().unwrap();
        assert_eq!(fs::read_dir(dir.path().join("spill")).unwrap().count(), 0, "unlinked at once");
        file.write(b"Subject: big\r\n\r\n".to_vec()).await.unwrap();
        file.write(vec![b'x'; 100_000]).await.unwrap();
        assert_eq!(file.len(), 100_016);
        let spilled = file.finish(b"Received: by us\r\n", b"\r\nend\r\n".to_vec()).await.unwrap();
        let message = Received::Spilled(spilled).prepend(b"X-Spam: no\r\n");
        assert!(matches!(message, Received::Spilled(_)));
        let bytes = message.into_bytes();
        let mut want = b"X-Spam: no\r\nReceived: by us\r\nSubject: big\r\n\r\n".to_vec();
        want.extend(vec![b'x'; 100_000]);
        want.extend(b"\r\nend\r\n");
        assert_eq!(&bytes[..], &want[..]);
    }

    #[tokio::test]
    async fn fields_larger_than_the_gap_copy_the_message_into_memory() {
        let dir = tempfile::tempdir().unwrap();
        let spill = SpillDir::open(dir.path()).unwrap();
        let spilled = spill.create().unwrap().finish(b"A: 1\r\n", b"\r\nbody".to_vec()).await.unwrap();
        let big = format!("B: {}\r\n", "y".repeat(GAP));
        let message = Received::Spilled(spilled).prepend(big.as_bytes());
        let Received::Memory(bytes) = message else { panic!("not copied") };
        assert_eq!(bytes, format!("{big}A: 1\r\n\r\nbody").into_bytes());
    }

    #[test]
    fn a_file_is_mapped_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        std::fs::write(&path, b"Subject: x\r\n\r\nbody\r\n").unwrap();
        let bytes = map_file(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(&bytes[..], b"Subject: x\r\n\r\nbody\r\n", "still readable once unlinked");
        std::fs::write(&path, b"").unwrap();
        assert!(map_file(&path).unwrap().is_empty());
    }

    #[test]
    fn small_messages_stay_in_memory() {
        let message = Received::Memory(b"\r\nbody".to_vec()).prepend(b"A: 1\r\n");
        assert_eq!(message.as_slice(), b"A: 1\r\n\r\nbody");
        assert_eq!(&message.into_bytes()[..], b"A: 1\r\n\r\nbody");
    }
}
