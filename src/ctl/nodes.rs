//! `sirms ctl nodes`: mail and storage nodes, and the table `status` shows them in.

use std::time::{SystemTime, UNIX_EPOCH};

use clap::Subcommand;
use sirms_proto::cluster::{DrainRequest, Empty, Invite, Name, Node, NodeLoad, NodeStatus};
use sirms_router::health::Shown;

use super::{Client, CtlError, acked, show};

#[derive(Subcommand, Debug)]
pub enum NodesCmd {
    /// List nodes.
    List,
    /// Every TLS certificate each node serves, and when it expires.
    Certs,
    /// Add or replace a node by hand (nodes also register themselves).
    Add {
        id: String,
        host: String,
        #[arg(long, default_value_t = 100)]
        weight: u32,
        #[arg(long, default_value_t = 25)]
        smtp_port: u32,
        #[arg(long, default_value_t = 587)]
        submission_port: u32,
        #[arg(long, default_value_t = 465)]
        submissions_port: u32,
        #[arg(long, default_value_t = 143)]
        imap_port: u32,
        #[arg(long, default_value_t = 993)]
        imaps_port: u32,
        #[arg(long, default_value_t = 110)]
        pop3_port: u32,
        #[arg(long, default_value_t = 995)]
        pop3s_port: u32,
        /// ManageSieve (4190 in production); 0: not offered.
        #[arg(long, default_value_t = 0)]
        sieve_port: u32,
        /// The node's Store gRPC endpoint, e.g. http://10.0.0.5:7401.
        #[arg(long, default_value = "")]
        store: String,
        /// A storage-only node: holds mailboxes, takes no mail traffic.
        #[arg(long)]
        storage_only: bool,
    },
    /// Remove a node.
    #[command(alias = "rm")]
    Remove { id: String },
    /// Stop sending new connections to a node; open sessions finish.
    Drain { id: String },
    /// Send new connections to a drained node again.
    Undrain { id: String },
    /// Drain a node and move every mailbox copy it holds (homes and replicas) to other nodes,
    /// through the replicas, with mail arriving throughout; shows progress.
    Evacuate {
        id: String,
        /// Longest wait, in seconds, for each wave of new copies to catch up.
        #[arg(long, default_value_t = 6 * 3600)]
        wait_secs: u64,
    },
    /// A one-time token with which node ID obtains its cluster certificate (`sirms join`).
    Invite {
        id: String,
        /// Host names and addresses others reach it at (its id is always one).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// A storage node rather than a mail node.
        #[arg(long)]
        storage: bool,
        /// Hours the token stays usable.
        #[arg(long, default_value_t = 24)]
        hours: u64,
    },
}

pub(super) async fn run(c: &mut Client, json: bool, cmd: NodesCmd) -> Result<String, CtlError> {
    match cmd {
        NodesCmd::List => show(json, &c.list_nodes(Empty {}).await?.into_inner(), |l| table(&l.nodes)),
        NodesCmd::Certs => {
            let nodes = c.list_nodes(Empty {}).await?.into_inner().nodes;
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let certs: Vec<NodeCertificate> = nodes.iter().flat_map(node_certificates).collect();
            show(json, &certs, |c| certificate_table(c, now))
        }
        NodesCmd::Add {
            id,
            host,
            weight,
            smtp_port,
            submission_port,
            submissions_port,
            imap_port,
            imaps_port,
            pop3_port,
            pop3s_port,
            sieve_port,
            store,
            storage_only,
        } => {
            let node = Node {
                id,
                host,
                weight,
                smtp_port,
                submission_port,
                submissions_port,
                imap_port,
                imaps_port,
                pop3_port,
                pop3s_port,
                sieve_port,
                store_endpoint: store,
                drained: false,
                storage_only,
            };
            acked(json, c.put_node(node).await)
        }
        NodesCmd::Remove { id } => acked(json, c.remove_node(Name { name: id }).await),
        NodesCmd::Drain { id } => acked(json, c.drain_node(DrainRequest { id, drained: true }).await),
        NodesCmd::Undrain { id } => acked(json, c.drain_node(DrainRequest { id, drained: false }).await),
        NodesCmd::Evacuate { id, wait_secs } => {
            super::evacuate::run(c, json, id, std::time::Duration::from_secs(wait_secs)).await
        }
        NodesCmd::Invite { id, hosts, storage, hours } => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let role = if storage { "storage" } else { "node" };
            let invite = Invite { node: id.clone(), role: role.into(), hosts, expires_unix: now + hours.max(1) * 3600 };
            let invitation = c.invite_node(invite).await?.into_inner();
            if json {
                let reply = serde_json::json!({ "token": invitation.token, "expires_unix": invitation.expires_unix });
                return Ok(format!("{reply}\n"));
            }
            Ok(format!(
                "{}\n\nOn {id}, within {hours} h, once: sirms join --router ROUTER:PORT --token TOKEN --ca ca.pem --cert {id}.pem --key {id}.key\n",
                invitation.token
            ))
        }
    }
}

