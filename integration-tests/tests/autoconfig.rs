//! Mail clients configure themselves: a real router serving its `[autoconfig]` documents over
//! HTTPS in front of a real node, fetched as the clients fetch them (Python's http.client,
//! the certificate checked against the test CA for the name asked for), and then used as a
//! client would: log in over each advertised IMAP and POP3 endpoint and send over each
//! submission endpoint, so the test proves the advertised settings work, not just that they
//! look right.
//!
//! The public names (`mail.example.test`, `autoconfig.example.test`…) resolve to 127.0.0.1
//! inside the Python client only (its `getaddrinfo` is wrapped), so TLS sees the real names.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sirms_integration_tests::{MailNode, RouterProcess, ctl_ca, free_port, python, wait_for_port};

/// The client side shared by the scripts: names resolved to loopback, a TLS context trusting
/// the test CA only, and `fetch(host, method, path, body, headers)` over HTTPS at the
/// autoconfig port. argv[1] is that port, argv[2] the CA file.
const CLIENT: &str = r#"
import http.client, json, socket, ssl, sys
port, cafile = int(sys.argv[1]), sys.argv[2]
real_getaddrinfo = socket.getaddrinfo
def loopback(host, *args, **kwargs):
    if isinstance(host, str) and host.endswith(".test"):
        host = "127.0.0.1"
    return real_getaddrinfo(host, *args, **kwargs)
socket.getaddrinfo = loopback
ctx = ssl.create_default_context(cafile=cafile)
def fetch(host, method, path, body=None, headers={}):
    c = http.client.HTTPSConnection(host, port, context=ctx, timeout=10)
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    return r.status, r.getheader("Content-Type"), r.read()
"#;

/// Fetches the Thunderbird document and the Autodiscover response for alice, prints what
/// they advertise as JSON, then uses every endpoint: IMAP and POP3 logins, one message sent
/// through each submission endpoint, and the INBOX count at the end.
const USE_ADVERTISED: &str = r#"
import imaplib, poplib, smtplib, xml.etree.ElementTree as ET
address, password = "alice@example.test", "alice-pw"
status, ctype, body = fetch("autoconfig.example.test", "GET", "/mail/config-v1.1.xml?emailaddress=alice%40example.test")
assert status == 200 and ctype.startswith("text/xml"), (status, ctype, body)
provider = ET.fromstring(body).find("emailProvider")
servers = []
for el in list(provider.findall("incomingServer")) + list(provider.findall("outgoingServer")):
    servers.append({
        "type": el.get("type"), "hostname": el.findtext("hostname"), "port": int(el.findtext("port")),
        "socketType": el.findtext("socketType"), "username": el.findtext("username"),
        "authentication": el.findtext("authentication"),
    })

request = ('<?xml version="1.0" encoding="utf-8"?>\n'
    '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">'
    '<Request><EMailAddress>alice@example.test</EMailAddress>'
    '<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>'
    '</Request></Autodiscover>')
status, ctype, body = fetch("autodiscover.example.test", "POST", "/Autodiscover/Autodiscover.xml", request.encode(),
                            {"Content-Type": "text/xml"})
assert status == 200, (status, body)
ns = {"r": "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"}
protocols = []
for p in ET.fromstring(body).findall("r:Response/r:Account/r:Protocol", ns):
    protocols.append({k: p.findtext("r:" + k, namespaces=ns) for k in ("Type", "Server", "Port", "Encryption", "LoginName", "SSL")})

def imap_login(host, port, tls):
    if tls:
        c = imaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=10)
    else:
        c = imaplib.IMAP4(host, port, timeout=10)
        c.starttls(ssl_context=ctx)
    c.login(address, password)
    typ, data = c.select("INBOX")
    assert typ == "OK", data
    c.logout()
    return int(data[0])

def pop3_login(host, port, tls):
    if tls:
        c = poplib.POP3_SSL(host, port, context=ctx, timeout=10)
    else:
        c = poplib.POP3(host, port, timeout=10)
        c.stls(context=ctx)
    c.user(address)
    c.pass_(password)
    count = c.stat()[0]
    c.quit()
    return count

def submit(host, port, tls, subject):
    if tls:
        c = smtplib.SMTP_SSL(host, port, context=ctx, timeout=10)
    else:
        c = smtplib.SMTP(host, port, timeout=10)
        c.starttls(context=ctx)
    c.login(address, password)
    c.sendmail(address, ["alice@example.test"], ("Subject: %s\r\n\r\nconfigured\r\n" % subject).encode())
    c.quit()

used = []
for s in servers:
    login = s["username"].replace("%EMAILADDRESS%", address)
    assert login == address, s
    tls = {"SSL": True, "STARTTLS": False}[s["socketType"]]
    if s["type"] == "imap":
        imap_login(s["hostname"], s["port"], tls)
    elif s["type"] == "pop3":
        pop3_login(s["hostname"], s["port"], tls)
    else:
        submit(s["hostname"], s["port"], tls, "via %s %d" % (s["socketType"], s["port"]))
    used.append("%s %d %s" % (s["type"], s["port"], s["socketType"]))
