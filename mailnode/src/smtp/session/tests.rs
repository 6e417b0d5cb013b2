use std::sync::Arc;

use super::*;
use crate::directory::{DirectoryConfig, DirectoryData};

fn directory() -> Arc<dyn Directory> {
    let cfg: DirectoryConfig = toml::from_str(
        r#"
        domains = ["example.test"]
        users = [ { address = "alice@example.test", password = "{plain}pw" },
                  { address = "bob@example.test", password = "{plain}pw" } ]
        [aliases]
        "all@example.test" = ["alice@example.test", "bob@example.test"]
        "ping@example.test" = ["pong@example.test"]
        "pong@example.test" = ["ping@example.test"]
        "#,
    )
    .unwrap();
    Arc::new(DirectoryData::from_config(&cfg).unwrap())
}

fn config(submission: bool) -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        hostname: "node1.example.test".into(),
        submission,
        tls_available: true,
        allow_plaintext_auth: false,
        max_message_size: 1000,
        spill_threshold: usize::MAX,
        max_recipients: 3,
        max_hops: 50,
        max_errors: 8,
        max_auth_failures: 2,
        send_rate: Arc::new(SendRate::new(4, 0)),
        greylisting: false,
    })
}

struct T {
    s: Session,
    out: Vec<u8>,
}

impl T {
    fn new(submission: bool) -> T {
        T::with(config(submission))
    }
    fn with(config: Arc<SessionConfig>) -> T {
        let s = Session::new(config, directory(), "192.0.2.7:40000".parse().unwrap(), false, "id".into());
        T { s, out: Vec::new() }
    }
    /// Feeds bytes as the connection loop does, keeping what the session spills in `spilled`
    /// (a new file on each `first`); returns the flow after the last spill.
    fn feed_spilling(&mut self, input: &[u8], spilled: &mut Vec<Vec<u8>>) -> (Next, String) {
        let mut it = input.iter();
        loop {
            match self.s.process(&mut it, &mut self.out) {
                Next::Spill { first, bytes } => {
                    if first {
                        spilled.clear();
                    }
                    spilled.push(bytes);
                }
                flow => {
                    assert!(it.as_slice().is_empty() || !matches!(flow, Next::NeedInput), "input left over");
                    return (flow, String::from_utf8(std::mem::take(&mut self.out)).unwrap());
                }
            }
        }
    }
    /// Feeds bytes; returns the flow and the replies written so far (then clears them).
    fn feed(&mut self, input: &str) -> (Next, String) {
        self.feed_bytes(input.as_bytes())
    }
    fn feed_bytes(&mut self, input: &[u8]) -> (Next, String) {
        let mut it = input.iter();
        let flow = self.s.process(&mut it, &mut self.out);
        assert!(it.as_slice().is_empty() || !matches!(flow, Next::NeedInput), "input left over");
        (flow, String::from_utf8(std::mem::take(&mut self.out)).unwrap())
    }
    fn complete(&mut self, o: Outcome) -> (Next, String) {
        let flow = self.s.complete(o, &mut self.out);
        (flow, String::from_utf8(std::mem::take(&mut self.out)).unwrap())
    }
}

