//! The node's MTA-STS policy cache (RFC 8461 §5.1): one file per domain under
//! `data_dir/mta-sts/`, written durably (write, fsync, rename, directory fsync) before the
//! policy is relied on, so that a restart cannot forget an `enforce` policy and fall back to
//! unchecked TLS — the downgrade the cache exists to prevent.
//!
//! File form: `id <id>`, `fetched <unix secs>`, an empty line, then the policy file as
//! [`Policy::render`] writes it (read back with the same limits as one from the network).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use super::policy::Policy;
use sirms_storage::durable::{create_private_dir, write_atomic};

/// A policy as cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    /// The TXT record's id when the policy was fetched.
    pub id: String,
    /// Unix seconds of the fetch.
    pub fetched: i64,
    pub policy: Policy,
}

impl Cached {
    /// Whether the policy still holds at `now` (its `max_age` not yet over).
    pub fn fresh(&self, now: i64) -> bool {
        now < self.fetched.saturating_add(self.policy.max_age as i64)
    }

    fn render(&self) -> String {
        format!("id {}\nfetched {}\n\n{}", self.id, self.fetched, self.policy.render())
    }

    fn parse(text: &str) -> Option<Cached> {
        let (head, policy) = text.split_once("\n\n")?;
        let mut lines = head.lines();
        let id = lines.next()?.strip_prefix("id ")?.to_string();
        let fetched = lines.next()?.strip_prefix("fetched ")?.parse().ok()?;
        Some(Cached { id, fetched, policy: Policy::parse(policy.as_bytes()).ok()? })
    }
}

/// The cache: files on disk, and what was read of them in memory.
#[derive(Debug)]
pub struct PolicyCache {
    dir: PathBuf,
    memory: Mutex<HashMap<String, Option<Cached>>>,
}

impl PolicyCache {
    /// The cache in `dir` (created owner-only).
    pub fn open(dir: impl Into<PathBuf>) -> std::io::Result<PolicyCache> {
        let dir = dir.into();
        create_private_dir(&dir)?;
        Ok(PolicyCache { dir, memory: Mutex::new(HashMap::new()) })
    }

    /// The cached policy of `domain` (a lower-case DNS name), fresh or not.
    pub fn get(&self, domain: &str) -> Option<Cached> {
        let path = self.path(domain)?;
        let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        memory
            .entry(domain.to_string())
            .or_insert_with(|| {
                let text = std::fs::read_to_string(&path).ok()?;
                let cached = Cached::parse(&text);
                if cached.is_none() {
                    tracing::warn!(file = %path.display(), "unreadable MTA-STS cache entry ignored");
                }
                cached
            })
            .clone()
    }

    /// Stores `cached` for `domain` durably, then in memory.
    pub fn put(&self, domain: &str, cached: Cached) -> std::io::Result<()> {
        let path = self
            .path(domain)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a domain name"))?;
        write_atomic(&path, cached.render().as_bytes(), "mta-sts-cache")?;
        self.memory.lock().unwrap_or_else(PoisonError::into_inner).insert(domain.to_string(), Some(cached));
        Ok(())
    }

    /// A domain's file; `None` for anything that is not a plain DNS name (it becomes a path).
    fn path(&self, domain: &str) -> Option<PathBuf> {
        let plain = !domain.is_empty()
            && domain.len() <= 253
            && !domain.starts_with('.')
            && domain
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'_');
        plain.then(|| self.dir.join(Path::new(domain)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::mta_sts::policy::Mode;

    #[test]
    fn entries_survive_a_reopen_and_names_stay_in_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let policy = Policy { mode: Mode::Enforce, max_age: 100, mx: vec!["*.a.test".into()] };
        let cached = Cached { id: "abc".into(), fetched: 1000, policy };
        let cache = PolicyCache::open(dir.path().join("sts")).unwrap();
        assert_eq!(cache.get("a.test"), None);
        cache.put("a.test", cached.clone()).unwrap();
        let again = PolicyCache::open(dir.path().join("sts")).unwrap();
        assert_eq!(again.get("a.test"), Some(cached.clone()));
        assert!(cached.fresh(1099) && !cached.fresh(1100));
        assert!(again.put("../evil", cached.clone()).is_err());
        assert!(again.put(".hidden", cached).is_err());
        assert_eq!(again.get("A.test"), None);
    }
}
