//! Retries queued local deliveries until their home store takes them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use super::Spool;
use crate::delivery::Delivery;

/// How often the queue is looked at.
const SCAN_INTERVAL: Duration = Duration::from_secs(2);
/// Longest pause between two attempts for one message.
const MAX_BACKOFF_SECS: i64 = 15 * 60;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// One pass over the queue: every message due gets its local recipients tried again.
pub async fn run_once(spool: &Arc<Spool>, delivery: &Delivery) {
    let s = spool.clone();
    let Ok(Ok(queued)) = tokio::task::spawn_blocking(move || s.list()).await else { return };
    for mut env in queued.into_iter().filter(|e| !e.local.is_empty() && e.next_attempt <= now()) {
        let s = spool.clone();
        let id = env.id.clone();
        let Ok(Ok(message)) = tokio::task::spawn_blocking(move || s.message(&id)).await else { continue };
        let results = delivery.deliver_each(&env.local, Bytes::from(message)).await;
        let before = env.local.len();
        env.local = results.into_iter().filter(|(_, r)| r.is_err()).map(|(u, _)| u).collect();
        env.attempts += 1;
        env.next_attempt = now() + (5i64 << env.attempts.min(12)).min(MAX_BACKOFF_SECS);
        tracing::info!(id = %env.id, delivered = before - env.local.len(), left = env.local.len(), "queue retry");
        let s = spool.clone();
        let done = env.is_done();
        let _ = tokio::task::spawn_blocking(move || if done { s.remove(&env.id) } else { s.update(&env) }).await;
    }
}

/// Runs the retry loop until `shutdown` turns true.
pub async fn run(spool: Arc<Spool>, delivery: Delivery, mut shutdown: watch::Receiver<bool>) {
    loop {
        run_once(&spool, &delivery).await;
        tokio::select! {
            _ = tokio::time::sleep(SCAN_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
    }
}
