//! Replicated mailboxes across real processes: two mail nodes, a router on etcd, one user
//! homed on node1 with a replica on node2. node1 is killed (SIGKILL) after mail arrived and
//! flags changed; the router promotes the replica when node1's lease expires, and node2
//! serves the same mailbox — UIDVALIDITY, UIDs, flags and bytes — with every acknowledged
//! message there. Mail goes on arriving with the replica down (marked out of sync first);
//! node1 comes back as the replica and is caught up to the same messages, file for file.
//! A replica that comes back on an empty disk is caught up too, without waiting for a write.

use std::time::{Duration, Instant};

use sirms_integration_tests::etcd::EtcdCluster;
use sirms_integration_tests::{MailNode, RouterProcess, python};

const USER: &str = "alice@example.test";

/// Sends `n` numbered messages to alice through `node`'s SMTP; returns how many got a 250.
/// Clients connect from 127.0.0.3: 127.0.0.1 is the nodes' trusted proxy (the router).
fn deliver(node: &MailNode, first: usize, n: usize) -> usize {
    let out = python(
        r#"
import smtplib, sys
host, port, first, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
acked = 0
s = smtplib.SMTP(host, port, timeout=30, source_address=("127.0.0.3", 0))
for i in range(first, first + n):
    try:
        s.sendmail("x@remote.test", ["alice@example.test"],
            ("From: X <x@remote.test>\r\nSubject: message %d\r\n\r\nbody %d\r\n" % (i, i)).encode())
        acked += 1
    except smtplib.SMTPException as e:
        print("refused", i, e, file=sys.stderr)
s.quit()
print(acked)
"#,
        &[node.smtp.ip().to_string(), node.smtp.port().to_string(), first.to_string(), n.to_string()],
    );
    out.trim().parse().expect("count")
}

/// IMAP on `node`: `script` runs after `m` is logged in as alice with INBOX selected; it
/// prints what the test compares.
fn imap(node: &MailNode, script: &str) -> String {
    python(
        &format!(
            r#"
import imaplib, socket, ssl, sys, hashlib, re
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
class FromClient(imaplib.IMAP4):
    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=("127.0.0.3", 0))
m = FromClient(sys.argv[1], int(sys.argv[2]), timeout=30)
m.starttls(ssl_context=ctx)
m.login("alice@example.test", "alice-pw")
typ, data = m.select("INBOX")
assert typ == "OK", data
{script}
m.logout()
"#
        ),
        &[node.imap.ip().to_string(), node.imap.port().to_string()],
    )
}

/// UIDVALIDITY, then one line per message: UID, flags without \Recent, SHA-256 of the bytes.
const LISTING: &str = r#"
print("uidvalidity", m.response("UIDVALIDITY")[1][0].decode())
typ, data = m.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
for item in data:
    if not isinstance(item, tuple):
        continue
    head, body = item[0].decode(), item[1]
    uid = re.search(r"UID (\d+)", head).group(1)
    flags = " ".join(sorted(f for f in re.search(r"FLAGS \(([^)]*)\)", head).group(1).split() if f != "\\Recent"))
    print(uid, "[" + flags + "]", hashlib.sha256(body).hexdigest())
"#;

/// Polls `sirms ctl users show` until `check` holds (bounded).
fn wait_user(router: &RouterProcess, what: &str, limit: Duration, check: impl Fn(&str) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let card = router.ctl(&["users", "show", USER]);
        if check(&card) {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what} not seen in {limit:?}: {card}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Retries `f` until it stops panicking (the directory reaching a node), bounded.
fn eventually<T>(what: &str, limit: Duration, f: impl Fn() -> T + std::panic::RefUnwindSafe) -> T {
    let start = Instant::now();
    loop {
        match std::panic::catch_unwind(&f) {
            Ok(v) => return v,
            Err(_) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(250)),
            Err(e) => panic!("{what}: still failing after {limit:?}: {e:?}"),
        }
    }
}

