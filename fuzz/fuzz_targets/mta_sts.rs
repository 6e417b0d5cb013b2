//! Fuzzes what a sending node reads for MTA-STS (`mailnode::outbound::mta_sts`): the policy
//! file, the HTTPS answer that carries it, and the `_mta-sts` TXT records. Every input goes
//! to all three: whole to `Policy::parse` and `parse_response`, and cut at NUL bytes into TXT
//! records for `txt_id`. Checked:
//!
//! - a parsed policy has at most `MAX_MX_PATTERNS` patterns, each lower-case, `max_age` at
//!   most `MAX_AGE_LIMIT`, and renders to a file that parses back to it; `allows` of each
//!   pattern's host (the wildcard's label filled in) is true;
//! - an accepted answer's body is a suffix-bounded slice of the input no longer than
//!   `MAX_POLICY_BYTES`, and its head ended within `MAX_HEAD_BYTES`;
//! - an id is 1–32 letters and digits, taken from one of the records.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sirms_mailnode::outbound::mta_sts::fetch::{MAX_HEAD_BYTES, parse_response};
use sirms_mailnode::outbound::mta_sts::policy::{MAX_AGE_LIMIT, MAX_MX_PATTERNS, MAX_POLICY_BYTES, Policy, txt_id};

fuzz_target!(|data: &[u8]| {
    if let Ok(policy) = Policy::parse(data) {
        assert!(policy.mx.len() <= MAX_MX_PATTERNS);
        assert!(policy.max_age <= MAX_AGE_LIMIT);
        for pattern in &policy.mx {
            assert_eq!(*pattern, pattern.to_ascii_lowercase());
            let host = match pattern.strip_prefix("*.") {
                Some(rest) => format!("x.{rest}"),
                None => pattern.clone(),
            };
            assert!(policy.allows(&host), "{pattern} does not allow {host}");
        }
        let rendered = policy.render();
        assert_eq!(Policy::parse(rendered.as_bytes()).as_ref(), Ok(&policy), "{rendered:?}");
    }

    if let Ok(body) = parse_response(data) {
        assert!(body.len() <= MAX_POLICY_BYTES);
        let start = body.as_ptr() as usize - data.as_ptr() as usize;
        assert!(start + body.len() <= data.len());
        assert!(start <= MAX_HEAD_BYTES + 4, "head of {start} bytes accepted");
    }

    let records: Vec<&[u8]> = data.split(|&b| b == 0).collect();
    if let Some(id) = txt_id(records.iter().copied()) {
        assert!((1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()), "{id:?}");
        assert!(records.iter().any(|r| r.windows(id.len()).any(|w| w == id.as_bytes())));
    }
});