#[test]
fn greeting_and_ehlo_name_the_node() {
    let mut t = T::new(false);
    assert_eq!(t.s.greeting(), b"220 node1.example.test ESMTP SIRMS ready\r\n");
    let (flow, out) = t.feed("EHLO client.test\r\n");
    assert_eq!(flow, Next::NeedInput);
    assert!(out.starts_with("250-node1.example.test greets [192.0.2.7]\r\n"), "{out}");
    for ext in ["PIPELINING", "SIZE 1000", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", "DSN", "STARTTLS"]
    {
        assert!(out.contains(ext), "{ext} missing: {out}");
    }
    // AUTH is not offered before TLS.
    assert!(!out.contains("AUTH"));
}

#[test]
fn pipelined_transaction_delivers() {
    let mut t = T::new(false);
    t.feed("EHLO c\r\n");
    let (flow, out) =
        t.feed("MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<all@example.test>\r\nDATA\r\n");
    assert_eq!(flow, Next::NeedInput);
    assert_eq!(
        out,
        "250 2.1.0 sender OK\r\n250 2.1.5 recipient OK\r\n250 2.1.5 recipient OK\r\n354 end data with <CR><LF>.<CR><LF>\r\n"
    );
    let (flow, out) = t.feed("Subject: hi\r\n\r\n..dot line\r\nbody\r\n.\r\n");
    assert_eq!(out, "");
    let Next::Action(Action::Deliver { id, envelope, message: Data::Whole(message) }) = flow else {
        panic!("{flow:?}")
    };
    assert_eq!(id, "id.1");
    assert_eq!(envelope.from, "x@remote.test");
    assert_eq!(envelope.users, vec!["alice@example.test", "bob@example.test"]);
    let text = String::from_utf8(message).unwrap();
    assert!(
        text.starts_with("Return-Path: <x@remote.test>\r\nReceived: from c ([192.0.2.7])\r\n\tby node1.example.test (SIRMS) with ESMTP id id.1;"),
        "{text}"
    );
    assert!(text.ends_with("\r\nSubject: hi\r\n\r\n.dot line\r\nbody\r\n"), "{text:?}");
    let (flow, out) = t.complete(Outcome::Delivered(true));
    assert_eq!(flow, Next::NeedInput);
    assert_eq!(out, "250 2.0.0 OK delivered as id.1\r\n");
    let (flow, out) = t.feed("QUIT\r\n");
    assert_eq!((flow, out.as_str()), (Next::Close, "221 2.0.0 bye\r\n"));
}

#[test]
fn dsn_parameters_travel_with_the_envelope() {
    let mut t = T::new(false);
    t.feed("EHLO c\r\n");
    let (_, out) = t.feed("MAIL FROM:<x@remote.test> RET=HDRS RET=FULL\r\n");
    assert!(out.starts_with("501 5.5.4"), "one RET: {out}");
    let (_, out) = t.feed("MAIL FROM:<x@remote.test> RET=FULL ENVID=QQ+2B314\r\n");
    assert_eq!(out, "250 2.1.0 sender OK\r\n");
    let (_, out) = t.feed("RCPT TO:<alice@example.test> NOTIFY=NEVER,SUCCESS\r\n");
    assert!(out.starts_with("501 5.5.4"), "NEVER alone: {out}");
    let (_, out) = t.feed("RCPT TO:<all@example.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;All+40example.test\r\n");
    assert_eq!(out, "250 2.1.5 recipient OK\r\n");
    let (_, out) = t.feed("RCPT TO:<alice@example.test> NOTIFY=NEVER\r\nDATA\r\n");
    assert!(out.ends_with("354 end data with <CR><LF>.<CR><LF>\r\n"), "{out}");
    let (flow, _) = t.feed("Subject: hi\r\n\r\nbody\r\n.\r\n");
    let Next::Action(Action::Deliver { envelope, .. }) = flow else { panic!("{flow:?}") };
    let dsn = &envelope.dsn;
    assert_eq!((dsn.ret, dsn.envid.as_deref()), (Some(super::super::dsn::Ret::Full), Some("QQ+314")));
    // The alias's users are told of as the alias asked; alice was reached by the alias first.
    let bob = dsn.rcpt("bob@example.test");
    assert!(bob.notify.success() && bob.notify.delay() && !bob.notify.failure());
    assert_eq!(bob.orcpt.as_deref(), Some("All@example.test"));
    assert!(dsn.rcpt("alice@example.test").notify.success());
}

#[test]
fn bare_lf_dot_does_not_end_data() {
    let mut t = T::new(false);
    t.feed("EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n");
    // Smuggling attempts: "\n.\n", "\n.\r\n" and "\r\n.\n" are not the end of data.
    let (flow, _) = t.feed("a\n.\nMAIL FROM:<evil@x>\r\nb\n.\r\nc\r\n.\nd\r\n");
    assert_eq!(flow, Next::NeedInput);
    let (flow, _) = t.feed(".\r\n");
    let Next::Action(Action::Deliver { message: Data::Whole(message), .. }) = flow else { panic!("{flow:?}") };
    let text = String::from_utf8(message).unwrap();
    // A dot after CRLF is transparency (RFC 5321 §4.5.2) and is removed; it ends nothing.
    assert!(text.ends_with("a\n.\nMAIL FROM:<evil@x>\r\nb\n.\r\nc\r\n\nd\r\n"), "{text:?}");
}

#[test]
fn limits_and_policy() {
    let mut t = T::new(false);
    t.feed("EHLO c\r\n");
    let (_, out) = t.feed("MAIL FROM:<a@b.test> SIZE=5000\r\n");
    assert_eq!(out, "552 5.3.4 message size exceeds fixed limit\r\n");
    let (_, out) = t.feed("MAIL FROM:<a@b.test>\r\nRCPT TO:<x@remote.test>\r\nRCPT TO:<nobody@example.test>\r\n");
    assert_eq!(out, "250 2.1.0 sender OK\r\n554 5.7.1 relay access denied\r\n550 5.1.1 no such user here\r\n");
    let (_, out) = t.feed("RCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nRCPT TO:<all@example.test>\r\nRCPT TO:<alice@example.test>\r\n");
    assert!(out.ends_with("452 4.5.3 too many recipients\r\n"), "{out}");
    t.feed("DATA\r\n");
    let big = "x".repeat(700);
    let (flow, out) = t.feed(&format!("{big}\r\n{big}\r\n.\r\n"));
    assert_eq!(out, "552 5.3.4 message size exceeds fixed limit\r\n");
    assert_eq!(flow, Next::NeedInput);
    // The session goes on after the violation.
    let (_, out) = t.feed("NOOP\r\n");
    assert_eq!(out, "250 2.0.0 OK\r\n");
}

#[test]
fn sequence_errors_and_error_limit() {
    let mut t = T::new(false);
    let (_, out) = t.feed("MAIL FROM:<a@b>\r\n");
    assert_eq!(out, "503 5.5.1 bad sequence of commands: send EHLO first\r\n");
    let (_, out) = t.feed("HELO c\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n");
    assert_eq!(
        out,
        "250 node1.example.test greets [192.0.2.7]\r\n503 5.5.1 bad sequence of commands: need MAIL before RCPT\r\n503 5.5.1 bad sequence of commands: need MAIL before DATA\r\n"
    );
    let (flow, out) = t.feed("FOO\r\nBAR\r\nBAZ\r\nA\r\nB\r\nC\r\n");
    assert_eq!(flow, Next::Close);
    assert!(out.ends_with("421 4.7.0 too many errors, closing connection\r\n"), "{out}");
}

#[test]
fn garbage_and_long_lines_get_errors() {
    let mut t = T::new(false);
    let (_, out) = t.feed_bytes(b"\0\xff\xfe garbage\r\n");
    assert!(out.starts_with("500 5.5.2"), "{out}");
    let long = format!("NOOP {}\r\n", "a".repeat(5000));
    let (_, out) = t.feed(&long);
    assert!(out.contains("500 5.5.2 line too long"), "{out}");
}

#[test]
fn submission_requires_tls_then_auth() {
    let mut t = T::new(true);
    t.feed("EHLO c\r\n");
    let (_, out) = t.feed("MAIL FROM:<alice@example.test>\r\n");
    assert_eq!(out, "530 5.7.0 must issue a STARTTLS command first\r\n");
    let (_, out) = t.feed("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABwdw==\r\n");
    assert!(out.starts_with("538 5.7.11"), "{out}");
    let (flow, out) = t.feed("STARTTLS\r\n");
    assert_eq!(out, "220 2.0.0 ready to start TLS\r\n");
    assert_eq!(flow, Next::Action(Action::StartTls));
    t.complete(Outcome::TlsStarted);
    // After TLS the client must say EHLO again.
    let (_, out) = t.feed("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABwdw==\r\n");
    assert!(out.starts_with("503"), "{out}");
    let (_, out) = t.feed("EHLO c\r\n");
    assert!(out.contains("AUTH PLAIN LOGIN") && !out.contains("STARTTLS"), "{out}");
    let (flow, _) = t.feed("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABwdw==\r\n");
    assert_eq!(flow, Next::Action(Action::Authenticate { login: "alice@example.test".into(), password: "pw".into() }));
    let (_, out) = t.complete(Outcome::Authenticated(Some("alice@example.test".into())));
    assert_eq!(out, "235 2.7.0 authentication succeeded\r\n");
    assert_eq!(t.s.login(), Some("alice@example.test"));
    let (_, out) = t.feed("MAIL FROM:<bob@example.test>\r\n");
    assert_eq!(out, "553 5.7.1 sender address not owned by the authenticated user\r\n");
    let (_, out) = t.feed("MAIL FROM:<alice@example.test>\r\nRCPT TO:<someone@remote.test>\r\n");
    assert_eq!(out, "250 2.1.0 sender OK\r\n250 2.1.5 recipient OK\r\n");
    t.feed("DATA\r\n");
    let (flow, _) = t.feed("Subject: out\r\n\r\nbye\r\n.\r\n");
    let Next::Action(Action::Deliver { envelope, .. }) = flow else { panic!("{flow:?}") };
    assert_eq!(envelope.users, Vec::<String>::new());
    assert_eq!(envelope.remote, vec!["someone@remote.test"]);
}

#[test]
fn auth_login_and_failures() {
    let mut t = T::new(false);
    t.feed("EHLO c\r\n");
    t.feed("STARTTLS\r\n");
    t.complete(Outcome::TlsStarted);
    t.feed("EHLO c\r\n");
    let (_, out) = t.feed("AUTH LOGIN\r\n");
    assert_eq!(out, "334 VXNlcm5hbWU6\r\n");
    let (_, out) = t.feed("YWxpY2VAZXhhbXBsZS50ZXN0\r\n");
    assert_eq!(out, "334 UGFzc3dvcmQ6\r\n");
    let (flow, _) = t.feed("d3Jvbmc=\r\n");
    assert_eq!(
        flow,
        Next::Action(Action::Authenticate { login: "alice@example.test".into(), password: "wrong".into() })
    );
    let (_, out) = t.complete(Outcome::Authenticated(None));
    assert_eq!(out, "535 5.7.8 authentication credentials invalid\r\n");
    let (_, out) = t.feed("AUTH PLAIN\r\n");
    assert_eq!(out, "334 \r\n");
    let (_, out) = t.feed("*\r\n");
    assert_eq!(out, "501 5.7.0 authentication cancelled\r\n");
    let (_, out) = t.feed("AUTH PLAIN !!!notbase64\r\n");
    assert!(out.starts_with("501"), "{out}");
    let (flow, out) = t.feed("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdA==\r\n");
    assert_eq!(flow, Next::Close);
    assert!(out.ends_with("421 4.7.0 too many errors, closing connection\r\n"), "{out}");
}

#[test]
fn bdat_chunks() {
    let mut t = T::new(false);
    t.feed("EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.test>\r\n");
    let (_, out) = t.feed("BDAT 6\r\nHello\n");
    assert_eq!(out, "250 2.0.0 6 octets received\r\n");
    let (_, out) = t.feed("DATA\r\n");
    assert!(out.starts_with("503"), "{out}");
    let (flow, _) = t.feed("BDAT 7 LAST\r\nWorld\r\n");
    let Next::Action(Action::Deliver { message: Data::Whole(message), .. }) = flow else { panic!("{flow:?}") };
    assert!(message.ends_with(b"\r\nHello\nWorld\r\n"));
    t.complete(Outcome::Delivered(true));
    // A BDAT without a transaction still consumes its bytes.
    let (_, out) = t.feed("BDAT 4 LAST\r\nQUITNOOP\r\n");
    assert_eq!(out, "503 5.5.1 bad sequence of commands: need MAIL before BDAT\r\n250 2.0.0 OK\r\n");
}

/// smtp-proto reads `1000000000000000000005` as 5; the chunk must not end after "hello".
#[test]
fn bdat_size_past_usize_never_ends_the_chunk() {
    let mut t = T::new(false);
    t.feed("EHLO c\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\n");
    let (flow, out) = t.feed("BDAT 1000000000000000000005 LAST\r\nhelloNOOP\r\nQUIT\r\n");
    assert_eq!((flow, out.as_str()), (Next::NeedInput, ""));
    let (flow, out) = t.feed_bytes(&vec![b'x'; 5000]);
    assert_eq!((flow, out.as_str()), (Next::NeedInput, ""));
    // Without a transaction, with the largest usize, and without LAST: the same.
    for line in ["BDAT 18446744073709551615 LAST\r\n", "bdat 99999999999999999999999\r\n"] {
        let mut t = T::new(false);
        t.feed("EHLO c\r\n");
        let (flow, out) = t.feed(&format!("{line}NOOP\r\n"));
        assert_eq!((flow, out.as_str()), (Next::NeedInput, ""), "{line}");
    }
    assert_eq!(endless_bdat(b"BDAT 18446744073709551614 LAST\r\n"), None);
    assert_eq!(endless_bdat(b"BDAT 99999999999999999999 LAST\r\n"), Some(true));
    assert_eq!(endless_bdat(b"BDAT 99999999999999999999 MORE\r\n"), None);
    assert_eq!(endless_bdat(b"MAIL FROM:<a@b> SIZE=99999999999999999999\r\n"), None);
}

#[test]
fn endless_line_is_bounded() {
    let mut t = T::new(false);
    let chunk = "A".repeat(10_000);
    for _ in 0..5 {
        let (flow, out) = t.feed(&chunk);
        assert_eq!((flow, out.as_str()), (Next::NeedInput, ""));
    }
    let (_, out) = t.feed("\r\nNOOP\r\n");
    assert_eq!(out, "500 5.5.2 line too long\r\n250 2.0.0 OK\r\n");
}

#[test]
fn postmaster_always_exists() {
    let mut t = T::new(false);
    t.feed("EHLO c\r\nMAIL FROM:<x@remote.test>\r\n");
    let (_, out) = t.feed("RCPT TO:<postmaster>\r\nRCPT TO:<Postmaster@Example.TEST>\r\n");
    assert_eq!(out, "250 2.1.5 recipient OK\r\n250 2.1.5 recipient OK\r\n");
}

/// Feeds `input` in pieces of `size` bytes and returns every reply.
fn replies_in_pieces(input: &[u8], size: usize) -> String {
    let mut t = T::new(false);
    let mut all = String::new();
    for piece in input.chunks(size) {
        all += &t.feed_bytes(piece).1;
    }
    all
}

#[test]
fn a_bad_line_never_swallows_the_next() {
    let mut t = T::new(false);
    t.feed("EHLO c\r\n");
    // smtp-proto, given more than one line, would read past a colon-less MAIL FROM.
    let (_, out) = t.feed("MAIL FROM <x@remote.test>\r\nNOOP\r\n");
    assert!(out.starts_with("5") && out.ends_with("\r\n250 2.0.0 OK\r\n"), "{out}");
    assert_eq!(out.matches("\r\n").count(), 2, "{out}");
    let (_, out) = t.feed("AUTH \x0cPLAIN\r\nNOOP\r\n");
    assert_eq!(out.matches("\r\n").count(), 2, "{out}");
    assert!(out.ends_with("\r\n250 2.0.0 OK\r\n"), "{out}");
}

#[test]
fn replies_do_not_depend_on_how_tcp_splits_the_input() {
    let mut input = b"EHLO c\r\nMAIL FROM x\r\nNOOP\r\n".to_vec();
    input.extend(format!("NOOP {}\r\n", "a".repeat(MAX_COMMAND_LINE - 6)).as_bytes()); // one byte over
    input.extend(format!("NOOP {}\r\n", "a".repeat(MAX_COMMAND_LINE - 7)).as_bytes()); // just fits
    input.extend(b"AUTH \x0c\r\nQUIT\r\n");
    let whole = replies_in_pieces(&input, input.len());
    assert!(whole.contains("500 5.5.2 line too long\r\n250 2.0.0 OK\r\n"), "{whole}");
    assert!(whole.ends_with("221 2.0.0 bye\r\n"), "{whole}");
    for size in [1, 2, 3, 7, 100, 2047, 2048, 2049] {
        assert_eq!(replies_in_pieces(&input, size), whole, "pieces of {size}");
    }
}

#[test]
fn control_characters_in_addresses_are_refused() {
    let mut t = T::new(false);
    t.feed("EHLO c\r\n");
    let (_, out) = t.feed("MAIL FROM:<\x7f@remote.test>\r\n");
    assert_eq!(out, "553 5.1.7 bad sender address syntax\r\n");
    let (_, out) = t.feed("MAIL FROM:<x@>\r\n");
    assert!(out.starts_with("553 5.1.7"), "{out}");
    t.feed("MAIL FROM:<x@remote.test>\r\n");
    let (_, out) = t.feed("RCPT TO:<alice\u{85}@example.test>\r\n");
    assert!(out.starts_with("553 5.1.3") || out.starts_with("501"), "{out}");
}

/// Issue 28: a message that arrives with more hops than the limit is a mail loop (554 5.4.6 at
/// the end of the data, nothing delivered); at the limit it is delivered; by BDAT the same.
#[test]
fn too_many_hops_is_a_loop() {
    let mut t = T::new(false);
    t.feed("EHLO c\r\n");
    let at_limit = format!("{}Subject: x\r\n\r\nReceived: in the body\r\n.\r\n", "Received: from x\r\n".repeat(49));
    let at_limit = format!("Delivered-To: a@example.test\r\n{at_limit}");
    let over = format!("Received: from y\r\n\tby z\r\n{at_limit}");
    t.feed("MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n");
    let (flow, _) = t.feed(&at_limit);
    assert!(matches!(flow, Next::Action(Action::Deliver { .. })), "{flow:?}");
    t.complete(Outcome::Delivered(true));
    t.feed("MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n");
    let (flow, out) = t.feed(&over);
    assert_eq!(flow, Next::NeedInput);
    assert_eq!(out, "554 5.4.6 too many hops (more than 50 Received headers): mail loop\r\n");
    let body = over.strip_suffix(".\r\n").unwrap();
    let (flow, out) = t.feed(&format!(
        "MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\nBDAT {} LAST\r\n{body}",
        body.len()
    ));
    assert_eq!(flow, Next::NeedInput);
    assert!(out.ends_with("554 5.4.6 too many hops (more than 50 Received headers): mail loop\r\n"), "{out}");
}

/// Issue 28: aliases that lead back to themselves are a routing loop (550 5.4.6), not an
/// unknown user (5.1.1), and the reply does not reveal the chain.
#[test]
fn alias_loop_is_refused_as_a_routing_loop() {
    let mut t = T::new(false);
    t.feed("EHLO c\r\nMAIL FROM:<x@remote.test>\r\n");
    let (_, out) = t.feed("RCPT TO:<ping@example.test>\r\n");
    assert_eq!(out, "550 5.4.6 routing loop detected: the recipient's aliases lead back to themselves\r\n");
    assert!(!out.contains("pong"));
    let (_, out) = t.feed("RCPT TO:<nobody@example.test>\r\n");
    assert_eq!(out, "550 5.1.1 no such user here\r\n");
}

/// Logs alice in on a submission session.
fn submission_as_alice() -> T {
    let mut t = T::new(true);
    t.feed("EHLO c\r\nSTARTTLS\r\n");
    t.complete(Outcome::TlsStarted);
    t.feed("EHLO c\r\nAUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABwdw==\r\n");
    t.complete(Outcome::Authenticated(Some("alice@example.test".into())));
    t
}

#[test]
fn an_authenticated_sender_meets_the_hourly_recipient_limit_and_an_mx_client_does_not() {
    // The test config allows 4 recipients an hour per login.
    let mut t = submission_as_alice();
    let (_, out) = t.feed("MAIL FROM:<alice@example.test>\r\nRCPT TO:<a@remote.test>\r\nRCPT TO:<b@remote.test>\r\nRCPT TO:<bob@example.test>\r\n");
    assert_eq!(out.matches("250 2.1.5").count(), 3, "{out}");
    t.feed("RSET\r\n");
    let (_, out) = t.feed("MAIL FROM:<alice@example.test>\r\nRCPT TO:<c@remote.test>\r\nRCPT TO:<d@remote.test>\r\n");
    assert_eq!(
        out,
        "250 2.1.0 sender OK\r\n250 2.1.5 recipient OK\r\n\
         450 4.7.1 sending rate limit reached (4 recipients an hour for this account); try again later\r\n"
    );
    // The MX takes mail for local users from anyone, without counting.
    let mut mx = T::new(false);
    mx.feed("EHLO c\r\n");
    for _ in 0..3 {
        let (_, out) = mx.feed(
            "MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nRSET\r\n",
        );
        assert_eq!(out.matches("250 2.1.5").count(), 2, "{out}");
    }
}

#[test]
fn greylisting_asks_for_each_local_recipient_and_defers_only_that_one() {
    let config = Arc::new(SessionConfig { greylisting: true, ..SessionConfig::clone(&config(false)) });
    let mut t = T {
        s: Session::new(config, directory(), "192.0.2.7:40000".parse().unwrap(), false, "id".into()),
        out: Vec::new(),
    };
    t.feed("EHLO c\r\n");
    // Pipelined: each RCPT waits for its answer, the rest of the input for the loop.
    let mut input = b"MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<nobody@example.test>\r\nRCPT TO:<all@example.test>\r\nDATA\r\n".iter();
    let flow = t.s.process(&mut input, &mut t.out);
    let ask = |rcpt: &str| Next::Action(Action::Greylist { from: "x@remote.test".into(), rcpt: rcpt.into() });
    assert_eq!(flow, ask("alice@example.test"));
    let deferred = Reply::new(451, "4.7.1", "greylisted");
    t.s.complete(Outcome::Greylist(Some(deferred)), &mut t.out);
    let flow = t.s.process(&mut input, &mut t.out);
    assert_eq!(flow, ask("all@example.test"), "an unknown user is refused without asking");
    t.s.complete(Outcome::Greylist(None), &mut t.out);
    let flow = t.s.process(&mut input, &mut t.out);
    assert_eq!(flow, Next::NeedInput);
    let out = String::from_utf8(std::mem::take(&mut t.out)).unwrap();
    assert_eq!(
        out,
        "250 2.1.0 sender OK\r\n451 4.7.1 greylisted\r\n550 5.1.1 no such user here\r\n250 2.1.5 recipient OK\r\n354 end data with <CR><LF>.<CR><LF>\r\n"
    );
    let (flow, _) = t.feed("hi\r\n.\r\n");
    let Next::Action(Action::Deliver { envelope, .. }) = flow else { panic!("{flow:?}") };
    assert_eq!(
        envelope.users,
        vec!["alice@example.test", "bob@example.test"],
        "the alias `all`, not the deferred alice"
    );
}

#[test]
fn greylisting_never_asks_about_a_logged_in_sender() {
    let config = Arc::new(SessionConfig { greylisting: true, ..SessionConfig::clone(&config(false)) });
    let mut t = T {
        s: Session::new(config, directory(), "192.0.2.7:40000".parse().unwrap(), true, "id".into()),
        out: Vec::new(),
    };
    t.feed("EHLO c\r\n");
    let (flow, _) = t.feed("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABwdw==\r\n");
    assert!(matches!(flow, Next::Action(Action::Authenticate { .. })), "{flow:?}");
    t.complete(Outcome::Authenticated(Some("alice@example.test".into())));
    let (flow, out) = t.feed("MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n");
    assert_eq!(flow, Next::NeedInput);
    assert!(out.ends_with("250 2.1.5 recipient OK\r\n"), "{out}");
}

#[test]
fn deferred_recipients_count_towards_the_limit() {
    let config = Arc::new(SessionConfig { greylisting: true, ..SessionConfig::clone(&config(false)) });
    let mut t = T {
        s: Session::new(config, directory(), "192.0.2.7:40000".parse().unwrap(), false, "id".into()),
        out: Vec::new(),
    };
    t.feed("EHLO c\r\nMAIL FROM:<x@remote.test>\r\n");
    for _ in 0..3 {
        let (flow, _) = t.feed("RCPT TO:<alice@example.test>\r\n");
        assert!(matches!(flow, Next::Action(Action::Greylist { .. })), "{flow:?}");
        t.complete(Outcome::Greylist(Some(Reply::new(451, "4.7.1", "greylisted"))));
    }
    let (flow, out) = t.feed("RCPT TO:<bob@example.test>\r\n");
    assert_eq!(flow, Next::NeedInput, "max_recipients (3) reached: not asked");
    assert!(out.starts_with("452"), "{out}");
}

/// A session that spills past 100 octets, within a 1,000-octet limit.
fn spilling() -> T {
    let mut t = T::with(Arc::new(SessionConfig { spill_threshold: 100, ..SessionConfig::clone(&config(false)) }));
    t.feed("EHLO c\r\n");
    t
}

/// Issue 28: data past the threshold leaves the session in chunks as it arrives; the session
/// holds at most the threshold and one input, and what it hands out is the message it would
/// have delivered whole.
#[test]
fn large_data_is_spilled_as_it_arrives() {
    let mut t = spilling();
    let mut spilled = Vec::new();
    t.feed("MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n");
    let line = "..0123456789abcdefghijklmnopqrstuvwxyz\r\n";
    let (flow, _) = t.feed_spilling(b"Subject: big\r\n\r\n", &mut spilled);
    assert_eq!(flow, Next::NeedInput);
    for _ in 0..20 {
        let (flow, out) = t.feed_spilling(line.as_bytes(), &mut spilled);
        assert_eq!((flow, out.as_str()), (Next::NeedInput, ""));
    }
    let (flow, out) = t.feed_spilling(b".\r\n", &mut spilled);
    assert_eq!(out, "");
    let Next::Action(Action::Deliver { message: Data::Spilled { head, tail }, .. }) = flow else { panic!("{flow:?}") };
    assert!(spilled.len() >= 5, "{} chunks", spilled.len());
    assert!(spilled.iter().all(|c| c.len() >= 100 && c.len() < 100 + line.len()), "chunk sizes");
    assert!(String::from_utf8(head).unwrap().starts_with("Return-Path: <x@remote.test>\r\nReceived: from c"));
    let data = [spilled.concat(), tail].concat();
    let want = format!("Subject: big\r\n\r\n{}", line[1..].repeat(20));
    assert_eq!(String::from_utf8(data).unwrap(), want);
    let (_, out) = t.complete(Outcome::Delivered(true));
    assert_eq!(out, "250 2.0.0 OK delivered as id.1\r\n");
}

/// The size limit counts spilled octets: past it the same 552 as for a message held whole,
/// and nothing more is spilled.
#[test]
fn spilled_data_meets_the_size_limit() {
    let mut t = spilling();
    let mut spilled = Vec::new();
    t.feed("MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n");
    for _ in 0..19 {
        t.feed_spilling(&[b'y'; 48], &mut spilled);
        t.feed_spilling(b"\r\n", &mut spilled);
    }
    let before = spilled.concat().len();
    assert!(before <= 1000, "{before}");
    let (flow, out) = t.feed_spilling(&[b"z".repeat(500), b"\r\n.\r\n".to_vec()].concat(), &mut spilled);
    assert_eq!((flow, out.as_str()), (Next::NeedInput, "552 5.3.4 message size exceeds fixed limit\r\n"));
    assert_eq!(spilled.concat().len(), before);
    // By BDAT: the octet count includes what was spilled.
    t.feed("MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\n");
    let (_, out) = t.feed_spilling(&[b"BDAT 150\r\n".as_slice(), &[b'a'; 150]].concat(), &mut spilled);
    assert_eq!(out, "250 2.0.0 150 octets received\r\n");
    let (_, out) = t.feed_spilling(&[b"BDAT 150\r\n".as_slice(), &[b'b'; 150]].concat(), &mut spilled);
    assert_eq!(out, "250 2.0.0 300 octets received\r\n");
    let (flow, _) = t.feed_spilling(b"BDAT 2 LAST\r\nc\n", &mut spilled);
    let Next::Action(Action::Deliver { message: Data::Spilled { tail, .. }, .. }) = flow else { panic!("{flow:?}") };
    let data = [spilled.concat(), tail].concat();
    assert_eq!(data, [[b'a'; 150].as_slice(), &[b'b'; 150], b"c\n"].concat());
}

/// The hops of a spilled message are counted across its chunks, as if it came whole.
#[test]
fn hops_are_counted_across_spilled_chunks() {
    let config =
        SessionConfig { spill_threshold: 2000, max_message_size: 100_000, ..SessionConfig::clone(&config(false)) };
    let mut t = T::with(Arc::new(config));
    let mut spilled = Vec::new();
    t.feed("EHLO c\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n");
    t.feed_spilling("Received: from x\r\n".repeat(51).as_bytes(), &mut spilled);
    t.feed_spilling(b"\r\n", &mut spilled);
    for _ in 0..100 {
        t.feed_spilling(&[b'x'; 100], &mut spilled);
    }
    let (flow, out) = t.feed_spilling(b"\r\n.\r\n", &mut spilled);
    assert!(!spilled.is_empty());
    assert_eq!(
        (flow, out.as_str()),
        (Next::NeedInput, "554 5.4.6 too many hops (more than 50 Received headers): mail loop\r\n")
    );
}

#[test]
fn requiretls_is_for_tls_sessions_and_travels_with_the_envelope() {
    let mut t = T::new(false);
    let (_, out) = t.feed("EHLO c\r\n");
    assert!(!out.contains("REQUIRETLS"), "offered only over TLS: {out}");
    let (_, out) = t.feed("MAIL FROM:<x@remote.test> REQUIRETLS\r\n");
    assert_eq!(out, "530 5.7.10 REQUIRETLS needs a session over TLS\r\n");
    let (flow, _) = t.feed("STARTTLS\r\n");
    assert_eq!(flow, Next::Action(Action::StartTls));
    t.complete(Outcome::TlsStarted);
    let (_, out) = t.feed("EHLO c\r\n");
    assert!(out.contains("REQUIRETLS"), "{out}");
    let (_, out) = t.feed("MAIL FROM:<x@remote.test> REQUIRETLS\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n");
    assert!(out.starts_with("250 2.1.0") && out.ends_with("354 end data with <CR><LF>.<CR><LF>\r\n"), "{out}");
    let (flow, _) = t.feed("Subject: hi\r\n\r\nbody\r\n.\r\n");
    let Next::Action(Action::Deliver { envelope, .. }) = flow else { panic!("{flow:?}") };
    assert!(envelope.requiretls);
}
