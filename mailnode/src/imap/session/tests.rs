//! Sessions driven with parsed commands against a `MemoryStore`: the store's contract is
//! pinned by the conformance suite, so these need no disk.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use sirms_storage::{MailStore, MemoryStore};

use super::*;
use crate::auth::throttle::{Throttle, ThrottleConfig};
use crate::directory::{DirectoryConfig, DirectoryData};
use crate::imap::extension;
use crate::imap::response::Data;

/// alice has no quota; quota@example.test may store 10 KiB; a and b of small.test have no
/// quota of their own but may store 10 KiB together.
pub(crate) fn directory() -> Arc<DirectoryData> {
    let cfg: DirectoryConfig = toml::from_str(
        r#"
domains = ["example.test", "small.test"]
users = [ { address = "alice@example.test", password = "{plain}pw" },
          { address = "quota@example.test", password = "{plain}pw", quota_bytes = 10240 },
          { address = "a@small.test", password = "{plain}pw" },
          { address = "b@small.test", password = "{plain}pw" } ]
domain_quotas = { "small.test" = { quota_bytes = 10240 } }
"#,
    )
    .expect("directory config");
    Arc::new(DirectoryData::from_config(&cfg).expect("directory"))
}

pub(crate) fn authenticator(directory: Arc<DirectoryData>) -> Authenticator {
    let throttle = Throttle::new(&ThrottleConfig::default(), &[]).expect("throttle");
    Authenticator::new(directory, Arc::new(throttle))
}

struct Harness {
    store: Arc<dyn MailStore>,
}

impl Harness {
    fn new() -> Harness {
        Harness::with_mailbox_limit(sirms_storage::mailbox::MAX_MAILBOXES)
    }

    /// A harness whose store allows each user `limit` mailboxes besides INBOX.
    fn with_mailbox_limit(limit: usize) -> Harness {
        let store = MemoryStore::new();
        store.set_mailbox_limit(limit);
        Harness { store: Arc::new(store) }
    }

    fn session(&self, plaintext: bool) -> Session {
        session_with(self, |config| config.allow_plaintext_auth = plaintext)
    }

    async fn logged_in(&self) -> Session {
        self.logged_in_as("alice@example.test").await
    }

    async fn logged_in_as(&self, user: &str) -> Session {
        let mut s = self.session(true);
        let out = run(&mut s, &format!("a LOGIN {user} pw")).await;
        assert!(out.contains("a OK"), "{out}");
        s
    }
}

/// Runs one command given as wire text (CRLF added) and returns what the session wrote.
async fn run(session: &mut Session, line: &str) -> String {
    run_next(session, line).await.0
}

async fn run_next(session: &mut Session, line: &str) -> (String, Next) {
    let wire = format!("{line}\r\n");
    let mut out: Vec<u8> = Vec::new();
    let next = match extension::decode(wire.as_bytes()) {
        Ok(decoded) => session.execute(decoded, &mut out).await.expect("write to vec"),
        Err(text) => session.bad_input(None, text, &mut out).await.expect("write to vec"),
    };
    (String::from_utf8_lossy(&out).into_owned(), next)
}

const MESSAGE: &str = "From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: Hello\r\nDate: Tue, 04 Mar 2025 10:00:00 +0100\r\n\r\nHello Alice,\r\nthe body.\r\n";

async fn append(session: &mut Session, mailbox: &str, flags: &str, message: &str) -> String {
    run(session, &format!("ap APPEND {mailbox} ({flags}) {{{}+}}\r\n{message}", message.len())).await
}

#[tokio::test]
async fn greeting_capability_and_login() {
    let h = Harness::new();
    let mut s = h.session(false);
    let greeting = String::from_utf8(s.greeting()).unwrap();
    assert!(greeting.starts_with("* OK [CAPABILITY IMAP4rev1 "), "{greeting}");
    assert!(greeting.contains("STARTTLS") && greeting.contains("LOGINDISABLED"), "{greeting}");
    let out = run(&mut s, "a LOGIN alice@example.test pw").await;
    assert!(out.starts_with("a NO [PRIVACYREQUIRED]"), "{out}");
    let out = run(&mut s, "b SELECT INBOX").await;
    assert!(out.starts_with("b BAD"), "{out}");

    let mut s = h.session(true);
    let out = run(&mut s, "c CAPABILITY").await;
    assert!(out.contains("AUTH=PLAIN") && !out.contains("LOGINDISABLED"), "{out}");
    let out = run(&mut s, "d LOGIN alice@example.test wrong").await;
    assert!(out.starts_with("d NO [AUTHENTICATIONFAILED]"), "{out}");
    // SASL-IR: base64 of "\0alice@example.test\0pw".
    let out = run(&mut s, "e AUTHENTICATE PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABwdw==").await;
    assert!(out.starts_with("e OK [CAPABILITY"), "{out}");
    assert_eq!(s.user(), Some("alice@example.test"));
    let (out, next) = run_next(&mut s, "f LOGOUT").await;
    assert_eq!(out, "* BYE logging out\r\nf OK LOGOUT completed\r\n");
    assert_eq!(next, Next::Close);
}

#[tokio::test]
async fn select_fetch_and_seen() {
    let h = Harness::new();
    let mut s = h.logged_in().await;
    let out = append(&mut s, "INBOX", "\\Flagged", MESSAGE).await;
    assert!(out.starts_with("ap OK [APPENDUID "), "{out}");
    let out = run(&mut s, "s SELECT inbox").await;
    for expected in [
        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded)\r\n",
        "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded \\*)]",
        "* 1 EXISTS\r\n* 1 RECENT\r\n",
        "* OK [UNSEEN 1]",
        "* OK [UIDNEXT 2]",
        "s OK [READ-WRITE] SELECT completed",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in {out}");
    }
    let out = run(&mut s, "f1 FETCH 1 (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (Subject)])").await;
    assert_eq!(
        out,
        format!(
            "* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent) RFC822.SIZE {} BODY[HEADER.FIELDS (Subject)] {{18}}\r\nSubject: Hello\r\n\r\n)\r\nf1 OK FETCH completed\r\n",
            MESSAGE.len()
        )
    );
    let out = run(&mut s, "f2 UID FETCH 1 (BODY[])").await;
    assert_eq!(
        out,
        format!(
            "* 1 FETCH (UID 1 BODY[] {{{}}}\r\n{MESSAGE} FLAGS (\\Flagged \\Seen \\Recent))\r\nf2 OK UID FETCH completed\r\n",
            MESSAGE.len()
        )
    );
    let out = run(&mut s, "f3 FETCH 1 (ENVELOPE BODY[TEXT]<6.5>)").await;
    assert!(
        out.contains(
            "ENVELOPE (\"Tue, 04 Mar 2025 10:00:00 +0100\" \"Hello\" ((\"Bob\" NIL \"bob\" \"example.test\"))"
        ),
        "{out}"
    );
    assert!(out.contains("BODY[TEXT]<6> {5}\r\nAlice)"), "{out}");
    let out = run(&mut s, "f4 FETCH 2 FLAGS").await;
    assert!(out.starts_with("f4 BAD"), "{out}");
}

#[tokio::test]
async fn store_search_expunge_and_move() {
    let h = Harness::new();
    let mut s = h.logged_in().await;
    for i in 0..4 {
        let msg = MESSAGE.replace("Hello\r\n", &format!("Hello {i}\r\n"));
        append(&mut s, "INBOX", if i == 1 { "\\Seen" } else { "" }, &msg).await;
    }
    run(&mut s, "s SELECT INBOX").await;
    let out = run(&mut s, "a STORE 1:2 +FLAGS (\\Deleted work)").await;
    assert_eq!(
        out,
        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded work)\r\n\
         * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded work \\*)] flags permitted\r\n\
         * 1 FETCH (FLAGS (\\Deleted work \\Recent))\r\n* 2 FETCH (FLAGS (\\Deleted \\Seen work \\Recent))\r\n\
         a OK STORE completed\r\n",
        "the new keyword is in FLAGS first"
    );
    let out = run(&mut s, "b UID STORE 2 -FLAGS.SILENT (work)").await;
    assert_eq!(out, "b OK STORE completed\r\n");
    assert_eq!(run(&mut s, "c SEARCH DELETED").await, "* SEARCH 1 2\r\nc OK SEARCH completed\r\n");
    assert_eq!(run(&mut s, "d SEARCH KEYWORD work NOT SEEN").await, "* SEARCH 1\r\nd OK SEARCH completed\r\n");
    assert_eq!(run(&mut s, "e UID SEARCH SUBJECT \"hello 3\"").await, "* SEARCH 4\r\ne OK UID SEARCH completed\r\n");
    assert_eq!(
        run(&mut s, "f SEARCH OR FROM bob BODY nothing-like-this").await,
        "* SEARCH 1 2 3 4\r\nf OK SEARCH completed\r\n"
    );
    assert_eq!(
        run(&mut s, "g SEARCH SENTON 4-Mar-2025 LARGER 10 2:*").await,
        "* SEARCH 2 3 4\r\ng OK SEARCH completed\r\n"
    );
    assert_eq!(run(&mut s, "h SEARCH CHARSET KOI8-R ALL").await.split(' ').nth(2), Some("[BADCHARSET"));
    let out = run(&mut s, "i EXPUNGE").await;
    assert_eq!(out, "* 2 EXPUNGE\r\n* 1 EXPUNGE\r\ni OK EXPUNGE completed\r\n");
    let out = run(&mut s, "j UID MOVE 4 Archive").await;
    assert!(out.starts_with("* OK [COPYUID "), "{out}");
    assert!(out.contains(" 4 1] moved\r\n* 2 EXPUNGE\r\nj OK MOVE completed"), "{out}");
    let out = run(&mut s, "k COPY 1 Nowhere").await;
    assert!(out.starts_with("k NO [TRYCREATE]"), "{out}");
    let out = run(&mut s, "l UID COPY 3 Trash").await;
    assert!(out.starts_with("l OK [COPYUID ") && out.contains(" 3 1]"), "{out}");
}

