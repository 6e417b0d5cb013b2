//! Several routers over one directory in etcd (a real `etcd` started by the test): they route
//! every source to the same node, any of them takes admin changes, and when one dies the
//! nodes and the clients carry on through the other. And a node that has no directory at all
//! says "try again later" in every protocol, never "no such user".

use std::collections::BTreeMap;

use sirms_integration_tests::etcd::{EtcdCluster, EtcdTls};
use sirms_integration_tests::{MailNode, RouterProcess, free_port, python};

/// Greets the SMTP listener at argv[1] from each source address in argv[2:]; prints one
/// greeting line per source (the node's name and the client address it saw).
const GREETINGS: &str = r#"
import smtplib, sys
host, port = sys.argv[1].rsplit(":", 1)
for src in sys.argv[2:]:
    s = smtplib.SMTP(host, int(port), source_address=(src, 0), timeout=20)
    code, greeting = s.ehlo("client.test")
    print(src, greeting.decode().splitlines()[0])
    s.quit()
"#;

/// Sends one message to argv[3] through argv[1] from source argv[2]; prints the result.
const SEND: &str = r#"
import smtplib, sys
host, port = sys.argv[1].rsplit(":", 1)
s = smtplib.SMTP(host, int(port), source_address=(sys.argv[2], 0), timeout=20)
s.ehlo("client.test")
print(s.sendmail("x@remote.test", [sys.argv[3]], ("Subject: via %s\r\n\r\nhi\r\n" % sys.argv[1]).encode()))
s.quit()
"#;

fn sources() -> Vec<String> {
    (10..40).map(|i| format!("127.0.0.{i}")).collect()
}

/// Source address → the node that greeted it, through `router`.
fn greeted(router: &RouterProcess) -> BTreeMap<String, String> {
    let mut args = vec![router.smtp.to_string()];
    args.extend(sources());
    python(GREETINGS, &args)
        .lines()
        .map(|line| {
            let (src, greeting) = line.split_once(' ').expect("source and greeting");
            (src.to_string(), greeting.split_whitespace().next().unwrap_or_default().to_string())
        })
        .collect()
}

#[test]
fn two_routers_share_the_directory_route_alike_and_survive_each_other() {
    let etcd = EtcdCluster::start(1);
    let a = RouterProcess::start_etcd(&etcd.endpoints(), "/sirms-it");
    let b = RouterProcess::start_etcd(&etcd.endpoints(), "/sirms-it");
    let extra = |id: &str, ip| RouterProcess::nodes_extra(&[&a, &b], id, ip);
    let n1 = MailNode::start_on([127, 0, 0, 1], "node1.example.test", &extra("node1", [127, 0, 0, 1]));
    let n2 = MailNode::start_on([127, 0, 0, 2], "node2.example.test", &extra("node2", [127, 0, 0, 2]));
    // A node registers through one router; both routers know it and check its health.
    a.wait_nodes(" up ", 2);
    b.wait_nodes(" up ", 2);

    // An admin change through either router is the cluster's.
    a.ctl(&["domains", "add", "example.test"]);
    b.ctl(&["users", "add", "alice@example.test", "--password", "alice-pw", "--home", "node1"]);
    assert!(a.ctl(&["users", "list"]).contains("alice@example.test"));
    let status = |r: &RouterProcess| {
        let out = r.ctl(&["status"]);
        out.lines().find(|l| l.contains("directory")).unwrap_or_default().to_string()
    };
    assert_eq!(status(&a), status(&b), "both routers report the same directory version");
    // And so do the nodes, in their heartbeats (the last column of `nodes list`), on both
    // routers, whichever of them each node heartbeats to (the load travels in its lease).
    // The version read again each time: the nodes' own changes (a new user's replica filled and
    // marked in sync) may move it on meanwhile.
    let version = || status(&a).split_whitespace().nth(2).unwrap_or_default().trim_end_matches(',').to_string();
    let started = std::time::Instant::now();
    let behind = |r: &RouterProcess| {
        let version = version();
        r.ctl(&["nodes", "list"]).lines().skip(1).any(|l| l.split_whitespace().last() != Some(version.as_str()))
    };
    while behind(&a) || behind(&b) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "{}{}",
            a.ctl(&["nodes", "list"]),
            b.ctl(&["nodes", "list"])
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // Every source reaches the same node through either router, and both nodes are used.
    let through_a = greeted(&a);
    assert_eq!(through_a.len(), sources().len());
    assert_eq!(greeted(&b), through_a, "router B routes each source where router A does");
    let nodes: std::collections::BTreeSet<&String> = through_a.values().collect();
    assert_eq!(nodes.len(), 2, "30 sources reach both nodes: {through_a:?}");

    // Router A dies. Clients of the cluster now come through B and land where they did; the
    // nodes follow the directory through B; admin changes go through B.
    let mut a = a;
    a.process.kill9();
    assert_eq!(greeted(&b), through_a, "after router A's death each source keeps its node");
    b.ctl(&["users", "add", "bob@example.test", "--password", "bob-pw", "--home", "node2"]);
    for (i, src) in sources().iter().enumerate().take(6) {
        let rcpt = if i % 2 == 0 { "alice@example.test" } else { "bob@example.test" };
        assert_eq!(python(SEND, &[b.smtp.to_string(), src.clone(), rcpt.to_string()]).trim(), "{}");
    }
    // bob was added after A died: his mail is accepted only if the nodes follow through B.
    assert_eq!(n1.inbox("alice@example.test").len(), 3);
    assert_eq!(n2.inbox("bob@example.test").len(), 3);
    b.wait_nodes(" up ", 2);
}

