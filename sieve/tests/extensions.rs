//! The extensions, mostly with their RFCs' own examples.

mod common;

use common::*;
use sirms_sieve::{Action, Environment};

fn flagged(mailbox: &str, flags: &[&str]) -> Action {
    Action::FileInto { mailbox: mailbox.into(), flags: flags.iter().map(|s| s.to_string()).collect(), create: false }
}

#[test]
fn fileinto_copy_create_redirect_copy() {
    let s = "require [\"fileinto\", \"copy\", \"mailbox\"]; fileinto :copy :create \"Archive\";";
    assert_eq!(
        actions(s, MSG),
        vec![Action::FileInto { mailbox: "Archive".into(), flags: vec![], create: true }, keep()]
    );
    let s = "require \"copy\"; redirect :copy \"other@example.net\";";
    assert_eq!(actions(s, MSG), vec![Action::Redirect { address: "other@example.net".into(), copy: true }, keep()]);
    assert_eq!(error("require \"fileinto\"; fileinto :create \"x\";").message, "\":create\" needs require \"mailbox\"");
    assert_eq!(error("redirect :copy \"a@b\";").message, "\":copy\" needs require \"copy\"");
}

#[test]
fn reject_and_ereject() {
    let s = "require \"reject\"; if header :contains \"subject\" \"version\" { reject \"I don't want it\"; }";
    assert_eq!(actions(s, MSG), vec![Action::Reject { reason: "I don't want it".into(), extended: false }]);
    let s = "require \"ereject\"; ereject \"no\";";
    assert_eq!(actions(s, MSG), vec![Action::Reject { reason: "no".into(), extended: true }]);
    assert_eq!(error("reject \"x\";").message, "command \"reject\" needs require \"reject\"");
    // Redirect is allowed alongside a reject; keep and fileinto are not.
    let s = "require \"reject\"; redirect \"a@b.example\"; reject \"x\";";
    assert_eq!(actions(s, MSG).len(), 2);
}

#[test]
fn imap4flags() {
    let s = r#"require ["imap4flags", "fileinto"];
        addflag "\\Seen";
        addflag ["\\Flagged", "\\seen"];
        fileinto "A";
        removeflag "\\Flagged";
        fileinto :flags "$Junk  \\Answered" "B";
        if hasflag :contains "seen" { fileinto "C"; }
        if hasflag "\\Flagged" { fileinto "D"; }
        setflag "x";
        if hasflag :count "eq" :comparator "i;ascii-numeric" "1" { fileinto "E"; }
        "#;
    let s = s.replace(
        "require [\"imap4flags\", \"fileinto\"];",
        "require [\"imap4flags\", \"fileinto\", \"relational\", \"comparator-i;ascii-numeric\"];",
    );
    assert_eq!(
        actions(&s, MSG),
        vec![
            flagged("A", &["\\Seen", "\\Flagged"]),
            flagged("B", &["$Junk", "\\Answered"]),
            flagged("C", &["\\Seen"]),
            flagged("E", &["x"]),
        ]
    );
    // The implicit keep takes the flags current at the end (RFC 5232 §3).
    assert_eq!(
        actions("require \"imap4flags\"; setflag \"\\\\Seen\";", MSG),
        vec![Action::Keep { flags: vec!["\\Seen".into()] }]
    );
    assert_eq!(
        actions("require \"imap4flags\"; keep :flags \"a b\";", MSG),
        vec![Action::Keep { flags: vec!["a".into(), "b".into()] }]
    );
}

#[test]
fn imap4flags_with_variables() {
    // RFC 5232 §5's example, in part.
    let s = r#"require ["imap4flags", "fileinto", "variables"];
        if header :contains "from" "alice@example.com" {
            setflag "flagvar" "\\Flagged";
            fileinto :flags "${flagvar}" "INBOX.From Boss";
        }
        addflag "flagvar" "\\Seen";
        if hasflag "flagvar" "\\Seen" { fileinto :flags "${flagvar}" "Both"; }"#;
    assert_eq!(
        actions(s, MSG),
        vec![flagged("INBOX.From Boss", &["\\Flagged"]), flagged("Both", &["\\Flagged", "\\Seen"])]
    );
}

