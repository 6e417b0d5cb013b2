//! Replicated mailboxes across real processes: two mail nodes, a router on etcd, one user
//! homed on node1 with a replica on node2. node1 is killed (SIGKILL) after mail arrived and
//! flags changed; the router promotes the replica when node1's lease expires, and node2
//! serves the same mailbox — UIDVALIDITY, UIDs, flags and bytes — with every acknowledged
//! message there. Mail goes on arriving with the replica down (marked out of sync first);
//! node1 comes back as the replica and is caught up to the same messages, file for file.
//! A replica that comes back on an empty disk is caught up too, without waiting for a write.
//! Storage nodes, which hold no lease, fail over on the router's probes of their Store service.

use std::time::{Duration, Instant};

use sirms_integration_tests::etcd::EtcdCluster;
use sirms_integration_tests::{CLUSTER_TOKEN, MailNode, RouterProcess, StorageNode, metrics_page, python};

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

/// UIDVALIDITY, then one line per message: UID, flags without \Recent, subject, SHA-256 of the
/// bytes.
const LISTING: &str = r#"
print("uidvalidity", m.response("UIDVALIDITY")[1][0].decode())
typ, data = m.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
for item in data:
    if not isinstance(item, tuple):
        continue
    head, body = item[0].decode(), item[1]
    uid = re.search(r"UID (\d+)", head).group(1)
    flags = " ".join(sorted(f for f in re.search(r"FLAGS \(([^)]*)\)", head).group(1).split() if f != "\\Recent"))
    subject = re.search(rb"Subject: ([^\r\n]*)", body)
    subject = subject.group(1).decode() if subject else ""
    print(uid, "[" + flags + "]", repr(subject), hashlib.sha256(body).hexdigest())
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

/// Sends `n` messages to `user` through `node`; all must get a 250.
fn deliver_to(node: &MailNode, user: &str, n: usize) {
    let out = python(
        r#"
import smtplib, sys
host, port, user, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
s = smtplib.SMTP(host, port, timeout=30, source_address=("127.0.0.3", 0))
for i in range(n):
    s.sendmail("x@remote.test", [user], ("Subject: %s %d\r\n\r\nbody %d\r\n" % (user, i, i)).encode())
s.quit()
print("sent")
"#,
        &[node.smtp.ip().to_string(), node.smtp.port().to_string(), user.to_string(), n.to_string()],
    );
    assert_eq!(out.trim(), "sent");
}

