//! Session tests: a miniature driver and fake store replay RFC 1939 sessions and the edge cases around them.

use super::*;

const MSG1: &[u8] = b"From: a@example.org\r\nSubject: one\r\n\r\nfirst line\r\n.dot line\r\nlast\r\n";
const MSG2: &[u8] = b"Subject: two\r\n\r\nno final crlf";

/// A store behind the driver, answering actions the way a real one would.
struct FakeStore {
    uid_validity: u32,
    messages: Vec<(u32, Vec<u8>)>,
    locked_elsewhere: bool,
    fail: Option<&'static str>,
    commits: Vec<Vec<u32>>,
    fetches: Vec<(u32, Option<u32>)>,
}

impl FakeStore {
    fn with(messages: &[(u32, &[u8])]) -> Self {
        FakeStore {
            uid_validity: 1234,
            messages: messages.iter().map(|(uid, bytes)| (*uid, bytes.to_vec())).collect(),
            locked_elsewhere: false,
            fail: None,
            commits: Vec::new(),
            fetches: Vec::new(),
        }
    }

    fn perform(&mut self, action: &Action) -> Outcome {
        let name = match action {
            Action::Authenticate { .. } => "authenticate",
            Action::LoadMaildrop => "load",
            Action::Fetch { .. } => "fetch",
            Action::CommitDeletes { .. } => "commit",
            Action::StartTls { .. } => "tls",
        };
        if self.fail == Some(name) {
            return Outcome::Unavailable;
        }
        match action {
            Action::Authenticate { user, password } => {
                if user != "mrose" || password.expose() != "tanstaaf" {
                    Outcome::BadCredentials
                } else if self.locked_elsewhere {
                    Outcome::InUse
                } else {
                    Outcome::Authenticated
                }
            }
            Action::LoadMaildrop => Outcome::Maildrop {
                uid_validity: self.uid_validity,
                messages: self
                    .messages
                    .iter()
                    .map(|(uid, bytes)| MaildropEntry { uid: *uid, size: bytes.len() as u64 })
                    .collect(),
            },
            Action::Fetch { uid, top_lines } => {
                self.fetches.push((*uid, *top_lines));
                match self.messages.iter().find(|(u, _)| u == uid) {
                    Some((_, bytes)) => Outcome::Message(Bytes::from(bytes.clone())),
                    None => Outcome::Unavailable,
                }
            }
            Action::CommitDeletes { uids } => {
                self.commits.push(uids.clone());
                self.messages.retain(|(uid, _)| !uids.contains(uid));
                Outcome::Committed
            }
            Action::StartTls { .. } => Outcome::TlsStarted,
        }
    }
}

/// A driver in miniature: feeds lines, performs actions, collects what would go on the wire.
struct Driver {
    session: Session,
    store: FakeStore,
    closed: bool,
    tls_handshakes: usize,
}

impl Driver {
    fn new(config: SessionConfig, store: FakeStore) -> Self {
        Driver { session: Session::new(config), store, closed: false, tls_handshakes: 0 }
    }

    /// Plaintext allowed, so the RFC 1939 examples run as written.
    fn open(store: FakeStore) -> Self {
        let mut config = SessionConfig::new("dewey");
        config.plaintext_without_tls = true;
        Driver::new(config, store)
    }

    fn send_bytes(&mut self, line: &[u8]) -> Vec<u8> {
        assert!(!self.closed, "line sent after close");
        let mut wire = Vec::new();
        let mut step = self.session.handle_line(line);
        loop {
            match step {
                Next::Reply(bytes) => {
                    wire.extend_from_slice(&bytes);
                    return wire;
                }
                Next::Close(bytes) => {
                    wire.extend_from_slice(&bytes);
                    self.closed = true;
                    return wire;
                }
                Next::Action(Action::StartTls { reply }) => {
                    wire.extend_from_slice(&reply);
                    self.tls_handshakes += 1;
                    step = self.session.complete(Outcome::TlsStarted);
                }
                Next::Action(action) => {
                    let outcome = self.store.perform(&action);
                    step = self.session.complete(outcome);
                }
            }
        }
    }

