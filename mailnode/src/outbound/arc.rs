//! ARC sealing (RFC 8617) of mail the node forwards: a Sieve `redirect` of a message that
//! came from the Internet gets a new ARC set on top — `ARC-Authentication-Results:` carrying
//! what the node's sender authentication found when the message arrived,
//! `ARC-Message-Signature:` and `ARC-Seal:` — signed with the forwarding user's domain's DKIM
//! key. The next receiver, whose SPF (and maybe DKIM) checks the forwarding broke, can then
//! trust what this node saw.
//!
//! Nothing is looked up again: the arrival's results are the node's own
//! `Authentication-Results:` field on the stored message (any that came with the message
//! under the node's authserv-id were removed on arrival), its `arc=` the verdict on the chain
//! the message came with; the chain's sets are the message's own ARC fields.

use mail_auth::arc::{ArcSealer, ChainValidation, Set};
use mail_auth::common::headers::{Header, HeaderWriter};
use mail_auth::{ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimResult};

use super::dkim::{self, SIGNED_HEADERS};

/// RFC 8617 §4.2.1: at most 50 ARC sets; a sealer that would add the 51st does not.
const MAX_SETS: usize = 50;
/// The longest `ARC-Authentication-Results:` value carried: the field is written on one line
/// (so its relaxed form is what is signed), which must stay within RFC 5322's 998 octets.
const MAX_RESULTS_LEN: usize = 900;
/// Most `Authentication-Results:` fields looked through for the node's own.
const MAX_RESULTS_FIELDS: usize = 100;

/// Why a forwarded copy goes without a new ARC set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the message has no header section")]
    NoHeader,
    #[error("no Authentication-Results of {0} on the message")]
    NoResults(String),
    #[error("the ARC chain it came with did not validate (arc={0})")]
    ChainFailed(String),
    #[error("the newest ARC seal says cv=fail: nobody seals after that (RFC 8617 §5.1)")]
    ChainEnded,
    #[error("the chain has {MAX_SETS} sets already (RFC 8617 §4.2.1)")]
    TooManySets,
    #[error("the results are longer than {MAX_RESULTS_LEN} octets, even without comments")]
    ResultsTooLong,
    #[error("the key: {0}")]
    Key(String),
    #[error("sealing: {0}")]
    Seal(String),
}

/// The DKIM key a domain seals with.
pub struct SealingKey<'a> {
    /// The `d=` of the seal: the forwarding user's domain.
    pub domain: &'a str,
    pub selector: &'a str,
    /// PKCS#8 PEM, as the directory keeps it.
    pub pem: &'a str,
}

/// The three ARC fields to put on top of `message` (CRLF-terminated, seal first), sealing it
/// as `key.domain` on the strength of the `Authentication-Results:` of `authserv_id` in it.
///
/// The instance is the chain's highest plus one and `cv` says what the node found on arrival:
/// `none` without a chain, `pass` for one that validated. A chain that failed validation is
/// not sealed (see [`SealError::ChainFailed`]): RFC 8617 §5.1.2 has a `cv=fail` set sign only
/// itself, which mail-auth's sealer does not do, and no receiver trusts a chain past a
/// `cv=fail` set anyway.
pub fn seal(message: &[u8], authserv_id: &str, key: &SealingKey<'_>) -> Result<Vec<u8>, SealError> {
    let parsed = AuthenticatedMessage::parse(message).ok_or(SealError::NoHeader)?;
    let text = own_results(&parsed.headers, authserv_id).ok_or_else(|| SealError::NoResults(authserv_id.into()))?;
    let text = fitted(text)?;
    let verdict = arc_result(&text).unwrap_or("none").to_ascii_lowercase();
    if parsed.as_headers.last().is_some_and(|last| last.header.cv == ChainValidation::Fail) {
        return Err(SealError::ChainEnded);
    }
    let sets = parsed.as_headers.len();
    if sets >= MAX_SETS {
        return Err(SealError::TooManySets);
    }
    let whole_chain = sets == parsed.ams_headers.len() && sets == parsed.aar_headers.len() && !parsed.has_arc_errors;
    let chain = match (sets, verdict.as_str()) {
        (0, _) if parsed.ams_headers.is_empty() && parsed.aar_headers.is_empty() && !parsed.has_arc_errors => {
            ArcOutput::default()
        }
        (1.., "pass") if whole_chain => (parsed.as_headers.iter())
            .zip(&parsed.ams_headers)
            .zip(&parsed.aar_headers)
            .fold(ArcOutput::default().with_result(DkimResult::Pass), |chain, ((seal, signature), results)| {
                chain.with_set(Set { signature: by_ref(signature), seal: by_ref(seal), results: by_ref(results) })
            }),
        _ => return Err(SealError::ChainFailed(verdict)),
    };
    // The authserv-id and the results in one piece: the sealer writes the piece as it is.
    let results = AuthenticationResults::new(&text);
    let signing = dkim::signing_key(key.pem).map_err(|e| SealError::Key(e.to_string()))?;
    let sealer = ArcSealer::from_key(signing)
        .domain(key.domain)
        .selector(key.selector)
        .headers(SIGNED_HEADERS.iter().copied().chain(["DKIM-Signature"]));
    let set = sealer.seal(&parsed, &results, &chain).map_err(|e| SealError::Seal(e.to_string()))?;
    Ok(set.to_header().into_bytes())
}