#[tokio::test]
async fn list_status_and_mailboxes() {
    let h = Harness::new();
    let mut s = h.logged_in().await;
    assert_eq!(run(&mut s, "a CREATE Entw&APw-rfe/Sub").await, "a OK CREATE completed\r\n");
    let out = run(&mut s, "b LIST \"\" %").await;
    assert!(out.contains("* LIST (\\HasNoChildren) \"/\" INBOX\r\n"), "{out}");
    assert!(out.contains("* LIST (\\HasNoChildren \\Sent) \"/\" Sent\r\n"), "{out}");
    assert!(out.contains("* LIST (\\HasChildren) \"/\" Entw&APw-rfe\r\n"), "{out}");
    assert!(!out.contains("Sub"), "{out}");
    let out = run(&mut s, "c LIST \"\" \"*/Sub\"").await;
    assert_eq!(out, "* LIST (\\HasNoChildren) \"/\" Entw&APw-rfe/Sub\r\nc OK LIST completed\r\n");
    assert_eq!(run(&mut s, "d LIST \"\" \"\"").await, "* LIST (\\Noselect) \"/\" \"\"\r\nd OK LIST completed\r\n");
    append(&mut s, "Sent", "\\Seen", MESSAGE).await;
    let out = run(&mut s, "e STATUS Sent (MESSAGES UNSEEN UIDNEXT)").await;
    assert_eq!(out, "* STATUS Sent (MESSAGES 1 UNSEEN 0 UIDNEXT 2)\r\ne OK STATUS completed\r\n");
    assert!(run(&mut s, "f RENAME Entw&APw-rfe Drafts2").await.starts_with("f OK"));
    assert!(run(&mut s, "g DELETE Nope").await.starts_with("g NO [NONEXISTENT]"));
    assert!(run(&mut s, "h CREATE INBOX").await.starts_with("h NO [ALREADYEXISTS]"));
    assert!(run(&mut s, "i SUBSCRIBE Sent").await.starts_with("i OK"));
    let out = run(&mut s, "j LSUB \"\" *").await;
    assert!(out.contains("* LSUB (\\HasNoChildren \\Sent) \"/\" Sent\r\n"), "{out}");
    assert_eq!(run(&mut s, "k NAMESPACE").await, "* NAMESPACE ((\"\" \"/\")) NIL NIL\r\nk OK NAMESPACE completed\r\n");
    assert!(run(&mut s, "l ENABLE CONDSTORE").await.starts_with("* ENABLED CONDSTORE\r\n"));
}

#[tokio::test]
async fn sessions_see_each_others_changes() {
    let h = Harness::new();
    let mut a = h.logged_in().await;
    let mut b = h.logged_in().await;
    append(&mut a, "INBOX", "", MESSAGE).await;
    let out = run(&mut a, "s SELECT INBOX").await;
    assert!(out.contains("* 1 RECENT"), "{out}");
    let out = run(&mut b, "s SELECT INBOX").await;
    assert!(out.contains("* 1 EXISTS\r\n* 0 RECENT"), "only one session gets \\Recent: {out}");
    assert!(run(&mut b, "t STORE 1 +FLAGS (\\Answered)").await.ends_with("t OK STORE completed\r\n"));
    let out = run(&mut a, "n NOOP").await;
    assert_eq!(out, "* 1 FETCH (UID 1 FLAGS (\\Answered \\Recent))\r\nn OK NOOP completed\r\n");
    append(&mut b, "INBOX", "", MESSAGE).await;
    // A FETCH by sequence number may report new messages but no expunges.
    run(&mut b, "x STORE 1 +FLAGS.SILENT (\\Deleted)").await;
    assert!(run(&mut b, "y EXPUNGE").await.contains("* 1 EXPUNGE"));
    let out = run(&mut a, "f FETCH 1 FLAGS").await;
    assert!(out.contains("* 1 FETCH (UID 1 FLAGS (\\Answered \\Deleted \\Recent))\r\n"), "{out}");
    assert!(out.contains("* 2 EXISTS\r\n* 1 RECENT\r\n"), "b saw the new message first: {out}");
    assert!(!out.contains("EXPUNGE"), "{out}");
    let out = run(&mut a, "n NOOP").await;
    assert_eq!(out, "* 1 EXPUNGE\r\nn OK NOOP completed\r\n");
    let out = run(&mut a, "g FETCH 1:* UID").await;
    assert_eq!(out, "* 1 FETCH (UID 2)\r\ng OK FETCH completed\r\n");
}

#[tokio::test]
async fn condstore_and_examine() {
    let h = Harness::new();
    let mut s = h.logged_in().await;
    append(&mut s, "INBOX", "", MESSAGE).await;
    append(&mut s, "INBOX", "", MESSAGE).await;
    let out = run(&mut s, "a EXAMINE INBOX").await;
    assert!(out.contains("[PERMANENTFLAGS ()]") && out.contains("a OK [READ-ONLY]"), "{out}");
    assert!(run(&mut s, "b STORE 1 +FLAGS (\\Seen)").await.starts_with("b NO [READ-ONLY]"));
    let out = run(&mut s, "c FETCH 1 BODY[]").await;
    assert!(!out.contains("\\Seen"), "EXAMINE never sets \\Seen: {out}");
    run(&mut s, "d SELECT INBOX (CONDSTORE)").await;
    let out = run(&mut s, "e FETCH 1:* (MODSEQ)").await;
    let modseq: u64 =
        out.split("MODSEQ (").nth(1).and_then(|r| r.split(')').next()).and_then(|n| n.parse().ok()).expect(&out);
    let out = run(&mut s, &format!("f STORE 1:2 (UNCHANGEDSINCE {modseq}) +FLAGS (\\Flagged)")).await;
    assert!(out.contains("f OK [MODIFIED 2]"), "{out}");
    let out = run(&mut s, &format!("g FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq})")).await;
    assert!(out.starts_with("* 1 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ ("), "{out}");
    assert!(out.contains("* 2 FETCH (FLAGS (\\Recent) MODSEQ ("), "{out}");
    let out = run(&mut s, "h UNSELECT").await;
    assert_eq!(out, "h OK UNSELECT completed\r\n");
}

#[tokio::test]
async fn qresync_reports_what_changed_since_the_clients_modseq() {
    let h = Harness::new();
    let mut s = h.logged_in().await;
    for _ in 0..5 {
        append(&mut s, "INBOX", "", MESSAGE).await;
    }
    let out = run(&mut s, "a SELECT INBOX (QRESYNC (1 1))").await;
    assert!(out.starts_with("a BAD"), "not enabled yet: {out}");
    assert_eq!(run(&mut s, "b ENABLE QRESYNC").await, "* ENABLED QRESYNC\r\nb OK ENABLE completed\r\n");
    let out = run(&mut s, "c SELECT INBOX").await;
    let field = |out: &str, name: &str| -> u64 {
        let after = out.split(&format!("[{name} ")).nth(1).expect(name);
        after.split(']').next().and_then(|n| n.parse().ok()).expect(name)
    };
    let (validity, modseq) = (field(&out, "UIDVALIDITY"), field(&out, "HIGHESTMODSEQ"));
    run(&mut s, "d STORE 2 +FLAGS.SILENT (\\Flagged)").await;
    run(&mut s, "e STORE 3 +FLAGS.SILENT (\\Deleted)").await;
    // Once QRESYNC is on, an expunge is a VANISHED of UIDs, not EXPUNGEs of numbers.
    assert_eq!(run(&mut s, "f EXPUNGE").await, "* VANISHED 3\r\nf OK EXPUNGE completed\r\n");

    // A client that last saw the mailbox at `modseq` learns what vanished and what changed, and
    // a SELECT while another mailbox is selected says that one is closed.
    let out = run(&mut s, &format!("g SELECT INBOX (QRESYNC ({validity} {modseq} 1:5))")).await;
    assert!(out.starts_with("* OK [CLOSED]"), "{out}");
    assert!(out.contains("* VANISHED (EARLIER) 3\r\n"), "{out}");
    assert!(out.contains("* 2 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ ("), "{out}");
    assert!(!out.contains("FETCH (UID 1 ") && !out.contains("FETCH (UID 4 "), "unchanged: {out}");
    assert!(out.ends_with("g OK [READ-WRITE] SELECT completed\r\n"), "{out}");
    // Another UIDVALIDITY: the client's cache is void, and only the usual responses come.
    let out = run(&mut s, &format!("h SELECT INBOX (QRESYNC ({} {modseq}))", validity + 1)).await;
    assert!(!out.contains("VANISHED") && !out.contains("FETCH"), "{out}");

    let out = run(&mut s, &format!("i UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")).await;
    assert!(out.starts_with("* VANISHED (EARLIER) 3\r\n* 2 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ ("), "{out}");
    let out = run(&mut s, "j FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)").await;
    assert!(out.starts_with("j BAD"), "VANISHED needs UID FETCH: {out}");
}

#[tokio::test]
async fn bad_input_is_counted() {
    let h = Harness::new();
    let mut s = h.session(true);
    for _ in 0..19 {
        let (out, next) = run_next(&mut s, "x BOGUS").await;
        assert!(out.starts_with("* BAD"), "{out}");
        assert_eq!(next, Next::Continue);
    }
    let (out, next) = run_next(&mut s, "x BOGUS").await;
    assert!(out.ends_with("* BYE too many invalid commands\r\n"), "{out}");
    assert_eq!(next, Next::Close);
}

