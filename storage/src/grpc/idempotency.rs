//! Appends by idempotency key, on the serving side: a caller that retries an append whose
//! answer it never got (a deadline passed, the connection broke after the store committed)
//! gets the first attempt's result instead of a second copy of the message. A retry that
//! arrives while the first attempt still runs waits for it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::message::AppendResult;

/// How long a key is remembered: callers retry within seconds.
const KEEP_FOR: Duration = Duration::from_secs(600);
/// Most keys remembered; the oldest go first beyond it.
const MAX_KEYS: usize = 20_000;
/// Longest key taken (callers send 32 hex digits).
pub const MAX_KEY_LEN: usize = 128;

/// The test-only switch (debug builds): `SIRMS_TEST_LOSE_APPEND_ANSWERS=N` makes the first N
/// answers to appends that stored their message (now, or under their key before) come as if
/// the connection broke right after the commit (an untagged `UNAVAILABLE`), so tests can show
/// that the caller's retries under the same key store the message once. A release build has
/// no such switch.
#[cfg(debug_assertions)]
pub fn lose_answer() -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LEFT: std::sync::OnceLock<AtomicU64> = std::sync::OnceLock::new();
    let left = LEFT.get_or_init(|| {
        let n = std::env::var("SIRMS_TEST_LOSE_APPEND_ANSWERS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        if n > 0 {
            tracing::warn!(n, "SIRMS_TEST_LOSE_APPEND_ANSWERS: answers to stored appends are dropped");
        }
        AtomicU64::new(n)
    });
    left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn lose_answer() -> bool {
    false
}

/// One key's outcome: `None` until an attempt succeeds.
pub type Slot = Arc<tokio::sync::Mutex<Option<AppendResult>>>;

/// Keys of recent appends and their results.
pub struct RecentAppends {
    inner: Mutex<Keys>,
    /// When this process began remembering: keys from before it are only on disk.
    started: Instant,
}

impl Default for RecentAppends {
    fn default() -> Self {
        RecentAppends { inner: Mutex::default(), started: Instant::now() }
    }
}

#[derive(Default)]
struct Keys {
    slots: HashMap<String, Slot>,
    /// Keys in the order they came, with when.
    order: VecDeque<(Instant, String)>,
}

impl RecentAppends {
    /// Whether a key this process has no slot for may still be a retry of an append made
    /// before it started (a restart): true until it has been up as long as keys are kept.
    pub fn may_predate_start(&self) -> bool {
        self.started.elapsed() < KEEP_FOR
    }

    /// The slot of `user`'s append `key`: lock it, and a result in it is the append's.
    pub fn slot(&self, user: &str, key: &str) -> Slot {
        let id = format!("{user}\0{key}");
        let mut keys = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        while let Some((at, _)) = keys.order.front() {
            if now.duration_since(*at) < KEEP_FOR && keys.order.len() < MAX_KEYS {
                break;
            }
            if let Some((_, old)) = keys.order.pop_front() {
                keys.slots.remove(&old);
            }
        }
        if let Some(slot) = keys.slots.get(&id) {
            return slot.clone();
        }
        let slot = Slot::default();
        keys.slots.insert(id.clone(), slot.clone());
        keys.order.push_back((now, id));
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_per_user_and_the_oldest_keys_go_first() {
        let recent = RecentAppends::default();
        let a = recent.slot("alice", "k1");
        assert!(Arc::ptr_eq(&a, &recent.slot("alice", "k1")), "the same key, the same slot");
        assert!(!Arc::ptr_eq(&a, &recent.slot("bob", "k1")), "another user's key is another slot");
        for i in 0..MAX_KEYS + 10 {
            recent.slot("carol", &i.to_string());
        }
        let keys = recent.inner.lock().unwrap();
        assert!(keys.slots.len() <= MAX_KEYS && keys.order.len() == keys.slots.len());
        assert!(!keys.slots.contains_key("alice\0k1"), "the oldest key was dropped");
    }
}
