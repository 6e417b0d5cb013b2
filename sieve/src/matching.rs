//! Comparators (RFC 4790 as used by RFC 5228 §2.7.3) and match types (`:is`, `:contains`,
//! `:matches`, and RFC 5231's `:value` and `:count`).

use std::cell::Cell;
use std::cmp::Ordering;

use crate::ast::{Comparator, Match, MatchKind, Relation};

fn fold(c: char, comp: Comparator) -> char {
    if comp == Comparator::AsciiCasemap { c.to_ascii_lowercase() } else { c }
}

/// The digits i;ascii-numeric sees in `s` (leading zeros dropped), or None for "positive infinity".
fn numeric(s: &str) -> Option<&str> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    let digits = &s[..end];
    Some(digits.trim_start_matches('0'))
}

/// Orders two values under a comparator.
pub(crate) fn compare(a: &str, b: &str, comp: Comparator) -> Ordering {
    match comp {
        Comparator::Octet => a.as_bytes().cmp(b.as_bytes()),
        Comparator::AsciiCasemap => {
            a.bytes().map(|c| c.to_ascii_lowercase()).cmp(b.bytes().map(|c| c.to_ascii_lowercase()))
        }
        // Numbers of any length: compare digit counts first, then digits.
        Comparator::AsciiNumeric => match (numeric(a), numeric(b)) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) => x.len().cmp(&y.len()).then_with(|| x.cmp(y)),
        },
    }
}

fn relation_holds(rel: Relation, ord: Ordering) -> bool {
    match rel {
        Relation::Gt => ord == Ordering::Greater,
        Relation::Ge => ord != Ordering::Less,
        Relation::Lt => ord == Ordering::Less,
        Relation::Le => ord != Ordering::Greater,
        Relation::Eq => ord == Ordering::Equal,
        Relation::Ne => ord != Ordering::Equal,
    }
}

fn contains(value: &str, key: &str, comp: Comparator) -> bool {
    match comp {
        Comparator::AsciiCasemap => value.to_ascii_lowercase().contains(&key.to_ascii_lowercase()),
        _ => value.contains(key),
    }
}

#[derive(Clone, Copy)]
enum Pat {
    Lit(char),
    One,
    Star,
}

fn pattern(key: &str) -> Vec<Pat> {
    let mut out = Vec::new();
    let mut it = key.chars();
    while let Some(c) = it.next() {
        out.push(match c {
            '*' => Pat::Star,
            '?' => Pat::One,
            // A backslash makes the next character literal; a trailing one stands for itself.
            '\\' => Pat::Lit(it.next().unwrap_or('\\')),
            c => Pat::Lit(c),
        });
    }
    out
}

/// What one run may still spend, in steps: bytes of header and body read, characters compared.
/// Matching is O(value × pattern) at worst, and every test may read the message again, so
/// this is what keeps a big message and a big script from taking hours.
pub(crate) struct Budget(Cell<u64>);

impl Budget {
    pub fn new(steps: u64) -> Self {
        Budget(Cell::new(steps))
    }

    /// Takes `n` steps; false once the budget is spent.
    pub fn spend(&self, n: usize) -> bool {
        match self.0.get().checked_sub(n as u64) {
            Some(left) => {
                self.0.set(left);
                true
            }
            None => {
                self.0.set(0);
                false
            }
        }
    }

    /// Whether nothing is left (an overspend leaves nothing).
    pub fn exhausted(&self) -> bool {
        self.0.get() == 0
    }
}

/// Matches `value` against a `:matches` pattern. On success, `captures` gets the text of each
/// wildcard, left to right; earlier `*`s take as little as they can (RFC 5229 §3.2).
///
/// Only the most recent `*` is ever widened, which is enough for glob patterns and keeps the
/// cost at O(len(value) × len(pattern)).
/// None when `budget` ran out first.
pub(crate) fn wildcard(
    key: &str,
    value: &str,
    comp: Comparator,
    captures: &mut Vec<String>,
    budget: &Budget,
) -> Option<bool> {
    let pat = pattern(key);
    let val: Vec<char> = value.chars().collect();
    let (mut p, mut v) = (0usize, 0usize);
    let mut caps: Vec<(usize, usize)> = Vec::new();
    // (index of the star in the pattern, where its capture starts, where it ends, captures before it)
    let mut star: Option<(usize, usize, usize, usize)> = None;
    loop {
        if p == pat.len() && v == val.len() {
            break;
        }
        if !budget.spend(1) {
            return None;
        }
        let advanced = match pat.get(p) {
            Some(Pat::Star) => {
                star = Some((p, v, v, caps.len()));
                caps.push((v, v));
                p += 1;
                true
            }
            Some(Pat::One) if v < val.len() => {
                caps.push((v, v + 1));
                p += 1;
                v += 1;
                true
            }
            Some(Pat::Lit(c)) if v < val.len() && fold(*c, comp) == fold(val[v], comp) => {
                p += 1;
                v += 1;
                true
            }
            _ => false,
        };
        if advanced {
            continue;
        }
        match star {
            Some((sp, start, end, before)) if end < val.len() => {
                let end = end + 1;
                star = Some((sp, start, end, before));
                caps.truncate(before);
                caps.push((start, end));
                p = sp + 1;
                v = end;
            }
            _ => return Some(false),
        }
    }
    captures.clear();
    captures.push(value.to_string());
    captures.extend(caps.iter().map(|&(s, e)| val[s..e].iter().collect::<String>()));
    Some(true)
}

