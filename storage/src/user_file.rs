//! A user's small files other than mail: Sieve scripts and which one is active. They live
//! with the user's mailboxes so that they move, replicate and fail over with them; this
//! module holds the rules every store applies to them.

use bytes::Bytes;

use crate::error::{Result, StoreError};

/// One file: its name and content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFile {
    pub name: String,
    pub content: Bytes,
}

/// Largest file a store keeps (a Sieve script is limited far below this by its own rules).
pub const MAX_SIZE: usize = 256 * 1024;
/// Most files one user keeps.
pub const MAX_FILES: usize = 64;
/// Longest name.
pub const MAX_NAME: usize = 200;

/// Refuses names that could escape a directory or hide: ASCII letters, digits and `.-_+@`,
/// not starting with a dot, at most [`MAX_NAME`] bytes.
pub fn check_name(name: &str) -> Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_+@".contains(c);
    if name.is_empty() || name.len() > MAX_NAME || name.starts_with('.') || !name.chars().all(allowed) {
        return Err(StoreError::InvalidName("a file name is 1-200 of A-Z a-z 0-9 . - _ + @, not starting with a dot"));
    }
    Ok(())
}

/// Checks a write: the name, the size, and that it does not take the user past
/// [`MAX_FILES`] (`existing` names what the user has now).
pub fn check_write<'a>(name: &str, content: Option<&Bytes>, mut existing: impl Iterator<Item = &'a str>) -> Result<()> {
    check_name(name)?;
    let Some(content) = content else { return Ok(()) };
    if content.len() > MAX_SIZE {
        return Err(StoreError::TooLarge);
    }
    let mut count = 0;
    let mut replaces = false;
    for other in existing.by_ref() {
        count += 1;
        replaces |= other == name;
    }
    if !replaces && count >= MAX_FILES {
        return Err(StoreError::TooManyFiles);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_or_hide_are_refused() {
        for bad in ["", ".hidden", "../x", "a/b", "a\\b", "a b", "é", &"x".repeat(201)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["sieve.active", "sieve+vacation.script", "A-b_c@d"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn writes_are_bounded_in_size_and_count() {
        let small = Bytes::from_static(b"keep;");
        assert!(check_write("a", Some(&Bytes::from(vec![0; MAX_SIZE + 1])), std::iter::empty()).is_err());
        let full: Vec<String> = (0..MAX_FILES).map(|i| format!("f{i}")).collect();
        assert!(check_write("new", Some(&small), full.iter().map(String::as_str)).is_err());
        assert!(check_write("f3", Some(&small), full.iter().map(String::as_str)).is_ok(), "a replacement");
        assert!(check_write("new", None, full.iter().map(String::as_str)).is_ok(), "a removal");
    }
}
