//! Greylisting across the cluster: a real router (sled directory) and two real mail nodes with
//! `[inbound.greylist]` on (4 s delay), Python's smtplib sending straight to the nodes from
//! 127.0.33.10. A sender deferred by one node is recognised by the other, passed triplets
//! survive a router restart, submission is never greylisted, and with no router the nodes
//! accept (fail open).

use std::time::{Duration, Instant};

use sirms_integration_tests::{MailNode, Process, RouterProcess, metrics_page, python};

/// One transaction: MAIL, each RCPT (its reply printed as `rcpt code text`, with the time the
/// reply took), DATA if any recipient was taken. argv: node, source address, sender,
/// recipients (comma-separated), optional `login:password`.
const TRANSACTION: &str = r#"
import smtplib, sys, time
host, port = sys.argv[1].rsplit(":", 1)
src, sender, rcpts = sys.argv[2], sys.argv[3], sys.argv[4].split(",")
s = smtplib.SMTP(host, int(port), source_address=(src, 0), timeout=20)
s.ehlo("client.test")
if len(sys.argv) > 5:
    user, password = sys.argv[5].split(":", 1)
    s.login(user, password)
code, _ = s.mail(sender)
assert code == 250, code
taken = []
for r in rcpts:
    start = time.monotonic()
    code, text = s.rcpt(r)
    print("%s %d %s ms=%.1f" % (r, code, text.decode(), (time.monotonic() - start) * 1000))
    if code == 250:
        taken.append(r)
if taken:
    code, _ = s.data(b"Subject: grey test\r\n\r\nhello\r\n")
    print("DATA %d" % code)
s.quit()
"#;

const CLIENT: &str = "127.0.33.10";

fn send(node: &MailNode, sender: &str, rcpts: &[&str]) -> String {
    python(TRANSACTION, &[node.smtp.to_string(), CLIENT.into(), sender.into(), rcpts.join(",")])
}

fn submit(node: &MailNode, login: &str, sender: &str, rcpt: &str) -> String {
    let args = [node.submission.to_string(), CLIENT.into(), sender.into(), rcpt.into(), login.into()];
    python(TRANSACTION, &args)
}

/// The reply code given to `rcpt` in `out`.
fn code(out: &str, rcpt: &str) -> u16 {
    let line = out.lines().find(|l| l.starts_with(&format!("{rcpt} "))).unwrap_or_else(|| panic!("{rcpt}: {out}"));
    line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("{line}"))
}

fn greylist_count(node: &MailNode, result: &str) -> u64 {
    let page = metrics_page(node.metrics);
    let name = format!("sirms_greylist_total{{result=\"{result}\"}} ");
    (page.lines().find_map(|l| l.strip_prefix(&name)).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} missing: {page}"))
}

fn node(router: &RouterProcess, id: &str, ip: [u8; 4]) -> MailNode {
    let extra = format!(
        "allow_plaintext_auth = true\n{}[inbound.greylist]\nenabled = true\ndelay_secs = 4\nnetwork_passes = 0\n",
        router.node_extra(id, ip)
    );
    MailNode::start_on(ip, &format!("{id}.example.test"), &extra)
}

