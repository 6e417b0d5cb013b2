//! The cluster as users see it: a real router process in front of real mail nodes (and a
//! storage node), clients coming from different 127.0.0.x source addresses.

use sirms_integration_tests::{MailNode, RouterProcess, StorageNode, metrics_page, python};
use sirms_storage::MailStore;

/// Sends one message through `smtp` from source address `src`; prints the node's greeting
/// and the send result.
const SEND_FROM: &str = r#"
import smtplib, sys
host, port = sys.argv[1].rsplit(":", 1)
s = smtplib.SMTP(host, int(port), source_address=(sys.argv[2], 0), timeout=20)
code, greeting = s.ehlo("client.test")
print(greeting.decode().splitlines()[0])
print(s.sendmail("x@remote.test", [sys.argv[3]], ("Subject: from %s\r\n\r\nhi\r\n" % sys.argv[2]).encode()))
s.quit()
"#;

fn send_from(router: &RouterProcess, src: &str, rcpt: &str) -> String {
    python(SEND_FROM, &[router.smtp.to_string(), src.to_string(), rcpt.to_string()])
}

/// The node `sirms ctl routes test` predicts for `ip`.
fn predicted(router: &RouterProcess, ip: &str) -> String {
    router.ctl(&["routes", "test", ip]).split_whitespace().next().unwrap_or_default().to_string()
}

fn cluster() -> (RouterProcess, MailNode, MailNode) {
    cluster_with("")
}

/// The same with one copy of each mailbox, for what these tests check about where a mailbox
/// lives (replication has its own tests in failover.rs and replication.rs).
fn cluster_one_copy() -> (RouterProcess, MailNode, MailNode) {
    cluster_with("replicas = 1\n")
}

fn cluster_with(extra: &str) -> (RouterProcess, MailNode, MailNode) {
    let router = RouterProcess::start_with(extra);
    let n1 = MailNode::start_on([127, 0, 0, 1], "node1.example.test", &router.node_extra("node1", [127, 0, 0, 1]));
    let n2 = MailNode::start_on([127, 0, 0, 2], "node2.example.test", &router.node_extra("node2", [127, 0, 0, 2]));
    router.wait_nodes(" up ", 2);
    router.ctl(&["domains", "add", "example.test"]);
    router.ctl(&["users", "add", "alice@example.test", "--password", "alice-pw", "--home", "node1"]);
    (router, n1, n2)
}

#[test]
fn source_ip_picks_the_node_and_the_node_sees_the_real_client() {
    let (router, n1, _n2) = cluster();
    let mut served = std::collections::BTreeMap::new();
    for i in 10..30 {
        let src = format!("127.0.0.{i}");
        let want = predicted(&router, &src);
        let out = send_from(&router, &src, "alice@example.test");
        let greeting = out.lines().next().unwrap();
        assert_eq!(greeting, format!("{want}.example.test greets [{src}]"), "source {src}");
        // The same source keeps its node.
        let again = send_from(&router, &src, "alice@example.test");
        assert_eq!(again.lines().next().unwrap(), greeting);
        *served.entry(want).or_insert(0) += 1;
    }
    assert_eq!(served.len(), 2, "20 sources should reach both nodes: {served:?}");
    // Every message is in alice's mailbox on her home node, whichever node took it, and
    // its trace header names the real client address.
    let inbox = n1.inbox("alice@example.test");
    assert_eq!(inbox.len(), 40);
    for i in 10..30 {
        let needle = format!("([127.0.0.{i}])");
        assert_eq!(inbox.iter().filter(|m| String::from_utf8_lossy(m).contains(&needle)).count(), 2, "{needle}");
    }
    // The nodes' heartbeats reach `ctl status`: idle sessions and empty queues now.
    router.wait_nodes("0/0/0      0", 2);
    assert!(router.ctl(&["status"]).contains("1 domains, 1 users"));
}

