//! MULTIAPPEND (RFC 3502) against the real `sirms node` binary, driven over a raw socket by
//! Python (imaplib sends one message per APPEND): three messages in one command, one of them
//! past the spill threshold (so it goes to a spill file as it arrives), come back byte for byte
//! under the UIDs APPENDUID named; a command whose second message is refused (too large, a bad
//! flag, or refused by the store after the first was stored) leaves the mailbox as it was.

use sirms_integration_tests::raw_imap::RAW_IMAP;
use sirms_integration_tests::{MailNode, python};

/// Python prelude: [`RAW_IMAP`], a session logged in as alice, and `status(m)`.
const PRELUDE: &str = r#"
def status(m):
    return re.search(rb"\* STATUS INBOX \(([^)]*)\)", m.command(b"st", b"STATUS INBOX (MESSAGES UIDNEXT)")).group(1).decode()

m = Imap()
assert b"OK" in m.command(b"l", b"LOGIN alice@example.test alice-pw")
out = {}
"#;

fn run(node: &MailNode, host: &str, script: &str) -> serde_json::Value {
    let args = serde_json::json!({"host": host, "imap": node.imap.port()});
    let text = python(&format!("{RAW_IMAP}\n{PRELUDE}\n{script}\nprint(json.dumps(out))"), &[args.to_string()]);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON ({e}): {text}"))
}

#[test]
fn multiappend_stores_all_or_nothing() {
    let host = "127.0.42.11";
    let node = MailNode::start_on([127, 0, 42, 11], "multiappend.example.test", "allow_plaintext_auth = true\n");
    let out = run(
        &node,
        host,
        r#"
out["caps"] = m.command(b"c", b"CAPABILITY").decode()
m.command(b"s", b"SELECT INBOX")
# The second one is past the node's 256 KiB spill threshold; the third is non-synchronizing.
big = b"Subject: big\r\n\r\n" + b"".join(b"line %06d of a large message\r\n" % i for i in range(12000))
messages = [
    (b"(\\Seen)", b"Subject: one\r\n\r\nfirst\r\n", False),
    (b"(\\Flagged) \"05-Dec-2026 09:15:00 +0000\"", big, False),
    (b"", b"Subject: three\r\n\r\nthird, with a NUL-free body\r\n", True),
]
reply = m.append(b"m", b"INBOX", messages)
out["reply"] = reply.decode()
uids = re.search(rb"m OK \[APPENDUID (\d+) ([0-9:,]+)\]", reply)
out["uid_set"] = uids.group(2).decode()
want = []
for part in out["uid_set"].split(","):
    lo, _, hi = part.partition(":")
    want += list(range(int(lo), int(hi or lo) + 1))
out["uids"] = want
same = []
for uid, (_, data, _) in zip(want, messages):
    fetched = m.command(b"f", b"UID FETCH %d BODY.PEEK[]" % uid)
    same.append(fetched.count(data) == 1 and b"UID %d" % uid in fetched)
out["same"] = same
out["flags"] = m.command(b"g", b"UID FETCH 1:* (FLAGS INTERNALDATE)").decode()
out["status_after"] = status(m)

# Refused: the second message is past APPENDLIMIT (refused instead of its `+`), has a flag that
# is no flag, or needs keywords the mailbox cannot take after the first was stored.
too_big = m.append(b"t", b"INBOX", [(b"", b"Subject: x\r\n\r\nx\r\n", False), (b"", b"y" * 67108865, False)])
out["too_big"] = too_big.decode()
out["bad_flag"] = m.append(b"b", b"INBOX", [(b"", b"Subject: x\r\n\r\nx\r\n", False), (b"(\\Nonsense)", b"Subject: y\r\n\r\ny\r\n", False)]).decode()
out["status_refused"] = status(m)
keywords = lambda p: b"(" + b" ".join(b"%s%d" % (p, i) for i in range(20)) + b")"
out["store_refused"] = m.append(b"k", b"INBOX", [(keywords(b"a"), b"Subject: x\r\n\r\nx\r\n", False), (keywords(b"b"), b"Subject: y\r\n\r\ny\r\n", True)]).decode()
out["status_rolled_back"] = status(m)
out["exists_after"] = m.command(b"n", b"NOOP").decode()
out["search"] = m.command(b"q", b"UID SEARCH ALL").decode()
"#,
    );
    assert!(out["caps"].as_str().unwrap().contains(" MULTIAPPEND "), "{out}");
    let reply = out["reply"].as_str().unwrap();
    // Each synchronizing literal was invited with its own `+` (the helper waited for them),
    // and the selected mailbox was told of the new messages before the OK.
    assert!(reply.starts_with("* 3 EXISTS\r\n"), "{out}");
    assert_eq!(out["uid_set"], "1:3", "{out}");
    assert_eq!(out["same"], serde_json::json!([true, true, true]), "{out}");
    let flags = out["flags"].as_str().unwrap();
    assert!(flags.contains("* 1 FETCH (UID 1 FLAGS (\\Seen"), "{out}");
    assert!(
        flags.contains("* 2 FETCH (UID 2 FLAGS (\\Flagged") && flags.contains("05-Dec-2026 09:15:00 +0000"),
        "{out}"
    );
    assert_eq!(out["status_after"], "MESSAGES 3 UIDNEXT 4", "{out}");

    assert!(out["too_big"].as_str().unwrap().starts_with("t NO [TOOBIG]"), "{out}");
    assert!(out["bad_flag"].as_str().unwrap().starts_with("b BAD"), "{out}");
    assert_eq!(out["status_refused"], "MESSAGES 3 UIDNEXT 4", "{out}");
    assert!(out["store_refused"].as_str().unwrap().contains("k NO [LIMIT]"), "{out}");
    // RFC 3502 §6: none of the messages remains; UIDNEXT may have moved past the one stored.
    let rolled_back = out["status_rolled_back"].as_str().unwrap();
    assert!(rolled_back.starts_with("MESSAGES 3 UIDNEXT "), "{out}");
    let search = out["search"].as_str().unwrap();
    assert_eq!(search.lines().find(|l| l.starts_with("* SEARCH")), Some("* SEARCH 1 2 3"), "{out}");
    // Nothing is left in the spill directory once the command is done.
    let spill = node.data.join("spill");
    assert_eq!(std::fs::read_dir(&spill).map(|d| d.count()).unwrap_or(0), 0, "{}", spill.display());
}
