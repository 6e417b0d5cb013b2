//! The base language (RFC 5228): grammar, tests, actions, implicit keep, errors.

mod common;

use common::*;
use sirms_sieve::{Action, Environment, Limits, parse};

const EXAMPLE: &str = r#"#
# Example Sieve Filter
# Declare any optional features or extension used by the script
#
require ["fileinto"];

#
# Handle messages from known mailing lists
# Move messages from IETF filter discussion list to filter mailbox
#
if header :is "Sender" "owner-ietf-mta-filters@imc.org"
        {
        fileinto "filter";  # move to "filter" mailbox
        }
#
# Keep all messages to or from people in my company
#
elsif address :DOMAIN :is ["From", "To"] "example.com"
        {
        keep;               # keep in "In" mailbox
        }

#
# Try and catch unsolicited email.  If a message is not to me,
# or it contains a subject known to be spam, file it away.
#
elsif anyof (NOT address :all :contains
               ["To", "Cc", "Bcc"] "me@example.com",
             header :matches "subject"
               ["*make*money*fast*", "*university*dipl*mas*"])
        {
        fileinto "spam";   # move to "spam" mailbox
        }
else
        {
        # Move all other (non-company) mail to "personal"
        # mailbox.
        fileinto "personal";
        }
"#;

#[test]
fn section_9_example() {
    let list = "Sender: owner-ietf-mta-filters@imc.org\r\nFrom: x@imc.org\r\nTo: me@example.com\r\n\r\nhi\r\n";
    assert_eq!(actions(EXAMPLE, list), vec![fileinto("filter")]);
    let company = "From: boss@example.com\r\nTo: someone@else.org\r\n\r\nhi\r\n";
    assert_eq!(actions(EXAMPLE, company), vec![keep()]);
    let to_me_company = "From: x@other.org\r\nTo: me@example.com\r\n\r\nhi\r\n";
    assert_eq!(actions(EXAMPLE, to_me_company), vec![keep()]);
    let not_to_me = "From: x@other.org\r\nTo: you@other.org\r\n\r\nhi\r\n";
    assert_eq!(actions(EXAMPLE, not_to_me), vec![fileinto("spam")]);
    let spam = "From: x@other.org\r\nCc: me@example.com\r\nSubject: Make lots of MONEY fast\r\n\r\nhi\r\n";
    // To has no example.com address, so the company branch is skipped; the Cc makes it "to me".
    assert_eq!(actions(EXAMPLE, spam), vec![fileinto("spam")]);
    let personal = "From: x@other.org\r\nCc: Me <me@example.com>\r\nSubject: dinner\r\n\r\nhi\r\n";
    assert_eq!(actions(EXAMPLE, personal), vec![fileinto("personal")]);
}

#[test]
fn implicit_keep_and_its_cancellation() {
    assert_eq!(actions("", MSG), vec![keep()]);
    assert_eq!(actions("keep;", MSG), vec![keep()]);
    assert_eq!(actions("keep; keep;", MSG), vec![keep()]);
    assert_eq!(actions("discard;", MSG), vec![Action::Discard]);
    assert_eq!(actions("discard; keep;", MSG), vec![keep()]);
    assert_eq!(actions("require \"fileinto\"; fileinto \"a\"; fileinto \"a\";", MSG), vec![fileinto("a")]);
    assert_eq!(
        actions("require \"fileinto\"; fileinto \"a\"; keep; fileinto \"b\";", MSG),
        vec![fileinto("a"), keep(), fileinto("b")]
    );
    assert_eq!(
        actions("redirect \"x@example.org\";", MSG),
        vec![Action::Redirect { address: "x@example.org".into(), copy: false }]
    );
    assert_eq!(actions("redirect \"x@example.org\"; redirect \"X@example.org\";", MSG).len(), 1);
    assert_eq!(actions("stop; discard;", MSG), vec![keep()]);
}