/// Whether one value matches one key under `m` (`:count` is handled by the caller); None when
/// `budget` ran out.
pub(crate) fn matches_one(
    m: &Match,
    value: &str,
    key: &str,
    captures: &mut Vec<String>,
    budget: &Budget,
) -> Option<bool> {
    if m.kind == MatchKind::Matches {
        return wildcard(key, value, m.comparator, captures, budget);
    }
    // The other match types are linear (str::contains is Two-Way), so they cost their length.
    let cost = value.len() + key.len() + 1;
    if !budget.spend(cost) {
        return None;
    }
    Some(match m.kind {
        MatchKind::Is => compare(value, key, m.comparator) == Ordering::Equal,
        MatchKind::Contains => contains(value, key, m.comparator),
        MatchKind::Value(rel) | MatchKind::Count(rel) => relation_holds(rel, compare(value, key, m.comparator)),
        MatchKind::Matches => false,
    })
}

/// Whether any value matches any key; for `:count`, whether the number of values does.
/// `captures` holds the match variables of the last successful `:matches`. None when `budget`
/// ran out.
pub(crate) fn match_values(
    m: &Match,
    values: &[String],
    keys: &[String],
    captures: &mut Vec<String>,
    budget: &Budget,
) -> Option<bool> {
    if let MatchKind::Count(_) = m.kind {
        let n = values.len().to_string();
        for k in keys {
            if matches_one(m, &n, k, captures, budget)? {
                return Some(true);
            }
        }
        return Some(false);
    }
    let mut scratch = Vec::new();
    for v in values {
        for k in keys {
            if matches_one(m, v, k, &mut scratch, budget)? {
                if m.kind == MatchKind::Matches {
                    *captures = scratch;
                }
                return Some(true);
            }
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(key: &str, value: &str) -> Option<Vec<String>> {
        let mut c = Vec::new();
        wildcard(key, value, Comparator::AsciiCasemap, &mut c, &Budget::new(u64::MAX)).unwrap().then_some(c)
    }

    #[test]
    fn wildcards() {
        assert!(caps("*", "").is_some());
        assert!(caps("a*b", "aXXb").is_some());
        assert!(caps("a*b", "aXXc").is_none());
        assert!(caps("a?c", "abc").is_some());
        assert!(caps("a?c", "ac").is_none());
        assert!(caps("A*", "abc").is_some());
        assert!(caps("\\*x", "*x").is_some());
        assert!(caps("\\*x", "ax").is_none());
        assert!(caps("*a*a*a*a*b", &"a".repeat(5000)).is_none());
    }

    #[test]
    fn captures_are_leftmost_shortest() {
        let c = caps("[*] *", "[acme-users] [fwd] version 1.0 is out").unwrap();
        assert_eq!(c, vec!["[acme-users] [fwd] version 1.0 is out", "acme-users", "[fwd] version 1.0 is out"]);
        let c = caps("*<*@*", "Sieve list <sieve.ietf.org@lists>").unwrap();
        assert_eq!(c[2], "sieve.ietf.org");
        let c = caps("?*?", "abcd").unwrap();
        assert_eq!(c, vec!["abcd", "a", "bc", "d"]);
    }

    #[test]
    fn budget_runs_out() {
        let mut c = Vec::new();
        let value = "a".repeat(10_000);
        // Only the last star backtracks, so the costly case is a long literal tail after it.
        let key = format!("*{}b", "a".repeat(100));
        assert_eq!(wildcard(&key, &value, Comparator::Octet, &mut c, &Budget::new(100_000)), None);
        assert_eq!(wildcard("*a*a*a*b", &value, Comparator::Octet, &mut c, &Budget::new(100_000)), Some(false));
        let b = Budget::new(10);
        assert!(b.spend(10));
        assert!(b.exhausted());
        assert!(!b.spend(1));
    }

    #[test]
    fn numeric() {
        assert_eq!(compare("10", "9", Comparator::AsciiNumeric), Ordering::Greater);
        assert_eq!(compare("007", "7", Comparator::AsciiNumeric), Ordering::Equal);
        assert_eq!(compare("abc", "99999999999999999999999", Comparator::AsciiNumeric), Ordering::Greater);
        assert_eq!(compare("x", "y", Comparator::AsciiNumeric), Ordering::Equal);
        assert_eq!(compare("ABC", "abc", Comparator::AsciiCasemap), Ordering::Equal);
        assert_ne!(compare("ABC", "abc", Comparator::Octet), Ordering::Equal);
    }
}
