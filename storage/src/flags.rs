//! Message flags: the IMAP system flags as bits, keywords by name.

/// The system flags of RFC 3501 that a message can carry (not `\Recent`, which is per session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SystemFlags(u32);

impl SystemFlags {
    pub const SEEN: SystemFlags = SystemFlags(1);
    pub const ANSWERED: SystemFlags = SystemFlags(1 << 1);
    pub const FLAGGED: SystemFlags = SystemFlags(1 << 2);
    pub const DELETED: SystemFlags = SystemFlags(1 << 3);
    pub const DRAFT: SystemFlags = SystemFlags(1 << 4);
    /// Maildir's `P` (passed/forwarded); exposed to IMAP as the `$Forwarded` keyword.
    pub const FORWARDED: SystemFlags = SystemFlags(1 << 5);
    const ALL: u32 = (1 << 6) - 1;

    /// No flag set.
    pub const fn empty() -> Self {
        SystemFlags(0)
    }
    /// The raw bit set (the wire form).
    pub const fn bits(self) -> u32 {
        self.0
    }
    /// From the wire form; unknown bits are dropped.
    pub const fn from_bits(bits: u32) -> Self {
        SystemFlags(bits & Self::ALL)
    }
    /// Whether every flag in `other` is set.
    pub const fn contains(self, other: SystemFlags) -> bool {
        self.0 & other.0 == other.0
    }
    /// Set union.
    pub const fn union(self, other: SystemFlags) -> Self {
        SystemFlags(self.0 | other.0)
    }
    /// Set difference.
    pub const fn difference(self, other: SystemFlags) -> Self {
        SystemFlags(self.0 & !other.0)
    }
}

impl std::ops::BitOr for SystemFlags {
    type Output = SystemFlags;
    fn bitor(self, rhs: SystemFlags) -> SystemFlags {
        self.union(rhs)
    }
}

/// Longest keyword accepted (an IMAP atom; Dovecot uses the same order of magnitude).
pub const MAX_KEYWORD_LEN: usize = 64;

/// A message's flags: system flags plus sorted, de-duplicated keywords.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Flags {
    pub system: SystemFlags,
    pub keywords: Vec<String>,
}

impl Flags {
    /// Flags with only system flags set.
    pub fn system(system: SystemFlags) -> Self {
        Flags { system, keywords: Vec::new() }
    }

    /// Builds flags, normalising the keyword list (sorted, no duplicates).
    pub fn new(system: SystemFlags, keywords: impl IntoIterator<Item = String>) -> Self {
        let mut keywords: Vec<String> = keywords.into_iter().collect();
        keywords.sort();
        keywords.dedup();
        Flags { system, keywords }
    }

    /// Whether `keyword` is a valid IMAP flag keyword (an atom without `\`, bounded length).
    pub fn valid_keyword(keyword: &str) -> bool {
        !keyword.is_empty()
            && keyword.len() <= MAX_KEYWORD_LEN
            && keyword
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']'))
    }

    /// Applies a STORE operation and returns the result.
    pub fn apply(&self, op: FlagOp, change: &Flags) -> Flags {
        match op {
            FlagOp::Set => change.clone(),
            FlagOp::Add => {
                Flags::new(self.system.union(change.system), self.keywords.iter().chain(&change.keywords).cloned())
            }
            FlagOp::Remove => Flags::new(
                self.system.difference(change.system),
                self.keywords.iter().filter(|k| !change.keywords.contains(k)).cloned(),
            ),
        }
    }
}

/// How a STORE changes flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    Set,
    Add,
    Remove,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_add_remove_set() {
        let f = Flags::new(SystemFlags::SEEN, ["b".to_string()]);
        let add = Flags::new(SystemFlags::FLAGGED, ["a".to_string(), "b".to_string()]);
        let added = f.apply(FlagOp::Add, &add);
        assert_eq!(added.system, SystemFlags::SEEN | SystemFlags::FLAGGED);
        assert_eq!(added.keywords, vec!["a", "b"]);
        let removed = added.apply(FlagOp::Remove, &Flags::new(SystemFlags::SEEN, ["b".to_string()]));
        assert_eq!(removed, Flags::new(SystemFlags::FLAGGED, ["a".to_string()]));
        assert_eq!(removed.apply(FlagOp::Set, &Flags::default()), Flags::default());
    }

    #[test]
    fn keyword_validity() {
        assert!(Flags::valid_keyword("$Junk"));
        assert!(!Flags::valid_keyword("\\Seen"));
        assert!(!Flags::valid_keyword("a b"));
        assert!(!Flags::valid_keyword(""));
        assert!(!Flags::valid_keyword(&"x".repeat(65)));
    }
}