#[tokio::test]
async fn quota_roots_only_where_there_is_a_limit() {
    let h = Harness::new();
    let mut s = h.logged_in_as("quota@example.test").await;
    let out = run(&mut s, "c CAPABILITY").await;
    assert!(out.contains(" QUOTA QUOTA=RES-STORAGE") && !out.contains("QUOTASET"), "{out}");
    let out = run(&mut s, "q0 GETQUOTAROOT INBOX").await;
    assert_eq!(out, "* QUOTAROOT INBOX \"\"\r\n* QUOTA \"\" (STORAGE 0 10)\r\nq0 OK GETQUOTAROOT completed\r\n");
    let message = "Subject: x\r\n\r\n".to_string() + &"a".repeat(1500);
    append(&mut s, "INBOX", "", &message).await;
    append(&mut s, "Sent", "", &message).await;
    // Every mailbox, existing or not, has the one root over all of them.
    let out = run(&mut s, "q1 GETQUOTAROOT \"No such/box\"").await;
    assert_eq!(
        out,
        "* QUOTAROOT \"No such/box\" \"\"\r\n* QUOTA \"\" (STORAGE 3 10)\r\nq1 OK GETQUOTAROOT completed\r\n"
    );
    let out = run(&mut s, "q2 GETQUOTA \"\"").await;
    assert_eq!(out, "* QUOTA \"\" (STORAGE 3 10)\r\nq2 OK GETQUOTA completed\r\n");
    let out = run(&mut s, "q3 GETQUOTA \"#user/quota\"").await;
    assert!(out.starts_with("q3 NO [NONEXISTENT]"), "{out}");
    let out = run(&mut s, "q4 SETQUOTA \"\" (STORAGE 100)").await;
    assert!(out.starts_with("q4 NO [NOPERM]"), "{out}");

    // Without a limit there is no quota root, rather than a made-up limit.
    let mut s = h.logged_in().await;
    let out = run(&mut s, "q5 GETQUOTAROOT INBOX").await;
    assert_eq!(out, "* QUOTAROOT INBOX\r\nq5 OK GETQUOTAROOT completed\r\n");
    let out = run(&mut s, "q6 GETQUOTA \"\"").await;
    assert!(out.starts_with("q6 NO [NONEXISTENT]"), "{out}");
}

#[tokio::test]
async fn a_domain_quota_bounds_its_users_together() {
    let h = Harness::new();
    let message = "Subject: x\r\n\r\n".to_string() + &"a".repeat(4000);
    let mut a = h.logged_in_as("a@small.test").await;
    assert!(append(&mut a, "INBOX", "", &message).await.contains("ap OK"));
    assert!(append(&mut a, "INBOX", "", &message).await.contains("ap OK"));
    // b has no quota of their own, but the domain holds 8,028 of its 10,240 bytes.
    let mut b = h.logged_in_as("b@small.test").await;
    let out = append(&mut b, "INBOX", "", &message).await;
    assert!(out.starts_with("ap NO [OVERQUOTA]"), "{out}");
    let small = "Subject: y\r\n\r\nsmall\r\n";
    assert!(append(&mut b, "INBOX", "", small).await.contains("ap OK"), "what fits is taken");
    // A copy counts too, and what this session let in counts without a new count.
    run(&mut a, "s SELECT INBOX").await;
    let out = run(&mut a, "c COPY 1 INBOX").await;
    assert!(out.starts_with("c NO [OVERQUOTA]"), "{out}");
    assert!(append(&mut b, "INBOX", "", &"z".repeat(2500)).await.starts_with("ap NO [OVERQUOTA]"));
    // Another domain is not bounded by it.
    let mut alice = h.logged_in().await;
    assert!(append(&mut alice, "INBOX", "", &message).await.contains("ap OK"));
}

#[tokio::test]
async fn binary_fetches_decoded_parts() {
    let h = Harness::new();
    let mut s = h.logged_in().await;
    let out = run(&mut s, "c CAPABILITY").await;
    assert!(out.contains(" BINARY"), "{out}");
    let message = "Subject: b\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n\
--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAw==\r\n\
--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n--b--\r\n";
    append(&mut s, "INBOX", "", message).await;
    run(&mut s, "s SELECT INBOX").await;
    let out =
        run(&mut s, "f1 FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1] BINARY.PEEK[2] BINARY.SIZE[2] BINARY.PEEK[1]<2.10>)")
            .await;
    assert_eq!(
        out,
        "* 1 FETCH (BINARY[1] {5}\r\ncaf\u{e9} BINARY.SIZE[1] 5 BINARY[2] ~{4}\r\n\0\x01\x02\x03 BINARY.SIZE[2] 4 \
BINARY[1]<2> {3}\r\nf\u{e9})\r\nf1 OK FETCH completed\r\n"
    );
    let out = run(&mut s, "f2 FETCH 1 (FLAGS)").await;
    assert!(!out.contains("\\Seen"), "BINARY.PEEK leaves \\Seen alone: {out}");
    let out = run(&mut s, "f3 FETCH 1 (BINARY[3])").await;
    assert!(out.starts_with("f3 NO [UNKNOWN-CTE]"), "{out}");
    let out = run(&mut s, "f4 FETCH 1 (BINARY[2])").await;
    assert!(out.contains("FLAGS (\\Seen \\Recent)"), "BINARY sets \\Seen: {out}");
    // APPEND with a literal8: the NUL is stored, and BINARY[] answers with a literal8 too.
    let out = run(&mut s, "a8 APPEND INBOX ~{11+}\r\nSubject:\0\r\n").await;
    assert!(out.contains("* 2 EXISTS\r\n") && out.contains("a8 OK [APPENDUID"), "{out}");
    let out = run(&mut s, "f5 FETCH 2 (BINARY.PEEK[] BINARY.SIZE[])").await;
    assert!(out.contains("* 2 FETCH (BINARY[] ~{11}\r\nSubject:\0\r\n BINARY.SIZE[] 11)\r\n"), "{out}");
}

#[tokio::test]
async fn esearch_return_options() {
    let h = Harness::new();
    let mut s = h.logged_in().await;
    assert!(run(&mut s, "c CAPABILITY").await.contains(" ESEARCH"));
    for i in 0..5 {
        append(&mut s, "INBOX", if i == 1 || i == 4 { "\\Seen" } else { "" }, MESSAGE).await;
    }
    run(&mut s, "s SELECT INBOX").await;
    run(&mut s, "x STORE 2 +FLAGS.SILENT (\\Deleted)").await;
    run(&mut s, "x EXPUNGE").await;
    // Sequence numbers 1..4 are UIDs 1, 3, 4, 5; UIDs 2 and 5 were \Seen.
    assert_eq!(
        run(&mut s, "a1 SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN").await,
        "* ESEARCH (TAG \"a1\") MIN 1 MAX 3 COUNT 3 ALL 1:3\r\na1 OK SEARCH completed\r\n"
    );
    assert_eq!(
        run(&mut s, "a2 UID SEARCH RETURN () UNSEEN").await,
        "* ESEARCH (TAG \"a2\") UID ALL 1,3:4\r\na2 OK UID SEARCH completed\r\n"
    );
    assert_eq!(
        run(&mut s, "a3 uid search return (count) charset utf-8 subject {5+}\r\nNOPE!").await,
        "* ESEARCH (TAG \"a3\") UID COUNT 0\r\na3 OK UID SEARCH completed\r\n"
    );
    let out = run(&mut s, "a4 SEARCH RETURN (MAX) MODSEQ 1").await;
    // SEARCH MODSEQ turns CONDSTORE on: HIGHESTMODSEQ first (RFC 7162 §3.1).
    assert!(out.starts_with("* OK [HIGHESTMODSEQ "), "{out}");
    assert!(out.contains("\r\n* ESEARCH (TAG \"a4\") MAX 4 MODSEQ "), "{out}");
    // A RETURN in the criteria is a search string, not a result option.
    assert_eq!(run(&mut s, "a5 SEARCH SUBJECT \"RETURN (MIN)\"").await, "* SEARCH\r\na5 OK SEARCH completed\r\n");
    assert_eq!(
        run(&mut s, "a6 SEARCH RETURN (PARTIAL 1:5) ALL").await,
        "* BAD unknown SEARCH return option (MIN, MAX, ALL, COUNT and SAVE are offered)\r\n"
    );
    assert!(run(&mut s, "a7 SEARCH RETURN (MIN").await.starts_with("* BAD SEARCH RETURN options"));
}