/// The value of the first `Authentication-Results:` field among `headers` whose authserv-id
/// is `authserv_id`, unfolded: every run of white space one space.
pub fn own_results(headers: &[(&[u8], &[u8])], authserv_id: &str) -> Option<String> {
    (headers.iter())
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"Authentication-Results"))
        .take(MAX_RESULTS_FIELDS)
        .map(|(_, value)| unfolded(value))
        .find(|text| {
            let id = text.split(';').next().and_then(|head| head.split_whitespace().next());
            id.is_some_and(|id| id.eq_ignore_ascii_case(authserv_id))
        })
}

/// `value` on one line, each run of white space (folding included) one space. Control
/// characters count as white space: values in the results can come from the message (a
/// `From:` domain), and a NUL or a bare CR must not reach a field the node signs and sends.
fn unfolded(value: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(value).chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    text.split_ascii_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` short enough for one line; comments (RFC 5322 §3.2.2, the SPF explanations) go
/// first, since they are for humans.
fn fitted(text: String) -> Result<String, SealError> {
    if text.len() <= MAX_RESULTS_LEN {
        return Ok(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut depth = 0usize;
    let mut escaped = false;
    for c in text.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if depth > 0 => escaped = true,
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    let out = out.split_ascii_whitespace().collect::<Vec<_>>().join(" ");
    if out.len() <= MAX_RESULTS_LEN { Ok(out) } else { Err(SealError::ResultsTooLong) }
}

/// The result of the `arc` method in unfolded results text.
fn arc_result(text: &str) -> Option<&str> {
    text.split(';').skip(1).find_map(|part| part.trim().strip_prefix("arc=")).and_then(|r| r.split_whitespace().next())
}

fn by_ref<'x, T>(header: &'x Header<'x, T>) -> Header<'x, &'x T> {
    Header { name: header.name, value: header.value, header: &header.header }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_pem() -> String {
        dkim::generate_key().expect("key")
    }

    const RESULTS: &str = "Authentication-Results: mx.ours.test;\r\n\tspf=pass smtp.mailfrom=a@x.test;\r\n\
        \tdkim=pass header.d=x.test header.s=sel;\r\n\tarc=none smtp.remote-ip=192.0.2.1;\r\n\tdmarc=pass header.from=x.test\r\n";
    const MESSAGE: &str = "From: a@x.test\r\nTo: u@ours.test\r\nSubject: hi\r\n\r\nbody\r\n";

    #[test]
    fn a_first_set_carries_our_results_and_the_forwarding_domain() {
        let pem = key_pem();
        let key = SealingKey { domain: "ours.test", selector: "s1", pem: &pem };
        let message = format!("Delivered-To: u@ours.test\r\n{RESULTS}{MESSAGE}");
        let set = String::from_utf8(seal(message.as_bytes(), "mx.ours.test", &key).expect("sealed")).expect("utf-8");
        assert!(set.starts_with("ARC-Seal: i=1; a=rsa-sha256; s=s1; d=ours.test; cv=none;"), "{set}");
        assert!(set.contains("ARC-Message-Signature: i=1; a=rsa-sha256; s=s1; d=ours.test;"), "{set}");
        assert!(
            set.contains("ARC-Authentication-Results: i=1; mx.ours.test; spf=pass smtp.mailfrom=a@x.test; dkim=pass"),
            "{set}"
        );
        assert!(set.lines().all(|l| l.len() < 998), "{set}");
        assert!(set.ends_with("\r\n"));
    }

    #[test]
    fn control_characters_in_the_results_become_spaces() {
        let headers: [(&[u8], &[u8]); 1] =
            [(b"Authentication-Results", b" mx.ours.test; dmarc=fail header.from=x\0y.test;\r arc=none\x7f")];
        let text = own_results(&headers, "mx.ours.test").expect("ours");
        assert_eq!(text, "mx.ours.test; dmarc=fail header.from=x y.test; arc=none");
    }

    #[test]
    fn what_is_not_sealed() {
        let pem = key_pem();
        let key = SealingKey { domain: "ours.test", selector: "s1", pem: &pem };
        let ours = |results: &str| format!("Authentication-Results: mx.ours.test; {results}\r\n{MESSAGE}");
        let err = |message: &str, id: &str| seal(message.as_bytes(), id, &key).expect_err("not sealed");
        assert_eq!(err(MESSAGE, "mx.ours.test"), SealError::NoResults("mx.ours.test".into()), "not checked here");
        assert_eq!(err(&ours("arc=none"), "other.test"), SealError::NoResults("other.test".into()));
        let chain = "ARC-Seal: i=1; a=rsa-sha256; cv=none; d=l.test; s=arc; b=AAAA\r\n\
            ARC-Message-Signature: i=1; a=rsa-sha256; c=relaxed/relaxed; d=l.test; s=arc; h=from; bh=AAAA; b=AAAA\r\n\
            ARC-Authentication-Results: i=1; l.test; spf=pass\r\n";
        let failed = format!("{}{chain}{MESSAGE}", ours("arc=fail smtp.remote-ip=192.0.2.1").replace(MESSAGE, ""));
        assert_eq!(err(&failed, "mx.ours.test"), SealError::ChainFailed("fail".into()));
        let ended = format!(
            "Authentication-Results: mx.ours.test; arc=pass\r\n{}{MESSAGE}",
            chain.replace("cv=none", "cv=fail")
        );
        assert_eq!(err(&ended, "mx.ours.test"), SealError::ChainEnded);
        assert!(matches!(
            err("no header section at all", "mx.ours.test"),
            SealError::NoHeader | SealError::NoResults(_)
        ));
    }

    #[test]
    fn long_results_lose_their_comments_first() {
        let long = format!("mx.ours.test; spf=pass ({}) smtp.mailfrom=a@x.test", "why ".repeat(300));
        assert_eq!(fitted(long).expect("fits"), "mx.ours.test; spf=pass smtp.mailfrom=a@x.test");
        assert_eq!(fitted(format!("mx.ours.test; {}", "dkim=pass ".repeat(100))), Err(SealError::ResultsTooLong));
        assert_eq!(arc_result("mx; spf=pass; arc=pass smtp.remote-ip=1.2.3.4"), Some("pass"));
        assert_eq!(arc_result("mx; spf=pass"), None);
        let headers = [
            (&b"authentication-results"[..], &b" other.test; arc=pass"[..]),
            (&b"Authentication-Results"[..], &b" MX.ours.test;\r\n\tarc=none"[..]),
        ];
        assert_eq!(own_results(&headers, "mx.ours.test").as_deref(), Some("MX.ours.test; arc=none"));
    }
}
