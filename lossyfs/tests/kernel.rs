//! lossyfs through the kernel: what survives a cut, made durable by real syscalls.

use std::fs::{self, File};
use std::io::Write;
use std::os::fd::AsRawFd;

/// A mount over a fresh backing directory, or `None` (said loudly) without FUSE.
fn mount() -> Option<(tempfile::TempDir, lossyfs::Mount)> {
    if let Err(e) = lossyfs::fuse_available() {
        eprintln!("SKIPPED: {e}");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("backing")).unwrap();
    fs::create_dir(dir.path().join("mnt")).unwrap();
    let mount = lossyfs::Mount::new(&dir.path().join("mnt"), &dir.path().join("backing")).unwrap();
    Some((dir, mount))
}

fn sync_dir(path: &std::path::Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

#[test]
fn only_what_was_synced_survives_a_cut() {
    let Some((dir, mount)) = mount() else { return };
    let m = mount.mountpoint().to_path_buf();
    fs::create_dir(m.join("d")).unwrap();
    sync_dir(&m);
    let mut f = File::create(m.join("d/synced")).unwrap();
    f.write_all(b"kept").unwrap();
    f.sync_all().unwrap();
    f.write_all(b" and lost").unwrap();
    drop(f);
    fs::write(m.join("d/data-not-synced"), b"lost").unwrap();
    sync_dir(&m.join("d"));
    fs::write(m.join("d/entry-not-synced"), b"lost").unwrap();
    File::open(m.join("d/entry-not-synced")).unwrap().sync_all().unwrap();
    fs::rename(m.join("d/synced"), m.join("d/renamed")).unwrap();

    mount.cut_power().unwrap();
    let mut names: Vec<String> =
        fs::read_dir(m.join("d")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["data-not-synced", "synced"]);
    assert_eq!(fs::read(m.join("d/synced")).unwrap(), b"kept");
    assert_eq!(fs::read(m.join("d/data-not-synced")).unwrap(), b"");
    // The backing directory holds the same.
    assert_eq!(fs::read(dir.path().join("backing/d/synced")).unwrap(), b"kept");
    // Life goes on after the cut.
    fs::write(m.join("d/after"), b"x").unwrap();
    assert_eq!(fs::read(m.join("d/after")).unwrap(), b"x");
}

/// Linux sends FUSE_SYNCFS only to file systems that asked for it (virtiofs), never to one
/// on /dev/fuse: `syncfs(2)` on lossyfs returns 0 and makes nothing durable — just as on
/// any FUSE file system in production, which is why SIRMS's committer does not use it
/// there (storage/src/local/commit.rs).
#[test]
fn syncfs_does_not_reach_a_fuse_file_system() {
    let Some((_dir, mount)) = mount() else { return };
    let m = mount.mountpoint().to_path_buf();
    let mut f = File::create(m.join("f")).unwrap();
    sync_dir(&m);
    f.write_all(b"written").unwrap();
    // SAFETY: a valid open descriptor.
    assert_eq!(unsafe { libc::syncfs(f.as_raw_fd()) }, 0);
    drop(f);
    mount.cut_power().unwrap();
    assert_eq!(fs::read(m.join("f")).unwrap(), b"", "syncfs made data durable: FUSE_SYNCFS now arrives?");
}
