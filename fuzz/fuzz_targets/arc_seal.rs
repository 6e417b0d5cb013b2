//! Fuzzes ARC sealing of a forwarded message (`mailnode::outbound::arc::seal`): the message a
//! Sieve redirect forwards came from the Internet, and the sealer reads its
//! `Authentication-Results:` fields and its ARC chain.
//!
//! The input is the message. Checked:
//!
//! - nothing panics;
//! - a message without an `Authentication-Results:` of ours is never sealed;
//! - a set that is made is three CRLF-terminated fields, `ARC-Seal:` first, with one instance
//!   number, the chain's highest plus one, `d=` the sealing domain, no line over 998 octets,
//!   and an `ARC-Authentication-Results:` that carries our authserv-id.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sirms_mailnode::outbound::arc::{SealingKey, seal};
use sirms_mailnode::outbound::dkim::generate_key;

const OURS: &str = "mx.ours.test";

fn pem() -> &'static str {
    static PEM: OnceLock<String> = OnceLock::new();
    PEM.get_or_init(|| generate_key().expect("an RSA key"))
}

fuzz_target!(|data: &[u8]| {
    let key = SealingKey { domain: "ours.test", selector: "s1", pem: pem() };
    let Ok(set) = seal(data, OURS, &key) else { return };
    let text = String::from_utf8_lossy(data).to_ascii_lowercase();
    assert!(text.contains("authentication-results:"), "sealed without results");
    let set = String::from_utf8(set).expect("the set is text");
    assert!(set.starts_with("ARC-Seal: i=") && set.ends_with("\r\n"), "{set}");
    assert!(set.split("\r\n").all(|line| line.len() <= 998), "{set}");
    let i: u32 = set["ARC-Seal: i=".len()..].split(';').next().and_then(|n| n.parse().ok()).expect("an instance");
    assert!((1..=50).contains(&i), "{set}");
    assert!(set.contains(&format!("ARC-Message-Signature: i={i};")), "{set}");
    assert!(set.contains(&format!("ARC-Authentication-Results: i={i}; ")), "{set}");
    let results = set.split("ARC-Authentication-Results: ").nth(1).expect("results");
    // The authserv-id is the first word after the instance (a version number may follow it).
    let id = results.split(';').nth(1).and_then(|head| head.split_whitespace().next()).unwrap_or_default();
    assert!(id.eq_ignore_ascii_case(OURS), "{set}");
    // One ARC-Seal field; the carried results may mention the name in their text.
    assert_eq!(set.split("\r\n").filter(|line| line.starts_with("ARC-Seal:")).count(), 1, "{set}");
    let stray = |c: char| c.is_control() && !matches!(c, '\r' | '\n' | '\t');
    assert!(!set.contains(stray), "a control character in {set:?}");
    assert!(set.contains("d=ours.test"), "{set}");
});
