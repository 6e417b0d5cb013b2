//! `sirms ctl backup` and `restore` against real parts: a cluster under SMTP load backed up;
//! the backup served by a real Dovecot exactly as SIRMS served the mail (so standard tools
//! read it); restored whole into a new, empty cluster, where alice logs in with her own
//! password and finds every mailbox, UID, flag, date and byte; an incremental backup that
//! fetches only what is new; and one deleted folder brought back alone, same UIDVALIDITY and
//! UIDs. Alice's Sieve scripts come back with her, the active one still active.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sirms_integration_tests::dovecot::{DUMP, dovecot_config, dovecot_dump, sirms_dump};
use sirms_integration_tests::{MANAGESIEVE_LOGIN, RouterProcess, python, two_node_cluster};

const USER: &str = "alice@example.test";

/// IMAP as alice through the router: `script` runs with `m` logged in.
fn imap(router: &RouterProcess, script: &str) -> String {
    python(
        &format!(
            "{DUMP}\nimport imaplib, ssl, sys\nctx = ssl.create_default_context(); ctx.check_hostname = False\n\
             ctx.verify_mode = ssl.CERT_NONE\nm = imaplib.IMAP4(sys.argv[1], int(sys.argv[2]), timeout=30)\n\
             m.starttls(ssl_context=ctx)\nm.login('alice@example.test', 'alice-pw')\n{script}\nm.logout()\n"
        ),
        &[router.imap.ip().to_string(), router.imap.port().to_string()],
    )
}

/// Alice's Sieve scripts over ManageSieve through the router: with a script in argv[2],
/// uploads it as the active `rules` and a second, inactive `spare`; then lists the scripts
/// and prints `rules`.
const SIEVE: &str = r#"
if len(sys.argv) > 2:
    assert m.putscript("rules", sys.argv[2]) == "OK", m.response_text
    assert m.putscript("spare", "keep;\r\n") == "OK", m.response_text
    assert m.setactive("rules") == "OK", m.response_text
status, scripts = m.listscripts()
print("scripts:", sorted(scripts))
status, body = m.getscript("rules")
print("rules:", body)
m.logout()
"#;

/// A script of alice's, to be found again after the restore.
const RULES: &str = "require \"fileinto\";\r\nif header :contains \"subject\" \"[list]\" { fileinto \"Lists\"; }\r\n";

fn sieve(router: &RouterProcess, upload: Option<&str>) -> String {
    let mut args = vec![router.sieve.port().to_string()];
    args.extend(upload.map(str::to_string));
    python(&format!("{MANAGESIEVE_LOGIN}{SIEVE}"), &args)
}

/// Sends `n` messages to alice through the router's SMTP port.
fn deliver(router: &RouterProcess, from: usize, n: usize) {
    let script = r#"
import smtplib, sys, time
port, first, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
s = smtplib.SMTP("127.0.0.1", port, timeout=30)
for i in range(first, first + n):
    s.sendmail("x@remote.test", ["alice@example.test"], ("Subject: load %d\r\n\r\nbody %d\r\n" % (i, i)).encode())
s.quit()
"#;
    python(script, &[router.smtp.port().to_string(), from.to_string(), n.to_string()]);
}

/// What Dovecot serves of alice's tree in the backup at `backup`.
/// The mailboxes a backup's report names, and how many of them were unchanged.
fn mailbox_counts(report: &str) -> (usize, usize) {
    let number = |after: &str, before: &str| -> usize {
        let start = report.find(after).map(|i| i + after.len()).unwrap_or_else(|| panic!("{after:?} in {report}"));
        let end = report[start..].find(before).map(|i| start + i).unwrap_or_else(|| panic!("{before:?} in {report}"));
        report[start..end].trim().parse().unwrap_or_else(|_| panic!("a number in {report}"))
    };
    (number("users, ", " mailboxes"), number("mailboxes (", " unchanged)"))
}

fn dovecot_view(backup: &Path, scratch: &Path) -> String {
    let config = dovecot_config(scratch, ":LAYOUT=fs");
    let chown = std::process::Command::new("chown").args(["-R", "65534:65534"]).arg(backup).status();
    if unsafe { libc::geteuid() } == 0 {
        assert!(chown.expect("chown").success());
    }
    dovecot_dump(&backup.join("mail").join(USER), &config)
}

