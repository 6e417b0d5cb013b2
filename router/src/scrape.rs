//! The router's `/metrics` page: its own counters and what it knows of each node.

use std::sync::Arc;

use sirms_telemetry::{Exposition, Render};

use crate::server::Router;

/// The router's `/metrics`: its counters, and each node's health and last heartbeat.
pub struct Scrape(pub Arc<Router>);

impl Render for Scrape {
    fn render(&self, out: &mut Exposition) {
        self.0.metrics().render_own(out);
        let nodes = self.0.status();
        let ids: Vec<[(&str, &str); 1]> =
            nodes.iter().map(|n| [("node", n.node.as_ref().map_or("", |node| node.id.as_str()))]).collect();
        let gauge = |f: &dyn Fn(&sirms_proto::cluster::NodeStatus) -> Option<i64>| -> Vec<(&[(&str, &str)], i64)> {
            ids.iter().zip(&nodes).filter_map(|(l, n)| Some((&l[..], f(n)?))).collect()
        };
        out.gauge("sirms_node_up", "1 if the node passes health checks.", &gauge(&|n| Some(i64::from(n.healthy))));
        out.gauge(
            "sirms_node_drained",
            "1 if the node takes no new connections.",
            &gauge(&|n| Some(i64::from(n.node.as_ref().is_some_and(|n| n.drained)))),
        );
        out.gauge(
            "sirms_node_connections",
            "Connections relayed to the node now.",
            &gauge(&|n| Some(n.active_connections as i64)),
        );
        let load = |pick: fn(&sirms_proto::cluster::NodeLoad) -> u64| {
            move |n: &sirms_proto::cluster::NodeStatus| n.load.as_ref().map(|l| pick(l) as i64)
        };
        out.gauge(
            "sirms_node_queue_messages",
            "The node's queue, from its last heartbeat.",
            &gauge(&load(|l| l.queue_length)),
        );
        out.gauge(
            "sirms_node_messages_received",
            "Messages the node took over SMTP since it started, from its last heartbeat.",
            &gauge(&load(|l| l.messages_received)),
        );
        out.gauge(
            "sirms_node_auth_failures",
            "Failed logins on the node since it started, from its last heartbeat.",
            &gauge(&load(|l| l.auth_failures)),
        );
    }
}
