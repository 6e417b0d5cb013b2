//! `sirms bench` against a real `sirms node`: the SMTP load run from two source addresses
//! with the IMAP delivery check and the node's CPU time, checked against what the store
//! holds; IMAP and POP3 runs that read what was delivered; and runs the server refuses.

use std::collections::HashSet;
use std::process::{Command, Output};

use sirms_integration_tests::{MailNode, free_port, sirms_bin};

/// Users u1..u10 with password `pw`, plain LOGIN and USER/PASS allowed (the benchmark
/// client speaks no TLS).
fn start_node(hostname: &str) -> MailNode {
    let users: Vec<String> =
        (1..=10).map(|i| format!("{{ address = \"u{i}@example.test\", password = \"{{plain}}pw\" }}")).collect();
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    MailNode::start_with_users([127, 0, 0, 1], hostname, "allow_plaintext_auth = true\n", &users)
}

fn bench(args: &[&str]) -> Output {
    Command::new(sirms_bin()).arg("bench").args(args).env("RUST_LOG", "warn").output().expect("run sirms bench")
}

/// Runs `sirms bench ARGS --json`; returns the exit code and the report.
fn bench_json(args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut args = args.to_vec();
    args.push("--json");
    let out = bench(&args);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "sirms bench {args:?}: no JSON report ({e}):\n--- stdout\n{}\n--- stderr\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A header's value in a stored message (first occurrence).
fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    let (head, _) = message.split_once("\r\n\r\n")?;
    head.split("\r\n").find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}

#[test]
fn smtp_run_with_delivery_check_sources_and_cpu() {
    let node = start_node("bench1.example.test");
    let (smtp, imap, pid) = (node.smtp.to_string(), node.imap.to_string(), format!("node={}", node.process.pid()));
    let out_file = node.dir.path().join("report.json");
    let (code, r) = bench_json(&[
        "smtp",
        "--target",
        &smtp,
        "-n",
        "200",
        "-c",
        "4",
        "--sources",
        "127.0.93.1-2",
        "--users",
        "10",
        "--imap",
        &imap,
        "--password",
        "pw",
        "--server-pid",
        &pid,
        "--timeout",
        "30",
        "--deliver-timeout",
        "60",
        "--out",
        out_file.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(0), "{r:#}");
    assert_eq!(r["test"], "deliver");
    assert_eq!(r["accepted"], 200, "{r:#}");
    assert_eq!(r["failed"], 0, "{r:#}");
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(0));
    assert_eq!(r["delivered"], 200, "{r:#}");
    assert_eq!(r["missing"], 0);
    assert_eq!(r["all_delivered"], true);
    assert_eq!(r["ok"], true);
    assert_eq!(r["sources"], serde_json::json!(["127.0.93.1", "127.0.93.2"]));
    let lat = &r["smtp_lat_ms"];
    assert_eq!(lat["count"], 200);
    let (p50, p99) = (lat["p50"].as_f64().unwrap(), lat["p99"].as_f64().unwrap());
    assert!(0.0 < p50 && p50 <= p99 && p99 <= lat["max"].as_f64().unwrap(), "{lat}");
    let (accept_s, deliver_s) = (r["accept_s"].as_f64().unwrap(), r["deliver_s"].as_f64().unwrap());
    assert!(0.0 < accept_s && accept_s <= deliver_s, "{r:#}");
    assert!(r["msgs_per_s"].as_f64().unwrap() > 0.0);
    assert!(r["cpu"]["servers_total_cpu_s"].as_f64().unwrap() > 0.0, "{:#}", r["cpu"]);
    assert!(r["cpu"]["servers_cpu_s"]["node"].as_f64().unwrap() > 0.0, "{:#}", r["cpu"]);
    assert!(r["server_cpu_ms_per_msg"].as_f64().unwrap() > 0.0);
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out_file).expect("--out file")).expect("--out JSON");
    assert_eq!(written, r);

    // The store really holds them: 200 messages of this run, each with its own Message-ID,
    // 100 from each source address (one connection per message, round robin).
    let run_id = r["run_id"].as_str().unwrap();
    let mut ids = HashSet::new();
    let mut from_source = [0; 2];
    let mut total = 0;
    for i in 1..=10 {
        for stored in node.inbox(&format!("u{i}@example.test")) {
            let stored = text(&stored);
            total += 1;
            assert_eq!(header(&stored, "X-Bench-Run"), Some(run_id));
            assert_eq!(header(&stored, "To"), Some(format!("<u{i}@example.test>").as_str()));
            assert!(ids.insert(header(&stored, "Message-ID").expect("Message-ID").to_string()));
            let received = header(&stored, "Received").expect("Received");
            from_source[0] += usize::from(received.contains("[127.0.93.1]"));
            from_source[1] += usize::from(received.contains("[127.0.93.2]"));
            // What was sent (from our From: on, after the node's Return-Path and Received) is --size.
            let sent = stored.find("From: SIRMS bench").map(|at| stored.len() - at);
            assert_eq!(sent, Some(4096), "{stored}");
        }
    }
    assert_eq!(total, 200);
    assert_eq!(from_source, [100, 100]);
}

