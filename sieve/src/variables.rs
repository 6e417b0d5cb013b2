//! Variables (RFC 5229): names, `${…}` expansion, `set` modifiers and the limits on them.

use std::collections::HashMap;

use crate::ast::Modifier;

/// Whether `s` is a valid variable name (RFC 5229 §3: identifier).
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// A run's variables and match variables.
pub(crate) struct Vars {
    map: HashMap<String, String>,
    /// `${0}`…`${9}` from the last successful `:matches`.
    pub matches: Vec<String>,
    max_vars: usize,
    max_size: usize,
    max_expanded: usize,
}

impl Vars {
    pub fn new(max_vars: usize, max_size: usize, max_expanded: usize) -> Self {
        Vars { map: HashMap::new(), matches: Vec::new(), max_vars, max_size, max_expanded }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str)
    }

    /// Sets a variable (name already lower-case); fails when a new one would pass the count limit.
    pub fn set(&mut self, name: &str, value: String) -> Result<(), String> {
        let value = truncate(value, self.max_size);
        if let Some(v) = self.map.get_mut(name) {
            *v = value;
            return Ok(());
        }
        if self.map.len() >= self.max_vars {
            return Err(format!("too many variables (at most {})", self.max_vars));
        }
        self.map.insert(name.to_string(), value);
        Ok(())
    }

    /// Replaces `${name}` and `${digit}` references; anything else that looks like one stays as written.
    pub fn expand(&self, s: &str) -> String {
        if !s.contains("${") {
            return s.to_string();
        }
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let name_end = after.find('}');
            let replaced = name_end.and_then(|e| {
                let name = &after[..e];
                if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
                    let n: usize = name.parse().unwrap_or(usize::MAX);
                    Some((self.matches.get(n).map(String::as_str).unwrap_or(""), e))
                } else if is_identifier(name) {
                    Some((self.get(&name.to_ascii_lowercase()).unwrap_or(""), e))
                } else {
                    None
                }
            });
            match replaced {
                Some((value, e)) => {
                    out.push_str(value);
                    rest = &after[e + 1..];
                }
                None => {
                    out.push_str("${");
                    rest = after;
                }
            }
            if out.len() > self.max_expanded {
                return truncate(out, self.max_expanded);
            }
        }
        out.push_str(rest);
        truncate(out, self.max_expanded)
    }
}

/// Applies `set` modifiers, already sorted from highest precedence to lowest.
pub(crate) fn apply_modifiers(mut value: String, modifiers: &[Modifier]) -> String {
    for m in modifiers {
        value = match m {
            Modifier::Lower => value.to_lowercase(),
            Modifier::Upper => value.to_uppercase(),
            Modifier::LowerFirst | Modifier::UpperFirst => {
                let mut chars = value.chars();
                match chars.next() {
                    Some(c) => {
                        let first: String = if *m == Modifier::LowerFirst {
                            c.to_lowercase().collect()
                        } else {
                            c.to_uppercase().collect()
                        };
                        first + chars.as_str()
                    }
                    None => value,
                }
            }
            Modifier::QuoteWildcard => {
                let mut out = String::with_capacity(value.len());
                for c in value.chars() {
                    if matches!(c, '*' | '?' | '\\') {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out
            }
            Modifier::Length => value.chars().count().to_string(),
        };
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion() {
        let mut v = Vars::new(4, 10, 100);
        v.set("company", "ACME".into()).unwrap();
        v.matches = vec!["all".into(), "one".into()];
        assert_eq!(v.expand("${company} ${COMPANY} ${1} ${2} ${unset}."), "ACME ACME one  .");
        assert_eq!(v.expand("${bad name} ${x.y} ${"), "${bad name} ${x.y} ${");
        assert_eq!(v.expand("${${company}}"), "${ACME}");
        v.set("long", "x".repeat(50)).unwrap();
        assert_eq!(v.get("long").map(str::len), Some(10));
    }

    #[test]
    fn variable_count_is_bounded() {
        let mut v = Vars::new(2, 10, 100);
        v.set("a", String::new()).unwrap();
        v.set("b", String::new()).unwrap();
        v.set("a", "again".into()).unwrap();
        assert!(v.set("c", String::new()).is_err());
    }

    #[test]
    fn modifiers() {
        let mut m = vec![Modifier::Length, Modifier::Upper];
        m.sort_by_key(|m| std::cmp::Reverse(m.precedence()));
        assert_eq!(apply_modifiers("abc".into(), &m), "3");
        assert_eq!(
            apply_modifiers("juMBlEd lETters".into(), &[Modifier::Lower, Modifier::UpperFirst]),
            "Jumbled letters"
        );
        assert_eq!(apply_modifiers("a*b?c\\".into(), &[Modifier::QuoteWildcard]), "a\\*b\\?c\\\\");
        assert_eq!(apply_modifiers("BIG".into(), &[Modifier::LowerFirst]), "bIG");
    }
}
