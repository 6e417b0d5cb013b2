//! MTA-STS (RFC 8461) on the sending side, against real parts: NSD serving the destination
//! domains' MX, A and `_mta-sts` TXT records, a Python HTTPS server (`http.server` + `ssl`)
//! serving their policies on port 443 with a certificate from a test CA made here with
//! `openssl`, and two Python SMTP servers with STARTTLS on port 25: one whose certificate
//! that CA issued for its MX name, one with a self-signed certificate. A real `sirms node`
//! finds all of it through `[outbound] nameservers` and trusts the test CA through
//! `extra_ca_file`.
//!
//! What is asserted is what an attacker on the path would care about: under `enforce` a bad
//! certificate or an unlisted MX means the message stays queued and no server ever sees a
//! MAIL command of it, in clear text or otherwise; the policy survives a restart with the
//! policy server gone.
//!
//! Addresses: 127.0.32.0/24 is this test's own (node .1, submitting client .5, good MX .25,
//! bad MX .26, policy server .44, DNS .53).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sirms_integration_tests::{MailNode, Process, metrics_page, nsd, python};

const NODE_IP: [u8; 4] = [127, 0, 32, 1];
const CLIENT: &str = "127.0.32.5";
const GOOD_MX: Ipv4Addr = Ipv4Addr::new(127, 0, 32, 25);
const BAD_MX: Ipv4Addr = Ipv4Addr::new(127, 0, 32, 26);
const POLICY_HOST: Ipv4Addr = Ipv4Addr::new(127, 0, 32, 44);
const DNS_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 32, 53);

/// An MTA with STARTTLS: `python3 -c MTA HOST PORT CERT KEY LOG [requiretls]`. One JSON line
/// per event: `mail` (with the command), `rcpt` and `data` with whether TLS was on,
/// `tls_failed` when a handshake broke. With `requiretls` it offers REQUIRETLS over TLS.
const MTA: &str = r#"
import json, socketserver, ssl, sys, threading
host, port, cert, key, log = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
requiretls = sys.argv[6:] == ["requiretls"]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
lock = threading.Lock()
def record(**event):
    with lock, open(log, "a") as f:
        f.write(json.dumps(event) + "\n")
class Session(socketserver.BaseRequestHandler):
    def handle(self):
        sock, tls = self.request, False
        r, w = sock.makefile("rb"), sock.makefile("wb")
        def reply(line):
            w.write((line + "\r\n").encode()); w.flush()
        reply("220 mx ESMTP test")
        rcpts = []
        while True:
            line = r.readline()
            if not line:
                return
            cmd = line.decode(errors="replace").strip()
            verb = cmd.split(" ")[0].upper()
            if verb in ("EHLO", "HELO"):
                offer = "250-REQUIRETLS\r\n" if tls and requiretls else ""
                reply("250-mx\r\n" + offer + ("" if tls else "250-STARTTLS\r\n") + "250 SIZE 10000000")
            elif verb == "STARTTLS" and not tls:
                reply("220 go ahead")
                try:
                    sock = ctx.wrap_socket(sock, server_side=True)
                except (ssl.SSLError, OSError) as e:
                    record(event="tls_failed", error=str(e))
                    return
                tls = True
                r, w = sock.makefile("rb"), sock.makefile("wb")
            elif verb == "MAIL":
                rcpts = []
                record(event="mail", tls=tls, cmd=cmd)
                reply("250 2.1.0 ok")
            elif verb == "RCPT":
                addr = cmd[cmd.index("<") + 1:cmd.index(">")]
                rcpts.append(addr)
                record(event="rcpt", rcpt=addr, tls=tls)
                reply("250 2.1.5 ok")
            elif verb == "DATA":
                reply("354 go ahead")
                while r.readline() not in (b".\r\n", b""):
                    pass
                record(event="data", rcpts=rcpts, tls=tls)
                reply("250 2.0.0 queued")
            elif verb == "QUIT":
                reply("221 bye")
                return
            else:
                reply("250 ok")
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer((host, port), Session).serve_forever()
"#;

