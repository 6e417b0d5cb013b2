//! Fuzzes Maildir naming (`sirms_storage::local::maildir`): message file names with UID, size
//! and flags, and folder directory names.
//!
//! The input is taken as a name (lossily as UTF-8). Byte 0 also picks flags and keyword
//! letters for a rendered name. Checked:
//!
//! - nothing panics;
//! - `FileName::parse` accepts no dot file, no name with `/` and nothing over 255 bytes;
//!   its keyword letters are sorted, unique and below 26;
//! - `parse(render(base, flags, keywords))` gives back base, UID, size, flags and the
//!   keyword letters (those below 26, sorted, unique), for every parsed name whose rendering
//!   still fits in a file name; `rebase` keeps the unique part (cut to fit with every flag)
//!   and sets UID and size;
//! - for every valid mailbox name (`canonical_name`), `folder_dir` is a single directory
//!   name (starts with `.`, no `/`, no control characters, only plain bytes and `%XX`)
//!   and `folder_name(folder_dir(n)) == n`;
//! - `unescape_component(escape_component(s)) == s` for non-empty `s`; escaping leaves no
//!   `.`, `/` or control character;
//! - whatever `folder_name` accepts is a name that maps back to a directory naming it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sirms_storage::SystemFlags;
use sirms_storage::local::maildir::{
    FileName, MAX_FILE_NAME, MAX_KEYWORDS, escape_component, folder_dir, folder_name, unescape_component,
};
use sirms_storage::mailbox::canonical_name;

/// What `FileName::rebase` keeps of a unique part at most (its `MAX_UNIQUE`).
const MAX_UNIQUE_PART: usize = MAX_FILE_NAME - 36 - 35;

fn check_file_name(name: &str, flags: u8, extra_letters: &[u8]) {
    let Some(parsed) = FileName::parse(name) else { return };
    assert!(!name.is_empty() && !name.starts_with('.') && !name.contains('/') && name.len() <= MAX_FILE_NAME);
    assert!(!parsed.base.is_empty() && name.starts_with(&parsed.base));
    assert!(parsed.keyword_letters.windows(2).all(|w| w[0] < w[1]), "letters not sorted/unique");
    assert!(parsed.keyword_letters.iter().all(|&l| usize::from(l) < MAX_KEYWORDS));
    if let Some(uid) = parsed.uid {
        assert!(uid > 0);
    }

    // Rendering what was parsed and parsing it again changes nothing.
    let rendered = FileName::render(&parsed.base, parsed.system, &parsed.keyword_letters);
    if rendered.len() <= MAX_FILE_NAME {
        let again =
            FileName::parse(&rendered).unwrap_or_else(|| panic!("render of {name:?} = {rendered:?} does not parse"));
        assert_eq!(again, parsed, "parse(render(parse({name:?}))) differs");
    }

    // Other flags on the same base.
    let system = SystemFlags::from_bits(u32::from(flags));
    let rendered = FileName::render(&parsed.base, system, extra_letters);
    if rendered.len() <= MAX_FILE_NAME {
        let again = FileName::parse(&rendered).unwrap_or_else(|| panic!("{rendered:?} does not parse"));
        let mut letters: Vec<u8> = extra_letters.iter().copied().filter(|&l| usize::from(l) < MAX_KEYWORDS).collect();
        letters.sort_unstable();
        letters.dedup();
        assert_eq!(again.base, parsed.base, "base of {rendered:?}");
        assert_eq!((again.uid, again.size), (parsed.uid, parsed.size), "uid/size of {rendered:?}");
        assert_eq!(again.system, system, "flags of {rendered:?}");
        assert_eq!(again.keyword_letters, letters, "keywords of {rendered:?}");
    }

    // A new UID and size keep the unique part.
    let uid = u32::from(flags).wrapping_mul(2_654_435_761).max(1);
    let size = u64::from(flags) << 33 | u64::from(uid);
    let rebased = parsed.rebase(uid, size);
    let unique = parsed.base.split(',').next().unwrap_or_default();
    // Long unique parts are cut (on a character boundary) so that every rendering fits.
    let kept = rebased.split(',').next().unwrap_or_default();
    assert!(unique.starts_with(kept) && (kept == unique || kept.len() + 4 > MAX_UNIQUE_PART), "{rebased:?}");
    let all_flags = FileName::render(&rebased, SystemFlags::from_bits(u32::MAX), &(0..26).collect::<Vec<u8>>());
    assert!(all_flags.len() <= MAX_FILE_NAME, "{all_flags:?} is {} bytes", all_flags.len());
    if rebased.len() <= MAX_FILE_NAME && !unique.is_empty() && !unique.contains(':') {
        let again = FileName::parse(&rebased).unwrap_or_else(|| panic!("rebased {rebased:?} does not parse"));
        assert_eq!((again.uid, again.size), (Some(uid), Some(size)), "rebased {rebased:?}");
    }
}

fn check_folder(name: &str) {
    // Directory names first: anything folder_name accepts must come back from folder_dir.
    if let Some(folder) = folder_name(name) {
        assert!(!folder.is_empty());
        let dir = folder_dir(&folder);
        assert_eq!(folder_name(&dir).as_deref(), Some(folder.as_str()), "{name:?} -> {folder:?} -> {dir:?}");
    }

    let Ok(canonical) = canonical_name(name) else { return };
    let dir = folder_dir(&canonical);
    assert!(dir.starts_with('.') && !dir.starts_with(".."), "folder_dir({canonical:?}) = {dir:?}");
    assert!(!dir.contains('/') && !dir.chars().any(char::is_control), "unsafe directory name {dir:?}");
    assert!(dir != "." && dir != "..");
    assert_eq!(folder_name(&dir), Some(canonical.clone()), "folder_name(folder_dir({canonical:?})) with dir {dir:?}");

    for part in canonical.split('/') {
        let escaped = escape_component(part);
        assert!(!escaped.contains(['.', '/', '\0']) && !escaped.chars().any(char::is_control), "{escaped:?}");
        assert_eq!(unescape_component(&escaped).as_deref(), Some(part), "escape of {part:?} = {escaped:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let (flags, rest) = data.split_first().map_or((0, data), |(f, r)| (*f, r));
    let name = String::from_utf8_lossy(rest);
    check_file_name(&name, flags, rest.get(..4).unwrap_or(&[]));
    check_folder(&name);

    // Component escaping over arbitrary text.
    if !name.is_empty() {
        let escaped = escape_component(&name);
        assert!(!escaped.contains(['.', '/']) && !escaped.chars().any(|c| c.is_ascii_control()));
        assert_eq!(unescape_component(&escaped).as_deref(), Some(&*name));
    }
    let _ = unescape_component(&name);
});