/// One row per node: the router's view (health, state, connections) and, from its last
/// heartbeat, the node's own (sessions, queue, mail counts).
pub(super) fn table(nodes: &[NodeStatus]) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let row = |cells: [&str; 16]| {
        let [
            id,
            host,
            weight,
            health,
            state,
            active,
            total,
            sessions,
            queue,
            received,
            delivered,
            deferred,
            bounced,
            auth,
            cert,
            directory,
        ] = cells;
        format!(
            "{id:<12} {host:<16} {weight:>6} {health:<8} {state:<8} {active:>7} {total:>7} {sessions:>18} {queue:>6} \
             {received:>9} {delivered:>9} {deferred:>8} {bounced:>7} {auth:>9} {cert:>7} {directory:>5}\n"
        )
    };
    let mut out = row([
        "node",
        "host",
        "weight",
        "health",
        "state",
        "active",
        "total",
        "smtp/imap/pop3",
        "queue",
        "received",
        "delivered",
        "deferred",
        "bounced",
        "auth-fail",
        "tls",
        "dir",
    ]);
    for s in nodes {
        let Some(n) = &s.node else { continue };
        let state = n.state();
        // Without a recent heartbeat the node's own numbers are unknown.
        let load = |pick: fn(&NodeLoad) -> String| s.load.as_ref().map_or("-".to_string(), pick);
        out.push_str(&row([
            &n.id,
            &n.host,
            &n.weight.to_string(),
            &health(s),
            state,
            &s.active_connections.to_string(),
            &s.total_connections.to_string(),
            &load(|l| format!("{}/{}/{}", l.smtp_sessions, l.imap_sessions, l.pop3_sessions)),
            &load(|l| l.queue_length.to_string()),
            &load(|l| l.messages_received.to_string()),
            &load(|l| l.delivered.to_string()),
            &load(|l| l.deferred.to_string()),
            &load(|l| l.bounced.to_string()),
            &load(|l| l.auth_failures.to_string()),
            &s.load.as_ref().map_or("-".to_string(), |l| certificate_left(l.tls_expires_unix, now)),
            &load(|l| l.directory_version.to_string()),
        ]));
    }
    out
}

/// One certificate of one node, as `nodes certs` shows it.
#[derive(Debug, serde::Serialize)]
struct NodeCertificate {
    node: String,
    name: String,
    expires_unix: u64,
}

/// A node's certificates from its last heartbeat (none without one).
fn node_certificates(s: &NodeStatus) -> Vec<NodeCertificate> {
    let id = s.node.as_ref().map(|n| n.id.clone()).unwrap_or_default();
    let certs = s.load.as_ref().map(|l| l.certificates.clone()).unwrap_or_default();
    certs
        .into_iter()
        .map(|c| NodeCertificate { node: id.clone(), name: c.name, expires_unix: c.expires_unix })
        .collect()
}

/// `nodes certs`: a line per certificate, days left first.
fn certificate_table(certs: &[NodeCertificate], now: u64) -> String {
    certs.iter().map(|c| format!("{:<12} {:>8} {}\n", c.node, certificate_left(c.expires_unix, now), c.name)).collect()
}

/// The TLS cell: days until the node's first certificate expires (`41d`), `expired`, or `-`.
fn certificate_left(expires_unix: u64, now_unix: u64) -> String {
    match expires_unix {
        0 => "-".into(),
        at if at <= now_unix => "expired".into(),
        at => format!("{}d", (at - now_unix) / 86_400),
    }
}

/// The health cell: `up`, `down`, or the services down (`down:imap,pop3`) while others still serve.
fn health(s: &NodeStatus) -> String {
    match Shown::of(s) {
        Shown::Up => "up".into(),
        Shown::Down => "down".into(),
        Shown::Partly(down) => format!("down:{}", down.join(",")),
    }
}

#[cfg(test)]
mod tests {
    use sirms_proto::cluster::{CertificateExpiry, Node, NodeLoad, NodeStatus};