#[test]
fn body() {
    let s = "require \"body\"; if body :text :contains \"MAKE MONEY FAST\" { discard; }";
    assert_eq!(actions(s, MSG), vec![Action::Discard]);
    let s = "require \"body\"; if body :raw :contains \"make money\" { discard; }";
    assert_eq!(actions(s, MSG), vec![Action::Discard]);
    let s = "require \"body\"; if body :contains \"Subject\" { discard; }";
    assert_eq!(actions(s, MSG), vec![keep()], "the header is not the body");
    let mime = "From: a@b.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n\
--XX\r\nContent-Type: text/plain\r\n\r\nhello there\r\n\
--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nbWlzc2lsZQ==\r\n\
--XX--\r\n";
    let s = "require \"body\"; if body :content \"text\" :contains \"missile\" { discard; }";
    assert_eq!(actions(s, mime), vec![keep()]);
    let s = "require \"body\"; if body :content \"application/octet-stream\" :contains \"missile\" { discard; }";
    assert_eq!(actions(s, mime), vec![Action::Discard]);
    let s = "require \"body\"; if body :content \"text/plain\" :is \"hello there\" { discard; }";
    assert_eq!(actions(s, mime), vec![Action::Discard]);
    let s = "require \"body\"; if body :raw :contains \"bWlzc2lsZQ==\" { discard; }";
    assert_eq!(actions(s, mime), vec![Action::Discard]);
    let html = "Content-Type: text/html\r\n\r\n<p>cheap <b>pills</b></p>\r\n";
    let s = "require \"body\"; if body :text :contains \"cheap pills\" { discard; }";
    assert_eq!(actions(s, html), vec![Action::Discard]);
    let s = "require \"body\"; if body :content \"text/html\" :contains \"<b>pills\" { discard; }";
    assert_eq!(actions(s, html), vec![Action::Discard]);
}

#[test]
fn variables_rfc_5229_examples() {
    let s = r#"require ["variables", "reject"];
        set "honorific"  "Mr";
        set "first_name" "Wile";
        set "last_name"  "Coyote";
        set "vacation" text:
Dear ${HONORIFIC} ${last_name},
I'm out, please leave a message after the meep.
.
;
        reject "${vacation}";"#;
    assert_eq!(
        actions(s, MSG),
        vec![Action::Reject {
            reason: "Dear Mr Coyote,\r\nI'm out, please leave a message after the meep.\r\n".into(),
            extended: false
        }]
    );
    let s = r#"require ["variables", "fileinto"];
        set "a" "juMBlEd lETters";
        set :lower :upperfirst "b" "${a}";
        set :upperfirst :lower "c" "${a}";
        set :length "d" "${a}";
        set :quotewildcard "e" "a*b";
        fileinto "${b}|${c}|${d}|${e}";"#;
    assert_eq!(actions(s, MSG), vec![fileinto("Jumbled letters|Jumbled letters|15|a\\*b")]);
}

#[test]
fn match_variables() {
    let s = r#"require ["variables", "fileinto"];
        if header :matches "List-ID" "*<*@*" { fileinto "INBOX.lists.${2}"; stop; }"#;
    assert_eq!(actions(s, MSG), vec![fileinto("INBOX.lists.sieve.ietf.org")]);
    let s = r#"require ["variables", "fileinto"];
        if header :matches "Subject" "[*] *" { fileinto "INBOX.lists.${1}"; stop; }"#;
    assert_eq!(actions(s, MSG), vec![fileinto("INBOX.lists.acme-users")]);
    let msg = "To: coyote@acme.example.com\r\n\r\n";
    let s = r#"require ["variables", "fileinto"];
        if address :matches ["To", "Cc"] ["coyote@**.com", "wile@**.com"] {
            fileinto "INBOX.business.${2}"; stop;
        }"#;
    assert_eq!(actions(s, msg), vec![fileinto("INBOX.business.acme.example")]);
    let s = r#"require ["variables", "fileinto"];
        set "x" "unchanged";
        if header :matches "Subject" "nothing*like*this" { set "x" "${1}"; }
        if string :is "${x}" "unchanged" { fileinto "${0}-${x}"; }"#;
    assert_eq!(actions(s, MSG), vec![fileinto("-unchanged")]);
}

#[test]
fn string_test() {
    let s = r#"require ["variables", "relational", "fileinto"];
        set "a" "x"; set "b" "";
        if string :count "eq" ["${a}", "${b}", "y"] "2" { fileinto "two"; }
        if string :is "${b}" "" { fileinto "empty"; }"#;
    assert_eq!(actions(s, MSG), vec![fileinto("two"), fileinto("empty")]);
}

