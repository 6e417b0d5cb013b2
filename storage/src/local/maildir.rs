//! Maildir naming: message file names with UID, size and flags, and the on-disk
//! names of users and folders. Pure functions over strings, so they can be fuzzed.
//!
//! A message file is `<unique>,U=<uid>,S=<size>:2,<flags>`: the UID and size live in
//! the name so the index can be rebuilt from a directory listing alone. Flags follow
//! the Maildir spec (`D F P R S T`, ASCII order) and then keyword letters `a`–`z`,
//! whose names are listed in the folder's `sirms-keywords` file. A message appended under
//! an idempotency key carries it too (`<unique>,K=<key>,U=…`, see [`key_field`]), so that a
//! store restarted between its commit and its answer still knows the retry.

use crate::flags::{Flags, SystemFlags};
use crate::mailbox::{DELIMITER, canonical_name};

/// At most this many keywords per folder: one lower-case letter each.
pub const MAX_KEYWORDS: usize = 26;
/// Longest file name we parse; anything longer is not one of ours.
pub const MAX_FILE_NAME: usize = 255;

/// The longest unique part a rebased name keeps: room is left for the longest
/// `,U=…,S=…` (36 bytes) and `:2,` with every system flag and keyword letter (35).
const MAX_UNIQUE: usize = MAX_FILE_NAME - 36 - 35;

/// The Maildir info letters of the system flags, in the order a file name lists them.
pub const SYSTEM_LETTERS: [(char, SystemFlags); 6] = [
    ('D', SystemFlags::DRAFT),
    ('F', SystemFlags::FLAGGED),
    ('P', SystemFlags::FORWARDED),
    ('R', SystemFlags::ANSWERED),
    ('S', SystemFlags::SEEN),
    ('T', SystemFlags::DELETED),
];

/// A parsed message file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName {
    /// Everything before `:2,` (unique part plus `,U=` and `,S=` fields).
    pub base: String,
    pub uid: Option<u32>,
    pub size: Option<u64>,
    pub system: SystemFlags,
    /// Keyword letters, as indices 0..26.
    pub keyword_letters: Vec<u8>,
}

impl FileName {
    /// Parses a file name found in `cur/` or `new/`. Returns `None` for names that
    /// are not messages (dot files, over-long names, invalid UTF-8 upstream).
    pub fn parse(name: &str) -> Option<FileName> {
        if name.is_empty() || name.starts_with('.') || name.len() > MAX_FILE_NAME || name.contains('/') {
            return None;
        }
        let (base, info) = match name.rfind(':') {
            Some(i) => (&name[..i], Some(&name[i + 1..])),
            None => (name, None),
        };
        if base.is_empty() {
            return None;
        }
        let mut uid = None;
        let mut size = None;
        for field in base.split(',').skip(1) {
            if let Some(v) = field.strip_prefix("U=") {
                uid = v.parse::<u32>().ok().filter(|u| *u > 0);
            } else if let Some(v) = field.strip_prefix("S=") {
                size = v.parse::<u64>().ok();
            }
        }
        let mut system = SystemFlags::empty();
        let mut keyword_letters = Vec::new();
        if let Some(flags) = info.and_then(|i| i.strip_prefix("2,")) {
            for c in flags.chars() {
                if let Some((_, f)) = SYSTEM_LETTERS.iter().find(|(l, _)| *l == c) {
                    system = system | *f;
                } else if c.is_ascii_lowercase() {
                    keyword_letters.push(c as u8 - b'a');
                }
            }
        }
        keyword_letters.sort_unstable();
        keyword_letters.dedup();
        Some(FileName { base: base.to_string(), uid, size, system, keyword_letters })
    }

    /// The file name for this base with the given flags.
    pub fn render(base: &str, system: SystemFlags, keyword_letters: &[u8]) -> String {
        let mut name = String::with_capacity(base.len() + 12);
        name.push_str(base);
        name.push_str(":2,");
        for (letter, flag) in SYSTEM_LETTERS {
            if system.contains(flag) {
                name.push(letter);
            }
        }
        let mut letters = keyword_letters.to_vec();
        letters.sort_unstable();
        letters.dedup();
        for l in letters.into_iter().filter(|l| (*l as usize) < MAX_KEYWORDS) {
            name.push((b'a' + l) as char);
        }
        name
    }