    use super::{certificate_left, certificate_table, node_certificates, table};

    fn status(id: &str, drained: bool, storage_only: bool, load: Option<NodeLoad>) -> NodeStatus {
        let node =
            Node { id: id.into(), host: "10.0.0.1".into(), weight: 100, drained, storage_only, ..Default::default() };
        NodeStatus {
            node: Some(node),
            healthy: true,
            active_connections: 2,
            total_connections: 7,
            load,
            ..Default::default()
        }
    }

    #[test]
    fn certificates_a_line_each_with_days_left() {
        let load = NodeLoad {
            certificates: vec![
                CertificateExpiry { name: "/etc/sirms/main.pem".into(), expires_unix: 1_000 + 41 * 86_400 },
                CertificateExpiry { name: "/etc/sirms/old.pem".into(), expires_unix: 500 },
            ],
            ..Default::default()
        };
        let node = Node { id: "node1".into(), ..Default::default() };
        let status = NodeStatus { node: Some(node), load: Some(load), ..Default::default() };
        let certs = node_certificates(&status);
        assert_eq!(
            certificate_table(&certs, 1_000),
            "node1             41d /etc/sirms/main.pem\nnode1         expired /etc/sirms/old.pem\n"
        );
        assert!(node_certificates(&NodeStatus::default()).is_empty());
    }

    #[test]
    fn a_row_per_node_with_its_state_and_dashes_without_a_heartbeat() {
        let load = NodeLoad {
            smtp_sessions: 1,
            imap_sessions: 2,
            pop3_sessions: 3,
            queue_length: 4,
            directory_version: 17,
            ..Default::default()
        };
        let text = table(&[
            status("node1", false, false, Some(load)),
            status("node2", true, false, None),
            status("store1", false, true, None),
        ]);
        let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(rows.len(), 4, "{text}");
        assert_eq!(rows[0][..4], ["node", "host", "weight", "health"]);
        assert_eq!(rows[1][..9], ["node1", "10.0.0.1", "100", "up", "active", "2", "7", "1/2/3", "4"]);
        assert_eq!(rows[1][15], "17", "the directory version the node serves from, last");
        assert_eq!(rows[1][14], "-", "no certificate expiry reported");
        assert_eq!(rows[2][4..], ["drained", "2", "7", "-", "-", "-", "-", "-", "-", "-", "-", "-"]);
        assert_eq!(rows[3][4], "storage");
    }

    #[test]
    fn the_health_cell_names_the_services_down_while_others_serve() {
        let all_ports = Node {
            smtp_port: 25,
            submission_port: 587,
            submissions_port: 465,
            imap_port: 143,
            imaps_port: 993,
            pop3_port: 110,
            pop3s_port: 995,
            ..Default::default()
        };
        let with = |healthy: bool, down: &[&str]| NodeStatus {
            node: Some(Node { id: "node1".into(), host: "10.0.0.1".into(), ..all_ports.clone() }),
            healthy,
            down_services: down.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let cell =
            |s: NodeStatus| table(&[s]).lines().nth(1).and_then(|l| l.split_whitespace().nth(3)).map(String::from);
        assert_eq!(cell(with(true, &[])).as_deref(), Some("up"));
        assert_eq!(cell(with(false, &["imap", "pop3"])).as_deref(), Some("down:imap,pop3"));
        let every = ["smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s"];
        assert_eq!(cell(with(false, &every)).as_deref(), Some("down"));
        // Up by its checks but without a lease: down, with no service to name.
        assert_eq!(cell(with(false, &[])).as_deref(), Some("down"));
        // A storage node has one service, whatever ports its record carries.
        let storage = |healthy: bool, down: &[&str]| NodeStatus {
            node: Some(Node { storage_only: true, ..with(healthy, down).node.unwrap_or_default() }),
            ..with(healthy, down)
        };
        assert_eq!(cell(storage(false, &["store"])).as_deref(), Some("down"));
        assert_eq!(cell(storage(true, &[])).as_deref(), Some("up"));
    }

    #[test]
    fn the_tls_cell_counts_whole_days_left() {
        assert_eq!(certificate_left(0, 1_000), "-");
        assert_eq!(certificate_left(1_000 + 41 * 86_400 + 5, 1_000), "41d");
        assert_eq!(certificate_left(1_000 + 3_600, 1_000), "0d");
        assert_eq!(certificate_left(999, 1_000), "expired");
    }
}