    fn send(&mut self, line: &str) -> String {
        String::from_utf8_lossy(&self.send_bytes(line.as_bytes())).into_owned()
    }

    fn login(&mut self) {
        assert_eq!(self.send("USER mrose"), "+OK send PASS\r\n");
        assert!(self.send("PASS tanstaaf").starts_with("+OK maildrop has"));
        assert_eq!(self.session.phase(), Phase::Transaction);
    }
}

fn two_messages() -> FakeStore {
    FakeStore::with(&[(7, MSG1), (9, MSG2)])
}

fn plain(raw: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(raw)
}

#[test]
fn greeting_names_the_host() {
    let session = Session::new(SessionConfig::new("pop.example.org"));
    assert_eq!(session.greeting(), b"+OK pop.example.org POP3 server ready\r\n");
    assert_eq!(session.phase(), Phase::Authorization);
}

#[test]
fn hostname_cannot_break_framing() {
    let session = Session::new(SessionConfig::new("evil\r\n+OK"));
    assert_eq!(session.greeting(), b"+OK evil+OK POP3 server ready\r\n");
}

#[test]
fn rfc1939_example_session() {
    let mut d = Driver::open(two_messages());
    let (s1, s2) = (MSG1.len(), MSG2.len());
    let total = s1 + s2;
    assert_eq!(d.send("USER mrose"), "+OK send PASS\r\n");
    assert_eq!(d.send("PASS tanstaaf"), format!("+OK maildrop has 2 messages ({total} octets)\r\n"));
    assert_eq!(d.session.user(), Some("mrose"));
    assert_eq!(d.send("STAT"), format!("+OK 2 {total}\r\n"));
    assert_eq!(d.send("LIST"), format!("+OK 2 messages ({total} octets)\r\n1 {s1}\r\n2 {s2}\r\n.\r\n"));
    assert_eq!(
        d.send("RETR 1"),
        format!(
            "+OK {s1} octets\r\nFrom: a@example.org\r\nSubject: one\r\n\r\nfirst line\r\n..dot line\r\nlast\r\n.\r\n"
        )
    );
    assert_eq!(d.send("DELE 1"), "+OK message 1 deleted\r\n");
    assert_eq!(d.send("RETR 2"), format!("+OK {s2} octets\r\nSubject: two\r\n\r\nno final crlf\r\n.\r\n"));
    assert_eq!(d.send("DELE 2"), "+OK message 2 deleted\r\n");
    assert_eq!(d.send("QUIT"), "+OK dewey POP3 server signing off (maildrop empty)\r\n");
    assert!(d.closed);
    assert_eq!(d.store.commits, [vec![7, 9]]);
    assert_eq!(d.session.phase(), Phase::Update);
}

#[test]
fn rfc1939_list_uidl_and_top_examples() {
    let mut d = Driver::open(two_messages());
    d.login();
    assert_eq!(d.send("LIST 2"), format!("+OK 2 {}\r\n", MSG2.len()));
    assert_eq!(d.send("LIST 3"), "-ERR no such message\r\n");
    assert_eq!(d.send("UIDL"), "+OK unique-id listing follows\r\n1 1234.7\r\n2 1234.9\r\n.\r\n");
    assert_eq!(d.send("UIDL 2"), "+OK 2 1234.9\r\n");
    assert_eq!(d.send("UIDL 3"), "-ERR no such message\r\n");
    assert_eq!(
        d.send("TOP 1 1"),
        "+OK top of message follows\r\nFrom: a@example.org\r\nSubject: one\r\n\r\nfirst line\r\n.\r\n"
    );
    assert_eq!(d.store.fetches.last(), Some(&(7, Some(1))));
    assert_eq!(d.send("TOP 100 3"), "-ERR no such message\r\n");
    assert_eq!(d.send("NOOP"), "+OK\r\n");
}