    /// The base of a new message: unique part, UID and size.
    pub fn new_base(unique: &str, uid: u32, size: u64) -> String {
        format!("{unique},U={uid},S={size}")
    }

    /// The same base with a (new) UID, keeping the unique part (shortened if need be) and size.
    ///
    /// A foreign name may be up to 255 bytes already; ours adds UID, size and flags, so the
    /// unique part is cut to what still fits with every flag set. The UID keeps cut names apart.
    pub fn rebase(&self, uid: u32, size: u64) -> String {
        let mut unique = self.base.split(',').next().unwrap_or(&self.base);
        if unique.len() > MAX_UNIQUE {
            let mut end = MAX_UNIQUE;
            while !unique.is_char_boundary(end) {
                end -= 1;
            }
            unique = &unique[..end];
        }
        FileName::new_base(unique, uid, size)
    }
}

/// Longest idempotency key written into a file name as it is; a longer one, or one with a
/// character a file name should not carry, is written as a hash.
const MAX_PLAIN_KEY: usize = 64;

/// The `,K=…` field naming an append's idempotency key in its file name: the key itself when
/// it is short and plain (`[A-Za-z0-9._-]`), else `h` and two FNV-1a hashes of it (128 bits,
/// the same in every build, unlike std's hasher).
pub fn key_field(key: &str) -> String {
    let plain = key.len() <= MAX_PLAIN_KEY
        && !key.is_empty()
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if plain {
        return format!(",K={key}");
    }
    let fnv = |basis: u64| key.bytes().fold(basis, |hash, b| (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
    format!(",K=h{:016x}{:016x}", fnv(0xcbf2_9ce4_8422_2325), fnv(0x6c62_272e_07bb_0142))
}

/// Maps keyword names to letters through the folder's keyword list.
pub fn keyword_letters(list: &[String], flags: &Flags) -> Option<Vec<u8>> {
    flags.keywords.iter().map(|k| list.iter().position(|known| known == k).map(|i| i as u8)).collect()
}

/// Maps letters back to keyword names; letters without a name are dropped.
pub fn keyword_names(list: &[String], letters: &[u8]) -> Vec<String> {
    letters.iter().filter_map(|l| list.get(*l as usize).cloned()).collect()
}

fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80 || b"-_@+=~!#$&'^`{}|".contains(&b)
}

/// Escapes one name component for the file system: `.`, `/`, `%`, controls and a few
/// shell-hostile bytes become `%XX`, so any valid name maps to one safe directory name.
pub fn escape_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if !ch.is_ascii() || is_plain(ch as u8) {
            out.push(ch);
        } else {
            out.push_str(&format!("%{:02X}", ch as u8));
        }
    }
    out
}

/// Reverses [`escape_component`]; `None` if the text is not what it would have written (only
/// `%XX` with upper-case hex, only for bytes it escapes), so one folder has one directory name.
pub fn unescape_component(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |at: usize| match bytes.get(at) {
                Some(&d @ b'0'..=b'9') => Some(d - b'0'),
                Some(&d @ b'A'..=b'F') => Some(d - b'A' + 10),
                _ => None,
            };
            let byte = hex(i + 1)? << 4 | hex(i + 2)?;
            if byte >= 0x80 || is_plain(byte) {
                return None;
            }
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().filter(|s| !s.is_empty())
}

/// The directory name (below the user's Maildir) of a folder other than INBOX: `.a.b` for `a/b`.
pub fn folder_dir(name: &str) -> String {
    let mut dir = String::with_capacity(name.len() + 2);
    for part in name.split(DELIMITER) {
        dir.push('.');
        dir.push_str(&escape_component(part));
    }
    dir
}

