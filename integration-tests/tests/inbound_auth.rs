//! Sender authentication on the MX against real parts: a real authoritative DNS server
//! (NSD) serving SPF, DKIM and DMARC records, a real `sirms node` asking it, and Python's
//! smtplib sending from chosen loopback addresses mail signed and ARC-sealed by dkimpy.
//! What is asserted is what a sender and a user see: the reply to DATA, the
//! `Authentication-Results:` of the delivered message, and the folder it landed in.
//!
//! Addresses: 127.0.26.0/24 is this test's own (node .1, DNS .53, senders .10, .11, .20).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use sirms_integration_tests::dkim_key::TestKey;
use sirms_integration_tests::{MailNode, Process, free_port_on, metrics_page, python};

const NODE_IP: [u8; 4] = [127, 0, 26, 1];
const DNS_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 26, 53);
/// Designated by the SPF records of good.test, strict.test, quar.test and late.test.
const LEGIT: &str = "127.0.26.10";
/// Designated by no one.
const STRANGER: &str = "127.0.26.11";
/// The forwarders' address, designated by forwarder.test and untrusted.test.
const FORWARDER: &str = "127.0.26.20";
const HOSTNAME: &str = "mx.sirms.test";

/// Signs (dkimpy), tampers, forwards with an ARC seal (dkimpy), sends (smtplib from
/// `source`); prints `ok` or `error <code> <text>`.
const SEND: &str = r#"
import dkim, json, smtplib, sys
a = json.loads(sys.argv[1])
key = open(a["key"], "rb").read()
msg = a["msg"].encode()
heads = [b"from", b"to", b"subject"]
if a.get("sign"):
    msg = dkim.sign(msg, b"sel", a["sign"].encode(), key, include_headers=heads) + msg
if a.get("tamper"):
    msg += b"a line added after signing\r\n"
if a.get("seal"):
    # The forwarder checked the original, said so in its own results, added a footer
    # (breaking the DKIM signature), then sealed.
    sealer = a["seal"].encode()
    msg = (b"Authentication-Results: " + sealer + b"; dkim=pass header.d=strict.test;"
           b" spf=pass smtp.mailfrom=strict.test; dmarc=pass header.from=strict.test\r\n" + msg
           + b"-- \r\nSent through the forwarder's list\r\n")
    seal = dkim.arc_sign(msg, b"arc", sealer, key, sealer, include_headers=heads)
    assert seal, "dkimpy made no ARC set"
    msg = b"".join(seal) + msg
host, port = a["addr"].rsplit(":", 1)
try:
    s = smtplib.SMTP(host, int(port), timeout=60, source_address=(a["source"], 0))
    s.ehlo(a["helo"])
    s.sendmail(a["from"], ["alice@example.test"], msg)
    print("ok")
    s.quit()
except smtplib.SMTPResponseException as e:
    print("error", e.smtp_code, e.smtp_error.decode(errors="replace"))
"#;

/// Prints the messages of alice's Junk folder, as JSON strings.
const JUNK: &str = r#"
import imaplib, json, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4("127.0.26.1", int(sys.argv[1]), timeout=20)
m.starttls(ssl_context=ctx)
m.login("alice@example.test", "alice-pw")
typ, _ = m.select("Junk", readonly=True)
out = []
if typ == "OK":
    typ, data = m.fetch("1:*", "(BODY.PEEK[])")
    out = [part[1].decode(errors="replace") for part in data if isinstance(part, tuple)]
print(json.dumps(out))
m.logout()
"#;

/// A message from `author`, to alice.
fn message(author: &str, subject: &str) -> String {
    format!("From: {author}\r\nTo: alice@example.test\r\nSubject: {subject}\r\n\r\nHello from {author}.\r\n")
}