#[test]
fn ctl_json_is_the_api_reply_for_scripts() {
    let (router, _n1, _n2) = cluster();
    let json = |args: &[&str]| -> serde_json::Value {
        let out = router.ctl(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ctl {args:?} --json gave no JSON ({e}): {out}"))
    };
    let nodes = json(&["nodes", "list", "--json"]);
    let ids: Vec<&str> = nodes["nodes"].as_array().unwrap().iter().map(|n| n["node"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["node1", "node2"], "{nodes}");
    assert!(nodes["nodes"].as_array().unwrap().iter().all(|n| n["healthy"] == true), "{nodes}");
    // Each node's certificates from its heartbeat (a fresh self-signed one each), not yet expired.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut certs = json(&["nodes", "certs", "--json"]);
    while certs.as_array().is_none_or(|a| a.len() < 2) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200)); // the first heartbeats
        certs = json(&["nodes", "certs", "--json"]);
    }
    let listed: Vec<(&str, u64)> = certs
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["node"].as_str().unwrap(), c["expires_unix"].as_u64().unwrap()))
        .collect();
    assert_eq!(listed.iter().map(|(n, _)| *n).collect::<Vec<_>>(), ["node1", "node2"], "{certs}");
    assert!(listed.iter().all(|(_, at)| *at > now), "{certs}");
    assert_eq!(json(&["--json", "routes", "add", "127.0.0.99/32", "node2"]), serde_json::json!({ "ok": true }));
    assert_eq!(json(&["--json", "routes", "test", "127.0.0.99"])["node"], "node2");
    let users = json(&["users", "list", "--json"]);
    assert_eq!(users[0]["address"], "alice@example.test");
    assert_eq!(users[0]["home"], "node1");
    assert_eq!(users[0]["password_hash"], "", "hashes stay out of listings: {users}");
    assert_eq!(json(&["--json", "status"])["users"], 1);
}

#[test]
fn table_routes_drain_and_failover() {
    let (router, _n1, mut n2) = cluster();
    // Find a source that hashes to node1 and one that hashes to node2.
    let by_hash: Vec<(String, String)> =
        (40..80).map(|i| format!("127.0.0.{i}")).map(|s| (predicted(&router, &s), s)).collect();
    let on1 = by_hash.iter().find(|(n, _)| n == "node1").map(|(_, s)| s.clone()).unwrap();
    let on2 = by_hash.iter().find(|(n, _)| n == "node2").map(|(_, s)| s.clone()).unwrap();

    // The policy table beats the hash.
    router.ctl(&["routes", "add", &format!("{on1}/32"), "node2"]);
    assert!(router.ctl(&["routes", "list"]).contains(&format!("{on1}/32 -> node2")));
    assert!(send_from(&router, &on1, "alice@example.test").starts_with("node2.example.test"));
    router.ctl(&["routes", "remove", &format!("{on1}/32")]);
    assert!(send_from(&router, &on1, "alice@example.test").starts_with("node1.example.test"));

    // A drained node takes no new connections.
    router.ctl(&["nodes", "drain", "node1"]);
    assert!(router.ctl(&["nodes", "list"]).contains("drained"));
    assert!(send_from(&router, &on1, "alice@example.test").starts_with("node2.example.test"));
    router.ctl(&["nodes", "undrain", "node1"]);
    assert!(send_from(&router, &on1, "alice@example.test").starts_with("node1.example.test"));

    // node2 dies: its sources are served by node1 at once, node1's sources do not move.
    n2.process.kill9();
    assert!(send_from(&router, &on2, "alice@example.test").starts_with("node1.example.test"));
    assert!(send_from(&router, &on1, "alice@example.test").starts_with("node1.example.test"));
    router.wait_nodes(" down ", 1);
}

/// The router has a connection budget of its own, across its public ports: a third
/// connection from one address (limit 2) is closed unrouted even on another service, while
/// other addresses go on being served, and the refusal is counted.
#[test]
fn the_router_holds_its_connection_limits_across_services() {
    let (router, _n1, _n2) = cluster_with("max_connections_per_ip = 2\n");
    let out = python(
        r#"
import socket, sys, time
def connect(addr, source):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10, source_address=(source, 0))
    try:
        return s, s.recv(200).decode().split(" ")[0] or "closed"
    except ConnectionResetError:
        return s, "closed"
smtp, imap, pop3 = sys.argv[1:4]
a, ga = connect(smtp, "127.0.0.21")
b, gb = connect(imap, "127.0.0.21")
c, gc = connect(pop3, "127.0.0.21")
d, gd = connect(pop3, "127.0.0.22")
print(ga, gb, gc, gd)
"#,
        &[router.smtp.to_string(), router.imap.to_string(), router.pop3.to_string()],
    );
    assert_eq!(out.trim(), "220 * closed +OK", "{out}");
    let page = metrics_page(router.metrics);
    assert!(page.contains("sirms_router_connections_refused_total{service=\"pop3\"} 1"), "{page}");
}