/// The policy server: `python3 -c HTTPS HOST CERT KEY POLICIES LOG`, POLICIES a JSON file of
/// host name → policy text. Logs each request's Host.
const HTTPS: &str = r#"
import http.server, json, ssl, sys
host, cert, key, policies, log = sys.argv[1:6]
policies = json.load(open(policies))
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        name = (self.headers.get("Host") or "").split(":")[0]
        with open(log, "a") as f:
            f.write(json.dumps({"host": name, "path": self.path}) + "\n")
        body = policies.get(name)
        if body is None or self.path != "/.well-known/mta-sts.txt":
            self.send_response(404); self.end_headers(); return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer((host, 443), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

/// Submits one message as alice from argv[3] to the submission port argv[1]:argv[2], to the
/// recipients in argv[4:].
const SUBMIT: &str = r#"
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=20, source_address=(sys.argv[3], 0))
s.login("alice@example.test", "alice-pw")
msg = b"From: alice@example.test\r\nSubject: sts\r\n\r\nsecret\r\n"
print("refused", s.sendmail("alice@example.test", sys.argv[4:], msg))
s.quit()
"#;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A test CA (`ca.pem`), `NAME.pem`/`NAME.key` it issued for `names`, and a self-signed
/// `bad.pem`/`bad.key` for `bad_names`.
fn certificates(dir: &Path, issued: &[(&str, &[&str])], bad_names: &[&str]) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let san = |names: &[&str]| names.iter().map(|n| format!("DNS:{n}")).collect::<Vec<_>>().join(",");
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=SIRMS test CA"]);
    ca.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"]);
    openssl(dir, &ca);
    for (name, names) in issued {
        let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=test"]);
        openssl(dir, &req);
        let ext = format!("{name}.ext");
        std::fs::write(dir.join(&ext), format!("subjectAltName={}\nextendedKeyUsage=serverAuth\n", san(names)))
            .expect("write ext");
        openssl(
            dir,
            &["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"]
                .into_iter()
                .chain(["-out", &pem, "-days", "2", "-extfile", &ext])
                .collect::<Vec<_>>(),
        );
    }
    let bad_san = format!("subjectAltName={}", san(bad_names));
    let mut bad = vec!["req", "-x509"];
    bad.extend(ec);
    bad.extend(["-keyout", "bad.key", "-out", "bad.pem", "-days", "2", "-subj", "/CN=self-signed"]);
    bad.extend(["-addext", &bad_san, "-addext", "basicConstraints=critical,CA:FALSE"]);
    openssl(dir, &bad);
}

/// The `test.` zone: four domains with policies, one without.
fn zone() -> String {
    let head = nsd::zone_head("test.", DNS_IP);
    format!(
        r#"{head}mx.good IN A {GOOD_MX}
mx.bad IN A {BAD_MX}
enforce IN MX 10 mx.good.test.
_mta-sts.enforce IN TXT "v=STSv1; id=e1;"
mta-sts.enforce IN A {POLICY_HOST}
badcert IN MX 10 mx.bad.test.
_mta-sts.badcert IN TXT "v=STSv1; id=b1;"
mta-sts.badcert IN A {POLICY_HOST}
wrongmx IN MX 10 mx.good.test.
_mta-sts.wrongmx IN TXT "v=STSv1; id=w1;"
mta-sts.wrongmx IN A {POLICY_HOST}
testing IN MX 10 mx.bad.test.
_mta-sts.testing IN TXT "v=STSv1; id=t1;"
mta-sts.testing IN A {POLICY_HOST}
plain IN MX 10 mx.bad.test.
"#
    )
}

fn policy(mode: &str, mx: &str) -> String {
    format!("version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: 86400\r\n")
}

/// A server started with `python3 -c SCRIPT ARGS`, listening on `addr`.
fn serve(script: &str, args: &[String], addr: SocketAddr, what: &str) -> Process {
    let child =
        Command::new("python3").arg("-c").arg(script).args(args).stdin(Stdio::null()).spawn().expect("start python3");
    let mut process = Process::from_child(child);
    process.wait_listening(what, &[addr]);
    process
}

