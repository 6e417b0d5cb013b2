//! lossyfs: a FUSE file system that loses, on command, everything a power cut would.
//!
//! Programs see an ordinary file system. Underneath, every inode is kept twice: as it is
//! now, and as a disk would hold it after a power cut — only what `fsync`/`fdatasync` of
//! a file (its data) and `fsync` of a directory (its entries) made durable. [`Mount::cut_power`]
//! throws the first away and carries on with the second, as LazyFS does for data, and
//! further for directory entries. The rules are in [`model`]; what is not modelled is in
//! README.md.
//!
//! The backing directory is the "disk": it is read at mount (its contents are durable)
//! and rewritten with the durable state at every power cut and at unmount, so what a test
//! left behind can be looked at with ordinary tools.

mod fs;
pub mod model;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{BackgroundSession, Config, MountOption};

pub use model::Stats;
use model::{Meta, Model, ROOT};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("FUSE is not available (/dev/fuse: {0})")]
    NoFuse(io::Error),
    #[error("cannot mount lossyfs on {path}: {source}")]
    Mount { path: PathBuf, source: io::Error },
    #[error("backing directory {path}: {source}")]
    Backing { path: PathBuf, source: io::Error },
    #[error("backing directory {path}: {what}")]
    BackingContents { path: PathBuf, what: String },
}

/// Whether this machine can mount a FUSE file system: `/dev/fuse` opens.
pub fn fuse_available() -> Result<(), Error> {
    OpenOptions::new().read(true).write(true).open("/dev/fuse").map(drop).map_err(Error::NoFuse)
}

/// A mounted lossyfs. Dropping it unmounts (after writing the durable state out).
pub struct Mount {
    session: Option<BackgroundSession>,
    model: Arc<Mutex<Model>>,
    mountpoint: PathBuf,
    backing: PathBuf,
}

impl Mount {
    /// Mounts lossyfs on `mountpoint` (an empty directory), starting from the contents of
    /// `backing`, which are taken as durable.
    pub fn new(mountpoint: &Path, backing: &Path) -> Result<Mount, Error> {
        fuse_available()?;
        let root = std::fs::metadata(backing).map_err(|source| Error::Backing { path: backing.into(), source })?;
        let mut model = Model::new(Meta::new(root.mode(), root.uid(), root.gid()));
        load(&mut model, backing)?;
        let model = Arc::new(Mutex::new(model));
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName("lossyfs".into()), MountOption::Subtype("lossyfs".into())];
        let session = fuser::spawn_mount(fs::LossyFs { model: model.clone() }, mountpoint, &config)
            .map_err(|source| Error::Mount { path: mountpoint.into(), source })?;
        Ok(Mount { session: Some(session), model, mountpoint: mountpoint.into(), backing: backing.into() })
    }

    fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The power cut: everything not made durable is gone, from now on. Processes using
    /// the mount should be dead already (a survivor would see its files change under it),
    /// as they would be after a real one. The durable state is then written to the
    /// backing directory.
    pub fn cut_power(&self) -> Result<Stats, Error> {
        let mut m = self.model();
        m.cut();
        save(&m, &self.backing)?;
        Ok(m.stats)
    }

    /// Makes everything durable, as `sync(1)` would: for a state a test sets up before
    /// its real work starts.
    pub fn sync_everything(&self) {
        self.model().sync_everything();
    }

    pub fn stats(&self) -> Stats {
        self.model().stats
    }

    /// Writes the durable state out and unmounts.
    pub fn unmount(mut self) -> Result<(), Error> {
        self.finish()
    }

    fn finish(&mut self) -> Result<(), Error> {
        let Some(session) = self.session.take() else { return Ok(()) };
        let saved = save(&self.model(), &self.backing);
        session.umount_and_join().map_err(|source| Error::Mount { path: self.mountpoint.clone(), source })?;
        saved
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            eprintln!("lossyfs: {e}");
        }
    }
}

fn meta_of(md: &std::fs::Metadata) -> Meta {
    let mut meta = Meta::new(md.mode(), md.uid(), md.gid());
    let at = |secs: i64, nanos: i64| UNIX_EPOCH + Duration::new(secs.max(0) as u64, nanos.clamp(0, 999_999_999) as u32);
    meta.atime = at(md.atime(), md.atime_nsec());
    meta.mtime = at(md.mtime(), md.mtime_nsec());
    meta.ctime = at(md.ctime(), md.ctime_nsec());
    meta
}

/// Reads the backing directory into the model, every inode durable. Hard links stay links.
fn load(model: &mut Model, backing: &Path) -> Result<(), Error> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Backing { path, source }
    };
    let mut seen: HashMap<(u64, u64), u64> = HashMap::new();
    let mut stack = vec![(backing.to_path_buf(), ROOT)];
    while let Some((dir, ino)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(err(&dir))? {
            let entry = entry.map_err(err(&dir))?;
            let path = entry.path();
            let md = std::fs::symlink_metadata(&path).map_err(err(&path))?;
            let bad = |what: &str| Error::BackingContents { path: path.clone(), what: what.into() };
            if md.is_dir() {
                let child = model
                    .load(ino, &entry.file_name(), true, Vec::new(), meta_of(&md))
                    .map_err(|e| bad(&io::Error::from_raw_os_error(e.code()).to_string()))?;
                stack.push((path, child));
            } else if md.is_file() {
                if let Some(&first) = seen.get(&(md.dev(), md.ino())) {
                    model
                        .load_link(first, ino, &entry.file_name())
                        .map_err(|e| bad(&io::Error::from_raw_os_error(e.code()).to_string()))?;
                    continue;
                }
                let data = std::fs::read(&path).map_err(err(&path))?;
                let child = model
                    .load(ino, &entry.file_name(), false, data, meta_of(&md))
                    .map_err(|e| bad(&io::Error::from_raw_os_error(e.code()).to_string()))?;
                seen.insert((md.dev(), md.ino()), child);
            } else {
                return Err(bad("only regular files and directories are modelled"));
            }
        }
    }
    Ok(())
}

/// Replaces the backing directory's contents with the model's durable state.
fn save(model: &Model, backing: &Path) -> Result<(), Error> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Backing { path, source }
    };
    for entry in std::fs::read_dir(backing).map_err(err(backing))? {
        let path = entry.map_err(err(backing))?.path();
        let removed = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(err(&path))?;
    }
    let mut written: HashMap<u64, PathBuf> = HashMap::new();
    for (parts, ino, node) in model.durable_tree() {
        if parts.is_empty() {
            continue;
        }
        let path: PathBuf =
            std::iter::once(backing.as_os_str().to_owned()).chain(parts).collect::<Vec<OsString>>().iter().collect();
        if node.dir {
            std::fs::create_dir(&path).map_err(err(&path))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(node.durable.meta.mode))
                .map_err(err(&path))?;
        } else if let Some(first) = written.get(&ino) {
            std::fs::hard_link(first, &path).map_err(err(&path))?;
        } else {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(node.durable.meta.mode)
                .open(&path)
                .map_err(err(&path))?;
            io::Write::write_all(&mut f, &node.durable.data).map_err(err(&path))?;
            File::set_modified(&f, node.durable.meta.mtime).map_err(err(&path))?;
            written.insert(ino, path);
        }
    }
    Ok(())
}
