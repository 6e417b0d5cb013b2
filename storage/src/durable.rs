//! Files replaced durably: written under a temporary name, fsynced, renamed over the old one,
//! the directory fsynced. A crash leaves the old version or the new one, never a mix, and
//! once these return the new one survives a power cut. The store's small files, the node's
//! spool and its directory cache are all written this way.
//!
//! Every write gets a temporary name of its own (`.NAME.PID.SEQ.tmp`, created with
//! `O_EXCL`): two writers of one file, in one process or two, never share a temporary file,
//! so neither can tear the other's copy. What a crash leaves behind is recognisable by
//! [`is_temporary`] and can be cleaned up at the next start.
//!
//! Every fsync of SIRMS goes through this module and is named (`commit-data`, `spool-env`,
//! `spool-env-dir`, …): in a debug build, `SIRMS_TEST_SKIP_FSYNC=<name>[,<name>…]` (or `all`)
//! skips the named ones, so that the power-loss test (integration-tests/tests/power_loss.rs)
//! can show that it fails without each. A release build has no such switch.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The test-only switch: the fsyncs to skip, read once from the environment.
#[cfg(debug_assertions)]
pub(crate) fn skipped(name: &str) -> bool {
    static SKIP: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let list = SKIP.get_or_init(|| {
        let list: Vec<String> = std::env::var("SIRMS_TEST_SKIP_FSYNC")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if !list.is_empty() {
            tracing::warn!(?list, "SIRMS_TEST_SKIP_FSYNC: these fsyncs are skipped; acknowledged data can be lost");
        }
        list
    });
    list.iter().any(|s| s == "all" || s == name)
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub(crate) fn skipped(_name: &str) -> bool {
    false
}

/// Fsyncs `file` (data and metadata); `name` says which fsync this is.
pub fn sync_file(file: &File, name: &str) -> io::Result<()> {
    if skipped(name) {
        return Ok(());
    }
    file.sync_all()
}

/// Fsyncs a directory, making renames and unlinks in it durable; `name` says which fsync
/// this is.
pub fn sync_dir(dir: &Path, name: &str) -> io::Result<()> {
    if skipped(name) {
        return Ok(());
    }
    File::open(dir)?.sync_all()
}

/// Writes of this process so far: the unique part of temporary names.
static WRITES: AtomicU64 = AtomicU64::new(0);

/// Whether a file name is one of the temporary names this module makes.
pub fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// Creates a temporary file next to `path` that no other writer uses, readable by its owner
/// only: these files hold mail, envelopes and password hashes.
fn create_temporary(path: &Path) -> io::Result<(PathBuf, File)> {
    let dir = path.parent().ok_or_else(|| io::Error::other("no parent directory"))?;
    let name = path.file_name().ok_or_else(|| io::Error::other("no file name"))?.to_string_lossy();
    let pid = std::process::id();
    loop {
        let seq = WRITES.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{pid}.{seq}.tmp"));
        match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            // Left by a crashed process that had our pid: take the next number.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Writes `contents` to a fresh temporary file next to `path` and fsyncs it (fsync `name`).
fn write_temporary(path: &Path, contents: &[u8], name: &str) -> io::Result<PathBuf> {
    let (tmp, mut file) = create_temporary(path)?;
    let written = file.write_all(contents).and_then(|()| sync_file(&file, name));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

/// Replaces `path` with `contents` durably, owner-only. `name` names the file's fsync, and
/// `<name>-dir` the directory's.
pub fn write_atomic(path: &Path, contents: &[u8], name: &str) -> io::Result<()> {
    let tmp = write_temporary(path, contents, name)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(path.parent().unwrap_or(Path::new(".")), &format!("{name}-dir"))
}

/// Creates `path` with `contents` durably, owner-only, and never replaces a file that is
/// there: then it fails with [`io::ErrorKind::AlreadyExists`] and leaves that file alone
/// (a hard link, unlike a rename, does not overwrite). Fsyncs named as for [`write_atomic`].
pub fn write_new(path: &Path, contents: &[u8], name: &str) -> io::Result<()> {
    let tmp = write_temporary(path, contents, name)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    linked?;
    sync_dir(path.parent().unwrap_or(Path::new(".")), &format!("{name}-dir"))
}

/// `create_dir_all`, durably: each directory it creates is made durable in its parent, so
/// a power cut cannot take away a whole tree (the store, the spool) whose files were all
/// fsynced. `name` names these fsyncs.
pub fn create_dir_all(path: &Path, name: &str) -> io::Result<()> {
    create_dirs(path, 0o777, name)
}

/// Creates the missing directories of `path` with `mode`, each made durable in its parent.
fn create_dirs(path: &Path, mode: u32, name: &str) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if path.is_dir() {
        return Ok(());
    }
    let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return fs::DirBuilder::new().mode(mode).create(path);
    };
    create_dirs(parent, mode, name)?;
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    sync_dir(parent, name)
}

/// Creates `dir` and its missing parents owner-only (0700) and durably (fsyncs named
/// `setup-dirs`), and takes group and other access away from it if it was there already: data
/// directories hold password hashes, DKIM keys, mail and the spool. Either is logged. A
/// directory this user may not change (someone else's) is left as it is, with a warning,
/// rather than keeping the service from starting.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    create_dirs(dir, 0o700, "setup-dirs")?;
    let mode = fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 == 0 {
        return Ok(());
    }
    match fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o700)) {
        Ok(()) => {
            tracing::warn!(dir = %dir.display(), was = format!("{:o}", mode & 0o777), "data directory was open to other users; now owner-only")
        }
        Err(e) => tracing::warn!(
            dir = %dir.display(), mode = format!("{:o}", mode & 0o777), error = %e,
            "data directory is open to other users and cannot be made owner-only"
        ),
    }
    Ok(())
}

