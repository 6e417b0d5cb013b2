//! Outbound delivery seen from the remote side: a scripted SMTP server on 127.0.0.4 that
//! the node reaches through a static transport, from its egress address 127.0.0.3.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sirms_integration_tests::{MailNode, Process, RouterProcess, free_port_on, metrics_page, python};

/// A remote MTA: `python3 -c MTA HOST PORT LOGFILE [dsn]`. Appends one JSON line per event
/// (`mail` with the peer address, `rcpt` with the reply given, `data` with the message).
/// Recipients script the replies: `reject…@` gets 550 5.1.1, `defer-once@` 451 the first time.
/// With `dsn` it offers the DSN extension.
const MTA: &str = r#"
import json, socketserver, sys, threading
host, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
dsn = sys.argv[4:] == ["dsn"]
lock, deferred = threading.Lock(), set()
def record(**event):
    with lock, open(log, "a") as f:
        f.write(json.dumps(event) + "\n")
class Session(socketserver.StreamRequestHandler):
    def reply(self, line):
        self.wfile.write((line + "\r\n").encode())
    def handle(self):
        self.reply("220 mx.far.test ESMTP test")
        rcpts = []
        while True:
            line = self.rfile.readline()
            if not line:
                return
            cmd = line.decode(errors="replace").strip()
            verb = cmd.split(" ")[0].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250-mx.far.test\r\n" + ("250-DSN\r\n" if dsn else "") + "250 SIZE 10000000")
            elif verb == "MAIL":
                rcpts = []
                record(event="mail", cmd=cmd, peer=self.client_address[0])
                self.reply("250 2.1.0 ok")
            elif verb == "RCPT":
                addr = cmd[cmd.index("<") + 1:cmd.index(">")]
                if addr.split("@")[0].startswith("reject"):
                    answer = "550 5.1.1 no such user here"
                elif addr.startswith("defer-once@") and addr not in deferred:
                    deferred.add(addr)
                    answer = "451 4.3.0 try again later"
                else:
                    answer = "250 2.1.5 ok"
                    rcpts.append(addr)
                record(event="rcpt", rcpt=addr, answer=answer, cmd=cmd)
                self.reply(answer)
            elif verb == "DATA":
                self.reply("354 go ahead")
                data = b""
                while True:
                    l = self.rfile.readline()
                    if l in (b".\r\n", b""):
                        break
                    data += l[1:] if l.startswith(b"..") else l
                record(event="data", rcpts=rcpts, data=data.decode(errors="replace"))
                self.reply("250 2.0.0 queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 ok")
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer((host, port), Session).serve_forever()
"#;

/// Submits one message as alice (AUTH PLAIN over the plain submission port), from
/// 127.0.0.5: in the cluster test 127.0.0.1 is the router, whose connections must carry PROXY.
const SUBMIT: &str = r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=20, source_address=("127.0.0.5", 0))
s.login("alice@example.test", "alice-pw")
refused = s.sendmail("alice@example.test", sys.argv[3:], sys.argv[2].encode())
print("refused", refused)
s.quit()
"#;

/// The newest message in alice's INBOX parsed as a DSN: prints the report's parts.
const READ_DSN: &str = r#"
import email, sys
msg = email.message_from_bytes(open(sys.argv[1], "rb").read())
print("type", msg.get_content_type(), msg.get_param("report-type"))
print("to", msg["To"], "auto", msg["Auto-Submitted"])
for part in msg.walk():
    print("part", part.get_content_type())
    if part.get_content_type() == "message/delivery-status":
        for block in part.get_payload():
            for k in ("Original-Envelope-Id", "Original-Recipient", "Final-Recipient", "Action", "Status",
                      "Diagnostic-Code"):
                if block[k]:
                    print(k, block[k])
"#;

/// Verifies the DKIM signature of argv[1]'s file with dkimpy, an independent verifier,
/// answering its DNS query with argv[2] (the TXT record `sirms ctl dkim` printed) for the
/// name argv[3] only.
const VERIFY_DKIM: &str = r#"
import dkim, sys
message = open(sys.argv[1], "rb").read()
def dns(name, timeout=5):
    assert name.decode().rstrip(".") == sys.argv[3], name
    return sys.argv[2].encode()
