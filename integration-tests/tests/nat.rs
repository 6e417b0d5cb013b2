//! The router in NAT mode, end to end, in network namespaces the tests create: clients on a
//! public side with twenty source addresses, the router translating packets through a TUN
//! device, two plain mail nodes on a private side (see `sirms_integration_tests::netns`).
//! Skipped, with a message, where namespaces cannot be made (not root, no /dev/net/tun).

use std::time::{Duration, Instant};

use sirms_integration_tests::Process;
use sirms_integration_tests::netns::{
    self, ALIASES, NODE_IPS, NatCluster, NatLab, PUBLIC, REMOTE_MTA, client, start_remote_mta,
};

fn lab() -> Option<NatLab> {
    if let Some(why) = netns::unavailable() {
        eprintln!("SKIPPED: NAT-mode tests need network namespaces: {why}");
        return None;
    }
    match NatLab::create() {
        Ok(lab) => Some(lab),
        Err(e) => {
            eprintln!("SKIPPED: cannot build the namespace lab: {e}");
            None
        }
    }
}

/// Sends one message to `rcpt` through `server:25` from source `src`; prints the greeting.
const SEND_FROM: &str = r#"
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], 25, source_address=(sys.argv[2], 0), timeout=20)
code, greeting = s.ehlo("client.test")
print(greeting.decode().splitlines()[0])
print(s.sendmail(sys.argv[3], [sys.argv[4]], ("Subject: from %s\r\n\r\nhi\r\n" % sys.argv[2]).encode()))
s.quit()
"#;

fn send(ns: &netns::Netns, server: &str, src: &str, from: &str, rcpt: &str) -> String {
    let args = [server, src, from, rcpt].map(String::from);
    ns.python(SEND_FROM, &args).lines().next().unwrap_or_default().to_string()
}

/// Reads alice's newest message over IMAP (STARTTLS) through the public address from `src`.
const IMAP_FROM: &str = r#"
import imaplib, socket, ssl, sys
class FromSource(imaplib.IMAP4):
    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(sys.argv[2], 0))
m = FromSource(sys.argv[1], 143, timeout=20)
print(m.welcome.decode())
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m.starttls(ssl_context=ctx)
m.login("alice@example.test", "alice-pw")
typ, data = m.select("INBOX")
typ, data = m.fetch(data[0].decode(), "(BODY.PEEK[HEADER.FIELDS (SUBJECT RECEIVED)])")
print(data[0][1].decode().strip())
m.logout()
"#;