#[test]
fn relational() {
    let msg = "To: a@x.example, b@x.example\r\nCc: c@x.example\r\nX-Priority: 2\r\n\r\n";
    let cases = [
        ("header :count \"ge\" :comparator \"i;ascii-numeric\" [\"to\", \"cc\"] [\"3\"]", false),
        ("address :count \"ge\" :comparator \"i;ascii-numeric\" [\"to\", \"cc\"] [\"3\"]", true),
        ("header :value \"lt\" :comparator \"i;ascii-numeric\" [\"x-priority\"] [\"3\"]", true),
        ("header :value \"gt\" :comparator \"i;ascii-numeric\" [\"x-priority\"] [\"10\"]", false),
        ("header :value \"gt\" [\"x-priority\"] [\"10\"]", true),
        ("header :value \"ne\" :comparator \"i;ascii-numeric\" [\"x-priority\"] [\"02\"]", false),
        ("header :count \"eq\" :comparator \"i;ascii-numeric\" \"x-nope\" \"0\"", true),
    ];
    for (test, want) in cases {
        let s = format!("require [\"relational\", \"comparator-i;ascii-numeric\"]; if {test} {{ discard; }}");
        assert_eq!(actions(&s, msg) == vec![Action::Discard], want, "{test}");
    }
}

#[test]
fn subaddress() {
    let base = "require [\"envelope\", \"subaddress\", \"fileinto\"];";
    let s = format!(
        "{base} if envelope :user \"to\" \"me\" {{ fileinto \"user\"; }} if envelope :detail \"to\" \"lists\" {{ fileinto \"detail\"; }}"
    );
    assert_eq!(actions(&s, MSG), vec![fileinto("user"), fileinto("detail")]);
    let mut env = Environment::new(MSG.as_bytes());
    env.envelope_to = "me@example.com";
    let s = format!("{base} if envelope :detail \"to\" \"*\" {{ fileinto \"detail\"; }}");
    assert_eq!(run_with(&s, &env).actions, vec![keep()], "no separator, no detail");
    env.envelope_to = "me+@example.com";
    let s = format!("{base} if envelope :detail \"to\" \"\" {{ fileinto \"empty\"; }}");
    assert_eq!(run_with(&s, &env).actions, vec![fileinto("empty")]);
    let msg = "To: ken+sieve@example.org\r\n\r\n";
    let s = "require [\"subaddress\", \"fileinto\"]; if address :detail \"to\" \"sieve\" { fileinto \"s\"; }";
    assert_eq!(actions(s, msg), vec![fileinto("s")]);
}

#[test]
fn spamtest() {
    let s = r#"require ["spamtest", "fileinto", "relational", "comparator-i;ascii-numeric"];
        if spamtest :value "eq" :comparator "i;ascii-numeric" "0" { fileinto "INBOX.unclassified"; }
        elsif spamtest :value "ge" :comparator "i;ascii-numeric" "6" { fileinto "INBOX.spam-trap"; }"#;
    let mut env = Environment::new(MSG.as_bytes());
    assert_eq!(run_with(s, &env).actions, vec![fileinto("INBOX.unclassified")]);
    env.spam_score = Some(8);
    assert_eq!(run_with(s, &env).actions, vec![fileinto("INBOX.spam-trap")]);
    env.spam_score = Some(0);
    assert_eq!(run_with(s, &env).actions, vec![keep()], "0 from the scanner means clean, which Sieve calls 1");
    env.spam_score = Some(200);
    assert_eq!(run_with(s, &env).actions, vec![fileinto("INBOX.spam-trap")]);
}

fn vacation_env<'a>(msg: &'a str, me: &'a [String]) -> Environment<'a> {
    let mut env = Environment::new(msg.as_bytes());
    env.envelope_from = "alice@example.com";
    env.envelope_to = "me@example.com";
    env.user_addresses = me;
    env
}

#[test]
fn vacation_replies() {
    let me = vec!["me@example.com".to_string()];
    let s = r#"require "vacation";
        vacation :days 23 :addresses ["tjs@example.edu", "ts4z@landru.example.edu"]
            "I'm away until October 19.  If it's an emergency, call 911, I guess." ;"#;
    let personal = MSG.replace("List-ID: Sieve list <sieve.ietf.org@lists.example>\r\n", "");
    // The List-ID makes MSG list mail, which gets no reply.
    assert_eq!(run_with(s, &vacation_env(MSG, &me)).actions, vec![keep()]);
    let out = run_with(s, &vacation_env(&personal, &me));
    assert_eq!(out.actions.len(), 2, "{:?}", out.actions);
    let Action::Vacation { days, to, subject, mime, handle, in_reply_to, .. } = &out.actions[0] else {
        panic!("{:?}", out.actions)
    };
    assert_eq!((*days, to.as_str(), *mime), (23, "alice@example.com", false));
    assert_eq!(subject, "Auto: [acme-users] [fwd] version 1.0 is out");
    assert_eq!(handle.len(), 16);
    assert_eq!(in_reply_to.as_deref(), Some("<1@example.com>"));
    assert_eq!(out.actions[1], keep());

    let s = r#"require "vacation";
        vacation :mime :handle "h1" :subject "Gone" :from "me@example.com" :days 0 text:
Content-Type: text/plain; charset=utf-8

Away.
.
;"#;
    let out = run_with(s, &vacation_env(&personal, &me));
    let Action::Vacation { days, subject, from, mime, handle, reason, .. } = &out.actions[0] else { panic!() };
    assert_eq!(
        (*days, subject.as_str(), from.as_deref(), *mime, handle.as_str()),
        (1, "Gone", Some("me@example.com"), true, "h1")
    );
    assert!(reason.starts_with("Content-Type: text/plain"));
}