print("dkim", "pass" if dkim.verify(message, dnsfunc=dns) else "fail")
"#;

struct Mta {
    _process: Process,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Mta {
    fn start(dir: &std::path::Path, port: u16) -> Mta {
        Mta::start_with(dir, port, "")
    }

    /// With `extra` "dsn", an MTA that offers DSN.
    fn start_with(dir: &std::path::Path, port: u16, extra: &str) -> Mta {
        let log = dir.join("mta.log");
        let ip = Ipv4Addr::new(127, 0, 0, 4);
        let child = Command::new("python3")
            .args(["-c", MTA, &ip.to_string(), &port.to_string(), log.to_str().expect("utf-8"), extra])
            .stdin(Stdio::null())
            .spawn()
            .expect("start python3 test MTA");
        let mut process = Process::from_child(child);
        let addr = SocketAddr::from((ip, port));
        process.wait_listening("test MTA", &[addr]);
        Mta { _process: process, addr, log }
    }

    fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Messages received (DATA events), waiting (bounded) until there are at least `n`.
    fn wait_data(&self, n: usize) -> Vec<serde_json::Value> {
        let start = Instant::now();
        loop {
            let data: Vec<_> = self.events().into_iter().filter(|e| e["event"] == "data").collect();
            if data.len() >= n || start.elapsed() > Duration::from_secs(30) {
                return data;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn node_with_transport(mta_port: u16) -> MailNode {
    MailNode::start(
        "out-node.example.test",
        &format!(
            "allow_plaintext_auth = true\n[outbound]\negress = \"127.0.0.3\"\nretry_initial_secs = 1\n\
             retry_max_secs = 2\ntransports = {{ \"far.test\" = \"127.0.0.4:{mta_port}\" }}\n"
        ),
    )
}

fn submit(node: &MailNode, message: &str, rcpts: &[&str]) -> String {
    let mut args = vec![node.submission.port().to_string(), message.to_string()];
    args.extend(rcpts.iter().map(|r| r.to_string()));
    python(SUBMIT, &args)
}

#[test]
fn delivers_from_the_egress_address_retries_once_and_bounces_to_the_sender() {
    let work = tempfile::tempdir().expect("tempdir");
    let mta_port = free_port_on(Ipv4Addr::new(127, 0, 0, 4));
    let mta = Mta::start(work.path(), mta_port);
    let node = node_with_transport(mta_port);
    let message =
        "From: Alice <alice@example.test>\r\nTo: far people\r\nSubject: outbound\r\n\r\nhello far\r\n.dot line\r\n";
    let out = submit(&node, message, &["ok@far.test", "defer-once@far.test", "reject@far.test"]);
    assert_eq!(out.trim(), "refused {}", "the node takes every foreign recipient of its user");

    // ok@ at the first attempt; defer-once@ at the retry, once.
    let data = mta.wait_data(2);
    assert_eq!(data.len(), 2, "{:#?}", mta.events());
    assert_eq!(data[0]["rcpts"], serde_json::json!(["ok@far.test"]));
    assert_eq!(data[1]["rcpts"], serde_json::json!(["defer-once@far.test"]));
    for d in &data {
        let body = d["data"].as_str().expect("data");
        assert!(body.ends_with(message), "the message arrives unchanged after our trace header: {body:?}");
        assert!(body.starts_with("Received: "), "{body:?}");
    }
    let events = mta.events();
    let peers: Vec<&str> = events.iter().filter(|e| e["event"] == "mail").filter_map(|e| e["peer"].as_str()).collect();
    assert!(!peers.is_empty() && peers.iter().all(|p| *p == "127.0.0.3"), "egress address: {peers:?}");
    let tries = |rcpt: &str| events.iter().filter(|e| e["event"] == "rcpt" && e["rcpt"] == rcpt).count();
    assert_eq!((tries("ok@far.test"), tries("defer-once@far.test"), tries("reject@far.test")), (1, 2, 1));

    // reject@ came back to alice as a delivery status notification.
    let start = Instant::now();
    let mut inbox = node.inbox("alice@example.test");
    while inbox.is_empty() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
        inbox = node.inbox("alice@example.test");
    }
    assert_eq!(inbox.len(), 1, "one bounce");
    let dsn_path = work.path().join("dsn.eml");
    std::fs::write(&dsn_path, &inbox[0]).expect("write dsn");
    let report = python(READ_DSN, &[dsn_path.to_str().expect("utf-8").to_string()]);
    for line in [
        "type multipart/report delivery-status",
        "to <alice@example.test> auto auto-replied",
        "part message/delivery-status",
        "part text/rfc822-headers",
        "Final-Recipient rfc822; reject@far.test",
        "Action failed",
        "Status 5.1.1",
        "Diagnostic-Code smtp; 550 5.1.1 no such user here",
    ] {
        assert!(report.lines().any(|l| l == line), "{line:?} missing from the report:\n{report}");
    }
    assert!(!report.contains("ok@far.test"), "only the failed recipient is reported:\n{report}");
}

/// Submits as alice with DSN parameters: argv[1] port, argv[2] message, argv[3] MAIL
/// parameters, then `rcpt|parameters` pairs; prints the refused ones.
const SUBMIT_DSN: &str = r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=20, source_address=("127.0.0.5", 0))
s.login("alice@example.test", "alice-pw")
s.ehlo()
assert s.has_extn("dsn"), s.esmtp_features
code, reply = s.mail("alice@example.test", sys.argv[3].split())
assert code == 250, (code, reply)
for pair in sys.argv[4:]:
    rcpt, params = pair.split("|")
    code, reply = s.rcpt(rcpt, params.split())
    assert code == 250, (rcpt, code, reply)
code, reply = s.data(sys.argv[2].encode())
print(code)
s.quit()
"#;

/// RFC 3461 end to end: the sender's NOTIFY, RET, ENVID and ORCPT decide which notices come
/// back and what they say — a delivery report for a local user, a "relayed" one for a hop
/// without DSN, a failure returned whole (RET=FULL), none for NOTIFY=NEVER — and a hop that
/// speaks DSN gets the parameters passed on and reports for itself.
#[test]
fn dsn_requests_decide_the_notices_and_travel_to_a_hop_that_speaks_dsn() {
    let work = tempfile::tempdir().expect("tempdir");
    let (plain_port, dsn_port) = (free_port_on(Ipv4Addr::new(127, 0, 0, 4)), free_port_on(Ipv4Addr::new(127, 0, 0, 4)));
    let plain_dir = work.path().join("plain");
    let dsn_dir = work.path().join("dsn");
    std::fs::create_dir_all(&plain_dir).expect("dir");
    std::fs::create_dir_all(&dsn_dir).expect("dir");
    let plain = Mta::start(&plain_dir, plain_port);
    let speaks_dsn = Mta::start_with(&dsn_dir, dsn_port, "dsn");
    let node = MailNode::start(
        "out-node.example.test",
        &format!(
            "allow_plaintext_auth = true\n[outbound]\negress = \"127.0.0.3\"\nretry_initial_secs = 1\n\
             retry_max_secs = 2\ntransports = {{ \"far.test\" = \"127.0.0.4:{plain_port}\", \
             \"dsn.test\" = \"127.0.0.4:{dsn_port}\" }}\n"
        ),
    );
    let message = "From: Alice <alice@example.test>\r\nSubject: tell me\r\n\r\nthe whole body\r\n";
    let args = [
        node.submission.port().to_string(),
        message.to_string(),
        "RET=FULL ENVID=QQ314".to_string(),
        "bob@example.test|NOTIFY=SUCCESS ORCPT=rfc822;Bob@example.test".to_string(),
        "ok@far.test|NOTIFY=SUCCESS,FAILURE".to_string(),
        "reject-quiet@far.test|NOTIFY=NEVER".to_string(),
        "reject-loud@far.test|NOTIFY=FAILURE".to_string(),
        "ok@dsn.test|NOTIFY=SUCCESS ORCPT=rfc822;OK@dsn.test".to_string(),
    ];
    assert_eq!(python(SUBMIT_DSN, &args).trim(), "250");

    // Three notices: bob delivered, ok@far.test relayed, reject-loud@ failed.
    let start = Instant::now();
    let mut inbox = node.inbox("alice@example.test");
    while inbox.len() < 3 && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
        inbox = node.inbox("alice@example.test");
    }
    std::thread::sleep(Duration::from_secs(2)); // nothing more comes
    let inbox = node.inbox("alice@example.test");
    let reports: Vec<String> = inbox
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let path = work.path().join(format!("notice{i}.eml"));
            std::fs::write(&path, bytes).expect("write notice");
            python(READ_DSN, &[path.to_str().expect("utf-8").to_string()])
        })
        .collect();
    assert_eq!(reports.len(), 3, "{reports:#?}");
    let find = |action: &str| {
        reports
            .iter()
            .find(|r| r.lines().any(|l| l == format!("Action {action}")))
            .unwrap_or_else(|| panic!("no {action} notice: {reports:#?}"))
    };
    let delivered = find("delivered");
    for line in [
        "Original-Envelope-Id QQ314",
        "Original-Recipient rfc822; Bob@example.test",
        "Final-Recipient rfc822; bob@example.test",
        "Status 2.0.0",
        "part text/rfc822-headers",
    ] {
        assert!(delivered.lines().any(|l| l == line), "{line:?} missing:\n{delivered}");
    }
    let relayed = find("relayed");
    assert!(relayed.lines().any(|l| l == "Final-Recipient rfc822; ok@far.test"), "{relayed}");
    let failed = find("failed");
    assert!(failed.lines().any(|l| l == "Final-Recipient rfc822; reject-loud@far.test"), "{failed}");
    assert!(!failed.contains("reject-quiet"), "NOTIFY=NEVER: not reported\n{failed}");
    assert!(failed.lines().any(|l| l == "part message/rfc822"), "RET=FULL returns the message:\n{failed}");
    let notice = inbox.iter().find(|m| String::from_utf8_lossy(m).contains("Action: failed")).expect("bounce");
    assert!(String::from_utf8_lossy(notice).contains("the whole body"), "the body comes back whole");
    assert!(reports.iter().all(|r| !r.contains("dsn.test")), "the DSN hop reports for itself");

