//! Trusted ARC sealers (RFC 8617 §7.2): a forwarder (a mailing list, a forwarding service)
//! breaks DKIM and SPF alignment by design; if it validated the message when it arrived
//! there, and we trust it to say so honestly, its word overrides our DMARC failure.

use mail_auth::{ArcOutput, DkimResult};

/// Whether `arc` is a valid chain whose newest set was sealed by one of `sealers` and whose
/// `ARC-Authentication-Results:` says DMARC passed there.
pub fn trusted_dmarc_pass(arc: &ArcOutput<'_>, sealers: &[String]) -> bool {
    if *arc.result() != DkimResult::Pass {
        return false;
    }
    let Some(newest) = arc.sets().last() else { return false };
    let sealer = newest.seal.header.d.trim_end_matches('.');
    sealers.iter().any(|s| s.trim_end_matches('.').eq_ignore_ascii_case(sealer))
        && says_dmarc_pass(newest.results.value)
}

/// Whether an `ARC-Authentication-Results:` value (`i=1; authserv-id; method=result …`)
/// holds `dmarc=pass`.
pub fn says_dmarc_pass(value: &[u8]) -> bool {
    let text = String::from_utf8_lossy(value);
    let text = without_comments(&text);
    // The first two parts are the instance and the authserv-id, never a result.
    // Each result is `method = value [properties]`, with optional whitespace around `=`.
    text.split(';').skip(2).any(|part| {
        part.split_once('=').is_some_and(|(method, rest)| {
            let value = rest.split_ascii_whitespace().next().unwrap_or("");
            method.trim().eq_ignore_ascii_case("dmarc") && value.eq_ignore_ascii_case("pass")
        })
    })
}

/// `text` without its comments, which may hold `;` and look like results.
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_dmarc_result() {
        assert!(says_dmarc_pass(
            b" i=1; lists.test;\r\n\tdkim=pass header.d=bank.test;\r\n\tdmarc=pass header.from=bank.test"
        ));
        assert!(says_dmarc_pass(b"i=1; lists.test; spf=fail; DMARC = Pass"));
        assert!(!says_dmarc_pass(b"i=1; lists.test; dmarc=fail (p=reject; dmarc=pass) header.from=bank.test"));
        assert!(!says_dmarc_pass(b"i=1; dmarc=pass"));
        assert!(!says_dmarc_pass(b"i=1; lists.test; spf=pass smtp.mailfrom=dmarc=pass"));
        assert!(!says_dmarc_pass(b""));
    }
}