/// The `test.` zone: who may send for which domain, their keys and DMARC policies.
fn zone(key: &TestKey) -> String {
    let key_txt = key.zone_txt();
    let head = sirms_integration_tests::nsd::zone_head("test.", DNS_IP);
    format!(
        r#"{head}good IN TXT "v=spf1 ip4:{LEGIT} -all"
sel._domainkey.good IN TXT {key_txt}
_dmarc.good IN TXT "v=DMARC1; p=reject"
strict IN TXT "v=spf1 ip4:{LEGIT} -all"
sel._domainkey.strict IN TXT {key_txt}
_dmarc.strict IN TXT "v=DMARC1; p=reject"
quar IN TXT "v=spf1 ip4:{LEGIT} -all"
_dmarc.quar IN TXT "v=DMARC1; p=quarantine"
late IN TXT "v=spf1 ip4:{LEGIT} -all"
_dmarc.late IN TXT "v=DMARC1; p=reject"
forwarder IN TXT "v=spf1 ip4:{FORWARDER} -all"
arc._domainkey.forwarder IN TXT {key_txt}
untrusted IN TXT "v=spf1 ip4:{FORWARDER} -all"
twovoid IN TXT "v=spf1 a:nx1.twovoid.test a:nx2.twovoid.test ip4:{LEGIT} -all"
threevoid IN TXT "v=spf1 a:nx1.threevoid.test a:nx2.threevoid.test a:nx3.threevoid.test ip4:{LEGIT} -all"
arc._domainkey.untrusted IN TXT {key_txt}
11.26.0.127.bl IN A 127.0.0.2
20.26.0.127.bl IN A 127.255.255.254
"#
    )
}

/// NSD serving `zone` on `DNS_IP`, killed when dropped.
fn start_nsd(dir: &Path, zone: &str) -> (Process, SocketAddr) {
    sirms_integration_tests::nsd::start(dir, DNS_IP, "test.", zone)
}

struct Mail<'a> {
    source: &'a str,
    helo: &'a str,
    from: &'a str,
    msg: String,
    sign: Option<&'a str>,
    tamper: bool,
    seal: Option<&'a str>,
}

fn mail<'a>(source: &'a str, from: &'a str, msg: String) -> Mail<'a> {
    Mail { source, helo: "client.test", from, msg, sign: None, tamper: false, seal: None }
}

fn send(node: &MailNode, key: &str, m: &Mail) -> String {
    let args = serde_json::json!({
        "addr": node.smtp.to_string(), "source": m.source, "helo": m.helo, "from": m.from, "msg": m.msg,
        "key": key, "sign": m.sign, "tamper": m.tamper, "seal": m.seal,
    });
    python(SEND, &[args.to_string()]).trim().to_string()
}

/// Our `Authentication-Results:` field of a delivered message, unfolded, after checking
/// it is the only one naming us.
fn our_results(stored: &[u8]) -> String {
    let text = String::from_utf8_lossy(stored);
    let header = text.split("\r\n\r\n").next().unwrap_or_default().replace("\r\n\t", " ").replace("\r\n ", " ");
    let ours: Vec<&str> = header
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("authentication-results:"))
        .filter(|l| l["authentication-results:".len()..].trim_start().starts_with(HOSTNAME))
        .collect();
    assert_eq!(ours.len(), 1, "want exactly one Authentication-Results of ours:\n{text}");
    ours[0].to_string()
}

/// The result of `method` in unfolded `results`; for `spf`, the MAIL FROM one (the HELO
/// one is `spf_helo`).
fn result_of<'r>(results: &'r str, method: &str) -> &'r str {
    let (method, property) = match method {
        "spf" => ("spf", "smtp.mailfrom="),
        "spf_helo" => ("spf", "smtp.helo="),
        other => (other, ""),
    };
    let key = format!("{method}=");
    results
        .split(';')
        .map(str::trim)
        .filter(|r| r.contains(property))
        .find_map(|r| r.strip_prefix(&key))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {method} result in {results}"))
}

