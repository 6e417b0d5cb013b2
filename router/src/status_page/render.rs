//! The status page's HTML, rendered from a plain [`View`]: no I/O, so it is unit-tested
//! without a network.
//!
//! Every value from the cluster (node ids, hosts, route targets, user names, log text) goes
//! through [`escape`]: the directory and the logs hold what admins and clients typed. The page
//! has no script and loads nothing (the listener's Content-Security-Policy forbids both);
//! rows carry `data-node` and cells a `class`, so tests and scrapers can find a value without
//! depending on the layout.

use std::fmt::Write as _;

use sirms_proto::cluster::{ClusterStatus, NodeLoad, NodeStatus};

use super::errors::ErrorEvent;
use crate::health::Shown;

/// Seconds between the page's own reloads.
pub const REFRESH_SECS: u32 = 10;
/// A node certificate with fewer days left than this is marked.
pub const CERT_WARN_DAYS: u64 = 14;

/// Everything the page shows.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// When it was gathered (Unix seconds).
    pub now_unix: u64,
    /// This router's version.
    pub router_version: String,
    /// What `sirms ctl status` shows: nodes with health and heartbeats, directory counts.
    pub cluster: ClusterStatus,
    /// The policy table and where each entry sends its sources now.
    pub routes: Vec<RouteView>,
    /// Replica state from the directory.
    pub replicas: Replicas,
    /// The router's recent warnings and errors, newest first.
    pub errors: Vec<ErrorEvent>,
}

/// One entry of the policy table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteView {
    /// The sources (`10.0.0.0/8`).
    pub cidr: String,
    /// The table's target: a node id or `group:NAME`.
    pub target: String,
    /// The node SMTP connections from the network's first address go to now (empty if none).
    pub goes_to: String,
    /// Why (`table 10.0.0.0/8 -> node1`, `… is down; hashed`).
    pub reason: String,
}

/// How the users' second copies stand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replicas {
    /// Users with a replica.
    pub with_replica: u64,
    /// Of them, those whose replica is not in sync.
    pub out_of_sync: u64,
    /// The first few out of sync, by address.
    pub first_out_of_sync: Vec<String>,
}

