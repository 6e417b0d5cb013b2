//! Recent successful password checks, remembered so that a client logging in again and again
//! (a mail client opening a connection per folder, a phone polling) does not pay argon2 each
//! time — Dovecot's `auth_cache`.
//!
//! What is kept is a keyed digest, never the password: HMAC-SHA256 under a key drawn at start
//! and held only in this process's memory, over the login, the directory's stored hash and
//! the password. A later login matches only with the same password *and* the same stored
//! hash, so a password change (`sirms ctl users passwd`) makes the old entry useless the
//! moment the node's directory has the new hash. Only successes are remembered: a wrong
//! password always gets the full check. Entries expire after a TTL, and there are at most
//! `capacity` of them (one per login).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;

/// How long a remembered login stays valid.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Logins remembered at most.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// One remembered success.
struct Entry {
    tag: hmac::Tag,
    at: Instant,
}

/// Remembered successful logins, keyed by canonical login.
pub struct AuthCache {
    key: hmac::Key,
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<String, Entry>>,
}

impl AuthCache {
    /// An empty cache with a fresh random key; `None` if the system has no randomness to give.
    pub fn new(ttl: Duration, capacity: usize) -> Option<AuthCache> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new()).ok()?;
        Some(AuthCache { key, ttl, capacity, entries: Mutex::new(HashMap::new()) })
    }

    /// The digest of one login attempt against one stored hash. Each field is length-prefixed
    /// so that no two different triples feed the same bytes to the MAC.
    fn tag(&self, login: &str, stored: &str, password: &str) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        for field in [login.as_bytes(), stored.as_bytes(), password.as_bytes()] {
            ctx.update(&(field.len() as u64).to_be_bytes());
            ctx.update(field);
        }
        ctx.sign()
    }

    /// Whether `password` recently passed the full check for `login` while the directory held
    /// `stored` for it.
    pub fn granted(&self, login: &str, stored: &str, password: &str) -> bool {
        let tag = self.tag(login, stored, password);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = entries.get(login) else { return false };
        if entry.at.elapsed() >= self.ttl {
            entries.remove(login);
            return false;
        }
        // Constant time: the comparison must not tell how much of a guess was right.
        aws_lc_rs::constant_time::verify_slices_are_equal(entry.tag.as_ref(), tag.as_ref()).is_ok()
    }

    /// Remembers that `password` passed the full check for `login` against `stored`.
    pub fn remember(&self, login: &str, stored: &str, password: &str) {
        let tag = self.tag(login, stored, password);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(login) {
            let ttl = self.ttl;
            entries.retain(|_, e| e.at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                // Still full of live entries: the oldest makes room (a scan, but only when full).
                let oldest = entries.iter().min_by_key(|(_, e)| e.at).map(|(login, _)| login.clone());
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
        }
        if self.capacity > 0 {
            entries.insert(login.to_string(), Entry { tag, at: Instant::now() });
        }
    }

    /// How many logins are remembered (expired ones included until they are noticed).
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";

    #[test]
    fn only_the_remembered_password_and_hash_match() {
        let cache = AuthCache::new(DEFAULT_TTL, 10).expect("key");
        assert!(!cache.granted("a@x.test", HASH, "pw"));
        cache.remember("a@x.test", HASH, "pw");
        assert!(cache.granted("a@x.test", HASH, "pw"));
        assert!(!cache.granted("a@x.test", HASH, "pw2"));
        assert!(!cache.granted("a@x.test", HASH, ""));
        assert!(!cache.granted("b@x.test", HASH, "pw"));
        // The directory's hash changed (a new password was set): the old password no longer matches.
        assert!(!cache.granted("a@x.test", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$bmV3", "pw"));
    }

    #[test]
    fn fields_cannot_run_into_each_other() {
        let cache = AuthCache::new(DEFAULT_TTL, 10).expect("key");
        cache.remember("a", "bc", "d");
        assert!(!cache.granted("a", "b", "cd"));
        assert!(!cache.granted("a", "bcd", ""));
    }

    #[test]
    fn entries_expire() {
        let cache = AuthCache::new(Duration::from_millis(30), 10).expect("key");
        cache.remember("a@x.test", HASH, "pw");
        assert!(cache.granted("a@x.test", HASH, "pw"));
        std::thread::sleep(Duration::from_millis(40));
        assert!(!cache.granted("a@x.test", HASH, "pw"));
        assert!(cache.is_empty());
    }

    #[test]
    fn size_is_bounded_and_the_oldest_goes() {
        let cache = AuthCache::new(DEFAULT_TTL, 3).expect("key");
        for user in ["u1", "u2", "u3", "u4"] {
            cache.remember(user, HASH, "pw");
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(cache.len(), 3);
        assert!(!cache.granted("u1", HASH, "pw"));
        assert!(cache.granted("u4", HASH, "pw"));
        let off = AuthCache::new(DEFAULT_TTL, 0).expect("key");
        off.remember("u1", HASH, "pw");
        assert!(!off.granted("u1", HASH, "pw"));
    }

    #[test]
    fn keys_differ_between_processes() {
        // Two caches stand for two processes: a digest from one means nothing to the other.
        let (a, b) = (AuthCache::new(DEFAULT_TTL, 1).expect("key"), AuthCache::new(DEFAULT_TTL, 1).expect("key"));
        assert_ne!(a.tag("u", HASH, "pw").as_ref(), b.tag("u", HASH, "pw").as_ref());
    }
}