#[test]
fn spf_dkim_dmarc_arc_on_the_mx() {
    let dir = tempfile::tempdir().expect("tempdir");
    let test_key = TestKey::new(dir.path());
    let key = test_key.pem.clone();
    let (mut nsd, dns) = start_nsd(dir.path(), &zone(&test_key));
    let extra = format!(
        "[inbound]\nnameservers = [\"{dns}\"]\n[inbound.auth]\nenabled = true\ntrusted_arc_sealers = [\"forwarder.test\"]\ndns_timeout_secs = 1\n"
    );
    let node = MailNode::start_on(NODE_IP, HOSTNAME, &extra);
    let inbox = || node.inbox("alice@example.test");
    let delivered = |n: usize| -> String {
        let all = inbox();
        assert_eq!(all.len(), n, "messages in INBOX");
        our_results(&all[n - 1])
    };

    // Everything in order: the designated address, a good signature, aligned.
    let mut m = mail(LEGIT, "a@good.test", message("a@good.test", "pass"));
    m.sign = Some("good.test");
    m.helo = "good.test";
    assert_eq!(send(&node, &key, &m), "ok");
    let ar = delivered(1);
    assert_eq!(result_of(&ar, "spf"), "pass", "{ar}");
    assert_eq!(result_of(&ar, "spf_helo"), "pass", "{ar}");
    assert!(ar.contains("smtp.mailfrom=a@good.test") && ar.contains("smtp.helo=good.test"), "{ar}");
    assert_eq!(result_of(&ar, "dkim"), "pass", "{ar}");
    assert!(ar.contains("good.test header.s=sel"), "{ar}");
    assert_eq!(result_of(&ar, "dmarc"), "pass", "{ar}");
    assert!(ar.contains("header.from=good.test"), "{ar}");
    assert_eq!(result_of(&ar, "arc"), "none", "{ar}");
    assert!(ar.contains("iprev="), "{ar}");

    // SPF fails (an address good.test does not designate), DKIM still carries DMARC.
    let mut m = mail(STRANGER, "a@good.test", message("a@good.test", "spf fail"));
    m.sign = Some("good.test");
    assert_eq!(send(&node, &key, &m), "ok");
    let ar = delivered(2);
    assert_eq!(result_of(&ar, "spf"), "fail", "{ar}");
    assert_eq!(result_of(&ar, "dkim"), "pass", "{ar}");
    assert_eq!(result_of(&ar, "dmarc"), "pass", "{ar}");

    // The body changed after signing: DKIM fails, aligned SPF carries DMARC.
    let mut m = mail(LEGIT, "a@good.test", message("a@good.test", "dkim fail"));
    m.sign = Some("good.test");
    m.tamper = true;
    assert_eq!(send(&node, &key, &m), "ok");
    let ar = delivered(3);
    assert_eq!(result_of(&ar, "spf"), "pass", "{ar}");
    assert_eq!(result_of(&ar, "dkim"), "fail", "{ar}");
    assert_eq!(result_of(&ar, "dmarc"), "pass", "{ar}");

    // A domain with no records at all: nothing to check, delivered.
    let m = mail(STRANGER, "x@none.test", message("x@none.test", "none"));
    assert_eq!(send(&node, &key, &m), "ok");
    let ar = delivered(4);
    assert_eq!(result_of(&ar, "spf"), "none", "{ar}");
    assert_eq!(result_of(&ar, "dkim"), "none", "{ar}");
    assert_eq!(result_of(&ar, "dmarc"), "none", "{ar}");

    // p=reject, SPF fails and the signature is broken: refused at the end of DATA.
    let mut m = mail(STRANGER, "ceo@strict.test", message("ceo@strict.test", "reject"));
    m.sign = Some("strict.test");
    m.tamper = true;
    let out = send(&node, &key, &m);
    assert!(out.starts_with("error 550 5.7.1"), "{out}");
    assert!(out.contains("strict.test"), "{out}");
    assert_eq!(inbox().len(), 4, "a rejected message is not delivered");

    // p=quarantine and failing: delivered into Junk, not the INBOX.
    let m = mail(STRANGER, "q@quar.test", message("q@quar.test", "quarantined"));
    assert_eq!(send(&node, &key, &m), "ok");
    assert_eq!(inbox().len(), 4, "quarantined mail stays out of the INBOX");
    let junk: Vec<String> =
        serde_json::from_str(python(JUNK, &[node.imap.port().to_string()]).trim()).expect("junk json");
    assert_eq!(junk.len(), 1, "{junk:?}");
    assert!(junk[0].contains("Subject: quarantined"), "{}", junk[0]);
    let ar = our_results(junk[0].as_bytes());
    assert_eq!(result_of(&ar, "dmarc"), "fail", "{ar}");
    assert!(ar.contains("policy.dmarc=quarantine"), "{ar}");

    // Results forged with our name are removed; another server's stay.
    let forged = format!(
        "Authentication-Results: {HOSTNAME}; dkim=pass header.d=bank.test; dmarc=pass header.from=bank.test\r\n\
         Authentication-Results: other.test; spf=pass smtp.mailfrom=a@good.test\r\n{}",
        message("a@good.test", "forged")
    );
    let mut m = mail(LEGIT, "a@good.test", forged);
    m.sign = Some("good.test");
    assert_eq!(send(&node, &key, &m), "ok");
    let ar = delivered(5);
    assert_eq!(result_of(&ar, "dkim"), "pass", "{ar}");
    let stored = String::from_utf8_lossy(&inbox()[4]).into_owned();
    assert!(!stored.contains("bank.test"), "the forged results are gone:\n{stored}");
    assert!(stored.contains("Authentication-Results: other.test; spf=pass"), "{stored}");
    assert!(stored.find(&format!("Authentication-Results: {HOSTNAME}")) < stored.find("other.test"), "{stored}");

    // Through a trusted forwarder: DMARC fails here (its footer broke DKIM, its MAIL FROM
    // is its own), but its valid ARC seal says DMARC passed on arrival there.
    let mut m = mail(FORWARDER, "list@forwarder.test", message("boss@strict.test", "forwarded"));
    m.sign = Some("strict.test");
    m.seal = Some("forwarder.test");
    assert_eq!(send(&node, &key, &m), "ok");
    let ar = delivered(6);
    assert_eq!(result_of(&ar, "arc"), "pass", "{ar}");
    assert_eq!(result_of(&ar, "dkim"), "fail", "{ar}");
    assert_eq!(result_of(&ar, "dmarc"), "fail", "{ar}");

    // The same from a sealer the node does not trust: DMARC's reject stands.
    let mut m = mail(FORWARDER, "list@untrusted.test", message("boss@strict.test", "forwarded, untrusted"));
    m.sign = Some("strict.test");
    m.seal = Some("untrusted.test");
    let out = send(&node, &key, &m);
    assert!(out.starts_with("error 550 5.7.1"), "{out}");
    assert_eq!(inbox().len(), 6);

    // SPF's void-lookup limit (RFC 7208 §4.6.4): two names that do not exist are tolerated,
    // a third makes the record a permerror although the address it lists would match.
    let m = mail(LEGIT, "a@twovoid.test", message("a@twovoid.test", "two void lookups"));
    assert_eq!(send(&node, &key, &m), "ok");
    let ar = delivered(7);
    assert_eq!(result_of(&ar, "spf"), "pass", "{ar}");
    let m = mail(LEGIT, "a@threevoid.test", message("a@threevoid.test", "three void lookups"));
    assert_eq!(send(&node, &key, &m), "ok");
    let ar = delivered(8);
    assert_eq!(result_of(&ar, "spf"), "permerror", "{ar}");

    // DNS down: no verdict can be reached, the sender is told to retry.
    nsd.stop();
    let m = mail(LEGIT, "a@late.test", message("a@late.test", "dns down"));
    let out = send(&node, &key, &m);
    assert!(out.starts_with("error 451 4.7.0"), "{out}");
    assert_eq!(inbox().len(), 8);

    // Every checked message counted once, by DMARC result and by what was done.
    let page = metrics_page(node.metrics);
    for want in [
        "sirms_inbound_dmarc_total{result=\"pass\"} 4",
        "sirms_inbound_dmarc_total{result=\"fail\"} 4",
        "sirms_inbound_dmarc_total{result=\"none\"} 3",
        "sirms_inbound_dmarc_total{result=\"temperror\"} 1",
        "sirms_inbound_auth_actions_total{action=\"deliver\"} 8",
        "sirms_inbound_auth_actions_total{action=\"junk\"} 1",
        "sirms_inbound_auth_actions_total{action=\"reject\"} 2",
        "sirms_inbound_auth_actions_total{action=\"defer\"} 1",
    ] {
        assert!(page.contains(want), "no {want} in:\n{page}");
    }
}

