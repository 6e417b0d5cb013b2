//! IMAP4rev2 (RFC 9051), not advertised yet, against the real `sirms node` binary over a raw
//! socket (imaplib reads neither ENABLED nor ESEARCH): once `ENABLE IMAP4rev2` is answered, SELECT
//! reports no RECENT, FETCH FLAGS no `\Recent`, and SEARCH answers with ESEARCH.

use sirms_integration_tests::raw_imap::RAW_IMAP;
use sirms_integration_tests::{MailNode, python};

#[test]
fn enabled_imap4rev2_drops_recent_and_searches_with_esearch() {
    let node = MailNode::start_on([127, 0, 42, 12], "rev2.example.test", "allow_plaintext_auth = true\n");
    let args = serde_json::json!({"host": "127.0.42.12", "imap": node.imap.port()});
    let script = r#"
m = Imap()
out = {}
out["caps"] = m.command(b"c", b"CAPABILITY").decode()
assert b"OK" in m.command(b"l", b"LOGIN alice@example.test alice-pw")
m.append(b"a", b"INBOX", [(b"", b"Subject: rev2\r\n\r\nbody\r\n", True)])
out["enable"] = m.command(b"e", b"ENABLE IMAP4rev2").decode()
out["select"] = m.command(b"s", b"SELECT INBOX").decode()
out["flags"] = m.command(b"f", b"FETCH 1 FLAGS").decode()
out["search"] = m.command(b"q", b"UID SEARCH ALL").decode()
"#;
    let text = python(&format!("{RAW_IMAP}\n{script}\nprint(json.dumps(out))"), &[args.to_string()]);
    let out: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON ({e}): {text}"));
    assert!(!out["caps"].as_str().unwrap().contains("IMAP4rev2"), "{out}");
    assert!(out["enable"].as_str().unwrap().starts_with("* ENABLED IMAP4rev2\r\n"), "{out}");
    let select = out["select"].as_str().unwrap();
    assert!(select.contains("* 1 EXISTS\r\n") && !select.contains("RECENT"), "{out}");
    assert!(out["flags"].as_str().unwrap().starts_with("* 1 FETCH (FLAGS ())"), "{out}");
    assert!(out["search"].as_str().unwrap().starts_with("* ESEARCH (TAG \"q\") UID ALL 1\r\n"), "{out}");
}
