//! Arbitrary scripts and messages never panic (a cheap, deterministic stand-in for the fuzz
//! target, run with the tests).

mod common;

use common::MSG;
use sirms_sieve::{Environment, Limits, parse};

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "require",
    "if",
    "elsif",
    "else",
    "stop",
    "keep",
    "discard",
    "fileinto",
    "redirect",
    "reject",
    "ereject",
    "vacation",
    "set",
    "setflag",
    "addflag",
    "removeflag",
    "header",
    "address",
    "envelope",
    "exists",
    "size",
    "true",
    "false",
    "not",
    "allof",
    "anyof",
    "body",
    "string",
    "hasflag",
    "spamtest",
    ":is",
    ":contains",
    ":matches",
    ":value",
    ":count",
    ":comparator",
    ":all",
    ":localpart",
    ":domain",
    ":user",
    ":detail",
    ":over",
    ":under",
    ":copy",
    ":create",
    ":flags",
    ":raw",
    ":text",
    ":content",
    ":days",
    ":subject",
    ":from",
    ":addresses",
    ":mime",
    ":handle",
    ":lower",
    ":upper",
    ":length",
    ":quotewildcard",
    "\"fileinto\"",
    "\"variables\"",
    "\"imap4flags\"",
    "\"relational\"",
    "\"subaddress\"",
    "\"envelope\"",
    "\"body\"",
    "\"vacation\"",
    "\"copy\"",
    "\"reject\"",
    "\"mailbox\"",
    "\"spamtest\"",
    "\"comparator-i;ascii-numeric\"",
    "\"i;ascii-numeric\"",
    "\"i;octet\"",
    "\"ge\"",
    "\"eq\"",
    "\"to\"",
    "\"from\"",
    "\"subject\"",
    "\"*a?b*\"",
    "\"${1}\"",
    "\"${x}\"",
    "\"x\"",
    "\"a@b.example\"",
    "\"\\\\Seen\"",
    "\"text\"",
    "[",
    "]",
    "(",
    ")",
    "{",
    "}",
    ",",
    ";",
    "0",
    "10K",
    "3",
    "text:\nx\n..y\n.\n",
    "#c\n",
    "/*c*/",
    "\"",
    "\\",
    "é",
    "\u{0}",
];

const REQUIRE_ALL: &str = "require [\"fileinto\", \"variables\", \"imap4flags\", \"relational\", \"subaddress\", \"envelope\", \"body\", \"vacation\", \"copy\", \"reject\", \"ereject\", \"mailbox\", \"spamtest\", \"comparator-i;ascii-numeric\"];\n";

const ACTIONS: &[&str] = &[
    "keep",
    "discard",
    "stop",
    "fileinto",
    "redirect",
    "reject",
    "ereject",
    "vacation",
    "set",
    "setflag",
    "addflag",
    "removeflag",
];
const TESTS: &[&str] =
    &["header", "address", "envelope", "exists", "size", "true", "false", "body", "string", "hasflag", "spamtest"];
const ARGS: &[&str] = &[
    ":is",
    ":contains",
    ":matches",
    ":value \"ge\"",
    ":count \"lt\"",
    ":comparator \"i;ascii-numeric\"",
    ":comparator \"i;octet\"",
    ":all",
    ":localpart",
    ":domain",
    ":user",
    ":detail",
    ":over",
    ":under",
    ":copy",
    ":create",
    ":flags \"\\\\Seen x\"",
    ":raw",
    ":text",
    ":content \"text\"",
    ":days 2",
    ":subject \"s\"",
    ":from \"a@b.example\"",
    ":mime",
    ":handle \"h\"",
    ":lower",
    ":upperfirst",
    ":length",
    ":quotewildcard",
    "\"to\"",
    "\"from\"",
    "\"subject\"",
    "[\"to\", \"cc\"]",
    "\"*a?b*\"",
    "\"${1}\"",
    "\"${x}\"",
    "\"x\"",
    "\"a@b.example\"",
    "\"2\"",
    "10K",
    "3",
    "\"${0}@x.example\"",
];

