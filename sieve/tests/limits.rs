//! Every limit in `Limits` is enforced, and large inputs stay cheap.

mod common;

use std::time::Instant;

use common::*;
use sirms_sieve::{Action, Environment, Limits, parse};

#[test]
fn script_size() {
    let limits = Limits { max_script_size: 100, ..Limits::default() };
    let e = parse(&format!("keep;{}", " ".repeat(100)), &limits).unwrap_err();
    assert_eq!(e.to_string(), "line 1: script too large (105 bytes, at most 100)");
    assert!(parse(&" ".repeat(100), &limits).is_ok());
}

#[test]
fn nesting() {
    let limits = Limits::default();
    let nested = |n: usize| format!("{}keep;{}", "if true {".repeat(n), "}".repeat(n));
    assert!(parse(&nested(15), &limits).is_ok());
    // The innermost "if" at depth 16 has its test one level deeper still.
    let e = parse(&nested(16), &limits).unwrap_err();
    assert_eq!((e.line, e.message.as_str()), (1, "tests nested too deeply"));
    let nots = |n: usize| format!("if {}true {{ keep; }}", "not ".repeat(n));
    assert!(parse(&nots(10), &limits).is_ok());
    assert_eq!(parse(&nots(40), &limits).unwrap_err().message, "tests nested too deeply");
    let lists = |n: usize| format!("if {}true{} {{ keep; }}", "anyof(".repeat(n), ")".repeat(n));
    assert_eq!(parse(&lists(40), &limits).unwrap_err().message, "tests nested too deeply");
    // Deep input must not exhaust the stack either way.
    assert!(parse(&"if true {".repeat(100_000), &Limits { max_script_size: usize::MAX, ..limits.clone() }).is_err());
    assert!(parse(&"[".repeat(60_000), &limits).is_err());
}

#[test]
fn redirects_and_actions() {
    let redirects: String = (0..5).map(|i| format!("redirect \"u{i}@example.org\";")).collect();
    let out = run(&redirects, MSG);
    assert_eq!(out.actions, vec![keep()]);
    assert_eq!(out.errors, vec!["too many redirects (at most 4)".to_string()]);
    let four: String = (0..4).map(|i| format!("redirect \"u{i}@example.org\";")).collect();
    assert_eq!(run(&four, MSG).actions.len(), 4);

    let files: String = (0..33).map(|i| format!("fileinto \"f{i}\";")).collect();
    let out = run(&format!("require \"fileinto\"; {files}"), MSG);
    assert_eq!(out.actions, vec![keep()]);
    assert_eq!(out.errors, vec!["too many actions (at most 32)".to_string()]);
}

#[test]
fn instructions() {
    let limits = Limits { max_instructions: 50, ..Limits::default() };
    let script = parse(&"if true { keep; }\n".repeat(30), &limits).unwrap();
    let out = script.run(&Environment::new(MSG.as_bytes()));
    assert_eq!(out.errors, vec!["script ran too long (more than 50 instructions)".to_string()]);
    assert_eq!(out.actions, vec![keep()]);
}

#[test]
fn variables() {
    let sets: String = (0..129).map(|i| format!("set \"v{i}\" \"x\";")).collect();
    let out = run(&format!("require \"variables\"; {sets}"), MSG);
    assert_eq!(out.errors, vec!["too many variables (at most 128)".to_string()]);
    let sets: String = (0..128).map(|i| format!("set \"v{i}\" \"x\";")).collect();
    assert!(run(&format!("require \"variables\"; {sets}"), MSG).errors.is_empty());

    // Values are cut at max_variable_size; doubling a value cannot grow it past that.
    let mut script = String::from("require [\"variables\", \"fileinto\"]; set \"a\" \"0123456789\";");
    for _ in 0..20 {
        script.push_str("set \"a\" \"${a}${a}\";");
    }
    script.push_str("set :length \"n\" \"${a}\"; fileinto \"${n}\";");
    assert_eq!(actions(&script, MSG), vec![fileinto("4096")]);

    // Expansion of many references is cut at max_expanded_string (before modifiers apply).
    let mut script = String::from("require [\"variables\", \"fileinto\"]; set \"a\" \"");
    script.push_str(&"x".repeat(4000));
    script.push_str("\"; set :length \"n\" \"");
    script.push_str(&"${a}".repeat(100));
    script.push_str("\"; fileinto \"${n}\";");
    assert_eq!(actions(&script, MSG), vec![fileinto("65536")]);
}

