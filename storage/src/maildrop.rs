//! POP3 maildrop locks (RFC 1939 §8: one session per maildrop), kept by the store that holds
//! the mailbox, so that two sessions on two nodes cannot both hold one user's maildrop.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// A held maildrop lock; released when dropped, however the session ends.
pub struct MaildropLock {
    _held: Box<dyn Send>,
}

impl MaildropLock {
    /// A lock that lives as long as `held` does (whatever releases it on drop).
    pub fn new(held: impl Send + 'static) -> MaildropLock {
        MaildropLock { _held: Box::new(held) }
    }
}

impl std::fmt::Debug for MaildropLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MaildropLock")
    }
}

/// The maildrops locked in one store.
#[derive(Debug, Default, Clone)]
pub struct MaildropLocks {
    held: Arc<Mutex<HashSet<String>>>,
}

/// One user's entry in [`MaildropLocks`], removed on drop.
struct Entry {
    held: Arc<Mutex<HashSet<String>>>,
    user: String,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.user);
    }
}

impl MaildropLocks {
    /// Locks `user`'s maildrop; `None` if it is locked already.
    pub fn try_lock(&self, user: &str) -> Option<MaildropLock> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.insert(user.to_string())
            .then(|| MaildropLock::new(Entry { held: self.held.clone(), user: user.to_string() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_per_maildrop_until_it_lets_go() {
        let locks = MaildropLocks::default();
        let alice = locks.try_lock("alice").expect("free");
        assert!(locks.try_lock("alice").is_none(), "held");
        let _bob = locks.try_lock("bob").expect("another user's is free");
        drop(alice);
        assert!(locks.try_lock("alice").is_some(), "released on drop");
    }
}