fn gen_test(rng: &mut Rng, depth: u32) -> String {
    match rng.next() % 8 {
        0 if depth < 4 => format!("not {}", gen_test(rng, depth + 1)),
        1 if depth < 4 => {
            let n = 1 + rng.next() % 3;
            let tests: Vec<String> = (0..n).map(|_| gen_test(rng, depth + 1)).collect();
            format!("{} ({})", rng.pick(&["allof", "anyof"]), tests.join(", "))
        }
        _ => {
            let mut t = rng.pick(TESTS).to_string();
            for _ in 0..rng.next() % 3 {
                t.push(' ');
                t.push_str(rng.pick(ARGS));
            }
            // Most tests end with a header list and a key list.
            if !rng.one_in(4) {
                t.push_str(" [\"to\", \"subject\"] \"*a*\"");
            }
            t
        }
    }
}

fn gen_commands(rng: &mut Rng, depth: u32) -> String {
    let mut out = String::new();
    for _ in 0..1 + rng.next() % 4 {
        if depth < 4 && rng.one_in(3) {
            out.push_str(&format!("if {} {{ {} }}", gen_test(rng, depth), gen_commands(rng, depth + 1)));
            if rng.one_in(2) {
                out.push_str(&format!(" elsif {} {{ {} }}", gen_test(rng, depth), gen_commands(rng, depth + 1)));
            }
            if rng.one_in(2) {
                out.push_str(&format!(" else {{ {} }}", gen_commands(rng, depth + 1)));
            }
        } else {
            out.push_str(rng.pick(ACTIONS));
            for _ in 0..rng.next() % 3 {
                out.push(' ');
                out.push_str(rng.pick(ARGS));
            }
            // Most commands take one string last.
            if !rng.one_in(4) {
                out.push_str(" \"a${1}@b.example\"");
            }
            out.push(';');
        }
        out.push('\n');
    }
    out
}

fn check(script: &str, limits: &Limits) -> bool {
    match parse(script, limits) {
        Ok(s) => {
            let mut env = Environment::new(MSG.as_bytes());
            env.envelope_from = "x@y.example";
            env.spam_score = Some(7);
            let out = s.run(&env);
            assert!(!out.actions.is_empty());
            assert!(out.actions.len() <= limits.max_actions + 1);
            let out = s.run(&Environment::new(script.as_bytes()));
            assert!(!out.actions.is_empty());
            true
        }
        Err(e) => {
            assert!(e.line >= 1 && e.column >= 1);
            false
        }
    }
}

#[test]
fn generated_scripts() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let limits = Limits { max_actions: 8, max_instructions: 500, ..Limits::default() };
    let mut parsed = 0;
    for _ in 0..3000 {
        let script = format!("{REQUIRE_ALL}{}", gen_commands(&mut rng, 0));
        parsed += usize::from(check(&script, &limits));
    }
    assert!(parsed > 100, "only {parsed} scripts parsed");
}

#[test]
fn token_soup() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let limits = Limits { max_actions: 8, max_instructions: 500, ..Limits::default() };
    for _ in 0..3000 {
        let n = 1 + rng.next() % 40;
        let mut script = String::new();
        if !rng.one_in(4) {
            script.push_str(REQUIRE_ALL);
        }
        for _ in 0..n {
            script.push_str(rng.pick(WORDS));
            script.push(' ');
        }
        check(&script, &limits);
    }
}

#[test]
fn every_prefix_of_a_script() {
    let script = include_str!("../../fuzz/seeds/sieve_script/variables");
    let limits = Limits::default();
    for (i, _) in script.char_indices() {
        let _ = parse(&script[..i], &limits).map(|s| s.run(&Environment::new(&script.as_bytes()[i..])));
    }
}
