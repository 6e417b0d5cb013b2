//! SMTP against the real `sirms node` binary with Python's smtplib: what a user sees is
//! what is asserted — reply codes, and the message in the mailbox byte for byte.

use sirms_integration_tests::{MailNode, metrics_page, python};

/// Sends one message; prints the outcome as `ok`, `refused <code>` or `error <code>`.
const SEND: &str = r#"
import smtplib, ssl, sys, json
a = json.loads(sys.argv[1])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
host, port = a["addr"].rsplit(":", 1)
try:
    if a.get("implicit_tls"):
        s = smtplib.SMTP_SSL(host, int(port), context=ctx, timeout=20)
    else:
        s = smtplib.SMTP(host, int(port), timeout=20)
    s.ehlo("client.test")
    if a.get("starttls"):
        s.starttls(context=ctx); s.ehlo("client.test")
    if a.get("login"):
        s.login(a["login"], a["password"])
    refused = s.sendmail(a["from"], a["to"], a["msg"].encode("utf-8", "surrogateescape"))
    print("ok", json.dumps({k: [v[0], v[1].decode()] for k, v in refused.items()}))
    s.quit()
except smtplib.SMTPRecipientsRefused as e:
    print("refused", json.dumps({k: v[0] for k, v in e.recipients.items()}))
except smtplib.SMTPResponseException as e:
    print("error", e.smtp_code, e.smtp_error.decode(errors="replace"))
except smtplib.SMTPNotSupportedError as e:
    print("unsupported", e)
"#;

fn send(args: serde_json::Value) -> String {
    python(SEND, &[args.to_string()]).trim().to_string()
}

fn message(subject: &str, body: &str) -> String {
    format!("From: sender@remote.test\r\nTo: alice@example.test\r\nSubject: {subject}\r\n\r\n{body}")
}

/// Splits our Return-Path and Received headers off a stored message: (Received, rest).
fn split_received(stored: &[u8]) -> (String, Vec<u8>) {
    let text = String::from_utf8_lossy(stored);
    let Some(after) = text.strip_prefix("Return-Path: <") else { panic!("no Return-Path: {text}") };
    let skip = stored.len() - after.len() + after.find("\r\n").expect("Return-Path line end") + 2;
    let stored = &stored[skip..];
    let text = String::from_utf8_lossy(stored);
    assert!(text.starts_with("Received: from "), "no Received header: {text}");
    // The header ends at the first line that does not start with a tab.
    let mut end = 0;
    for (i, line) in text.split_inclusive("\r\n").enumerate() {
        if i > 0 && !line.starts_with('\t') {
            break;
        }
        end += line.len();
    }
    (text[..end].to_string(), stored[end..].to_vec())
}

#[test]
fn mx_delivers_byte_identical_with_trace_header() {
    let node = MailNode::start("node1.example.test", "");
    let body = "Line one\r\n.leading dot\r\n..two dots\r\n8-bit: h\u{e9}llo w\u{f6}rld\r\nlast line without newline";
    let msg = message("hello", body);
    let out = send(serde_json::json!({"addr": node.smtp.to_string(), "from": "sender@remote.test",
        "to": ["alice@example.test"], "msg": msg}));
    assert_eq!(out, "ok {}");
    let inbox = node.inbox("alice@example.test");
    assert_eq!(inbox.len(), 1);
    let (received, rest) = split_received(&inbox[0]);
    assert!(received.contains("by node1.example.test (SIRMS) with ESMTP"), "{received}");
    assert!(received.contains("[127.0.0.1]"), "{received}");
    // smtplib adds the final CRLF a message lacks; everything else arrives untouched.
    assert_eq!(String::from_utf8(rest).unwrap(), format!("{msg}\r\n"));
    assert!(node.inbox("bob@example.test").is_empty());
}