#[tokio::test]
async fn extended_list_and_list_status() {
    let h = Harness::new();
    let mut s = h.logged_in().await;
    let out = run(&mut s, "c CAPABILITY").await;
    assert!(out.contains(" LIST-STATUS") && !out.contains("LIST-EXTENDED"), "{out}");
    append(&mut s, "INBOX", "\\Seen", MESSAGE).await;
    append(&mut s, "INBOX", "", MESSAGE).await;
    append(&mut s, "Sent", "\\Seen", MESSAGE).await;
    run(&mut s, "a CREATE Work/Old").await;
    run(&mut s, "b SUBSCRIBE Work/Old").await;
    run(&mut s, "b SUBSCRIBE INBOX").await;
    // RFC 5819 §3's example: a LIST line, then a STATUS line, per mailbox.
    let out = run(&mut s, "A01 LIST \"\" % RETURN (STATUS (MESSAGES UNSEEN))").await;
    let inbox = "* LIST (\\HasNoChildren \\Subscribed) \"/\" INBOX\r\n* STATUS INBOX (MESSAGES 2 UNSEEN 1)\r\n";
    assert!(out.starts_with(inbox), "{out}");
    assert!(out.contains("* LIST (\\HasNoChildren \\Sent) \"/\" Sent\r\n* STATUS Sent (MESSAGES 1 UNSEEN 0)\r\n"));
    assert!(out.contains("* LIST (\\HasChildren) \"/\" Work\r\n* STATUS Work (MESSAGES 0 UNSEEN 0)\r\n"), "{out}");
    assert!(out.ends_with("A01 OK LIST completed\r\n") && !out.contains("Old"), "{out}");
    // Selection: special-use mailboxes only, several patterns, each mailbox once.
    let out = run(&mut s, "A02 LIST (SPECIAL-USE) \"\" (Sent \"S*\" Trash) RETURN (SPECIAL-USE)").await;
    assert_eq!(
        out,
        "* LIST (\\HasNoChildren \\Sent) \"/\" Sent\r\n* LIST (\\HasNoChildren \\Trash) \"/\" Trash\r\nA02 OK LIST completed\r\n"
    );
    // RECURSIVEMATCH: Work is not subscribed but lists for its subscribed child (RFC 5258 §3.5).
    let out = run(&mut s, "A03 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" % RETURN (STATUS (MESSAGES))").await;
    assert_eq!(
        out,
        format!(
            "* LIST (\\HasNoChildren \\Subscribed) \"/\" INBOX\r\n* STATUS INBOX (MESSAGES 2)\r\n\
* LIST (\\HasChildren) \"/\" Work (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\nA03 OK LIST completed\r\n"
        )
    );
    let out = run(&mut s, "A04 LIST (SUBSCRIBED) \"\" *").await;
    assert!(out.contains("Work/Old\r\n") && !out.contains("CHILDINFO") && !out.contains(" Work\r\n"), "{out}");
    // In an extended LIST the empty pattern is no request for the delimiter.
    assert_eq!(run(&mut s, "A05 LIST () \"\" \"\"").await, "A05 OK LIST completed\r\n");
    assert_eq!(run(&mut s, "A06 LIST \"\" \"\"").await, "* LIST (\\Noselect) \"/\" \"\"\r\nA06 OK LIST completed\r\n");
    let out = run(&mut s, "A07 LIST (RECURSIVEMATCH) \"\" *").await;
    assert_eq!(out, "* BAD RECURSIVEMATCH needs SUBSCRIBED or SPECIAL-USE\r\n");
    let out = run(&mut s, "A08 LIST \"\" * RETURN (STATUS (MESSAGES) FOO)").await;
    assert!(out.starts_with("* BAD unknown LIST return option"), "{out}");
}

/// ENVELOPE, BODY and BODYSTRUCTURE of a message as rendered straight from its bytes.
fn fresh_structure(raw: &[u8]) -> String {
    use crate::imap::mime::{PartRef, envelope, parse, structure};
    let message = parse(raw).expect("parses");
    let root = PartRef::root(&message).expect("root");
    let mut out = Data::fragment();
    out.raw("ENVELOPE ");
    envelope::write(&mut out, root);
    out.raw(" BODY ");
    structure::write(&mut out, root, false);
    out.raw(" BODYSTRUCTURE ");
    structure::write(&mut out, root, true);
    String::from_utf8(out.into_bytes()).expect("utf-8")
}

#[tokio::test]
async fn structures_come_from_the_cache_and_are_never_stale() {
    use crate::imap::mime::cache::Structure;
    use crate::imap::mime::section::tests::NESTED;
    use bytes::Bytes;
    use sirms_storage::{Cached, UidSet};

    let h = Harness::new();
    let mut s = h.logged_in().await;
    let nested = std::str::from_utf8(NESTED).expect("ascii");
    append(&mut s, "INBOX", "", nested).await;
    run(&mut s, "s SELECT INBOX").await;
    let fresh = fresh_structure(NESTED);
    assert!(fresh.contains("BODYSTRUCTURE (((\"text\" \"plain\" (\"charset\" \"utf-8\")"), "{fresh}");
    let items = "(ENVELOPE BODY BODYSTRUCTURE)";
    let want = |flags: &str| format!("* 1 FETCH (UID 1 {flags}{fresh})\r\n");
    let first = run(&mut s, &format!("f1 UID FETCH 1 {items}")).await;
    assert_eq!(first, format!("{}f1 OK UID FETCH completed\r\n", want("")));
    // The first FETCH left the rendering in the store: the same bytes.
    let stored = h.store.cache_get("alice@example.test", "INBOX", &UidSet::single(1)).await.expect("cache");
    assert_eq!(stored.len(), 1);
    assert_eq!(Structure::decode(&stored[0].data), Some(Structure::of(NESTED)));
    assert_eq!(run(&mut s, &format!("f2 UID FETCH 1 {items}")).await, first.replace("f1", "f2"));

    // Later FETCHes read it from there: an entry planted in the store is what they answer.
    let planted = Structure {
        envelope: Bytes::from_static(b"(PLANTED)"),
        body: Bytes::from_static(b"(B)"),
        bodystructure: Bytes::from_static(b"(BS)"),
        header: None,
    };
    let plant = |data: Bytes| vec![Cached { uid: 1, data }];
    h.store.cache_put("alice@example.test", "INBOX", plant(planted.encode())).await.expect("plant");
    let out = run(&mut s, "f3 FETCH 1 (ENVELOPE BODYSTRUCTURE)").await;
    assert_eq!(out, "* 1 FETCH (ENVELOPE (PLANTED) BODYSTRUCTURE (BS))\r\nf3 OK FETCH completed\r\n");
    // An entry in another rendering format is rendered afresh and replaced, never served.
    let mut older = planted.encode().to_vec();
    older[0] = older[0].wrapping_add(1);
    h.store.cache_put("alice@example.test", "INBOX", plant(older.into())).await.expect("plant");
    assert_eq!(run(&mut s, &format!("f4 UID FETCH 1 {items}")).await, first.replace("f1", "f4"));
    let stored = h.store.cache_get("alice@example.test", "INBOX", &UidSet::single(1)).await.expect("cache");
    assert_eq!(Structure::decode(&stored[0].data), Some(Structure::of(NESTED)));

    // Flags come from the index, not the cache: a change shows at once, the structure stays.
    run(&mut s, "st STORE 1 +FLAGS.SILENT (\\Flagged)").await;
    let out = run(&mut s, "f5 UID FETCH 1 (FLAGS ENVELOPE BODY BODYSTRUCTURE)").await;
    assert_eq!(out, format!("{}f5 OK UID FETCH completed\r\n", want("FLAGS (\\Flagged \\Recent) ")));

    // An expunged message takes its entry with it; the next message gets its own.
    run(&mut s, "d STORE 1 +FLAGS.SILENT (\\Deleted)").await;
    run(&mut s, "e EXPUNGE").await;
    assert!(h.store.cache_get("alice@example.test", "INBOX", &UidSet::all()).await.expect("cache").is_empty());
    append(&mut s, "INBOX", "", MESSAGE).await;
    run(&mut s, "n NOOP").await;
    let out = run(&mut s, "f6 UID FETCH 2 (ENVELOPE BODY BODYSTRUCTURE)").await;
    assert_eq!(
        out,
        format!("* 1 FETCH (UID 2 {})\r\nf6 OK UID FETCH completed\r\n", fresh_structure(MESSAGE.as_bytes()))
    );
}

#[tokio::test]
async fn whole_message_fetches_match_with_and_without_structures() {
    let h = Harness::new();
    let mut s = h.logged_in().await;
    let nested = std::str::from_utf8(crate::imap::mime::section::tests::NESTED).expect("ascii");
    append(&mut s, "INBOX", "", nested).await;
    run(&mut s, "s SELECT INBOX").await;
    // A miss while the bytes are read anyway, then a hit next to them: the same answer.
    let items = "(BODYSTRUCTURE BODY.PEEK[] ENVELOPE BODY.PEEK[1.1])";
    let first = run(&mut s, &format!("a UID FETCH 1 {items}")).await;
    assert!(first.contains(&format!("BODY[] {{{}}}\r\n{nested} ENVELOPE (NIL \"nested\"", nested.len())), "{first}");
    assert!(first.contains("BODY[1.1] {23}\r\nplain text\r\nsecond line)\r\n"), "{first}");
    assert_eq!(run(&mut s, &format!("b UID FETCH 1 {items}")).await, first.replace("a OK", "b OK"));
}

#[tokio::test]
async fn create_past_the_mailbox_limit_is_refused_with_limit() {
    // The five default mailboxes (Sent, Drafts, Trash, Junk, Archive) count; two more fit.
    let h = Harness::with_mailbox_limit(7);
    let mut s = h.logged_in().await;
    assert_eq!(run(&mut s, "a CREATE One").await, "a OK CREATE completed\r\n");
    // Two folders (Two and its parent New) where one is left: neither is made.
    assert_eq!(run(&mut s, "b CREATE New/Two").await, "b NO [LIMIT] too many mailboxes; delete some first\r\n");
    assert!(!run(&mut s, "c LIST \"\" New*").await.contains("* LIST"));
    assert_eq!(run(&mut s, "d CREATE Two").await, "d OK CREATE completed\r\n");
    assert!(run(&mut s, "e CREATE Three").await.starts_with("e NO [LIMIT] "));
    // A rename that needs a new parent needs room for it; one that needs none does not.
    assert!(run(&mut s, "f RENAME Two New/Two").await.starts_with("f NO [LIMIT] "));
    assert_eq!(run(&mut s, "g RENAME Two Three").await, "g OK RENAME completed\r\n");
    assert_eq!(run(&mut s, "h DELETE One").await, "h OK DELETE completed\r\n");
    assert_eq!(run(&mut s, "i CREATE Four").await, "i OK CREATE completed\r\n");
}

// What Dovecot's imaptest found, each reproduced here.

#[tokio::test]
async fn a_name_that_is_not_modified_utf7_is_no_such_mailbox() {
    // "&'" opens a base64 run that is not base64: no mailbox can have this name, so
    // SELECT says NO (RFC 3501 §6.3.1), and a LIST pattern made of it matches nothing.
    let h = Harness::new();
    let mut s = h.logged_in().await;
    let out = run(&mut s, "a SELECT \"!#$&'+,-.0123456789:;<=>?@^_`|[}\"").await;
    assert!(out.starts_with("a NO "), "{out}");
    let out = run(&mut s, "b LIST \"\" \"!#$&'+,-.0123456789:;<=>?@^_`|[}%*\"").await;
    assert_eq!(out, "b OK LIST completed\r\n");
    let out = run(&mut s, "c CREATE \"a&Jjo\"").await;
    assert!(out.starts_with("c NO "), "{out}");
    assert!(run(&mut s, "d NOOP").await.starts_with("d OK"), "the session goes on");
}

#[tokio::test]
async fn lsub_shows_an_unsubscribed_parent_as_noselect() {
    // RFC 3501 §6.3.9: when `%` stops at a parent that is not subscribed but has a
    // subscribed child, LSUB names the parent with \Noselect.
    let h = Harness::new();
    let mut s = h.logged_in().await;
    for name in ["box/test", "box/test2/test", "box/test3/test3"] {
        assert!(run(&mut s, &format!("c CREATE {name}")).await.starts_with("c OK"));
        assert!(run(&mut s, &format!("s SUBSCRIBE {name}")).await.starts_with("s OK"));
    }
    let out = run(&mut s, "a LSUB \"\" box/%").await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[0].starts_with("* LSUB (") && lines[0].ends_with(") \"/\" box/test"), "{out}");
    assert_eq!(lines[1], "* LSUB (\\Noselect) \"/\" box/test2", "{out}");
    assert_eq!(lines[2], "* LSUB (\\Noselect) \"/\" box/test3", "{out}");
    let out = run(&mut s, "b LSUB \"\" *test").await;
    assert!(out.contains("\"/\" box/test\r\n") && out.contains("\"/\" box/test2/test\r\n"), "{out}");
    assert!(!out.contains("Noselect"), "{out}");
    assert!(run(&mut s, "u UNSUBSCRIBE box/test2/test").await.starts_with("u OK"));
    let out = run(&mut s, "c LSUB \"\" box/%").await;
    assert!(!out.contains("box/test2"), "{out}");
}