for p in protocols:
    tls = {"SSL": True, "TLS": False}[p["Encryption"]]
    assert p["LoginName"] == address, p
    if p["Type"] == "IMAP":
        imap_login(p["Server"], int(p["Port"]), tls)
    elif p["Type"] == "POP3":
        pop3_login(p["Server"], int(p["Port"]), tls)
    else:
        submit(p["Server"], int(p["Port"]), tls, "via autodiscover")
    used.append("autodiscover %s %s %s" % (p["Type"], p["Port"], p["Encryption"]))

import time
deadline = time.time() + 10
while True:
    inbox = imap_login("mail.example.test", servers[0]["port"], True)
    if inbox >= 3 or time.time() > deadline:
        break
    time.sleep(0.1)
print(json.dumps({"servers": servers, "protocols": protocols, "used": used, "inbox": inbox}))
"#;

/// A router with `[autoconfig]` (certificate for the public names from the test CA, also
/// given to the node) and one node; `example.test` not yet a domain of the cluster.
struct Setup {
    router: RouterProcess,
    _node: MailNode,
    autoconfig: SocketAddr,
    _tmp: tempfile::TempDir,
    ca_file: String,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = tmp.path().join("ca");
    ctl_ca(&ca, &["init"]);
    let hosts = ["mail.example.test", "autoconfig.example.test", "autodiscover.example.test", "mta-sts.example.test"];
    let mut args = vec!["issue", "node", "public"];
    for host in &hosts {
        args.extend(["--host", host]);
    }
    ctl_ca(&ca, &args);
    let tls =
        |section: &str| format!("[{section}]\ncert = \"{0}/public.pem\"\nkey = \"{0}/public.key\"\n", ca.display());
    let autoconfig: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let router = RouterProcess::start_with(&format!(
        "replicas = 1\n[autoconfig]\nlisten = \"{autoconfig}\"\nhostname = \"mail.example.test\"\n\
         display_name = \"Example <Test> Mail\"\n{}[autoconfig.mta_sts]\nmode = \"enforce\"\nmax_age = 86400\n",
        tls("autoconfig.tls")
    ));
    assert!(wait_for_port(autoconfig, Duration::from_secs(10)), "autoconfig never listened");
    let extra = format!("{}{}", router.node_extra("node1", [127, 0, 0, 1]), tls("tls"));
    let node = MailNode::start_on([127, 0, 0, 1], "node1.example.test", &extra);
    router.wait_nodes(" up ", 1);
    let ca_file = ca.join("ca.pem").display().to_string();
    Setup { router, _node: node, autoconfig, _tmp: tmp, ca_file }
}

impl Setup {
    /// Runs `script` after the client preamble; returns its output.
    fn client(&self, script: &str) -> String {
        python(&[CLIENT, script].concat(), &[self.autoconfig.port().to_string(), self.ca_file.clone()])
    }

    fn add_domain_and_alice(&self) {
        self.router.ctl(&["domains", "add", "example.test"]);
        self.router.ctl(&["users", "add", "alice@example.test", "--password", "alice-pw", "--home", "node1"]);
    }
}

