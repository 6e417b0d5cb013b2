//! Observability as an operator sees it: Prometheus pages scraped with curl from a real
//! router and a real node after real sessions, and `sirms ctl status` showing the same.

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use sirms_integration_tests::{MailNode, RouterProcess, python};

/// Scrapes `url` with curl; the status code and the body.
fn curl(url: &str) -> (String, String) {
    let out =
        Command::new("curl").args(["-s", "--max-time", "10", "-w", "\n%{http_code}", url]).output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("status line from -w");
    (code.to_string(), body.to_string())
}

/// The value of the sample whose line starts with `series` (name and labels as written).
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Mail through the router, a wrong password and a login; every step from 127.0.0.1.
const SESSIONS: &str = r#"
import imaplib, smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=20)
s.sendmail("x@remote.test", ["alice@example.test"], b"Subject: counted\r\n\r\nhi\r\n")
s.quit()
i = imaplib.IMAP4("127.0.0.1", int(sys.argv[2]), timeout=20)
try:
    i.login("alice@example.test", "wrong")
except imaplib.IMAP4.error:
    print("denied")
i.login("alice@example.test", "alice-pw")
i.select("INBOX")
print(i.status("INBOX", "(MESSAGES)")[1][0].decode())
i.logout()
"#;

#[test]
fn router_and_node_count_what_happened() {
    let router = RouterProcess::start();
    let extra = format!("allow_plaintext_auth = true\n{}", router.node_extra("node1", [127, 0, 0, 1]));
    let node = MailNode::start_on([127, 0, 0, 1], "node1.example.test", &extra);
    router.wait_nodes(" up ", 1);
    router.ctl(&["domains", "add", "example.test"]);
    router.ctl(&["users", "add", "alice@example.test", "--password", "alice-pw", "--home", "node1"]);

    // Starting up, the harness probes the ports itself: compare with a scrape from before.
    let router_before = curl(&format!("http://{}/metrics", router.metrics)).1;
    let out = python(SESSIONS, &[router.smtp.port().to_string(), router.imap.port().to_string()]);
    assert!(out.contains("denied") && out.contains("(MESSAGES 1)"), "{out}");

    let (code, page) = curl(&format!("http://{}/metrics", node.metrics));
    assert_eq!(code, "200", "{page}");
    let want = [
        ("sirms_messages_received_total", 1.0),
        ("sirms_deliveries_total{route=\"local\",result=\"delivered\"}", 1.0),
        ("sirms_auth_failures_total{reason=\"denied\"}", 1.0),
        ("sirms_connections_total{listener=\"smtp\"}", 1.0),
        ("sirms_connections_total{listener=\"imap\"}", 1.0),
        ("sirms_queue_messages", 0.0),
        ("sirms_store_op_seconds_count{op=\"append\"}", 1.0),
    ];
    for (series, value) in want {
        assert_eq!(sample(&page, series), Some(value), "{series} in\n{page}");
    }
    // The IMAP session has ended, so no session is open; the histogram's buckets add up.
    assert_eq!(sample(&page, "sirms_sessions{protocol=\"imap\"}"), Some(0.0), "{page}");
    assert_eq!(sample(&page, "sirms_store_op_seconds_bucket{op=\"append\",le=\"+Inf\"}"), Some(1.0), "{page}");

    let (code, page) = curl(&format!("http://{}/metrics", router.metrics));
    assert_eq!(code, "200", "{page}");
    for (series, value) in [
        ("sirms_router_connections_total{service=\"smtp\"}", 1.0),
        ("sirms_router_connections_total{service=\"imap\"}", 1.0),
        ("sirms_router_routed_total{node=\"node1\",reason=\"hashed\"}", 2.0),
    ] {
        let before = sample(&router_before, series).unwrap_or(0.0);
        assert_eq!(sample(&page, series).map(|v| v - before), Some(value), "{series} in\n{page}");
    }

    assert_eq!(sample(&page, "sirms_node_up{node=\"node1\"}"), Some(1.0), "{page}");
    let up = |p: &str| sample(p, "sirms_router_bytes_total{direction=\"up\"}").unwrap_or(0.0);
    assert!(up(&page) > up(&router_before) + 50.0, "the message went up through the router\n{page}");

    // Other paths and garbage get HTTP errors, not a page or a hang.
    assert_eq!(curl(&format!("http://{}/other", router.metrics)).0, "404");
    let mut raw = std::net::TcpStream::connect(node.metrics).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    raw.write_all(b"\x16\x03\x01 not http\r\n\r\n").expect("write");
    let mut reply = String::new();
    raw.read_to_string(&mut reply).expect("read");
    assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");

    // The node's heartbeat (every 5 s) brings the same totals to `sirms ctl status`.
    let mut status = serde_json::Value::Null;
    for _ in 0..150 {
        let json: serde_json::Value = serde_json::from_str(&router.ctl(&["--json", "status"])).expect("json");
        let load = &json["nodes"][0]["load"];
        if load["messages_received"] == 1 {
            status = json;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let load = &status["nodes"][0]["load"];
    assert_eq!(load["messages_received"], 1, "{status}");
    assert_eq!(load["delivered"], 1, "{status}");
    assert_eq!(load["auth_failures"], 1, "{status}");
    // Its self-signed certificate's expiry too, shown as days left.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    assert!(load["tls_expires_unix"].as_u64().is_some_and(|at| at > now), "{status}");
    let table = router.ctl(&["status"]);
    let header = table.lines().find(|l| l.contains("received")).expect("status table header");
    assert!(header.contains("delivered") && header.contains("auth-fail") && header.contains("tls"), "{table}");
    let row = table.lines().find(|l| l.starts_with("node1")).expect("node1's row");
    assert!(
        row.split_whitespace().any(|cell| cell.ends_with('d') && cell[..cell.len() - 1].parse::<u64>().is_ok()),
        "{table}"
    );
}

/// Issue 28: an envelope the queue cannot read is raised — an error in the node's log and
/// `sirms_queue_unreadable_envelopes` — never skipped in silence; repairing it clears both.
#[test]
fn an_unreadable_queue_envelope_is_raised() {
    let node = MailNode::start_with_directory([127, 0, 0, 1], "unreadable.example.test", "", &[], &[]);
    let metrics = format!("http://{}/metrics", node.metrics);
    let queue = node.dir.path().join("data/queue");
    std::fs::write(queue.join("msg/torn.1"), "Subject: stuck\r\n\r\nstuck\r\n").unwrap();
    // An envelope torn in the middle of a line, as a crashed writer could once leave it.
    std::fs::write(queue.join("env/torn.1"), "from x@remote.test\nattempts 1\nnext 0\ncrea").unwrap();
    let unreadable = |want: f64| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let page = curl(&metrics).1;
            let value = sample(&page, "sirms_queue_unreadable_envelopes");
            if value == Some(want) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "sirms_queue_unreadable_envelopes is {value:?}, not {want}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    unreadable(1.0);
    let log = node.log();
    assert!(log.contains("ERROR") && log.contains("unreadable queue envelope") && log.contains("torn.1"), "{log}");
    std::fs::write(
        queue.join("env/torn.1"),
        "from x@remote.test\nattempts 1\nnext 0\ncreated 17\nlocal alice@example.test\n",
    )
    .unwrap();
    unreadable(0.0);
}
