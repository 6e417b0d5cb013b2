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

/// An MTA with STARTTLS: `python3 -c MTA HOST PORT CERT KEY LOG`. One JSON line per event:
/// `mail`, `rcpt` and `data` with whether TLS was on, `tls_failed` when a handshake broke.
const MTA: &str = r#"
import json, socketserver, ssl, sys, threading
host, port, cert, key, log = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
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
                reply("250-mx\r\n" + ("" if tls else "250-STARTTLS\r\n") + "250 SIZE 10000000")
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
                record(event="mail", tls=tls)
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
    format!(
        r#"$ORIGIN test.
$TTL 60
@ IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60
@ IN NS ns.test.
ns IN A {DNS_IP}
mx.good IN A {GOOD_MX}
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
    let mta = |ip: Ipv4Addr, cert: &str, log: &Path| {
        let args = [ip.to_string(), "25".into(), path(&format!("{cert}.pem")), path(&format!("{cert}.key"))];
        let mut args = args.to_vec();
        args.push(log.display().to_string());
        serve(MTA, &args, SocketAddr::from((ip, 25)), "test MTA")
    };
    let _good = mta(GOOD_MX, "good", &good_log);
    let _bad = mta(BAD_MX, "bad", &bad_log);

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
