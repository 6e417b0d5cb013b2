//! SPF's limit on void lookups (RFC 7208 §4.6.4): a record whose terms make more than two
//! DNS queries that find nothing (NXDOMAIN, or an empty answer) is a `permerror`. mail-auth
//! enforces the ten-lookup limit but not this one, so one SPF check runs with per-check
//! caches that watch its lookups: every query mail-auth makes is first a cache miss, and
//! every one that found records is then inserted; a miss never followed by an insert found
//! nothing. A lookup that failed outright (timeout, SERVFAIL) ends the check as `temperror`
//! before this count matters.
//!
//! Counting after the check is exact: evaluation stops at the first match, so every lookup
//! it made came before its result, and a record that made three void lookups would have
//! stopped at the third with a `permerror` under a limit enforced as it ran.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Arc, Mutex};

use mail_auth::spf::verify::SpfParameters;
use mail_auth::{MessageAuthenticator, Parameters, ResolverCache, SpfOutput, SpfResult};

/// Most void lookups one SPF check may make (RFC 7208 §4.6.4 recommends two).
pub const MAX_VOID_LOOKUPS: usize = 2;

/// Runs one SPF check with the void-lookup limit on top of mail-auth's own.
pub async fn check_spf(resolver: &MessageAuthenticator, params: SpfParameters<'_>) -> SpfOutput {
    let lookups = Lookups::default();
    let (txt, mx, ipv4, ipv6, ptr) =
        (lookups.cache(), lookups.cache(), lookups.cache(), lookups.cache(), lookups.cache());
    let params = Parameters::new(params)
        .with_txt_cache(&txt)
        .with_mx_cache(&mx)
        .with_ipv4_cache(&ipv4)
        .with_ipv6_cache(&ipv6)
        .with_ptr_cache(&ptr);
    let output = resolver.verify_spf(params).await;
    limit(output, lookups.voids())
}

/// `output`, or a `permerror` in its place when the check made too many void lookups.
fn limit(output: SpfOutput, voids: usize) -> SpfOutput {
    let decided = matches!(output.result(), SpfResult::TempError | SpfResult::PermError | SpfResult::None);
    if voids > MAX_VOID_LOOKUPS && !decided {
        tracing::info!(domain = %output.domain(), voids, "SPF record made too many void lookups: permerror");
        return SpfOutput::new(output.domain().to_string()).with_result(SpfResult::PermError);
    }
    output
}

/// What one check asked: per query (its name's hash), whether it has found records yet.
#[derive(Clone, Default)]
struct Lookups {
    hasher: RandomState,
    asked: Arc<Mutex<HashMap<u64, Asked>>>,
}

/// One name's queries within a check.
#[derive(Default, Clone, Copy)]
struct Asked {
    misses: usize,
    found: bool,
}

impl Lookups {
    /// A cache for one record type that records into these lookups.
    fn cache<V>(&self) -> Watching<V> {
        Watching { lookups: self.clone(), held: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Asked>> {
        self.asked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The queries that found nothing.
    fn voids(&self) -> usize {
        self.lock().values().filter(|a| !a.found).map(|a| a.misses).sum()
    }
}

/// A per-check cache that also answers repeated questions within the check, as a cache
/// should (a name asked twice costs one query).
struct Watching<V> {
    lookups: Lookups,
    held: Mutex<HashMap<u64, V>>,
}

impl<K: Hash + Eq, V: Clone> ResolverCache<K, V> for Watching<V> {
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // `K: Borrow<Q>` promises equal hashes for a key and its borrowed form, so a query
        // is known by its hash whichever form mail-auth holds it in.
        let key = self.lookups.hasher.hash_one(name);
        if let Some(value) = self.held.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Some(value.clone());
        }
        self.lookups.lock().entry(key).or_default().misses += 1;
        None
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let key = self.lookups.hasher.hash_one(name);
        self.held.lock().unwrap_or_else(|p| p.into_inner()).remove(&key)
    }

    fn insert(&self, key: K, value: V, _valid_until: std::time::Instant) {
        let key = self.lookups.hasher.hash_one(key.borrow());
        self.lookups.lock().entry(key).or_default().found = true;
        self.held.lock().unwrap_or_else(|p| p.into_inner()).insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched() -> (Lookups, Watching<u32>) {
        let lookups = Lookups::default();
        let cache = lookups.cache();
        (lookups, cache)
    }

    #[test]
    fn a_miss_never_answered_is_void_and_an_answered_one_is_not() {
        let (lookups, cache) = watched();
        assert_eq!(ResolverCache::<Box<str>, u32>::get::<str>(&cache, "a.test."), None);
        ResolverCache::<Box<str>, u32>::insert(&cache, "a.test.".into(), 1, std::time::Instant::now());
        assert_eq!(ResolverCache::<Box<str>, u32>::get::<str>(&cache, "nx1.test."), None);
        assert_eq!(ResolverCache::<Box<str>, u32>::get::<str>(&cache, "nx2.test."), None);
        assert_eq!(lookups.voids(), 2);
        // Asked again: from the cache, no second query.
        assert_eq!(ResolverCache::<Box<str>, u32>::get::<str>(&cache, "a.test."), Some(1));
        assert_eq!(lookups.voids(), 2);
        // The same empty name asked by two terms is two void lookups.
        assert_eq!(ResolverCache::<Box<str>, u32>::get::<str>(&cache, "nx1.test."), None);
        assert_eq!(lookups.voids(), 3);
    }

    #[test]
    fn past_the_limit_a_pass_becomes_permerror_but_a_temperror_stays() {
        let pass = SpfOutput::new("d.test".into()).with_result(SpfResult::Pass);
        assert_eq!(limit(pass.clone(), 2).result(), SpfResult::Pass);
        assert_eq!(limit(pass, 3).result(), SpfResult::PermError);
        let temp = SpfOutput::new("d.test".into()).with_result(SpfResult::TempError);
        assert_eq!(limit(temp, 5).result(), SpfResult::TempError);
    }
}