#[test]
fn a_dead_primary_fails_over_to_its_replica_with_nothing_lost() {
    let etcd = EtcdCluster::start(1);
    let router = RouterProcess::start_etcd(&etcd.endpoints(), "/sirms-failover");
    let mut n1 = MailNode::start_on([127, 0, 0, 1], "node1.example.test", &router.node_extra("node1", [127, 0, 0, 1]));
    let n2 = MailNode::start_on([127, 0, 0, 2], "node2.example.test", &router.node_extra("node2", [127, 0, 0, 2]));
    router.wait_nodes(" up ", 2);
    router.ctl(&["domains", "add", "example.test"]);
    router.ctl(&["users", "add", USER, "--password", "alice-pw", "--home", "node1", "--replica", "node2"]);
    let card = router.ctl(&["users", "show", USER]);
    assert!(
        card.contains("home     node1") && card.contains("replica  node2") && card.contains("in sync  yes"),
        "{card}"
    );

    // 30 messages through node1, the home; then flags, and one message expunged.
    let acked = eventually("node1 knows alice", Duration::from_secs(15), || {
        let n = deliver(&n1, 0, 1);
        assert_eq!(n, 1);
        n
    });
    assert_eq!(acked + deliver(&n1, 1, 29), 30);
    imap(
        &n1,
        r#"
m.uid("STORE", "1:10", "+FLAGS", "(\\Seen)")
m.uid("STORE", "5", "+FLAGS", "(\\Flagged $Important)")
m.uid("STORE", "3", "+FLAGS", "(\\Deleted)")
m.expunge()
"#,
    );
    let before = imap(&n1, LISTING);
    assert_eq!(before.lines().count(), 1 + 29, "{before}");

    n1.process.kill9();
    let took = wait_user(&router, "failover to node2", Duration::from_secs(20), |c| c.contains("home     node2"));
    eprintln!("replica promoted {took:?} after node1 was killed");
    let after = eventually("node2 serves alice", Duration::from_secs(15), || {
        let listing = imap(&n2, LISTING);
        assert_eq!(listing, before);
        listing
    });
    assert_eq!(after, before, "same UIDVALIDITY, UIDs, flags and bytes after the failover");

    // node1 (now the replica) is down: delivery goes on, the replica marked out of sync first.
    assert_eq!(deliver(&n2, 30, 5), 5);
    let card = router.ctl(&["users", "show", USER]);
    assert!(card.contains("replica  node1") && card.contains("in sync  no"), "{card}");

    // node1 comes back as the replica and is caught up.
    n1.restart();
    let took = wait_user(&router, "replica in sync", Duration::from_secs(30), |c| c.contains("in sync  yes"));
    eprintln!("replica caught up {took:?} after node1 restarted");
    let primary = n2.inbox(USER);
    assert_eq!(primary.len(), 34);
    assert_eq!(n1.inbox(USER), primary, "node1's copy is node2's, file for file");
}

#[test]
fn a_replica_that_lost_its_store_is_caught_up_without_a_write() {
    let router = RouterProcess::start();
    let n1 = MailNode::start_on([127, 0, 0, 1], "node1.example.test", &router.node_extra("node1", [127, 0, 0, 1]));
    let mut n2 = MailNode::start_on([127, 0, 0, 2], "node2.example.test", &router.node_extra("node2", [127, 0, 0, 2]));
    router.wait_nodes(" up ", 2);
    router.ctl(&["domains", "add", "example.test"]);
    router.ctl(&["users", "add", USER, "--password", "alice-pw", "--home", "node1", "--replica", "node2"]);
    let acked = eventually("node1 knows alice", Duration::from_secs(15), || {
        let n = deliver(&n1, 0, 1);
        assert_eq!(n, 1);
        n
    });
    assert_eq!(acked + deliver(&n1, 1, 9), 10);
    assert_eq!(n2.inbox(USER), n1.inbox(USER));

    // node2's disk is lost: it comes back on an empty data directory, the directory still
    // saying its copy is in sync. Without any write, the copy is rebuilt.
    n2.process.kill9();
    std::fs::remove_dir_all(n2.dir.path().join("data")).expect("wipe node2's data");
    n2.restart();
    eventually("node2's copy rebuilt", Duration::from_secs(30), || {
        assert_eq!(n2.inbox(USER), n1.inbox(USER));
    });
    wait_user(&router, "replica in sync again", Duration::from_secs(15), |c| c.contains("in sync  yes"));
    assert_eq!(n2.inbox(USER).len(), 10);
}
