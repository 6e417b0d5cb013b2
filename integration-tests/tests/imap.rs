//! IMAP against the real `sirms node` binary with Python's imaplib and curl: mail delivered
//! by SMTP comes out byte for byte, flags, UIDPLUS, LIST, IDLE, two sessions seeing each
//! other's changes, and the extensions (QUOTA, BINARY, ESEARCH, LIST-STATUS, QRESYNC, SORT, THREAD,
//! CREATE-SPECIAL-USE, WITHIN, SEARCHRES).

use std::process::Command;

use sirms_integration_tests::{MailNode, python};

/// Python prelude: `connect()` gives an imaplib session logged in as alice over STARTTLS.
const PRELUDE: &str = r#"
import imaplib, ssl, sys, json, time, smtplib, socket
a = json.loads(sys.argv[1])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
def connect(user="alice@example.test", password="alice-pw"):
    m = imaplib.IMAP4("127.0.0.1", a["imap"], timeout=20)
    m.starttls(ssl_context=ctx)
    m.login(user, password)
    return m
def ok(r):
    typ, data = r
    assert typ == "OK", r
    return data
out = {}
"#;

fn run(node: &MailNode, script: &str) -> serde_json::Value {
    let args = serde_json::json!({"imap": node.imap.port(), "imaps": node.imaps.port(), "smtp": node.smtp.port()});
    let text = python(&format!("{PRELUDE}\n{script}\nprint(json.dumps(out))"), &[args.to_string()]);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON ({e}): {text}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn smtp_delivered_mail_is_fetched_byte_identical() {
    let node = MailNode::start("imap-node.example.test", "");
    node.deliver_numbered(3);
    let stored = node.inbox("alice@example.test");
    assert_eq!(stored.len(), 3);
    let out = run(
        &node,
        r#"
m = imaplib.IMAP4("127.0.0.1", a["imap"], timeout=20)
out["caps_plain"] = sorted(m.capabilities)
try:
    m.login("alice@example.test", "alice-pw"); out["plain_login"] = "accepted"
except imaplib.IMAP4.error as e:
    out["plain_login"] = str(e)
m.starttls(ssl_context=ctx)
out["caps_tls"] = sorted(m.capabilities)
ok(m.login("alice@example.test", "alice-pw"))
typ, data = m.select("INBOX")
out["exists"] = data[0].decode()
out["uidvalidity"] = m.untagged_responses.get("UIDVALIDITY", [b"?"])[0].decode()
typ, data = m.uid("FETCH", "1:*", "(RFC822.SIZE BODY.PEEK[])")
out["bodies"] = [d[1].hex() for d in data if isinstance(d, tuple)]
out["sizes"] = [d[0].decode() for d in data if isinstance(d, tuple)]
out["flags_after_peek"] = [f.decode() for f in ok(m.fetch("1:*", "(FLAGS)"))]
ok(m.fetch("2", "(BODY[TEXT])"))
out["flags_after_fetch"] = [f.decode() for f in ok(m.fetch("1:*", "(FLAGS)"))]
out["search_unseen"] = ok(m.search(None, "UNSEEN"))[0].decode()
out["search_subject"] = ok(m.uid("SEARCH", "SUBJECT", "\"message 2\""))[0].decode()
out["logout"] = m.logout()[0]
"#,
    );
    assert!(out["caps_plain"].as_array().unwrap().iter().any(|c| c == "LOGINDISABLED"), "{out}");
    assert!(out["plain_login"].as_str().unwrap().contains("PRIVACYREQUIRED"), "{out}");
    // APPENDLIMIT is the default `[limits] imap_max_append`.
    let caps = ["IMAP4REV1", "IDLE", "UIDPLUS", "MOVE", "SPECIAL-USE", "AUTH=PLAIN", "CONDSTORE", "NAMESPACE"];
    for cap in caps.into_iter().chain(["STATUS=SIZE", "APPENDLIMIT=67108864"]) {
        assert!(out["caps_tls"].as_array().unwrap().iter().any(|c| c == cap), "{cap} missing: {out}");
    }
    assert_eq!(out["exists"], "3");
    let bodies = out["bodies"].as_array().unwrap();
    assert_eq!(bodies.len(), 3);
    for (got, want) in bodies.iter().zip(&stored) {
        assert_eq!(got.as_str().unwrap(), hex(want), "BODY[] must be the stored bytes");
    }
    for (header, want) in out["sizes"].as_array().unwrap().iter().zip(&stored) {
        assert!(header.as_str().unwrap().contains(&format!("RFC822.SIZE {}", want.len())), "{header}");
    }
    assert!(out["flags_after_peek"].as_array().unwrap().iter().all(|f| !f.as_str().unwrap().contains("\\Seen")));
    assert!(out["flags_after_fetch"][1].as_str().unwrap().contains("\\Seen"), "{out}");
    assert_eq!(out["search_unseen"], "1 3");
    assert_eq!(out["search_subject"], "3");
    assert_eq!(out["logout"], "BYE");
}

const NESTED: &str = "From: Alice <alice@example.test>\r\n\
To: Bob <bob@example.test>, carol@example.test\r\n\
Subject: nested\r\n\
Date: Wed, 05 Mar 2025 09:30:00 +0000\r\n\
Message-ID: <nested@example.test>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"outer\"\r\n\
\r\n\
--outer\r\n\
Content-Type: multipart/alternative; boundary=\"inner\"\r\n\
\r\n\
--inner\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
plain text\r\n\
--inner\r\n\
Content-Type: text/html; charset=utf-8\r\n\
\r\n\
<p>html</p>\r\n\
--inner--\r\n\
--outer\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
From: Carol <carol@example.test>\r\n\
Subject: attached\r\n\
\r\n\
attached body\r\n\
--outer\r\n\
Content-Type: application/pdf; name=\"a.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
Content-Disposition: attachment; filename=\"a.pdf\"\r\n\
\r\n\
JVBERi0=\r\n\
--outer--\r\n";

/// NESTED's ENVELOPE, as a FETCH shows it.
const NESTED_ENVELOPE: &str = "ENVELOPE (\"Wed, 05 Mar 2025 09:30:00 +0000\" \"nested\" \
((\"Alice\" NIL \"alice\" \"example.test\")) ((\"Alice\" NIL \"alice\" \"example.test\")) \
((\"Alice\" NIL \"alice\" \"example.test\")) ((\"Bob\" NIL \"bob\" \"example.test\")(NIL NIL \"carol\" \"example.test\")) \
NIL NIL NIL \"<nested@example.test>\")";

/// NESTED's BODYSTRUCTURE, as a FETCH shows it.
const NESTED_BODYSTRUCTURE: &str = "BODYSTRUCTURE (((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 10 1 NIL NIL NIL NIL)\
(\"text\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 11 1 NIL NIL NIL NIL) \"alternative\" (\"boundary\" \"inner\") NIL NIL NIL)\
(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 68 (NIL \"attached\" ((\"Carol\" NIL \"carol\" \"example.test\")) \
((\"Carol\" NIL \"carol\" \"example.test\")) ((\"Carol\" NIL \"carol\" \"example.test\")) NIL NIL NIL NIL NIL) \
(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 13 1 NIL NIL NIL NIL) 4 NIL NIL NIL NIL)\
(\"application\" \"pdf\" (\"name\" \"a.pdf\") NIL NIL \"base64\" 8 NIL (\"attachment\" (\"filename\" \"a.pdf\")) NIL NIL) \
\"mixed\" (\"boundary\" \"outer\") NIL NIL NIL)";

#[test]
fn append_structure_flags_copy_expunge_and_list() {
    let node = MailNode::start("imap-node.example.test", "");
    let out = run(
        &node,
        &format!(
            r#"
m = imaplib.IMAP4_SSL("127.0.0.1", a["imaps"], ssl_context=ctx, timeout=20)
ok(m.login("alice@example.test", "alice-pw"))
msg = {NESTED:?}.encode()
typ, data = m.append("INBOX", "(\\Flagged $Work)", imaplib.Time2Internaldate(1700000000), msg)
out["append"] = data[0].decode()
m.select("INBOX")
typ, data = m.fetch("1", "(INTERNALDATE FLAGS ENVELOPE BODYSTRUCTURE)")
out["fetch"] = data[0].decode()
typ, data = m.fetch("1", "(BODY.PEEK[1.2] BODY.PEEK[2.HEADER.FIELDS (SUBJECT)] BODY.PEEK[3.MIME] BODY.PEEK[]<0.20>)")
out["parts"] = [d[1].decode() for d in data if isinstance(d, tuple)]
out["store"] = [d.decode() for d in ok(m.store("1", "+FLAGS", "(\\Seen \\Deleted)"))]
out["store2"] = [d.decode() for d in ok(m.store("1", "-FLAGS", "(\\Flagged)"))]
typ, data = m.copy("1", "Archive")
out["copy"] = data[0].decode()
typ, data = m.expunge()
out["expunge"] = [d.decode() for d in data if d]
typ, data = m.list()
out["list"] = [d.decode() for d in data]
m.create("Projects/2025")
out["list_pct"] = [d.decode() for d in ok(m.list('""', "Projects/%"))]
out["status"] = ok(m.status("Archive", "(MESSAGES UIDNEXT UNSEEN)"))[0].decode()
m.select("Archive")
out["archive_flags"] = ok(m.fetch("1", "(FLAGS)"))[0].decode()
m.logout()
"#
        ),
    );
    assert!(out["append"].as_str().unwrap().starts_with("[APPENDUID "), "{out}");
    assert!(out["append"].as_str().unwrap().ends_with(" 1] APPEND completed"), "{out}");
    let fetch = out["fetch"].as_str().unwrap();
    assert!(fetch.contains("INTERNALDATE \"14-Nov-2023 22:13:20 +0000\""), "{fetch}");
    assert!(fetch.contains("FLAGS (\\Flagged $Work \\Recent)"), "{fetch}");
    assert!(fetch.contains(NESTED_ENVELOPE), "{fetch}");
    assert!(fetch.contains(NESTED_BODYSTRUCTURE), "{fetch}");
    assert_eq!(
        out["parts"],
        serde_json::json!([
            "<p>html</p>",
            "Subject: attached\r\n\r\n",
            "Content-Type: application/pdf; name=\"a.pdf\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"a.pdf\"\r\n\r\n",
            "From: Alice <alice@e"
        ])
    );
    assert_eq!(out["store"][0], "1 (FLAGS (\\Flagged \\Deleted \\Seen $Work \\Recent))");
    assert_eq!(out["store2"][0], "1 (FLAGS (\\Deleted \\Seen $Work \\Recent))");
    assert!(out["copy"].as_str().unwrap().starts_with("[COPYUID "), "{out}");
    assert!(out["copy"].as_str().unwrap().contains(" 1 1]"), "{out}");
    assert_eq!(out["expunge"], serde_json::json!(["1"]));
    let list: Vec<&str> = out["list"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    for want in [
        "(\\HasNoChildren) \"/\" INBOX",
        "(\\HasNoChildren \\Sent) \"/\" Sent",
        "(\\HasNoChildren \\Drafts) \"/\" Drafts",
        "(\\HasNoChildren \\Trash) \"/\" Trash",
        "(\\HasNoChildren \\Junk) \"/\" Junk",
        "(\\HasNoChildren \\Archive) \"/\" Archive",
    ] {
        assert!(list.contains(&want), "{want} not in {list:?}");
    }
    assert_eq!(out["list_pct"], serde_json::json!(["(\\HasNoChildren) \"/\" Projects/2025"]));
    assert_eq!(out["status"], "Archive (MESSAGES 1 UIDNEXT 2 UNSEEN 0)");
    assert_eq!(out["archive_flags"], "1 (FLAGS (\\Deleted \\Seen $Work \\Recent))");
}

#[test]
fn idle_sees_smtp_delivery_and_other_sessions_flags_within_a_second() {
    let node = MailNode::start("imap-node.example.test", "");
    node.deliver_numbered(1);
    let out = run(
        &node,
        r#"
idler = connect()
idler.select("INBOX")
other = connect()
other.select("INBOX")
def idle_until(m, want, action):
    tag = m._new_tag()
    m.send(tag + b" IDLE\r\n")
    assert m.readline().startswith(b"+"), "no continuation"
    start = time.monotonic()
    action()
    lines = []
    while not any(want in l for l in lines):
        lines.append(m.readline().decode().strip())
    elapsed = time.monotonic() - start
    m.send(b"DONE\r\n")
    while True:
        l = m.readline().decode()
        if l.startswith(tag.decode()):
            lines.append(l.strip()); break
    return lines, elapsed
def smtp():
    s = smtplib.SMTP("127.0.0.1", a["smtp"], timeout=20)
    s.sendmail("x@remote.test", ["alice@example.test"], b"Subject: new\r\n\r\nnew mail\r\n")
    s.quit()
out["delivery"], out["delivery_secs"] = idle_until(idler, "EXISTS", smtp)
out["flags"], out["flags_secs"] = idle_until(idler, "FETCH", lambda: ok(other.store("1", "+FLAGS", "(\\Flagged)")))
ok(other.store("2", "+FLAGS", "(\\Deleted)"))
ok(other.expunge())
typ, data = idler.noop()
out["noop"] = [d.decode() for d in idler.untagged_responses.get("EXPUNGE", [])]
idler.logout(); other.logout()
"#,
    );
    assert!(out["delivery_secs"].as_f64().unwrap() < 1.0, "{out}");
    assert!(out["delivery"].as_array().unwrap().iter().any(|l| l == "* 2 EXISTS"), "{out}");
    assert!(out["flags_secs"].as_f64().unwrap() < 1.0, "{out}");
    assert!(
        out["flags"].as_array().unwrap().iter().any(|l| l == "* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent))"),
        "{out}"
    );
    assert!(
        out["flags"].as_array().unwrap().last().unwrap().as_str().unwrap().ends_with("OK IDLE terminated"),
        "{out}"
    );
    assert_eq!(out["noop"], serde_json::json!(["2"]));
}

#[test]
fn idle_hears_still_here_while_nothing_happens() {
    // One second instead of two minutes, so the test sees several keepalives.
    let node = MailNode::start("imap-node.example.test", "[limits]\nimap_idle_keepalive_secs = 1");
    let out = run(
        &node,
        r#"
m = connect()
m.select("INBOX")
tag = m._new_tag()
m.send(tag + b" IDLE\r\n")
assert m.readline().startswith(b"+"), "no continuation"
start = time.monotonic()
lines = []
while len(lines) < 2:
    lines.append(m.readline().decode().strip())
out["lines"], out["secs"] = lines, time.monotonic() - start
m.send(b"DONE\r\n")
out["done"] = m.readline().decode().strip()
out["noop"] = m.noop()[0]
m.logout()
"#,
    );
    assert_eq!(out["lines"], serde_json::json!(["* OK Still here", "* OK Still here"]), "{out}");
    // Not all at once: the second came a period after the first.
    assert!(out["secs"].as_f64().unwrap() >= 1.5, "{out}");
    assert!(out["done"].as_str().unwrap().ends_with("OK IDLE terminated"), "{out}");
    assert_eq!(out["noop"], "OK");
}

#[test]
fn limits_are_answered_and_the_session_goes_on() {
    let node = MailNode::start("imap-node.example.test", "allow_plaintext_auth = true");
    let out = run(
        &node,
        r#"
s = socket.create_connection(("127.0.0.1", a["imap"]), timeout=20)
f = s.makefile("rb")
out["greeting"] = f.readline().decode().strip()
def cmd(line):
    s.sendall(line)
    out.setdefault("lines", [])
    while True:
        l = f.readline().decode().strip()
        out["lines"].append(l)
        if not l.startswith("*") and not l.startswith("+"):
            return l
out["login"] = cmd(b'a LOGIN alice@example.test "alice-pw"\r\n')
out["huge_literal"] = cmd(b"b APPEND INBOX {10737418240}\r\n")
out["big_literal"] = cmd(b"c LOGIN {1000000}\r\n")
out["long_line"] = cmd(b"d NOOP " + b"x" * 200000 + b"\r\n")
out["after"] = cmd(b"e NOOP\r\n")
out["literal_plus"] = cmd(b"f SELECT {5+}\r\nINBOX\r\n")
out["garbage"] = cmd(b"g FROB\r\n")
out["logout"] = cmd(b"h LOGOUT\r\n")
"#,
    );
    assert!(out["greeting"].as_str().unwrap().starts_with("* OK [CAPABILITY IMAP4rev1"), "{out}");
    assert!(out["login"].as_str().unwrap().starts_with("a OK"), "{out}");
    assert!(out["huge_literal"].as_str().unwrap().starts_with("b NO [TOOBIG]"), "{out}");
    assert!(out["big_literal"].as_str().unwrap().starts_with("c NO [TOOBIG]"), "{out}");
    assert!(out["long_line"].as_str().unwrap().starts_with("d BAD"), "{out}");
    assert_eq!(out["after"], "e OK NOOP completed");
    assert_eq!(out["literal_plus"], "f OK [READ-WRITE] SELECT completed");
    assert!(out["garbage"].as_str().unwrap().starts_with("g BAD"), "{out}");
    assert_eq!(out["logout"], "h OK LOGOUT completed");
}

#[test]
fn curl_lists_and_fetches() {
    let node = MailNode::start("imap-node.example.test", "");
    node.deliver_numbered(2);
    let stored = node.inbox("alice@example.test");
    let curl = |url: String| {
        let out = Command::new("curl")
            .args(["-sS", "--ssl-reqd", "-k", "--user", "alice@example.test:alice-pw", &url])
            .output()
            .expect("run curl");
        assert!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let list = String::from_utf8(curl(format!("imap://127.0.0.1:{}/", node.imap.port()))).unwrap();
    assert!(list.contains("* LIST (\\HasNoChildren \\Sent) \"/\" Sent"), "{list}");
    let body = curl(format!("imaps://127.0.0.1:{}/INBOX;UID=2", node.imaps.port()));
    assert_eq!(body, stored[1]);
}

/// Writes the node's self-signed certificate (as imaps presents it) to `path`, for mbsync.
fn save_certificate(node: &MailNode, path: &std::path::Path) {
    let pem = python(
        "import ssl, sys\nprint(ssl.get_server_certificate(('127.0.0.1', int(sys.argv[1]))))",
        &[node.imaps.port().to_string()],
    );
    std::fs::write(path, pem).expect("write certificate");
}

/// The local Maildir's messages: folder → sorted (message number, maildir flags).
fn local_state(root: &std::path::Path) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut state = std::collections::BTreeMap::new();
    let Ok(folders) = std::fs::read_dir(root) else { return state };
    for folder in folders.flatten() {
        let mut names = Vec::new();
        for sub in ["cur", "new"] {
            for file in std::fs::read_dir(folder.path().join(sub)).into_iter().flatten().flatten() {
                names.push(file.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        state.insert(folder.file_name().to_string_lossy().into_owned(), names);
    }
    state
}

#[test]
fn mbsync_syncs_both_ways_and_then_has_nothing_to_do() {
    if Command::new("mbsync").arg("--version").output().is_err() {
        panic!("mbsync (isync) is not installed: run .ci/install-deps");
    }
    let node = MailNode::start("imap-node.example.test", "");
    node.deliver_numbered(200);
    let work = tempfile::tempdir().expect("tempdir");
    let cert = work.path().join("node.pem");
    save_certificate(&node, &cert);
    let local = work.path().join("local");
    std::fs::create_dir_all(&local).expect("local dir");
    let config = format!(
        "IMAPAccount sirms\nHost 127.0.0.1\nPort {port}\nUser alice@example.test\nPass alice-pw\n\
         SSLType STARTTLS\nCertificateFile {cert}\nSystemCertificates no\n\n\
         IMAPStore remote\nAccount sirms\n\n\
         MaildirStore local\nPath {local}/\nInbox {local}/INBOX\nSubFolders Verbatim\n\n\
         Channel sync\nFar :remote:\nNear :local:\nPatterns *\nCreate Both\nExpunge Both\nSyncState *\n",
        port = node.imap.port(),
        cert = cert.display(),
        local = local.display(),
    );
    let rc = work.path().join("mbsyncrc");
    std::fs::write(&rc, config).expect("write mbsyncrc");
    let mbsync = || {
        let out = Command::new("mbsync").arg("-c").arg(&rc).arg("-a").output().expect("run mbsync");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "mbsync failed:\n{text}");
        assert!(!text.contains("Error") && !text.contains("Warning"), "mbsync complained:\n{text}");
    };
    mbsync();
    let first = local_state(&local);
    assert_eq!(first.get("INBOX").map(Vec::len), Some(200), "{first:?}");
    assert!(first.contains_key("Sent") && first.contains_key("Archive"), "{first:?}");

    // Changes on both sides: a flag and a deletion on the server, a flag and a new folder locally.
    python(
        &format!(
            "{PRELUDE}\nm = connect()\nm.select('INBOX')\nok(m.store('1', '+FLAGS', '(\\\\Flagged)'))\n\
             ok(m.store('2', '+FLAGS', '(\\\\Deleted)'))\nok(m.expunge())\nm.logout()\nprint('{{}}')"
        ),
        &[serde_json::json!({"imap": node.imap.port()}).to_string()],
    );
    // Reading a message locally: an unseen one moves from new/ to cur/ with the S flag.
    let inbox = local.join("INBOX");
    let mut files: Vec<_> = std::fs::read_dir(inbox.join("new")).expect("new").flatten().map(|e| e.path()).collect();
    files.sort();
    let victim = files.last().expect("an unseen local message").clone();
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    let renamed = format!("{}:2,S", name.split(":2,").next().unwrap_or(&name));
    std::fs::rename(&victim, inbox.join("cur").join(renamed)).expect("flag locally");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(local.join("Local Only").join(sub)).expect("new folder");
    }
    std::fs::write(local.join("Local Only/new/1.local"), "Subject: written locally\r\n\r\nhi\r\n")
        .expect("local message");

    mbsync();
    let second = local_state(&local);
    assert_eq!(second.get("INBOX").map(Vec::len), Some(199), "{second:?}");
    let remote = run(
        &node,
        r#"
m = connect()
out["list"] = [d.decode() for d in ok(m.list())]
m.select('"Local Only"')
out["local_only"] = ok(m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))[0][1].decode()
m.select("INBOX")
out["seen"] = ok(m.search(None, "SEEN"))[0].decode()
m.logout()
"#,
    );
    assert!(
        remote["list"].as_array().unwrap().iter().any(|l| l.as_str().unwrap().ends_with("\"Local Only\"")),
        "{remote}"
    );
    assert_eq!(remote["local_only"], "Subject: written locally\r\n\r\n");
    assert!(remote["seen"].as_str().unwrap().parse::<u32>().is_ok(), "the local \\Seen reached the server: {remote}");
    assert!(
        second["INBOX"].iter().filter(|n| n.contains(":2,") && n.split(":2,").nth(1).unwrap().contains('F')).count()
            == 1
    );

    mbsync();
    assert_eq!(local_state(&local), second, "a sync with nothing to do changed the local side");
}

#[test]
fn quota_shows_the_directory_limit_and_no_root_without_one() {
    let quota_user = r#"{ address = "carol@example.test", password = "{plain}carol-pw", quota_bytes = 1048576 }"#;
    let node = MailNode::start_with_users([127, 0, 0, 1], "imap-node.example.test", "", &[quota_user]);
    let out = run(
        &node,
        r#"
s = smtplib.SMTP("127.0.0.1", a["smtp"], timeout=20)
for i in range(3):
    s.sendmail("x@remote.test", ["carol@example.test"], b"Subject: q\r\n\r\n" + b"x" * 1000 + b"\r\n")
s.quit()
m = connect("carol@example.test", "carol-pw")
out["caps"] = sorted(m.capabilities)
typ, data = m.getquotaroot("INBOX")
out["root"] = [[d.decode() if d else d for d in part] for part in data]
out["quota"] = [d.decode() for d in ok(m.getquota('""'))]
typ, data = m.setquota('""', "(STORAGE 10)")
out["setquota"] = [typ, data[0].decode()]
m.logout()
m = connect()
typ, data = m.getquotaroot("INBOX")
out["unlimited"] = [[d.decode() if d else d for d in part] for part in data]
m.logout()
"#,
    );
    let caps = out["caps"].as_array().unwrap();
    for resource in ["QUOTA", "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE"] {
        assert!(caps.iter().any(|c| c == resource), "{resource}: {out}");
    }
    assert!(!caps.iter().any(|c| c == "QUOTASET"), "{out}");
    let stored: usize = node.inbox("carol@example.test").iter().map(Vec::len).sum();
    let used = stored.div_ceil(1024);
    let quota = format!("\"\" (STORAGE {used} 1024)");
    assert_eq!(out["root"], serde_json::json!([["INBOX \"\""], [quota]]));
    assert_eq!(out["quota"], serde_json::json!([quota]));
    assert_eq!(out["setquota"][0], "NO", "{out}");
    assert!(out["setquota"][1].as_str().unwrap().starts_with("[NOPERM]"), "{out}");
    // alice has no limit: no quota root, and no QUOTA response with a limit that does not exist.
    assert_eq!(out["unlimited"], serde_json::json!([["INBOX"], [null]]));
}

#[test]
fn binary_fetch_decodes_parts() {
    let node = MailNode::start("imap-node.example.test", "");
    let with_nul = "Subject: nul\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAw==\r\n";
    let unknown = "Subject: uu\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n";
    let out = run(
        &node,
        &format!(
            r#"
m = connect()
out["caps"] = sorted(m.capabilities)
for msg in ({NESTED:?}, {with_nul:?}, {unknown:?}):
    ok(m.append("INBOX", None, None, msg.encode()))
m.select("INBOX")
data = ok(m.fetch("1", "(BINARY.PEEK[3] BINARY.SIZE[3] BINARY.PEEK[1.1]<0.5>)"))
out["nested"] = [[d[0].decode(), d[1].decode()] if isinstance(d, tuple) else d.decode() for d in data]
data = ok(m.fetch("2", "(BINARY.PEEK[1])"))
out["nul"] = [data[0][0].decode(), data[0][1].hex()]
out["unseen"] = ok(m.search(None, "UNSEEN"))[0].decode()
typ, data = m.fetch("3", "(BINARY[1])")
out["unknown"] = [typ, data[0].decode()]
out["unseen_after"] = ok(m.search(None, "UNSEEN"))[0].decode()
tag = m._new_tag()
m.send(tag + b" APPEND INBOX ~{{14+}}\r\nSubject: \0\r\n\r\n\r\n")
while True:
    line = m.readline().decode()
    if line.startswith(tag.decode()):
        out["append8"] = line.strip(); break
data = ok(m.fetch("4", "(BINARY.PEEK[])"))
out["fetch8"] = [data[0][0].decode(), data[0][1].hex()]
m.logout()
"#
        ),
    );
    assert!(out["caps"].as_array().unwrap().iter().any(|c| c == "BINARY"), "{out}");
    // The base64 attachment ("JVBERi0=") comes decoded, with its decoded size; a partial
    // BINARY counts decoded octets.
    assert_eq!(
        out["nested"],
        serde_json::json!([["1 (BINARY[3] {5}", "%PDF-"], [" BINARY.SIZE[3] 5 BINARY[1.1]<0> {5}", "plain"], ")"])
    );
    // Decoded data with a NUL comes as a literal8, which imaplib reads like a literal.
    assert_eq!(out["nul"], serde_json::json!(["2 (BINARY[1] ~{4}", "00010203"]));
    assert_eq!(out["unseen"], "1 2 3", "BINARY.PEEK does not set \\Seen");
    assert_eq!(out["unknown"][0], "NO", "{out}");
    assert!(out["unknown"][1].as_str().unwrap().starts_with("[UNKNOWN-CTE]"), "{out}");
    assert_eq!(out["unseen_after"], "1 2 3", "a failed BINARY FETCH does not set \\Seen");
    // APPEND of a literal8 (RFC 3516 §4.3) stores the NUL as sent.
    assert!(out["append8"].as_str().unwrap().contains(" OK [APPENDUID "), "{out}");
    assert_eq!(out["fetch8"], serde_json::json!(["4 (BINARY[] ~{14}", hex(b"Subject: \0\r\n\r\n")]));
}

#[test]
fn esearch_answers_search_return() {
    let node = MailNode::start("imap-node.example.test", "");
    node.deliver_numbered(4);
    let out = run(
        &node,
        r#"
m = connect()
out["caps"] = sorted(m.capabilities)
m.select("INBOX")
ok(m.store("2", "+FLAGS.SILENT", "(\\Seen)"))
def esearch(*args):
    # imaplib has no ESEARCH helper: the untagged ESEARCH is kept in untagged_responses.
    tag = (m.tagpre + str(m.tagnum).encode()).decode()
    try:
        typ, data = m._simple_command(*args)
    except imaplib.IMAP4.error as e:
        return ["BAD", str(e)]
    found = [d.decode() for d in m.untagged_responses.pop("ESEARCH", [])]
    return [typ, [f.replace('"%s"' % tag, '"TAG"') for f in found]]
out["all_options"] = esearch("SEARCH", 'RETURN (MIN MAX COUNT ALL) UNSEEN')
out["uid_default"] = esearch("UID", "SEARCH", "RETURN () NOT SUBJECT", '"message 3"')
out["none_found"] = esearch("SEARCH", "RETURN (COUNT MIN)", "SUBJECT", '"RETURN (ALL)"')
out["unknown"] = esearch("SEARCH", "RETURN (PARTIAL 1:5) ALL")
out["plain"] = ok(m.search(None, "UNSEEN"))[0].decode()
m.logout()
"#,
    );
    assert!(out["caps"].as_array().unwrap().iter().any(|c| c == "ESEARCH"), "{out}");
    assert_eq!(out["all_options"], serde_json::json!(["OK", ["(TAG \"TAG\") MIN 1 MAX 4 COUNT 3 ALL 1,3:4"]]));
    assert_eq!(out["uid_default"], serde_json::json!(["OK", ["(TAG \"TAG\") UID ALL 1:3"]]));
    assert_eq!(out["none_found"], serde_json::json!(["OK", ["(TAG \"TAG\") COUNT 0"]]));
    assert_eq!(out["unknown"][0], "BAD", "{out}");
    assert!(out["unknown"][1].as_str().unwrap().contains("unknown SEARCH return option"), "{out}");
    assert_eq!(out["plain"], "1 3 4", "SEARCH without RETURN still answers * SEARCH");
}

#[test]
fn list_status_answers_each_mailbox_with_its_status() {
    let node = MailNode::start("imap-node.example.test", "");
    node.deliver_numbered(3);
    let out = run(
        &node,
        r#"
m = connect()
out["caps"] = sorted(m.capabilities)
ok(m.append("Sent", "(\\Seen)", None, b"Subject: sent\r\n\r\nx\r\n"))
ok(m.create("Work/Old"))
ok(m.subscribe("Work/Old"))
def raw(command):
    # The LIST and STATUS lines as they come, to see their order.
    tag = m._new_tag()
    m.send(tag + b" " + command + b"\r\n")
    lines = []
    while True:
        line = m.readline().decode().rstrip("\r\n")
        lines.append(line)
        if line.startswith(tag.decode() + " "):
            return lines[:-1] + [line[len(tag) + 1:]]
out["status"] = raw(b'LIST "" "*" RETURN (STATUS (MESSAGES UNSEEN))')
out["recursive"] = raw(b'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (STATUS (MESSAGES))')
out["special_use"] = raw(b'LIST (SPECIAL-USE) "" ("Sent" "Work*") RETURN (SPECIAL-USE)')
out["bad"] = raw(b'LIST "" "*" RETURN (STATUS (NOSUCHITEM))')
out["plain"] = [d.decode() for d in ok(m.list('""', "%"))]
m.logout()
"#,
    );
    let caps: Vec<&str> = out["caps"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert!(caps.contains(&"LIST-STATUS") && !caps.contains(&"LIST-EXTENDED"), "{out}");
    let lines: Vec<&str> = out["status"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert_eq!(lines.last(), Some(&"OK LIST completed"), "{out}");
    // Every LIST line is followed by the STATUS of the same mailbox.
    let pairs = &lines[..lines.len() - 1];
    assert!(pairs.len() >= 8 && pairs.len().is_multiple_of(2), "{out}");
    for pair in pairs.chunks(2) {
        let name = pair[0].rsplit(' ').next().unwrap();
        assert!(pair[0].starts_with("* LIST (") && pair[1].starts_with(&format!("* STATUS {name} (")), "{pair:?}");
    }
    for expected in [
        "* STATUS INBOX (MESSAGES 3 UNSEEN 3)",
        "* STATUS Sent (MESSAGES 1 UNSEEN 0)",
        "* STATUS Work/Old (MESSAGES 0 UNSEEN 0)",
    ] {
        assert!(lines.contains(&expected), "{expected} missing: {out}");
    }
    // Work is not subscribed: listed for its subscribed child, without a STATUS (RFC 5819 §3).
    assert_eq!(
        out["recursive"],
        serde_json::json!(["* LIST (\\HasChildren) \"/\" Work (\"CHILDINFO\" (\"SUBSCRIBED\"))", "OK LIST completed"]),
        "nothing else is subscribed"
    );
    assert_eq!(
        out["special_use"],
        serde_json::json!(["* LIST (\\HasNoChildren \\Sent) \"/\" Sent", "OK LIST completed"])
    );
    assert!(out["bad"][0].as_str().unwrap().starts_with("BAD unknown STATUS item"), "{out}");
    assert!(out["plain"].as_array().unwrap().iter().any(|l| l == "(\\HasChildren) \"/\" Work"), "{out}");
}

#[test]
fn cached_structures_stay_right_across_a_restart_flag_changes_and_expunge() {
    let mut node = MailNode::start("imap-cache.example.test", "");
    let fetch = |m: &str| {
        format!(
            r#"
m = connect()
msg = {NESTED:?}.encode()
m.select("INBOX")
{m}
m.logout()
"#
        )
    };
    // The first FETCH renders the structures and caches them; the second reads the cache.
    let before = run(
        &node,
        &fetch(
            r#"
ok(m.append("INBOX", None, None, msg))
out["first"] = ok(m.uid("FETCH", "1", "(ENVELOPE BODY BODYSTRUCTURE)"))[0].decode()
out["second"] = ok(m.uid("FETCH", "1", "(ENVELOPE BODY BODYSTRUCTURE)"))[0].decode()
"#,
        ),
    );
    let first = before["first"].as_str().unwrap();
    assert!(first.contains(NESTED_ENVELOPE) && first.contains(NESTED_BODYSTRUCTURE), "{first}");
    assert_eq!(before["second"], first);

    node.restart();
    let after = run(
        &node,
        &fetch(
            r#"
out["restarted"] = ok(m.uid("FETCH", "1", "(ENVELOPE BODY BODYSTRUCTURE)"))[0].decode()
ok(m.uid("STORE", "1", "+FLAGS.SILENT", "(\\Seen $Read)"))
out["flagged"] = ok(m.uid("FETCH", "1", "(FLAGS ENVELOPE BODYSTRUCTURE)"))[0].decode()
ok(m.uid("STORE", "1", "+FLAGS.SILENT", "(\\Deleted)"))
ok(m.expunge())
ok(m.append("INBOX", None, None, b"From: Dan <dan@example.test>\r\nSubject: other\r\n\r\nshort\r\n"))
ok(m.append("INBOX", None, None, msg))
ok(m.noop())
out["others"] = [d.decode() for d in ok(m.uid("FETCH", "1:*", "(ENVELOPE BODYSTRUCTURE)"))]
"#,
        ),
    );
    assert_eq!(after["restarted"], first, "the same bytes after a restart");
    let flagged = after["flagged"].as_str().unwrap();
    assert!(flagged.contains("FLAGS (\\Seen $Read"), "{flagged}");
    assert!(flagged.contains(NESTED_ENVELOPE) && flagged.contains(NESTED_BODYSTRUCTURE), "{flagged}");
    let others = after["others"].as_array().unwrap();
    assert_eq!(others.len(), 2, "{after}");
    let (short, again) = (others[0].as_str().unwrap(), others[1].as_str().unwrap());
    assert!(short.contains("UID 2 ") && short.contains("\"other\" ((\"Dan\" NIL \"dan\""), "{short}");
    assert!(
        short.contains("BODYSTRUCTURE (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 7 1"),
        "{short}"
    );
    assert!(again.contains("UID 3 ") && again.contains(NESTED_BODYSTRUCTURE), "{again}");
}

/// QRESYNC (RFC 7162) with imaplib against the real binary: once enabled, another session's
/// expunge comes as `* VANISHED`, and a client reconnecting with its UIDVALIDITY, MODSEQ and
/// known UIDs learns in its SELECT what vanished and which flags changed meanwhile, and
/// nothing about the messages that did not change.
#[test]
fn qresync_resynchronises_a_reconnecting_client() {
    let node = MailNode::start("imap-node.example.test", "");
    node.deliver_numbered(5);
    let out = run(
        &node,
        r#"
def untagged(m, name):
    return [d.decode() if isinstance(d, bytes) else str(d) for d in m.untagged_responses.pop(name, [])]
s1, s2 = connect(), connect()
out["caps"] = sorted(s1.capabilities)
ok(s1._simple_command("ENABLE", "QRESYNC"))
out["enabled"] = untagged(s1, "ENABLED")
s1.select("INBOX")
validity = int(untagged(s1, "UIDVALIDITY")[0])
modseq = int(untagged(s1, "HIGHESTMODSEQ")[0])
s2.select("INBOX")
ok(s2.store("2", "+FLAGS.SILENT", "(\\Deleted)"))
ok(s2.expunge())
ok(s1.noop())
out["noop_vanished"] = untagged(s1, "VANISHED")
out["noop_expunge"] = untagged(s1, "EXPUNGE")
s1.logout()
# Offline, the mailbox changes: a flag on UID 3, UID 4 expunged.
ok(s2.uid("STORE", "3", "+FLAGS.SILENT", "(\\Flagged)"))
ok(s2.uid("STORE", "4", "+FLAGS.SILENT", "(\\Deleted)"))
ok(s2.expunge())
s2.logout()
s1 = connect()
ok(s1._simple_command("ENABLE", "QRESYNC"))
ok(s1._simple_command("SELECT", "INBOX (QRESYNC (%d %d 1:5))" % (validity, modseq)))
out["select_vanished"] = untagged(s1, "VANISHED")
out["select_fetch"] = untagged(s1, "FETCH")
s1.logout()
"#,
    );
    assert!(out["caps"].as_array().unwrap().iter().any(|c| c == "QRESYNC"), "{out}");
    assert_eq!(out["enabled"], serde_json::json!(["QRESYNC"]));
    assert_eq!(out["noop_vanished"], serde_json::json!(["2"]), "{out}");
    assert_eq!(out["noop_expunge"], serde_json::json!([]), "no EXPUNGE once QRESYNC is on: {out}");
    assert_eq!(out["select_vanished"], serde_json::json!(["(EARLIER) 2,4"]), "{out}");
    let fetched = out["select_fetch"].as_array().unwrap();
    assert_eq!(fetched.len(), 1, "only UID 3 changed: {out}");
    let line = fetched[0].as_str().unwrap();
    assert!(line.starts_with("2 (UID 3 FLAGS (\\Flagged) MODSEQ ("), "{out}");
}

#[test]
fn sort_and_thread_order_and_group_appended_mail() {
    let node = MailNode::start("imap-node.example.test", "");
    let out = run(
        &node,
        r#"
m = connect()
out["caps"] = sorted(m.capabilities)
def message(mid, subject, date, sender, refs=""):
    refs = "References: %s\r\n" % refs if refs else ""
    return ("From: %s\r\nTo: alice@example.test\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: %s\r\n%s\r\nbody\r\n"
            % (sender, subject, date, mid, refs)).encode()
# A References field of 3000 IDs (about 40 KB), the real parent last.
noise = " ".join("<noise%d@x>" % i for i in range(3000))
messages = [
    (message("<1@x>", "Lunch", "Mon, 01 Dec 2025 10:00:00 +0000", "Zoe <zoe@x>"), "01-Dec-2025 12:00:00 +0000"),
    (message("<2@x>", "=?utf-8?q?Re=3A_lunch?=", "Mon, 01 Dec 2025 09:30:00 -0100", "adam@x", "<1@x>"),
     "01-Dec-2025 11:00:00 +0000"),
    (message("<3@x>", "[team] Budget", "Sun, 30 Nov 2025 08:00:00 +0000", "=?utf-8?q?B=C3=B6b?= <bob@x>"),
     "01-Dec-2025 13:00:00 +0000"),
    (message("<4@x>", "Re: Re: LUNCH (fwd)", "Tue, 02 Dec 2025 08:00:00 +0000", "carl@x", noise + " <2@x>"),
     "01-Dec-2025 10:00:00 +0000"),
    (message("<5@x>", "Fwd: budget", "Mon, 01 Dec 2025 11:00:00 +0000", "anna@x", "<missing@x>"),
     "01-Dec-2025 14:00:00 +0000"),
    (message("<6@x>", "budget", "not a date", "bea@x"), "29-Nov-2025 10:00:00 +0000"),
]
for raw, when in messages:
    ok(m.append("INBOX", None, '"%s"' % when, raw))
m.select("INBOX")
ok(m.store("1", "+FLAGS.SILENT", "(\\Seen)"))
sort = lambda *a: ok(m.sort(*a))[0].decode()
out["date"] = sort("(DATE)", "UTF-8", "ALL")
out["arrival"] = sort("(REVERSE ARRIVAL)", "UTF-8", "ALL")
out["subject"] = sort("(SUBJECT DATE)", "UTF-8", "ALL")
out["from"] = sort("(FROM)", "UTF-8", "UNSEEN")
out["displayfrom"] = sort("(DISPLAYFROM)", "UTF-8", "ALL")
out["uid_size"] = ok(m.uid("SORT", "(SIZE)", "UTF-8", "UID 2:6"))[0].decode()
out["references"] = ok(m.thread("REFERENCES", "UTF-8", "ALL"))[0].decode()
out["orderedsubject"] = ok(m.thread("ORDEREDSUBJECT", "UTF-8", "ALL"))[0].decode()
ok(m.store("1", "+FLAGS.SILENT", "(\\Deleted)"))
ok(m.expunge())
out["uid_references"] = ok(m.uid("THREAD", "REFERENCES", "UTF-8", "ALL"))[0].decode()
typ, data = m.sort("(SIZE)", "KOI8-R", "ALL")
out["charset"] = "%s %s" % (typ, data[0].decode())
m.logout()
"#,
    );
    let caps = out["caps"].as_array().unwrap();
    for cap in ["SORT", "SORT=DISPLAY", "THREAD=REFERENCES", "THREAD=ORDEREDSUBJECT"] {
        assert!(caps.iter().any(|c| c == cap), "{cap} missing: {out}");
    }
    // Sent dates: 3 (30 Nov), 6 (no valid Date: its arrival, 29 Nov), 1, 2 (10:30 UTC), 5, 4.
    assert_eq!(out["date"], "6 3 1 2 5 4", "{out}");
    assert_eq!(out["arrival"], "5 3 1 2 4 6", "{out}");
    // Base subjects BUDGET (3, 5, 6) and LUNCH (1, 2, 4), each by date.
    assert_eq!(out["subject"], "6 3 5 1 2 4", "{out}");
    // The local part of the first From address; message 1 is \Seen.
    assert_eq!(out["from"], "2 5 6 3 4", "{out}");
    // Display names, decoded (Böb), else the address.
    assert_eq!(out["displayfrom"], "2 5 6 3 4 1", "{out}");
    let size = out["uid_size"].as_str().unwrap();
    assert!(size.ends_with(" 4"), "the message with the long References is the largest: {out}");
    // 2 replies to 1 and 4 to 2 (its References' last ID). 3 and 6, both on BUDGET and
    // neither a reply, go under a dummy, which 5 (a reply to a missing message) joins.
    assert_eq!(out["references"], "((6)(3)(5))(1 2 4)", "{out}");
    assert_eq!(out["orderedsubject"], "(6 (3)(5))(1 (2)(4))", "{out}");
    // With 1 expunged, 2 replies to a missing message and heads its thread (by UID).
    assert_eq!(out["uid_references"], "((6)(3)(5))(2 4)", "{out}");
    assert!(out["charset"].as_str().unwrap().starts_with("NO [BADCHARSET"), "{out}");
}

#[test]
fn create_special_use_within_and_searchres() {
    let node = MailNode::start("imap-node.example.test", "");
    node.deliver_numbered(4);
    let out = run(
        &node,
        r#"
m = connect()
out["caps"] = sorted(m.capabilities)
out["create"] = m._simple_command("CREATE", "Outgoing", "(USE (\\Sent))")[0]
typ, data = m._simple_command("CREATE", "Odd", "(USE (\\Important))")
out["create_bad"] = [typ, data[0].decode()]
out["list"] = [d.decode() for d in ok(m.list('""', "Outgoing"))]
ok(m.append("INBOX", None, imaplib.Time2Internaldate(time.time() - 86400 * 400), b"Subject: old\r\n\r\nold\r\n"))
m.select("INBOX")
out["older"] = ok(m.search(None, "OLDER", "86400"))[0].decode()
out["younger"] = ok(m.search(None, "YOUNGER", "86400"))[0].decode()
ok(m.store("2,4", "+FLAGS.SILENT", "(\\Flagged)"))
typ, data = m._simple_command("SEARCH", "RETURN (SAVE)", "FLAGGED")
out["save"] = [typ, m.untagged_responses.pop("ESEARCH", [])]
out["fetch"] = [d.decode() for d in ok(m.fetch("$", "(UID)"))]
out["search"] = ok(m.uid("SEARCH", "NOT", "$"))[0].decode()
ok(m.store("2", "+FLAGS.SILENT", "(\\Deleted)"))
ok(m.expunge())
out["after_expunge"] = [d.decode() for d in ok(m.uid("FETCH", "$", "(UID)"))]
m.select("INBOX")
out["after_select"] = ok(m.fetch("$", "(UID)"))
m.logout()
"#,
    );
    let caps = out["caps"].as_array().unwrap();
    for cap in ["CREATE-SPECIAL-USE", "WITHIN", "SEARCHRES"] {
        assert!(caps.iter().any(|c| c == cap), "{cap} missing: {out}");
    }
    assert_eq!(out["create"], "OK", "{out}");
    assert_eq!(out["create_bad"][0], "NO", "{out}");
    assert!(out["create_bad"][1].as_str().unwrap_or_default().starts_with("[USEATTR]"), "{out}");
    assert_eq!(out["list"], serde_json::json!(["(\\HasNoChildren \\Sent) \"/\" Outgoing"]));
    assert_eq!(out["older"], "5", "{out}");
    assert_eq!(out["younger"], "1 2 3 4", "{out}");
    assert_eq!(out["save"], serde_json::json!(["OK", []]), "SAVE alone answers no ESEARCH");
    assert_eq!(out["fetch"], serde_json::json!(["2 (UID 2)", "4 (UID 4)"]));
    assert_eq!(out["search"], "1 3 5", "{out}");
    assert_eq!(out["after_expunge"], serde_json::json!(["3 (UID 4)"]), "expunged messages leave $");
    assert_eq!(out["after_select"], serde_json::json!([null]), "SELECT empties $");
}

#[test]
fn compress_deflate_carries_the_session_after_the_ok() {
    let node = MailNode::start("imap-node.example.test", "");
    node.deliver_numbered(1);
    let out = run(
        &node,
        r#"
import zlib
imaplib.Commands["COMPRESS"] = ("AUTH", "SELECTED")
m = connect()
out["caps"] = sorted(m.capabilities)
m.select("INBOX")
out["compress"] = m._simple_command("COMPRESS", "DEFLATE")[0]
# imaplib cannot deflate: raw deflate (wbits -15) by hand on its TLS socket from here on.
s = m.sock
co = zlib.compressobj(6, zlib.DEFLATED, -15)
de = zlib.decompressobj(-15)
def cmd(line):
    s.sendall(co.compress(line.encode() + b"\r\n") + co.flush(zlib.Z_SYNC_FLUSH))
    tag = line.split()[0].encode() + b" "
    got = b""
    while not any(l.startswith(tag) for l in got.split(b"\r\n")):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += de.decompress(chunk)
    return got.decode()
out["fetch"] = cmd("c1 FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
out["again"] = cmd("c2 COMPRESS DEFLATE")
out["logout"] = cmd("c3 LOGOUT")
"#,
    );
    assert!(out["caps"].as_array().unwrap().iter().any(|c| c == "COMPRESS=DEFLATE"), "{out}");
    assert_eq!(out["compress"], "OK", "{out}");
    let fetch = out["fetch"].as_str().unwrap();
    assert!(fetch.starts_with("* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {"), "{out}");
    assert!(fetch.contains("Subject: message 0") && fetch.ends_with("c1 OK FETCH completed\r\n"), "{out}");
    assert_eq!(out["again"], "c2 NO [COMPRESSIONACTIVE] DEFLATE is already active\r\n");
    assert_eq!(out["logout"], "* BYE logging out\r\nc3 OK LOGOUT completed\r\n");
}

/// PREVIEW (RFC 8970): the start of a message's text on one line, from its first text part
/// (HTML without markup), at most 256 characters; a header named PREVIEW is still a header,
/// and a modifier other than LAZY is refused.
#[test]
fn preview_gives_the_start_of_the_text() {
    let node = MailNode::start("imap-node.example.test", "");
    let html = "Subject: html\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n\
                --b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Grüße aus <b>Berlin</b></p>\r\n--b--\r\n";
    let out = run(
        &node,
        &format!(
            r#"
m = connect()
out["caps"] = sorted(m.capabilities)
ok(m.append("INBOX", None, None, b"Subject: plain\r\nPreview: a header\r\n\r\nHello   Bob,\r\n\r\nlunch at noon?\r\n"))
ok(m.append("INBOX", None, None, {html:?}.encode()))
ok(m.append("INBOX", None, None, b"Subject: long\r\n\r\n" + b"word " * 100 + b"\r\n"))
m.select("INBOX")
out["plain"] = [d.decode() for d in ok(m.fetch("1", "(UID PREVIEW)"))]
data = ok(m.fetch("2", "PREVIEW (LAZY)"))
out["html"] = [data[0][0].decode(), data[0][1].decode()]
data = ok(m.uid("FETCH", "3", "(PREVIEW FLAGS)"))
out["long"] = data[0].decode()
data = ok(m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (PREVIEW)])"))
out["header"] = data[0][1].decode()
try:
    m.fetch("1", "(PREVIEW (FAST))")
    out["bad"] = "accepted"
except imaplib.IMAP4.error as e:
    out["bad"] = str(e)
m.logout()
"#
        ),
    );
    assert!(out["caps"].as_array().unwrap().iter().any(|c| c == "PREVIEW"), "{out}");
    assert_eq!(out["plain"], serde_json::json!(["1 (UID 1 PREVIEW \"Hello Bob, lunch at noon?\")"]));
    // Non-ASCII text comes as a literal.
    assert!(out["html"][0].as_str().unwrap().starts_with("2 (UID 2 PREVIEW {"), "{out}");
    let html = out["html"][1].as_str().unwrap();
    assert!(html.contains("Grüße aus") && html.contains("Berlin") && !html.contains('<'), "{out}");
    let long = out["long"].as_str().unwrap();
    let preview = long.split("PREVIEW \"").nth(1).and_then(|p| p.split('"').next()).unwrap_or_default();
    assert_eq!(preview.chars().count(), 256, "{long}");
    assert!(long.contains("FLAGS (") && long.contains("UID 3"), "{long}");
    assert_eq!(out["header"], "Preview: a header\r\n\r\n");
    assert!(out["bad"].as_str().unwrap().contains("BAD") && out["bad"].as_str().unwrap().contains("LAZY"), "{out}");
}