#[test]
fn temperror_accept_delivers_the_message_marked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::new(dir.path()).pem;
    // Nothing listens there: every lookup fails at once.
    let dead = SocketAddr::from((DNS_IP, free_port_on(DNS_IP)));
    let extra = format!(
        "[inbound]\nnameservers = [\"{dead}\"]\n[inbound.auth]\nenabled = true\ntemperror = \"accept\"\ndns_timeout_secs = 1\n"
    );
    let node = MailNode::start_on(NODE_IP, HOSTNAME, &extra);
    let mut m = mail(LEGIT, "a@good.test", message("a@good.test", "dns down, accepted"));
    m.sign = Some("good.test");
    assert_eq!(send(&node, &key, &m), "ok");
    let inbox = node.inbox("alice@example.test");
    assert_eq!(inbox.len(), 1);
    let ar = our_results(&inbox[0]);
    assert_eq!(result_of(&ar, "spf"), "temperror", "{ar}");
    assert_eq!(result_of(&ar, "dkim"), "temperror", "{ar}");
    assert_eq!(result_of(&ar, "dmarc"), "temperror", "{ar}");
}

/// The first line each client gets: from `source` to each of `ports`, in order.
const GREETINGS: &str = r#"
import socket, sys
for source, port in zip(sys.argv[1::2], sys.argv[2::2]):
    s = socket.create_connection(("127.0.26.1", int(port)), timeout=20, source_address=(source, 0))
    print(source, port, s.makefile("rb").readline().decode().strip())
    s.close()
