//! Health per service, as clients see it: a real router in front of two real mail nodes, one
//! of whose IMAP listeners (as the router knows it) is wedged — it accepts connections and
//! never greets, as a frozen process's socket does. New IMAP clients must go to the other
//! node only, while SMTP clients keep reaching both.

use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use sirms_integration_tests::{MailNode, RouterProcess, python};

/// Prints, for each source address after the first argument, the greeting an IMAP client
/// (imaplib) gets through the router, or `no greeting` if none comes in time.
const IMAP_GREETINGS: &str = r#"
import imaplib, socket, sys
host, port = sys.argv[1].rsplit(":", 1)
for src in sys.argv[2:]:
    class FromSource(imaplib.IMAP4):
        def _create_socket(self, timeout):
            return socket.create_connection((self.host, self.port), timeout, source_address=(src, 0))
    try:
        m = FromSource(host, int(port), timeout=5)
        print(src, m.welcome.decode())
        m.logout()
    except (OSError, imaplib.IMAP4.error) as e:
        print(src, "no greeting:", e)
"#;

/// The same for SMTP (smtplib): the banner each source gets.
const SMTP_GREETINGS: &str = r#"
import smtplib, sys
host, port = sys.argv[1].rsplit(":", 1)
for src in sys.argv[2:]:
    try:
        s = smtplib.SMTP(timeout=5, source_address=(src, 0))
        code, banner = s.connect(host, int(port))
        print(src, code, banner.decode())
        s.quit()
    except (OSError, smtplib.SMTPException) as e:
        print(src, "no greeting:", e)
"#;

/// Registers `node` with the router by hand, its IMAP port being `imap` (its own or not).
fn add_node(router: &RouterProcess, id: &str, node: &MailNode, imap: SocketAddr) {
    let port = |a: SocketAddr| a.port().to_string();
    router.ctl(&[
        "nodes",
        "add",
        id,
        &node.smtp.ip().to_string(),
        "--smtp-port",
        &port(node.smtp),
        "--submission-port",
        &port(node.submission),
        "--submissions-port",
        &port(node.submissions),
        "--imap-port",
        &port(imap),
        "--imaps-port",
        &port(node.imaps),
        "--pop3-port",
        &port(node.pop3),
        "--pop3s-port",
        &port(node.pop3s),
    ]);
}

/// Each source's greeting line, from a script's `source greeting…` lines.
fn by_source(out: &str) -> Vec<(String, String)> {
    out.lines().filter_map(|l| l.split_once(' ')).map(|(s, g)| (s.to_string(), g.to_string())).collect()
}

#[test]
fn a_wedged_imap_listener_loses_imap_clients_only() {
    let router = RouterProcess::start();
    let trusted = "trusted_proxies = [\"127.0.0.1\"]\n";
    let n1 = MailNode::start_on([127, 0, 0, 1], "node1.example.test", trusted);
    let n2 = MailNode::start_on([127, 0, 0, 2], "node2.example.test", trusted);
    // Never accepted by the test: the kernel completes each handshake into the backlog and no
    // byte ever comes back, which is what a wedged IMAP process looks like from outside. It
    // lives as long as the test, so nothing else can take the port.
    let wedged = TcpListener::bind("127.0.0.2:0").expect("bind the wedged listener");
    let wedged_addr = wedged.local_addr().expect("wedged address");
    add_node(&router, "node1", &n1, n1.imap);
    add_node(&router, "node2", &n2, wedged_addr);

    // Fall is 3 probes a second apart, each given 1 s; allow several times that.
    let start = Instant::now();
    let mut list = String::new();
    while start.elapsed() < Duration::from_secs(30) {
        list = router.ctl(&["nodes", "list"]);
        if list.lines().any(|l| l.starts_with("node2 ") && l.contains(" down:imap ")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let row = |id: &str| list.lines().find(|l| l.starts_with(&format!("{id} "))).unwrap_or_default().to_string();
    assert!(row("node2").contains(" down:imap "), "node2's IMAP never went down:\n{list}");
    assert!(row("node1").contains(" up "), "node1 stays up:\n{list}");

    let sources: Vec<String> = (10..40).map(|i| format!("127.0.0.{i}")).collect();
    let mut args = vec![router.smtp.to_string()];
    args.extend(sources.iter().cloned());
    let smtp = by_source(&python(SMTP_GREETINGS, &args));
    args[0] = router.imap.to_string();
    let imap = by_source(&python(IMAP_GREETINGS, &args));
    assert_eq!((smtp.len(), imap.len()), (sources.len(), sources.len()), "{smtp:?}\n{imap:?}");

    // SMTP still reaches both nodes: node2's SMTP is healthy.
    let smtp_on = |node: &str| smtp.iter().filter(|(_, g)| g.contains(&format!("{node}.example.test"))).count();
    assert!(smtp_on("node2") > 0 && smtp_on("node1") > 0, "SMTP should reach both nodes: {smtp:?}");
    assert_eq!(smtp_on("node1") + smtp_on("node2"), sources.len(), "every SMTP client greeted: {smtp:?}");
    // Every IMAP client is greeted by node1, including the sources that hash to node2.
    for (src, greeting) in &imap {
        assert!(greeting.starts_with("* OK") && greeting.contains("node1.example.test"), "{src}: {greeting}");
    }
    // `routes test` says where IMAP goes for a source whose SMTP goes to node2.
    let (on2, _) = smtp.iter().find(|(_, g)| g.contains("node2.example.test")).expect("a source on node2");
    let explained = router.ctl(&["routes", "test", on2]);
    assert!(explained.starts_with("node2 ") && explained.contains("imap -> node1"), "{explained}");

    // The router's metrics name the service that is down.
    let page = Command::new("curl")
        .args(["-s", "--max-time", "10", &format!("http://{}/metrics", router.metrics)])
        .output()
        .expect("run curl");
    let page = String::from_utf8_lossy(&page.stdout);
    for series in [
        "sirms_node_service_up{node=\"node2\",service=\"imap\"} 0",
        "sirms_node_service_up{node=\"node2\",service=\"smtp\"} 1",
        "sirms_node_service_up{node=\"node1\",service=\"imap\"} 1",
    ] {
        assert!(page.lines().any(|l| l == series), "{series} missing:\n{page}");
    }
    drop(wedged);
}