#[test]
fn aliases_and_policy() {
    let node = MailNode::start("node2.example.test", "");
    let addr = node.smtp.to_string();
    let out = send(serde_json::json!({"addr": addr, "from": "x@remote.test",
        "to": ["team@example.test", "nobody@example.test", "someone@elsewhere.test"], "msg": message("team", "hi\r\n")}));
    assert_eq!(
        out,
        r#"ok {"nobody@example.test": [550, "5.1.1 no such user here"], "someone@elsewhere.test": [554, "5.7.1 relay access denied"]}"#
    );
    assert_eq!(node.inbox("alice@example.test").len(), 1);
    assert_eq!(node.inbox("bob@example.test").len(), 1);
    // No open relay: mail only to foreign domains is refused outright.
    let out = send(serde_json::json!({"addr": addr, "from": "x@remote.test",
        "to": ["victim@elsewhere.test"], "msg": message("relay", "spam\r\n")}));
    assert_eq!(out, r#"refused {"victim@elsewhere.test": 554}"#);
}

#[test]
fn submission_needs_tls_and_auth() {
    let node = MailNode::start("node3.example.test", "");
    let sub = node.submission.to_string();
    // Without TLS, AUTH is not offered and mail is refused.
    let out = send(serde_json::json!({"addr": sub, "from": "alice@example.test",
        "to": ["bob@example.test"], "msg": message("x", "x\r\n"), "login": "alice@example.test", "password": "alice-pw"}));
    assert_eq!(out, "unsupported SMTP AUTH extension not supported by server.");
    let out = python(
        r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1].rsplit(":",1)[1]), timeout=20)
s.ehlo("c")
print(s.has_extn("auth"), s.has_extn("starttls"), s.mail("alice@example.test")[0])
"#,
        std::slice::from_ref(&sub),
    );
    assert_eq!(out.trim(), "False True 530");
    // With STARTTLS and the right password it goes through.
    let out = send(serde_json::json!({"addr": sub, "starttls": true, "login": "alice@example.test",
        "password": "alice-pw", "from": "alice@example.test", "to": ["bob@example.test"], "msg": message("sub", "via 587\r\n")}));
    assert_eq!(out, "ok {}");
    let (received, _) = split_received(&node.inbox("bob@example.test")[0]);
    assert!(received.contains("with ESMTPSA"), "{received}");
    // A wrong password is refused with 535.
    let out = send(serde_json::json!({"addr": sub, "starttls": true, "login": "alice@example.test",
        "password": "wrong", "from": "alice@example.test", "to": ["bob@example.test"], "msg": "x"}));
    assert!(out.starts_with("error 535"), "{out}");
    // Implicit TLS on the submissions port.
    let out = send(serde_json::json!({"addr": node.submissions.to_string(), "implicit_tls": true,
        "login": "bob@example.test", "password": "bob-pw", "from": "bob@example.test",
        "to": ["alice@example.test"], "msg": message("465", "via 465\r\n")}));
    assert_eq!(out, "ok {}");
    assert!(split_received(&node.inbox("alice@example.test")[0]).1.ends_with(b"via 465\r\n"));
}

/// An authenticated sender is held to its hourly recipient limit: smtplib sees the recipient
/// past it refused with 450 4.7.1 while the others go through, the node counts it, and mail
/// from the MX side is not limited.
#[test]
fn an_authenticated_sender_is_held_to_its_hourly_recipient_limit() {
    let node = MailNode::start("node-rate.example.test", "[limits]\nsubmission_recipients_per_hour = 3\n");
    let sub = node.submission.to_string();
    let out = send(serde_json::json!({"addr": sub, "starttls": true, "login": "alice@example.test",
        "password": "alice-pw", "from": "alice@example.test", "to": ["bob@example.test", "bob@example.test"],
        "msg": message("one", "1\r\n")}));
    assert_eq!(out, "ok {}");
    let out = send(serde_json::json!({"addr": sub, "starttls": true, "login": "alice@example.test",
        "password": "alice-pw", "from": "alice@example.test", "to": ["bob@example.test", "alice@example.test"],
        "msg": message("two", "2\r\n")}));
    assert_eq!(
        out,
        r#"ok {"alice@example.test": [450, "4.7.1 sending rate limit reached (3 recipients an hour for this account); try again later"]}"#
    );
    assert_eq!(node.inbox("bob@example.test").len(), 2, "the message went to the recipient within the limit");
    assert!(node.inbox("alice@example.test").is_empty());
    // The MX takes mail for alice from anyone.
    for i in 0..4 {
        let out = send(serde_json::json!({"addr": node.smtp.to_string(), "from": "x@remote.test",
            "to": ["alice@example.test"], "msg": message("mx", &format!("{i}\r\n"))}));
        assert_eq!(out, "ok {}");
    }
    let page = metrics_page(node.metrics);
    assert!(page.contains("sirms_submission_rate_limited_total{limit=\"user\"} 1"), "{page}");
}

#[test]
fn oversized_message_is_refused_and_session_continues() {
    let node = MailNode::start("node4.example.test", "[limits]\nmax_message_size = 10000\n");
    let out = python(
        r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1].rsplit(":",1)[1]), timeout=20)
