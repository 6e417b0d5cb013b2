//! A real Dovecot for tests that compare with it: Debian's `dovecot-imapd`, its `imap` binary
//! run as one pre-authenticated session per pipe (as root, the mail is nobody's), and an IMAP
//! dump that prints what a server shows of every mailbox, the same way for Dovecot and SIRMS.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{RouterProcess, python};

/// Dovecot's IMAP server binary, run on a pipe.
pub const DOVECOT_IMAP: &str = "/usr/lib/dovecot/imap";

/// Prints, for every mailbox `m` can see, its name, UIDVALIDITY, and one line per message:
/// UID, flags without \Recent, INTERNALDATE and the SHA-256 of its bytes. Compared between
/// Dovecot and SIRMS, so both must print the same.
pub const DUMP: &str = r#"
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

/// Writes a Dovecot configuration in `dir` for Maildirs at `~/Maildir` (`layout`: `""` for
/// Maildir++, `":LAYOUT=fs"` for nested directories) and lets Dovecot's user reach `dir`.
pub fn dovecot_config(dir: &Path, layout: &str) -> PathBuf {
    assert!(Path::new(DOVECOT_IMAP).exists(), "{DOVECOT_IMAP} missing: run .ci/install-deps (dovecot-imapd)");
    // Dovecot refuses to serve mail as root: as root, it works as nobody.
    let uid = unsafe { libc::geteuid() };
    let (mail_uid, mail_gid) = if uid == 0 { (65534, 65534) } else { (uid, unsafe { libc::getegid() }) };
    if uid == 0 {
        let chown = Command::new("chown").args(["-R", "65534:65534"]).arg(dir).status().expect("chown");
        assert!(chown.success());
    }
    let config = dir.join(format!("dovecot{}.conf", layout.replace([':', '='], "-")));
    std::fs::write(
        &config,
        format!(
            "protocols = imap\nmail_location = maildir:~/Maildir{layout}\nssl = no\nmail_uid = {mail_uid}\n\
             mail_gid = {mail_gid}\nfirst_valid_uid = 0\nfirst_valid_gid = 0\nlog_path = {log}\n\
             base_dir = {run}\nstate_dir = {state}\nnamespace inbox {{\n  inbox = yes\n  separator = /\n}}\n",
            log = dir.join("dovecot.log").display(),
            run = dir.join("dovecot-run").display(),
            state = dir.join("dovecot-state").display(),
        ),
    )
    .expect("dovecot.conf");
    config
}

/// A Dovecot home with a tree filled by [`FILL`]; `(home, config)`.
pub fn dovecot_tree(dir: &Path) -> (PathBuf, PathBuf) {
    let home = dir.join("dovecot-home");
    std::fs::create_dir_all(&home).expect("home");
    let config = dovecot_config(dir, "");
    python(FILL, &[config.display().to_string(), home.display().to_string(), DOVECOT_IMAP.to_string()]);
    (home, config)
}

/// What Dovecot serves of the tree.
pub fn dovecot_dump(home: &Path, config: &Path) -> String {
    let script = format!(
        "{DUMP}\nimport imaplib, os, sys\nos.environ.update(USER='alice', HOME=sys.argv[2])\n\
         m = imaplib.IMAP4_stream(sys.argv[3] + ' -c ' + sys.argv[1])\nprint(dump(m))\nm.logout()\n"
    );
    python(&script, &[config.display().to_string(), home.display().to_string(), DOVECOT_IMAP.to_string()])
}

/// What SIRMS serves `user` (password `pw`) through the router.
pub fn sirms_dump(router: &RouterProcess, user: &str, pw: &str) -> String {
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
pub fn dovecot_over_tcp(home: &Path, config: &Path) -> (Child, u16) {
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
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the TCP front of Dovecot's imap");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).expect("port");
    (child, line.trim().parse().expect("a port"))
}
