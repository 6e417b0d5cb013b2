//! What the content filters (rspamd, milters) share: what happens when one cannot be asked,
//! the header fields they leave on mail, and their counters.

use std::time::Duration;

use serde::Deserialize;
use sirms_telemetry::{Counter, Exposition, Histogram};

use super::Verdict;
use super::edit;
use crate::smtp::reply::replies;

/// The score a filter gave, as `X-Spam-Score: 3.20 / 15.00` (score / threshold).
pub const SCORE_HEADER: &str = "X-Spam-Score";
/// The filter's action (rspamd's `no action`, `add header`…), as `X-Spam-Action:`.
pub const ACTION_HEADER: &str = "X-Spam-Action";
/// `X-Spam: Yes` on mail a filter marked as spam and the node filed into Junk.
pub const SPAM_HEADER: &str = "X-Spam";
/// On mail delivered without a scan because a filter could not be asked: which and why.
pub const UNSCANNED_HEADER: &str = "X-Spam-Unscanned";

/// The fields only the node writes.
const OURS: [&str; 4] = [SPAM_HEADER, SCORE_HEADER, ACTION_HEADER, UNSCANNED_HEADER];

/// Removes the sender's own copies of the fields only the node writes, so that neither a
/// reader nor a Sieve script takes a forged `X-Spam-Score: 0` for the node's: the message
/// without them goes to `verdict.rewritten` (unchanged when there are none). The node's own
/// are in `verdict.headers`, which this does not touch.
pub fn strip_forged(message: &[u8], verdict: &mut Verdict) {
    let current = verdict.rewritten.as_deref().unwrap_or(message);
    let mut edit = edit::Edit::parse(current);
    let forged = edit.fields().any(|(name, _)| OURS.iter().any(|o| name.eq_ignore_ascii_case(o.as_bytes())));
    if !forged {
        return;
    }
    for name in OURS {
        edit.remove(name, 0);
    }
    verdict.rewritten = Some(edit.to_bytes());
}

/// What to do with mail when a filter is down, times out or answers garbage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Deliver it, marked with [`UNSCANNED_HEADER`]: a filter outage does not stop mail.
    #[default]
    Accept,
    /// Refuse it with a 451 so that the sender retries when the filter is back.
    Defer,
}

impl OnFailure {
    /// Records that `filter` could not scan the message, by this policy; never a silent pass.
    pub fn apply(self, filter: Filter, why: &str, verdict: &mut Verdict) {
        match self {
            OnFailure::Accept => {
                let value = format!("{} {}", filter.name(), why);
                verdict.headers.push_str(&String::from_utf8_lossy(&edit::field(UNSCANNED_HEADER, &value)));
            }
            OnFailure::Defer => verdict.refuse = Some(replies::filter_unavailable()),
        }
    }
}

/// Which kind of filter a count is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Rspamd,
    Milter,
}

impl Filter {
    fn name(self) -> &'static str {
        match self {
            Filter::Rspamd => "rspamd",
            Filter::Milter => "milter",
        }
    }
}

/// How one scan ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered as clean.
    Clean,
    /// Delivered marked as spam (Junk, a rewritten subject, a quarantine).
    Marked,
    /// Refused, for good or for now.
    Refused,
    /// The filter could not be asked; its `on_failure` decided.
    Failed,
}

const OUTCOMES: [(Outcome, &str); 4] = [
    (Outcome::Clean, "clean"),
    (Outcome::Marked, "marked"),
    (Outcome::Refused, "refused"),
    (Outcome::Failed, "failed"),
];

/// One filter kind's counts.
#[derive(Debug)]
struct Counts {
    scan: Histogram,
    outcomes: [Counter; OUTCOMES.len()],
}

impl Default for Counts {
    fn default() -> Self {
        Counts { scan: Histogram::latency(), outcomes: Default::default() }
    }
}

/// Scan times and outcomes of the content filters, for the node's `/metrics`.
#[derive(Debug, Default)]
pub struct FilterMetrics {
    rspamd: Counts,
    milter: Counts,
}