    // The hop that speaks DSN got the sender's parameters with the message.
    let events = speaks_dsn.events();
    let mail = events.iter().find(|e| e["event"] == "mail").expect("MAIL at the DSN hop");
    assert!(mail["cmd"].as_str().unwrap_or_default().ends_with(" RET=FULL ENVID=QQ314"), "{mail}");
    let rcpt = events.iter().find(|e| e["event"] == "rcpt").expect("RCPT at the DSN hop");
    assert_eq!(rcpt["cmd"], "RCPT TO:<ok@dsn.test> NOTIFY=SUCCESS ORCPT=rfc822;OK@dsn.test", "{rcpt}");
    // The other one did not: it never said it could take them.
    let plain_mail = plain.events().into_iter().find(|e| e["event"] == "mail").expect("MAIL at the plain hop");
    assert!(!plain_mail["cmd"].as_str().unwrap_or_default().contains("RET="), "{plain_mail}");
}

#[test]
fn a_node_killed_with_undelivered_mail_delivers_it_after_restart() {
    let work = tempfile::tempdir().expect("tempdir");
    let mta_port = free_port_on(Ipv4Addr::new(127, 0, 0, 4));
    let mut node = node_with_transport(mta_port);
    // The remote side is down: the message waits in the queue.
    let message = "Subject: later\r\n\r\nwaited for the remote side\r\n";
    assert_eq!(submit(&node, message, &["later@far.test"]).trim(), "refused {}");
    let queue = node.dir.path().join("data/queue/env");
    let queued = || std::fs::read_dir(&queue).map(|d| d.count()).unwrap_or(0);
    assert_eq!(queued(), 1);
    std::thread::sleep(Duration::from_secs(3)); // at least one failed attempt
    let envelope = std::fs::read_dir(&queue).expect("queue").flatten().next().expect("envelope").path();
    let text = std::fs::read_to_string(envelope).expect("envelope");
    assert!(text.contains("error later@far.test") && text.contains("127.0.0.4"), "last error kept: {text}");

    node.restart();
    let mta = Mta::start(work.path(), mta_port);
    let data = mta.wait_data(1);
    assert_eq!(data.len(), 1, "{:#?}", mta.events());
    assert!(data[0]["data"].as_str().expect("data").ends_with(message));
    let start = Instant::now();
    while queued() > 0 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(queued(), 0, "the queue is empty once the remote side took it");
    assert_eq!(mta.addr.port(), mta_port);
}