/// RFC 1939's one session per maildrop holds across the cluster: the lock is the home's, so a
/// session on node2 for a user homed on node1 is refused while one on node1 holds the maildrop,
/// and the other way round; a session that ends, cleanly or by a dropped connection, frees it.
#[test]
fn one_pop3_session_per_maildrop_across_the_cluster() {
    let (router, _n1, _n2) = cluster_one_copy();
    let by_hash: Vec<(String, String)> =
        (40..80).map(|i| format!("127.0.0.{i}")).map(|s| (predicted(&router, &s), s)).collect();
    let on1 = by_hash.iter().find(|(n, _)| n == "node1").map(|(_, s)| s.clone()).unwrap();
    let on2 = by_hash.iter().find(|(n, _)| n == "node2").map(|(_, s)| s.clone()).unwrap();
    let out = python(
        r#"
import poplib, socket, ssl, sys, time
host, port = sys.argv[1].rsplit(":", 1)
def pop(source):
    sock = socket.create_connection((host, int(port)), timeout=20, source_address=(source, 0))
    p = poplib.POP3.__new__(poplib.POP3)
    p.host, p.port, p._tls_established = host, int(port), False
    p.sock = sock; p.file = sock.makefile("rb"); p._debugging = 0
    p.welcome = p._getresp()
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    p.stls(context=ctx)
    return p
def login(p):
    try:
        p.user("alice@example.test"); p.pass_("alice-pw"); return "+OK"
    except poplib.error_proto as e:
        return e.args[0].decode()
def login_within(source, secs):
    deadline = time.time() + secs
    while True:
        p = pop(source)
        got = login(p)
        if got == "+OK" or time.time() > deadline:
            return p, got
        p.quit(); time.sleep(0.2)
a = pop(sys.argv[2]); print(a.welcome.decode().split()[1], login(a))
b = pop(sys.argv[3]); print(b.welcome.decode().split()[1], login(b))
a.quit()
b, got = login_within(sys.argv[3], 10); print("after quit:", got)
c = pop(sys.argv[2]); print(c.welcome.decode().split()[1], login(c))
b.sock.shutdown(socket.SHUT_RDWR); b.sock.close()
c, got = login_within(sys.argv[2], 10); print("after a dropped connection:", got)
c.quit()
"#,
        &[router.pop3.to_string(), on1, on2],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "node1.example.test +OK", "{out}");
    assert!(lines[1].starts_with("node2.example.test -ERR [IN-USE]"), "{out}");
    assert_eq!(lines[2], "after quit: +OK", "{out}");
    assert!(lines[3].starts_with("node1.example.test -ERR [IN-USE]"), "{out}");
    assert_eq!(lines[4], "after a dropped connection: +OK", "{out}");
}

#[test]
fn storage_node_holds_mailboxes_for_every_mail_node() {
    let (router, n1, n2) = cluster_one_copy();
    let storage_dir = tempfile::tempdir().unwrap();
    let storage =
        StorageNode::start_with_token(storage_dir.path().to_path_buf(), sirms_integration_tests::CLUSTER_TOKEN);
    router.ctl(&["nodes", "add", "store1", "127.0.0.1", "--storage-only", "--store", &storage.endpoint()]);
    router.ctl(&["users", "add", "bob@example.test", "--password", "bob-pw", "--home", "store1"]);
    let by_hash: Vec<(String, String)> =
        (40..80).map(|i| format!("127.0.0.{i}")).map(|s| (predicted(&router, &s), s)).collect();
    let on1 = by_hash.iter().find(|(n, _)| n == "node1").map(|(_, s)| s.clone()).unwrap();
    let on2 = by_hash.iter().find(|(n, _)| n == "node2").map(|(_, s)| s.clone()).unwrap();
    // In through node1, out through node2: one mailbox on the storage node.
    assert!(send_from(&router, &on1, "bob@example.test").starts_with("node1.example.test"));
    let out = python(
        r#"
import poplib, sys
host, port = sys.argv[1].rsplit(":", 1)
import socket
sock = socket.create_connection((host, int(port)), timeout=20, source_address=(sys.argv[2], 0))
p = poplib.POP3.__new__(poplib.POP3)
p.host, p.port, p._tls_established = host, int(port), False
p.sock = sock; p.file = sock.makefile("rb"); p._debugging = 0
p.welcome = p._getresp()
print(p.welcome.decode())
import ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
p.stls(context=ctx)
p.user("bob@example.test"); p.pass_("bob-pw")
print(p.stat())
print(b"\r\n".join(p.retr(1)[1]).decode())
p.quit()
"#,
        &[router.pop3.to_string(), on2.clone()],
    );
    assert!(out.starts_with("+OK node2.example.test"), "{out}");
    assert!(out.contains("(1, "), "{out}");
    assert!(out.contains(&format!("Subject: from {on1}")), "{out}");
    // And over IMAP, through the router, from the source that lands on node2.
    let imap = python(
        r#"
import imaplib, socket, ssl, sys
host, port = sys.argv[1].rsplit(":", 1)
class FromSource(imaplib.IMAP4):
    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(sys.argv[2], 0))
m = FromSource(host, int(port), timeout=20)
print(m.welcome.decode())
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m.starttls(ssl_context=ctx)
m.login("bob@example.test", "bob-pw")
m.select("INBOX")
typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
print(data[0][1].decode().strip())
m.logout()
"#,
        &[router.imap.to_string(), on2.clone()],
    );
    assert!(imap.contains("node2.example.test"), "{imap}");
    assert!(imap.contains(&format!("Subject: from {on1}")), "{imap}");
    // Nothing landed on the mail nodes' own disks.
    assert!(n1.inbox("bob@example.test").is_empty() && n2.inbox("bob@example.test").is_empty());
}