#[tokio::test]
async fn a_condstore_enabling_fetch_reports_highestmodseq() {
    // RFC 7162 §3.1: the first CONDSTORE-enabling command in a selected mailbox gets an
    // untagged OK [HIGHESTMODSEQ], so the client learns where it stands.
    let h = Harness::new();
    let mut s = h.logged_in().await;
    append(&mut s, "INBOX", "", MESSAGE).await;
    run(&mut s, "a SELECT INBOX").await;
    let out = run(&mut s, "b FETCH 1 (MODSEQ)").await;
    assert!(out.starts_with("* OK [HIGHESTMODSEQ "), "{out}");
    assert!(out.contains("* 1 FETCH (MODSEQ ("), "{out}");
    let out = run(&mut s, "c FETCH 1 (MODSEQ)").await;
    assert!(!out.contains("HIGHESTMODSEQ"), "only the first time: {out}");
}

/// The MODSEQ values of the FETCH responses in `out`, in order.
fn modseqs(out: &str) -> Vec<u64> {
    out.split("MODSEQ (").skip(1).filter_map(|r| r.split(')').next()?.parse().ok()).collect()
}

#[tokio::test]
async fn a_new_keyword_is_announced_in_flags_before_it_is_used() {
    // RFC 3501 §7.2.6: FLAGS lists the flags the mailbox uses; a client may reject a keyword in
    // a FETCH that FLAGS never named ("Keyword used without being in FLAGS").
    let h = Harness::new();
    let mut a = h.logged_in().await;
    let mut b = h.logged_in().await;
    append(&mut a, "INBOX", "", MESSAGE).await;
    run(&mut a, "s SELECT INBOX").await;
    run(&mut b, "s SELECT INBOX").await;
    // Another session's STORE.
    run(&mut b, "t STORE 1 +FLAGS ($Label1)").await;
    let out = run(&mut a, "n NOOP").await;
    let flags = out.find("* FLAGS (").expect(&out);
    assert!(
        out[flags..].starts_with("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded $Label1)\r\n"),
        "{out}"
    );
    assert!(
        out.contains("* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded $Label1 \\*)]"),
        "{out}"
    );
    assert!(flags < out.find("* 1 FETCH").expect(&out), "{out}");
    // This session's own STORE, and a keyword another session APPENDs with.
    let out = run(&mut a, "u STORE 1 +FLAGS ($Label2)").await;
    assert!(out.find("$Label1 $Label2)\r\n").expect(&out) < out.find("* 1 FETCH").expect(&out), "{out}");
    append(&mut b, "INBOX", "$Label3", MESSAGE).await;
    let out = run(&mut a, "n NOOP").await;
    assert!(out.find("$Label2 $Label3)\r\n").expect(&out) < out.find("* 2 EXISTS").expect(&out), "{out}");
    // Known keywords are not announced again.
    run(&mut b, "n NOOP").await;
    assert!(!run(&mut b, "v STORE 1 -FLAGS ($Label1)").await.contains("* FLAGS"));
    assert!(!run(&mut a, "n NOOP").await.contains("* FLAGS"));
}