/// node1 holds alice's primary and bob's replica; its store is wiped (a replaced disk) and it
/// comes back empty. It must not serve alice from its empty store nor count as bob's copy:
/// alice's replica becomes her home, bob's copy on node1 is marked out of sync, and both are
/// refilled from node2, file for file.
#[test]
fn a_node_whose_disk_was_replaced_is_refilled_from_the_other_copies() {
    const BOB: &str = "bob@example.test";
    let etcd = EtcdCluster::start(1);
    let router = RouterProcess::start_etcd(&etcd.endpoints(), "/sirms-wiped");
    let mut n1 = MailNode::start_on([127, 0, 0, 1], "node1.example.test", &router.node_extra("node1", [127, 0, 0, 1]));
    let n2 = MailNode::start_on([127, 0, 0, 2], "node2.example.test", &router.node_extra("node2", [127, 0, 0, 2]));
    router.wait_nodes(" up ", 2);
    router.ctl(&["domains", "add", "example.test"]);
    router.ctl(&["users", "add", USER, "--password", "alice-pw", "--home", "node1", "--replica", "node2"]);
    router.ctl(&["users", "add", BOB, "--password", "bob-pw", "--home", "node2", "--replica", "node1"]);
    eventually("node1 knows alice and bob", Duration::from_secs(15), || {
        deliver_to(&n1, USER, 1);
        deliver_to(&n1, BOB, 1);
    });
    deliver_to(&n1, USER, 9);
    deliver_to(&n1, BOB, 9);
    assert_eq!((n1.inbox(USER).len(), n1.inbox(BOB).len()), (10, 10));

    n1.process.kill9();
    std::fs::remove_dir_all(n1.dir.path().join("data/store")).expect("wipe node1's store");
    n1.restart();
    let show = |user: &str| router.ctl(&["users", "show", user]);
    let start = Instant::now();
    let refilled = || {
        let (alice, bob) = (show(USER), show(BOB));
        alice.contains("home     node2")
            && alice.contains("in sync  yes")
            && bob.contains("in sync  yes")
            && n1.inbox(BOB).len() == 10
    };
    while !refilled() {
        assert!(start.elapsed() < Duration::from_secs(40), "not refilled in 40 s:\n{}\n{}", show(USER), show(BOB));
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("node1 refilled {:?} after its restart:\n{}{}", start.elapsed(), show(USER), show(BOB));
    for user in [USER, BOB] {
        let copy = n2.inbox(user);
        assert_eq!(copy.len(), 10, "{user}: every message on node2");
        assert_eq!(n1.inbox(user), copy, "{user}: node1's refilled copy is node2's, file for file");
    }
}

/// `sirms ctl users move` for a user with a replica goes through it: the target becomes the
/// replica, catches up, becomes the home, and the old home stays as the replica — while mail
/// keeps arriving: every message acknowledged is there once, with the same copies on both.
#[test]
fn a_move_goes_through_the_replica_while_mail_arrives() {
    let etcd = EtcdCluster::start(1);
    let router = RouterProcess::start_etcd(&etcd.endpoints(), "/sirms-move");
    let n1 = MailNode::start_on([127, 0, 0, 1], "node1.example.test", &router.node_extra("node1", [127, 0, 0, 1]));
    let n2 = MailNode::start_on([127, 0, 0, 2], "node2.example.test", &router.node_extra("node2", [127, 0, 0, 2]));
    let n3 = MailNode::start_on([127, 0, 0, 4], "node3.example.test", &router.node_extra("node3", [127, 0, 0, 4]));
    router.wait_nodes(" up ", 3);
    router.ctl(&["domains", "add", "example.test"]);
    router.ctl(&["users", "add", USER, "--password", "alice-pw", "--home", "node1", "--replica", "node2"]);
    eventually("node2 knows alice", Duration::from_secs(15), || assert_eq!(deliver(&n2, 0, 1), 1));
    assert_eq!(deliver(&n2, 1, 19), 19);
    let arriving = std::thread::spawn(move || {
        let acked = deliver(&n2, 20, 40);
        (acked, n2)
    });
    let moved = router.ctl(&["users", "move", USER, "--to", "node3", "--wait-secs", "60"]);
    assert!(moved.contains("through its replica"), "{moved}");
    let (acked, _n2) = arriving.join().expect("delivery thread");
    assert_eq!(acked, 40, "every message sent during the move was acknowledged");
    let card = wait_user(&router, "home node3, node1 in sync", Duration::from_secs(30), |c| {
        c.contains("home     node3") && c.contains("replica  node1") && c.contains("in sync  yes")
    });
    eprintln!("settled {card:?} after the move returned");
    let copy = n3.inbox(USER);
    let mut subjects: Vec<String> = copy
        .iter()
        .map(|m| String::from_utf8_lossy(m).lines().find(|l| l.starts_with("Subject: ")).unwrap_or("").to_string())
        .collect();
    subjects.sort();
    subjects.dedup();
    assert_eq!((copy.len(), subjects.len()), (60, 60), "60 acknowledged messages, each once");
    assert_eq!(n1.inbox(USER), copy, "the old home keeps the same copy, file for file");
}

/// `sirms ctl nodes evacuate node1`: node1 is home of one user and replica of two; afterwards
/// it holds no copy of anyone, every user has two copies in sync on the other nodes, equal
/// file for file, and mail sent meanwhile is all there.
#[test]
fn evacuating_a_node_moves_every_copy_off_it() {
    let users = ["alice@example.test", "bob@example.test", "carol@example.test"];
    let etcd = EtcdCluster::start(1);
    let router = RouterProcess::start_etcd(&etcd.endpoints(), "/sirms-evacuate");
    let nodes = [
        MailNode::start_on([127, 0, 0, 1], "node1.example.test", &router.node_extra("node1", [127, 0, 0, 1])),
        MailNode::start_on([127, 0, 0, 2], "node2.example.test", &router.node_extra("node2", [127, 0, 0, 2])),
        MailNode::start_on([127, 0, 0, 4], "node3.example.test", &router.node_extra("node3", [127, 0, 0, 4])),
    ];
    router.wait_nodes(" up ", 3);
    router.ctl(&["domains", "add", "example.test"]);
    for (user, home, replica) in
        [(users[0], "node1", "node2"), (users[1], "node2", "node1"), (users[2], "node3", "node1")]
    {
        router.ctl(&["users", "add", user, "--password", "pw", "--home", home, "--replica", replica]);
    }
    eventually("node2 knows every user", Duration::from_secs(15), || {
        for user in users {
            deliver_to(&nodes[1], user, 1);
        }
    });
    for user in users {
        deliver_to(&nodes[1], user, 4);
    }
    // A fourth node takes mail for alice during the evacuation (it may also receive copies).
    let sender = MailNode::start_on([127, 0, 0, 5], "node4.example.test", &router.node_extra("node4", [127, 0, 0, 5]));
    router.wait_nodes(" up ", 4);
    let out = std::thread::scope(|scope| {
        scope.spawn(|| {
            eventually("node4 knows alice", Duration::from_secs(15), || deliver_to(&sender, users[0], 1));
            deliver_to(&sender, users[0], 9);
        });
        router.ctl(&["nodes", "evacuate", "node1", "--wait-secs", "60"])
    });
    assert!(out.contains("node1 evacuated"), "{out}");
    let nodes: Vec<&MailNode> = nodes.iter().chain([&sender]).collect();
    let id_of = |n: &MailNode| n.hostname.split('.').next().unwrap_or_default().to_string();
    for (user, want) in users.into_iter().zip([15, 5, 5]) {
        let card = router.ctl(&["users", "show", user]);
        assert!(!card.contains("node1") && card.contains("in sync  yes"), "{card}");
        let holders: Vec<&&MailNode> = nodes.iter().filter(|n| card.contains(&format!(" {}\n", id_of(n)))).collect();
        assert_eq!(holders.len(), 2, "{card}");
        let copy = holders[0].inbox(user);
        assert_eq!(copy.len(), want, "{user}: every message, once");
        assert_eq!(holders[1].inbox(user), copy, "{user}: both copies file for file");
    }
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

/// Storage nodes hold no lease: the router probes their Store service. alice's home is
/// storage1, her replica storage2, and a mail node serves her. storage1 is killed (SIGKILL):
/// within 10 s the directory names storage2 her home; through the mail node her mailbox is
/// the same, UIDVALIDITY, UIDs and bytes; and new mail is accepted and read there.
#[test]
fn a_dead_storage_home_fails_over_to_its_storage_replica() {
    let etcd = EtcdCluster::start(1);
    let router = RouterProcess::start_etcd(&etcd.endpoints(), "/sirms-storage-failover");
    let stores = tempfile::tempdir().expect("tempdir");
    let mut storage1 = StorageNode::start_with_token(stores.path().join("storage1"), CLUSTER_TOKEN);
    let storage2 = StorageNode::start_with_token(stores.path().join("storage2"), CLUSTER_TOKEN);
    let node = MailNode::start_on([127, 0, 0, 1], "node1.example.test", &router.node_extra("node1", [127, 0, 0, 1]));
    router.wait_nodes(" up ", 1);
    for (id, store) in [("storage1", &storage1), ("storage2", &storage2)] {
        router.ctl(&["nodes", "add", id, "127.0.0.1", "--storage-only", "--store", &store.endpoint()]);
    }
    router.ctl(&["domains", "add", "example.test"]);
    router.ctl(&["users", "add", USER, "--password", "alice-pw", "--home", "storage1", "--replica", "storage2"]);
    eventually("the router probes both storage nodes", Duration::from_secs(10), || {
        let page = metrics_page(router.metrics);
        for id in ["storage1", "storage2"] {
            let up = format!("sirms_node_service_up{{node=\"{id}\",service=\"store\"}} 1");
            assert!(page.contains(&up), "{id}'s Store service is probed:\n{page}");
        }
    });

    let acked = eventually("node1 knows alice", Duration::from_secs(15), || {
        let n = deliver(&node, 0, 1);
        assert_eq!(n, 1);
        n
    });
    assert_eq!(acked + deliver(&node, 1, 4), 5);
    let before = imap(&node, LISTING);
    assert_eq!(before.lines().count(), 1 + 5, "{before}");
    let card = router.ctl(&["users", "show", USER]);
    assert!(card.contains("home     storage1\nreplica  storage2\nin sync  yes"), "{card}");

    storage1.process.kill9();
    let took = wait_user(&router, "failover to storage2", Duration::from_secs(10), |c| c.contains("home     storage2"));
    eprintln!("storage2 named alice's home {took:?} after storage1 was killed");
    let card = router.ctl(&["users", "show", USER]);
    assert!(card.contains("replica  storage1\nin sync  no"), "the old home must be caught up first: {card}");
    let after = eventually("node1 serves alice from storage2", Duration::from_secs(15), || {
        let listing = imap(&node, LISTING);
        assert_eq!(listing, before);
        listing
    });
    assert_eq!(after, before, "same UIDVALIDITY, UIDs and bytes after the failover");

    // New mail: the new home takes it alone (its replica is down, and already out of sync).
    eventually("a delivery to the new home", Duration::from_secs(15), || assert_eq!(deliver(&node, 5, 1), 1));
    let now = imap(&node, LISTING);
    let (old, new) = now.split_at(before.len());
    assert_eq!(old, before, "{now}");
    let new: Vec<&str> = new.lines().collect();
    assert_eq!(new.len(), 1, "{now}");
    assert!(new[0].starts_with("6 [] 'message 5' "), "the next UID, with the new message: {now}");

    // The router shows what it saw.
    let page = metrics_page(router.metrics);
    assert!(page.contains("sirms_node_service_up{node=\"storage1\",service=\"store\"} 0"), "{page}");
    assert!(page.contains("sirms_node_service_up{node=\"storage2\",service=\"store\"} 1"), "{page}");
    let list = router.ctl(&["nodes", "list"]);
    let row = |id: &str| list.lines().find(|l| l.starts_with(id)).unwrap_or_default().to_string();
    assert!(row("storage1").contains(" down ") && row("storage2").contains(" up "), "{list}");
}