#[test]
fn empty_maildrop() {
    let mut d = Driver::open(FakeStore::with(&[]));
    assert_eq!(d.send("USER mrose"), "+OK send PASS\r\n");
    assert_eq!(d.send("PASS tanstaaf"), "+OK maildrop has 0 messages (0 octets)\r\n");
    assert_eq!(d.send("STAT"), "+OK 0 0\r\n");
    assert_eq!(d.send("LIST"), "+OK 0 messages (0 octets)\r\n.\r\n");
    assert_eq!(d.send("UIDL"), "+OK unique-id listing follows\r\n.\r\n");
    assert_eq!(d.send("RETR 1"), "-ERR no such message\r\n");
    assert_eq!(d.send("DELE 1"), "-ERR no such message\r\n");
    assert_eq!(d.send("QUIT"), "+OK dewey POP3 server signing off (maildrop empty)\r\n");
    assert!(d.store.commits.is_empty());
}

#[test]
fn deleted_messages_are_invisible() {
    let mut d = Driver::open(two_messages());
    d.login();
    assert_eq!(d.send("DELE 1"), "+OK message 1 deleted\r\n");
    assert_eq!(d.send("DELE 1"), "-ERR message 1 already deleted\r\n");
    assert_eq!(d.send("RETR 1"), "-ERR message 1 already deleted\r\n");
    assert_eq!(d.send("TOP 1 0"), "-ERR message 1 already deleted\r\n");
    assert_eq!(d.send("LIST 1"), "-ERR message 1 already deleted\r\n");
    assert_eq!(d.send("UIDL 1"), "-ERR message 1 already deleted\r\n");
    let s2 = MSG2.len();
    assert_eq!(d.send("STAT"), format!("+OK 1 {s2}\r\n"));
    assert_eq!(d.send("LIST"), format!("+OK 1 messages ({s2} octets)\r\n2 {s2}\r\n.\r\n"));
    assert_eq!(d.send("UIDL"), "+OK unique-id listing follows\r\n2 1234.9\r\n.\r\n");
    assert!(d.store.fetches.is_empty(), "no store read for a deleted message");
    assert_eq!(d.send("QUIT"), "+OK dewey POP3 server signing off (1 message left)\r\n");
    assert_eq!(d.store.commits, [vec![7]]);
}

#[test]
fn rset_unmarks() {
    let mut d = Driver::open(two_messages());
    d.login();
    d.send("DELE 1");
    d.send("DELE 2");
    assert_eq!(d.send("STAT"), "+OK 0 0\r\n");
    let total = MSG1.len() + MSG2.len();
    assert_eq!(d.send("RSET"), format!("+OK maildrop has 2 messages ({total} octets)\r\n"));
    assert_eq!(d.send("STAT"), format!("+OK 2 {total}\r\n"));
    assert!(d.send("RETR 1").starts_with("+OK"));
    assert_eq!(d.send("QUIT"), "+OK dewey POP3 server signing off (2 messages left)\r\n");
    assert!(d.store.commits.is_empty());
}

#[test]
fn dropped_connection_deletes_nothing() {
    let mut d = Driver::open(two_messages());
    d.login();
    d.send("DELE 1");
    drop(d.session);
    assert!(d.store.commits.is_empty());
}

#[test]
fn top_edge_cases() {
    let mut d = Driver::open(two_messages());
    d.login();
    assert_eq!(d.send("TOP 1 0"), "+OK top of message follows\r\nFrom: a@example.org\r\nSubject: one\r\n\r\n.\r\n");
    assert_eq!(
        d.send("TOP 1 99"),
        "+OK top of message follows\r\nFrom: a@example.org\r\nSubject: one\r\n\r\nfirst line\r\n..dot line\r\nlast\r\n.\r\n"
    );
    assert_eq!(d.send("TOP 2 5"), "+OK top of message follows\r\nSubject: two\r\n\r\nno final crlf\r\n.\r\n");
    assert_eq!(d.send("TOP 1"), "-ERR missing argument\r\n");
    assert_eq!(d.send("TOP 1 -1"), "-ERR invalid number\r\n");
}

