//! Quotas as users see them, against the real binary: a user with `quota_bytes` gets no
//! message past it — SMTP answers `452 4.2.2` when no recipient has room (and keeps the copy
//! of a user without room in the spool when another recipient took it), IMAP APPEND and COPY
//! answer `NO [OVERQUOTA]`, MOVE still works — and mail for users without a quota flows.

use sirms_integration_tests::{MailNode, RouterProcess, python};

#[test]
fn quotas_hold_for_smtp_append_and_copy() {
    let carol = r#"{ address = "carol@example.test", password = "{plain}carol-pw", quota_bytes = 4000 }"#;
    let node = MailNode::start_with_users([127, 0, 0, 1], "quota.example.test", "", &[carol]);
    let out = python(
        r#"
import imaplib, smtplib, ssl, sys
smtp_port, imap_port = int(sys.argv[1]), int(sys.argv[2])
def message(n):
    return ("From: x@remote.test\r\nSubject: %d\r\n\r\n" % n + "y" * 1200 + "\r\n").encode()
def send(rcpts, n):
    s = smtplib.SMTP("127.0.0.1", smtp_port, timeout=20)
    try:
        refused = s.sendmail("x@remote.test", rcpts, message(n))
        return "250 %s" % sorted(refused)
    except smtplib.SMTPDataError as e:
        return "%d %s" % (e.smtp_code, e.smtp_error.decode())
    finally:
        s.quit()
print(send(["carol@example.test"], 1))
print(send(["carol@example.test"], 2))
print(send(["carol@example.test"], 3))
print(send(["carol@example.test", "bob@example.test"], 4))
m = imaplib.IMAP4("127.0.0.1", imap_port, timeout=20)
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m.starttls(ssl_context=ctx)
m.login("carol@example.test", "carol-pw")
print(m.select("INBOX")[1][0].decode())
typ, data = m.append("INBOX", None, None, message(5))
print(typ, data[0].decode())
typ, data = m.copy("1", "Archive")
print(typ, data[0].decode())
typ, data = m._simple_command("MOVE", "1", "Archive")
print(typ)
m.logout()
"#,
        &[node.smtp.port().to_string(), node.imap.port().to_string()],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "250 []", "{out}");
    assert_eq!(lines[1], "250 []", "{out}");
    assert_eq!(lines[2], "452 4.2.2 mailbox full: over quota, try again later", "{out}");
    assert_eq!(lines[3], "250 []", "bob has no quota: accepted, carol's copy waits\n{out}");
    assert_eq!(lines[4], "2", "carol holds the first two\n{out}");
    assert!(lines[5].starts_with("NO [OVERQUOTA] over quota: "), "{out}");
    assert!(lines[6].starts_with("NO [OVERQUOTA] over quota: "), "{out}");
    assert_eq!(lines[7], "OK", "a MOVE adds nothing\n{out}");
    assert_eq!(node.inbox("carol@example.test").len(), 1, "one left in INBOX after the MOVE");
    assert_eq!(node.inbox("bob@example.test").len(), 1);
}

/// The delivery that takes a mailbox past 90 % of its quota leaves the user one warning in the
/// INBOX, right after the message that crossed the line; later deliveries above it add none.
#[test]
fn a_delivery_past_ninety_percent_leaves_one_warning() {
    const LIMIT: usize = 20_000;
    let dave = r#"{ address = "dave@example.test", password = "{plain}dave-pw", quota_bytes = 20000 }"#;
    let node = MailNode::start_with_users([127, 0, 0, 1], "quota.example.test", "", &[dave]);
    let out = python(
        r#"
import smtplib, sys
port = int(sys.argv[1])
for n in range(1, 80):
    s = smtplib.SMTP("127.0.0.1", port, timeout=20)
    try:
        s.sendmail("x@remote.test", ["dave@example.test"],
                   ("From: x@remote.test\r\nSubject: %d\r\n\r\n" % n + "y" * 100 + "\r\n").encode())
        print("250")
    except smtplib.SMTPDataError as e:
        print(e.smtp_code)
        break
    finally:
        s.quit()
"#,
        &[node.smtp.port().to_string()],
    );
    assert!(out.lines().last() == Some("452"), "deliveries go on until the quota is full\n{out}");
    let is_warning = |m: &Vec<u8>| String::from_utf8_lossy(m).contains("Subject: Your mailbox is ");
    let inbox = node.inbox("dave@example.test");
    let warnings: Vec<usize> = (0..inbox.len()).filter(|&i| is_warning(&inbox[i])).collect();
    assert_eq!(warnings.len(), 1, "one warning, not one per message above the line\n{out}");
    let line = LIMIT * 90 / 100;
    let used_before = |i: usize| inbox[..i].iter().map(Vec::len).sum::<usize>();
    let at = warnings[0];
    assert!(inbox.len() > at + 2, "messages were delivered above the line after the warning, with no second one");
    assert!(at >= 1 && used_before(at) >= line, "the warning follows the message that reached the line");
    assert!(used_before(at - 1) < line, "and not a later one: the mailbox was below the line before it");
    let text = String::from_utf8_lossy(&inbox[at]);
    assert!(text.contains("Auto-Submitted: auto-generated"), "{text}");
    assert!(text.contains(&format!("of the {LIMIT} it may hold")), "{text}");
}