#[test]
fn mail_for_an_unreachable_home_waits_in_the_spool() {
    let (router, _n1, _n2) = cluster();
    let storage_dir = tempfile::tempdir().unwrap();
    let mut storage =
        StorageNode::start_with_token(storage_dir.path().to_path_buf(), sirms_integration_tests::CLUSTER_TOKEN);
    router.ctl(&["nodes", "add", "store1", "127.0.0.1", "--storage-only", "--store", &storage.endpoint()]);
    router.ctl(&["users", "add", "carol@example.test", "--password", "carol-pw", "--home", "store1"]);
    let addr = storage.addr;
    storage.process.kill9();
    // The home is down, yet the message is accepted: it is durable in the node's spool.
    let out = send_from(&router, "127.0.0.41", "carol@example.test");
    assert!(out.ends_with("{}\n"), "{out}");
    let _storage =
        StorageNode::start_at(addr, storage_dir.path().to_path_buf(), sirms_integration_tests::CLUSTER_TOKEN);
    let cur = storage_dir.path().join("mail/carol@example%2Etest/cur");
    let mut delivered = 0;
    for _ in 0..300 {
        delivered = std::fs::read_dir(&cur).map(|d| d.count()).unwrap_or(0);
        if delivered > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(delivered, 1, "the spooled message never reached its home");
    let stored = std::fs::read_dir(&cur).unwrap().next().unwrap().unwrap().path();
    assert!(String::from_utf8_lossy(&std::fs::read(stored).unwrap()).contains("Subject: from 127.0.0.41"));
}

#[test]
fn users_move_carries_every_message_to_the_new_home() {
    let (router, n1, _n2) = cluster_one_copy();
    let storage_dir = tempfile::tempdir().unwrap();
    let storage =
        StorageNode::start_with_token(storage_dir.path().to_path_buf(), sirms_integration_tests::CLUSTER_TOKEN);
    router.ctl(&["nodes", "add", "store1", "127.0.0.1", "--storage-only", "--store", &storage.endpoint()]);
    for i in 50..53 {
        send_from(&router, &format!("127.0.0.{i}"), "alice@example.test");
    }
    let before = n1.inbox("alice@example.test");
    assert_eq!(before.len(), 3);
    let out = router.ctl(&["users", "move", "alice@example.test", "--to", "store1"]);
    assert!(out.starts_with("moved 3 messages"), "{out}");
    assert!(router.ctl(&["users", "list"]).contains("alice@example.test home=store1"));
    assert!(n1.inbox("alice@example.test").is_empty());
    let cur = storage_dir.path().join("mail/alice@example%2Etest/cur");
    let mut moved: Vec<Vec<u8>> =
        std::fs::read_dir(&cur).unwrap().map(|e| std::fs::read(e.unwrap().path()).unwrap()).collect();
    let mut want = before.clone();
    moved.sort();
    want.sort();
    assert_eq!(moved, want, "moved messages differ from the originals");
    // New mail goes to the new home.
    send_from(&router, "127.0.0.60", "alice@example.test");
    assert_eq!(std::fs::read_dir(&cur).unwrap().count(), 4);
}

#[test]
fn a_changed_password_ends_the_remembered_login_at_once() {
    let router = RouterProcess::start();
    // Polling for the new password fails a few times: the test's address must not get banned.
    let extra = format!("{}[auth]\nallow = [\"127.0.0.0/8\"]\n", router.node_extra("node1", [127, 0, 0, 1]));
    let _node = MailNode::start_on([127, 0, 0, 1], "node1.example.test", &extra);
    router.wait_nodes(" up ", 1);
    router.ctl(&["domains", "add", "example.test"]);
    router.ctl(&["users", "add", "carol@example.test", "--password", "old-pw", "--home", "node1"]);
    let login = r#"
import imaplib, ssl, sys, time
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
def login(password):
    m = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]), timeout=20)
    m.starttls(ssl_context=ctx)
    try:
        m.login("carol@example.test", password)
        return "OK"
    except imaplib.IMAP4.error as e:
        return "NO"
    finally:
        m.shutdown()