s.ehlo("c")
# smtplib announces SIZE, so the refusal comes at MAIL FROM; then try without SIZE.
try:
    s.sendmail("x@remote.test", ["alice@example.test"], b"Subject: big\r\n\r\n" + b"x" * 20000)
    print("accepted")
except smtplib.SMTPSenderRefused as e:
    print(e.smtp_code)
s.rset()
s.esmtp_features.pop("size", None)
try:
    s.sendmail("x@remote.test", ["alice@example.test"], b"Subject: big\r\n\r\n" + b"x" * 20000)
    print("accepted")
except smtplib.SMTPDataError as e:
    print(e.smtp_code)
s.rset()
print(s.sendmail("x@remote.test", ["alice@example.test"], b"Subject: small\r\n\r\nok\r\n"))
"#,
        &[node.smtp.to_string()],
    );
    assert_eq!(out.trim(), "552\n552\n{}");
    let inbox = node.inbox("alice@example.test");
    assert_eq!(inbox.len(), 1);
    assert!(inbox[0].ends_with(b"Subject: small\r\n\r\nok\r\n"));
}

/// Every classic relay trick is refused to an unauthenticated client.
#[test]
fn relay_tricks_are_refused() {
    let node = MailNode::start("node5.example.test", "");
    let out = python(
        r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=20)
s.ehlo("c")
s.mail("x@remote.test")
for rcpt in ["victim%elsewhere.test@example.test", "@example.test:victim@elsewhere.test",
             "elsewhere.test!victim@example.test", '"victim@elsewhere.test"@example.test',
             "victim@[192.0.2.1]", "victim@sub.example.test", "victim@example.test.",
             "victim@elsewhere.test", "victim@example.test.elsewhere.test"]:
    code, _ = s.docmd("RCPT TO:<%s>" % rcpt)
    print(rcpt, code)
print("postmaster", s.docmd("RCPT TO:<postmaster>")[0])
print("Postmaster@EXAMPLE.test", s.docmd("RCPT TO:<Postmaster@EXAMPLE.test>")[0])
"#,
        &[node.smtp.port().to_string()],
    );
    for line in out.lines() {
        let (rcpt, code) = line.rsplit_once(' ').unwrap();
        let code: u16 = code.parse().unwrap();
        if rcpt.to_lowercase().starts_with("postmaster") {
            assert_eq!(code, 250, "{line}");
        } else {
            assert!(code >= 500, "relay trick accepted: {line}");
        }
    }
    assert_eq!(out.lines().count(), 11);
}

/// swaks pipelines a whole transaction; curl speaks SMTP too; a 20 MiB message and UTF-8
/// addresses with SMTPUTF8 arrive intact.
#[test]
fn swaks_curl_large_and_utf8() {
    let node = MailNode::start("node6.example.test", "");
    let out = std::process::Command::new("swaks")
        .args(["--server", &node.smtp.to_string(), "--pipeline", "--to", "alice@example.test"])
        .args(["--from", "sender@remote.test", "--header", "Subject: via swaks", "--body", "swaks body"])
        .output()
        .expect("run swaks");
    assert!(out.status.success(), "swaks: {}", String::from_utf8_lossy(&out.stdout));
    let transcript = String::from_utf8_lossy(&out.stdout);
    // swaks marks server errors with "<**".
    assert!(!transcript.contains("<** "), "{transcript}");
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail.txt");
    std::fs::write(&mail, "Subject: via curl\r\n\r\ncurl body\r\n").unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", &format!("smtp://{}", node.smtp), "--mail-from", "c@remote.test"])
        .args(["--mail-rcpt", "bob@example.test", "-T"])
        .arg(&mail)
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    let big = python(
        r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=60)
body = ("x" * 998 + "\r\n") * (20 * 1024 * 1024 // 1000)
msg = ("Subject: big\r\n\r\n" + body).encode()
print(s.sendmail("x@remote.test", ["bob@example.test"], msg), len(msg))
msg = "Subject: caf\u00e9\r\nFrom: Jos\u00e9 <jos\u00e9@remote.test>\r\n\r\nna\u00efve \u2603\r\n".encode()
print(s.sendmail("jos\u00e9@remote.test", ["alice@example.test"], msg, mail_options=["SMTPUTF8"]))
s.quit()
"#,
        &[node.smtp.port().to_string()],
    );
    let mut lines = big.lines();
    let first = lines.next().unwrap();
    let size: usize = first.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(first.starts_with("{}"), "{big}");
    assert_eq!(lines.next(), Some("{}"));
    let alice = node.inbox("alice@example.test");
    assert!(String::from_utf8_lossy(&alice[0]).contains("Subject: via swaks"));
    assert!(alice[1].ends_with("na\u{ef}ve \u{2603}\r\n".as_bytes()));
    assert!(String::from_utf8_lossy(&alice[1]).starts_with("Return-Path: <jos\u{e9}@remote.test>"));
    let bob = node.inbox("bob@example.test");
    assert!(bob[0].ends_with(b"Subject: via curl\r\n\r\ncurl body\r\n"));
    let (_, rest) = split_received(&bob[1]);
    assert_eq!(rest.len(), size);
}

