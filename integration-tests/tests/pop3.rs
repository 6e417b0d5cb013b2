//! POP3 against the real `sirms node` binary with real clients: Python's poplib, curl and
//! fetchmail. Messages go in by SMTP and must come out byte for byte.

use std::process::Command;

use sirms_integration_tests::{MailNode, python};

/// poplib over STLS: prints STAT, UIDLs, the RETR'd messages (hex), TOP, and QUIT's outcome.
const SESSION: &str = r#"
import poplib, ssl, sys, json
a = json.loads(sys.argv[1])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
p = poplib.POP3("127.0.0.1", a["port"], timeout=20)
out = {"greeting": p.getwelcome().decode()}
out["capa_plain"] = sorted(p.capa().keys())
p.stls(context=ctx)
out["capa_tls"] = sorted(p.capa().keys())
p.user(a["user"]); p.pass_(a["password"])
out["stat"] = list(p.stat())
out["uidl"] = [u.decode() for u in p.uidl()[1]]
out["list"] = [l.decode() for l in p.list()[1]]
out["retr"] = [b"\r\n".join(p.retr(i + 1)[1]).hex() for i in range(out["stat"][0])]
if out["stat"][0]:
    out["top"] = [l.decode() for l in p.top(1, 0)[1]]
for i in a.get("dele", []):
    p.dele(i)
if a.get("drop"):
    p.sock.close()
else:
    out["quit"] = p.quit().decode()
print(json.dumps(out))
"#;

fn session(node: &MailNode, extra: serde_json::Value) -> serde_json::Value {
    let mut args = serde_json::json!({"port": node.pop3.port(), "user": "alice@example.test", "password": "alice-pw"});
    if let (Some(a), Some(e)) = (args.as_object_mut(), extra.as_object()) {
        a.extend(e.clone());
    }
    serde_json::from_str(&python(SESSION, &[args.to_string()])).expect("session JSON")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn retrieve_delete_and_uidl_stability() {
    let node = MailNode::start("pop-node.example.test", "");
    node.deliver_numbered(3);
    let stored = node.inbox("alice@example.test");
    assert_eq!(stored.len(), 3);

    let first = session(&node, serde_json::json!({}));
    assert!(first["greeting"].as_str().unwrap().starts_with("+OK"), "{first}");
    // Before TLS no plaintext login is offered; after STLS it is.
    assert!(!first["capa_plain"].as_array().unwrap().iter().any(|c| c == "USER"), "{first}");
    assert!(first["capa_tls"].as_array().unwrap().iter().any(|c| c == "USER"), "{first}");
    assert_eq!(first["stat"][0], 3);
    let sizes: u64 = stored.iter().map(|m| m.len() as u64).sum();
    assert_eq!(first["stat"][1], sizes);
    // Byte-identical: poplib strips the line ends and the stuffing; joining with CRLF and
    // adding the final CRLF gives the stored bytes back.
    for (got, want) in first["retr"].as_array().unwrap().iter().zip(&stored) {
        assert_eq!(format!("{}0d0a", got.as_str().unwrap()), hex(want));
    }
    let top = first["top"].as_array().unwrap();
    assert_eq!(top.last().unwrap(), "", "TOP 1 0 ends with the blank line after the header: {top:?}");
    assert!(top.iter().any(|l| l == "Subject: message 0"));

    // DELE then a dropped connection deletes nothing.
    let dropped = session(&node, serde_json::json!({"dele": [1], "drop": true}));
    assert_eq!(dropped["stat"][0], 3);
    // DELE then QUIT deletes durably; UIDLs of the rest stay the same.
    let second = session(&node, serde_json::json!({"dele": [1, 3]}));
    assert_eq!(second["uidl"], first["uidl"]);
    assert!(second["quit"].as_str().unwrap().starts_with("+OK"));
    let third = session(&node, serde_json::json!({}));
    assert_eq!(third["stat"][0], 1);
    let uidl1 = first["uidl"][1].as_str().unwrap().split(' ').nth(1).unwrap().to_string();
    assert_eq!(third["uidl"][0].as_str().unwrap(), format!("1 {uidl1}"));
    assert_eq!(node.inbox("alice@example.test").len(), 1);
}

#[test]
fn in_use_auth_plain_and_bad_password() {
    let node = MailNode::start("pop-node2.example.test", "allow_plaintext_auth = true\n");
    node.deliver_numbered(1);
    let out = python(
        r#"
import poplib, sys, base64
port = int(sys.argv[1])
a = poplib.POP3("127.0.0.1", port, timeout=20)
a.user("alice@example.test"); a.pass_("alice-pw")
b = poplib.POP3("127.0.0.1", port, timeout=20)
b.user("alice@example.test")
try:
    b.pass_("alice-pw"); print("second login allowed")
except poplib.error_proto as e:
    print(e.args[0].decode())
c = poplib.POP3("127.0.0.1", port, timeout=20)
try:
    c.user("alice@example.test"); c.pass_("wrong"); print("bad password accepted")
except poplib.error_proto as e:
    print(e.args[0].decode())
a.quit()
d = poplib.POP3("127.0.0.1", port, timeout=20)
token = base64.b64encode(b"\0alice@example.test\0alice-pw").decode()
print(d._shortcmd("AUTH PLAIN " + token).decode())
print(d.stat())
print(d.noop().decode())
d.quit()
"#,
        &[node.pop3.port().to_string()],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("-ERR [IN-USE]"), "{out}");
    assert!(lines[1].starts_with("-ERR [AUTH]"), "{out}");
    assert!(lines[2].starts_with("+OK"), "{out}");
    assert!(lines[3].starts_with("(1, "), "{out}");
}

#[test]
fn curl_reads_over_implicit_tls() {
    let node = MailNode::start("pop-node3.example.test", "");
    node.deliver_numbered(2);
    let stored = node.inbox("alice@example.test");
    let out = Command::new("curl")
        .args(["-sS", "-k", "--max-time", "20", "-u", "alice@example.test:alice-pw"])
        .arg(format!("pop3s://127.0.0.1:{}/2", node.pop3s.port()))
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, stored[1]);
    let list = Command::new("curl")
        .args(["-sS", "-k", "--max-time", "20", "-u", "alice@example.test:alice-pw"])
        .arg(format!("pop3s://127.0.0.1:{}/", node.pop3s.port()))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&list.stdout);
    assert_eq!(text, format!("1 {}\r\n2 {}\r\n", stored[0].len(), stored[1].len()));
}