#[test]
fn bare_lf_and_terminator_lookalikes_are_sent_safely() {
    let nasty: &[u8] = b"Subject: x\n\n.\n..\r\n.\r\nend";
    let mut d = Driver::open(FakeStore::with(&[(1, nasty)]));
    d.login();
    assert_eq!(
        d.send("RETR 1"),
        format!("+OK {} octets\r\nSubject: x\r\n\r\n..\r\n...\r\n..\r\nend\r\n.\r\n", nasty.len())
    );
}

#[test]
fn empty_message_is_just_the_terminator() {
    let mut d = Driver::open(FakeStore::with(&[(1, b"")]));
    d.login();
    assert_eq!(d.send("RETR 1"), "+OK 0 octets\r\n.\r\n");
    assert_eq!(d.send("TOP 1 0"), "+OK top of message follows\r\n.\r\n");
}

#[test]
fn line_limit() {
    let mut d = Driver::open(two_messages());
    assert_eq!(d.session.line_limit(), 253);
    let fits = format!("USER {}", "u".repeat(248));
    assert_eq!(d.send(&fits), "+OK send PASS\r\n");
    let over = format!("USER {}", "u".repeat(249));
    assert_eq!(d.send(&over), "-ERR line too long (limit is 255 octets including CRLF)\r\n");
    // The session keeps serving after the violation.
    d.login();
    assert_eq!(d.send(&"X".repeat(10_000)), "-ERR line too long (limit is 255 octets including CRLF)\r\n");
    assert_eq!(d.send("STAT").len(), format!("+OK 2 {}\r\n", MSG1.len() + MSG2.len()).len());
}

#[test]
fn garbage_is_answered_and_survived() {
    let mut d = Driver::open(two_messages());
    for line in [&b"\0\0\0"[..], b"\xff\xfe\xfd", b"USER \xc3\x28", b"STAT\0", b"", b" ", b"RETR 1\r"] {
        let reply = d.send_bytes(line);
        assert!(reply.starts_with(b"-ERR "), "{line:?} -> {reply:?}");
        assert!(reply.ends_with(b"\r\n") && !reply[..reply.len() - 2].contains(&b'\n'));
    }
    d.login();
    for line in [&b"\0"[..], b"\x80", b"LIST \xff", b"DELE 1\0"] {
        assert!(d.send_bytes(line).starts_with(b"-ERR "), "{line:?}");
    }
    assert!(d.send("STAT").starts_with("+OK 2 "));
    assert!(!d.closed);
}

#[test]
fn commands_in_the_wrong_state() {
    let mut d = Driver::open(two_messages());
    for line in ["STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 1", "UIDL"] {
        assert_eq!(d.send(line), "-ERR command not valid in AUTHORIZATION state\r\n", "{line}");
    }
    d.login();
    for line in ["USER mrose", "PASS x", "AUTH PLAIN", "STLS", "APOP mrose c4c9334bac560ecc979e58001b3e22fb"] {
        assert_eq!(d.send(line), "-ERR command not valid in TRANSACTION state\r\n", "{line}");
    }
}

#[test]
fn pass_must_follow_user() {
    let mut d = Driver::open(two_messages());
    assert_eq!(d.send("PASS tanstaaf"), "-ERR send USER first\r\n");
    d.send("USER mrose");
    d.send("NOOP");
    assert_eq!(d.send("PASS tanstaaf"), "-ERR send USER first\r\n");
    d.send("USER mrose");
    assert_eq!(d.send("USER mrose"), "+OK send PASS\r\n");
    assert!(d.send("PASS tanstaaf").starts_with("+OK maildrop has 2"));
}

#[test]
fn apop_is_refused() {
    let mut d = Driver::open(two_messages());
    assert_eq!(d.send("APOP mrose c4c9334bac560ecc979e58001b3e22fb"), "-ERR APOP is not supported\r\n");
}

#[test]
fn failed_logins_close_after_the_limit() {
    let mut d = Driver::open(two_messages());
    for _ in 0..2 {
        d.send("USER mrose");
        assert_eq!(d.send("PASS wrong"), "-ERR [AUTH] invalid user name or password\r\n");
        assert!(!d.closed);
    }
    d.send("USER nobody");
    assert_eq!(d.send("PASS tanstaaf"), "-ERR [AUTH] invalid user name or password\r\n");
    assert!(d.closed);
    assert_eq!(d.session.user(), None);
}

