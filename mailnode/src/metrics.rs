//! What a mail node counts, for its Prometheus endpoint and its heartbeats to the router.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::UNIX_EPOCH;

use sirms_storage::StoreMetrics;
use sirms_telemetry::{Counter, Exposition, Gauge, Render};

use crate::inbound::auth::AuthMetrics;
use crate::inbound::filter::FilterMetrics;
use crate::outbound::mta_sts::TlsPolicyMetrics;
use crate::smtp::rate::SendRate;
use sirms_proto::public_tls::Certificates;

/// The node's listeners, in the order their counters are kept.
pub const LISTENERS: [&str; 7] = ["smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s"];

/// The protocol families whose open sessions are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Smtp,
    Imap,
    Pop3,
}

impl Protocol {
    /// The family a listener belongs to.
    pub fn of(listener: &str) -> Protocol {
        if listener.starts_with("imap") {
            Protocol::Imap
        } else if listener.starts_with("pop3") {
            Protocol::Pop3
        } else {
            Protocol::Smtp
        }
    }

    fn name(self) -> &'static str {
        match self {
            Protocol::Smtp => "smtp",
            Protocol::Imap => "imap",
            Protocol::Pop3 => "pop3",
        }
    }
}

/// Per-listener connection counts.
#[derive(Debug, Default)]
struct ListenerCounts {
    accepted: Counter,
    /// Turned away by the connection limits (total or per client IP).
    refused: Counter,
}

/// Every counter of one mail node.
pub struct NodeMetrics {
    listeners: [ListenerCounts; LISTENERS.len()],
    sessions: [Gauge; 3],
    /// Messages taken by SMTP (one per 250 after DATA or BDAT LAST).
    pub messages_received: Counter,
    /// Local deliveries (one per recipient) now durably in a mailbox.
    pub local_delivered: Counter,
    /// Local deliveries that failed and stay queued for a retry.
    pub local_deferred: Counter,
    /// Remote recipients a foreign server accepted.
    pub outbound_delivered: Counter,
    /// Remote recipients that failed for now and stay queued.
    pub outbound_deferred: Counter,
    /// Recipients given up on (permanent failure or expiry), bounced to the sender.
    pub bounced: Counter,
    /// Wrong passwords and unknown users, over SMTP, IMAP and POP3.
    pub auth_denied: Counter,
    /// Logins refused by failed-login throttling without a check.
    pub auth_throttled: Counter,
    /// Spool entries accepted while no other node took a copy (in a cluster).
    pub spool_single_copy: Counter,
    /// Clients refused at connect because a DNS blocklist names them.
    pub dnsbl_refused: Counter,
    /// Recipients greylisting deferred (`451`), passed, and accepted unchecked because no
    /// router answered.
    pub greylist_deferred: Counter,
    pub greylist_passed: Counter,
    pub greylist_failed_open: Counter,
    /// Queue envelopes that cannot be read at the last scan: their messages are stuck.
    pub queue_unreadable: Gauge,
    /// The store behind this node's protocols.
    pub store: Arc<StoreMetrics>,
    /// The content filters' scan times and outcomes.
    pub filters: Arc<FilterMetrics>,
    /// Authenticated senders' recipient counts, with the refusals they caused.
    pub send_rate: Arc<SendRate>,
    /// Sender authentication's DMARC results and actions on mail from the Internet.
    pub inbound_auth: Arc<AuthMetrics>,
    /// Outbound MTA-STS outcomes.
    pub tls_policy: Arc<TlsPolicyMetrics>,
    /// The spool's envelope directory: its entry count is the queue length.
    spool_envelopes: PathBuf,
    /// The TLS certificates, once the listeners have them: their expiry is reported.
    certificates: OnceLock<Arc<Certificates>>,
}

