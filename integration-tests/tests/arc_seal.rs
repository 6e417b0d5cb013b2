//! ARC sealing of forwarded mail (RFC 8617) between two real SIRMS installations: mail from
//! an outside sender, DKIM-signed by dkimpy, arrives at node A (a router's cluster) for fred,
//! whose Sieve script (uploaded over ManageSieve) redirects it to bob on node B, a separate
//! node that A reaches as its smarthost. DNS is a real NSD. What is asserted is what bob reads
//! over IMAP: B's own `Authentication-Results:` says `arc=pass`, A's ARC set is there with
//! `d=fwd.test` and the next instance, and dkimpy's ARC verification of the bytes passes.
//!
//! Addresses: 127.0.41.0/24 is this test's own (A .1, B .2, DNS .53, router .100, the sender
//! .10, the mailing list .20).

use std::net::Ipv4Addr;
use std::path::Path;

use sirms_integration_tests::dkim_key::TestKey;
use sirms_integration_tests::{MailNode, RouterProcess, python};

const A_IP: [u8; 4] = [127, 0, 41, 1];
const B_IP: [u8; 4] = [127, 0, 41, 2];
const DNS_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 41, 53);
const ROUTER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 41, 100);
/// good.test's designated sender.
const SENDER: &str = "127.0.41.10";
/// lists.test's server: a mailing list that seals what it passes on.
const LIST: &str = "127.0.41.20";
const A_HOST: &str = "mx-a.sirms.test";
const B_HOST: &str = "mx-b.sirms.test";

/// Signs with dkimpy as good.test, optionally passes the message through lists.test (its
/// results, a footer that breaks the signature, its ARC set i=1), and sends it to fred at
/// node A from the right address. Prints `ok` or `error <code> <text>`.
const SEND: &str = r#"
import dkim, json, smtplib, sys
a = json.loads(sys.argv[1])
key = open(a["key"], "rb").read()
msg = a["msg"].encode()
heads = [b"from", b"to", b"subject", b"message-id"]
msg = dkim.sign(msg, b"sel", b"good.test", key, include_headers=heads) + msg
source, sender = "127.0.41.10", "a@good.test"
if a["list"]:
    msg = (b"Authentication-Results: lists.test; dkim=pass header.d=good.test;"
           b" spf=pass smtp.mailfrom=good.test; dmarc=pass header.from=good.test\r\n" + msg
           + b"-- \r\nSent through the list\r\n")
    seal = dkim.arc_sign(msg, b"arc", b"lists.test", key, b"lists.test", include_headers=heads)
    assert seal, "dkimpy made no ARC set"
    msg = b"".join(seal) + msg
    source, sender = "127.0.41.20", "list@lists.test"
host, port = a["addr"].rsplit(":", 1)
try:
    s = smtplib.SMTP(host, int(port), timeout=60, source_address=(source, 0))
    s.ehlo("client.test")
    s.sendmail(sender, ["fred@fwd.test"], msg)
    print("ok")
    s.quit()
except smtplib.SMTPResponseException as e:
    print("error", e.smtp_code, e.smtp_error.decode(errors="replace"))
"#;

/// Uploads and activates fred's script over ManageSieve (STARTTLS, PLAIN) at argv[1]:argv[2],
/// retrying while the new user reaches the node.
const UPLOAD: &str = r#"
import managesieve, sys, time
host, port, script = sys.argv[1], int(sys.argv[2]), sys.argv[3]
deadline = time.time() + 20
while True:
    m = managesieve.MANAGESIEVE(host, port, use_tls=True, tls_verify=False, timeout=20)
    if m.login("", "fred@fwd.test", "fred-pw") == "OK":
        break
    assert time.time() < deadline, m.response_text
    m.logout()
    time.sleep(0.5)
assert m.putscript("forward", script) == "OK", m.response_text
assert m.setactive("forward") == "OK", m.response_text
m.logout()
print("uploaded")
"#;