/// The MTA on `ip` port 25 with certificate `cert` from `dir`, logging to `log`; `extra` is
/// its optional last argument.
fn mta(dir: &Path, ip: Ipv4Addr, cert: &str, log: &Path, extra: &str) -> Process {
    let file = |ext: &str| dir.join(format!("{cert}.{ext}")).display().to_string();
    let args = [ip.to_string(), "25".into(), file("pem"), file("key"), log.display().to_string(), extra.to_string()];
    serve(MTA, &args, SocketAddr::from((ip, 25)), "test MTA")
}

fn events(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Waits (bounded) until `done` holds.
fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The one envelope in the node's spool, as text.
fn envelope(node: &MailNode) -> String {
    let dir = node.data.join("queue/env");
    let entries: Vec<PathBuf> =
        std::fs::read_dir(&dir).map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
    let entries: Vec<_> =
        entries.into_iter().filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))).collect();
    assert!(entries.len() <= 1, "one message was queued: {entries:?}");
    entries.first().and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default()
}

fn attempts(envelope: &str) -> u32 {
    envelope.lines().find_map(|l| l.strip_prefix("attempts ")).and_then(|n| n.parse().ok()).unwrap_or(0)
}

fn metric(page: &str, line_start: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in\n{page}"))
}

#[test]
fn enforce_keeps_mail_queued_unless_tls_checks_out() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path();
    let policy_names = ["mta-sts.enforce.test", "mta-sts.badcert.test", "mta-sts.wrongmx.test", "mta-sts.testing.test"];
    certificates(dir, &[("good", &["mx.good.test"]), ("policy", &policy_names)], &["mx.bad.test"]);
    let (_nsd, dns) = nsd::start(dir, DNS_IP, "test.", &zone());

    let policies = serde_json::json!({
        "mta-sts.enforce.test": policy("enforce", "mx.good.test"),
        "mta-sts.badcert.test": policy("enforce", "mx.bad.test"),
        "mta-sts.wrongmx.test": policy("enforce", "*.elsewhere.test"),
        "mta-sts.testing.test": policy("testing", "mx.bad.test"),
    });
    std::fs::write(dir.join("policies.json"), policies.to_string()).expect("write policies");
    let path = |name: &str| dir.join(name).display().to_string();
    let https_log = dir.join("https.log");
    let mut https = serve(
        HTTPS,
        &[POLICY_HOST.to_string(), path("policy.pem"), path("policy.key"), path("policies.json"), path("https.log")],
        SocketAddr::from((POLICY_HOST, 443)),
        "policy server",
    );
    let (good_log, bad_log) = (dir.join("good.log"), dir.join("bad.log"));
    let _good = mta(dir, GOOD_MX, "good", &good_log, "");
    let _bad = mta(dir, BAD_MX, "bad", &bad_log, "");

    let extra = format!(
        "allow_plaintext_auth = true\n[outbound]\negress = \"127.0.32.1\"\nretry_initial_secs = 1\nretry_max_secs = 1\n\
         nameservers = [\"{dns}\"]\nextra_ca_file = \"{}\"\n",
        path("ca.pem")
    );
    let mut node = MailNode::start_on(NODE_IP, "out.sirms.test", &extra);
    let rcpts = ["a@enforce.test", "b@badcert.test", "c@wrongmx.test", "d@testing.test", "e@plain.test"];
    let mut args = vec![node.submission.ip().to_string(), node.submission.port().to_string(), CLIENT.to_string()];
    args.extend(rcpts.iter().map(|r| r.to_string()));
    assert_eq!(python(SUBMIT, &args).trim(), "refused {}");

    // Good certificate under enforce: delivered, over TLS.
    let data =
        |log: &Path| -> Vec<serde_json::Value> { events(log).into_iter().filter(|e| e["event"] == "data").collect() };
    wait_until("delivery to the good MX", Duration::from_secs(30), || !data(&good_log).is_empty());
    let good = data(&good_log);
    assert_eq!(good.len(), 1, "{good:?}");
    assert_eq!(good[0]["rcpts"], serde_json::json!(["a@enforce.test"]));
    assert_eq!(good[0]["tls"], true);

    // `testing` and no policy at all: delivered to the self-signed MX anyway, over TLS.
    wait_until("deliveries to the bad MX", Duration::from_secs(30), || data(&bad_log).len() >= 2);

    // Several attempts later, the enforced recipients are still queued, with the reason.
    wait_until("three attempts", Duration::from_secs(60), || attempts(&envelope(&node)) >= 3);
    let env = envelope(&node);
    let mut left: Vec<&str> = env.lines().filter_map(|l| l.strip_prefix("remote ")).collect();
    left.sort();
    assert_eq!(left, ["b@badcert.test", "c@wrongmx.test"], "{env}");
    let error_of = |rcpt: &str| env.lines().find_map(|l| l.strip_prefix(&format!("error {rcpt} "))).unwrap_or("");
    assert!(error_of("b@badcert.test").starts_with("MTA-STS enforce: mx.bad.test"), "{env}");
    assert!(error_of("b@badcert.test").contains("UnknownIssuer"), "{env}");
    assert!(error_of("c@wrongmx.test").contains("no MX host of wrongmx.test matches its policy"), "{env}");

    // No server ever heard of them: no RCPT, in clear text or over TLS; the bad MX saw the
    // node abort the handshake instead.
    let all = [events(&good_log), events(&bad_log)].concat();
    let rcpt_seen = |r: &str| all.iter().any(|e| e["event"] == "rcpt" && e["rcpt"] == r);
    assert!(!rcpt_seen("b@badcert.test") && !rcpt_seen("c@wrongmx.test"), "{all:#?}");
    assert!(all.iter().all(|e| e["event"] != "mail" || e["tls"] == true), "a MAIL in clear text: {all:#?}");
    let bad = data(&bad_log);
    let mut bad_rcpts: Vec<&str> = bad.iter().filter_map(|d| d["rcpts"][0].as_str()).collect();
    bad_rcpts.sort();
    assert_eq!(bad_rcpts, ["d@testing.test", "e@plain.test"], "{bad:?}");
    assert!(bad.iter().all(|d| d["tls"] == true));
    assert!(events(&bad_log).iter().any(|e| e["event"] == "tls_failed"), "the node tried TLS and gave up");

    // Each policy was fetched once and then came from the cache, attempt after attempt.
    let fetched = events(&https_log);
    for name in policy_names {
        assert_eq!(fetched.iter().filter(|e| e["host"] == name).count(), 1, "{name}: {fetched:?}");
    }
    assert!(node.data.join("mta-sts/badcert.test").exists(), "the policy is cached on disk");

    let page = metrics_page(node.metrics);
    assert!(metric(&page, "sirms_outbound_tls_policy_total{result=\"enforce_failure\"}") >= 6, "{page}");
    assert_eq!(metric(&page, "sirms_outbound_tls_policy_total{result=\"met\"}"), 1, "{page}");
    assert_eq!(metric(&page, "sirms_outbound_tls_policy_total{result=\"testing_failure\"}"), 1, "{page}");
    assert_eq!(metric(&page, "sirms_mta_sts_fetch_failures_total"), 0, "{page}");

    // The policy server goes away and the node restarts: the cached policy still holds.
    https.kill9();
    node.restart();
    let before = attempts(&envelope(&node));
    wait_until("two more attempts", Duration::from_secs(60), || attempts(&envelope(&node)) >= before + 2);
    let all = [events(&good_log), events(&bad_log)].concat();
    assert!(!all.iter().any(|e| e["event"] == "rcpt" && e["rcpt"] == "b@badcert.test"), "{all:#?}");
    assert!(envelope(&node).contains("remote b@badcert.test"));
}