impl NodeMetrics {
    /// Metrics of a node whose spool keeps envelopes in `spool_envelopes`.
    pub fn new(spool_envelopes: PathBuf) -> NodeMetrics {
        NodeMetrics {
            listeners: Default::default(),
            sessions: Default::default(),
            messages_received: Counter::default(),
            local_delivered: Counter::default(),
            local_deferred: Counter::default(),
            outbound_delivered: Counter::default(),
            outbound_deferred: Counter::default(),
            bounced: Counter::default(),
            auth_denied: Counter::default(),
            auth_throttled: Counter::default(),
            spool_single_copy: Counter::default(),
            dnsbl_refused: Counter::default(),
            greylist_deferred: Counter::default(),
            greylist_passed: Counter::default(),
            greylist_failed_open: Counter::default(),
            queue_unreadable: Gauge::default(),
            store: Arc::default(),
            filters: Arc::default(),
            send_rate: Arc::new(SendRate::unlimited()),
            inbound_auth: Arc::default(),
            tls_policy: Arc::default(),
            spool_envelopes,
            certificates: OnceLock::new(),
        }
    }

    /// Reports the expiry of `certificates` from now on.
    pub fn watch_certificates(&self, certificates: Arc<Certificates>) {
        let _ = self.certificates.set(certificates);
    }

    /// When the first of the node's TLS certificates expires (Unix seconds; 0: not known).
    pub fn tls_first_expiry(&self) -> u64 {
        self.certificates.get().map_or(0, |c| c.first_expiry())
    }

    /// Each TLS certificate the node serves and when it expires (Unix seconds; 0: not known).
    pub fn tls_expiries(&self) -> Vec<(String, u64)> {
        let unix = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let Some(certificates) = self.certificates.get() else { return Vec::new() };
        certificates.expiries().into_iter().map(|(name, at)| (name, at.map_or(0, unix))).collect()
    }

    /// The same, counting `send_rate`'s refusals.
    pub fn with_send_rate(mut self, send_rate: SendRate) -> NodeMetrics {
        self.send_rate = Arc::new(send_rate);
        self
    }

    fn listener(&self, name: &str) -> Option<&ListenerCounts> {
        LISTENERS.iter().position(|l| *l == name).map(|i| &self.listeners[i])
    }

    /// Counts a connection a listener accepted.
    pub fn connection(&self, listener: &str) {
        if let Some(l) = self.listener(listener) {
            l.accepted.inc();
        }
    }

    /// Counts a connection a listener turned away at a limit.
    pub fn refused(&self, listener: &str) {
        if let Some(l) = self.listener(listener) {
            l.refused.inc();
        }
    }

    /// The open-session gauge of a protocol family.
    pub fn sessions(&self, protocol: Protocol) -> &Gauge {
        &self.sessions[protocol as usize]
    }

    /// Messages waiting in the queue (a directory listing: call off the async threads).
    /// Writers' temporary files are not messages.
    pub fn queue_length(&self) -> u64 {
        std::fs::read_dir(&self.spool_envelopes)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| !sirms_storage::durable::is_temporary(&e.file_name().to_string_lossy()))
                    .count() as u64
            })
            .unwrap_or(0)
    }
}