#[test]
fn the_admins_transport_and_queue_commands_reach_every_node() {
    let work = tempfile::tempdir().expect("tempdir");
    let mta_port = free_port_on(Ipv4Addr::new(127, 0, 0, 4));
    let mta = Mta::start(work.path(), mta_port);
    let router = RouterProcess::start();
    let extra = format!(
        // A dead smarthost: until the node has the admin's transport, mail waits (an hour:
        // only `queue flush` brings it out sooner) rather than going to DNS.
        "allow_plaintext_auth = true\n{}[outbound]\negress = \"127.0.0.3\"\nretry_initial_secs = 3600\n\
         smarthost = \"127.0.0.9:9\"\n",
        router.node_extra("node1", [127, 0, 0, 1])
    );
    let node = MailNode::start("node1.example.test", &extra);
    router.wait_nodes(" up ", 1);
    router.ctl(&["domains", "add", "example.test"]);
    router.ctl(&["users", "add", "alice@example.test", "--password", "alice-pw", "--home", "node1"]);

    // Two messages wait in node1's queue after a failed first attempt.
    submit(&node, "Subject: keep\r\n\r\nhi\r\n", &["someone@far.test"]);
    submit(&node, "Subject: drop\r\n\r\nbye\r\n", &["other@far.test"]);
    let queued = |rcpt: &str| -> Option<serde_json::Value> {
        let list: serde_json::Value = serde_json::from_str(&router.ctl(&["queue", "list", "--json"])).expect("json");
        let messages = list[0]["messages"].as_array().cloned().unwrap_or_default();
        messages.into_iter().find(|m| m["remote"][0] == rcpt)
    };
    let start = Instant::now();
    while queued("other@far.test").is_none_or(|m| m["attempts"] == 0) && start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let keep = queued("someone@far.test").expect("queued");
    let drop = queued("other@far.test").expect("queued");
    assert!(keep["errors"]["someone@far.test"].as_str().unwrap_or("").contains("127.0.0.9"), "{keep}");
    let table = router.ctl(&["queue", "list"]);
    assert!(table.contains("someone@far.test") && table.contains("alice@example.test"), "{table}");
    let details = router.ctl(&["queue", "show", keep["id"].as_str().unwrap()]);
    assert!(details.contains("node: node1") && details.contains("remote: someone@far.test: "), "{details}");
    let id = drop["id"].as_str().unwrap();
    assert_eq!(router.ctl(&["queue", "rm", id]).trim(), format!("removed {id} from node1"));
    assert!(queued("other@far.test").is_none());
    assert!(router.ctl_fails(&["queue", "rm", id]).contains("no queued message"));

    // Mail of example.test is signed from now on, including what already waits in the queue.
    let added: serde_json::Value =
        serde_json::from_str(&router.ctl(&["dkim", "add", "example.test", "--selector", "s1", "--json"]))
            .expect("json");
    assert_eq!(added["name"], "s1._domainkey.example.test");
    let txt = added["txt"].as_str().expect("txt").to_string();
    assert!(txt.starts_with("v=DKIM1; k=rsa; p="), "{txt}");
    assert!(router.ctl(&["dkim", "list"]).contains(&format!("s1._domainkey.example.test IN TXT \"{txt}\"")));

    // The admin routes far.test to the MTA; a flush sends the waiting message at once.
    router.ctl(&["transports", "add", "Far.Test", &format!("127.0.0.4:{mta_port}")]);
    assert_eq!(router.ctl(&["transports", "list"]).trim(), format!("far.test -> 127.0.0.4:{mta_port}"));
    let err = router.ctl_fails(&["transports", "add", "far.test", "127.0.0.4:notaport"]);
    assert!(err.contains("not host:port"), "{err}");
    std::thread::sleep(Duration::from_millis(500)); // the directory reaches the node
    assert_eq!(router.ctl(&["queue", "flush"]).trim(), "node1: flushed");
    let data = mta.wait_data(1);
    assert_eq!(data.len(), 1, "{:#?}", mta.events());
    assert_eq!(data[0]["rcpts"], serde_json::json!(["someone@far.test"]));
    let received = data[0]["data"].as_str().unwrap();
    assert!(received.ends_with("Subject: keep\r\n\r\nhi\r\n"));
    assert!(received.starts_with("DKIM-Signature: "), "{received}");
    let path = work.path().join("signed.eml");
    std::fs::write(&path, received).expect("write");
    let verdict = python(VERIFY_DKIM, &[path.display().to_string(), txt.clone(), "s1._domainkey.example.test".into()]);
    assert_eq!(verdict.trim(), "dkim pass", "an independent verifier accepts the signature");
    // A changed body no longer verifies: the test can fail.
    std::fs::write(&path, received.replace("hi\r\n", "hj\r\n")).expect("write");
    let verdict = python(VERIFY_DKIM, &[path.display().to_string(), txt, "s1._domainkey.example.test".into()]);
    assert_eq!(verdict.trim(), "dkim fail");
}