#[test]
fn clients_configured_by_thunderbird_autoconfig_and_autodiscover_log_in_and_send() {
    let s = setup();
    assert!(Path::new(&s.ca_file).exists());
    s.add_domain_and_alice();
    let out = s.client(USE_ADVERTISED);
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let r = &s.router;
    let advertised: Vec<(String, u64, String)> = json["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .map(|v| {
            assert_eq!(v["hostname"], "mail.example.test", "{v}");
            assert_eq!(v["authentication"], "password-cleartext", "{v}");
            (
                v["type"].as_str().unwrap_or_default().to_string(),
                v["port"].as_u64().unwrap_or(0),
                v["socketType"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let want =
        |kind: &str, addr: SocketAddr, socket: &str| (kind.to_string(), u64::from(addr.port()), socket.to_string());
    assert_eq!(
        advertised,
        [
            want("imap", r.imaps, "SSL"),
            want("imap", r.imap, "STARTTLS"),
            want("pop3", r.pop3s, "SSL"),
            want("pop3", r.pop3, "STARTTLS"),
            want("smtp", r.submissions, "SSL"),
            want("smtp", r.submission, "STARTTLS"),
        ],
        "the router's public ports, implicit TLS first, never port 25: {out}"
    );
    let protocols: Vec<String> = json["protocols"]
        .as_array()
        .expect("protocols")
        .iter()
        .map(|p| {
            format!(
                "{} {} {} {}",
                p["Type"].as_str().unwrap_or_default(),
                p["Server"].as_str().unwrap_or_default(),
                p["Port"].as_str().unwrap_or_default(),
                p["Encryption"].as_str().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        protocols,
        [
            format!("IMAP mail.example.test {} SSL", r.imaps.port()),
            format!("POP3 mail.example.test {} SSL", r.pop3s.port()),
            format!("SMTP mail.example.test {} SSL", r.submissions.port()),
        ]
    );
    assert_eq!(json["used"].as_array().map(Vec::len), Some(9), "every endpoint was used: {out}");
    assert_eq!(json["inbox"], 3, "two messages through the Thunderbird endpoints, one through Autodiscover's: {out}");
}

/// The Apple profile, the MTA-STS policy, and what is refused: unknown domains (also one
/// added later, answered at once), wrong methods, oversized bodies.
const DOCUMENTS: &str = r#"
import plistlib
out = {}
def status_of(*args, **kwargs):
    return fetch(*args, **kwargs)[0]
out["before"] = status_of("autoconfig.example.test", "GET", "/mail/config-v1.1.xml?emailaddress=alice%40example.test")
print("asked", flush=True)
input()  # the test adds the domain now
status, ctype, body = fetch("mail.example.test", "GET", "/apple/mobileconfig?emailaddress=alice%40example.test")
assert status == 200, (status, body)
out["apple_type"] = ctype
profile = plistlib.loads(body)
mail = profile["PayloadContent"][0]
out["apple"] = {k: mail[k] for k in ("PayloadType", "EmailAddress", "IncomingMailServerHostName",
    "IncomingMailServerPortNumber", "IncomingMailServerUseSSL", "OutgoingMailServerPortNumber",
    "IncomingMailServerUsername", "PayloadDisplayName")}
out["apple_top"] = profile["PayloadType"]
status, ctype, body = fetch("mta-sts.example.test", "GET", "/.well-known/mta-sts.txt")
out["mta_sts"] = [status, ctype, body.decode()]
out["unknown"] = [
    status_of("autoconfig.example.test", "GET", "/mail/config-v1.1.xml?emailaddress=bob%40unknown.test"),
    status_of("autoconfig.example.test", "GET", "/mail/config-v1.1.xml", headers={"Host": "autoconfig.unknown.test"}),
    status_of("mta-sts.example.test", "GET", "/.well-known/mta-sts.txt", headers={"Host": "mta-sts.unknown.test"}),
    status_of("autodiscover.example.test", "POST", "/autodiscover/autodiscover.xml",
              b"<Request><EMailAddress>bob@unknown.test</EMailAddress></Request>"),
    status_of("mail.example.test", "GET", "/apple/mobileconfig?emailaddress=bob%40unknown.test"),
]
out["refused"] = [
    status_of("mail.example.test", "GET", "/autodiscover/autodiscover.xml"),
    status_of("mail.example.test", "POST", "/autodiscover/autodiscover.xml", b"<Request>" + b"x" * 20000 + b"</Request>"),
    status_of("mail.example.test", "GET", "/mail/config-v1.1.xml?emailaddress=not-an-address"),
    status_of("mail.example.test", "GET", "/nothing-here"),
]
print(json.dumps(out))
"#;

#[test]
fn apple_profile_mta_sts_policy_and_unknown_domains() {
    use std::io::{BufRead, Read, Write};
    use std::process::{Command, Stdio};
    let s = setup();
    // The script stops between its two halves, so the domain is added in between.
    let mut child = Command::new("python3")
        .arg("-c")
        .arg([CLIENT, DOCUMENTS].concat())
        .args([s.autoconfig.port().to_string(), s.ca_file.clone()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "asked", "the first half ran");
    s.add_domain_and_alice();
    child.stdin.take().expect("stdin").write_all(b"go\n").expect("write");
    let mut text = String::new();
    stdout.read_to_string(&mut text).expect("read");
    assert!(child.wait().expect("python3").success(), "python failed: {text}");
    let json: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(json["before"], 404, "a domain the cluster does not host yet: {text}");
    assert_eq!(json["apple_type"], "application/x-apple-aspen-config; charset=utf-8");
    assert_eq!(json["apple_top"], "Configuration");
    let apple = &json["apple"];
    assert_eq!(apple["PayloadType"], "com.apple.mail.managed");
    assert_eq!(apple["EmailAddress"], "alice@example.test");
    assert_eq!(apple["IncomingMailServerUsername"], "alice@example.test");
    assert_eq!(apple["IncomingMailServerHostName"], "mail.example.test");
    assert_eq!(apple["IncomingMailServerPortNumber"], s.router.imaps.port());
    assert_eq!(apple["OutgoingMailServerPortNumber"], s.router.submissions.port());
    assert_eq!(apple["IncomingMailServerUseSSL"], true);
    assert_eq!(apple["PayloadDisplayName"], "Example <Test> Mail", "escaped in the plist, intact once parsed");
    assert_eq!(
        json["mta_sts"],
        serde_json::json!([
            200,
            "text/plain",
            "version: STSv1\r\nmode: enforce\r\nmx: mail.example.test\r\nmax_age: 86400\r\n"
        ])
    );
    assert_eq!(json["unknown"], serde_json::json!([404, 404, 404, 404, 404]), "{text}");
    assert_eq!(json["refused"], serde_json::json!([405, 413, 400, 404]), "{text}");
}
