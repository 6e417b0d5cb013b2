//! `sirms ctl import` against real parts: a Maildir tree that a real Dovecot (Debian's
//! `dovecot-imapd`, its `imap` binary run as a pre-authenticated session on a pipe) wrote
//! through IMAP, imported into a two-node cluster and compared, through the router's IMAP,
//! with what that Dovecot serves — every mailbox's UIDVALIDITY, every UID, flag, internal date
//! and byte — and on the replica; and an mbox imported twice and cut short, each message
//! stored once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sirms_integration_tests::{CLUSTER_TOKEN, MailNode, RouterProcess, python, sirms_bin};

const USER: &str = "alice@example.test";
const DOVECOT_IMAP: &str = "/usr/lib/dovecot/imap";

/// Prints, for every mailbox `m` can see, its name, UIDVALIDITY, and one line per message:
/// UID, flags without \Recent, INTERNALDATE and the SHA-256 of its bytes. Compared between
/// Dovecot and SIRMS, so both must print the same.
const DUMP: &str = r#"
import hashlib, re
def dump(m):
    out = []
    typ, boxes = m.list()
    names = sorted(re.search(rb'"/" (.*)$', b).group(1).decode().strip('"') for b in boxes)
    for name in names:
        if name in ("Sent", "Drafts", "Trash", "Junk", "Archive"):
            continue  # SIRMS's default mailboxes; Dovecot has none
        typ, data = m.select('"%s"' % name, readonly=True)
        assert typ == "OK", (name, data)
        out.append("%s uidvalidity=%s" % (name, m.response("UIDVALIDITY")[1][0].decode()))
        if int(data[0]) == 0:
            continue
        typ, data = m.uid("FETCH", "1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
        for item in data:
            if not isinstance(item, tuple):
                continue
            head, body = item[0].decode(), item[1]
            uid = re.search(r"UID (\d+)", head).group(1)
            flags = sorted(f for f in re.search(r"FLAGS \(([^)]*)\)", head).group(1).split() if f != "\\Recent")
            date = re.search(r'INTERNALDATE "([^"]*)"', head).group(1)
            out.append("  %s %s %s %s" % (uid, " ".join(flags), date, hashlib.sha256(body).hexdigest()))
    return "\n".join(out)
"#;

/// Fills a Dovecot Maildir through Dovecot itself: folders (one with a non-ASCII name),
/// messages with flags, keywords and dates, and an expunge so the UIDs have a gap.
const FILL: &str = r#"
import imaplib, os, sys
os.environ.update(USER="alice", HOME=sys.argv[2])
m = imaplib.IMAP4_stream(sys.argv[3] + " -c " + sys.argv[1])
def msg(n, extra=""):
    return ("From: sender%d@remote.test\r\nTo: alice@example.test\r\nSubject: message %d\r\n"
            "Message-ID: <%d@remote.test>\r\n%s\r\nBody of message %d.\r\nFrom here on, a line that mbox would escape.\r\n"
            % (n, n, n, extra, n)).encode()
for box in ("Work", "Work/Projects", "Entw&APw-rfe"):
    assert m.create(box)[0] == "OK"
flags = [r"(\Seen)", r"(\Seen \Answered $Label1)", r"(\Flagged Custom)", r"()", r"(\Draft)", r"(\Seen $Label1 Custom)"]
for n in range(12):
    box = ["INBOX", "Work", "Work/Projects", "Entw&APw-rfe"][n % 4]
    date = imaplib.Time2Internaldate(1600000000 + n * 86400)
    typ, data = m.append(box, flags[n % len(flags)], date, msg(n, "X-Number: %d\r\n" % n))
    assert typ == "OK", data
m.select("INBOX")
m.uid("STORE", "2", "+FLAGS", r"(\Deleted)")
m.expunge()
m.logout()
"#;

/// A Dovecot home with a tree filled by [`FILL`]; `(home, config)`.
fn dovecot_tree(dir: &Path) -> (PathBuf, PathBuf) {
    assert!(Path::new(DOVECOT_IMAP).exists(), "{DOVECOT_IMAP} missing: run .ci/install-deps (dovecot-imapd)");
    let home = dir.join("dovecot-home");
    std::fs::create_dir_all(&home).expect("home");
    // Dovecot refuses to serve mail as root: as root, it works as nobody.
    let uid = unsafe { libc::geteuid() };
    let (mail_uid, mail_gid) = if uid == 0 { (65534, 65534) } else { (uid, unsafe { libc::getegid() }) };
    if uid == 0 {
        let chown = Command::new("chown").args(["-R", "65534:65534"]).arg(dir).status().expect("chown");
        assert!(chown.success());
    }
    let config = dir.join("dovecot.conf");
    std::fs::write(
        &config,
        format!(
            "protocols = imap\nmail_location = maildir:~/Maildir\nssl = no\nmail_uid = {mail_uid}\n\
             mail_gid = {mail_gid}\nfirst_valid_uid = 0\nfirst_valid_gid = 0\nlog_path = {log}\n\
             base_dir = {run}\nstate_dir = {state}\nnamespace inbox {{\n  inbox = yes\n  separator = /\n}}\n",
            log = dir.join("dovecot.log").display(),
            run = dir.join("dovecot-run").display(),
            state = dir.join("dovecot-state").display(),
        ),
    )
    .expect("dovecot.conf");
    python(FILL, &[config.display().to_string(), home.display().to_string(), DOVECOT_IMAP.to_string()]);
    (home, config)
}

/// What Dovecot serves of the tree.
fn dovecot_dump(home: &Path, config: &Path) -> String {
    let script = format!(
        "{DUMP}\nimport imaplib, os, sys\nos.environ.update(USER='alice', HOME=sys.argv[2])\n\
         m = imaplib.IMAP4_stream(sys.argv[3] + ' -c ' + sys.argv[1])\nprint(dump(m))\nm.logout()\n"
    );
    python(&script, &[config.display().to_string(), home.display().to_string(), DOVECOT_IMAP.to_string()])
}

/// What SIRMS serves `user` (password `pw`) through the router.
fn sirms_dump(router: &RouterProcess, user: &str, pw: &str) -> String {
    let script = format!(
        "{DUMP}\nimport imaplib, ssl, sys\nctx = ssl.create_default_context(); ctx.check_hostname = False\n\
         ctx.verify_mode = ssl.CERT_NONE\nm = imaplib.IMAP4(sys.argv[1], int(sys.argv[2]), timeout=30)\n\
         m.starttls(ssl_context=ctx)\nm.login(sys.argv[3], sys.argv[4])\nprint(dump(m))\nm.logout()\n"
    );
    let args = [router.imap.ip().to_string(), router.imap.port().to_string(), user.to_string(), pw.to_string()];
    python(&script, &args)
}

/// Dovecot's IMAP over TCP on 127.0.0.1: each connection gets its own `imap` process, logged
/// in as alice (PREAUTH), as `dovecot` would after a login. Returns the relay and its port.
fn dovecot_over_tcp(home: &Path, config: &Path) -> (std::process::Child, u16) {
    let script = r#"
import os, socket, subprocess, sys, threading
config, home, imap = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8)
print(s.getsockname()[1], flush=True)
env = dict(os.environ, USER="alice", HOME=home)
def serve(conn):
    # Through pipes: imap refuses a socket on its stdin (it would be inetd's).
    p = subprocess.Popen([imap, "-c", config], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    def up():
        while True:
            data = conn.recv(65536)
            if not data:
                break
            p.stdin.write(data); p.stdin.flush()
        p.stdin.close()
    threading.Thread(target=up, daemon=True).start()
    while True:
        data = p.stdout.read1(65536)
        if not data:
            break
        conn.sendall(data)
    conn.close()
while True:
    conn, _ = s.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"#;
    let mut child = Command::new("python3")
        .args(["-c", script, &config.display().to_string(), &home.display().to_string(), DOVECOT_IMAP])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the TCP front of Dovecot's imap");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).expect("port");
    (child, line.trim().parse().expect("a port"))
}

fn cluster() -> (RouterProcess, MailNode, MailNode) {
    let router = RouterProcess::start();
    let n1 = MailNode::start_on([127, 0, 0, 1], "node1.example.test", &router.node_extra("node1", [127, 0, 0, 1]));
    let n2 = MailNode::start_on([127, 0, 0, 2], "node2.example.test", &router.node_extra("node2", [127, 0, 0, 2]));
    router.wait_nodes(" up ", 2);
    router.ctl(&["domains", "add", "example.test"]);
    router.ctl(&["users", "add", USER, "--password", "alice-pw", "--home", "node1", "--replica", "node2"]);
    let card = router.ctl(&["users", "show", USER]);
    assert!(card.contains("in sync  yes"), "{card}");
    (router, n1, n2)
}

#[test]
fn a_dovecot_tree_comes_in_with_its_uids_flags_dates_and_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (home, config) = dovecot_tree(dir.path());
    let want = dovecot_dump(&home, &config);
    assert_eq!(want.lines().filter(|l| l.starts_with("  ")).count(), 11, "Dovecot's tree:\n{want}");
    assert!(want.contains("Entwürfe uidvalidity=") || want.contains("Entw&APw-rfe uidvalidity="), "{want}");

    let (router, n1, n2) = cluster();
    let maildir = home.join("Maildir");
    // Through node2, the replica: the write goes to node1, the home, and back to node2.
    let out = router.ctl(&["import", USER, "--maildir", maildir.to_str().expect("utf-8"), "--via", "node2"]);
    assert!(out.contains("imported 11 messages"), "{out}");
    assert!(out.contains("skipped 0 already there; 0 under a new UID; 0 failed"), "{out}");
    let got = sirms_dump(&router, USER, "alice-pw");
    assert_eq!(got, want, "SIRMS serves what Dovecot served");

    // Again: nothing is stored twice.
    let again = router.ctl(&["import", USER, "--maildir", maildir.to_str().expect("utf-8")]);
    assert!(again.contains("imported 0 messages") && again.contains("skipped 11 already there"), "{again}");
    assert_eq!(sirms_dump(&router, USER, "alice-pw"), want);
    // Both copies hold INBOX file for file.
    let primary = n1.inbox(USER);
    assert_eq!(primary.len(), 2, "INBOX held three messages, one expunged");
    assert_eq!(n2.inbox(USER), primary);

    // The same mail from the same Dovecot, over IMAP this time, for carol: the same again.
    let (mut front, port) = dovecot_over_tcp(&home, &config);
    router.ctl(&["users", "add", "carol@example.test", "--password", "carol-pw"]);
    let url = format!("imap://alice@127.0.0.1:{port}");
    let out = router.ctl_output(&["import", "carol@example.test", "--imap", &url]);
    let _ = front.kill();
    let _ = front.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("imported 11 messages"), "{text}");
    assert_eq!(sirms_dump(&router, "carol@example.test", "carol-pw"), want, "over IMAP too");
}

