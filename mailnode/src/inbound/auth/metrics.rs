//! What sender authentication counts: DMARC results and what the node did about them, so
//! that a change in either (a resolver gone bad, a wave of spoofing) shows on a graph.

use sirms_telemetry::{Counter, Exposition, Render};

use super::policy::{Action, Dmarc};

const RESULTS: [(Dmarc, &str); 5] = [
    (Dmarc::Pass, "pass"),
    (Dmarc::Fail, "fail"),
    (Dmarc::None, "none"),
    (Dmarc::TempError, "temperror"),
    (Dmarc::PermError, "permerror"),
];
const ACTIONS: [(Action, &str); 4] =
    [(Action::Deliver, "deliver"), (Action::Junk, "junk"), (Action::Reject, "reject"), (Action::Defer, "defer")];

/// The counters, shared by the stage and the node's `/metrics`.
#[derive(Debug, Default)]
pub struct AuthMetrics {
    results: [Counter; RESULTS.len()],
    actions: [Counter; ACTIONS.len()],
}

impl AuthMetrics {
    /// Counts one checked message.
    pub(super) fn count(&self, dmarc: Dmarc, action: Action) {
        if let Some(i) = RESULTS.iter().position(|(r, _)| *r == dmarc) {
            self.results[i].inc();
        }
        if let Some(i) = ACTIONS.iter().position(|(a, _)| *a == action) {
            self.actions[i].inc();
        }
    }
}

impl Render for AuthMetrics {
    fn render(&self, out: &mut Exposition) {
        let labels: Vec<_> = RESULTS.iter().map(|(_, name)| [("result", *name)]).collect();
        let samples: Vec<_> = labels.iter().zip(&self.results).map(|(l, c)| (&l[..], c.get())).collect();
        out.counter("sirms_inbound_dmarc_total", "Messages from the Internet checked, by DMARC result.", &samples);
        let labels: Vec<_> = ACTIONS.iter().map(|(_, name)| [("action", *name)]).collect();
        let samples: Vec<_> = labels.iter().zip(&self.actions).map(|(l, c)| (&l[..], c.get())).collect();
        out.counter(
            "sirms_inbound_auth_actions_total",
            "What sender authentication did with checked messages: deliver, junk, reject, defer.",
            &samples,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_renders() {
        let metrics = AuthMetrics::default();
        metrics.count(Dmarc::Fail, Action::Reject);
        metrics.count(Dmarc::Pass, Action::Deliver);
        metrics.count(Dmarc::Fail, Action::Reject);
        let mut page = Exposition::new();
        metrics.render(&mut page);
        let page = page.finish();
        assert!(page.contains("sirms_inbound_dmarc_total{result=\"fail\"} 2"), "{page}");
        assert!(page.contains("sirms_inbound_dmarc_total{result=\"temperror\"} 0"), "{page}");
        assert!(page.contains("sirms_inbound_auth_actions_total{action=\"reject\"} 2"), "{page}");
        assert!(page.contains("sirms_inbound_auth_actions_total{action=\"deliver\"} 1"), "{page}");
    }
}
