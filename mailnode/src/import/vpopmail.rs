//! A qmail/vpopmail tree (`~vpopmail/domains/DOMAIN/`): each domain's `vpasswd` names its
//! users, their password hashes (and, where vpopmail kept them, clear passwords) and their
//! home directories, each with a Maildir.

use std::fs;
use std::path::{Path, PathBuf};

use super::ImportError;

/// Most users read from one `vpasswd`.
const MAX_USERS: usize = 1_000_000;

/// One line of a `vpasswd`: `name:hash:uid:gid:gecos:dir:quota[:clear]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpopUser {
    pub name: String,
    /// A crypt(3) hash (`$1$…`, `$6$…`), which SIRMS cannot check.
    pub hash: String,
    /// The clear password, when vpopmail was built to keep it.
    pub clear: Option<String>,
    /// The home directory as vpopmail recorded it.
    pub dir: String,
}

/// Parses a `vpasswd` file; lines that are not one user's are skipped.
pub fn parse_vpasswd(text: &[u8]) -> Vec<VpopUser> {
    let text = String::from_utf8_lossy(text);
    let mut users = Vec::new();
    for line in text.lines().take(MAX_USERS) {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 6 {
            continue;
        }
        let name = fields[0].trim();
        let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b'@' && b != b'/');
        if !valid {
            continue;
        }
        let clear = fields.get(7).map(|c| c.to_string()).filter(|c| !c.is_empty());
        users.push(VpopUser { name: name.to_string(), hash: fields[1].to_string(), clear, dir: fields[5].to_string() });
    }
    users
}

/// A vpopmail user found in a tree: the address, the Maildir to import, and the entry.
#[derive(Debug, Clone)]
pub struct Found {
    pub address: String,
    pub maildir: PathBuf,
    pub user: VpopUser,
}

/// Every user of every domain under `root` (`~vpopmail`, holding `domains/`). A user's
/// Maildir is where `vpasswd` says, or, when that path is not there (the tree was copied
/// elsewhere), `domains/DOMAIN/USER/Maildir`.
pub fn users(root: &Path) -> Result<Vec<Found>, ImportError> {
    let domains = root.join("domains");
    let entries = fs::read_dir(&domains).map_err(|e| ImportError::io(&domains, e))?;
    let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    names.sort();
    let mut found = Vec::new();
    for dir in names {
        let Some(domain) = dir.file_name().and_then(|n| n.to_str()).map(str::to_ascii_lowercase) else { continue };
        let vpasswd = dir.join("vpasswd");
        let Ok(text) = fs::read(&vpasswd) else { continue };
        for user in parse_vpasswd(&text) {
            let recorded = Path::new(&user.dir).join("Maildir");
            let maildir = if recorded.join("cur").is_dir() { recorded } else { dir.join(&user.name).join("Maildir") };
            found.push(Found { address: format!("{}@{domain}", user.name.to_ascii_lowercase()), maildir, user });
        }
    }
    if found.is_empty() {
        return Err(ImportError::NotASource(format!("{}: no domains/*/vpasswd with users", root.display())));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vpasswd_lines() {
        let text =
            b"postmaster:$1$abc$xyz:1:0:Postmaster:/home/vpopmail/domains/example.test/postmaster:NOQUOTA:secret\n\
            bob:$6$salt$hash:1:0:Bob:/home/vpopmail/domains/example.test/bob:NOQUOTA\n\
            short:line\n:nohash:1:0:x:/d:q\nsl/ash:h:1:0:x:/d:q\n";
        let users = parse_vpasswd(text);
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].clear.as_deref(), Some("secret"));
        assert_eq!(users[1].clear, None);
        assert_eq!(users[1].dir, "/home/vpopmail/domains/example.test/bob");
    }

    #[test]
    fn a_copied_tree_finds_its_maildirs() {
        let tmp = tempfile::tempdir().unwrap();
        let domain = tmp.path().join("domains/Example.test");
        fs::create_dir_all(domain.join("bob/Maildir/cur")).unwrap();
        fs::write(domain.join("vpasswd"), "bob:$6$s$h:1:0:Bob:/nowhere/bob:NOQUOTA:pw\n").unwrap();
        let found = users(tmp.path()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].address, "bob@example.test");
        assert_eq!(found[0].maildir, domain.join("bob/Maildir"));
        assert!(users(&tmp.path().join("nothing")).is_err());
    }
}