#[test]
fn fetchmail_fetches_everything_into_an_mda() {
    let node = MailNode::start("pop-node4.example.test", "");
    node.deliver_numbered(3);
    let stored = node.inbox("alice@example.test");
    let dir = tempfile::tempdir().unwrap();
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let rc = dir.path().join("fetchmailrc");
    std::fs::write(
        &rc,
        format!(
            "set no syslog\nset no bouncemail\npoll 127.0.0.1 with proto POP3 service {port}\n  \
             user \"alice@example.test\" there with password \"alice-pw\"\n  \
             ssl no sslcertck\n  fetchall nokeep\n  mda \"/bin/sh -c 'cat > {out}/$$.msg'\"\n",
            port = node.pop3s.port(),
            out = outdir.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new("fetchmail")
        .arg("-f")
        .arg(&rc)
        .args(["--nodetach", "--silent"])
        .env("HOME", dir.path())
        .env("FETCHMAILHOME", dir.path())
        .output()
        .expect("run fetchmail");
    assert!(
        out.status.success(),
        "fetchmail: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut fetched: Vec<Vec<u8>> =
        std::fs::read_dir(&outdir).unwrap().map(|e| std::fs::read(e.unwrap().path()).unwrap()).collect();
    assert_eq!(fetched.len(), 3);
    // fetchmail adds its own Received header on top and hands the MDA LF line ends;
    // the rest of each message must be what we stored.
    fetched.sort_by_key(|m| String::from_utf8_lossy(m).find("Subject: message").map(|i| m[i + 17]));
    for (got, want) in fetched.iter().zip(&stored) {
        // fetchmail puts the envelope sender into its own Return-Path; drop ours to compare.
        let want = String::from_utf8_lossy(want).replace("\r\n", "\n");
        let want = want.split_once('\n').map(|(_, rest)| rest.to_string()).unwrap_or_default();
        let got = String::from_utf8_lossy(got);
        assert!(got.ends_with(&want), "fetched:\n{got}\nstored:\n{want}");
    }
    // fetchall nokeep: the maildrop is empty afterwards.
    assert!(node.inbox("alice@example.test").is_empty());
}
