//! The certificate mail clients see: renewed on disk (a Let's Encrypt renewal, say), it is
//! used for the next handshake with no restart, and sessions already open carry on; a client
//! asking for a name (SNI) gets the certificate that carries it; their expiry is in metrics;
//! SIGHUP loads them again even when nothing about the files looks changed.

use sirms_integration_tests::{MailNode, ctl_ca, metrics_page, python};

/// What both scripts below start with: the DER bytes of the first certificate in a PEM file.
const DER: &str = r#"
import ssl
def der(path):
    pem = open(path).read()
    return ssl.PEM_cert_to_DER_cert(pem[: pem.index("-----END CERTIFICATE-----") + 25] + "\n")
"#;

/// Opens IMAPS session A at argv[1] and checks it got the certificate in argv[2]; moves the
/// certificate argv[4] and key argv[5] over argv[2] and argv[3] (key first, as an admin's
/// renewal would); within 10 s a new session gets the new certificate; A still answers.
const RENEW: &str = r#"
import os, socket, ssl, sys, time
host, port = sys.argv[1].rsplit(":", 1)
live_pem, live_key, new_pem, new_key = sys.argv[2:6]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
def session():
    s = ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=10))
    assert s.recv(4096).startswith(b"* OK"), "no greeting"
    return s
old, new = der(live_pem), der(new_pem)
assert old != new
a = session()
assert a.getpeercert(True) == old, "the first certificate is not the one served"
os.replace(new_key, live_key)
os.replace(new_pem, live_pem)
start = time.time()
while True:
    b = session()
    served = b.getpeercert(True)
    b.close()
    if served == new:
        break
    assert served == old, "neither certificate"
    assert time.time() - start < 10, "the renewed certificate was not used within 10 s"
    time.sleep(0.25)
a.sendall(b"a1 NOOP\r\n")
reply = a.recv(4096)
assert reply.startswith(b"a1 OK"), reply
print("renewed")
"#;

#[test]
fn a_renewed_certificate_is_served_without_a_restart_and_open_sessions_carry_on() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = tmp.path().join("ca");
    ctl_ca(&ca, &["init"]);
    // Any two certificates do; these come from the cluster CA tool.
    ctl_ca(&ca, &["issue", "node", "first", "--host", "tls-node.example.test"]);
    ctl_ca(&ca, &["issue", "node", "second", "--host", "tls-node.example.test"]);
    let extra = format!("[tls]\ncert = \"{0}/first.pem\"\nkey = \"{0}/first.key\"\n", ca.display());
    let node = MailNode::start("tls-node.example.test", &extra);
    let path = |file: &str| ca.join(file).display().to_string();
    let out = python(
        &[DER, RENEW].concat(),
        &[node.imaps.to_string(), path("first.pem"), path("first.key"), path("second.pem"), path("second.key")],
    );
    assert_eq!(out.trim(), "renewed");
}

/// `src`'s bytes written over `dst`, padded after the PEM blocks (text there is ignored) to
/// `len` bytes, with `dst`'s modification time put back: nothing a file watcher sees changes.
fn replace_unseen(src: &std::path::Path, dst: &std::path::Path, len: usize) {
    let mut bytes = std::fs::read(src).expect("read");
    assert!(bytes.len() <= len);
    bytes.resize(len, b'\n');
    let mtime = std::fs::metadata(dst).and_then(|m| m.modified()).ok();
    std::fs::write(dst, bytes).expect("write");
    let file = std::fs::File::options().write(true).open(dst).expect("open");
    file.set_modified(mtime.unwrap_or(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000)))
        .expect("mtime");
}