/// Sends one message with `REQUIRETLS`: first on the MX port without TLS (printing the refusal),
/// then as alice over STARTTLS on submission to the recipients argv[4:].
const SEND_REQUIRETLS: &str = r#"
import smtplib, ssl, sys
host, mx, sub = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = smtplib.SMTP(host, mx, timeout=20, source_address=("127.0.32.105", 0))
s.ehlo("client.test")
print("plain", *s.mail("x@remote.test", ["REQUIRETLS"]))
s.quit()
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP(host, sub, timeout=20, source_address=("127.0.32.105", 0))
s.starttls(context=ctx)
s.login("alice@example.test", "alice-pw")
msg = b"From: alice@example.test\r\nSubject: tls only\r\n\r\nsecret\r\n"
print("refused", s.sendmail("alice@example.test", sys.argv[4:], msg, mail_options=["REQUIRETLS"]))
s.quit()
"#;

#[test]
fn requiretls_goes_only_over_checked_tls_to_a_hop_that_offers_it() {
    // This test's own addresses: node .101, client .105, MX hosts .125–.127, DNS .153.
    let (req_mx, noreq_mx, self_mx) =
        (Ipv4Addr::new(127, 0, 32, 125), Ipv4Addr::new(127, 0, 32, 126), Ipv4Addr::new(127, 0, 32, 127));
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path();
    certificates(dir, &[("good", &["mx.req.test", "mx.noreq.test"])], &["mx.self.test"]);
    let zone = format!(
        "$ORIGIN test.\n$TTL 60\n@ IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60\n@ IN NS ns.test.\n\
         ns IN A 127.0.32.153\nreq IN MX 10 mx.req.test.\nmx.req IN A {req_mx}\nnoreq IN MX 10 mx.noreq.test.\n\
         mx.noreq IN A {noreq_mx}\nselfsigned IN MX 10 mx.self.test.\nmx.self IN A {self_mx}\n"
    );
    let (_nsd, dns) = nsd::start(dir, Ipv4Addr::new(127, 0, 32, 153), "test.", &zone);
    let logs = [dir.join("req.log"), dir.join("noreq.log"), dir.join("self.log")];
    let _req = mta(dir, req_mx, "good", &logs[0], "requiretls");
    let _noreq = mta(dir, noreq_mx, "good", &logs[1], "");
    let _self = mta(dir, self_mx, "bad", &logs[2], "requiretls");
    let extra = format!(
        "[outbound]\nretry_initial_secs = 1\nretry_max_secs = 1\nnameservers = [\"{dns}\"]\nextra_ca_file = \"{}\"\n",
        dir.join("ca.pem").display()
    );
    let node = MailNode::start_on([127, 0, 32, 101], "out2.sirms.test", &extra);
    let args: Vec<String> =
        [node.smtp.ip().to_string(), node.smtp.port().to_string(), node.submission.port().to_string()]
            .into_iter()
            .chain(["a@req.test", "b@noreq.test", "c@selfsigned.test"].map(String::from))
            .collect();
    let out = python(SEND_REQUIRETLS, &args);
    assert!(out.contains("plain 530 b'5.7.10 REQUIRETLS needs a session over TLS'"), "{out}");
    assert!(out.contains("refused {}"), "{out}");

    // The hop that offers it over a checked certificate gets it, and is asked for it in turn.
    wait_until("delivery to the REQUIRETLS hop", Duration::from_secs(30), || {
        events(&logs[0]).iter().any(|e| e["event"] == "data")
    });
    let mail: Vec<_> = events(&logs[0]).into_iter().filter(|e| e["event"] == "mail").collect();
    assert_eq!(mail.len(), 1, "{mail:?}");
    assert!(mail[0]["cmd"].as_str().is_some_and(|c| c.ends_with(" REQUIRETLS")), "{mail:?}");
    assert_eq!(mail[0]["tls"], true);

    // The others bounce with 5.7.30, and never see a RCPT of it.
    wait_until("the bounce", Duration::from_secs(30), || !node.inbox("alice@example.test").is_empty());
    let bounce = String::from_utf8_lossy(&node.inbox("alice@example.test")[0]).into_owned();
    for rcpt in ["b@noreq.test", "c@selfsigned.test"] {
        assert!(bounce.contains(&format!("Final-Recipient: rfc822; {rcpt}")), "{bounce}");
    }
    assert_eq!(bounce.matches("Status: 5.7.30").count(), 2, "{bounce}");
    assert!(bounce.contains("REQUIRETLS not offered"), "{bounce}");
    assert!(bounce.contains("UnknownIssuer"), "{bounce}");
    for log in &logs[1..] {
        assert!(events(log).iter().all(|e| e["event"] != "rcpt" && e["event"] != "mail"), "{:?}", events(log));
    }
    wait_until("an empty queue", Duration::from_secs(10), || node.spooled() == 0);
}
