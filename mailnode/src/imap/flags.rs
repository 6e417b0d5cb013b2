//! IMAP flags ↔ the store's flags, and their rendering in FLAGS lists.

use imap_types::flag::Flag;
use sirms_storage::{Flags, SystemFlags};

use super::error::CommandError;

/// The keyword the store's `FORWARDED` bit is shown as (RFC 5788).
const FORWARDED: &str = "$Forwarded";

/// The system flags in the order clients expect them.
const SYSTEM: [(SystemFlags, &str); 5] = [
    (SystemFlags::ANSWERED, "\\Answered"),
    (SystemFlags::FLAGGED, "\\Flagged"),
    (SystemFlags::DELETED, "\\Deleted"),
    (SystemFlags::SEEN, "\\Seen"),
    (SystemFlags::DRAFT, "\\Draft"),
];

/// The store's flags for a flag list from STORE or APPEND.
pub fn from_imap(list: &[Flag<'_>]) -> Result<Flags, CommandError> {
    let mut system = SystemFlags::empty();
    let mut keywords = Vec::new();
    for flag in list {
        match flag {
            Flag::Answered => system = system | SystemFlags::ANSWERED,
            Flag::Deleted => system = system | SystemFlags::DELETED,
            Flag::Draft => system = system | SystemFlags::DRAFT,
            Flag::Flagged => system = system | SystemFlags::FLAGGED,
            Flag::Seen => system = system | SystemFlags::SEEN,
            // \Recent is the server's to set (RFC 3501 §2.3.2); clients that send it are ignored.
            Flag::Extension(_) if flag.to_string().eq_ignore_ascii_case("\\Recent") => {}
            Flag::Extension(_) => return Err(CommandError::bad(format!("unknown system flag {flag}"))),
            Flag::Keyword(atom) if atom.inner().eq_ignore_ascii_case(FORWARDED) => {
                system = system | SystemFlags::FORWARDED
            }
            Flag::Keyword(atom) => {
                if !Flags::valid_keyword(atom.inner()) {
                    return Err(CommandError::bad("invalid keyword"));
                }
                keywords.push(atom.inner().to_string());
            }
        }
    }
    Ok(Flags::new(system, keywords))
}

/// Renders `flags` (and `\Recent`) as the inside of a FLAGS list.
pub fn render(flags: &Flags, recent: bool) -> String {
    let mut out = String::new();
    let mut push = |s: &str| {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(s);
    };
    for (bit, name) in SYSTEM {
        if flags.system.contains(bit) {
            push(name);
        }
    }
    if flags.system.contains(SystemFlags::FORWARDED) {
        push(FORWARDED);
    }
    for keyword in &flags.keywords {
        push(keyword);
    }
    if recent {
        push("\\Recent");
    }
    out
}

/// The FLAGS a mailbox announces: the system flags, `$Forwarded` and the keywords in use.
pub fn mailbox_flags<'a>(keywords: impl IntoIterator<Item = &'a String>) -> String {
    let mut all: Vec<&str> = keywords.into_iter().map(String::as_str).collect();
    all.sort_unstable();
    all.dedup();
    let mut out = String::from("\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded");
    for k in all {
        out.push(' ');
        out.push_str(k);
    }
    out
}

/// Whether `flags` hold the keyword `name` (case-insensitive, as SEARCH KEYWORD compares).
pub fn has_keyword(flags: &Flags, name: &str) -> bool {
    if name.eq_ignore_ascii_case(FORWARDED) {
        return flags.system.contains(SystemFlags::FORWARDED);
    }
    flags.keywords.iter().any(|k| k.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_and_renders() {
        let list = [Flag::Seen, Flag::Flagged, Flag::try_from("$Forwarded").unwrap(), Flag::try_from("work").unwrap()];
        let flags = from_imap(&list).unwrap();
        assert_eq!(render(&flags, true), "\\Flagged \\Seen $Forwarded work \\Recent");
        assert!(has_keyword(&flags, "WORK") && has_keyword(&flags, "$forwarded"));
        assert!(from_imap(&[Flag::try_from("\\Bogus").unwrap()]).is_err());
    }
}