/// Writes an mbox of `n` messages (mboxrd: `From ` in a body escaped), one in three read and
/// one in five flagged through `Status`/`X-Status`.
fn write_mbox(path: &Path, n: usize) {
    let mut text = String::new();
    for i in 0..n {
        let status = if i % 3 == 0 { "Status: RO\n" } else { "Status: O\n" };
        let x_status = if i % 5 == 0 { "X-Status: F\n" } else { "" };
        text.push_str(&format!(
            "From sender{i}@remote.test Mon Dec  7 09:{:02}:{:02} 2026\nFrom: sender{i}@remote.test\n\
             Subject: mbox {i}\n{status}{x_status}\nline one of {i}\n>From the escaped line\n\n",
            (i / 60) % 60,
            i % 60
        ));
    }
    std::fs::write(path, text).expect("write mbox");
}

fn count_and_flags(router: &RouterProcess, mailbox: &str) -> String {
    let script = r#"
import imaplib, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4(sys.argv[1], int(sys.argv[2]), timeout=30)
m.starttls(ssl_context=ctx)
m.login("alice@example.test", "alice-pw")
typ, data = m.select(sys.argv[3], readonly=True)
seen = m.search(None, "SEEN")[1][0].split()
flagged = m.search(None, "FLAGGED")[1][0].split()
escaped = m.search(None, "BODY", '"From the escaped"')[1][0].split()
typ, body = m.fetch("1", "(BODY.PEEK[])")
print(data[0].decode(), len(seen), len(flagged), len(escaped))
print(repr(body[0][1]))
m.logout()
"#;
    python(script, &[router.imap.ip().to_string(), router.imap.port().to_string(), mailbox.to_string()])
}

