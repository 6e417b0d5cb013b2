//! Quotas as users see them, against the real binary: a user with `quota_bytes` gets no
//! message past it — SMTP answers `452 4.2.2` when no recipient has room (and keeps the copy
//! of a user without room in the spool when another recipient took it), IMAP APPEND and COPY
//! answer `NO [OVERQUOTA]`, MOVE still works — and mail for users without a quota flows.

use sirms_integration_tests::{MailNode, python};

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