def until(password, want):
    deadline = time.time() + 15
    while login(password) != want:
        assert time.time() < deadline, "no %s for %s" % (want, password)
        time.sleep(0.2)
"#;
    // Through the router to the node; the second login of the same password is the remembered one.
    let out = python(
        &format!("{login}\nuntil('old-pw', 'OK')\nprint(login('old-pw'), login('old-pw'))"),
        &[router.imap.port().to_string()],
    );
    assert_eq!(out.trim(), "OK OK");
    router.ctl(&["users", "passwd", "carol@example.test", "--password", "new-pw"]);
    // Once the node has the new hash (the new password works), the old one fails, every time.
    let out = python(
        &format!("{login}\nuntil('new-pw', 'OK')\nprint(login('old-pw'), login('old-pw'), login('new-pw'))"),
        &[router.imap.port().to_string()],
    );
    assert_eq!(out.trim(), "NO NO OK");
}

/// A frozen node (SIGSTOP) still accepts TCP connections in its kernel but greets nobody.
/// The router's health check reads the SMTP greeting as a client would, so it takes the node
/// out of routing, and only its sources move. (With the directory in etcd the node's lease
/// does the same: tests/routers.rs.)
#[test]
fn a_frozen_node_fails_its_health_check() {
    let (router, _n1, n2) = cluster();
    let sources: Vec<String> = (10..30).map(|i| format!("127.0.0.{i}")).collect();
    let before: Vec<String> = sources.iter().map(|s| predicted(&router, s)).collect();
    assert!(before.iter().any(|n| n == "node2") && before.iter().any(|n| n == "node1"), "{before:?}");
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(n2.process.pid() as libc::pid_t, libc::SIGSTOP) };
    let frozen = std::time::Instant::now();
    while !router.ctl(&["nodes", "list"]).lines().any(|l| l.starts_with("node2") && l.contains(" down ")) {
        assert!(frozen.elapsed() < std::time::Duration::from_secs(15), "node2 still up 15 s after freezing");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    eprintln!("frozen node failed its health check after {:?}", frozen.elapsed());
    for (src, was) in sources.iter().zip(&before) {
        assert_eq!(predicted(&router, src), "node1", "source {src} (was on {was})");
        if was == "node1" {
            let greeting = send_from(&router, src, "alice@example.test");
            assert!(greeting.starts_with("node1.example.test greets"), "{greeting}");
        }
    }
    // SAFETY: as above.
    unsafe { libc::kill(n2.process.pid() as libc::pid_t, libc::SIGCONT) };
    router.wait_nodes(" up ", 2);
    let after: Vec<String> = sources.iter().map(|s| predicted(&router, s)).collect();
    assert_eq!(after, before, "thawed, node2 takes its sources back");
}

