//! Sieve with ManageSieve, as a user meets them: a script uploaded through the router's
//! ManageSieve port with a real client (python-managesieve), then mail sent through the
//! router's SMTP lands where the script says, read back over IMAP through the router.

use sirms_integration_tests::{MANAGESIEVE_LOGIN as LOGIN, python, two_node_cluster};

/// Uploads, checks, lists and activates scripts as alice (after [`LOGIN`]).
const MANAGE: &str = r#"
good = sys.argv[2]
# A script with a mistake on its second line is refused, naming the line.
status = m.putscript("broken", 'require "fileinto";\nfileinot "x";\n')
print("broken:", status, m.response_text)
assert status == "OK" or "line 2" in str(m.response_text), m.response_text
assert m.putscript("rules", good) == "OK", m.response_text
assert m.putscript("other", "keep;\n") == "OK"
assert m.setactive("rules") == "OK"
status, scripts = m.listscripts()
print("scripts:", sorted(scripts))
status, body = m.getscript("rules")
assert body.replace("\r\n", "\n") == good.replace("\r\n", "\n"), body
assert m.deletescript("rules") == "NO", "the active script cannot be deleted"
assert m.deletescript("other") == "OK"
m.logout()
"#;

const SCRIPT: &str = "require [\"fileinto\", \"mailbox\", \"imap4flags\", \"vacation\"];\n\
if header :contains \"subject\" \"[work]\" {\n  fileinto :create :flags \"\\\\Flagged\" \"Work\";\n  stop;\n}\n\
if header :contains \"subject\" \"lottery\" {\n  discard;\n  stop;\n}\n\
vacation :days 3 :subject \"Away until Monday\" \"I am away; I read mail on Monday.\";\n";

/// Sends mail from bob to alice through the router, one message per subject.
const SEND: &str = r#"
import smtplib, sys
port = int(sys.argv[1])
for subject in sys.argv[2:]:
    s = smtplib.SMTP("127.0.0.1", port, timeout=20)
    msg = ("From: bob@example.test\r\nTo: alice@example.test\r\nSubject: %s\r\n"
           "Message-ID: <%s@example.test>\r\n\r\nbody of %s\r\n") % (subject, abs(hash(subject)), subject)
    s.sendmail("bob@example.test", ["alice@example.test"], msg.encode())
    s.quit()
print("sent")
"#;

/// Each mailbox's messages (subject and flags) for a user, over IMAP through the router,
/// after waiting (bounded) until `want` messages are there in all.
const READ: &str = r#"
import imaplib, ssl, sys, time
port, user, password, want = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
deadline = time.time() + 30
while True:
    m = imaplib.IMAP4("127.0.0.1", port, timeout=20)
    m.starttls(ssl_context=ctx)
    m.login(user, password)
    seen = []
    for box in ["INBOX", "Work"]:
        typ, count = m.select(box)
        if typ != "OK" or int(count[0]) == 0:
            continue
        typ, data = m.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT AUTO-SUBMITTED)])")
        for item in data:
            if isinstance(item, tuple):
                flags = "flagged" if b"\\Flagged" in item[0] else "-"
                head = item[1].decode().replace("\r\n", " ").strip()
                seen.append("%s|%s|%s" % (box, flags, head))
    m.logout()
    if len(seen) >= want or time.time() > deadline:
        break
    time.sleep(0.5)
print("\n".join(sorted(seen)))
"#;

