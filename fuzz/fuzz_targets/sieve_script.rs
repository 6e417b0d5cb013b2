//! Fuzzes the Sieve language (`sirms_sieve::parse` and `Script::run`): what a user uploads
//! through ManageSieve and what every delivery to them then runs.
//!
//! Input: the script, taken lossily as UTF-8. When it parses, it runs over a fixed message
//! (with a list header, MIME parts and encoded words) and over a message made of the input
//! itself (so header and body tests see bytes the fuzzer controls), each with and without an
//! envelope sender and spam score, and with two mailboxes for `mailboxexists`.
//!
//! Checked:
//!
//! - nothing panics, in parsing or in running;
//! - a refused script's error has a line and a column (≥ 1), the line within the script, and
//!   reads `line N: …`;
//! - a run's actions are at most `max_actions` plus the implicit keep, redirects at most
//!   `max_redirects`; a run with errors is exactly one keep;
//! - no two `FileInto` name one mailbox and no two redirects one address (duplicates fold);
//!   at most one `Reject`, and never with a keep or fileinto; at most one `Vacation`, which
//!   answers the envelope sender with `days` in 1..=`max_vacation_days`; `Discard` only when
//!   nothing keeps or files the message; the outcome is never empty;
//! - running twice gives the same outcome.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sirms_sieve::{Action, Environment, Limits, Outcome, Script, parse};

const MESSAGE: &[u8] = b"From: Alice <alice@example.com>\r\n\
To: me@example.com, Bob <bob+tag@example.org>\r\n\
Subject: =?UTF-8?Q?caf=C3=A9?= [list] *money*\r\n\
List-Id: <list.example.com>\r\n\
X-Priority: 3\r\n\
Message-ID: <1@example.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=b\r\n\
\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nhello MAKE MONEY FAST\r\n\
--b\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n\
--b--\r\n";

fn limits() -> Limits {
    // Smaller than the defaults so that the fuzzer reaches each limit, and each input stays fast.
    Limits {
        max_actions: 8,
        max_redirects: 2,
        max_instructions: 2_000,
        max_variables: 16,
        max_work_steps: 2_000_000,
        ..Limits::default()
    }
}

fn check(script: &Script, limits: &Limits, env: &Environment<'_>) {
    let out = script.run(env);
    let again = script.run(env);
    assert_eq!(out, again);
    let Outcome { actions, errors } = out;
    if !errors.is_empty() {
        assert_eq!(actions.len(), 1);
        assert!(matches!(actions[0], Action::Keep { .. }));
        return;
    }
    assert!(actions.len() <= limits.max_actions + 1, "{actions:?}");
    let mut mailboxes = Vec::new();
    let mut addresses = Vec::new();
    let (mut rejects, mut vacations, mut delivered, mut discard) = (0, 0, false, false);
    for a in &actions {
        match a {
            Action::Keep { .. } => delivered = true,
            Action::FileInto { mailbox, .. } => {
                assert!(!mailbox.is_empty());
                assert!(!mailboxes.contains(mailbox), "{actions:?}");
                mailboxes.push(mailbox.clone());
                delivered = true;
            }
            Action::Redirect { address, .. } => {
                let lower = address.to_ascii_lowercase();
                assert!(!addresses.contains(&lower), "{actions:?}");
                assert!(address.contains('@'));
                addresses.push(lower);
            }
            Action::Reject { .. } => rejects += 1,
            Action::Discard => discard = true,
            Action::Vacation { days, to, .. } => {
                vacations += 1;
                assert!((1..=limits.max_vacation_days).contains(days));
                assert!(!to.is_empty());
                assert_eq!(to, env.envelope_from);
            }
        }
    }
    assert!(addresses.len() <= limits.max_redirects);
    assert!(rejects <= 1 && vacations <= 1);
    if rejects == 1 {
        assert!(!delivered, "{actions:?}");
    }
    if discard {
        assert!(!delivered);
    }
    // Whatever cancels the implicit keep leaves an action of its own.
    assert!(!actions.is_empty());
}

fuzz_target!(|data: &[u8]| {
    let source = String::from_utf8_lossy(data);
    let limits = limits();
    let script = match parse(&source, &limits) {
        Ok(script) => script,
        Err(e) => {
            assert!(e.line >= 1 && e.column >= 1);
            assert!(e.line <= source.matches('\n').count() + 1, "{e}");
            assert!(e.to_string().starts_with(&format!("line {}: ", e.line)));
            return;
        }
    };
    let me = ["me@example.com".to_string()];
    let mailboxes = ["INBOX".to_string(), "Lists".to_string()];
    for message in [MESSAGE, data] {
        let mut env = Environment::new(message);
        env.envelope_to = "me+box@example.com";
        env.user_addresses = &me;
        env.mailboxes = &mailboxes;
        check(&script, &limits, &env);
        env.envelope_from = "alice@example.com";
        env.spam_score = Some(data.len() as u8);
        check(&script, &limits, &env);
    }
});
