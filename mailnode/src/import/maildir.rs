//! Maildir trees as Dovecot and Courier leave them: INBOX at the root and one `.A.B` folder
//! per mailbox `A/B` (Maildir++), or mailboxes as nested directories (Dovecot's `LAYOUT=fs`).
//! Flags come from the file names, keywords through `dovecot-keywords`, UIDs and UIDVALIDITY
//! from `dovecot-uidlist`, and the internal date is the file's modification time, as Dovecot
//! has it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use sirms_storage::local::maildir::SYSTEM_LETTERS;
use sirms_storage::message::MAX_MESSAGE_SIZE;
use sirms_storage::{Flags, SystemFlags};

use super::dovecot::{self, UidList};
use super::{ImportError, SourceMessage, to_crlf};
use crate::imap::mutf7;

/// Most mailboxes one tree may hold.
pub const MAX_FOLDERS: usize = 10_000;
/// Deepest nesting followed in a `LAYOUT=fs` tree.
const MAX_DEPTH: usize = 16;

/// One mailbox of a tree, before its files are listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaildirFolder {
    /// Its name here: `/` between levels, UTF-8.
    pub name: String,
    pub dir: PathBuf,
}

/// One message file, listed but not read.
#[derive(Debug, Clone)]
pub struct MaildirFile {
    pub path: PathBuf,
    pub uid: Option<u32>,
    pub flags: Flags,
}

/// A folder's files in the order to import them (by UID, then by name, which starts with the
/// delivery time), and its UIDVALIDITY when Dovecot kept one.
#[derive(Debug, Default)]
pub struct Listing {
    pub uid_validity: Option<u32>,
    pub files: Vec<MaildirFile>,
}

/// Whether `dir` is a Maildir (it has `cur/`).
pub fn is_maildir(dir: &Path) -> bool {
    dir.join("cur").is_dir()
}

/// Every mailbox under `root`, INBOX first.
pub fn folders(root: &Path) -> Result<Vec<MaildirFolder>, ImportError> {
    if !is_maildir(root) {
        return Err(ImportError::NotASource(format!("{} is not a Maildir (no cur/ in it)", root.display())));
    }
    let mut found = vec![MaildirFolder { name: "INBOX".into(), dir: root.to_path_buf() }];
    let mut entries = read_dir_sorted(root)?;
    let plus = entries.iter().any(|p| dot_folder(p).is_some());
    if plus {
        for dir in entries.drain(..) {
            if let Some(name) = dot_folder(&dir) {
                found.push(MaildirFolder { name, dir });
            }
        }
    } else {
        nested(root, "", 0, &mut found)?;
    }
    if found.len() > MAX_FOLDERS {
        return Err(ImportError::NotASource(format!("{} holds over {MAX_FOLDERS} mailboxes", root.display())));
    }
    Ok(found)
}

/// The mailbox a Maildir++ folder directory `.A.B` holds: `A/B` (each level modified UTF-7).
fn dot_folder(dir: &Path) -> Option<String> {
    let file_name = dir.file_name()?.to_str()?;
    let encoded = file_name.strip_prefix('.')?;
    if encoded.is_empty() || encoded.starts_with('.') || !is_maildir(dir) {
        return None;
    }
    let levels: Vec<String> = encoded.split('.').map(decode_level).collect();
    (!levels.iter().any(String::is_empty)).then(|| levels.join("/"))
}

fn decode_level(level: &str) -> String {
    mutf7::decode(level.as_bytes()).unwrap_or_else(|_| level.to_string())
}

