//! Abuse control seen from outside: failed logins are counted per client address across
//! SMTP, IMAP and POP3, a banned client is refused even with the right password, and
//! other clients are not affected.

use sirms_integration_tests::{MailNode, python};

/// Tries one login per line of argv[3:] ("proto:source:password"), printing one outcome line each.
const LOGINS: &str = r#"
import imaplib, poplib, smtplib, sys
port = {"smtp": int(sys.argv[1].split(",")[0]), "imap": int(sys.argv[1].split(",")[1]), "pop3": int(sys.argv[1].split(",")[2])}
user = sys.argv[2]
for attempt in sys.argv[3:]:
    proto, source, password = attempt.split(":", 2)
    try:
        if proto == "smtp":
            s = smtplib.SMTP("127.0.0.1", port["smtp"], source_address=(source, 0), timeout=20)
            s.ehlo("client.test")
            try:
                s.login(user, password)
                print("smtp ok")
            except smtplib.SMTPAuthenticationError as e:
                print("smtp", e.smtp_code, e.smtp_error.decode())
            s.close()
        elif proto == "imap":
            import socket
            sock = socket.create_connection(("127.0.0.1", port["imap"]), timeout=20, source_address=(source, 0))
            class I(imaplib.IMAP4):
                def open(self, host, port, timeout=None):
                    self.host, self.port, self.sock = host, port, sock
                    self.file = sock.makefile("rb")
            m = I("127.0.0.1", port["imap"])
            try:
                m.login(user, password)
                print("imap ok")
            except imaplib.IMAP4.error as e:
                print("imap", e)
            m.shutdown()
        else:
            import socket
            sock = socket.create_connection(("127.0.0.1", port["pop3"]), timeout=20, source_address=(source, 0))
            class P(poplib.POP3):
                def _create_socket(self, timeout):
                    return sock
            p = P("127.0.0.1", port["pop3"])
            try:
                p.user(user)
                p.pass_(password)
                print("pop3 ok")
            except poplib.error_proto as e:
                print("pop3", e.args[0].decode())
            p.close()
    except Exception as e:
        print(proto, "error", type(e).__name__, e)
"#;

fn logins(node: &MailNode, attempts: &[&str]) -> Vec<String> {
    let ports = format!("{},{},{}", node.submission.port(), node.imap.port(), node.pop3.port());
    let mut args = vec![ports, "alice@example.test".to_string()];
    args.extend(attempts.iter().map(|a| a.to_string()));
    python(LOGINS, &args).lines().map(str::to_string).collect()
}

#[test]
fn failed_logins_across_protocols_ban_the_client_and_only_it() {
    let node = MailNode::start(
        "abuse-node.example.test",
        "allow_plaintext_auth = true\n[auth]\nmax_failures_per_ip = 4\nmax_failures_per_account = 100\n",
    );
    let out = logins(
        &node,
        &[
            // smtplib tries AUTH PLAIN, then AUTH LOGIN: two failures.
            "smtp:127.0.0.5:wrong1",
            "imap:127.0.0.5:wrong2",
            "pop3:127.0.0.5:wrong3",
            // Banned now: the right password is refused, on every protocol, unchecked.
            "pop3:127.0.0.5:alice-pw",
            "imap:127.0.0.5:alice-pw",
            "smtp:127.0.0.5:alice-pw",
            // Another client is not affected, nor is the account.
            "imap:127.0.0.6:alice-pw",
            "pop3:127.0.0.6:alice-pw",
        ],
    );
    assert_eq!(out.len(), 8, "{out:#?}");
    assert!(out[0].starts_with("smtp 535"), "{out:#?}");
    assert!(out[1].contains("AUTHENTICATIONFAILED"), "{out:#?}");
    assert!(out[2].starts_with("pop3 -ERR [AUTH]"), "{out:#?}");
    assert_eq!(out[3], "pop3 -ERR [SYS/TEMP] too many failed logins; try again later");
    assert!(out[4].contains("[UNAVAILABLE] too many failed logins; try again later"), "{out:#?}");
    assert_eq!(out[5], "smtp 454 4.7.0 too many failed logins; try again later");
    assert_eq!(out[6..], ["imap ok", "pop3 ok"]);
}
