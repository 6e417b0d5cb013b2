//! A one-line progress display on stderr during an SMTP run, redrawn in place five times a
//! second; nothing at all when stderr is not a terminal, so logs and scripts get the report
//! alone.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What the run has done so far; the workers count, the display reads.
#[derive(Debug, Default)]
pub struct Counters {
    pub accepted: AtomicU64,
    pub failed: AtomicU64,
    pub delivered: AtomicU64,
    /// Sending is over; the run waits for the mailboxes.
    pub delivering: AtomicBool,
}

/// The display, while it runs.
pub struct Progress {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts redrawing for a run of `total` messages (if stderr is a terminal).
    pub fn start(counters: Arc<Counters>, total: u64) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress { stop: None, task: None };
        }
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stopped => break,
                }
                let text = line(&counters, total, start.elapsed());
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r{text}\x1b[K");
                let _ = err.flush();
            }
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        });
        Progress { stop: Some(stop), task: Some(task) }
    }

    /// Stops the display and clears its line.
    pub async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// The progress line for `counters` after `elapsed`.
pub fn line(counters: &Counters, total: u64, elapsed: Duration) -> String {
    let accepted = counters.accepted.load(Ordering::Relaxed);
    let failed = counters.failed.load(Ordering::Relaxed);
    let secs = elapsed.as_secs_f64();
    if counters.delivering.load(Ordering::Relaxed) {
        let delivered = counters.delivered.load(Ordering::Relaxed);
        return format!(
            "waiting for delivery {} {delivered}/{accepted} in mailboxes  {secs:.1} s",
            bar(delivered, accepted)
        );
    }
    let rate = if secs > 0.0 { accepted as f64 / secs } else { 0.0 };
    let done = accepted + failed;
    format!(
        "smtp {} {done}/{total}  {accepted} accepted  {failed} failed  {rate:.0} msg/s  {secs:.1} s",
        bar(done, total)
    )
}

fn bar(done: u64, total: u64) -> String {
    const WIDTH: u64 = 24;
    let filled = (done.min(total) * WIDTH).checked_div(total).unwrap_or(WIDTH);
    format!("[{}{}]", "#".repeat(filled as usize), ".".repeat((WIDTH - filled) as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let c = Counters::default();
        c.accepted.store(500, Ordering::Relaxed);
        c.failed.store(100, Ordering::Relaxed);
        assert_eq!(
            line(&c, 1200, Duration::from_secs(2)),
            "smtp [############............] 600/1200  500 accepted  100 failed  250 msg/s  2.0 s"
        );
        c.delivering.store(true, Ordering::Relaxed);
        c.delivered.store(125, Ordering::Relaxed);
        assert_eq!(
            line(&c, 1200, Duration::from_secs(3)),
            "waiting for delivery [######..................] 125/500 in mailboxes  3.0 s"
        );
        assert_eq!(bar(0, 0), format!("[{}]", "#".repeat(24)));
    }
}
