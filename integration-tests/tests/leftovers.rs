//! What a node leaves on disk (issue 28): its data directories are owner-only, and what a
//! crashed run left half-written — messages in a Maildir's `tmp/`, the spool's temporary
//! files — is gone after the next start, while every finished message stays.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sirms_integration_tests::MailNode;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

#[test]
fn data_is_private_and_crash_leftovers_are_removed_at_start() {
    let mut node = MailNode::start("leftovers.example.test", "");
    node.deliver_numbered(1);
    assert_eq!(node.inbox("alice@example.test").len(), 1);
    let data = node.dir.path().join("data");
    for dir in ["", "store", "queue", "queue/msg", "queue/env"] {
        assert_eq!(mode(&data.join(dir)), 0o700, "{dir:?} is not owner-only");
    }

    // What a crash in the middle of writes leaves: a message written into tmp/ but never
    // renamed into cur/ (so never acknowledged), and the spool's temporary files.
    let inbox = data.join("store/mail/alice@example%2Etest");
    let leftovers = [
        inbox.join("tmp/1700000000.M1P99Q1.leftovers"),
        inbox.join(".folder.99.7.tmp"),
        data.join("queue/msg/.1700000000-1.0.1.99.3.tmp"),
        data.join("queue/env/.1700000000-1.0.1.99.4.tmp"),
    ];
    for file in &leftovers {
        std::fs::write(file, "half written").unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
    // A directory someone opened up is closed again.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    node.restart();

    for file in &leftovers {
        assert!(!file.exists(), "{} survived the restart", file.display());
    }
    assert_eq!(mode(&data), 0o700);
    assert_eq!(node.inbox("alice@example.test").len(), 1, "a finished message went with the leftovers");
    // And the node works on.
    node.deliver_numbered(1);
    assert_eq!(node.inbox("alice@example.test").len(), 2);
}
