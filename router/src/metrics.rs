//! What the router counts: connections per service, routing decisions per node and reason,
//! connect failures; rendered with the nodes' health and their heartbeats on `/metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use sirms_telemetry::{Counter, Exposition, Gauge, GaugeGuard};

use crate::pick::Reason;
use crate::service::Service;

/// A routing decision's kind, as a metric label.
pub fn reason_label(reason: &Reason) -> &'static str {
    match reason {
        Reason::Table { .. } => "table",
        Reason::TableUnavailable { .. } => "table_unavailable",
        Reason::Hashed => "hashed",
        Reason::LastResort => "last_resort",
        Reason::NoNodes => "no_nodes",
    }
}

/// The router's own counters.
#[derive(Default)]
pub struct RouterMetrics {
    connections: [Counter; Service::COUNT],
    /// Closed unrouted: over the router's connection budget.
    refused: [Counter; Service::COUNT],
    sessions: [Gauge; Service::COUNT],
    /// (node that served, or "none"; reason) -> connections.
    routed: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// node -> connections it did not take.
    connect_failures: Mutex<BTreeMap<String, u64>>,
    /// Bytes relayed, client to node and back.
    bytes_up: Counter,
    bytes_down: Counter,
}

impl RouterMetrics {
    /// Counts a connection accepted on `service`; the gauge stays up while the guard lives.
    pub fn connection(&self, service: Service) -> GaugeGuard<'_> {
        self.connections[service as usize].inc();
        self.sessions[service as usize].track()
    }

    /// Counts a connection closed for the connection limits.
    pub fn refused(&self, service: Service) {
        self.refused[service as usize].inc();
    }

    /// Counts where a connection went (`None`: nowhere) and why.
    pub fn routed(&self, node: Option<&str>, reason: &Reason) {
        let key = (node.unwrap_or("none").to_string(), reason_label(reason));
        *self.routed.lock().unwrap_or_else(|p| p.into_inner()).entry(key).or_default() += 1;
    }

    /// Counts a node that did not take a connection.
    pub fn connect_failed(&self, node: &str) {
        *self.connect_failures.lock().unwrap_or_else(|p| p.into_inner()).entry(node.to_string()).or_default() += 1;
    }

    /// Counts bytes relayed by a finished session.
    pub fn relayed(&self, up: u64, down: u64) {
        self.bytes_up.add(up);
        self.bytes_down.add(down);
    }

    /// Writes the router's own counters (the page adds the nodes': `scrape.rs`).
    pub fn render_own(&self, out: &mut Exposition) {
        let labels: Vec<_> = Service::ALL.iter().map(|s| [("service", s.name())]).collect();
        let counts: Vec<_> = labels.iter().zip(&self.connections).map(|(l, c)| (&l[..], c.get())).collect();
        out.counter("sirms_router_connections_total", "Client connections accepted, by service.", &counts);
        let refused: Vec<_> = labels.iter().zip(&self.refused).map(|(l, c)| (&l[..], c.get())).collect();
        out.counter(
            "sirms_router_connections_refused_total",
            "Client connections closed unrouted for the connection limits, by service.",
            &refused,
        );
        let open: Vec<_> = labels.iter().zip(&self.sessions).map(|(l, g)| (&l[..], g.get())).collect();
        out.gauge("sirms_router_sessions", "Sessions being relayed now, by service.", &open);
        let routed = self.routed.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let labels: Vec<_> =
            routed.keys().map(|(node, reason)| [("node", node.as_str()), ("reason", *reason)]).collect();
        let samples: Vec<_> = labels.iter().zip(routed.values()).map(|(l, v)| (&l[..], *v)).collect();
        out.counter(
            "sirms_router_routed_total",
            "Connections by the node that served them and why it was chosen.",
            &samples,
        );
        let failures = self.connect_failures.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let labels: Vec<_> = failures.keys().map(|node| [("node", node.as_str())]).collect();
        let samples: Vec<_> = labels.iter().zip(failures.values()).map(|(l, v)| (&l[..], *v)).collect();
        out.counter("sirms_router_connect_failures_total", "Forwarded connections a node did not take.", &samples);
        out.counter(
            "sirms_router_bytes_total",
            "Bytes relayed between clients and nodes.",
            &[(&[("direction", "up")], self.bytes_up.get()), (&[("direction", "down")], self.bytes_down.get())],
        );
    }
}