#[test]
fn an_mbox_is_stored_once_however_often_the_import_runs_or_stops() {
    const N: usize = 600;
    let dir = tempfile::tempdir().expect("tempdir");
    let mbox = dir.path().join("old-mail.mbox");
    write_mbox(&mbox, N);
    let (router, _n1, _n2) = cluster();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> =
            ["ctl", "--router", &format!("http://{}", router.admin), "--token"].iter().map(|s| s.to_string()).collect();
        v.push(CLUSTER_TOKEN.to_string());
        v.extend(["import", USER, "--mbox", mbox.to_str().expect("utf-8"), "--into", "Old"].map(String::from));
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    // Cut short: killed while it runs.
    let mut first = Command::new(sirms_bin()).args(args(&[])).spawn().expect("start import");
    std::thread::sleep(Duration::from_millis(1500));
    let _ = first.kill();
    let _ = first.wait();
    let partial = count_and_flags(&router, "Old");
    eprintln!("after the cut: {}", partial.lines().next().unwrap_or_default());

    // Run again, twice: the rest comes in, nothing twice.
    let started = Instant::now();
    let out = router.ctl(&["import", USER, "--mbox", mbox.to_str().expect("utf-8"), "--into", "Old"]);
    eprintln!("{out}({:?})", started.elapsed());
    let again = router.ctl(&["import", USER, "--mbox", mbox.to_str().expect("utf-8"), "--into", "Old"]);
    assert!(again.contains("imported 0 messages") && again.contains(&format!("skipped {N} already there")), "{again}");
    let listing = count_and_flags(&router, "Old");
    let mut lines = listing.lines();
    // 600 messages, 200 read (Status: RO), 120 flagged (X-Status: F), every escaped line unescaped.
    assert_eq!(lines.next(), Some(format!("{N} 200 120 {N}").as_str()), "{listing}");
    assert_eq!(
        lines.next(),
        Some(r"b'From: sender0@remote.test\r\nSubject: mbox 0\r\n\r\nline one of 0\r\nFrom the escaped line\r\n'"),
        "the first message as stored: CRLF, no Status headers, unescaped, the separator's empty line gone"
    );
}
