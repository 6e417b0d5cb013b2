//! The file system's state: every inode twice, as programs see it (`live`) and as a disk
//! would hold it after a power cut (`durable`).
//!
//! The rules are POSIX's, read pessimistically (what ext4 promises, not what it happens to
//! do):
//!
//! - a file's data, size and times reach `durable` by `fsync` of that file; `fdatasync`
//!   carries the data and size but not the times;
//! - a directory's entries (creates, renames, links, unlinks in it) reach `durable` by
//!   `fsync` of that directory, and by nothing else — not by an fsync of the file named;
//! - a rename between two directories is two independent changes: each side is durable
//!   when its own directory is synced (so after a cut a file may sit under both names);
//! - a file that is named by a durable entry but whose data was never synced comes back
//!   empty (ext4's delayed allocation gives exactly that);
//! - a power cut replaces every `live` state with its `durable` one, and inodes no durable
//!   entry reaches are gone.
//!
//! `syncfs(2)` does not appear: the kernel does not forward it to a `/dev/fuse` file
//! system (README.md, "syncfs").

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::time::SystemTime;

use fuser::Errno;

/// The root directory's inode number (FUSE's).
pub const ROOT: u64 = 1;

/// Metadata of one inode at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

impl Meta {
    pub fn new(mode: u32, uid: u32, gid: u32) -> Meta {
        let now = SystemTime::now();
        Meta { mode: mode & 0o7777, uid, gid, atime: now, mtime: now, ctime: now }
    }
}

/// One version of an inode's contents: data for a file, entries for a directory.
#[derive(Clone, Debug)]
pub struct Version {
    pub data: Vec<u8>,
    pub entries: BTreeMap<OsString, u64>,
    pub meta: Meta,
}

impl Version {
    fn empty(meta: Meta) -> Version {
        Version { data: Vec::new(), entries: BTreeMap::new(), meta }
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub dir: bool,
    pub live: Version,
    pub durable: Version,
    /// Live directory entries naming this inode (files; directories report 2).
    pub links: u32,
}

/// Counts since the file system was mounted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub fsyncs: u64,
    pub fdatasyncs: u64,
    pub dir_fsyncs: u64,
    pub cuts: u64,
    /// At the last cut: inodes whose live state differed from their durable one, or that
    /// were gone.
    pub last_cut_dropped: u64,
}

/// What `attr` reports about an inode.
#[derive(Clone, Copy, Debug)]
pub struct Attr {
    pub ino: u64,
    pub dir: bool,
    pub size: u64,
    pub links: u32,
    pub meta: Meta,
}

pub struct Model {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    pub stats: Stats,
}

type Res<T> = Result<T, Errno>;

