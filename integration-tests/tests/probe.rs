//! `sirms probe tcp` (the containers' healthcheck) against a real `sirms node`: its SMTP,
//! POP3 and IMAP greetings pass, a closed port and a wrong greeting fail with one line.

use std::process::{Command, Output};

use sirms_integration_tests::{MailNode, free_port, sirms_bin};

fn probe(args: &[&str]) -> Output {
    Command::new(sirms_bin()).arg("probe").args(args).env("RUST_LOG", "warn").output().expect("run sirms probe")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn probe_greetings_and_closed_ports() {
    let node = MailNode::start("node1.example.test", "");
    for (addr, expect, send) in
        [(node.smtp, "220 ", "QUIT"), (node.pop3, "+OK", "QUIT"), (node.imap, "* OK", "a LOGOUT")]
    {
        let addr = addr.to_string();
        let out = probe(&["tcp", &addr, "--expect", expect, "--send", send]);
        assert!(out.status.success(), "{addr} {expect:?}: {} {}", text(&out.stdout), text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(stdout.starts_with(&format!("ok: {addr} greets \"{expect}")), "{stdout}");
        assert!(stdout.contains("node1.example.test"), "{stdout}");
    }
    // A TLS port without --expect: the connection alone counts.
    let out = probe(&["tcp", &node.pop3s.to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let wrong = probe(&["tcp", &node.smtp.to_string(), "--expect", "+OK"]);
    assert_eq!(wrong.status.code(), Some(1));
    let reason = text(&wrong.stderr);
    assert!(reason.contains("does not start with \"+OK\""), "{reason}");
    assert_eq!(reason.trim_end().lines().count(), 1, "{reason}");

    let closed = format!("127.0.0.1:{}", free_port());
    let out = probe(&["tcp", &closed, "--expect", "220 ", "--timeout", "2"]);
    assert_eq!(out.status.code(), Some(1));
    let reason = text(&out.stderr);
    assert!(reason.starts_with(&format!("probe failed: {closed}: connect")), "{reason}");
    assert_eq!(reason.trim_end().lines().count(), 1, "{reason}");
}

#[test]
fn probe_sleep_ends() {
    let start = std::time::Instant::now();
    let out = probe(&["sleep", "1"]);
    assert!(out.status.success());
    assert!(start.elapsed() >= std::time::Duration::from_secs(1));
}