/// Waits (bounded) until the router's translation table holds `flows` flows; returns the last
/// status (the router publishes its counts twice a second).
fn wait_flows(cluster: &NatCluster, flows: u64) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let nat = cluster.nat_status();
        if nat["flows"] == flows || start.elapsed() > Duration::from_secs(20) {
            return nat;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Sends a datagram from `argv[2]` to port 9 of `argv[1]`, where nothing listens.
const UDP_TO_CLOSED_PORT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.bind((sys.argv[2], 0))
s.connect((sys.argv[1], 9))
s.send(b"x")
try:
    s.recv(100)
    print("data")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
"#;

#[test]
fn smtp_and_imap_pass_through_nat_and_nodes_send_from_their_alias_and_hear_icmp_errors() {
    let Some(lab) = lab() else { return };
    let (mut remote, remote_dir) = start_remote_mta(&lab);
    let cluster = NatCluster::start(lab);
    // The table sends 198.18.1.0/29 (sources .1-.7) to node2; the rest are hashed.
    cluster.ctl(&["routes", "add", "198.18.1.0/29", "node2"]);

    let mut served = std::collections::BTreeMap::new();
    for i in 1..=20 {
        let src = client(i);
        let want = cluster.predicted(&src);
        if i < 8 {
            assert_eq!(want, "node2", "{src} is in the table");
        }
        // The node greets the real client address: no PROXY header, nothing but NAT.
        let greeting = send(&cluster.lab.public, PUBLIC, &src, "x@remote.test", "alice@example.test");
        assert_eq!(greeting, format!("{want}.example.test greets [{src}]"), "source {src}");
        *served.entry(want).or_insert(0) += 1;
    }
    assert_eq!(served.len(), 2, "twenty sources reach both nodes: {served:?}");
    let inbox = cluster.inbox(0, "alice@example.test");
    assert_eq!(inbox.len(), 20, "every message is in alice's mailbox on node1");
    assert!(inbox.iter().any(|m| m.contains("by node2.example.test") && m.contains("([198.18.1.3])")));

    // IMAP through the public address, from a source the table gives to node2, which reads
    // alice's mailbox from node1 over the private network.
    let imap = cluster.lab.public.python(IMAP_FROM, &[PUBLIC.to_string(), client(3)]);
    assert!(imap.contains("node2.example.test IMAP4rev1"), "{imap}");
    assert!(imap.contains("Subject: from 198.18.1.20"), "{imap}");

    // A node's own outbound SMTP session leaves from its alias, and the replies find it.
    for (ip, alias) in NODE_IPS.iter().zip(ALIASES) {
        let greeting = send(&cluster.lab.nodes, REMOTE_MTA, ip, "alice@example.test", "rcpt@remote.test");
        assert_eq!(greeting, format!("mx.remote.test greets [{alias}]"));
    }
    let received = netns::read_inbox(&remote_dir.path().join("data"), "rcpt@remote.test");
    assert_eq!(received.len(), 2);
    for alias in ALIASES {
        assert!(received.iter().any(|m| m.contains(&format!("([{alias}])"))), "{alias} in {received:?}");
    }

    // The remote host's ICMP error about a node's datagram (port unreachable) is translated
    // back to the node, whose socket sees the refusal.
    let udp = cluster.lab.nodes.python(UDP_TO_CLOSED_PORT, &[REMOTE_MTA.to_string(), NODE_IPS[0].to_string()]);
    assert_eq!(udp.trim(), "refused");

    // Every flow ended, so the table empties.
    let nat = wait_flows(&cluster, 0);
    assert_eq!(nat["flows"], 0, "{nat}");
    assert!(nat["flows_opened"].as_u64().unwrap_or_default() >= 24, "{nat}");
    assert_eq!(nat["flows_reset"], 0, "{nat}");
    remote.stop();
}

/// Holds an SMTP session open from `src` and reports how the wait for more ended.
const HOLD: &str = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], 25), timeout=60, source_address=(sys.argv[2], 0))
f = s.makefile("rb")
print(f.readline().decode().strip(), flush=True)
t = time.time()
try:
    data = s.recv(1000)
    print("closed" if not data else "data", round(time.time() - t, 1), flush=True)
except ConnectionResetError:
    print("reset", round(time.time() - t, 1), flush=True)
except socket.timeout:
    print("timeout", round(time.time() - t, 1), flush=True)
"#;

#[test]
fn flows_of_a_dead_node_are_reset_and_its_sources_move() {
    let Some(lab) = lab() else { return };
    let cluster = NatCluster::start(lab);
    cluster.ctl(&["routes", "add", "198.18.1.0/29", "node2"]);
    let src = client(2);
    let mut child = cluster
        .lab
        .public
        .command("python3")
        .args(["-u", "-c", HOLD, PUBLIC, &src])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut hold = Process::from_child(child);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).expect("greeting");
    assert!(line.starts_with("220 node2.example.test"), "{line}");
    assert_eq!(wait_flows(&cluster, 1)["flows"], 1);

    // node2 vanishes without a word (its address is gone: packets to it are black-holed).
    cluster.lab.nodes.ip(&["addr", "del", &format!("{}/24", NODE_IPS[1]), "dev", "nod0"]);
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).expect("outcome");
    let _ = hold.child().wait();
    // Three failed health checks a second apart (each up to a second), then the reset.
    let (outcome, secs) = line.trim().split_once(' ').expect("outcome and time");
    assert_eq!(outcome, "reset", "{line}");
    assert!(secs.parse::<f64>().expect("seconds") < 15.0, "{line}");
    cluster.wait_nodes(" down ", 1);
    let nat = cluster.nat_status();
    assert_eq!(nat["flows_reset"], 1, "{nat}");

    // The source is in node2's table entry, yet it is served by node1 now.
    let greeting = send(&cluster.lab.public, PUBLIC, &src, "x@remote.test", "alice@example.test");
    assert_eq!(greeting, format!("node1.example.test greets [{src}]"));
    assert_eq!(wait_flows(&cluster, 0)["flows"], 0);
}