"#;

/// A client a DNS blocklist lists (RFC 5782, an A record in 127/8) is refused at connect to
/// port 25 with `554 5.7.1` naming the list, and counted; a client it does not list, one
/// it answers with an error code (127.255.255.254) for, and submission are served.
#[test]
fn a_client_on_a_dns_blocklist_is_refused_at_connect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_nsd, dns) = start_nsd(dir.path(), &zone(&TestKey::new(dir.path())));
    let extra = format!("[inbound]\nnameservers = [\"{dns}\"]\n[inbound.dnsbl]\nzones = [\"bl.test\"]\n");
    let node = MailNode::start_on(NODE_IP, HOSTNAME, &extra);
    let (smtp, submission) = (node.smtp.port().to_string(), node.submission.port().to_string());
    let args: Vec<String> = [STRANGER, &smtp, LEGIT, &smtp, FORWARDER, &smtp, STRANGER, &submission]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let out = python(GREETINGS, &args);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!("{STRANGER} {smtp} 554 5.7.1 service unavailable; client host [{STRANGER}] is listed by bl.test")
    );
    assert!(lines[1].starts_with(&format!("{LEGIT} {smtp} 220 ")), "{out}");
    assert!(lines[2].starts_with(&format!("{FORWARDER} {smtp} 220 ")), "an error code lists no one: {out}");
    assert!(lines[3].starts_with(&format!("{STRANGER} {submission} 220 ")), "submission is not checked: {out}");
    assert!(metrics_page(node.metrics).contains("sirms_dnsbl_refused_total 1\n"));
}