/// A cluster node that never reached a router and has no cached directory refuses nothing
/// for good: 4xx, NO [UNAVAILABLE], -ERR [SYS/TEMP].
#[test]
fn a_node_without_a_directory_says_try_again_later() {
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let extra = format!("[cluster]\nrouter = \"{nowhere}\"\nnode_id = \"lonely\"\ntoken = \"t\"\n");
    let node = MailNode::start("lonely.example.test", &extra);
    let out = python(
        r#"
import imaplib, poplib, smtplib, ssl, sys
smtp, imaps, pop3s = sys.argv[1:4]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", int(smtp), timeout=10)
s.ehlo("c")
s.mail("x@remote.test")
print("RCPT", *s.rcpt("alice@example.test"))
s.quit()
i = imaplib.IMAP4_SSL("127.0.0.1", int(imaps), ssl_context=ctx, timeout=10)
try:
    i.login("alice@example.test", "alice-pw")
    print("LOGIN OK")
except imaplib.IMAP4.error as e:
    print("LOGIN", e)
p = poplib.POP3_SSL("127.0.0.1", int(pop3s), context=ctx, timeout=10)
p.user("alice@example.test")
try:
    p.pass_("alice-pw")
    print("PASS OK")
except poplib.error_proto as e:
    print("PASS", e)
"#,
        &[node.smtp.port().to_string(), node.imaps.port().to_string(), node.pop3s.port().to_string()],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("RCPT 451 b'4.3.0"), "{out}");
    assert!(lines[1].contains("[UNAVAILABLE]"), "{out}");
    assert!(lines[2].contains("-ERR [SYS/TEMP]"), "{out}");
}

/// A frozen node (SIGSTOP: its kernel still accepts connections, so a TCP health check passes)
/// stops renewing its lease: within the lease (3 s) and 2 s more, every router has moved its
/// sources to the other node, and no other source moved. Thawed, it takes its lease and its
/// sources back.
#[test]
fn a_frozen_node_loses_its_lease_and_only_its_sources_move() {
    let etcd = EtcdCluster::start(1);
    let a = RouterProcess::start_etcd(&etcd.endpoints(), "/sirms-it");
    let b = RouterProcess::start_etcd(&etcd.endpoints(), "/sirms-it");
    let extra = |id: &str, ip| RouterProcess::nodes_extra(&[&a, &b], id, ip);
    let _n1 = MailNode::start_on([127, 0, 0, 1], "node1.example.test", &extra("node1", [127, 0, 0, 1]));
    let mut n2 = MailNode::start_on([127, 0, 0, 2], "node2.example.test", &extra("node2", [127, 0, 0, 2]));
    a.wait_nodes(" up ", 2);
    b.wait_nodes(" up ", 2);
    let before = greeted(&a);

    let signal = |sig| {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(n2.process.pid() as libc::pid_t, sig) };
    };
    signal(libc::SIGSTOP);
    let frozen = std::time::Instant::now();
    let down =
        |r: &RouterProcess| r.ctl(&["nodes", "list"]).lines().any(|l| l.starts_with("node2") && l.contains(" down "));
    while !(down(&a) && down(&b)) {
        assert!(frozen.elapsed() < std::time::Duration::from_secs(15), "node2 still routed 15 s after freezing");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let took = frozen.elapsed();
    eprintln!("frozen node out of routing on both routers after {took:?}");
    assert!(took < std::time::Duration::from_secs(5) + std::time::Duration::from_millis(500), "{took:?}");
    for router in [&a, &b] {
        let after = greeted(router);
        for (src, node) in &before {
            let want = if node.starts_with("node2") { "node1.example.test" } else { node.as_str() };
            assert_eq!(after[src], want, "source {src}");
        }
    }
    signal(libc::SIGCONT);
    for router in [&a, &b] {
        router.wait_nodes(" up ", 2);
    }
    assert_eq!(greeted(&b), before, "thawed, node2 has its sources back");
    n2.process.kill9();
}

