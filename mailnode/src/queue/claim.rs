//! One writer per queue entry. The queue runner delivering a message and `sirms ctl queue`
//! (flush, remove) would otherwise both read an envelope, change it and write it back: the
//! last writer wins, and recipients one of them had done come back (duplicates). Whoever
//! changes an entry first claims it; a claimed entry is skipped (the runner, flush) or
//! refused as busy (remove) by everyone else until the claim is dropped.
//!
//! Claims are in memory: the spool's lock file ([`super::Spool::open`]) keeps every other
//! process out of the spool, so this process's writers are the only ones.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

/// The entries claimed now.
#[derive(Debug, Default)]
pub struct Claims(Arc<Mutex<HashSet<String>>>);

/// A claim on one entry, given up when dropped.
#[derive(Debug)]
pub struct Claim {
    claims: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl Claims {
    /// Claims entry `id`; `None` if someone holds it.
    pub fn claim(&self, id: &str) -> Option<Claim> {
        // A panic while the set was held leaves it consistent (insert and remove are whole).
        let mut held = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        held.insert(id.to_string()).then(|| Claim { claims: self.0.clone(), id: id.to_string() })
    }
}

impl Claim {
    /// The claimed entry.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.claims.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time() {
        let claims = Claims::default();
        let first = claims.claim("a").unwrap();
        assert!(claims.claim("a").is_none());
        let other = claims.claim("b").unwrap();
        drop(first);
        assert_eq!(claims.claim("a").unwrap().id(), "a");
        drop(other);
    }
}
