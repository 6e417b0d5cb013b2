//! Small files beside the messages: folder settings, keyword lists and subscriptions.
//! Each is replaced atomically (write, fsync, rename, directory fsync), so a crash leaves
//! either the old or the new version.

use std::fs::File;
use std::io;
use std::path::Path;

pub use crate::durable::{sync_dir, sync_file, write_atomic};
use crate::mailbox::SpecialUse;

/// A folder's settings file: UIDVALIDITY, the UID floor and special use.
pub const FOLDER_FILE: &str = "sirms-folder";
/// A folder's keyword list: line N is the keyword of letter `a` + N.
pub const KEYWORDS_FILE: &str = "sirms-keywords";
/// The user's subscription list, one mailbox name a line.
pub const SUBSCRIPTIONS_FILE: &str = "subscriptions";
/// The directory of the user's files other than mail (Sieve scripts): no leading dot, so no
/// Maildir++ reader takes it for a folder.
pub const USER_FILES_DIR: &str = "sirms-files";
/// Marks a Maildir++ folder (read by other Maildir software).
pub const MAILDIRFOLDER_FILE: &str = "maildirfolder";
/// Longest settings file we read; anything longer is damage.
const MAX_SMALL_FILE: u64 = 1024 * 1024;

/// What `sirms-folder` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FolderFile {
    pub uid_validity: u32,
    /// No UID below this is ever handed out again (written when the highest UIDs are expunged).
    pub uid_floor: u32,
    pub special_use: Option<SpecialUse>,
}

impl FolderFile {
    /// Parses the file; unknown lines are ignored so later versions can add keys.
    pub fn parse(text: &str) -> FolderFile {
        let mut f = FolderFile::default();
        for line in text.lines() {
            let mut it = line.splitn(2, ' ');
            match (it.next(), it.next()) {
                (Some("uidvalidity"), Some(v)) => f.uid_validity = v.trim().parse().unwrap_or(0),
                (Some("uidnext"), Some(v)) => f.uid_floor = v.trim().parse().unwrap_or(0),
                (Some("special-use"), Some(v)) => f.special_use = SpecialUse::from_attribute(v.trim()),
                _ => {}
            }
        }
        f
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut s = format!("uidvalidity {}\nuidnext {}\n", self.uid_validity, self.uid_floor);
        if let Some(u) = self.special_use {
            s.push_str(&format!("special-use {}\n", u.attribute()));
        }
        s
    }
}

/// Reads a small text file; a missing file reads as `None`.
pub fn read_small(path: &Path) -> io::Result<Option<String>> {
    match File::open(path) {
        Ok(f) => {
            use std::io::Read;
            let mut s = String::new();
            f.take(MAX_SMALL_FILE).read_to_string(&mut s)?;
            Ok(Some(s))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