#[test]
fn imap_and_pop3_read_what_was_delivered() {
    let node = start_node("bench2.example.test");
    let (smtp, imap, pop3) = (node.smtp.to_string(), node.imap.to_string(), node.pop3.to_string());
    let pid = format!("node={}", node.process.pid());
    let (code, r) = bench_json(&[
        "smtp",
        "--target",
        &smtp,
        "-n",
        "30",
        "-c",
        "2",
        "--rcpt",
        "u1@example.test",
        "--imap",
        &imap,
        "--size",
        "2000",
        "--msgs-per-conn",
        "0",
        "--timeout",
        "30",
    ]);
    assert_eq!(code, Some(0), "{r:#}");
    assert_eq!(r["delivered"], 30, "{r:#}");
    let stored = node.inbox("u1@example.test");
    assert_eq!(stored.len(), 30);
    let stored_bytes: u64 = stored.iter().map(|m| m.len() as u64).sum();

    let (code, r) = bench_json(&[
        "imap",
        "--target",
        &imap,
        "--user",
        "u1@example.test",
        "--password",
        "pw",
        "--repeat",
        "2",
        "--server-pid",
        &pid,
        "--name",
        "N1",
    ]);
    assert_eq!(code, Some(0), "{r:#}");
    assert_eq!((r["test"].as_str(), r["name"].as_str(), r["ok"].as_bool()), (Some("imap"), Some("N1"), Some(true)));
    assert_eq!(r["messages"], 30);
    let repeats = r["repeats"].as_array().unwrap();
    assert_eq!(repeats.len(), 2);
    for rep in repeats {
        assert_eq!(rep["exists"], 30, "{rep:#}");
        assert_eq!(rep["fetch_meta_msgs"], 30, "{rep:#}");
        assert_eq!(rep["fetch_body_msgs"], 30, "{rep:#}");
        assert!(rep["fetch_body_bytes"].as_u64().unwrap() > stored_bytes, "{rep:#}");
        assert!(rep["error"].is_null());
        for step in ["login_s", "select_s", "fetch_meta_s", "fetch_body_s"] {
            assert!(rep[step].as_f64().unwrap() <= rep["total_s"].as_f64().unwrap(), "{step}: {rep:#}");
        }
    }
    assert!(r["median"]["total_s"].as_f64().unwrap() > 0.0);

    let (code, r) =
        bench_json(&["pop3", "--target", &pop3, "--user", "u1@example.test", "--password", "pw", "--repeat", "2"]);
    assert_eq!(code, Some(0), "{r:#}");
    assert_eq!(r["messages"], 30);
    for rep in r["repeats"].as_array().unwrap() {
        assert_eq!(rep["msgs"], 30, "{rep:#}");
        assert_eq!(rep["retr_msgs"], 30, "{rep:#}");
        // RETR gives each message back as stored, stuffing removed.
        assert_eq!(rep["retr_bytes"], stored_bytes, "{rep:#}");
        assert_eq!(rep["retr_lat_ms"]["count"], 30);
    }
    // Nothing was deleted.
    assert_eq!(node.inbox("u1@example.test").len(), 30);

    // The human table.
    let out = bench(&["pop3", "--target", &pop3, "--user", "u1@example.test"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.starts_with(&format!("sirms bench pop3: {pop3}\n  user u1@example.test, 30 messages")), "{table}");
}

#[test]
fn refusals_are_counted_reported_and_flagged() {
    let node = start_node("bench3.example.test");
    let smtp = node.smtp.to_string();

    // No such users: every transaction fails at RCPT, with the reply in the report.
    let (code, r) = bench_json(&[
        "smtp",
        "--target",
        &smtp,
        "-n",
        "20",
        "-c",
        "2",
        "--rcpt",
        "ghost{i}@example.test",
        "--users",
        "3",
    ]);
    assert_eq!(code, Some(1), "{r:#}");
    assert_eq!((r["accepted"].as_u64(), r["failed"].as_u64(), r["ok"].as_bool()), (Some(0), Some(20), Some(false)));
    let errors = r["errors"].as_array().unwrap();
    assert_eq!(errors.iter().map(|e| e["count"].as_u64().unwrap()).sum::<u64>(), 20, "{r:#}");
    assert!(errors.iter().all(|e| e["error"].as_str().unwrap().starts_with("RCPT refused: 550 5.1.1")), "{r:#}");
    assert!(r["accept_s"].is_null() && r["smtp_lat_ms"].is_null());

    // u11 and u12 do not exist: some fail, the rest are delivered, nothing is retried.
    let (code, r) = bench_json(&["smtp", "--target", &smtp, "-n", "60", "-c", "3", "--users", "12", "--seed", "5"]);
    assert_eq!(code, Some(1), "{r:#}");
    let (accepted, failed) = (r["accepted"].as_u64().unwrap(), r["failed"].as_u64().unwrap());
    assert!(accepted > 0 && failed > 0 && accepted + failed == 60, "{r:#}");
    let stored: usize = (1..=10).map(|i| node.inbox(&format!("u{i}@example.test")).len()).sum();
    assert_eq!(stored as u64, accepted);

    // The table says so too.
    let out = bench(&["smtp", "--target", &smtp, "-n", "2", "-c", "1", "--rcpt", "ghost@example.test"]);
    assert_eq!(out.status.code(), Some(1));
    let table = text(&out.stdout);
    assert!(table.contains("accepted         0 of 2 (2 failed)"), "{table}");
    assert!(table.contains("FAILED      2 × RCPT refused: 550 5.1.1"), "{table}");

    // Nobody listening: connection failures are failures too.
    let closed = format!("127.0.0.1:{}", free_port());
    let (code, r) = bench_json(&["smtp", "--target", &closed, "-n", "3", "-c", "1", "--timeout", "5"]);
    assert_eq!(code, Some(1), "{r:#}");
    assert_eq!(r["failed"], 3);
    assert!(r["errors"][0]["error"].as_str().unwrap().starts_with(&format!("connect to {closed}")), "{r:#}");

    // A delivery check that cannot log in stops the run before anything is sent.
    let u1_before = node.inbox("u1@example.test").len();
    let out = bench(&[
        "smtp",
        "--target",
        &smtp,
        "-n",
        "1",
        "--rcpt",
        "u1@example.test",
        "--imap",
        &node.imap.to_string(),
        "--password",
        "wrong",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("IMAP login of u1@example.test") && stderr.contains("LOGIN refused"), "{stderr}");
    assert!(out.stdout.is_empty());
    assert_eq!(node.inbox("u1@example.test").len(), u1_before);
}
