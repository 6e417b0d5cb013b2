//! What Dovecot keeps beside a Maildir folder: `dovecot-uidlist` (the folder's UIDVALIDITY and
//! each file's UID) and `dovecot-keywords` (which letter of a file name's flags is which
//! keyword). Reading them lets an import keep the UIDs clients have cached.
//!
//! Both are parsed from bytes with limits, whatever is in them: a line that makes no sense is
//! skipped, never trusted.

use std::collections::HashMap;

/// Most lines of a uidlist read (a folder of ten million messages is far past any real one).
pub const MAX_UIDLIST_LINES: usize = 10_000_000;
/// Keyword letters a Maildir file name can carry: `a` to `z`.
pub const MAX_KEYWORDS: usize = 26;

/// A folder's `dovecot-uidlist`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UidList {
    pub uid_validity: u32,
    pub next_uid: u32,
    /// A file's base name (up to its `:2,` flags) to its UID.
    pub uids: HashMap<String, u32>,
}

impl UidList {
    /// Parses version 1 (`1 UIDVALIDITY NEXTUID`) and version 3 (`3 V… N… G…`) files; `None`
    /// when the header is neither.
    pub fn parse(text: &[u8]) -> Option<UidList> {
        let text = String::from_utf8_lossy(text);
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next()?.split_ascii_whitespace().collect();
        let mut list = UidList::default();
        match *header.first()? {
            "1" => {
                list.uid_validity = header.get(1)?.parse().ok()?;
                list.next_uid = header.get(2)?.parse().ok()?;
            }
            "3" => {
                // Fields may start with any character (F16: a multi-byte one), so no byte split.
                for field in &header[1..] {
                    if let Some(value) = field.strip_prefix('V') {
                        list.uid_validity = value.parse().ok()?;
                    } else if let Some(value) = field.strip_prefix('N') {
                        list.next_uid = value.parse().ok()?;
                    }
                }
            }
            _ => return None,
        }
        if list.uid_validity == 0 {
            return None;
        }
        for line in lines.take(MAX_UIDLIST_LINES) {
            if let Some((uid, name)) = entry(line) {
                list.uids.insert(name.to_string(), uid);
            }
        }
        Some(list)
    }

    /// The UID of the file named `file_name` (its flags part is ignored).
    pub fn uid_of(&self, file_name: &str) -> Option<u32> {
        self.uids.get(base_name(file_name)).copied()
    }
}

/// One file's line: `UID FILENAME` (v1) or `UID [EXTENSIONS…] :FILENAME` (v3).
fn entry(line: &str) -> Option<(u32, &str)> {
    let (uid, rest) = line.split_once(' ')?;
    let uid: u32 = uid.parse().ok().filter(|&u| u > 0)?;
    let name = match rest.find(':') {
        // v3: the name follows the first field starting with ':'.
        Some(at) if at == 0 || rest.as_bytes()[at - 1] == b' ' => &rest[at + 1..],
        _ => rest.split_ascii_whitespace().next()?,
    };
    let name = base_name(name.trim());
    (!name.is_empty() && !name.contains('/')).then_some((uid, name))
}

/// A Maildir file name without its info part (`:2,FLAGS`, or `;2,` where `:` is not allowed).
pub fn base_name(file_name: &str) -> &str {
    file_name.split([':', ';']).next().unwrap_or(file_name)
}

/// A folder's `dovecot-keywords`: `INDEX NAME` per line; index 0 is letter `a`.
pub fn parse_keywords(text: &[u8]) -> Vec<Option<String>> {
    let mut letters = vec![None; MAX_KEYWORDS];
    for line in String::from_utf8_lossy(text).lines() {
        let Some((index, name)) = line.split_once(' ') else { continue };
        if let Some(slot) = index.parse::<usize>().ok().and_then(|i| letters.get_mut(i)) {
            *slot = Some(name.trim().to_string()).filter(|n| !n.is_empty());
        }
    }
    letters
}

/// A version 3 `dovecot-uidlist` for `entries` (UID, file base name), which must be in UID
/// order: what `sirms ctl backup` writes beside each folder, so that Dovecot and an import keep
/// the UIDs.
pub fn render_uidlist(uid_validity: u32, next_uid: u32, entries: &[(u32, String)]) -> String {
    let mut text = format!("3 V{uid_validity} N{next_uid}\n");
    for (uid, base) in entries {
        text.push_str(&format!("{uid} :{base}\n"));
    }
    text
}

/// A `dovecot-keywords` file: keyword `i` is letter `a + i`.
pub fn render_keywords(keywords: &[String]) -> String {
    keywords.iter().take(MAX_KEYWORDS).enumerate().map(|(i, k)| format!("{i} {k}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_3_as_dovecot_2_3_writes_it() {
        let text = b"3 V1796634765 N3 G70e8a3218c78166b8e1a000083ecc375\n\
            1 :1796634764.M564117P6798.vm,S=46,W=51\n\
            2 W51 S46 :1796634799.M1P1.vm,S=46,W=51\n";
        let list = UidList::parse(text).unwrap();
        assert_eq!((list.uid_validity, list.next_uid), (1796634765, 3));
        assert_eq!(list.uid_of("1796634764.M564117P6798.vm,S=46,W=51:2,Sab"), Some(1));
        assert_eq!(list.uid_of("1796634799.M1P1.vm,S=46,W=51"), Some(2));
        assert_eq!(list.uid_of("other"), None);
    }

    /// F16 (mail_import): a header field starting with a multi-byte character panicked.
    #[test]
    fn a_header_field_starting_with_a_multi_byte_character() {
        let list = UidList::parse(b"3 V1796634765 N3 \xf2G70e8a\n1 :1.M1.vm,S=4\n").unwrap();
        assert_eq!((list.uid_validity, list.uid_of("1.M1.vm,S=4")), (1796634765, Some(1)));
        assert_eq!(UidList::parse("3 \u{e9}V1 V2\n".as_bytes()).map(|l| l.uid_validity), Some(2));
    }

    #[test]
    fn version_1_and_nonsense() {
        let list = UidList::parse(b"1 1234 7\n5 1234.abc.host\nx y\n0 zero\n6 ../escape\n").unwrap();
        assert_eq!((list.uid_validity, list.next_uid), (1234, 7));
        assert_eq!(list.uids.len(), 1);
        assert_eq!(list.uid_of("1234.abc.host:2,S"), Some(5));
        for bad in [&b""[..], b"2 V1\n", b"3 N5\n", b"1 x y\n", b"\xff\xfe"] {
            assert_eq!(UidList::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rendered_files_read_back() {
        let entries = vec![(3, "1.M1.h,S=5".to_string()), (9, "2.M2.h,S=7".to_string())];
        let list = UidList::parse(render_uidlist(77, 10, &entries).as_bytes()).unwrap();
        assert_eq!((list.uid_validity, list.next_uid, list.uid_of("2.M2.h,S=7:2,S")), (77, 10, Some(9)));
        let letters = parse_keywords(render_keywords(&["$Label1".into(), "Work".into()]).as_bytes());
        assert_eq!((letters[0].as_deref(), letters[1].as_deref(), &letters[2]), (Some("$Label1"), Some("Work"), &None));
    }

    #[test]
    fn keywords_by_letter() {
        let letters = parse_keywords(b"0 $Label1\n1 Custom\n30 Far\nbad\n2 \n");
        assert_eq!(letters[0].as_deref(), Some("$Label1"));
        assert_eq!(letters[1].as_deref(), Some("Custom"));
        assert_eq!(letters[2], None);
        assert_eq!(letters.len(), MAX_KEYWORDS);
    }
}
