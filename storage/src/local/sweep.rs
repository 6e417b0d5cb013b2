//! Leftovers of crashed writers, removed when the store opens.
//!
//! A message is written into its folder's `tmp/`, fsynced, then renamed into `cur/` and only
//! then acknowledged ([`super::commit`]). A file still in `tmp/` when the store opens was never
//! acknowledged to anyone, and nothing will ever rename it: its writer died with the process.
//! Likewise the `.NAME.PID.SEQ.tmp` files of folder settings replaced durably.
//!
//! Maildir's convention (qmail, Dovecot) is to remove `tmp/` files only after 36 hours,
//! because other programs may be delivering into the same Maildir at that moment. Here no one
//! else is: the store's index is locked by the one process that opens it (sled takes an
//! exclusive lock), SIRMS writes its Maildirs only through it, and the sweep runs inside
//! `open`, before this process writes anything. So every such file is provably an orphan and
//! all of them go, whatever their age. (The mtime of a `tmp/` file is no guide anyway: it is
//! set to the message's internal date, which an APPEND may put years back.)

use std::fs;
use std::io;
use std::path::Path;

use crate::durable::remove_temporaries;

/// What a sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Messages left in a folder's `tmp/`.
    pub messages: usize,
    /// Temporary copies of the store's small files.
    pub temporaries: usize,
}

/// Sweeps every folder of every user under `mail_root` (`USER/` is the INBOX, `USER/.NAME/`
/// the other folders). Call only while no writer is at work in the store.
pub fn sweep(mail_root: &Path) -> io::Result<Swept> {
    let mut swept = Swept::default();
    for user in fs::read_dir(mail_root)? {
        let user = user?;
        if !user.file_type()?.is_dir() {
            continue;
        }
        sweep_folder(&user.path(), &mut swept)?;
        for folder in fs::read_dir(user.path())? {
            let folder = folder?;
            if folder.file_name().to_string_lossy().starts_with('.') && folder.file_type()?.is_dir() {
                sweep_folder(&folder.path(), &mut swept)?;
            }
        }
    }
    Ok(swept)
}

fn sweep_folder(dir: &Path, swept: &mut Swept) -> io::Result<()> {
    swept.temporaries += remove_temporaries(dir)?;
    let tmp = dir.join("tmp");
    let entries = match fs::read_dir(&tmp) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            fs::remove_file(entry.path())?;
            swept.messages += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 28: every file in a folder's `tmp/` and every temporary settings file goes,
    /// whatever its age; finished messages and settings stay.
    #[test]
    fn removes_unfinished_writes_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        let inbox = root.path().join("u@example%2Etest");
        let folder = inbox.join(".Sent");
        for dir in [&inbox, &folder] {
            for sub in ["cur", "new", "tmp"] {
                fs::create_dir_all(dir.join(sub)).unwrap();
            }
            fs::write(dir.join("cur/1.M1P1Q1.h,U=1:2,S"), "kept").unwrap();
            fs::write(dir.join("tmp/2.M2P2Q2.h"), "half").unwrap();
            fs::write(dir.join("sirms-folder"), "kept").unwrap();
            fs::write(dir.join(".sirms-folder.12.0.tmp"), "half").unwrap();
        }
        assert_eq!(sweep(root.path()).unwrap(), Swept { messages: 2, temporaries: 2 });
        for dir in [&inbox, &folder] {
            assert_eq!(fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
            assert!(dir.join("cur/1.M1P1Q1.h,U=1:2,S").exists() && dir.join("sirms-folder").exists());
            assert!(!dir.join(".sirms-folder.12.0.tmp").exists());
        }
        assert_eq!(sweep(root.path()).unwrap(), Swept::default());
    }
}