/// Waits (bounded) until bob's INBOX at argv[1]:argv[2] holds argv[3] messages, read over
/// IMAP (STARTTLS); prints them as JSON strings.
const READ: &str = r#"
import imaplib, json, ssl, sys, time
host, port, want = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
deadline = time.time() + 40
while True:
    m = imaplib.IMAP4(host, port, timeout=20)
    m.starttls(ssl_context=ctx)
    m.login("bob@example.test", "bob-pw")
    typ, count = m.select("INBOX", readonly=True)
    out = []
    if int(count[0]) > 0:
        typ, data = m.fetch("1:*", "(BODY.PEEK[])")
        out = [part[1].decode() for part in data if isinstance(part, tuple)]
    m.logout()
    if len(out) >= want or time.time() > deadline:
        break
    time.sleep(0.5)
print(json.dumps(out))
"#;

/// dkimpy's ARC verification of the message in the file argv[1], its keys looked up in the
/// test's NSD at argv[2]:argv[3] (dnspython); prints the chain's result.
const ARC_VERIFY: &str = r#"
import dkim, dns.resolver, sys
r = dns.resolver.Resolver(configure=False)
r.nameservers = [sys.argv[2]]
r.port = int(sys.argv[3])
def lookup(name, timeout=5):
    answer = r.resolve(name.decode().rstrip("."), "TXT", lifetime=timeout)
    return b"".join(b"".join(rdata.strings) for rdata in answer)
cv, results, reason = dkim.arc_verify(open(sys.argv[1], "rb").read(), dnsfunc=lookup)
print(cv.decode(), reason)
"#;

/// The `test.` zone: good.test's sender and key, lists.test's, and fwd.test's (node A's).
fn zone(key: &TestKey) -> String {
    let txt = key.zone_txt();
    let head = sirms_integration_tests::nsd::zone_head("test.", DNS_IP);
    format!(
        "{head}good IN TXT \"v=spf1 ip4:{SENDER} -all\"\nsel._domainkey.good IN TXT {txt}\n\
         _dmarc.good IN TXT \"v=DMARC1; p=none\"\nlists IN TXT \"v=spf1 ip4:{LIST} -all\"\n\
         arc._domainkey.lists IN TXT {txt}\ns1._domainkey.fwd IN TXT {txt}\n"
    )
}

/// The unfolded value of the `Authentication-Results:` of `authserv_id` in `message`.
fn results_of(message: &str, authserv_id: &str) -> String {
    let header = message.split("\r\n\r\n").next().unwrap_or_default().replace("\r\n\t", " ").replace("\r\n ", " ");
    let prefix = format!("authentication-results: {authserv_id}");
    (header.lines().find(|l| l.to_ascii_lowercase().starts_with(&prefix)))
        .unwrap_or_else(|| panic!("no Authentication-Results of {authserv_id}:\n{message}"))
        .to_string()
}

/// The `ARC-Seal:` field with instance `i`, unfolded.
fn seal_of(message: &str, i: u32) -> String {
    let header = message.split("\r\n\r\n").next().unwrap_or_default().replace("\r\n\t", " ").replace("\r\n ", " ");
    (header.lines().find(|l| l.starts_with(&format!("ARC-Seal: i={i};"))))
        .unwrap_or_else(|| panic!("no ARC-Seal: i={i}:\n{message}"))
        .to_string()
}

fn arc_verify(dir: &Path, message: &str, dns: std::net::SocketAddr) -> String {
    let path = dir.join("delivered.eml");
    std::fs::write(&path, message).expect("write");
    python(ARC_VERIFY, &[path.display().to_string(), dns.ip().to_string(), dns.port().to_string()]).trim().to_string()
}