/// `text` with HTML's special characters escaped, for element content and quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The whole page.
pub fn page(view: &View) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>SIRMS status</title><style>{STYLE}</style></head><body>\n\
         <h1>SIRMS cluster status</h1>\n<p class=\"meta\">Router {} · {} UTC · reloads every {REFRESH_SECS} s</p>\n",
        escape(&view.router_version),
        utc(view.now_unix),
    );
    summary(&mut out, view);
    nodes(&mut out, &view.cluster.nodes, view.cluster.directory_version, view.now_unix);
    routes(&mut out, &view.routes);
    replicas(&mut out, &view.replicas);
    errors(&mut out, &view.errors);
    out.push_str("</body></html>\n");
    out
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}.meta{color:#666}\
table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}\
th{background:#f3f3f3}td.num{text-align:right}.up{color:#176f2c;font-weight:600}\
.down,.bad{color:#b00020;font-weight:600}.warn{color:#9a5b00;font-weight:600}\
td.text{font-family:monospace;white-space:pre-wrap;max-width:60em}";

fn summary(out: &mut String, view: &View) {
    let c = &view.cluster;
    let healthy = c.nodes.iter().filter(|n| n.healthy).count();
    let queued: u64 = c.nodes.iter().filter_map(|n| n.load.as_ref()).map(|l| l.queue_length).sum();
    let _ = write!(
        out,
        "<h2>Cluster</h2>\n<table class=\"summary\">\
         <tr><th>Nodes healthy</th><td class=\"nodes-healthy\">{healthy} of {}</td></tr>\
         <tr><th>Directory version</th><td class=\"directory-version\">{}</td></tr>\
         <tr><th>Domains</th><td class=\"domains\">{}</td></tr>\
         <tr><th>Users</th><td class=\"users\">{}</td></tr>\
         <tr><th>Routes</th><td class=\"routes\">{}</td></tr>\
         <tr><th>Messages queued</th><td class=\"queued\">{queued}</td></tr>",
        c.nodes.len(),
        c.directory_version,
        c.domains,
        c.users,
        c.routes,
    );
    if let Some(nat) = &c.nat {
        let _ = write!(
            out,
            "<tr><th>NAT</th><td class=\"nat\">{} flows; {} opened, {} reset; packets {} forwarded, {} answered, \
             {} dropped</td></tr>",
            nat.flows, nat.flows_opened, nat.flows_reset, nat.forwarded, nat.answered, nat.discarded
        );
    }
    out.push_str("</table>\n");
}

fn nodes(out: &mut String, nodes: &[NodeStatus], directory_version: u64, now_unix: u64) {
    out.push_str(
        "<h2>Nodes</h2>\n<table class=\"nodes\"><tr><th>Node</th><th>Host</th><th>Health</th><th>State</th>\
         <th>Connections (now / total)</th><th>Sessions (SMTP / IMAP / POP3)</th><th>Queue</th><th>Version</th>\
         <th>Directory version</th><th>Certificate expires</th></tr>\n",
    );
    if nodes.is_empty() {
        out.push_str("<tr><td colspan=\"10\">No nodes in the directory.</td></tr>\n");
    }
    for s in nodes {
        let Some(n) = &s.node else { continue };
        let state = n.state();
        let (health, health_class) = health(s);
        // Without a recent heartbeat the node's own numbers are unknown.
        let load = |pick: fn(&NodeLoad) -> String| s.load.as_ref().map_or_else(|| "-".to_string(), pick);
        let sessions = load(|l| format!("{} / {} / {}", l.smtp_sessions, l.imap_sessions, l.pop3_sessions));
        let version = load(|l| if l.version.is_empty() { "-".into() } else { l.version.clone() });
        let (node_directory, directory_class) = match &s.load {
            None => ("-".to_string(), ""),
            Some(l) if l.directory_version < directory_version => {
                (format!("{} (behind)", l.directory_version), " warn")
            }
            Some(l) => (l.directory_version.to_string(), ""),
        };
        let (cert, cert_class) = certificate(s.load.as_ref().map_or(0, |l| l.tls_expires_unix), now_unix);
        let _ = writeln!(
            out,
            "<tr data-node=\"{id}\"><td class=\"id\">{id}</td><td class=\"host\">{host}</td>\
             <td class=\"health {health_class}\">{health}</td><td class=\"state\">{state}</td>\
             <td class=\"connections num\">{} / {}</td><td class=\"sessions num\">{sessions}</td>\
             <td class=\"queue num\">{}</td><td class=\"version\">{}</td>\
             <td class=\"directory-version num{directory_class}\">{node_directory}</td>\
             <td class=\"certificate{cert_class}\">{cert}</td></tr>",
            s.active_connections,
            s.total_connections,
            load(|l| l.queue_length.to_string()),
            escape(&version),
            id = escape(&n.id),
            host = escape(&n.host),
            health = escape(&health),
        );
    }
    out.push_str("</table>\n");
}

/// The health cell and its class: `up`, `down`, or `down: imap, pop3` while other services
/// serve (read as `sirms ctl nodes list` reads it).
fn health(s: &NodeStatus) -> (String, &'static str) {
    match Shown::of(s) {
        Shown::Up => ("up".into(), "up"),
        Shown::Down => ("down".into(), "down"),
        Shown::Partly(down) => (format!("down: {}", down.join(", ")), "down"),
    }
}

/// The certificate cell and its extra class: the date and days left, `expired`, or `-`.
fn certificate(expires_unix: u64, now_unix: u64) -> (String, &'static str) {
    match expires_unix {
        0 => ("-".into(), ""),
        at if at <= now_unix => (format!("expired {}", date(at)), " bad"),
        at => {
            let days = (at - now_unix) / 86_400;
            (format!("{} ({days} days)", date(at)), if days < CERT_WARN_DAYS { " warn" } else { "" })
        }
    }
}

fn routes(out: &mut String, routes: &[RouteView]) {
    out.push_str("<h2>Routes</h2>\n");
    if routes.is_empty() {
        out.push_str("<p class=\"routes-none\">No routes: every source is hashed over the healthy nodes.</p>\n");
        return;
    }
    out.push_str(
        "<table class=\"routes\"><tr><th>Sources</th><th>Target</th><th>SMTP goes to now</th><th>Why</th></tr>\n",
    );
    for r in routes {
        let goes_to = if r.goes_to.is_empty() { "no node" } else { &r.goes_to };
        let _ = writeln!(
            out,
            "<tr data-route=\"{cidr}\"><td class=\"cidr\">{cidr}</td><td class=\"target\">{}</td>\
             <td class=\"goes-to\">{}</td><td class=\"reason\">{}</td></tr>",
            escape(&r.target),
            escape(goes_to),
            escape(&r.reason),
            cidr = escape(&r.cidr),
        );
    }
    out.push_str("</table>\n");
}

fn replicas(out: &mut String, r: &Replicas) {
    let class = if r.out_of_sync > 0 { " warn" } else { "" };
    let _ = write!(
        out,
        "<h2>Replicas</h2>\n<p class=\"replicas\">Users with a replica: <span class=\"with-replica\">{}</span>; \
         out of sync: <span class=\"out-of-sync{class}\">{}</span>.</p>\n",
        r.with_replica, r.out_of_sync
    );
    if !r.first_out_of_sync.is_empty() {
        out.push_str("<ul class=\"out-of-sync-users\">");
        for user in &r.first_out_of_sync {
            let _ = write!(out, "<li>{}</li>", escape(user));
        }
        if r.out_of_sync > r.first_out_of_sync.len() as u64 {
            let _ = write!(out, "<li>… and {} more</li>", r.out_of_sync - r.first_out_of_sync.len() as u64);
        }
        out.push_str("</ul>\n");
    }
}

fn errors(out: &mut String, errors: &[ErrorEvent]) {
    out.push_str("<h2>Recent warnings and errors</h2>\n");
    if errors.is_empty() {
        out.push_str("<p class=\"errors-none\">None since the router started.</p>\n");
        return;
    }
    out.push_str("<table class=\"errors\"><tr><th>Time (UTC)</th><th>Level</th><th>Where</th><th>What</th></tr>\n");
    for e in errors {
        let class = if e.level == tracing::Level::ERROR { "bad" } else { "warn" };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"{class}\">{}</td><td>{}</td><td class=\"text\">{}</td></tr>",
            utc(e.at_unix),
            e.level,
            escape(&e.target),
            escape(&e.text),
        );
    }
    out.push_str("</table>\n");
}

/// `2026-12-07 06:53:29` for Unix seconds.
fn utc(unix: u64) -> String {
    let secs = unix % 86_400;
    format!("{} {:02}:{:02}:{:02}", date(unix), secs / 3600, secs / 60 % 60, secs % 60)
}

/// `2026-12-07` for Unix seconds (the proleptic Gregorian calendar, from days since 1970).
fn date(unix: u64) -> String {
    // Howard Hinnant's civil_from_days, for days ≥ 0.
    let z = unix / 86_400 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use sirms_proto::cluster::{Node, NodeLoad, NodeStatus};

    use super::*;

    const NOW: u64 = 1_796_626_409; // 2026-12-07 06:53:29 UTC

    fn node(id: &str, healthy: bool, load: Option<NodeLoad>) -> NodeStatus {
        NodeStatus {
            node: Some(Node {
                id: id.into(),
                host: "127.0.0.1".into(),
                smtp_port: 25,
                imap_port: 143,
                pop3_port: 110,
                ..Default::default()
            }),
            healthy,
            active_connections: 2,
            total_connections: 7,
            load,
            down_services: if healthy { vec![] } else { vec!["imap".into()] },
        }
    }

    fn view() -> View {
        let load = NodeLoad {
            smtp_sessions: 1,
            imap_sessions: 2,
            pop3_sessions: 3,
            queue_length: 4,
            directory_version: 8,
            tls_expires_unix: NOW + 10 * 86_400,
            version: "0.1.0".into(),
            ..Default::default()
        };
        View {
            now_unix: NOW,
            router_version: "0.1.0".into(),
            cluster: ClusterStatus {
                nodes: vec![node("node1", true, Some(load)), node("<b>evil</b>", false, None)],
                directory_version: 9,
                users: 3,
                domains: 1,
                routes: 1,
                nat: None,
            },
            routes: vec![RouteView {
                cidr: "10.0.0.0/8".into(),
                target: "node1".into(),
                goes_to: "node1".into(),
                reason: "table 10.0.0.0/8 -> node1".into(),
            }],
            replicas: Replicas { with_replica: 3, out_of_sync: 2, first_out_of_sync: vec!["a@x.test".into()] },
            errors: vec![ErrorEvent {
                at_unix: NOW,
                level: tracing::Level::WARN,
                target: "sirms_router::health".into(),
                text: "service is down node=node2 <script>".into(),
            }],
        }
    }

    /// The row of `id` (as escaped in the page).
    fn row<'a>(page: &'a str, id: &str) -> &'a str {
        let start = page.find(&format!("<tr data-node=\"{id}\">")).expect("the node's row");
        &page[start..start + page[start..].find("</tr>").expect("row end")]
    }

    #[test]
    fn shows_each_node_with_its_heartbeat() {
        let page = page(&view());
        let one = row(&page, "node1");
        for cell in [
            "<td class=\"health up\">up</td>",
            "<td class=\"sessions num\">1 / 2 / 3</td>",
            "<td class=\"queue num\">4</td>",
            "<td class=\"version\">0.1.0</td>",
            "<td class=\"connections num\">2 / 7</td>",
            "<td class=\"directory-version num warn\">8 (behind)</td>",
            "<td class=\"certificate warn\">2026-12-17 (10 days)</td>",
        ] {
            assert!(one.contains(cell), "{cell} in {one}");
        }
        let evil = row(&page, "&lt;b&gt;evil&lt;/b&gt;");
        assert!(evil.contains("<td class=\"health down\">down: imap</td>"), "{evil}");
        let mut all_down = node("n", false, None);
        all_down.down_services = vec!["smtp".into(), "imap".into(), "pop3".into()];
        assert_eq!(health(&all_down), ("down".to_string(), "down"), "every service it offers");
        assert!(evil.contains("<td class=\"sessions num\">-</td>"), "no heartbeat: {evil}");
        assert!(page.contains("<td class=\"queued\">4</td>"), "{page}");
        assert!(page.contains("<td class=\"nodes-healthy\">1 of 2</td>"), "{page}");
    }

    #[test]
    fn shows_routes_replicas_and_errors() {
        let page = page(&view());
        assert!(page.contains("<td class=\"goes-to\">node1</td>"), "{page}");
        assert!(page.contains("out of sync: <span class=\"out-of-sync warn\">2</span>"), "{page}");
        assert!(page.contains("<li>a@x.test</li><li>… and 1 more</li>"), "{page}");
        assert!(page.contains("service is down node=node2 &lt;script&gt;"), "{page}");
        assert!(page.contains("2026-12-07 06:53:29"), "{page}");
        let empty = super::page(&View::default());
        assert!(empty.contains("No nodes in the directory."));
        assert!(empty.contains("No routes"));
        assert!(empty.contains("None since the router started."));
    }

    #[test]
    fn nothing_from_the_cluster_is_markup() {
        let page = page(&view());
        assert!(!page.contains("<b>evil"), "{page}");
        assert!(!page.contains("<script"), "{page}");
        assert_eq!(escape("a&b<c>\"'"), "a&amp;b&lt;c&gt;&quot;&#39;");
    }

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(NOW), "2026-12-07 06:53:29");
        assert_eq!(certificate(NOW - 1, NOW), ("expired 2026-12-07".to_string(), " bad"));
        assert_eq!(certificate(0, NOW), ("-".to_string(), ""));
    }
}
