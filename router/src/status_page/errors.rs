//! The router's recent warnings and errors, for the status page: a [`tracing`] layer keeps the
//! last [`CAPACITY`] WARN and ERROR events in a ring.
//!
//! Bounded both ways, because any client or node can make the router warn (a refused
//! connection, a node going down): at most [`CAPACITY`] events, each at most [`MAX_TEXT`]
//! bytes, the oldest dropped first. Recording takes one short lock per warning; nothing is
//! done for events below WARN (the layer's filter drops them before [`Recorder`] sees them).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Events kept.
pub const CAPACITY: usize = 50;
/// Longest text kept of one event (message and fields), in bytes.
pub const MAX_TEXT: usize = 400;

/// One warning or error as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorEvent {
    /// When it was logged (Unix seconds).
    pub at_unix: u64,
    /// `WARN` or `ERROR`.
    pub level: Level,
    /// The module that logged it (`sirms_router::health`).
    pub target: String,
    /// The message, then its fields as `name=value`.
    pub text: String,
}

/// A bounded ring of events, newest last.
#[derive(Debug)]
pub struct RecentErrors {
    ring: Mutex<VecDeque<ErrorEvent>>,
    capacity: usize,
}

impl RecentErrors {
    /// An empty ring that keeps `capacity` events.
    pub fn new(capacity: usize) -> RecentErrors {
        RecentErrors { ring: Mutex::new(VecDeque::with_capacity(capacity)), capacity }
    }

    /// The process's ring, which [`Recorder`] fills.
    pub fn global() -> &'static RecentErrors {
        static GLOBAL: OnceLock<RecentErrors> = OnceLock::new();
        GLOBAL.get_or_init(|| RecentErrors::new(CAPACITY))
    }

    /// Adds `event`, dropping the oldest when full.
    pub fn push(&self, event: ErrorEvent) {
        // A panic elsewhere while holding the lock leaves a ring that is still valid.
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        while ring.len() >= self.capacity.max(1) {
            ring.pop_front();
        }
        ring.push_back(event);
    }

    /// The events kept, newest first.
    pub fn newest_first(&self) -> Vec<ErrorEvent> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter().rev().cloned().collect()
    }
}

/// The layer that records WARN and ERROR events into [`RecentErrors::global`]; install it
/// with a `LevelFilter::WARN` filter so nothing quieter reaches it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Recorder;

impl<S: Subscriber> Layer<S> for Recorder {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        // Also checked here, so the ring holds only what the page promises even unfiltered.
        if level > Level::WARN {
            return;
        }
        let mut text = Text::default();
        event.record(&mut text);
        let at_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        RecentErrors::global().push(ErrorEvent {
            at_unix,
            level,
            target: event.metadata().target().to_string(),
            text: text.0,
        });
    }
}

/// An event's message and fields as one line, cut at [`MAX_TEXT`].
#[derive(Default)]
struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.0.len() >= MAX_TEXT {
            return;
        }
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        let _ = if field.name() == "message" {
            write!(self.0, "{value:?}")
        } else {
            write!(self.0, "{}={value:?}", field.name())
        };
        if self.0.len() > MAX_TEXT {
            let mut cut = MAX_TEXT;
            while !self.0.is_char_boundary(cut) {
                cut -= 1;
            }
            self.0.truncate(cut);
            self.0.push('…');
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        // Without quotes, as the log line shows it.
        self.record_debug(field, &format_args!("{value}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u64) -> ErrorEvent {
        ErrorEvent { at_unix: n, level: Level::WARN, target: "t".into(), text: format!("e{n}") }
    }

    #[test]
    fn keeps_the_newest_within_capacity() {
        let ring = RecentErrors::new(3);
        assert!(ring.newest_first().is_empty());
        for n in 0..5 {
            ring.push(event(n));
        }
        let kept: Vec<u64> = ring.newest_first().iter().map(|e| e.at_unix).collect();
        assert_eq!(kept, [4, 3, 2]);
    }

    #[test]
    fn the_layer_records_warnings_and_errors_only() {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(Recorder);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not kept");
            tracing::warn!(node = "node1", service = "imap", "status-page-test: service is down");
            tracing::error!(error = %"x".repeat(2 * MAX_TEXT), "status-page-test: long");
        });
        // The ring is the process's: other tests may have added to it.
        let kept = RecentErrors::global().newest_first();
        let down = kept.iter().find(|e| e.text.contains("status-page-test: service is down")).expect("the warning");
        assert_eq!(down.text, "status-page-test: service is down node=node1 service=imap");
        assert_eq!(down.level, Level::WARN);
        let long = kept.iter().find(|e| e.text.starts_with("status-page-test: long")).expect("the error");
        assert_eq!(long.level, Level::ERROR);
        assert!(long.text.len() <= MAX_TEXT + '…'.len_utf8(), "{}", long.text.len());
        assert!(!kept.iter().any(|e| e.text.contains("not kept")));
    }
}