/// A PROXY header from an address that is not a trusted router gains nothing: its
/// signature ends in "QUIT", so the node closes the session without reading a client
/// address from it.
#[test]
fn proxy_header_from_untrusted_peer_is_refused() {
    let node = MailNode::start("node7.example.test", "");
    let out = python(
        r#"
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
print(s.recv(1000).decode().strip())
sig = b"\r\n\r\n\x00\r\nQUIT\n"
hdr = sig + bytes([0x21, 0x11]) + struct.pack("!H", 12) + socket.inet_aton("192.0.2.66") + socket.inet_aton("127.0.0.1") + struct.pack("!HH", 1234, 25)
s.sendall(hdr + b"EHLO x\r\n")
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print(data.decode(errors="replace"))
"#,
        &[node.smtp.port().to_string()],
    );
    assert!(out.contains("221 2.0.0 bye"), "{out}");
    assert!(!out.contains("greets [192.0.2.66]"), "{out}");
}

/// swaks authenticates with AUTH LOGIN after STARTTLS on the submission port.
#[test]
fn swaks_auth_login_over_starttls() {
    let node = MailNode::start("node8.example.test", "");
    let out = std::process::Command::new("swaks")
        .args(["--server", &node.submission.to_string(), "--tls", "--auth", "LOGIN"])
        .args(["--auth-user", "bob@example.test", "--auth-password", "bob-pw"])
        .args(["--from", "bob@example.test", "--to", "alice@example.test", "--header", "Subject: login"])
        .output()
        .expect("run swaks");
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{transcript}");
    assert!(transcript.contains("235 2.7.0"), "{transcript}");
    let inbox = node.inbox("alice@example.test");
    assert_eq!(inbox.len(), 1);
    assert!(String::from_utf8_lossy(&inbox[0]).contains("with ESMTPSA"));
}

/// Per-IP connection limit and the idle timeout answer in SMTP's own words.
#[test]
fn per_ip_limit_and_idle_timeout() {
    let node = MailNode::start("node9.example.test", "[limits]\nmax_connections_per_ip = 2\nsmtp_idle_secs = 1\n");
    let out = python(
        r#"
import socket, sys
port = int(sys.argv[1])
def greet():
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s, s.recv(1000).decode().strip()
a, ga = greet()
b, gb = greet()
c, gc = greet()
print(ga.split()[0], gb.split()[0], gc)
# An idle session is closed with 421 after the timeout; read until the server closes.
data = b""
while True:
    chunk = a.recv(1000)
    if not chunk:
        break
    data += chunk
print(data.decode().strip())
"#,
        &[node.smtp.port().to_string()],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "220 220 421 4.7.0 too many connections, try again later", "{out}");
    assert_eq!(lines[1], "421 4.4.2 idle timeout, closing connection", "{out}");
}

/// The connection limits are the node's, across its listeners: two connections from one
/// address on SMTP and IMAP use up a per-IP limit of 2 for POP3 too, and three connections
/// from three addresses use up a node limit of 3 for a fourth on SMTP (per listener, each
/// would have been let in).
#[test]
fn connection_limits_hold_across_services() {
    let node =
        MailNode::start("node-budget.example.test", "[limits]\nmax_connections = 3\nmax_connections_per_ip = 2\n");
    let out = python(
        r#"
import socket, sys, time
smtp, imap, pop3 = (int(p) for p in sys.argv[1:4])
def greet(port, source):
    s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return s, s.recv(1000).decode().strip()
a, ga = greet(smtp, "127.0.0.11")
b, gb = greet(imap, "127.0.0.11")
c, gc = greet(pop3, "127.0.0.11")
print(ga.split()[0], gb.split()[0] + " " + gb.split()[1], gc)
# The refused connection's slot is given back once the node has closed it.
while c.recv(1000):
    pass
c.close()
time.sleep(0.2)
d, gd = greet(pop3, "127.0.0.12")
e, ge = greet(smtp, "127.0.0.13")
print(gd.split()[0], ge)
"#,
        &[node.smtp.port().to_string(), node.imap.port().to_string(), node.pop3.port().to_string()],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "220 * OK -ERR [SYS/TEMP] too many connections, try again later", "{out}");
    assert_eq!(lines[1], "+OK 421 4.7.0 too many connections, try again later", "{out}");
}