#[test]
fn backed_up_under_load_read_by_dovecot_restored_whole_and_by_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backup = dir.path().join("backup");
    let (router, _n1, _n2) = two_node_cluster();
    router.ctl(&["domains", "add", "example.test"]);
    router.ctl(&["users", "add", USER, "--password", "alice-pw", "--home", "node1", "--replica", "node2"]);
    router.ctl(&["aliases", "add", "postmaster@example.test", USER]);
    let scripts = sieve(&router, Some(RULES));
    deliver(&router, 0, 20);
    imap(
        &router,
        r#"
m.create('"Projekte/B&APw-ro"')
m.select("INBOX")
m.uid("COPY", "1:5", '"Projekte/B&APw-ro"')
m.uid("STORE", "1:3", "+FLAGS", r"(\Seen $Label1)")
m.uid("STORE", "4", "+FLAGS", r"(\Flagged Later)")
m.append('"Projekte/B&APw-ro"', r"(\Draft)", imaplib.Time2Internaldate(1500000000), b"Subject: draft\r\n\r\nnot sent\r\n")
m.uid("STORE", "6", "+FLAGS", r"(\Deleted)")
m.expunge()
"#,
    );

    // Backed up while mail keeps arriving: each mailbox as it was when its turn came.
    let busy = Arc::new(AtomicBool::new(true));
    let load = {
        let (busy, port) = (busy.clone(), router.smtp.port());
        std::thread::spawn(move || {
            let mut sent = 0;
            while busy.load(Ordering::Relaxed) && sent < 200 {
                let script = r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30)
s.sendmail("x@remote.test", ["alice@example.test"], b"Subject: during the backup\r\n\r\nbody\r\n")
s.quit()
"#;
                python(script, &[port.to_string()]);
                sent += 1;
            }
            sent
        })
    };
    let out = router.ctl(&["backup", backup.to_str().expect("utf-8")]);
    busy.store(false, Ordering::Relaxed);
    let sent = load.join().expect("load");
    assert!(out.contains("backed up 1 users"), "{out}");
    eprintln!("{out}({sent} messages arrived during the backup)");
    // Settle: a second backup takes what arrived during the first, fetching only that.
    let out = router.ctl(&["backup", backup.to_str().expect("utf-8")]);
    assert!(out.contains(" 0 renamed, 0 removed"), "{out}");
    let (mailboxes, unchanged) = mailbox_counts(&out);
    assert_eq!(unchanged, mailboxes - 1, "only the INBOX took mail since: the rest not listed again\n{out}");
    let want = sirms_dump(&router, USER, "alice-pw");
    assert!(want.contains("Projekte/B&APw-ro uidvalidity="), "{want}");
    assert_eq!(dovecot_view(&backup, dir.path()), want, "Dovecot serves the backup as SIRMS served the mail");

    // A new, empty cluster gets everything back: the directory (alice's password, the alias)
    // and her mail, same UIDVALIDITY, UIDs, flags, dates and bytes.
    let (other, _m1, _m2) = two_node_cluster();
    let out = other.ctl(&["restore", backup.to_str().expect("utf-8")]);
    assert!(out.contains("directory: 1 domains, 1 users, 1 aliases"), "{out}");
    assert!(out.contains("0 failed"), "{out}");
    assert_eq!(sirms_dump(&other, USER, "alice-pw"), want, "restored whole into a new cluster");
    assert!(other.ctl(&["aliases", "list"]).contains("postmaster@example.test"));
    assert!(out.contains("alice@example.test: 3 user files restored"), "two scripts and the active one's name\n{out}");
    let restored = sieve(&other, None);
    assert!(restored.contains("scripts: [('rules', True), ('spare', False)]"), "{restored}");
    assert_eq!(restored, scripts, "the scripts, and which is active, as they were");

    // Incremental: one new message, one flag change, one expunge; only the new one is fetched.
    deliver(&router, 100, 1);
    imap(
        &router,
        "m.select('INBOX')\nm.uid('STORE', '7', '+FLAGS', r'(\\Answered)')\nm.uid('STORE', '8', '+FLAGS', r'(\\Deleted)')\nm.expunge()",
    );
    let out = router.ctl(&["backup", backup.to_str().expect("utf-8")]);
    assert!(out.contains(": 1 fetched, 1 renamed, 1 removed"), "{out}");
    let want = sirms_dump(&router, USER, "alice-pw");
    assert_eq!(dovecot_view(&backup, dir.path()), want, "the incremental backup is the mail as it is now");
    // A flag change alone (a new MODSEQ, nothing else) is seen; then nothing is.
    imap(&router, "m.select('INBOX')\nm.uid('STORE', '7', '-FLAGS', r'(\\Answered)')");
    let out = router.ctl(&["backup", backup.to_str().expect("utf-8")]);
    assert!(out.contains(": 0 fetched, 1 renamed, 0 removed"), "{out}");
    let out = router.ctl(&["backup", backup.to_str().expect("utf-8")]);
    let (mailboxes, unchanged) = mailbox_counts(&out);
    assert_eq!(unchanged, mailboxes, "{out}");
    assert!(out.contains(": 0 fetched, 0 renamed, 0 removed"), "{out}");
    let want = sirms_dump(&router, USER, "alice-pw");
    assert_eq!(dovecot_view(&backup, dir.path()), want, "the flag change is in the backup");

    // One folder deleted by mistake comes back alone, with its UIDVALIDITY and UIDs.
    imap(&router, "assert m.delete('\"Projekte/B&APw-ro\"')[0] == 'OK'");
    assert!(!sirms_dump(&router, USER, "alice-pw").contains("Projekte/B&APw-ro"));
    let out = router.ctl(&[
        "restore",
        backup.to_str().expect("utf-8"),
        "--user",
        USER,
        "--folder",
        "Projekte/Büro",
        "--mail-only",
    ]);
    assert!(out.contains("imported 6 messages"), "{out}");
    assert_eq!(sirms_dump(&router, USER, "alice-pw"), want, "the folder is back as it was");
}