#[test]
fn vacation_stays_quiet() {
    let me = vec!["me@example.com".to_string()];
    let s = "require \"vacation\"; vacation \"away\";";
    let replies = |msg: &str, from: &str, me: &[String]| {
        let mut env = vacation_env(msg, me);
        env.envelope_from = from;
        run_with(s, &env).actions.iter().any(|a| matches!(a, Action::Vacation { .. }))
    };
    let plain = "From: alice@example.com\r\nTo: me@example.com\r\n\r\nhi\r\n";
    assert!(replies(plain, "alice@example.com", &me));
    assert!(!replies(plain, "", &me), "null sender");
    assert!(!replies(plain, "MAILER-DAEMON@example.com", &me));
    assert!(!replies(plain, "owner-list@example.com", &me));
    assert!(!replies(plain, "me@example.com", &me), "own address");
    let auto = "Auto-Submitted: auto-replied\r\nTo: me@example.com\r\n\r\n";
    assert!(!replies(auto, "alice@example.com", &me));
    let auto_no = "Auto-Submitted: no\r\nTo: me@example.com\r\n\r\n";
    assert!(replies(auto_no, "alice@example.com", &me));
    let list = "List-Unsubscribe: <mailto:x@example.com>\r\nTo: me@example.com\r\n\r\n";
    assert!(!replies(list, "alice@example.com", &me));
    let bulk = "Precedence: Bulk\r\nTo: me@example.com\r\n\r\n";
    assert!(!replies(bulk, "alice@example.com", &me));
    let bcc = "To: someone@else.example\r\n\r\n";
    let nobody = Vec::new();
    // The envelope recipient counts as one of the user's addresses.
    assert!(!replies(bcc, "alice@example.com", &nobody));
    let cc = "To: someone@else.example\r\nCc: Me <ME@example.com>\r\n\r\n";
    assert!(replies(cc, "alice@example.com", &nobody));
    let other = "To: alias@example.org\r\n\r\n";
    assert!(!replies(other, "alice@example.com", &me));
    let with_alias = "require \"vacation\"; vacation :addresses \"alias@example.org\" \"away\";";
    let out = run_with(with_alias, &vacation_env(other, &me));
    assert!(matches!(out.actions[0], Action::Vacation { .. }));
    let twice = run_with("require \"vacation\"; vacation \"a\"; vacation \"b\";", &vacation_env(plain, &me));
    assert_eq!(twice.errors.len(), 1);
}

#[test]
fn ascii_numeric_comparator() {
    let s = "require \"comparator-i;ascii-numeric\"; if header :is :comparator \"i;ascii-numeric\" \"x-priority\" \"002\" { discard; }";
    assert_eq!(actions(s, MSG), vec![Action::Discard]);
    let e = error(
        "require \"comparator-i;ascii-numeric\"; if header :contains :comparator \"i;ascii-numeric\" \"a\" \"1\" {}",
    );
    assert!(e.message.contains("cannot be used with :contains"), "{e}");
}

#[test]
fn mailboxexists() {
    let s = r#"require ["mailbox", "fileinto"];
        if mailboxexists ["Lists", "INBOX"] { fileinto "Lists"; } else { fileinto :create "Lists"; }"#;
    let mut env = Environment::new(MSG.as_bytes());
    let boxes = vec!["INBOX".to_string()];
    env.mailboxes = &boxes;
    assert_eq!(
        run_with(s, &env).actions,
        vec![Action::FileInto { mailbox: "Lists".into(), flags: vec![], create: true }]
    );
    let boxes = vec!["INBOX".to_string(), "Lists".to_string()];
    env.mailboxes = &boxes;
    assert_eq!(run_with(s, &env).actions, vec![fileinto("Lists")]);
    assert_eq!(error("if mailboxexists \"x\" {}").message, "test \"mailboxexists\" needs require \"mailbox\"");
}