/// With etcd on three members: one lost changes nothing; two lost (no quorum) stops admin
/// changes, at once and with a clear error, but not mail; once they are back, changes go
/// through again without restarting anything.
#[test]
fn losing_etcd_quorum_stops_admin_changes_not_mail() {
    let mut etcd = EtcdCluster::start(3);
    etcd.wait_ready(std::time::Duration::from_secs(20));
    let a = RouterProcess::start_etcd(&etcd.endpoints(), "/sirms-it");
    let b = RouterProcess::start_etcd(&etcd.endpoints(), "/sirms-it");
    let extra = |id: &str, ip| RouterProcess::nodes_extra(&[&a, &b], id, ip);
    let n1 = MailNode::start_on([127, 0, 0, 1], "node1.example.test", &extra("node1", [127, 0, 0, 1]));
    let _n2 = MailNode::start_on([127, 0, 0, 2], "node2.example.test", &extra("node2", [127, 0, 0, 2]));
    a.wait_nodes(" up ", 2);
    b.wait_nodes(" up ", 2);
    a.ctl(&["domains", "add", "example.test"]);
    a.ctl(&["users", "add", "alice@example.test", "--password", "alice-pw", "--home", "node1"]);
    let send_all = |router: &RouterProcess| {
        for src in sources().iter().take(4) {
            assert_eq!(python(SEND, &[router.smtp.to_string(), src.clone(), "alice@example.test".into()]).trim(), "{}");
        }
    };

    // The first member goes: nothing to notice.
    etcd.kill(0);
    b.ctl(&["users", "add", "bob@example.test", "--password", "bob-pw", "--home", "node1"]);
    send_all(&a);

    // The second goes: no quorum. Admin changes fail fast and say why; mail flows.
    etcd.kill(1);
    let asked = std::time::Instant::now();
    let err = a.ctl_fails(&["users", "add", "carol@example.test", "--password", "c", "--home", "node1"]);
    let took = asked.elapsed();
    eprintln!("admin change without quorum failed after {took:?}: {err}");
    assert!(err.contains("cannot be changed now") && err.contains("etcd"), "{err}");
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    send_all(&a);
    send_all(&b);
    assert_eq!(n1.inbox("alice@example.test").len(), 12);

    // Quorum back: the same change goes through, through either router, with no restart.
    etcd.restart(0);
    etcd.restart(1);
    etcd.wait_ready(std::time::Duration::from_secs(30));
    let back = std::time::Instant::now();
    loop {
        let out = std::process::Command::new(sirms_integration_tests::sirms_bin())
            .args([
                "ctl",
                "--router",
                &format!("http://{}", b.admin),
                "--token",
                sirms_integration_tests::CLUSTER_TOKEN,
            ])
            .args(["users", "add", "carol@example.test", "--password", "c", "--home", "node1"])
            .output()
            .expect("run sirms ctl");
        if out.status.success() {
            break;
        }
        assert!(back.elapsed() < std::time::Duration::from_secs(20), "{}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(a.ctl(&["users", "list"]).contains("carol@example.test"));
    a.wait_nodes(" up ", 2);
    send_all(&b);
}

/// The dev token is public: a node refuses to serve its mailboxes with it anywhere but on
/// loopback (as the router and the storage node do), rather than open them to anyone.
#[test]
fn the_dev_token_is_refused_off_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("node.toml");
    let port = free_port();
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[listen]\nsmtp = \"127.0.0.1:{}\"\n[cluster]\nrouter = \"http://127.0.0.1:{}\"\n\
             store_listen = \"0.0.0.0:{port}\"\n",
            dir.path().join("data").display(),
            free_port(),
            free_port()
        ),
    )
    .expect("write config");
    let child = std::process::Command::new(sirms_integration_tests::sirms_bin())
        .args(["node", "-c", config.to_str().expect("utf-8")])
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sirms node");
    let mut node = sirms_integration_tests::Process::from_child(child);
    let started = std::time::Instant::now();
    let status = loop {
        if let Ok(Some(status)) = node.child().try_wait() {
            break status;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the node is serving with the dev token on 0.0.0.0"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(node.child().stderr.as_mut().expect("stderr"), &mut stderr).expect("read stderr");
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("default dev token"), "{stderr}");
}