#[test]
fn if_elsif_else_and_tests() {
    let script = r#"require "fileinto";
        if false { fileinto "a"; }
        elsif not true { fileinto "b"; }
        elsif allof (true, false) { fileinto "c"; }
        elsif anyof (false, true) { fileinto "d"; }
        else { fileinto "e"; }"#;
    assert_eq!(actions(script, MSG), vec![fileinto("d")]);
    // RFC 5228 §8.2: a test list holds at least one test.
    assert_eq!(error("if allof () { discard; }").message, "expected a test, found \")\"");
    assert_eq!(actions("if allof (true) { discard; }", MSG), vec![Action::Discard]);
}

#[test]
fn header_address_exists_size() {
    let cases = [
        ("header :contains \"subject\" \"VERSION\"", true),
        ("header :comparator \"i;octet\" :contains \"subject\" \"VERSION\"", false),
        ("header :is \"x-priority\" \"2\"", true),
        ("header :matches \"subject\" \"*1.?*\"", true),
        ("header :is \"nope\" \"\"", false),
        ("address :localpart \"from\" \"alice\"", true),
        ("address :domain :is \"cc\" \"example.net\"", true),
        ("address :all \"from\" \"Alice <alice@example.com>\"", false),
        ("address \"from\" \"ALICE@example.com\"", true),
        ("exists [\"From\", \"X-Priority\"]", true),
        ("exists [\"From\", \"X-Nope\"]", false),
        ("size :over 10", true),
        ("size :under 1K", true),
        ("size :over 1M", false),
        ("header :contains \"subject\" \"\"", true),
    ];
    for (test, want) in cases {
        let script = format!("if {test} {{ discard; }}");
        let got = actions(&script, MSG) == vec![Action::Discard];
        assert_eq!(got, want, "{test}");
    }
}

#[test]
fn encoded_words_are_decoded() {
    let msg = "Subject: =?UTF-8?Q?caf=C3=A9_time?=\r\n\r\nx\r\n";
    assert_eq!(actions("if header :is \"subject\" \"café time\" { discard; }", msg), vec![Action::Discard]);
}

#[test]
fn strings_and_comments() {
    let script = "if header :is \"subject\" \"a \\\"q\\\" \\\\ b\" /* comment\n over lines */ { discard; } # end";
    let msg = "Subject: a \"q\" \\ b\r\n\r\n";
    assert_eq!(actions(script, msg), vec![Action::Discard]);
    let script = "require \"reject\";\nreject text:\n.. leading dot\nline two\n.\n;";
    assert_eq!(
        actions(script, MSG),
        vec![Action::Reject { reason: ". leading dot\r\nline two\r\n".into(), extended: false }]
    );
}

#[test]
fn envelope() {
    let script = "require \"envelope\"; if envelope :domain \"to\" \"example.com\" { discard; }";
    assert_eq!(actions(script, MSG), vec![Action::Discard]);
    let script = "require \"envelope\"; if envelope :all \"from\" \"\" { discard; }";
    let mut env = Environment::new(MSG.as_bytes());
    env.envelope_from = "";
    assert_eq!(run_with(script, &env).actions, vec![Action::Discard]);
    assert_eq!(actions(script, MSG), vec![keep()]);
}

#[test]
fn runtime_errors_fall_back_to_keep() {
    let out = run("require [\"reject\", \"fileinto\"]; fileinto \"a\"; reject \"no\";", MSG);
    assert_eq!(out.actions, vec![keep()]);
    assert_eq!(out.errors.len(), 1);
    let out = run("require [\"reject\"]; reject \"no\"; keep;", MSG);
    assert_eq!(out.actions, vec![keep()]);
    assert!(!out.errors.is_empty());
    let out = run("require [\"reject\"]; reject \"no\"; reject \"again\";", MSG);
    assert!(!out.errors.is_empty());
}

#[test]
fn unparsable_messages_are_harmless() {
    let script = parse(
        "require [\"body\", \"envelope\"]; if anyof (header :contains \"a\" \"b\", body :contains \"x\", address \"to\" \"y\", exists \"z\") { discard; }",
        &Limits::default(),
    )
    .unwrap();
    for msg in [&b""[..], b"\r\n", b"no header at all", b"\xff\xfe:\r\n\r\n\xff", b"To: <<<@@@>>>\r\n\r\n"] {
        let out = script.run(&Environment::new(msg));
        assert!(out.errors.is_empty());
    }
}