/// Submits one message as alice to the submission port at argv[1]:argv[2] from 127.0.0.5.
const SUBMIT_TO: &str = r#"
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=20, source_address=("127.0.0.5", 0))
s.login("alice@example.test", "alice-pw")
refused = s.sendmail("alice@example.test", sys.argv[4:], sys.argv[3].encode())
print("refused", refused)
s.quit()
"#;

/// Files in `dir` (a spool's `env/`), none if it does not exist.
fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.retain(|n| !n.starts_with('.'));
    names
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Mail a node accepted for later delivery survives the loss of that node's disk: before the
/// `250` another node keeps a copy of the spool entry, and delivers it once the first has not
/// answered for `spool_takeover_secs`. A node that comes back with its own disk drops what its
/// peer delivered meanwhile: each message reaches the remote MTA once.
#[test]
fn a_spooled_message_survives_its_nodes_disk_and_is_delivered_once() {
    let work = tempfile::tempdir().expect("tempdir");
    let ip = Ipv4Addr::new(127, 0, 0, 4);
    let (far_port, late_port, never_port) = (free_port_on(ip), free_port_on(ip), free_port_on(ip));
    let router = RouterProcess::start();
    let node_config = |id: &str, last: u8| {
        format!(
            "allow_plaintext_auth = true\n{}spool_takeover_secs = 2\n[outbound]\negress = \"127.0.0.3\"\n\
             retry_initial_secs = 1\nretry_max_secs = 2\ntransports = {{ \"far.test\" = \"127.0.0.4:{far_port}\", \
             \"late.test\" = \"127.0.0.4:{late_port}\", \"never.test\" = \"127.0.0.4:{never_port}\" }}\n",
            router.node_extra(id, [127, 0, 0, last])
        )
    };
    let mut node1 = MailNode::start_on([127, 0, 0, 41], "node1.example.test", &node_config("node1", 41));
    let mut node2 = MailNode::start_on([127, 0, 0, 42], "node2.example.test", &node_config("node2", 42));
    router.wait_nodes(" up ", 2);
    router.ctl(&["domains", "add", "example.test"]);
    router.ctl(&["users", "add", "alice@example.test", "--password", "alice-pw", "--home", "node2"]);
    let copies_of_node1 = node2.dir.path().join("data/spool-copies/nodes/node1/env");
    let submit = |node: &MailNode, message: &str, rcpt: &str| {
        let args = [node.submission.ip().to_string(), node.submission.port().to_string(), message.into(), rcpt.into()];
        let out = python(SUBMIT_TO, &args);
        assert_eq!(out.trim(), "refused {}", "the message was accepted");
    };

    // 1. The far MTA is down: node1 spools the message, node2 holds its copy.
    std::thread::sleep(Duration::from_millis(500)); // the directory (users, nodes) reaches both
    submit(&node1, "Subject: one\r\n\r\nfirst\r\n", "someone@far.test");
    assert_eq!(node1.spooled(), 1);
    let copies = entries(&copies_of_node1);
    assert_eq!(copies.len(), 1, "node2 holds a copy of node1's entry before the 250");
    let envelope = std::fs::read_to_string(copies_of_node1.join(&copies[0])).expect("copy");
    assert!(envelope.contains("remote someone@far.test"), "{envelope}");
    assert!(
        std::fs::read_to_string(node1.dir.path().join("data/queue/env").join(&copies[0]))
            .expect("entry")
            .contains("copy node2")
    );

    // node1 dies and its disk with it; the MTA comes up; node2 delivers the copy.
    node1.process.kill9();
    std::fs::remove_dir_all(node1.dir.path().join("data")).expect("wipe node1");
    let far_dir = work.path().join("far");
    std::fs::create_dir_all(&far_dir).expect("dir");
    let far = Mta::start(&far_dir, far_port);
    let data = far.wait_data(1);
    assert_eq!(data.len(), 1, "node2 delivered node1's message: {:#?}", far.events());
    assert_eq!(data[0]["rcpts"], serde_json::json!(["someone@far.test"]));
    assert!(data[0]["data"].as_str().unwrap().ends_with("Subject: one\r\n\r\nfirst\r\n"));
    wait_until("the adopted copy leaves node2's spool", Duration::from_secs(15), || node2.spooled() == 0);

    // 2. node1 back (on a new disk); the late MTA is down: another message waits on node1.
    node1.restart();
    router.wait_nodes(" up ", 2);
    std::thread::sleep(Duration::from_millis(500));
    submit(&node1, "Subject: two\r\n\r\nsecond\r\n", "x@late.test");
    assert_eq!(entries(&copies_of_node1).len(), 1);
    // node1 is cut off with its disk intact; node2 delivers the copy once the MTA is up...
    node1.process.kill9();
    let late_dir = work.path().join("late");
    std::fs::create_dir_all(&late_dir).expect("dir");
    let late = Mta::start(&late_dir, late_port);
    let data = late.wait_data(1);
    assert_eq!(data.len(), 1, "{:#?}", late.events());
    assert!(data[0]["data"].as_str().unwrap().ends_with("Subject: two\r\n\r\nsecond\r\n"));
    // ...and node1, back with the entry still in its spool, drops it instead of sending it again.
    node1.restart();
    wait_until("node1 drops the entry node2 delivered", Duration::from_secs(20), || node1.spooled() == 0);
    std::thread::sleep(Duration::from_secs(3)); // a retry pass of node1 would have sent it by now
    let data: Vec<_> = late.events().into_iter().filter(|e| e["event"] == "data").collect();
    assert_eq!(data.len(), 1, "delivered once: {data:#?}");
    let adopted = node2.dir.path().join("data/spool-copies/adopted/node1");
    wait_until("node2 forgets what it adopted", Duration::from_secs(10), || !adopted.exists());

    // 3. Delivered by node1 itself: the copy on node2 is dropped.
    submit(&node1, "Subject: three\r\n\r\nthird\r\n", "y@late.test");
    assert_eq!(late.wait_data(2).len(), 2);
    wait_until("node2 drops the copy of a delivered entry", Duration::from_secs(10), || {
        entries(&copies_of_node1).is_empty()
    });

    // 4. With node2 down, node1 still takes mail on its own disk, says so, and makes the copy
    //    once node2 is back.
    node2.process.kill9();
    submit(&node1, "Subject: four\r\n\r\nfourth\r\n", "z@never.test");
    assert_eq!(node1.spooled(), 1);
    let metrics = metrics_page(node1.metrics);
    assert!(metrics.contains("sirms_spool_single_copy_total 1"), "{metrics}");
    node2.restart();
    wait_until("node1 makes the missing copy on node2", Duration::from_secs(30), || {
        entries(&copies_of_node1).len() == 1
    });
}