/// Routers reach etcd over TLS with a client certificate (etcd's `--client-cert-auth`), from
/// certificates `sirms ctl ca` made; a router without one gets nothing from that etcd.
#[test]
fn routers_reach_etcd_over_tls_with_a_client_certificate() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("ca");
    let d = dir.display().to_string();
    let ca = |args: &[&str]| sirms_integration_tests::ctl_ca(&dir, args);
    ca(&["init"]);
    ca(&["issue", "etcd", "m0", "--host", "127.0.0.1"]);
    ca(&["issue", "router", "router1", "--host", "127.0.0.1"]);
    let etcd = EtcdCluster::start_tls(1, EtcdTls { dir: dir.clone(), client: "router1".into() });
    etcd.wait_ready(std::time::Duration::from_secs(20));
    let endpoints = etcd.endpoints().iter().map(|e| format!("\"{e}\"")).collect::<Vec<_>>().join(", ");
    let etcd_toml =
        format!("directory = \"etcd\"\n[etcd]\nendpoints = [{endpoints}]\nprefix = \"/tls\"\ntimeout_ms = 500\n");
    let tls_toml = format!("[etcd.tls]\nca = \"{d}/ca.pem\"\ncert = \"{d}/router1.pem\"\nkey = \"{d}/router1.key\"\n");
    let router = RouterProcess::start_with(&format!("{etcd_toml}{tls_toml}"));
    router.ctl(&["domains", "add", "example.test"]);
    assert!(router.ctl(&["status"]).contains("1 domains"));
    let stranger = RouterProcess::start_with(&etcd_toml);
    let err = stranger.ctl_fails(&["domains", "add", "other.test"]);
    assert!(err.contains("cannot be changed now") || err.contains("not read the directory"), "{err}");
}

/// A frozen router (SIGSTOP: its kernel still accepts connections) must not hold the nodes
/// that follow the directory through it: their heartbeats time out, they move to the other
/// router, which takes their leases over, and every source keeps its node.
#[test]
fn a_frozen_router_does_not_hold_its_nodes() {
    let etcd = EtcdCluster::start(1);
    let a = RouterProcess::start_etcd(&etcd.endpoints(), "/sirms-it");
    let b = RouterProcess::start_etcd(&etcd.endpoints(), "/sirms-it");
    // Both nodes follow through a first.
    let extra = |id: &str, ip| RouterProcess::nodes_extra(&[&a, &b], id, ip);
    let _n1 = MailNode::start_on([127, 0, 0, 1], "node1.example.test", &extra("node1", [127, 0, 0, 1]));
    let _n2 = MailNode::start_on([127, 0, 0, 2], "node2.example.test", &extra("node2", [127, 0, 0, 2]));
    a.wait_nodes(" up ", 2);
    b.wait_nodes(" up ", 2);
    let before = greeted(&b);

    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(a.process.pid() as libc::pid_t, libc::SIGSTOP) };
    std::thread::sleep(std::time::Duration::from_secs(6));
    let nodes = b.ctl(&["nodes", "list"]);
    assert_eq!(nodes.lines().filter(|l| l.contains(" up ")).count(), 2, "6 s after router A froze:\n{nodes}");
    assert_eq!(greeted(&b), before, "every source keeps its node");
    // SAFETY: as above.
    unsafe { libc::kill(a.process.pid() as libc::pid_t, libc::SIGCONT) };
}