/// A user's script, uploaded over ManageSieve, decides where each message goes: `fileinto
/// :create :flags` makes Work and flags the message there, `discard` drops, and `vacation`
/// answers the sender once for two messages. A script that does not parse is refused with
/// its line. What the script must not do: lose the other mail.
#[test]
fn a_script_uploaded_over_managesieve_files_discards_and_answers_once() {
    let (router, _n1, _n2) = two_node_cluster();
    router.ctl(&["domains", "add", "example.test"]);
    router.ctl(&["users", "add", "alice@example.test", "--password", "alice-pw"]);
    router.ctl(&["users", "add", "bob@example.test", "--password", "bob-pw"]);

    let managed = python(&format!("{LOGIN}{MANAGE}"), &[router.sieve.port().to_string(), SCRIPT.to_string()]);
    assert!(managed.contains("scripts: [('other', False), ('rules', True)]"), "{managed}");

    let subjects = ["[work] the plan", "win the lottery now", "lunch?", "dinner?"];
    let mut args = vec![router.smtp.port().to_string()];
    args.extend(subjects.iter().map(|s| s.to_string()));
    python(SEND, &args);

    let alice =
        python(READ, &[router.imap.port().to_string(), "alice@example.test".into(), "alice-pw".into(), "3".into()]);
    let alice: Vec<&str> = alice.lines().collect();
    assert_eq!(
        alice,
        ["INBOX|-|Subject: dinner?", "INBOX|-|Subject: lunch?", "Work|flagged|Subject: [work] the plan"],
        "filed, flagged, kept; the lottery discarded"
    );
    let bob = python(READ, &[router.imap.port().to_string(), "bob@example.test".into(), "bob-pw".into(), "1".into()]);
    assert_eq!(
        bob.lines().collect::<Vec<_>>(),
        ["INBOX|-|Subject: Away until Monday Auto-Submitted: auto-replied (vacation)"],
        "one vacation reply for two messages"
    );
}

/// Uploads the script in argv[2] as alice's active one (after [`LOGIN`]).
const ACTIVATE: &str = r#"
assert m.putscript("rules", sys.argv[2]) == "OK", m.response_text
assert m.setactive("rules") == "OK", m.response_text
m.logout()
print("active")
"#;

/// Sends one message from bob to the recipients in argv[2] (comma-separated) and prints
/// the server's answer to it.
const SEND_TO: &str = r#"
import smtplib, sys
port, rcpts = int(sys.argv[1]), sys.argv[2].split(",")
s = smtplib.SMTP("127.0.0.1", port, timeout=20)
msg = ("From: bob@example.test\r\nTo: %s\r\nSubject: cheap pills\r\n"
       "Message-ID: <%s@example.test>\r\n\r\nbuy now\r\n") % (", ".join(rcpts), len(rcpts))
try:
    s.sendmail("bob@example.test", rcpts, msg.encode())
    print("accepted")
except smtplib.SMTPDataError as e:
    print("refused %d %s" % (e.smtp_code, e.smtp_error.decode()))
s.quit()
"#;

/// `reject` in a script is carried out in SMTP when it speaks for every recipient (RFC 5429
/// §2.1): the sender's server gets a 550 with the script's reason and nothing is stored. With
/// a recipient who takes the message, it is accepted, and the sender is told of the rejection
/// by a bounce.
#[test]
fn a_sieve_reject_is_refused_in_smtp_when_every_recipient_rejects() {
    let (router, _n1, _n2) = two_node_cluster();
    router.ctl(&["domains", "add", "example.test"]);
    router.ctl(&["users", "add", "alice@example.test", "--password", "alice-pw"]);
    router.ctl(&["users", "add", "bob@example.test", "--password", "bob-pw"]);
    let script =
        "require \"reject\";\nif header :contains \"subject\" \"pills\" {\n  reject \"I do not buy pills.\";\n}\n";
    let active = python(&format!("{LOGIN}{ACTIVATE}"), &[router.sieve.port().to_string(), script.to_string()]);
    assert!(active.contains("active"), "{active}");

    let smtp = router.smtp.port().to_string();
    let alone = python(SEND_TO, &[smtp.clone(), "alice@example.test".into()]);
    assert_eq!(alone.trim(), "refused 550 5.7.1 I do not buy pills.", "the script's reason, in SMTP");

    let both = python(SEND_TO, &[smtp, "alice@example.test,bob@example.test".into()]);
    assert_eq!(both.trim(), "accepted", "bob takes it, so the message is accepted");
    // Bob has his copy and the bounce telling him alice's script rejected it; alice nothing.
    let bob = python(READ, &[router.imap.port().to_string(), "bob@example.test".into(), "bob-pw".into(), "2".into()]);
    let bob: Vec<&str> = bob.lines().collect();
    assert_eq!(bob.len(), 2, "{bob:?}");
    assert!(bob.iter().any(|m| m.contains("Subject: cheap pills")), "{bob:?}");
    assert!(bob.iter().any(|m| m.contains("Undelivered") || m.contains("failure")), "a bounce: {bob:?}");
    let alice =
        python(READ, &[router.imap.port().to_string(), "alice@example.test".into(), "alice-pw".into(), "0".into()]);
    assert_eq!(alice.trim(), "", "nothing stored for alice");
}
