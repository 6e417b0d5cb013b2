//! The certificate mail clients see: renewed on disk (a Let's Encrypt renewal, say), it is
//! used for the next handshake with no restart, and sessions already open carry on.

use sirms_integration_tests::{MailNode, ctl_ca, python};

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
def der(path):
    pem = open(path).read()
    return ssl.PEM_cert_to_DER_cert(pem[: pem.index("-----END CERTIFICATE-----") + 25] + "\n")
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
        RENEW,
        &[node.imaps.to_string(), path("first.pem"), path("first.key"), path("second.pem"), path("second.key")],
    );
    assert_eq!(out.trim(), "renewed");
}
