//! Helpers shared by the integration tests.
#![allow(dead_code)]

use sirms_sieve::{Action, Environment, Limits, Outcome, parse};

/// A plain message from a colleague.
pub const MSG: &str = "From: Alice <alice@example.com>\r\n\
To: Me <me@example.com>\r\n\
Cc: bob@example.org, carol@example.net\r\n\
Subject: [acme-users] [fwd] version 1.0 is out\r\n\
List-ID: Sieve list <sieve.ietf.org@lists.example>\r\n\
X-Priority: 2\r\n\
Message-ID: <1@example.com>\r\n\
\r\n\
Hello, this mail will MAKE MONEY FAST.\r\n";

pub fn run_with(script: &str, env: &Environment<'_>) -> Outcome {
    let s = parse(script, &Limits::default()).unwrap_or_else(|e| panic!("{e}"));
    s.run(env)
}

pub fn run(script: &str, msg: &str) -> Outcome {
    let mut env = Environment::new(msg.as_bytes());
    env.envelope_from = "alice@example.com";
    env.envelope_to = "me+lists@example.com";
    run_with(script, &env)
}

pub fn actions(script: &str, msg: &str) -> Vec<Action> {
    let out = run(script, msg);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    out.actions
}

pub fn keep() -> Action {
    Action::Keep { flags: vec![] }
}

pub fn fileinto(mailbox: &str) -> Action {
    Action::FileInto { mailbox: mailbox.into(), flags: vec![], create: false }
}

pub fn error(script: &str) -> sirms_sieve::SieveError {
    match parse(script, &Limits::default()) {
        Ok(_) => panic!("script accepted: {script}"),
        Err(e) => e,
    }
}
