//! `sirms ctl import` against real parts: a Maildir tree that a real Dovecot (Debian's
//! `dovecot-imapd`, its `imap` binary run as a pre-authenticated session on a pipe) wrote
//! through IMAP, imported into a two-node cluster and compared, through the router's IMAP,
//! with what that Dovecot serves — every mailbox's UIDVALIDITY, every UID, flag, internal date
//! and byte — and on the replica; and an mbox imported twice and cut short, each message
//! stored once.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sirms_integration_tests::dovecot::{dovecot_dump, dovecot_over_tcp, dovecot_tree, sirms_dump};
use sirms_integration_tests::{CLUSTER_TOKEN, MailNode, RouterProcess, python, sirms_bin, two_node_cluster};

const USER: &str = "alice@example.test";

fn cluster() -> (RouterProcess, MailNode, MailNode) {
    let (router, n1, n2) = two_node_cluster();
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

    // The same Maildir in a vpopmail tree, for two users of a domain the cluster does not know:
    // both created, dave with the clear password vpopmail kept, erin with a crypt hash only.
    let vpop = dir.path().join("vpopmail");
    let domain = vpop.join("domains/vpop.test");
    for user in ["dave", "erin"] {
        std::fs::create_dir_all(domain.join(user)).expect("user dir");
        let copied = Command::new("cp").arg("-a").arg(&maildir).arg(domain.join(user)).status().expect("cp");
        assert!(copied.success());
    }
    std::fs::write(
        domain.join("vpasswd"),
        "dave:$1$salt$hash:89:89:Dave:/home/vpopmail/domains/vpop.test/dave:NOQUOTA:dave-pw\n\
         erin:$6$salt$hash:89:89:Erin:/home/vpopmail/domains/vpop.test/erin:NOQUOTA\n",
    )
    .expect("vpasswd");
    let out = router.ctl(&["import", "--vpopmail", vpop.to_str().expect("utf-8"), "--create-users"]);
    assert!(out.contains("added dave@vpop.test\n"), "{out}");
    assert!(out.contains("added erin@vpop.test (vpopmail kept only a crypt hash"), "{out}");
    assert_eq!(out.matches("imported 11 messages").count(), 2, "{out}");
    assert_eq!(sirms_dump(&router, "dave@vpop.test", "dave-pw"), want, "from vpopmail, with the kept password");
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
