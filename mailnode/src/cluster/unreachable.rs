//! Peer nodes that stopped answering lately, shared by everything a node sends to its peers
//! (replica writes, spool copies): once one call found a peer dead, the others do not each
//! wait out a connection attempt (3 to 5 s) or an unanswered call before giving up on it. For
//! [`HOLD`] after a failure callers skip the peer, and one call per [`HOLD`] tries it again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a node that failed is not waited for.
pub const HOLD: Duration = Duration::from_secs(3);

/// Nodes that failed lately, and when.
#[derive(Debug, Default)]
pub struct Unreachable {
    failed: Mutex<HashMap<String, Instant>>,
}

impl Unreachable {
    /// Whether node `id` failed less than [`HOLD`] ago.
    pub fn recently_failed(&self, id: &str) -> bool {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).get(id).is_some_and(|at| at.elapsed() < HOLD)
    }

    /// Why a call should not wait for node `id` now; `None`: try it. Once [`HOLD`] has passed
    /// the caller that gets `None` is the one that tries: the others go on skipping until it
    /// reports with [`Unreachable::note`].
    pub fn skip(&self, id: &str) -> Option<String> {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        let at = failed.get_mut(id)?;
        if at.elapsed() < HOLD {
            return Some(format!("node {id} did not answer lately; tried again every {HOLD:?}"));
        }
        *at = Instant::now();
        None
    }

    /// Marks node `id` as failed now.
    pub fn failed(&self, id: &str) {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_string(), Instant::now());
    }

    /// Notes what a call to node `id` came to: an unanswered call marks it, any answer (an
    /// error included) clears it.
    pub fn note(&self, id: &str, answered: bool) {
        if answered {
            self.failed.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        } else {
            self.failed(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_node_is_skipped_until_the_hold_passes_then_tried_by_one_caller() {
        let u = Unreachable::default();
        assert!(u.skip("n2").is_none(), "a node never failed is tried");
        u.note("n2", false);
        assert!(u.recently_failed("n2"));
        assert!(u.skip("n2").is_some());
        // As if the failure were older than HOLD.
        u.failed.lock().unwrap().insert("n2".into(), Instant::now() - HOLD);
        assert!(u.skip("n2").is_none(), "one caller tries again");
        assert!(u.skip("n2").is_some(), "the others skip while it does");
        u.note("n2", true);
        assert!(u.skip("n2").is_none() && !u.recently_failed("n2"));
    }
}