#[test]
fn a_redirected_message_is_arc_sealed_with_the_forwarding_domains_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::new(dir.path());
    let (_nsd, dns) = sirms_integration_tests::nsd::start(dir.path(), DNS_IP, "test.", &zone(&key));
    let auth = format!("[inbound]\nnameservers = [\"{dns}\"]\n[inbound.auth]\nenabled = true\ndns_timeout_secs = 2\n");

    // Node B: bob's, a separate installation with its own checks.
    let b = MailNode::start_on(B_IP, B_HOST, &auth);
    // Node A: fred's, in a cluster whose directory has fwd.test's DKIM key; its outbound
    // mail goes to B, from A's own address.
    let router = RouterProcess::start_on(ROUTER_IP, "");
    let a_extra = format!(
        "{}{auth}[outbound]\nsmarthost = \"{}\"\negress = \"{}\"\n",
        router.node_extra("nodea", A_IP),
        b.smtp,
        Ipv4Addr::from(A_IP)
    );
    let a = MailNode::start_on(A_IP, A_HOST, &a_extra);
    router.wait_nodes(" up ", 1);
    router.ctl(&["domains", "add", "fwd.test"]);
    router.ctl(&["users", "add", "fred@fwd.test", "--password", "fred-pw", "--home", "nodea"]);
    router.ctl(&["dkim", "add", "fwd.test", "--selector", "s1", "--key-file", &key.pkcs8]);
    let script = "redirect \"bob@example.test\";\n";
    // Through the router, as users reach it: a node takes connections from 127.0.0.1 (its
    // trusted proxy) only with a PROXY header.
    let out = python(UPLOAD, &[router.sieve.ip().to_string(), router.sieve.port().to_string(), script.into()]);
    assert_eq!(out.trim(), "uploaded");

    // A message with no ARC chain: A seals it i=1, cv=none.
    let send = |list: bool, subject: &str| {
        let msg = format!(
            "From: boss@good.test\r\nTo: fred@fwd.test\r\nSubject: {subject}\r\n\
             Message-ID: <{}@good.test>\r\n\r\nPlease read this.\r\n",
            subject.replace(' ', ".")
        );
        let args = serde_json::json!({ "addr": a.smtp.to_string(), "key": key.pem, "msg": msg, "list": list });
        python(SEND, &[args.to_string()]).trim().to_string()
    };
    let read = |want: usize| -> Vec<String> {
        let out = python(READ, &[b.imap.ip().to_string(), b.imap.port().to_string(), want.to_string()]);
        let all: Vec<String> = serde_json::from_str(out.trim()).expect("imap json");
        assert_eq!(all.len(), want, "bob's INBOX on B: {all:#?}");
        all
    };
    assert_eq!(send(false, "direct"), "ok");
    let direct = read(1).remove(0);
    println!("forwarded without a chain, as bob reads it:\n{direct}");
    let ours = results_of(&direct, B_HOST);
    assert!(ours.contains("arc=pass"), "B validated A's seal: {ours}");
    let seal = seal_of(&direct, 1);
    assert!(seal.contains("d=fwd.test") && seal.contains("s=s1") && seal.contains("cv=none"), "{seal}");
    let carried = (direct.lines().find(|l| l.starts_with("ARC-Authentication-Results: i=1; mx-a.sirms.test; ")))
        .unwrap_or_else(|| panic!("A's results in its set: {direct}"));
    assert!(
        carried.contains("dkim=pass header.i=@good.test") && carried.contains("smtp.mailfrom=a@good.test"),
        "{carried}"
    );
    assert!(!direct.contains("ARC-Seal: i=2"), "{direct}");
    assert!(
        arc_verify(dir.path(), &direct, dns).starts_with("pass"),
        "dkimpy: {}",
        arc_verify(dir.path(), &direct, dns)
    );

    // Through a mailing list that sealed it first (i=1): A adds i=2, cv=pass.
    assert_eq!(send(true, "through the list"), "ok");
    let listed = read(2).remove(1);
    println!("forwarded after the list, as bob reads it:\n{listed}");
    let ours = results_of(&listed, B_HOST);
    assert!(ours.contains("arc=pass"), "B validated the chain of two: {ours}");
    assert!(seal_of(&listed, 1).contains("d=lists.test"), "the list's set stays");
    let seal = seal_of(&listed, 2);
    assert!(seal.contains("d=fwd.test") && seal.contains("cv=pass"), "{seal}");
    assert!(listed.contains("ARC-Authentication-Results: i=2; mx-a.sirms.test;"), "{listed}");
    assert!(results_of(&listed, A_HOST).contains("arc=pass"), "A validated the list's set");
    let verdict = arc_verify(dir.path(), &listed, dns);
    assert!(verdict.starts_with("pass"), "dkimpy: {verdict}");
}