/// `LAYOUT=fs`: every directory below `dir` that is a Maildir is a mailbox.
fn nested(dir: &Path, prefix: &str, depth: usize, found: &mut Vec<MaildirFolder>) -> Result<(), ImportError> {
    if depth >= MAX_DEPTH || found.len() > MAX_FOLDERS {
        return Ok(());
    }
    for child in read_dir_sorted(dir)? {
        let Some(level) = child.file_name().and_then(|n| n.to_str()).map(str::to_string) else { continue };
        if ["cur", "new", "tmp"].contains(&level.as_str()) || level.starts_with('.') || !child.is_dir() {
            continue;
        }
        let name = format!("{prefix}{}", decode_level(&level));
        if is_maildir(&child) {
            found.push(MaildirFolder { name: name.clone(), dir: child.clone() });
        }
        nested(&child, &format!("{name}/"), depth + 1, found)?;
    }
    Ok(())
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, ImportError> {
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| ImportError::io(dir, e))? {
        paths.push(entry.map_err(|e| ImportError::io(dir, e))?.path());
    }
    paths.sort();
    Ok(paths)
}

/// Lists a folder's messages (`cur/` and `new/`), with their flags and Dovecot's UIDs.
pub fn list(folder: &MaildirFolder) -> Result<Listing, ImportError> {
    let small = |name: &str| -> Result<Option<Vec<u8>>, ImportError> {
        let path = folder.dir.join(name);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ImportError::io(&path, e)),
        }
    };
    let uidlist = small("dovecot-uidlist")?.and_then(|t| UidList::parse(&t));
    let letters = small("dovecot-keywords")?.map(|t| dovecot::parse_keywords(&t)).unwrap_or_default();
    let mut files = Vec::new();
    for sub in ["cur", "new"] {
        let dir = folder.dir.join(sub);
        if !dir.is_dir() {
            continue;
        }
        for path in read_dir_sorted(&dir)? {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
            if name.starts_with('.') || !path.is_file() {
                continue;
            }
            let uid = uidlist.as_ref().and_then(|l| l.uid_of(name));
            files.push(MaildirFile { flags: flags_of(name, &letters), uid, path });
        }
    }
    files.sort_by(|a, b| {
        (a.uid.is_none(), a.uid, a.path.file_name()).cmp(&(b.uid.is_none(), b.uid, b.path.file_name()))
    });
    Ok(Listing { uid_validity: uidlist.map(|l| l.uid_validity), files })
}

/// Flags from a file name's info part `:2,FLAGS`: the standard letters, and `a`–`z` for the
/// folder's keywords.
pub fn flags_of(file_name: &str, letters: &[Option<String>]) -> Flags {
    let info = file_name.rsplit_once(":2,").or_else(|| file_name.rsplit_once(";2,")).map_or("", |(_, f)| f);
    let mut system = SystemFlags::empty();
    let mut keywords = Vec::new();
    for c in info.chars() {
        if c.is_ascii_lowercase() {
            let keyword = letters.get((c as u8 - b'a') as usize).cloned().flatten();
            keywords.extend(keyword.filter(|k| Flags::valid_keyword(k)));
        } else if let Some((_, flag)) = SYSTEM_LETTERS.iter().find(|(letter, _)| *letter == c) {
            system = system.union(*flag);
        }
    }
    keywords.sort();
    keywords.dedup();
    Flags::new(system, keywords)
}

/// The info part (`:2,FLAGS`) of a file name for `flags`, keywords as letters of `keywords`
/// (a keyword not in it gets no letter): the inverse of [`flags_of`].
pub fn info(flags: &Flags, keywords: &[String]) -> String {
    let mut out = String::from(":2,");
    for (letter, flag) in SYSTEM_LETTERS {
        if flags.system.contains(flag) {
            out.push(letter);
        }
    }
    let mut letters: Vec<char> = flags
        .keywords
        .iter()
        .filter_map(|k| keywords.iter().take(dovecot::MAX_KEYWORDS).position(|known| known == k))
        .map(|i| (b'a' + i as u8) as char)
        .collect();
    letters.sort_unstable();
    out.extend(letters);
    out
}