/// Fuzz finding F1: commands pipelined behind an action (the end of DATA, a BDAT LAST chunk)
/// are answered at once, not after the idle timeout. Each transaction goes out in one write
/// and the client reads until the node closes, within a timeout far below the idle one.
#[test]
fn commands_pipelined_after_the_message_are_answered() {
    let node = MailNode::start("node10.example.test", "[limits]\nsmtp_idle_secs = 60\n");
    let out = python(
        r#"
import socket, sys
port = int(sys.argv[1])
def session(payload):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.recv(1000)
    s.sendall(payload)
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode()
head = b"EHLO c\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\n"
print(repr(session(head + b"DATA\r\nSubject: one\r\n\r\nbody\r\n.\r\nQUIT\r\n")))
print(repr(session(head + b"BDAT 22 LAST\r\nSubject: two\r\n\r\nbody\r\nQUIT\r\n")))
"#,
        &[node.smtp.port().to_string()],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for line in lines {
        assert!(line.contains("250 2.0.0 OK delivered as") && line.ends_with("221 2.0.0 bye\\r\\n'"), "{line}");
    }
    let inbox = node.inbox("alice@example.test");
    assert_eq!(inbox.len(), 2);
    assert!(inbox[1].ends_with(b"Subject: two\r\n\r\nbody\r\n"));
}

/// Issue 28: a message arriving with 50 hops is delivered, one with 51 is refused at the end of
/// its data with 554 5.4.6 and never reaches the mailbox.
#[test]
fn mail_loop_is_refused_past_the_hop_limit() {
    let node = MailNode::start("hops.example.test", "");
    let with_hops = |n: usize, subject: &str| {
        format!(
            "{}{}",
            "Received: from relay.remote.test by mx.remote.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n".repeat(n),
            message(subject, "looping?\r\n")
        )
    };
    let send_hops = |n: usize, subject: &str| {
        send(serde_json::json!({"addr": node.smtp.to_string(), "from": "sender@remote.test",
            "to": ["alice@example.test"], "msg": with_hops(n, subject)}))
    };
    assert_eq!(send_hops(50, "fifty hops"), "ok {}");
    let out = send_hops(51, "fifty-one hops");
    assert!(out.starts_with("error 554 5.4.6 too many hops"), "{out}");
    assert!(send_hops(120, "a hundred and twenty hops").starts_with("error 554 5.4.6"));
    let inbox = node.inbox("alice@example.test");
    assert_eq!(inbox.len(), 1);
    assert!(String::from_utf8_lossy(&inbox[0]).contains("Subject: fifty hops\r\n"));
}

/// Issue 28: an alias loop (a → b → a) is refused at RCPT as a routing loop (550 5.4.6), not as
/// an unknown user, and the node logs the chain.
#[test]
fn alias_loop_is_refused_at_rcpt_and_logged() {
    let node = MailNode::start_with_directory(
        [127, 0, 0, 1],
        "aliasloop.example.test",
        "",
        &[],
        &[r#""loop-a@example.test" = ["loop-b@example.test"]"#, r#""loop-b@example.test" = ["loop-a@example.test"]"#],
    );
    let out = send(serde_json::json!({"addr": node.smtp.to_string(), "from": "sender@remote.test",
        "to": ["loop-a@example.test"], "msg": message("loop", "x\r\n")}));
    assert_eq!(out, r#"refused {"loop-a@example.test": 550}"#);
    let reply = python(
        r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=20)
s.ehlo("client.test"); s.mail("sender@remote.test")
code, text = s.rcpt("loop-a@example.test")
print(code, text.decode())
s.quit()
"#,
        &[node.smtp.port().to_string()],
    );
    assert_eq!(reply.trim(), "550 5.4.6 routing loop detected: the recipient's aliases lead back to themselves");
    let log = node.log();
    assert!(
        log.contains("loop-a@example.test -> loop-b@example.test -> loop-a@example.test"),
        "the chain is not logged: {log}"
    );
}
