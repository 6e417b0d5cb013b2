//! The router's `/metrics` page: its own counters and what it knows of each node and each
//! node's services.

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
        out.gauge(
            "sirms_node_up",
            "1 if the node passes the health checks of every service.",
            &gauge(&|n| Some(i64::from(n.healthy))),
        );
        let health = self.0.health();
        let per_service: Vec<([(&str, &str); 2], i64)> = health
            .iter()
            .flat_map(|(node, services)| {
                services.iter().map(move |(service, h)| {
                    ([("node", node.as_str()), ("service", service.name())], i64::from(h.is_up()))
                })
            })
            .collect();
        let samples: Vec<_> = per_service.iter().map(|(labels, up)| (&labels[..], *up)).collect();
        out.gauge("sirms_node_service_up", "1 if the node's service passes its health checks.", &samples);
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