/// Reads one listed file, its line ends made CRLF.
pub fn read(file: &MaildirFile) -> Result<SourceMessage, ImportError> {
    let origin = file.path.display().to_string();
    let meta = fs::metadata(&file.path).map_err(|e| ImportError::io(&file.path, e))?;
    if meta.len() > MAX_MESSAGE_SIZE {
        return Err(ImportError::TooLarge { origin, size: meta.len() });
    }
    let bytes = fs::read(&file.path).map_err(|e| ImportError::io(&file.path, e))?;
    let internal_date =
        meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs() as i64);
    Ok(SourceMessage { bytes: to_crlf(bytes), flags: file.flags.clone(), internal_date, uid: file.uid, origin })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maildir(dir: &Path) {
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
    }

    #[test]
    fn flags_from_names() {
        let letters = dovecot::parse_keywords(b"0 $Label1\n1 Custom\n");
        let f = flags_of("1.M2P3.host,S=46:2,DFPRSTab", &letters);
        assert_eq!(f.system.bits(), SystemFlags::from_bits(0b11_1111).bits());
        assert_eq!(f.keywords, vec!["$Label1".to_string(), "Custom".to_string()]);
        assert_eq!(flags_of("1.M2P3.host", &letters), Flags::default());
        // A letter with no keyword behind it is dropped, not invented.
        assert_eq!(flags_of("x:2,Sz", &letters).keywords, Vec::<String>::new());
    }

    #[test]
    fn info_is_the_inverse_of_flags_of() {
        let keywords = vec!["$Label1".to_string(), "Work".to_string()];
        let flags =
            Flags::new(SystemFlags::SEEN.union(SystemFlags::DRAFT), ["Work".to_string(), "$Label1".to_string()]);
        let text = info(&flags, &keywords);
        assert_eq!(text, ":2,DSab");
        let letters: Vec<Option<String>> = keywords.iter().cloned().map(Some).collect();
        assert_eq!(flags_of(&format!("x{text}"), &letters), flags);
    }

    #[test]
    fn maildir_plus_plus_and_fs_layouts() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("plus");
        maildir(&root);
        maildir(&root.join(".Work.Projects"));
        maildir(&root.join(".Entw&APw-rfe"));
        fs::create_dir_all(root.join(".notmaildir")).unwrap();
        let names: Vec<String> = folders(&root).unwrap().into_iter().map(|f| f.name).collect();
        assert_eq!(names, vec!["INBOX", "Entwürfe", "Work/Projects"]);

        let fs_root = tmp.path().join("fs");
        maildir(&fs_root);
        maildir(&fs_root.join("Work"));
        maildir(&fs_root.join("Work/Projects"));
        let names: Vec<String> = folders(&fs_root).unwrap().into_iter().map(|f| f.name).collect();
        assert_eq!(names, vec!["INBOX", "Work", "Work/Projects"]);
        assert!(folders(tmp.path()).is_err());
    }

    #[test]
    fn listing_orders_by_uid_and_reads_crlf() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        maildir(root);
        fs::write(root.join("cur/200.M1.h:2,S"), b"Subject: b\n\nbody\n").unwrap();
        fs::write(root.join("cur/100.M1.h:2,"), b"Subject: a\r\n\r\nbody\r\n").unwrap();
        fs::write(root.join("new/300.M1.h"), b"Subject: c\n\nnew\n").unwrap();
        fs::write(root.join("dovecot-uidlist"), b"3 V77 N9\n8 :200.M1.h\n4 :100.M1.h\n").unwrap();
        let folder = &folders(root).unwrap()[0];
        let listing = list(folder).unwrap();
        assert_eq!(listing.uid_validity, Some(77));
        let uids: Vec<Option<u32>> = listing.files.iter().map(|f| f.uid).collect();
        assert_eq!(uids, vec![Some(4), Some(8), None]);
        let second = read(&listing.files[1]).unwrap();
        assert_eq!(second.bytes, b"Subject: b\r\n\r\nbody\r\n");
        assert!(second.flags.system.contains(SystemFlags::SEEN));
        assert_eq!(read(&listing.files[0]).unwrap().bytes, b"Subject: a\r\n\r\nbody\r\n");
    }
}