#[tokio::test]
async fn modseq_of_a_message_never_goes_back() {
    // RFC 7162 §3.1.1: a message's mod-sequence only grows. This session's STORE learns the
    // newest one first; the older change of another session, reported after it, is stale.
    let h = Harness::new();
    let mut a = h.logged_in().await;
    let mut b = h.logged_in().await;
    append(&mut a, "INBOX", "", MESSAGE).await;
    run(&mut a, "s SELECT INBOX (CONDSTORE)").await;
    run(&mut b, "s SELECT INBOX").await;
    run(&mut b, "t STORE 1 +FLAGS (\\Flagged)").await;
    let out = run(&mut a, "u STORE 1 +FLAGS (\\Seen)").await;
    let seen = modseqs(&out);
    assert!(!seen.is_empty(), "{out}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "MODSEQ went back: {out}");
    let out = run(&mut a, "f FETCH 1 (FLAGS MODSEQ)").await;
    assert!(out.contains("FLAGS (\\Flagged \\Seen \\Recent)"), "{out}");
    assert!(modseqs(&out)[0] >= *seen.last().unwrap(), "{out}");
}

#[tokio::test]
async fn fetching_a_message_another_session_expunged_is_no_expungeissued() {
    // RFC 2180 §4.1.3 (and RFC 5530's EXPUNGEISSUED): the message's data is gone; no FETCH
    // with invented, empty data for it, and a tagged NO saying why.
    let h = Harness::new();
    let mut a = h.logged_in().await;
    let mut b = h.logged_in().await;
    append(&mut a, "INBOX", "", MESSAGE).await;
    append(&mut a, "INBOX", "", MESSAGE).await;
    run(&mut a, "s SELECT INBOX").await;
    run(&mut b, "s SELECT INBOX").await;
    run(&mut b, "t STORE 1 +FLAGS.SILENT (\\Deleted)").await;
    run(&mut b, "x EXPUNGE").await;
    let out = run(&mut a, "f FETCH 1:2 (ENVELOPE BODY.PEEK[])").await;
    assert!(!out.contains("* 1 FETCH (ENVELOPE"), "{out}");
    assert!(out.contains("* 2 FETCH (ENVELOPE (\"Tue, 04 Mar 2025"), "{out}");
    assert!(out.ends_with("f NO [EXPUNGEISSUED] some of the requested messages no longer exist\r\n"), "{out}");
    let out = run(&mut a, "n NOOP").await;
    assert!(out.starts_with("* 1 EXPUNGE\r\n"), "{out}");
}

#[tokio::test]
async fn a_new_message_is_announced_before_a_fetch_about_it() {
    // A FETCH response may name only a sequence number the client was told of (RFC 3501
    // §7.4.2): another session's APPEND and then STORE on the same message reach this session
    // together, and the EXISTS must come first.
    let h = Harness::new();
    let mut a = h.logged_in().await;
    let mut b = h.logged_in().await;
    run(&mut a, "s SELECT INBOX").await;
    run(&mut b, "s SELECT INBOX").await;
    append(&mut b, "INBOX", "", MESSAGE).await;
    run(&mut b, "t STORE 1 +FLAGS (\\Flagged)").await;
    let out = run(&mut a, "n NOOP").await;
    let exists = out.find("* 1 EXISTS").expect(&out);
    assert!(out.find("* 1 FETCH").is_none_or(|fetch| exists < fetch), "{out}");
    let out = run(&mut a, "f FETCH 1 FLAGS").await;
    assert!(out.contains("* 1 FETCH (FLAGS (\\Flagged"), "{out}");
}

#[tokio::test]
async fn status_size_and_appendlimit() {
    let h = Harness::new();
    let mut s = h.logged_in().await;
    // RFC 7889: one limit for all mailboxes, in the capability; RFC 8438: STATUS=SIZE.
    let out = run(&mut s, "a CAPABILITY").await;
    let limit = ImapLimits::default().max_append;
    assert!(out.contains(&format!(" APPENDLIMIT={limit}")) && out.contains(" STATUS=SIZE"), "{out}");

    let out = run(&mut s, "b STATUS INBOX (MESSAGES SIZE)").await;
    assert!(out.starts_with("* STATUS INBOX (MESSAGES 0 SIZE 0)\r\n"), "{out}");
    append(&mut s, "INBOX", "", MESSAGE).await;
    append(&mut s, "INBOX", "\\Seen", "Subject: x\r\n\r\ny\r\n").await;
    let size = MESSAGE.len() + "Subject: x\r\n\r\ny\r\n".len();
    let out = run(&mut s, "c STATUS INBOX (SIZE)").await;
    assert!(out.starts_with(&format!("* STATUS INBOX (SIZE {size})\r\nc OK")), "{out}");
    // The same item through LIST-STATUS (RFC 5819).
    let out = run(&mut s, "d LIST \"\" INBOX RETURN (STATUS (SIZE))").await;
    assert!(out.contains(&format!("* STATUS INBOX (SIZE {size})\r\n")), "{out}");

    // The APPENDLIMIT item (imap-codec lacks it: the pre-decoder reads the list) gives the
    // capability's limit, alone or among other items, in STATUS and in LIST-STATUS.
    let out = run(&mut s, "e STATUS INBOX (APPENDLIMIT)").await;
    assert_eq!(out, format!("* STATUS INBOX (APPENDLIMIT {limit})\r\ne OK STATUS completed\r\n"));
    let out = run(&mut s, "f STATUS inbox (messages appendlimit size messages)").await;
    assert!(out.starts_with(&format!("* STATUS INBOX (MESSAGES 2 SIZE {size} APPENDLIMIT {limit})\r\nf OK")), "{out}");
    // (The harness answers what does not decode without a tag; the connection adds it.)
    let out = run(&mut s, "g STATUS INBOX (APPENDLIMIT BOGUS)").await;
    assert_eq!(out, "* BAD unknown STATUS item\r\n");
    let out = run(&mut s, "h STATUS Nonexistent (APPENDLIMIT)").await;
    assert!(out.starts_with("h NO"), "{out}");
    let out = run(&mut s, "i LIST \"\" INBOX RETURN (STATUS (APPENDLIMIT))").await;
    assert!(out.contains(&format!("* STATUS INBOX (APPENDLIMIT {limit})\r\ni OK")), "{out}");
}

#[tokio::test]
async fn append_over_the_advertised_limit_is_toobig() {
    let h = Harness::new();
    let mut config = SessionConfig::new("imap.example.test");
    config.allow_plaintext_auth = true;
    config.max_append = 16;
    let directory = directory();
    let mut s = Session::new(
        Arc::new(config),
        h.store.clone(),
        authenticator(directory.clone()),
        Quotas::new(h.store.clone(), directory),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        false,
    );
    assert!(run(&mut s, "a LOGIN alice@example.test pw").await.contains("a OK"));
    let out = run(&mut s, "b CAPABILITY").await;
    assert!(out.contains(" APPENDLIMIT=16"), "{out}");
    let out = append(&mut s, "INBOX", "", "Subject: x\r\n\r\n16 octets\r\n").await;
    assert!(out.starts_with("ap NO [TOOBIG]"), "{out}");
    let out = append(&mut s, "INBOX", "", "Subject: x\r\n\r\ny").await;
    assert!(out.contains("ap OK [APPENDUID"), "{out}");
    let out = run(&mut s, "c STATUS INBOX (MESSAGES)").await;
    assert!(out.starts_with("* STATUS INBOX (MESSAGES 1)"), "{out}");
}

/// A message with the fields SORT and THREAD read.
fn threaded(id: &str, refs: &str, subject: &str, date: &str, from: &str) -> String {
    let refs = if refs.is_empty() { String::new() } else { format!("References: {refs}\r\n") };
    format!("From: {from}\r\nSubject: {subject}\r\nDate: {date}\r\nMessage-ID: {id}\r\n{refs}\r\nbody\r\n")
}

#[tokio::test]
async fn sort_and_thread() {
    let h = Harness::new();
    let mut s = h.logged_in().await;
    let caps = run(&mut s, "c CAPABILITY").await;
    for cap in [" SORT ", " SORT=DISPLAY ", " THREAD=REFERENCES ", " THREAD=ORDEREDSUBJECT "] {
        assert!(caps.contains(cap), "{cap}: {caps}");
    }
    assert!(run(&mut s, "n SORT (ARRIVAL) UTF-8 ALL").await.starts_with("n BAD"), "SORT needs a mailbox");
    let messages = [
        threaded("<1@x>", "", "Lunch", "Mon, 01 Dec 2025 10:00:00 +0000", "Zoe <zoe@x>"),
        threaded("<2@x>", "<1@x>", "Re: Lunch", "Mon, 01 Dec 2025 09:30:00 -0100", "adam@x"),
        threaded("<3@x>", "", "[team] budget", "Sun, 30 Nov 2025 08:00:00 +0000", "Bob <bob@x>"),
        threaded("<4@x>", "<1@x> <2@x>", "Re: Re: lunch", "Tue, 02 Dec 2025 08:00:00 +0000", "carl@x"),
        threaded("<5@x>", "<9@x>", "Fwd: budget", "Mon, 01 Dec 2025 11:00:00 +0000", "anna@x"),
    ];
    append(&mut s, "INBOX", "", &threaded("<0@x>", "", "first", "Sat, 29 Nov 2025 08:00:00 +0000", "x@x")).await;
    for m in &messages {
        append(&mut s, "INBOX", "", m).await;
    }
    run(&mut s, "s SELECT INBOX").await;
    run(&mut s, "x STORE 1 +FLAGS.SILENT (\\Deleted)").await;
    run(&mut s, "x EXPUNGE").await;
    run(&mut s, "x STORE 1 +FLAGS.SILENT (\\Deleted)").await;
    // Sequence numbers 1..5 are UIDs 2..6.
    assert_eq!(run(&mut s, "a SORT (DATE) UTF-8 ALL").await, "* SORT 3 1 2 5 4\r\na OK SORT completed\r\n");
    assert_eq!(
        run(&mut s, "b SORT (SUBJECT REVERSE DATE) US-ASCII ALL").await,
        "* SORT 5 3 4 2 1\r\nb OK SORT completed\r\n"
    );
    assert_eq!(
        run(&mut s, "c SORT (REVERSE FROM) UTF-8 NOT DELETED").await,
        "* SORT 4 3 5 2\r\nc OK SORT completed\r\n"
    );
    assert_eq!(
        run(&mut s, "d UID SORT (DISPLAYFROM) UTF-8 UID 3:5").await,
        "* SORT 3 4 5\r\nd OK UID SORT completed\r\n"
    );
    assert_eq!(run(&mut s, "e SORT (ARRIVAL) UTF-8 SUBJECT nothing").await, "* SORT\r\ne OK SORT completed\r\n");
    let out = run(&mut s, "f SORT (SIZE) ISO-8859-1 ALL").await;
    assert!(out.starts_with("f NO [BADCHARSET"), "{out}");
    let out = run(&mut s, "g SORT (SIZE) UTF-8 MODSEQ 1").await;
    assert!(out.starts_with("* OK [HIGHESTMODSEQ ") && out.contains("(MODSEQ "), "{out}");
    assert_eq!(
        run(&mut s, "h THREAD REFERENCES UTF-8 ALL").await,
        "* THREAD (3 5)(1 2 4)\r\nh OK THREAD completed\r\n"
    );
    assert_eq!(
        run(&mut s, "i UID THREAD ORDEREDSUBJECT UTF-8 ALL").await,
        "* THREAD (4 6)(2 (3)(5))\r\ni OK UID THREAD completed\r\n"
    );
    assert!(run(&mut s, "j THREAD BOGUS UTF-8 ALL").await.starts_with("j BAD"));
}

#[tokio::test]
async fn create_special_use() {
    let h = Harness::new();
    let mut s = h.logged_in().await;
    assert!(run(&mut s, "c CAPABILITY").await.contains(" CREATE-SPECIAL-USE"));
    assert_eq!(run(&mut s, "a CREATE Outbox (USE (\\Sent))").await, "a OK CREATE completed\r\n");
    assert_eq!(run(&mut s, "b CREATE Plain (USE ())").await, "b OK CREATE completed\r\n");
    let out = run(&mut s, "l LIST \"\" \"*o*\"").await;
    assert_eq!(out, "* LIST (\\HasNoChildren \\Sent) \"/\" Outbox\r\nl OK LIST completed\r\n");
    assert_eq!(
        run(&mut s, "d CREATE Odd (USE (\\Important))").await,
        "d NO [USEATTR] unknown special use \\Important\r\n"
    );
    assert_eq!(
        run(&mut s, "e CREATE Every (USE (\\All))").await,
        "e NO [USEATTR] \\All is a virtual mailbox's use\r\n"
    );
    assert_eq!(
        run(&mut s, "f CREATE Two (USE (\\Drafts \\Trash))").await,
        "f NO [USEATTR] a mailbox has at most one special use here\r\n"
    );
    assert!(run(&mut s, "g CREATE Bad (USE (Sent))").await.starts_with("* BAD CREATE USE takes"));
    // Nothing was created by the refused commands.
    assert_eq!(run(&mut s, "h LIST \"\" Odd").await, "h OK LIST completed\r\n");
}

#[tokio::test]
async fn within_older_and_younger() {
    let h = Harness::new();
    let mut s = h.logged_in().await;
    assert!(run(&mut s, "c CAPABILITY").await.contains(" WITHIN"));
    let old = format!("ap APPEND INBOX \"01-Jan-2020 10:00:00 +0000\" {{{}+}}\r\n{MESSAGE}", MESSAGE.len());
    assert!(run(&mut s, &old).await.contains("ap OK"));
    append(&mut s, "INBOX", "", MESSAGE).await;
    run(&mut s, "s SELECT INBOX").await;
    assert_eq!(run(&mut s, "a SEARCH OLDER 3600").await, "* SEARCH 1\r\na OK SEARCH completed\r\n");
    assert_eq!(run(&mut s, "b UID SEARCH YOUNGER 3600").await, "* SEARCH 2\r\nb OK UID SEARCH completed\r\n");
    // Both: nothing is older and younger than an hour; OR covers all.
    assert_eq!(run(&mut s, "d SEARCH OLDER 3600 YOUNGER 3600").await, "* SEARCH\r\nd OK SEARCH completed\r\n");
    assert_eq!(run(&mut s, "e SEARCH OR OLDER 3600 YOUNGER 3600").await, "* SEARCH 1 2\r\ne OK SEARCH completed\r\n");
    // The largest interval reaches back past the 2020 message (2^32 s is ~136 years).
    assert_eq!(run(&mut s, "f SEARCH YOUNGER 4294967295").await, "* SEARCH 1 2\r\nf OK SEARCH completed\r\n");
    assert!(run(&mut s, "g SEARCH OLDER 0").await.starts_with("* BAD"));
}

#[tokio::test]
async fn searchres_saves_a_result_for_dollar() {
    let h = Harness::new();
    let mut s = h.logged_in().await;
    assert!(run(&mut s, "c CAPABILITY").await.contains(" SEARCHRES"));
    for i in 0..5 {
        append(&mut s, "INBOX", if i % 2 == 0 { "\\Flagged" } else { "" }, MESSAGE).await;
    }
    run(&mut s, "s SELECT INBOX").await;
    // Before any SAVE, `$` is empty.
    assert_eq!(run(&mut s, "a0 FETCH $ (UID)").await, "a0 OK FETCH completed\r\n");
    // SAVE alone: no ESEARCH.
    assert_eq!(run(&mut s, "a SEARCH RETURN (SAVE) FLAGGED").await, "a OK SEARCH completed\r\n");
    assert_eq!(
        run(&mut s, "b FETCH $ (UID)").await,
        "* 1 FETCH (UID 1)\r\n* 3 FETCH (UID 3)\r\n* 5 FETCH (UID 5)\r\nb OK FETCH completed\r\n"
    );
    assert_eq!(run(&mut s, "c UID SEARCH NOT $").await, "* SEARCH 2 4\r\nc OK UID SEARCH completed\r\n");
    assert_eq!(
        run(&mut s, "c2 SEARCH OR UID 2 $ NOT SUBJECT $").await,
        "* SEARCH 1 2 3 5\r\nc2 OK SEARCH completed\r\n"
    );
    // An expunged message drops out of the result; the others keep their place by UID.
    run(&mut s, "d UID STORE 3 +FLAGS.SILENT (\\Deleted)").await;
    assert_eq!(run(&mut s, "e EXPUNGE").await, "* 3 EXPUNGE\r\ne OK EXPUNGE completed\r\n");
    assert_eq!(
        run(&mut s, "f FETCH $ (UID)").await,
        "* 1 FETCH (UID 1)\r\n* 4 FETCH (UID 5)\r\nf OK FETCH completed\r\n"
    );
    // SAVE with MIN alone keeps the message MIN names.
    assert_eq!(
        run(&mut s, "g SEARCH RETURN (SAVE MIN) FLAGGED").await,
        "* ESEARCH (TAG \"g\") MIN 1\r\ng OK SEARCH completed\r\n"
    );
    assert_eq!(run(&mut s, "h UID FETCH $ (UID)").await, "* 1 FETCH (UID 1)\r\nh OK UID FETCH completed\r\n");
    assert!(run(&mut s, "i UID COPY $ Trash").await.starts_with("i OK [COPYUID "));
    assert!(run(&mut s, "j STORE $ +FLAGS (\\Seen)").await.starts_with("* 1 FETCH (FLAGS (\\Flagged \\Seen"));
    // SAVE with ALL and `$` in its own criteria: the new result replaces the old.
    assert_eq!(
        run(&mut s, "k UID SEARCH RETURN (SAVE ALL) OR $ UID 4").await,
        "* ESEARCH (TAG \"k\") UID ALL 1,4\r\nk OK UID SEARCH completed\r\n"
    );
    // A failed SAVE empties the result.
    assert!(run(&mut s, "l SEARCH RETURN (SAVE) CHARSET KOI8-R ALL").await.starts_with("l NO [BADCHARSET"));
    assert_eq!(run(&mut s, "m SEARCH $").await, "* SEARCH\r\nm OK SEARCH completed\r\n");
    // SELECT forgets it.
    run(&mut s, "n SEARCH RETURN (SAVE) ALL").await;
    run(&mut s, "o SELECT INBOX").await;
    assert_eq!(run(&mut s, "p UID MOVE $ Trash").await, "p OK UID MOVE completed\r\n");
    assert!(
        run(&mut s, "q SEARCH $ UID 4294967295:4294967295").await.starts_with("* BAD a sequence set of 4294967295")
    );
}

#[tokio::test]
async fn compress_deflate_is_accepted_once_after_login() {
    let h = Harness::new();
    let mut s = h.session(true);
    assert!(run(&mut s, "c CAPABILITY").await.contains(" COMPRESS=DEFLATE"));
    assert_eq!(run(&mut s, "a COMPRESS DEFLATE").await, "a BAD log in first\r\n");
    let mut s = h.logged_in().await;
    let (out, next) = run_next(&mut s, "b COMPRESS DEFLATE").await;
    assert_eq!((out.as_str(), next), ("b OK DEFLATE active\r\n", Next::Compress));
    assert_eq!(run(&mut s, "c COMPRESS DEFLATE").await, "c NO [COMPRESSIONACTIVE] DEFLATE is already active\r\n");
    assert_eq!(run(&mut s, "d COMPRESS GZIP").await, "* BAD syntax error in command\r\n");
}

/// A MULTIAPPEND (RFC 3502) of `messages`, each `(options, text)`, as one command.
fn multiappend(tag: &str, mailbox: &str, messages: &[(&str, &str)]) -> String {
    let mut wire = format!("{tag} APPEND {mailbox}");
    for (options, text) in messages {
        let options = if options.is_empty() { String::new() } else { format!(" {options}") };
        wire += &format!("{options} {{{}+}}\r\n{text}", text.len());
    }
    wire
}

/// The session of a user with limits of its own for APPEND.
fn session_with(h: &Harness, limits: impl FnOnce(&mut SessionConfig)) -> Session {
    let mut config = SessionConfig::new("imap.example.test");
    config.allow_plaintext_auth = true;
    limits(&mut config);
    let directory = directory();
    Session::new(
        Arc::new(config),
        h.store.clone(),
        authenticator(directory.clone()),
        Quotas::new(h.store.clone(), directory),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        false,
    )
}

#[tokio::test]
async fn multiappend_stores_every_message_and_names_their_uids() {
    let h = Harness::new();
    let mut s = h.logged_in().await;
    assert!(run(&mut s, "c CAPABILITY").await.contains(" MULTIAPPEND "));
    run(&mut s, "s SELECT INBOX").await;
    append(&mut s, "INBOX", "", MESSAGE).await;
    let command = multiappend(
        "m",
        "INBOX",
        &[
            ("(\\Seen)", "Subject: one\r\n\r\n1\r\n"),
            ("\"01-Feb-2026 10:00:00 +0000\"", "Subject: two\r\n\r\n2\r\n"),
            ("(\\Flagged $Work) \"02-Feb-2026 11:30:00 +0100\"", "Subject: three\r\n\r\n3\r\n"),
        ],
    );
    let out = run(&mut s, &command).await;
    let exists = out.find("* 4 EXISTS\r\n").expect(&out);
    let ok = out.find("m OK [APPENDUID ").expect(&out);
    assert!(exists < ok, "{out}");
    assert!(out.contains(" 2:4] APPEND completed\r\n"), "{out}");
    let out = run(&mut s, "f UID FETCH 2:4 (FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])").await;
    let line = |n: u32| out.split("\r\n* ").find(|l| l.contains(&format!("UID {n} "))).unwrap_or_default().to_string();
    assert!(line(2).contains("\\Seen") && line(2).contains("Subject: one"), "{out}");
    assert!(line(3).contains("\"01-Feb-2026 10:00:00 +0000\"") && line(3).contains("Subject: two"), "{out}");
    assert!(!line(3).contains("\\Seen") && !line(3).contains("\\Flagged"), "{out}");
    assert!(line(4).contains("\\Flagged") && line(4).contains("$Work") && line(4).contains("Subject: three"), "{out}");
    assert!(line(4).contains("\"02-Feb-2026 10:30:00 +0000\""), "{out}");
}

/// RFC 3502 §6: when one message cannot be stored, none of them remains. Here the store refuses
/// the second message (the mailbox would have more keywords than it keeps), after the first was
/// stored: the first is taken away again, and only UIDNEXT shows that it was there.
#[tokio::test]
async fn multiappend_a_message_the_store_refuses_leaves_none() {
    let h = Harness::new();
    let mut s = h.logged_in().await;
    let mut watcher = h.logged_in().await;
    run(&mut watcher, "w SELECT INBOX").await;
    let keywords = |prefix: &str, n: usize| (0..n).map(|i| format!("{prefix}{i}")).collect::<Vec<_>>().join(" ");
    let (first, second) = (format!("({})", keywords("a", 20)), format!("({})", keywords("b", 20)));
    let command =
        multiappend("m", "INBOX", &[(&first, "Subject: one\r\n\r\n1\r\n"), (&second, "Subject: two\r\n\r\n2\r\n")]);
    let out = run(&mut s, &command).await;
    assert!(out.starts_with("m NO [LIMIT]"), "{out}");
    let out = run(&mut s, "t STATUS INBOX (MESSAGES UIDNEXT)").await;
    assert!(out.starts_with("* STATUS INBOX (MESSAGES 0 UIDNEXT 2)"), "{out}");
    // Another session may have seen the first come and go, and knows no message now.
    run(&mut watcher, "n NOOP").await;
    let out = run(&mut watcher, "f FETCH 1:* UID").await;
    assert!(!out.contains("FETCH (UID"), "{out}");
}

/// What the session can check before storing anything is checked for every message first: a
/// flag, a size, the number of messages, the total and the quota. Nothing is stored.
#[tokio::test]
async fn multiappend_checks_every_message_before_storing_any() {
    let h = Harness::new();
    let mut s = session_with(&h, |c| {
        c.max_append = 64;
        c.max_append_messages = 3;
        c.max_append_command = 100;
    });
    assert!(run(&mut s, "a LOGIN alice@example.test pw").await.contains("a OK"));
    let small = "Subject: s\r\n\r\nsmall\r\n";
    let big = format!("Subject: b\r\n\r\n{}\r\n", "x".repeat(60));
    // 56 octets each: within the limit alone, past it together.
    let (x, y) = ("Subject: x\r\n\r\n".repeat(4), "Subject: y\r\n\r\n".repeat(4));
    let cases = [
        (vec![("", small), ("(\\Bogus)", small)], "m BAD unknown system flag"),
        (vec![("", small), ("", big.as_str())], "m NO [TOOBIG] message too large"),
        (vec![("", small); 4], "m NO [LIMIT] too many messages in one APPEND (limit 3)"),
        (vec![("", x.as_str()), ("", y.as_str())], "m NO [TOOBIG] messages too large together"),
    ];
    for (messages, expected) in cases {
        let out = run(&mut s, &multiappend("m", "INBOX", &messages)).await;
        assert!(out.starts_with(expected), "{out}");
    }
    // A date that is no date, in the second message: the command does not decode.
    let out = run(&mut s, &multiappend("m", "INBOX", &[("", small), ("\"31-Foo-2026 10:00:00 +0000\"", small)])).await;
    assert!(out.starts_with("* BAD syntax error"), "{out}");
    let out = run(&mut s, "t STATUS INBOX (MESSAGES UIDNEXT)").await;
    assert!(out.starts_with("* STATUS INBOX (MESSAGES 0 UIDNEXT 1)"), "{out}");

    // quota@example.test may store 10 KiB: each message would fit, both do not.
    let mut q = h.logged_in_as("quota@example.test").await;
    let half = format!("Subject: q\r\n\r\n{}\r\n", "q".repeat(6000));
    let out = run(&mut q, &multiappend("q", "INBOX", &[("", &half), ("", &half)])).await;
    assert!(out.starts_with("q NO [OVERQUOTA]"), "{out}");
    let out = run(&mut q, "t STATUS INBOX (MESSAGES)").await;
    assert!(out.starts_with("* STATUS INBOX (MESSAGES 0)"), "{out}");
    let out = run(&mut q, &multiappend("q", "INBOX", &[("", &half)])).await;
    assert!(out.contains("q OK [APPENDUID"), "{out}");
}

/// Messages the connection wrote to spill files arrive as empty literals, each matched to its
/// file by where it stands in the command, whichever of the messages were spilled.
#[tokio::test]
async fn multiappend_takes_spilled_messages_by_their_place() {
    let h = Harness::new();
    let mut s = h.logged_in().await;
    let wire = b"m APPEND INBOX {0}\r\n (\\Seen) {16}\r\nSubject: two\r\n\r\n {0}\r\n\r\n".to_vec();
    let first_at = wire.windows(5).position(|w| w == b"{0}\r\n").map(|p| p + 5).unwrap();
    let third_at = wire.len() - 2;
    let spilled = vec![
        (first_at, bytes::Bytes::from_static(b"Subject: first\r\n\r\nspilled\r\n")),
        (third_at, bytes::Bytes::from_static(b"Subject: third\r\n\r\nspilled\r\n")),
    ];
    let decoded = extension::decode(&wire).expect("decodes");
    let mut out = Vec::new();
    s.execute(Decoded { spilled, ..decoded }, &mut out).await.unwrap();
    let out = String::from_utf8_lossy(&out).into_owned();
    assert!(out.contains("m OK [APPENDUID ") && out.contains(" 1:3] "), "{out}");
    run(&mut s, "s SELECT INBOX").await;
    let out = run(&mut s, "f FETCH 1:3 (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])").await;
    let at = |text: &str| out.find(text).expect(&out);
    assert!(at("* 1 FETCH") < at("Subject: first") && at("Subject: first") < at("* 2 FETCH"), "{out}");
    assert!(at("* 2 FETCH (FLAGS (\\Seen") < at("Subject: two") && at("Subject: two") < at("* 3 FETCH"), "{out}");
    assert!(at("* 3 FETCH") < at("Subject: third"), "{out}");
}

/// IMAP4rev2 (RFC 9051), not advertised yet, once enabled: no `\Recent` flag and no RECENT
/// response (Appendix E), SEARCH answered with ESEARCH (§6.4.4); a rev1 session beside it
/// keeps both, and gets the `\Recent` the rev2 session did not take.
#[tokio::test]
async fn imap4rev2_once_enabled_has_no_recent_and_answers_search_with_esearch() {
    let h = Harness::new();
    let mut s = h.logged_in().await;
    assert!(!run(&mut s, "c CAPABILITY").await.contains("IMAP4rev2"));
    append(&mut s, "INBOX", "", MESSAGE).await;
    let out = run(&mut s, "e ENABLE IMAP4rev2").await;
    assert!(out.starts_with("* ENABLED IMAP4rev2\r\ne OK"), "{out}");
    let out = run(&mut s, "s SELECT INBOX").await;
    assert!(out.contains("* 1 EXISTS\r\n") && !out.contains("RECENT"), "{out}");
    let out = run(&mut s, "f FETCH 1 FLAGS").await;
    assert!(out.starts_with("* 1 FETCH (FLAGS ())"), "{out}");
    let out = run(&mut s, "q SEARCH ALL").await;
    assert!(out.starts_with("* ESEARCH (TAG \"q\") ALL 1\r\nq OK"), "{out}");
    let out = run(&mut s, "u UID SEARCH DELETED").await;
    assert!(out.starts_with("* ESEARCH (TAG \"u\") UID\r\nu OK"), "{out}");
    // A message appended meanwhile: EXISTS alone.
    let mut other = h.logged_in().await;
    append(&mut other, "INBOX", "", MESSAGE).await;
    let out = run(&mut s, "n NOOP").await;
    assert!(out.contains("* 2 EXISTS\r\n") && !out.contains("RECENT"), "{out}");

    let out = run(&mut other, "s SELECT INBOX").await;
    assert!(out.contains("* 2 EXISTS\r\n* 2 RECENT\r\n"), "{out}");
    let out = run(&mut other, "f FETCH 1 FLAGS").await;
    assert!(out.starts_with("* 1 FETCH (FLAGS (\\Recent))"), "{out}");
    let out = run(&mut other, "q SEARCH ALL").await;
    assert!(out.starts_with("* SEARCH 1 2\r\n"), "{out}");
}

/// Messages whose headers SEARCH's header keys must read right: an RFC 2047 encoded-word
/// Subject and a quoted display name, folded fields, a header mail-parser makes no sense of
/// (with header-like lines in its body), and a message that is all header.
const TRICKY: [&str; 4] = [
    "From: \"Muller, Jorg\" <jm@example.test>\r\nTo: alice@example.test\r\n\
     Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=\r\nX-Tag: t1\r\n\r\nbody one\r\nX-Tag: t9\r\n",
    "From: Carol\r\n <carol@example.test>\r\nSubject: a long\r\n folded subject line\r\n\
     X-Tag: t2,\r\n\tcontinued tag\r\nDate: Tue, 04 Mar 2025 10:00:00 +0100\r\n\r\nbody two\r\n",
    "\u{1}\u{2} not a header line\r\nno colon here either\r\n\r\nSubject: in the body\r\nX-Tag: t3\r\n",
    "Subject: only a header\r\nX-Tag: t4",
];

/// Header-key searches over [`TRICKY`] and what they find.
const HEADER_SEARCHES: [(&str, &str); 11] = [
    ("SUBJECT \"aus K\"", "1"),
    ("SUBJECT \"folded subject\"", "2"),
    ("HEADER X-Tag continued", "2"),
    ("FROM \"ller, J\"", "1"),
    ("FROM carol", "2"),
    ("SUBJECT \"in the body\"", ""),
    ("HEADER X-Tag t", "1 2 4"),
    ("HEADER X-Tag t9", ""),
    ("SUBJECT \"only a header\"", "4"),
    ("SENTON 4-Mar-2025", "2"),
    ("NOT SUBJECT aus", "2 3 4"),
];

/// A harness with [`TRICKY`] in alice's INBOX, selected.
async fn tricky_inbox() -> (Harness, Session) {
    let h = Harness::new();
    let mut s = h.logged_in().await;
    for message in TRICKY {
        assert!(append(&mut s, "INBOX", "", message).await.contains("ap OK"));
    }
    run(&mut s, "s SELECT INBOX").await;
    (h, s)
}

#[tokio::test]
async fn header_searches_answer_alike_from_the_files_and_from_the_cache() {
    use crate::imap::mime::cache::Structure;
    use sirms_storage::UidSet;
    for (criteria, want) in HEADER_SEARCHES {
        let want = if want.is_empty() { "* SEARCH\r\n".to_owned() } else { format!("* SEARCH {want}\r\n") };
        let (h, mut s) = tricky_inbox().await;
        // With a BODY key every message is read and parsed whole: the answer without any cache.
        let whole = run(&mut s, &format!("w SEARCH {criteria} NOT BODY no-such-text")).await;
        assert_eq!(whole, format!("{want}w OK SEARCH completed\r\n"), "{criteria}, whole messages");
        let cached = h.store.cache_get("alice@example.test", "INBOX", &UidSet::all()).await.expect("cache");
        assert!(cached.is_empty(), "a BODY search keeps nothing");
        // The first header search reads the files and keeps each message's header block…
        let files = run(&mut s, &format!("f SEARCH {criteria}")).await;
        assert_eq!(files, format!("{want}f OK SEARCH completed\r\n"), "{criteria}, from the files");
        let cached = h.store.cache_get("alice@example.test", "INBOX", &UidSet::all()).await.expect("cache");
        let headers: Vec<bool> =
            cached.iter().filter_map(|c| Structure::decode(&c.data)).map(|s| s.header.is_some()).collect();
        assert_eq!(headers, [true; 4], "{criteria}: every header block is kept");
        // …which the next one reads instead.
        let from_cache = run(&mut s, &format!("c SEARCH {criteria}")).await;
        assert_eq!(from_cache, format!("{want}c OK SEARCH completed\r\n"), "{criteria}, from the cache");
    }
}

#[tokio::test]
async fn header_searches_read_the_cached_header_not_the_message() {
    use crate::imap::mime::cache::Structure;
    use bytes::Bytes;
    use sirms_storage::Cached;
    let (h, mut s) = tricky_inbox().await;
    run(&mut s, "f FETCH 1:* (ENVELOPE)").await;
    // Message 2's entry now says another Subject than its file: a search that answers from the
    // entry finds the planted words and no longer the file's.
    let planted = Structure::of(b"Subject: planted words\r\n\r\nbody\r\n");
    assert!(planted.header.is_some());
    let plant = |data: Bytes| vec![Cached { uid: 2, data }];
    h.store.cache_put("alice@example.test", "INBOX", plant(planted.encode())).await.expect("plant");
    assert_eq!(run(&mut s, "a SEARCH SUBJECT planted").await, "* SEARCH 2\r\na OK SEARCH completed\r\n");
    assert_eq!(run(&mut s, "b SEARCH SUBJECT folded").await, "* SEARCH\r\nb OK SEARCH completed\r\n");
    // An entry without the header block (one too large to keep) sends the search to the file.
    let headless = Structure { header: None, ..planted };
    h.store.cache_put("alice@example.test", "INBOX", plant(headless.encode())).await.expect("plant");
    assert_eq!(run(&mut s, "c SEARCH SUBJECT planted").await, "* SEARCH\r\nc OK SEARCH completed\r\n");
    assert_eq!(run(&mut s, "d SEARCH SUBJECT folded").await, "* SEARCH 2\r\nd OK SEARCH completed\r\n");
}