impl Model {
    /// An empty file system: a root directory, durable as it is.
    pub fn new(root: Meta) -> Model {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node { dir: true, live: Version::empty(root), durable: Version::empty(root), links: 1 });
        Model { nodes, next_ino: ROOT + 1, stats: Stats::default() }
    }

    fn node(&self, ino: u64) -> Res<&Node> {
        self.nodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> Res<&mut Node> {
        self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    fn dir(&self, ino: u64) -> Res<&Node> {
        let n = self.node(ino)?;
        if n.dir { Ok(n) } else { Err(Errno::ENOTDIR) }
    }

    pub fn attr(&self, ino: u64) -> Res<Attr> {
        let n = self.node(ino)?;
        Ok(Attr {
            ino,
            dir: n.dir,
            size: n.live.data.len() as u64,
            links: if n.dir { 2 } else { n.links },
            meta: n.live.meta,
        })
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Res<u64> {
        self.dir(parent)?.live.entries.get(name).copied().ok_or(Errno::ENOENT)
    }

    /// Adds a new inode named `name` in `parent`; fails if the name is taken.
    pub fn create(&mut self, parent: u64, name: &OsStr, dir: bool, meta: Meta) -> Res<u64> {
        if self.dir(parent)?.live.entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        // Durable from birth are only its metadata: its data and entries come with fsyncs.
        self.nodes.insert(ino, Node { dir, live: Version::empty(meta), durable: Version::empty(meta), links: 1 });
        let p = self.node_mut(parent)?;
        p.live.entries.insert(name.to_owned(), ino);
        p.live.meta.mtime = SystemTime::now();
        Ok(ino)
    }

    pub fn link(&mut self, ino: u64, parent: u64, name: &OsStr) -> Res<()> {
        if self.node(ino)?.dir {
            return Err(Errno::EPERM);
        }
        if self.dir(parent)?.live.entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        self.node_mut(parent)?.live.entries.insert(name.to_owned(), ino);
        self.node_mut(ino)?.links += 1;
        Ok(())
    }

    /// Removes `name` from `parent`: a file (`dir` false) or an empty directory.
    pub fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Res<()> {
        let ino = self.lookup(parent, name)?;
        let n = self.node(ino)?;
        match (dir, n.dir) {
            (false, true) => return Err(Errno::EISDIR),
            (true, false) => return Err(Errno::ENOTDIR),
            (true, true) if !n.live.entries.is_empty() => return Err(Errno::ENOTEMPTY),
            _ => {}
        }
        self.node_mut(parent)?.live.entries.remove(name);
        let n = self.node_mut(ino)?;
        n.links = n.links.saturating_sub(1);
        Ok(())
    }

    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        no_replace: bool,
    ) -> Res<()> {
        let ino = self.lookup(parent, name)?;
        self.dir(new_parent)?;
        let moving_dir = self.node(ino)?.dir;
        if let Ok(old) = self.lookup(new_parent, new_name) {
            if old == ino {
                return Ok(());
            }
            if no_replace {
                return Err(Errno::EEXIST);
            }
            let target = self.node(old)?;
            match (moving_dir, target.dir) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                (true, true) if !target.live.entries.is_empty() => return Err(Errno::ENOTEMPTY),
                _ => {}
            }
            let t = self.node_mut(old)?;
            t.links = t.links.saturating_sub(1);
        }
        self.node_mut(parent)?.live.entries.remove(name);
        self.node_mut(new_parent)?.live.entries.insert(new_name.to_owned(), ino);
        Ok(())
    }

    pub fn read(&self, ino: u64, offset: u64, size: u32) -> Res<&[u8]> {
        let data = &self.node(ino)?.live.data;
        let start = (offset as usize).min(data.len());
        let end = start.saturating_add(size as usize).min(data.len());
        Ok(&data[start..end])
    }

    pub fn write(&mut self, ino: u64, offset: Option<u64>, bytes: &[u8]) -> Res<()> {
        let n = self.node_mut(ino)?;
        if n.dir {
            return Err(Errno::EISDIR);
        }
        let data = &mut n.live.data;
        let start = offset.map_or(data.len(), |o| o as usize);
        let end = start.checked_add(bytes.len()).ok_or(Errno::EINVAL)?;
        if data.len() < end {
            data.resize(end, 0);
        }
        data[start..end].copy_from_slice(bytes);
        n.live.meta.mtime = SystemTime::now();
        Ok(())
    }

    pub fn truncate(&mut self, ino: u64, size: u64) -> Res<()> {
        let n = self.node_mut(ino)?;
        if n.dir {
            return Err(Errno::EISDIR);
        }
        n.live.data.resize(size as usize, 0);
        n.live.meta.mtime = SystemTime::now();
        Ok(())
    }

    pub fn meta_mut(&mut self, ino: u64) -> Res<&mut Meta> {
        Ok(&mut self.node_mut(ino)?.live.meta)
    }

    /// `fsync`/`fdatasync` of a file, or `fsync` of a directory.
    pub fn sync(&mut self, ino: u64, datasync: bool) -> Res<()> {
        let n = self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        if n.dir {
            self.stats.dir_fsyncs += 1;
            n.durable.entries = n.live.entries.clone();
            n.durable.meta = n.live.meta;
        } else {
            if datasync {
                self.stats.fdatasyncs += 1;
            } else {
                self.stats.fsyncs += 1;
                n.durable.meta = n.live.meta;
            }
            n.durable.data = n.live.data.clone();
        }
        Ok(())
    }

    /// Everything live becomes durable: what `sync(1)` would do, for setting up a state.
    pub fn sync_everything(&mut self) {
        for n in self.nodes.values_mut() {
            n.durable = n.live.clone();
        }
    }

    /// The power cut: every live state is replaced by its durable one; inodes no durable
    /// entry reaches from the root are gone. Inode numbers of the survivors are kept, and
    /// new ones are never reused, so the kernel cannot mistake one file for another.
    pub fn cut(&mut self) {
        let mut reached: HashMap<u64, u32> = HashMap::new();
        let mut stack = vec![ROOT];
        reached.insert(ROOT, 1);
        while let Some(ino) = stack.pop() {
            let Some(n) = self.nodes.get(&ino) else { continue };
            for child in n.durable.entries.values() {
                let seen = reached.entry(*child).or_insert(0);
                *seen += 1;
                if *seen == 1 && self.nodes.get(child).is_some_and(|c| c.dir) {
                    stack.push(*child);
                }
            }
        }
        let before = self.nodes.len();
        self.nodes.retain(|ino, _| reached.contains_key(ino));
        let mut dropped = (before - self.nodes.len()) as u64;
        for (ino, n) in self.nodes.iter_mut() {
            let same = n.live.data == n.durable.data && n.live.entries == n.durable.entries;
            if !same {
                dropped += 1;
            }
            n.live = n.durable.clone();
            n.links = reached.get(ino).copied().unwrap_or(1);
        }
        // A durable entry may name an inode that is gone (it cannot: inodes are only ever
        // dropped here), but keep the directories consistent whatever happens.
        let present: std::collections::HashSet<u64> = self.nodes.keys().copied().collect();
        for n in self.nodes.values_mut() {
            n.live.entries.retain(|_, child| present.contains(child));
            n.durable.entries.retain(|_, child| present.contains(child));
        }
        self.stats.cuts += 1;
        self.stats.last_cut_dropped = dropped;
    }

    /// Entries of a directory, live.
    pub fn entries(&self, ino: u64) -> Res<Vec<(OsString, u64, bool)>> {
        Ok(self
            .dir(ino)?
            .live
            .entries
            .iter()
            .map(|(name, child)| (name.clone(), *child, self.nodes.get(child).is_some_and(|c| c.dir)))
            .collect())
    }

    /// The durable tree, for writing it out: `(path, ino, node)` from the root down, a
    /// directory before its entries.
    pub fn durable_tree(&self) -> Vec<(Vec<OsString>, u64, &Node)> {
        let mut out = Vec::new();
        let mut stack: Vec<(Vec<OsString>, u64)> = vec![(Vec::new(), ROOT)];
        while let Some((path, ino)) = stack.pop() {
            let Some(n) = self.nodes.get(&ino) else { continue };
            if n.dir {
                for (name, child) in n.durable.entries.iter().rev() {
                    let mut p = path.clone();
                    p.push(name.clone());
                    stack.push((p, *child));
                }
            }
            out.push((path, ino, n));
        }
        out
    }

    /// Adds an inode loaded from a backing directory: live and durable alike.
    pub fn load(&mut self, parent: u64, name: &OsStr, dir: bool, data: Vec<u8>, meta: Meta) -> Res<u64> {
        let ino = self.create(parent, name, dir, meta)?;
        let n = self.node_mut(ino)?;
        n.live.data = data;
        n.durable = n.live.clone();
        let p = self.node_mut(parent)?;
        p.durable.entries = p.live.entries.clone();
        Ok(ino)
    }

    pub fn load_link(&mut self, ino: u64, parent: u64, name: &OsStr) -> Res<()> {
        self.link(ino, parent, name)?;
        let p = self.node_mut(parent)?;
        p.durable.entries = p.live.entries.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta::new(0o644, 0, 0)
    }

    fn model() -> Model {
        Model::new(Meta::new(0o755, 0, 0))
    }

    fn name(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    #[test]
    fn unsynced_data_and_entries_are_dropped() {
        let mut m = model();
        let d = m.create(ROOT, name("d"), true, meta()).unwrap();
        m.sync(ROOT, false).unwrap();
        let f = m.create(d, name("f"), false, meta()).unwrap();
        m.write(f, Some(0), b"hello").unwrap();
        m.cut();
        assert_eq!(m.lookup(d, name("f")), Err(Errno::ENOENT), "entry of an unsynced directory");

        let f = m.create(d, name("f"), false, meta()).unwrap();
        m.write(f, Some(0), b"hello").unwrap();
        m.sync(d, false).unwrap();
        m.cut();
        assert_eq!(m.read(f, 0, 100).unwrap(), b"", "named but never synced: empty");

        m.write(f, Some(0), b"hello").unwrap();
        m.sync(f, true).unwrap();
        m.write(f, Some(5), b" world").unwrap();
        m.cut();
        assert_eq!(m.read(f, 0, 100).unwrap(), b"hello", "the synced prefix only");
    }

    #[test]
    fn renames_are_durable_per_directory() {
        let mut m = model();
        let tmp = m.create(ROOT, name("tmp"), true, meta()).unwrap();
        let cur = m.create(ROOT, name("cur"), true, meta()).unwrap();
        let f = m.create(tmp, name("m"), false, meta()).unwrap();
        m.write(f, Some(0), b"x").unwrap();
        m.sync(f, false).unwrap();
        m.sync(tmp, false).unwrap();
        m.sync(ROOT, false).unwrap();
        m.rename(tmp, name("m"), cur, name("m:2,"), false).unwrap();
        m.cut();
        assert_eq!(m.lookup(tmp, name("m")), Ok(f), "rename not synced: old name");
        assert!(m.lookup(cur, name("m:2,")).is_err());

        m.rename(tmp, name("m"), cur, name("m:2,"), false).unwrap();
        m.sync(cur, false).unwrap();
        m.cut();
        assert_eq!(m.lookup(cur, name("m:2,")), Ok(f));
        assert_eq!(m.lookup(tmp, name("m")), Ok(f), "the source side was not synced");
        assert_eq!(m.attr(f).unwrap().links, 2);
        assert_eq!(m.read(f, 0, 10).unwrap(), b"x");
    }

    #[test]
    fn unreachable_inodes_are_gone_and_numbers_not_reused() {
        let mut m = model();
        let a = m.create(ROOT, name("a"), false, meta()).unwrap();
        m.cut();
        assert!(m.attr(a).is_err());
        let b = m.create(ROOT, name("a"), false, meta()).unwrap();
        assert!(b > a);
        assert_eq!(m.stats.cuts, 1);
        assert_eq!(m.stats.last_cut_dropped, 2, "the file, and the root's entries");
    }
}
