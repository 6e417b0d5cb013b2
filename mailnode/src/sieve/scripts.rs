//! Where a user's Sieve scripts live: each in one of the user's files (see
//! [`sirms_storage::user_file`]), kept with the mailboxes on the user's home and its replica,
//! named `sieve.` and the script's name escaped; the name of the active one in `sieve-active`.

use bytes::Bytes;
use sirms_storage::UserFile;

use crate::hex_escape;

/// The file naming the active script.
pub const ACTIVE_FILE: &str = "sieve-active";
/// The prefix of a script's file.
const SCRIPT_PREFIX: &str = "sieve.";
/// Longest script name, in bytes: escaped three to one, it still fits a file name.
pub const MAX_NAME: usize = 64;

/// Whether `name` may name a script (RFC 5804 §1.6: UTF-8 without control characters or
/// line and paragraph separators), within [`MAX_NAME`].
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.chars().any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
}

/// The file holding the script `name`.
pub fn file_name(name: &str) -> String {
    let keep = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    format!("{SCRIPT_PREFIX}{}", hex_escape::encode(name, b'+', keep))
}

/// The script a file holds, if it holds one.
pub fn script_name(file: &str) -> Option<String> {
    hex_escape::decode(file.strip_prefix(SCRIPT_PREFIX)?, b'+')
}

/// A user's scripts, read from their files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scripts {
    /// Every script by name, in name order.
    pub scripts: Vec<(String, Bytes)>,
    /// The active script's name, if one is active and exists.
    pub active: Option<String>,
}

impl Scripts {
    /// The scripts among `files`.
    pub fn from_files(files: &[UserFile]) -> Scripts {
        let mut scripts: Vec<(String, Bytes)> =
            files.iter().filter_map(|f| Some((script_name(&f.name)?, f.content.clone()))).collect();
        scripts.sort_by(|a, b| a.0.cmp(&b.0));
        let active = files
            .iter()
            .find(|f| f.name == ACTIVE_FILE)
            .and_then(|f| std::str::from_utf8(&f.content).ok())
            .map(str::to_string)
            .filter(|name| scripts.iter().any(|(n, _)| n == name));
        Scripts { scripts, active }
    }

    /// The script named `name`.
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.scripts.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }

    /// The active script's name and source.
    pub fn active_script(&self) -> Option<(&str, &Bytes)> {
        let name = self.active.as_deref()?;
        Some((name, self.get(name)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, content: &str) -> UserFile {
        UserFile { name: name.to_string(), content: Bytes::from(content.to_string()) }
    }

    #[test]
    fn names_map_to_files_and_back() {
        for name in ["vacation", "my rules", "Ünïcödé", "a+b.c/d", "sieve-active"] {
            let file = file_name(name);
            assert!(sirms_storage::user_file::check_name(&file).is_ok(), "{file}");
            assert_ne!(file, ACTIVE_FILE);
            assert_eq!(script_name(&file).as_deref(), Some(name));
        }
        let longest = "é".repeat(MAX_NAME / 2);
        assert!(sirms_storage::user_file::check_name(&file_name(&longest)).is_ok());
        assert!(!valid_name("a\nb") && !valid_name("") && !valid_name("x\u{2028}") && !valid_name(&"x".repeat(65)));
    }

    #[test]
    fn the_active_script_is_one_that_exists() {
        let files = vec![file(&file_name("b"), "keep;"), file(&file_name("a"), "discard;"), file(ACTIVE_FILE, "a")];
        let scripts = Scripts::from_files(&files);
        assert_eq!(scripts.scripts.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(scripts.active_script().map(|(n, s)| (n, &s[..])), Some(("a", &b"discard;"[..])));
        let dangling = Scripts::from_files(&[file(ACTIVE_FILE, "gone")]);
        assert_eq!(dangling.active, None);
    }
}
