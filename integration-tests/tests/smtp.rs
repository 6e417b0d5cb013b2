//! SMTP against the real `sirms node` binary with Python's smtplib: what a user sees is
//! what is asserted — reply codes, and the message in the mailbox byte for byte.

use sirms_integration_tests::{MailNode, python};

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

/// Splits our Received header off a stored message and returns (header, rest).
fn split_received(stored: &[u8]) -> (String, Vec<u8>) {
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