#[test]
fn failures_count_across_auth_methods() {
    let mut config = SessionConfig::new("dewey");
    config.plaintext_without_tls = true;
    config.max_auth_failures = 2;
    let mut d = Driver::new(config, two_messages());
    d.send("USER mrose");
    d.send("PASS wrong");
    assert_eq!(
        d.send(&format!("AUTH PLAIN {}", plain("\0mrose\0wrong"))),
        "-ERR [AUTH] invalid user name or password\r\n"
    );
    assert!(d.closed);
}

#[test]
fn maildrop_in_use() {
    let mut store = two_messages();
    store.locked_elsewhere = true;
    let mut d = Driver::open(store);
    d.send("USER mrose");
    assert_eq!(d.send("PASS tanstaaf"), "-ERR [IN-USE] maildrop is in use by another POP3 session\r\n");
    assert_eq!(d.session.phase(), Phase::Authorization);
    assert!(!d.closed);
}

#[test]
fn authentication_unavailable() {
    let mut store = two_messages();
    store.fail = Some("authenticate");
    let mut d = Driver::open(store);
    d.send("USER mrose");
    assert_eq!(d.send("PASS tanstaaf"), "-ERR [SYS/TEMP] authentication is temporarily unavailable\r\n");
    assert!(!d.closed);
}

#[test]
fn maildrop_that_cannot_be_opened_closes() {
    let mut store = two_messages();
    store.fail = Some("load");
    let mut d = Driver::open(store);
    d.send("USER mrose");
    assert_eq!(d.send("PASS tanstaaf"), "-ERR [SYS/TEMP] unable to open the maildrop\r\n");
    assert!(d.closed);
}

#[test]
fn unreadable_message_keeps_the_session() {
    let mut store = two_messages();
    store.fail = Some("fetch");
    let mut d = Driver::open(store);
    d.login();
    assert_eq!(d.send("RETR 2"), "-ERR [SYS/TEMP] unable to read message 2\r\n");
    assert_eq!(d.send("NOOP"), "+OK\r\n");
}

#[test]
fn failed_commit_is_reported_and_closes() {
    let mut store = two_messages();
    store.fail = Some("commit");
    let mut d = Driver::open(store);
    d.login();
    d.send("DELE 1");
    assert_eq!(d.send("QUIT"), "-ERR [SYS/TEMP] some deleted messages not removed\r\n");
    assert!(d.closed);
}

#[test]
fn quit_in_authorization_commits_nothing() {
    let mut d = Driver::open(two_messages());
    d.send("USER mrose");
    assert_eq!(d.send("QUIT"), "+OK dewey POP3 server signing off\r\n");
    assert!(d.closed);
    assert!(d.store.commits.is_empty());
}

#[test]
fn nothing_is_read_after_close() {
    let mut session = Session::new(SessionConfig::new("dewey"));
    assert!(matches!(session.handle_line(b"QUIT"), Next::Close(_)));
    assert_eq!(session.handle_line(b"STAT"), Next::Close(b"-ERR session is closing\r\n".to_vec()));
}

#[test]
fn driver_contract_violations_close_instead_of_panicking() {
    let mut config = SessionConfig::new("dewey");
    config.plaintext_without_tls = true;
    let mut session = Session::new(config.clone());
    assert_eq!(
        session.complete(Outcome::Committed),
        Next::Close(b"-ERR [SYS/PERM] internal server error\r\n".to_vec())
    );

    let mut session = Session::new(config.clone());
    session.handle_line(b"USER mrose");
    assert!(matches!(session.handle_line(b"PASS x"), Next::Action(Action::Authenticate { .. })));
    assert!(matches!(session.handle_line(b"NOOP"), Next::Close(_)));

    let mut session = Session::new(config);
    session.handle_line(b"USER mrose");
    session.handle_line(b"PASS x");
    assert!(matches!(session.complete(Outcome::TlsStarted), Next::Close(_)));
}