/// Waits (bounded) until `user` has `want` messages on `node`.
fn wait_inbox(node: &MailNode, user: &str, want: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let inbox = node.inbox(user);
        if inbox.len() >= want || Instant::now() > deadline {
            return inbox;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_sender_deferred_by_one_node_passes_through_the_other_after_the_delay() {
    let mut router = RouterProcess::start();
    let a = node(&router, "nodea", [127, 0, 33, 1]);
    let b = node(&router, "nodeb", [127, 0, 33, 2]);
    router.wait_nodes(" up ", 2);
    router.ctl(&["domains", "add", "example.test"]);
    router.ctl(&["users", "add", "alice@example.test", "--password", "alice-pw", "--home", "nodea"]);
    router.ctl(&["users", "add", "bob@example.test", "--password", "bob-pw", "--home", "nodea"]);

    // First attempt, through node A: deferred, with a text that says to retry.
    let first = Instant::now();
    let out = send(&a, "x@remote.test", &["alice@example.test"]);
    assert_eq!(code(&out, "alice@example.test"), 451, "{out}");
    assert!(out.contains("4.7.1 greylisted") && out.contains("retry in"), "{out}");
    assert!(!out.contains("DATA"), "no DATA without a recipient: {out}");
    // Retried through node B before the delay is over: still deferred, as a retry B knows of
    // (not as a first attempt, which would start B's own delay).
    let out = send(&b, "X@Remote.test", &["alice@example.test"]);
    assert_eq!(code(&out, "alice@example.test"), 451, "{out}");
    assert!(out.contains("greylisted: retried too early"), "node B did not know node A's triplet: {out}");
    // Another sender tries through A only, and retries only through B.
    let out = send(&a, "w@remote.test", &["alice@example.test"]);
    assert_eq!(code(&out, "alice@example.test"), 451, "{out}");
    // Times are whole seconds: the delay is over at the earliest 3 s after the first attempt.
    assert!(first.elapsed() < Duration::from_secs(3), "the early retries came too late to test anything");

    // After the delay, through node B: taken, and the message reaches alice's mailbox.
    std::thread::sleep(Duration::from_secs(4).saturating_sub(first.elapsed()) + Duration::from_millis(200));
    let out = send(&b, "x@remote.test", &["alice@example.test"]);
    assert_eq!(code(&out, "alice@example.test"), 250, "{out}");
    assert!(out.contains("DATA 250"), "{out}");
    let inbox = wait_inbox(&a, "alice@example.test", 1);
    assert_eq!(inbox.len(), 1);
    assert!(String::from_utf8_lossy(&inbox[0]).contains("Subject: grey test"));
    let out = send(&b, "w@remote.test", &["alice@example.test"]);
    assert_eq!(code(&out, "alice@example.test"), 250, "a first retry through another node: {out}");

    // The same sender again, through A: at once. With a new recipient in the same
    // transaction, each recipient gets its own reply.
    let out = send(&a, "x@remote.test", &["alice@example.test", "bob@example.test"]);
    println!("passed and new in one transaction:\n{out}");
    assert_eq!((code(&out, "alice@example.test"), code(&out, "bob@example.test")), (250, 451), "{out}");
    assert!(out.contains("DATA 250"), "{out}");
    assert_eq!(wait_inbox(&a, "alice@example.test", 3).len(), 3);

    // Authenticated submission is never greylisted, nor is the null sender (RFC 6647 advice).
    let out = submit(&a, "bob@example.test:bob-pw", "bob@example.test", "alice@example.test");
    assert_eq!(code(&out, "alice@example.test"), 250, "submission: {out}");
    let out = send(&b, "", &["alice@example.test"]);
    assert_eq!(code(&out, "alice@example.test"), 250, "the null sender: {out}");
    assert_eq!(wait_inbox(&a, "alice@example.test", 5).len(), 5);

    // Counted: A deferred x, w and bob, passed x once; B deferred x once, passed x and w.
    assert_eq!((greylist_count(&a, "deferred"), greylist_count(&a, "passed")), (3, 1));
    assert_eq!((greylist_count(&b, "deferred"), greylist_count(&b, "passed")), (1, 2));

    // The router is killed and started again (its sled directory): the passed triplet is
    // remembered.
    router.process.kill9();
    let config = router.dir.path().join("router.toml");
    router.process = Process::sirms(&["router", "-c", config.to_str().expect("utf-8")]);
    router.process.wait_listening("restarted sirms router", &[router.admin]);
    let out = send(&b, "x@remote.test", &["alice@example.test"]);
    assert_eq!(code(&out, "alice@example.test"), 250, "after the router's restart: {out}");
    println!("passed triplet after the restart: {out}");
    // A new triplet is still greylisted by the restarted router.
    let out = send(&b, "y@remote.test", &["alice@example.test"]);
    assert_eq!(code(&out, "alice@example.test"), 451, "{out}");

    // No router at all: the node accepts (fails open) and counts it.
    router.process.stop();
    let out = send(&a, "z@remote.test", &["alice@example.test"]);
    assert_eq!(code(&out, "alice@example.test"), 250, "fail open: {out}");
    println!("failed open: {out}");
    assert_eq!(greylist_count(&a, "failed_open"), 1);
}

/// One bounce (MAIL FROM:<>) to argv[3] (comma-separated) at node argv[1] from argv[2]: each
/// RCPT's reply, then DATA's (`DATA code text`), the message being argv[4].
const BOUNCE: &str = r#"
import smtplib, sys
host, port = sys.argv[1].rsplit(":", 1)
s = smtplib.SMTP(host, int(port), source_address=(sys.argv[2], 0), timeout=20)
s.ehlo("mta.remote.test")
code, _ = s.mail("<>")
assert code == 250, code
taken = 0
for r in sys.argv[3].split(","):
    code, text = s.rcpt(r)
    print("%s %d %s" % (r, code, text.decode()))
    taken += code == 250
if taken:
    code, text = s.data(sys.argv[4].encode())
    print("DATA %d %s" % (code, text.decode()))
else:
    print("DATA none")
s.quit()
"#;

/// With `null_sender = "after-data"`, a bounce from a new client is taken at RCPT for every
/// recipient and refused once, `451 4.7.1`, at the end of DATA, before anything is stored;
/// retried after the delay it is delivered byte for byte to every recipient.
#[test]
fn a_bounce_is_greylisted_after_data_and_delivered_after_the_delay() {
    const CLIENT: &str = "127.0.41.11";
    let router = RouterProcess::start_on(std::net::Ipv4Addr::new(127, 0, 41, 101), "");
    let ip = [127, 0, 41, 3];
    let extra = format!(
        "{}[inbound.greylist]\nenabled = true\ndelay_secs = 4\nnetwork_passes = 0\nnull_sender = \"after-data\"\n",
        router.node_extra("nodeg", ip)
    );
    let node = MailNode::start_on(ip, "nodeg.example.test", &extra);
    router.wait_nodes(" up ", 1);
    router.ctl(&["domains", "add", "example.test"]);
    router.ctl(&["users", "add", "alice@example.test", "--password", "alice-pw", "--home", "nodeg"]);
    router.ctl(&["users", "add", "bob@example.test", "--password", "bob-pw", "--home", "nodeg"]);
    let report = "From: MAILER-DAEMON@remote.test\r\nTo: alice@example.test\r\nSubject: Undelivered Mail Returned to Sender\r\n\
        Auto-Submitted: auto-replied\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\
        .a line that starts with a dot\r\n";
    let bounce = || {
        python(
            BOUNCE,
            &[node.smtp.to_string(), CLIENT.into(), "alice@example.test,bob@example.test".into(), report.into()],
        )
    };

    let first = Instant::now();
    let mut out = bounce();
    // The router's directory reaches the node within a moment: until then the users are unknown.
    while out.contains("DATA none") && first.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(200));
        out = bounce();
    }
    let first = Instant::now();
    println!("first attempt:\n{out}");
    assert_eq!((code(&out, "alice@example.test"), code(&out, "bob@example.test")), (250, 250), "RCPT stays 250: {out}");
    assert!(out.contains("DATA 451 4.7.1 greylisted: first attempt"), "{out}");
    assert!(node.inbox("alice@example.test").is_empty() && node.inbox("bob@example.test").is_empty(), "nothing stored");
    let out = bounce();
    assert!(out.contains("DATA 451 4.7.1 greylisted: retried too early"), "{out}");
    assert!(first.elapsed() < Duration::from_secs(3), "the early retry came too late to test anything");

    std::thread::sleep(Duration::from_secs(4).saturating_sub(first.elapsed()) + Duration::from_millis(1200));
    let out = bounce();
    println!("after the delay:\n{out}");
    assert!(out.contains("DATA 250"), "{out}");
    for user in ["alice@example.test", "bob@example.test"] {
        let inbox = wait_inbox(&node, user, 1);
        assert_eq!(inbox.len(), 1, "{user}");
        assert!(
            inbox[0].ends_with(report.as_bytes()),
            "{user} got it byte for byte:\n{}",
            String::from_utf8_lossy(&inbox[0])
        );
    }
    // Two triplets deferred twice each, then both passed; none failed open.
    assert_eq!((greylist_count(&node, "deferred"), greylist_count(&node, "passed")), (4, 2));
    assert_eq!(greylist_count(&node, "failed_open"), 0);
}