impl Render for NodeMetrics {
    fn render(&self, out: &mut Exposition) {
        let by_listener = |pick: fn(&ListenerCounts) -> u64| -> Vec<_> {
            LISTENERS.iter().zip(&self.listeners).map(|(name, l)| ([("listener", *name)], pick(l))).collect()
        };
        let accepted = by_listener(|l| l.accepted.get());
        let accepted: Vec<_> = accepted.iter().map(|(l, v)| (&l[..], *v)).collect();
        out.counter("sirms_connections_total", "Connections accepted, by listener.", &accepted);
        let refused = by_listener(|l| l.refused.get());
        let refused: Vec<_> = refused.iter().map(|(l, v)| (&l[..], *v)).collect();
        out.counter("sirms_connections_refused_total", "Connections turned away at a limit.", &refused);
        let protocols = [Protocol::Smtp, Protocol::Imap, Protocol::Pop3];
        let labels: Vec<_> = protocols.iter().map(|p| [("protocol", p.name())]).collect();
        let sessions: Vec<_> = labels.iter().zip(protocols).map(|(l, p)| (&l[..], self.sessions(p).get())).collect();
        out.gauge("sirms_sessions", "Sessions open now, by protocol.", &sessions);
        out.counter(
            "sirms_messages_received_total",
            "Messages accepted over SMTP.",
            &[(&[], self.messages_received.get())],
        );
        out.counter(
            "sirms_deliveries_total",
            "Recipients handled, by where the message went and how it ended.",
            &[
                (&[("route", "local"), ("result", "delivered")], self.local_delivered.get()),
                (&[("route", "local"), ("result", "deferred")], self.local_deferred.get()),
                (&[("route", "remote"), ("result", "delivered")], self.outbound_delivered.get()),
                (&[("route", "remote"), ("result", "deferred")], self.outbound_deferred.get()),
                (&[("route", "any"), ("result", "bounced")], self.bounced.get()),
            ],
        );
        out.gauge(
            "sirms_queue_messages",
            "Messages in the outbound and retry queue.",
            &[(&[], self.queue_length() as i64)],
        );
        out.gauge(
            "sirms_queue_unreadable_envelopes",
            "Queue envelopes that could not be read at the last scan; their messages are stuck.",
            &[(&[], self.queue_unreadable.get())],
        );
        out.counter(
            "sirms_spool_single_copy_total",
            "Spool entries accepted while no other node of the cluster took a copy.",
            &[(&[], self.spool_single_copy.get())],
        );
        out.counter(
            "sirms_dnsbl_refused_total",
            "Clients refused at connect to port 25 because a DNS blocklist lists them.",
            &[(&[], self.dnsbl_refused.get())],
        );
        out.counter(
            "sirms_greylist_total",
            "Recipients greylisting checked on port 25, by result: deferred (451), passed, failed_open (no router answered).",
            &[
                (&[("result", "deferred")], self.greylist_deferred.get()),
                (&[("result", "passed")], self.greylist_passed.get()),
                (&[("result", "failed_open")], self.greylist_failed_open.get()),
            ],
        );
        out.counter(
            "sirms_submission_rate_limited_total",
            "Recipients refused to authenticated senders past their hourly limit, by the limit met.",
            &[
                (&[("limit", "user")], self.send_rate.limited_user.get()),
                (&[("limit", "domain")], self.send_rate.limited_domain.get()),
            ],
        );
        out.counter(
            "sirms_auth_failures_total",
            "Failed logins over SMTP, IMAP and POP3, by reason.",
            &[
                (&[("reason", "denied")], self.auth_denied.get()),
                (&[("reason", "throttled")], self.auth_throttled.get()),
            ],
        );
        if let Some(certificates) = self.certificates.get() {
            let expiries: Vec<_> = certificates
                .expiries()
                .into_iter()
                .filter_map(|(file, at)| Some((file, at?.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64)))
                .collect();
            let labels: Vec<_> = expiries.iter().map(|(file, _)| [("certificate", file.as_str())]).collect();
            let samples: Vec<_> = labels.iter().zip(&expiries).map(|(l, (_, at))| (&l[..], *at)).collect();
            out.gauge(
                "sirms_tls_certificate_expiry_seconds",
                "When each TLS certificate the listeners serve expires (Unix seconds), by its file.",
                &samples,
            );
        }
        self.inbound_auth.render(out);
        self.store.render(out);
        self.filters.render(out);
        self.tls_policy.render(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let metrics = NodeMetrics::new(PathBuf::from("/nonexistent"));
        metrics.connection("imaps");
        metrics.refused("smtp");
        let _session = metrics.sessions(Protocol::of("pop3s")).track();
        metrics.messages_received.inc();
        let mut page = Exposition::new();
        metrics.render(&mut page);
        let page = page.finish();
        for line in [
            "sirms_connections_total{listener=\"imaps\"} 1\n",
            "sirms_connections_refused_total{listener=\"smtp\"} 1\n",
            "sirms_sessions{protocol=\"pop3\"} 1\n",
            "sirms_messages_received_total 1\n",
            "sirms_queue_messages 0\n",
            "sirms_queue_unreadable_envelopes 0\n",
            "sirms_store_op_seconds_count{op=\"append\"} 0\n",
        ] {
            assert!(page.contains(line), "{line:?} missing from\n{page}");
        }
    }
}