#[test]
fn plaintext_refused_without_tls() {
    let mut d = Driver::new(SessionConfig::new("dewey"), two_messages());
    let refusal = "-ERR [AUTH] plaintext authentication requires TLS: use STLS first\r\n";
    assert_eq!(d.send("USER mrose"), refusal);
    assert_eq!(d.send("PASS tanstaaf"), refusal);
    assert_eq!(d.send(&format!("AUTH PLAIN {}", plain("\0mrose\0tanstaaf"))), refusal);
    assert_eq!(d.send("AUTH PLAIN"), refusal);
    assert_eq!(d.send("AUTH"), "+OK\r\n.\r\n");
    assert_eq!(d.session.phase(), Phase::Authorization);

    let mut config = SessionConfig::new("dewey");
    config.stls_offered = false;
    let mut d = Driver::new(config, two_messages());
    assert_eq!(d.send("USER mrose"), "-ERR [AUTH] plaintext authentication is disabled on this connection\r\n");
    assert_eq!(d.send("STLS"), "-ERR STLS is not available\r\n");
}

#[test]
fn capabilities_follow_the_connection() {
    let base = "+OK capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n";
    let mut d = Driver::new(SessionConfig::new("dewey"), two_messages());
    assert_eq!(d.send("CAPA"), format!("{base}STLS\r\nIMPLEMENTATION SIRMS\r\n.\r\n"));

    let mut config = SessionConfig::new("dewey");
    config.tls_active = true;
    let mut d = Driver::new(config, two_messages());
    assert_eq!(d.send("CAPA"), format!("{base}USER\r\nSASL PLAIN\r\nIMPLEMENTATION SIRMS\r\n.\r\n"));
    d.login();
    assert_eq!(d.send("CAPA"), format!("{base}USER\r\nSASL PLAIN\r\nIMPLEMENTATION SIRMS\r\n.\r\n"));

    let mut d = Driver::open(two_messages());
    assert_eq!(d.send("CAPA"), format!("{base}USER\r\nSASL PLAIN\r\nSTLS\r\nIMPLEMENTATION SIRMS\r\n.\r\n"));
}

#[test]
fn stls_resets_to_fresh_authorization() {
    let mut d = Driver::new(SessionConfig::new("dewey"), two_messages());
    assert!(!d.session.tls_active());
    assert_eq!(d.send("STLS"), "+OK begin TLS negotiation\r\n");
    assert_eq!(d.tls_handshakes, 1);
    assert!(d.session.tls_active());
    assert_eq!(d.session.phase(), Phase::Authorization);
    assert!(!d.send("CAPA").contains("STLS"));
    assert_eq!(d.send("STLS"), "-ERR TLS is already active\r\n");
    d.login();
    assert_eq!(d.send("STLS"), "-ERR command not valid in TRANSACTION state\r\n");
}

#[test]
fn stls_forgets_the_user_given_before() {
    let mut d = Driver::open(two_messages());
    assert_eq!(d.send("USER mrose"), "+OK send PASS\r\n");
    assert_eq!(d.send("STLS"), "+OK begin TLS negotiation\r\n");
    assert_eq!(d.send("PASS tanstaaf"), "-ERR send USER first\r\n");
}

#[test]
fn stls_step_carries_the_reply_to_send_before_the_handshake() {
    let mut session = Session::new(SessionConfig::new("dewey"));
    assert_eq!(
        session.handle_line(b"STLS"),
        Next::Action(Action::StartTls { reply: b"+OK begin TLS negotiation\r\n".to_vec() })
    );
    // The client speaks first after the handshake: nothing to send.
    assert_eq!(session.complete(Outcome::TlsStarted), Next::Reply(Vec::new()));
}

#[test]
fn auth_plain_with_initial_response() {
    let mut d = Driver::open(two_messages());
    let reply = d.send(&format!("AUTH PLAIN {}", plain("\0mrose\0tanstaaf")));
    assert!(reply.starts_with("+OK maildrop has 2 messages"), "{reply}");
    assert_eq!(d.session.user(), Some("mrose"));
}