#[test]
fn body_scan_is_bounded() {
    let body = "x".repeat(200_000) + "NEEDLE";
    let msg = format!("Subject: big\r\n\r\n{body}\r\n");
    let s = "require \"body\"; if body :raw :contains \"NEEDLE\" { discard; }";
    let limits = Limits { max_body_scan: 100_000, ..Limits::default() };
    let script = parse(s, &limits).unwrap();
    assert_eq!(script.run(&Environment::new(msg.as_bytes())).actions, vec![keep()]);
    assert_eq!(actions(s, &msg), vec![Action::Discard]);
}

#[test]
fn a_big_script_over_a_big_message_is_quick() {
    // Worst cases for :matches (many stars, long values), many headers, a long body.
    let mut msg = String::new();
    for i in 0..2000 {
        msg.push_str(&format!("X-H: {}{i}\r\n", "a".repeat(100)));
    }
    msg.push_str("\r\n");
    msg.push_str(&"a".repeat(500_000));
    let mut script = String::from("require [\"body\", \"variables\"];\n");
    while script.len() < 20_000 {
        script.push_str(
            "if anyof(header :matches \"x-h\" \"*a*a*a*a*a*a*b\", body :contains \"b\") { set \"x\" \"${1}\"; }\n",
        );
    }
    let limits = Limits::default();
    let parsed = parse(&script, &limits).unwrap();
    let started = Instant::now();
    let out = parsed.run(&Environment::new(msg.as_bytes()));
    assert!(!out.actions.is_empty());
    // Generous: debug build on a shared machine. Header values per test are capped (1000).
    assert!(started.elapsed().as_secs() < 60, "{:?}", started.elapsed());
}

#[test]
fn matching_is_bounded() {
    let msg = format!("Subject: {}\r\n\r\nx\r\n", "a".repeat(200_000));
    // Only the last "*" ever backtracks, so the costly pattern has a long literal tail after it.
    let pattern = "*".to_string() + &"a".repeat(1000) + "b";
    let script = format!("if header :matches \"subject\" \"{pattern}\" {{ discard; }}");
    let started = Instant::now();
    let out = run(&script, &msg);
    assert_eq!(out.actions, vec![keep()]);
    assert_eq!(
        out.errors,
        vec!["script took too long (more than 100000000 steps of reading and matching)".to_string()]
    );
    assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
}

#[test]
fn reading_is_bounded() {
    // Each test reads a 100 KB header again: the work budget stops the run, not the clock.
    let msg = format!("X-Big: {}\r\n\r\nx\r\n", "a".repeat(100_000));
    let script = "if header :contains \"x-big\" \"b\" { discard; }\n".repeat(1200);
    let started = Instant::now();
    let out = run(&script, &msg);
    assert_eq!(out.actions, vec![keep()]);
    assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
    assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());

    // Thousands of flags cost linear time.
    let flags: Vec<String> = (0..1000).map(|i| format!("f{i}")).collect();
    let script = format!("require \"imap4flags\"; {}", format!("addflag \"{}\"; ", flags.join(" ")).repeat(10));
    let out = run(&script, MSG);
    assert!(out.errors.is_empty());
    assert!(matches!(&out.actions[..], [sirms_sieve::Action::Keep { flags }] if flags.len() == 1000));
}