/// RFC 3501 §6.3.11 (and RFC 9051): an APPEND to the selected mailbox is followed by its
/// `* n EXISTS` before the tagged OK, so the client can FETCH the message at once. With the
/// mailbox on a storage node the change stream reaches the mail node over the network, maybe
/// after the APPEND completed; the session must not wait for the next command to tell.
#[test]
fn append_to_the_selected_mailbox_on_a_storage_node_is_announced_before_the_ok() {
    let (router, _n1, _n2) = cluster();
    let storage_dir = tempfile::tempdir().unwrap();
    let storage =
        StorageNode::start_with_token(storage_dir.path().to_path_buf(), sirms_integration_tests::CLUSTER_TOKEN);
    router.ctl(&["nodes", "add", "store1", "127.0.0.1", "--storage-only", "--store", &storage.endpoint()]);
    router.ctl(&["users", "add", "dave@example.test", "--password", "dave-pw", "--home", "store1"]);
    let out = python(
        r#"
import imaplib, ssl, sys
host, port = sys.argv[1].rsplit(":", 1)
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4(host, int(port), timeout=20)
m.starttls(ssl_context=ctx)
m.login("dave@example.test", "dave-pw")
m.select("INBOX")
late = []
for i in range(1, 31):
    m.untagged_responses.pop("EXISTS", None)
    typ, _ = m.append("INBOX", None, None, b"Subject: %d\r\n\r\nbody\r\n" % i)
    assert typ == "OK"
    if m.untagged_responses.get("EXISTS", [b"0"])[-1] != str(i).encode():
        late.append(i)
    typ, data = m.fetch(str(i), "(UID)")
    assert typ == "OK", (i, data)
print("late:", late)
m.logout()
"#,
        &[router.imap.to_string()],
    );
    assert!(out.contains("late: []"), "APPENDs whose EXISTS came after the OK: {out}");
}

/// Issue 28: an append to a remote home whose answer was lost (the connection broke after the
/// store committed it) is asked again under its idempotency key, and the mail is stored once:
/// at once when the store answers the retry, and through the spool when it does not, the
/// queue's retry carrying the same key. The storage node's debug-build test switch
/// (`SIRMS_TEST_LOSE_APPEND_ANSWERS=N`) drops its first N answers to stored appends.
#[test]
fn a_delivery_whose_answer_was_lost_is_stored_once() {
    let (router, _n1, _n2) = cluster_one_copy();
    let storage_dir = tempfile::tempdir().unwrap();
    let token = sirms_integration_tests::CLUSTER_TOKEN;
    let addr: std::net::SocketAddr =
        format!("127.0.0.1:{}", sirms_integration_tests::free_port()).parse().expect("addr");
    let data = storage_dir.path().to_path_buf();
    let lose =
        |n: &str| StorageNode::start_at_with_env(addr, data.clone(), token, &[("SIRMS_TEST_LOSE_APPEND_ANSWERS", n)]);
    let mut storage = lose("1");
    router.ctl(&["nodes", "add", "store1", "127.0.0.1", "--storage-only", "--store", &storage.endpoint()]);
    router.ctl(&["users", "add", "bob@example.test", "--password", "bob-pw", "--home", "store1"]);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let inbox = |storage: &StorageNode| -> Vec<String> {
        runtime.block_on(async {
            let store = sirms_storage::RemoteStore::connect(&storage.endpoint(), token).expect("connect");
            let all = sirms_storage::UidSet::all();
            let fetched = store.fetch("bob@example.test", "INBOX", &all, sirms_storage::BodyPart::Full).await;
            let bodies = fetched.map(|m| m.into_iter().filter_map(|m| m.body).collect::<Vec<_>>()).unwrap_or_default();
            let subject = |b: &bytes::Bytes| {
                String::from_utf8_lossy(b).lines().find(|l| l.starts_with("Subject:")).unwrap_or_default().to_string()
            };
            bodies.iter().map(subject).collect()
        })
    };
    let queued = || router.ctl(&["queue", "list"]).contains("bob@example.test");

    // The first answer is lost; the retry under the same key gets the stored result: 250 with
    // the message in the mailbox once, and nothing left in a spool for later.
    let sent = send_from(&router, "127.0.0.50", "bob@example.test");
    assert!(sent.lines().nth(1).is_some_and(|l| l == "{}"), "accepted for every recipient: {sent}");
    assert_eq!(inbox(&storage), ["Subject: from 127.0.0.50"]);
    assert!(!queued(), "{}", router.ctl(&["queue", "list"]));

    // Both the answer and the retry's are lost: the message is spooled (250), and the queue's
    // retry, under the same key, finds it stored.
    storage.process.kill9();
    storage = lose("2");
    let sent = send_from(&router, "127.0.0.51", "bob@example.test");
    assert!(sent.lines().nth(1).is_some_and(|l| l == "{}"), "accepted for every recipient: {sent}");
    let start = std::time::Instant::now();
    while queued() {
        assert!(start.elapsed() < std::time::Duration::from_secs(60), "{}", router.ctl(&["queue", "list"]));
        router.ctl(&["queue", "flush"]);
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(inbox(&storage), ["Subject: from 127.0.0.50", "Subject: from 127.0.0.51"], "each message once");
}