impl FilterMetrics {
    /// Counts one scan by `filter` that took `took` and ended as `outcome`.
    pub fn record(&self, filter: Filter, took: Duration, outcome: Outcome) {
        let counts = self.counts(filter);
        counts.scan.observe(took);
        if let Some(i) = OUTCOMES.iter().position(|(o, _)| *o == outcome) {
            counts.outcomes[i].inc();
        }
    }

    /// How many scans by `filter` ended as `outcome`.
    pub fn count(&self, filter: Filter, outcome: Outcome) -> u64 {
        OUTCOMES.iter().position(|(o, _)| *o == outcome).map_or(0, |i| self.counts(filter).outcomes[i].get())
    }

    fn counts(&self, filter: Filter) -> &Counts {
        match filter {
            Filter::Rspamd => &self.rspamd,
            Filter::Milter => &self.milter,
        }
    }

    /// Writes the filter families into `out`.
    pub fn render(&self, out: &mut Exposition) {
        let filters = [Filter::Rspamd, Filter::Milter];
        let labels: Vec<_> = filters.iter().map(|f| [("filter", f.name())]).collect();
        let scans: Vec<_> = labels.iter().zip(filters).map(|(l, f)| (&l[..], &self.counts(f).scan)).collect();
        out.histogram("sirms_filter_scan_seconds", "Time spent asking content filters, by filter.", &scans);
        let labels: Vec<_> = filters
            .iter()
            .flat_map(|f| OUTCOMES.iter().map(move |(o, name)| ([("filter", f.name()), ("result", *name)], *f, *o)))
            .collect();
        let samples: Vec<_> = labels.iter().map(|(l, f, o)| (&l[..], self.count(*f, *o))).collect();
        out.counter("sirms_filter_results_total", "Content filter scans, by filter and how they ended.", &samples);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_senders_own_scan_fields_are_removed_and_ours_kept() {
        let forged = b"X-Spam-Score: 0.00 / 15.00\r\nFrom: a@x.test\r\nx-spam: No\r\n\tfolded\r\nSubject: s\r\n\r\nX-Spam: in the body\r\n";
        let mut verdict = Verdict { headers: "X-Spam-Score: 9.00 / 15.00\r\n".into(), ..Verdict::default() };
        strip_forged(forged, &mut verdict);
        assert_eq!(
            verdict.rewritten.as_deref(),
            Some(&b"From: a@x.test\r\nSubject: s\r\n\r\nX-Spam: in the body\r\n"[..]),
            "every forged field, folded lines too, and never the body"
        );
        assert_eq!(verdict.headers, "X-Spam-Score: 9.00 / 15.00\r\n", "ours kept");
        let mut clean = Verdict::default();
        strip_forged(b"From: a@x.test\r\n\r\nbody\r\n", &mut clean);
        assert_eq!(clean.rewritten, None, "nothing to remove: the message stays as received");
    }

    #[test]
    fn failure_policy_marks_or_defers() {
        let mut v = Verdict::default();
        OnFailure::Accept.apply(Filter::Rspamd, "timed out", &mut v);
        assert_eq!(v.headers, "X-Spam-Unscanned: rspamd timed out\r\n");
        assert!(v.refuse.is_none());
        let mut v = Verdict::default();
        OnFailure::Defer.apply(Filter::Milter, "refused", &mut v);
        assert_eq!(v.refuse.map(|r| r.code), Some(451));
    }

    #[test]
    fn renders_counts() {
        let m = FilterMetrics::default();
        m.record(Filter::Rspamd, Duration::from_millis(3), Outcome::Refused);
        let mut page = Exposition::new();
        m.render(&mut page);
        let page = page.finish();
        assert!(page.contains("sirms_filter_results_total{filter=\"rspamd\",result=\"refused\"} 1"), "{page}");
        assert!(page.contains("sirms_filter_scan_seconds_count{filter=\"rspamd\"} 1"), "{page}");
    }
}