#[test]
fn auth_plain_with_continuation() {
    let mut d = Driver::open(two_messages());
    assert_eq!(d.send("auth plain"), "+ \r\n");
    assert_eq!(d.session.line_limit(), MAX_SASL_RESPONSE);
    let reply = d.send(&plain("mrose\0mrose\0tanstaaf"));
    assert!(reply.starts_with("+OK maildrop has 2 messages"), "{reply}");
    assert_eq!(d.session.line_limit(), MAX_COMMAND_LINE - 2);
}

#[test]
fn auth_plain_cancel() {
    let mut d = Driver::open(two_messages());
    assert_eq!(d.send("AUTH PLAIN"), "+ \r\n");
    assert_eq!(d.send("*"), "-ERR authentication cancelled\r\n");
    // The next line is a command again, not a SASL response.
    assert_eq!(d.send("USER mrose"), "+OK send PASS\r\n");
}

#[test]
fn auth_plain_rejections() {
    let mut d = Driver::open(two_messages());
    assert_eq!(d.send("AUTH PLAIN !!!!"), "-ERR invalid base64 in SASL response\r\n");
    assert_eq!(d.send("AUTH PLAIN"), "+ \r\n");
    assert_eq!(d.send("not base64"), "-ERR invalid base64 in SASL response\r\n");
    assert_eq!(d.send("AUTH PLAIN ="), "-ERR malformed SASL PLAIN message\r\n");
    assert_eq!(d.send(&format!("AUTH PLAIN {}", plain("mrose\0tanstaaf"))), "-ERR malformed SASL PLAIN message\r\n");
    assert_eq!(
        d.send(&format!("AUTH PLAIN {}", plain("admin\0mrose\0tanstaaf"))),
        "-ERR [AUTH] authorization identity must be empty or the same as the user name\r\n"
    );
    assert_eq!(
        d.send(&format!("AUTH PLAIN {}", plain("\0mrose\0wrong"))),
        "-ERR [AUTH] invalid user name or password\r\n"
    );
    assert_eq!(d.send("AUTH CRAM-MD5"), "-ERR unsupported SASL mechanism\r\n");
    assert_eq!(d.send("AUTH"), "+OK\r\nPLAIN\r\n.\r\n");
    assert_eq!(d.send("AUTH PLAIN"), "+ \r\n");
    assert_eq!(d.send_bytes(&[b'A'; MAX_SASL_RESPONSE + 1]), b"-ERR SASL response too long\r\n");
    assert_eq!(d.session.phase(), Phase::Authorization);
    assert!(!d.closed);
}

#[test]
fn authenticate_action_redacts_the_password() {
    let mut config = SessionConfig::new("dewey");
    config.plaintext_without_tls = true;
    let mut session = Session::new(config);
    session.handle_line(b"USER mrose");
    let step = session.handle_line(b"PASS hunter2");
    let debug = format!("{step:?}");
    assert!(debug.contains("mrose") && !debug.contains("hunter2"), "{debug}");
}

#[test]
fn random_lines_never_panic_or_break_framing() {
    // A deterministic xorshift stream of lines, mostly near-valid commands with random bytes mixed in.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let words: [&[u8]; 20] = [
        b"USER mrose",
        b"PASS tanstaaf",
        b"STAT",
        b"LIST",
        b"RETR ",
        b"DELE ",
        b"TOP ",
        b"UIDL",
        b"RSET",
        b"NOOP",
        b"CAPA",
        b"AUTH PLAIN",
        b"AUTH",
        b"*",
        b"STLS",
        b"LIST ",
        b"1",
        b" 2",
        b"\0",
        b"\xff",
    ];
    for _ in 0..300 {
        let mut d = Driver::open(two_messages());
        for _ in 0..30 {
            if d.closed {
                break;
            }
            let mut line = Vec::new();
            for _ in 0..(next() % 3 + 1) {
                line.extend_from_slice(words[(next() % words.len() as u64) as usize]);
            }
            let reply = d.send_bytes(&line);
            assert!(reply.is_empty() || reply.ends_with(b"\r\n"), "{line:?} -> {reply:?}");
        }
    }
}