/// Removes the temporary files ([`is_temporary`]) in `dir`, left there by writers that
/// crashed; the caller knows no writer is at work in it. Returns how many went.
pub fn remove_temporaries(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if is_temporary(&entry.file_name().to_string_lossy()) && entry.file_type()?.is_file() {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn replaces_the_file_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"one", "test").unwrap();
        write_atomic(&path, b"two", "test").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    }

    /// Issue 28: a new file never replaces one that is there.
    #[test]
    fn write_new_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_new(&path, b"first", "test").unwrap();
        let err = write_new(&path, b"second", "test").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    }

    /// Issue 28: data directories are owner-only, new or not.
    #[test]
    fn private_dirs_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b");
        create_private_dir(&deep).unwrap();
        for d in [dir.path().join("a"), deep.clone()] {
            assert_eq!(fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700, "{}", d.display());
        }
        fs::set_permissions(&deep, fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&deep).unwrap();
        assert_eq!(fs::metadata(&deep).unwrap().permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn temporaries_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(&dir.path().join("keep"), b"k", "test").unwrap();
        fs::write(dir.path().join(".keep.1.0.tmp"), b"orphan").unwrap();
        fs::write(dir.path().join("plain.tmp"), b"not ours").unwrap();
        assert_eq!(remove_temporaries(dir.path()).unwrap(), 1);
        let mut left: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        left.sort();
        assert_eq!(left, ["keep", "plain.tmp"]);
    }

    /// Issue 28: writers of one file each get their own temporary file, so a leftover (or
    /// another writer's file in progress) is never truncated or renamed by this one.
    #[test]
    fn every_writer_has_its_own_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("env");
        let (a, _fa) = create_temporary(&path).unwrap();
        let (b, _fb) = create_temporary(&path).unwrap();
        assert_ne!(a, b);
        // Someone else's temporary file in progress, under the next name we would pick.
        let next = WRITES.load(Ordering::Relaxed);
        let theirs = dir.path().join(format!(".env.{}.{next}.tmp", std::process::id()));
        fs::write(&theirs, b"half an envelope").unwrap();
        write_atomic(&path, b"whole", "test").unwrap();
        assert_eq!(fs::read(&theirs).unwrap(), b"half an envelope");
        assert_eq!(fs::read(&path).unwrap(), b"whole");
        for name in [&a, &b, &theirs] {
            assert!(is_temporary(&name.file_name().unwrap().to_string_lossy()));
        }
        assert!(!is_temporary("env") && !is_temporary("abc.1"));
    }
}