/// A limit in messages holds like one in bytes: SMTP answers `452 4.2.2` once the mailbox holds
/// that many, IMAP APPEND `NO [OVERQUOTA]` naming the count, and GETQUOTAROOT shows both
/// resources.
#[test]
fn a_limit_in_messages_holds_for_smtp_and_append() {
    let erin =
        r#"{ address = "erin@example.test", password = "{plain}erin-pw", quota_bytes = 1000000, quota_messages = 3 }"#;
    let node = MailNode::start_with_users([127, 0, 0, 1], "quota.example.test", "", &[erin]);
    let out = python(
        r#"
import imaplib, smtplib, ssl, sys
smtp_port, imap_port = int(sys.argv[1]), int(sys.argv[2])
def message(n):
    return ("From: x@remote.test\r\nSubject: %d\r\n\r\nsmall\r\n" % n).encode()
for n in range(1, 5):
    s = smtplib.SMTP("127.0.0.1", smtp_port, timeout=20)
    try:
        s.sendmail("x@remote.test", ["erin@example.test"], message(n))
        print("250")
    except smtplib.SMTPDataError as e:
        print("%d %s" % (e.smtp_code, e.smtp_error.decode()))
    finally:
        s.quit()
m = imaplib.IMAP4("127.0.0.1", imap_port, timeout=20)
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m.starttls(ssl_context=ctx)
m.login("erin@example.test", "erin-pw")
print(" ".join(c for c in m.capabilities if c.startswith("QUOTA")))
typ, data = m.getquotaroot("INBOX")
print(typ, data[1][0].decode())
typ, data = m.append("INBOX", None, None, message(5))
print(typ, data[0].decode())
m.logout()
"#,
        &[node.smtp.port().to_string(), node.imap.port().to_string()],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["250", "250", "250"], "{out}");
    assert_eq!(lines[3], "452 4.2.2 mailbox full: over quota, try again later", "{out}");
    assert_eq!(lines[4], "QUOTA QUOTA=RES-STORAGE QUOTA=RES-MESSAGE", "{out}");
    assert_eq!(lines[5], r#"OK "" (STORAGE 1 976 MESSAGE 3 3)"#, "{out}");
    assert_eq!(lines[6], "NO [OVERQUOTA] over quota: 3 of 3 messages used", "{out}");
    assert_eq!(node.inbox("erin@example.test").len(), 3);
}

/// Quotas an admin sets with `sirms ctl users add --quota --quota-messages` reach the node
/// and hold there; `users show` reports the usage the home's store counts against them; and a
/// limit set to `none` is gone while the other stays.
#[test]
fn quotas_set_with_ctl_hold_in_a_cluster_and_users_show_reports_the_usage() {
    const USER: &str = "frank@example.test";
    let router = RouterProcess::start();
    let node = MailNode::start_on([127, 0, 0, 1], "node1.example.test", &router.node_extra("node1", [127, 0, 0, 1]));
    router.wait_nodes(" up ", 1);
    router.ctl(&["domains", "add", "example.test"]);
    let add =
        ["users", "add", USER, "--password", "frank-pw", "--home", "node1", "--quota", "1M", "--quota-messages", "2"];
    router.ctl(&add);
    let deliver = r#"
import smtplib, sys, time
port = int(sys.argv[1])
replies, deadline = [], time.time() + 20
while len(replies) < 3 and time.time() < deadline:
    # Not from 127.0.0.1: that is the router's address, which the node expects a PROXY header from.
    s = smtplib.SMTP("127.0.0.1", port, timeout=20, source_address=("127.0.0.3", 0))
    try:
        s.sendmail("x@remote.test", ["frank@example.test"], b"From: x@remote.test\r\nSubject: hi\r\n\r\nbody\r\n")
        replies.append("250")
    except smtplib.SMTPRecipientsRefused:
        time.sleep(0.2)  # the directory has not reached the node yet
    except smtplib.SMTPDataError as e:
        replies.append(str(e.smtp_code))
    finally:
        s.quit()
print(" ".join(replies))
"#;
    let out = python(deliver, &[node.smtp.port().to_string()]);
    assert_eq!(out.trim(), "250 250 452", "two messages, then the limit in messages");
    let card = router.ctl(&["users", "show", USER]);
    assert!(card.contains("quota    1048576 bytes (1.0 MiB), 2 messages\n"), "{card}");
    let usage = card.lines().find(|l| l.starts_with("usage    ")).unwrap_or_default();
    assert!(usage.ends_with(" in 2 messages (100%)"), "{card}");
    let json: serde_json::Value = serde_json::from_str(&router.ctl(&["users", "show", USER, "--json"])).expect("json");
    assert_eq!((&json["usage"]["counted"]["messages"], &json["quota_messages"]), (&2.into(), &2.into()), "{json}");

    router.ctl(&["users", "add", USER, "--keep-password", "--quota-messages", "none"]);
    let card = router.ctl(&["users", "show", USER]);
    assert!(card.contains("quota    1048576 bytes (1.0 MiB)\n"), "the byte limit stays: {card}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let out = python(deliver, &[node.smtp.port().to_string()]);
        if out.trim() == "250 250 250" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the limit in messages is still enforced: {out}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(node.inbox(USER).len(), 5);
}

/// A domain quota (`sirms ctl domains quota`) bounds the domain's users together, whichever
/// nodes hold their mailboxes: u1 lives on node1, u2 on node2, and mail for both through node1
/// stops at the domain's limit though neither user has one. `domains show` adds their usage up;
/// raising the limit lets mail in again, and so does deleting mail once the domain is full.
#[test]
fn a_domain_quota_bounds_the_users_of_the_domain_together_across_nodes() {
    let (router, n1, n2) = sirms_integration_tests::two_node_cluster();
    router.ctl(&["domains", "add", "small.test"]);
    router.ctl(&["users", "add", "u1@small.test", "--password", "pw1", "--home", "node1", "--replica", "node2"]);
    router.ctl(&["users", "add", "u2@small.test", "--password", "pw2", "--home", "node2", "--replica", "node1"]);
    router.ctl(&["domains", "quota", "small.test", "--messages", "3"]);
    assert!(router.ctl(&["domains", "list"]).contains("small.test quota_messages=3\n"));
    // One message to one user through node1: the SMTP reply code, after the directory with the
    // users and the quota reached the node.
    let deliver = r#"
import smtplib, sys, time
port, rcpt, want = int(sys.argv[1]), sys.argv[2], sys.argv[3]
deadline, reply = time.time() + 20, ""
while time.time() < deadline:
    # Not from 127.0.0.1: that is the router's address, which the node expects a PROXY header from.
    s = smtplib.SMTP("127.0.0.1", port, timeout=20, source_address=("127.0.0.3", 0))
    try:
        s.sendmail("x@remote.test", [rcpt], b"From: x@remote.test\r\nSubject: hi\r\n\r\nbody\r\n")
        reply = "250"
    except smtplib.SMTPRecipientsRefused:
        reply = "unknown"  # the directory has not reached the node yet
    except smtplib.SMTPDataError as e:
        reply = str(e.smtp_code)
    finally:
        s.quit()
    if reply == want:
        break
    time.sleep(0.3)
print(reply)
"#;
    let send = |rcpt: &str, want: &str| python(deliver, &[n1.smtp.port().to_string(), rcpt.into(), want.into()]);
    // Until node1 has the quota, nothing here holds mail back: wait for it with a message that
    // would pass either way, on a fresh user count.
    assert_eq!(send("u1@small.test", "250").trim(), "250");
    assert_eq!(send("u1@small.test", "250").trim(), "250");
    assert_eq!(send("u2@small.test", "250").trim(), "250");
    assert_eq!(send("u2@small.test", "452").trim(), "452", "the domain holds 3 messages of its 3");
    assert_eq!((n1.inbox("u1@small.test").len(), n2.inbox("u2@small.test").len()), (2, 1));

    let card = router.ctl(&["domains", "show", "small.test"]);
    assert!(card.contains("users    2\nquota    3 messages\n"), "{card}");
    assert!(card.contains(" in 3 messages (100%)\n"), "{card}");
    let json: serde_json::Value =
        serde_json::from_str(&router.ctl(&["domains", "show", "small.test", "--json"])).expect("json");
    assert_eq!((&json["messages"], &json["quota_messages"]), (&3.into(), &3.into()), "{json}");

    router.ctl(&["domains", "quota", "small.test", "--messages", "4"]);
    assert_eq!(send("u2@small.test", "250").trim(), "250", "a higher limit lets mail in");
    assert_eq!(send("u1@small.test", "452").trim(), "452");
    // u1 deletes a message on node1: the full domain is counted again before it refuses mail.
    let expunge = r#"
import imaplib, socket, ssl, sys
class FromElsewhere(imaplib.IMAP4):
    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=("127.0.0.3", 0))
m = FromElsewhere("127.0.0.1", int(sys.argv[1]), timeout=20)
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m.starttls(ssl_context=ctx)
m.login("u1@small.test", "pw1")
m.select("INBOX")
m.store("1", "+FLAGS", "\\Deleted")
print(m.expunge()[1])
m.logout()
"#;
    python(expunge, &[n1.imap.port().to_string()]);
    assert_eq!(send("u1@small.test", "250").trim(), "250", "deleted mail makes room within seconds");
    assert_eq!(n1.inbox("u1@small.test").len(), 2);
}