/// The folder name of a directory entry of the user's Maildir, if it is a folder.
pub fn folder_name(dir: &str) -> Option<String> {
    let rest = dir.strip_prefix('.')?;
    if rest.is_empty() || rest.starts_with('.') {
        return None;
    }
    let parts: Option<Vec<String>> = rest.split('.').map(unescape_component).collect();
    let parts = parts?;
    if parts.iter().any(|p| p.contains(DELIMITER)) {
        return None;
    }
    // Only names the store itself could have made: a directory made by hand may not list
    // under a name that CREATE would refuse or spell differently.
    let name = parts.join(&DELIMITER.to_string());
    canonical_name(&name).ok().filter(|c| *c == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_foreign_names_can_take_flags() {
        let foreign = "x".repeat(MAX_FILE_NAME);
        let parsed = FileName::parse(&foreign).unwrap();
        let all = SystemFlags::SEEN | SystemFlags::DRAFT | SystemFlags::FLAGGED | SystemFlags::ANSWERED;
        let letters: Vec<u8> = (0..26).collect();
        let name = FileName::render(&parsed.rebase(u32::MAX, u64::MAX), all, &letters);
        assert!(name.len() <= MAX_FILE_NAME, "{} bytes", name.len());
        assert_eq!(FileName::parse(&name).unwrap().uid, Some(u32::MAX));
        let wide = "é".repeat(MAX_FILE_NAME / 2);
        assert!(FileName::parse(&wide).unwrap().rebase(1, 1).starts_with('é'));
    }

    #[test]
    fn only_canonical_folder_directories() {
        assert_eq!(folder_name(".a%2Eb").as_deref(), Some("a.b"));
        assert_eq!(folder_name(".a%2eb"), None);
        assert_eq!(folder_name(".%41"), None);
        assert_eq!(folder_name(".%+1"), None);
        assert_eq!(folder_name(".%01"), None);
        assert_eq!(folder_name(".inbox.x"), None);
    }

    #[test]
    fn keys_go_into_names_plain_or_hashed() {
        assert_eq!(key_field("node1-5f.1a2.00ff"), ",K=node1-5f.1a2.00ff");
        let odd = key_field("a,b:c/d");
        assert!(odd.starts_with(",K=h") && odd.len() == 4 + 32, "{odd}");
        assert_eq!(odd, key_field("a,b:c/d"), "stable");
        assert_ne!(odd, key_field("a,b:c/e"));
        assert!(key_field(&"x".repeat(65)).starts_with(",K=h"), "too long to write as it is");
        // The field sits in the base, where parsing skips it.
        let base = FileName::new_base(&format!("123.M1P2Q3.host{}", key_field("k1")), 7, 100);
        let parsed = FileName::parse(&FileName::render(&base, SystemFlags::SEEN, &[])).expect("parses");
        assert_eq!((parsed.uid, parsed.size), (Some(7), Some(100)));
        assert!(base.contains(",K=k1,"), "{base}");
    }

    #[test]
    fn file_name_roundtrip() {
        let base = FileName::new_base("1700000000.M1P2Q3.host", 42, 1234);
        let name = FileName::render(&base, SystemFlags::SEEN | SystemFlags::DRAFT, &[2, 0]);
        assert_eq!(name, "1700000000.M1P2Q3.host,U=42,S=1234:2,DSac");
        let parsed = FileName::parse(&name).unwrap();
        assert_eq!(parsed.uid, Some(42));
        assert_eq!(parsed.size, Some(1234));
        assert_eq!(parsed.system, SystemFlags::SEEN | SystemFlags::DRAFT);
        assert_eq!(parsed.keyword_letters, vec![0, 2]);
        assert_eq!(parsed.base, base);
        assert_eq!(parsed.rebase(7, 9), "1700000000.M1P2Q3.host,U=7,S=9");
    }

    #[test]
    fn foreign_names() {
        let p = FileName::parse("1234.abc.host").unwrap();
        assert_eq!(p.uid, None);
        assert_eq!(p.system, SystemFlags::empty());
        assert!(FileName::parse(".hidden").is_none());
        assert!(FileName::parse("").is_none());
        assert!(FileName::parse(":2,S").is_none());
        assert_eq!(FileName::parse("x,U=0:2,").unwrap().uid, None);
        assert_eq!(FileName::parse("x,U=99999999999:2,").unwrap().uid, None);
    }

    #[test]
    fn folder_names_roundtrip() {
        for name in ["Sent", "a/b/c", "Sent Items", "50%.off", "Ünïcödé/日本", "a,b:c"] {
            let dir = folder_dir(name);
            assert!(!dir[1..].contains('/'), "{dir}");
            assert_eq!(folder_name(&dir).as_deref(), Some(name), "{dir}");
        }
        assert_eq!(folder_dir("a/b"), ".a.b");
        assert_eq!(folder_dir("a.b"), ".a%2Eb");
        assert_eq!(folder_name(".."), None);
        assert_eq!(folder_name(".a.%zz"), None);
    }
}