#[test]
fn sighup_loads_certificates_again_even_unchanged_looking_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = tmp.path().join("ca");
    ctl_ca(&ca, &["init"]);
    ctl_ca(&ca, &["issue", "node", "first", "--host", "hup.example.test"]);
    ctl_ca(&ca, &["issue", "node", "second", "--host", "hup.example.test"]);
    let (live_pem, live_key) = (tmp.path().join("live.pem"), tmp.path().join("live.key"));
    let len = |f: &str| std::fs::metadata(ca.join(f)).expect("size").len() as usize + 64;
    let (pem_len, key_len) = (len("first.pem").max(len("second.pem")), len("first.key").max(len("second.key")));
    for (src, dst, n) in [("first.pem", &live_pem, pem_len), ("first.key", &live_key, key_len)] {
        std::fs::write(dst, b"").expect("create");
        replace_unseen(&ca.join(src), dst, n);
    }
    let extra = format!("[tls]\ncert = \"{}\"\nkey = \"{}\"\n", live_pem.display(), live_key.display());
    let node = MailNode::start("hup.example.test", &extra);
    let files = ["first", "second"].map(|f| ca.join(format!("{f}.pem")).display().to_string()).join(",");
    let served = || python(&[DER, SNI].concat(), &[node.imaps.to_string(), files.clone(), "-".into()]);
    assert_eq!(served().trim(), "- first.pem");
    replace_unseen(&ca.join("second.key"), &live_key, key_len);
    replace_unseen(&ca.join("second.pem"), &live_pem, pem_len);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(served().trim(), "- first.pem", "same sizes and times: the watcher sees no change");
    let hup = std::process::Command::new("kill").args(["-HUP", &node.process.pid().to_string()]).status();
    assert!(hup.expect("kill").success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(served().trim(), "- second.pem", "loaded again after SIGHUP");
}

/// Opens an IMAPS session at argv[1] asking for each name in argv[3:] ("-": no name at all)
/// and prints, per name, which of the certificates in argv[2] (comma-separated PEM files) the
/// node served.
const SNI: &str = r#"
import socket, ssl, sys
host, port = sys.argv[1].rsplit(":", 1)
files = sys.argv[2].split(",")
known = {der(f): f.rsplit("/", 1)[-1] for f in files}
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
for name in sys.argv[3:]:
    s = ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=10),
                        server_hostname=None if name == "-" else name)
    assert s.recv(4096).startswith(b"* OK"), "no greeting"
    print(name, known.get(s.getpeercert(True), "unknown"))
    s.close()
"#;

#[test]
fn a_client_asking_for_a_name_gets_the_certificate_that_carries_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = tmp.path().join("ca");
    ctl_ca(&ca, &["init"]);
    ctl_ca(&ca, &["issue", "node", "main", "--host", "mail.example.test"]);
    ctl_ca(&ca, &["issue", "node", "other", "--host", "mx.other.test"]);
    ctl_ca(&ca, &["issue", "node", "wild", "--host", "*.wild.test"]);
    let d = ca.display();
    let extra = format!(
        "[tls]\ncert = \"{d}/main.pem\"\nkey = \"{d}/main.key\"\n\
         [[tls.names]]\ncert = \"{d}/other.pem\"\nkey = \"{d}/other.key\"\n\
         [[tls.names]]\ncert = \"{d}/wild.pem\"\nkey = \"{d}/wild.key\"\n"
    );
    let node = MailNode::start("mail.example.test", &extra);
    let files = ["main", "other", "wild"].map(|f| format!("{d}/{f}.pem")).join(",");
    let names = ["MX.Other.Test", "imap.wild.test", "wild.test", "a.b.wild.test", "nobody.test", "-"];
    let mut args = vec![node.imaps.to_string(), files];
    args.extend(names.iter().map(|n| n.to_string()));
    let served = python(&[DER, SNI].concat(), &args);
    let expected = [
        "MX.Other.Test other.pem",
        "imap.wild.test wild.pem",
        "wild.test main.pem",
        "a.b.wild.test main.pem",
        "nobody.test main.pem",
        "- main.pem",
    ];
    assert_eq!(served.lines().collect::<Vec<_>>(), expected);

    let page = metrics_page(node.metrics);
    let expiries: Vec<&str> = page.lines().filter(|l| l.starts_with("sirms_tls_certificate_expiry_seconds{")).collect();
    assert_eq!(expiries.len(), 3, "{page}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    for line in &expiries {
        let at: u64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a number");
        assert!(at > now, "a certificate just issued has not expired: {line}");
    }
    assert!(expiries.iter().any(|l| l.contains("other.pem")), "{expiries:?}");
}
