//! The two texts a domain publishes for MTA-STS (RFC 8461): the `_mta-sts` TXT record that
//! announces a policy and names its version (`v=STSv1; id=…`), and the policy file itself
//! (`version`, `mode`, `mx`, `max_age`). Both come from the network, so both parsers have
//! limits and never panic (`fuzz/fuzz_targets/mta_sts.rs`).

pub use sirms_proto::mta_sts::{MAX_AGE_LIMIT, Mode};

/// Longest policy file read (RFC 8461 §3.3 suggests "a reasonable maximum", 64 KiB here).
pub const MAX_POLICY_BYTES: usize = 64 * 1024;
/// Most `mx` patterns kept; a policy listing more is refused rather than cut short, since a
/// cut list would refuse MX hosts the domain allowed.
pub const MAX_MX_PATTERNS: usize = 100;
/// Longest `_mta-sts` TXT record read (its strings joined).
pub const MAX_TXT_BYTES: usize = 1024;

/// A parsed policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    /// Seconds the policy may be cached.
    pub max_age: u64,
    /// Lower-case MX host patterns: a name, or `*.` and a name (one left-most label).
    pub mx: Vec<String>,
}

/// Why a policy file or TXT record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy larger than {MAX_POLICY_BYTES} bytes")]
    TooLarge,
    #[error("policy is not UTF-8")]
    NotUtf8,
    #[error("policy line without a colon: {0:?}")]
    BadLine(String),
    #[error("policy version is not STSv1")]
    Version,
    #[error("policy mode {0:?} is not enforce, testing or none")]
    BadMode(String),
    #[error("policy has no {0}")]
    Missing(&'static str),
    #[error("policy max_age {0:?} is not a number of seconds up to {MAX_AGE_LIMIT}")]
    BadMaxAge(String),
    #[error("policy mx pattern {0:?} is not a host name")]
    BadMx(String),
    #[error("policy lists more than {MAX_MX_PATTERNS} mx patterns")]
    TooManyMx,
}

impl Policy {
    /// Parses a policy file (RFC 8461 §3.2): `key: value` lines ended by LF or CRLF, unknown
    /// keys ignored, the first of a repeated key used (except `mx`, which repeats).
    pub fn parse(body: &[u8]) -> Result<Policy, PolicyError> {
        if body.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge);
        }
        let text = std::str::from_utf8(body).map_err(|_| PolicyError::NotUtf8)?;
        let (mut version, mut mode, mut max_age) = (None, None, None);
        let mut mx = Vec::new();
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() {
                continue;
            }
            let (key, value) = line.split_once(':').ok_or_else(|| PolicyError::BadLine(clip(line)))?;
            let value = value.trim_matches([' ', '\t']);
            match key {
                "version" => _ = version.get_or_insert(value),
                "mode" => _ = mode.get_or_insert(value),
                "max_age" => _ = max_age.get_or_insert(value),
                "mx" => {
                    if mx.len() == MAX_MX_PATTERNS {
                        return Err(PolicyError::TooManyMx);
                    }
                    mx.push(mx_pattern(value)?);
                }
                _ => {}
            }
        }
        if version.ok_or(PolicyError::Missing("version"))? != "STSv1" {
            return Err(PolicyError::Version);
        }
        let mode = match mode.ok_or(PolicyError::Missing("mode"))? {
            "enforce" => Mode::Enforce,
            "testing" => Mode::Testing,
            "none" => Mode::None,
            other => return Err(PolicyError::BadMode(clip(other))),
        };
        let max_age = max_age.ok_or(PolicyError::Missing("max_age"))?;
        let max_age = (max_age.len() <= 10 && max_age.bytes().all(|b| b.is_ascii_digit()))
            .then(|| max_age.parse::<u64>().ok())
            .flatten()
            .filter(|&secs| secs <= MAX_AGE_LIMIT)
            .ok_or_else(|| PolicyError::BadMaxAge(clip(max_age)))?;
        // A policy that is not "none" without any MX would refuse every host (§3.2).
        if mx.is_empty() && mode != Mode::None {
            return Err(PolicyError::Missing("mx"));
        }
        Ok(Policy { mode, max_age, mx })
    }

    /// The file form, which [`Policy::parse`] reads back (the cache keeps it so).
    pub fn render(&self) -> String {
        let mut out = format!("version: STSv1\nmode: {}\n", self.mode.name());
        for mx in &self.mx {
            out.push_str(&format!("mx: {mx}\n"));
        }
        out.push_str(&format!("max_age: {}\n", self.max_age));
        out
    }

    /// Whether MX host `host` is one the policy allows (§4.1): equal to a pattern, or one
    /// label followed by a `*.` pattern's rest; case-insensitive, a final dot ignored.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx.iter().any(|pattern| match pattern.strip_prefix("*.") {
            Some(rest) => host.split_once('.').is_some_and(|(label, parent)| !label.is_empty() && parent == rest),
            None => *pattern == host,
        })
    }
}

/// One `mx` value, checked to be a host name or `*.` and one, and lower-cased.
fn mx_pattern(value: &str) -> Result<String, PolicyError> {
    let name = value.strip_prefix("*.").unwrap_or(value);
    let good_label = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 || !name.split('.').all(good_label) {
        return Err(PolicyError::BadMx(clip(value)));
    }
    Ok(value.trim_end_matches('.').to_ascii_lowercase())
}

/// Network text in an error message, cut to a readable length.
fn clip(text: &str) -> String {
    text.chars().take(64).collect()
}

/// The policy id of a domain's `_mta-sts` TXT answer (§3.1): of the records, exactly one
/// must start with `v=STSv1`, and its `id` (1–32 letters and digits) is returned. Records
/// that are not STS are ignored; none, several or a malformed one mean no policy.
pub fn txt_id<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> Option<String> {
    let mut sts = records.into_iter().filter(|r| r.starts_with(b"v=STSv1"));
    let record = sts.next()?;
    if sts.next().is_some() || record.len() > MAX_TXT_BYTES {
        return None;
    }
    let text = std::str::from_utf8(record).ok()?;
    let mut fields = text.split(';').map(|f| f.trim_matches([' ', '\t']));
    if fields.next()? != "v=STSv1" {
        return None;
    }
    let mut id = None;
    for field in fields.filter(|f| !f.is_empty()) {
        let (key, value) = field.split_once('=')?;
        if key == "id" && id.is_none() {
            id = Some(value);
        }
    }
    let id = id?;
    ((1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_example_parses_and_renders_back() {
        let text = b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n";
        let policy = Policy::parse(text).unwrap();
        assert_eq!(policy.mode, Mode::Enforce);
        assert_eq!(policy.max_age, 604800);
        assert_eq!(policy.mx, ["mail.example.com", "*.example.net", "backupmx.example.com"]);
        assert_eq!(Policy::parse(policy.render().as_bytes()), Ok(policy));
    }

    #[test]
    fn bad_policies_are_refused() {
        let ok = "version: STSv1\nmode: testing\nmx: mx.a.test\nmax_age: 86400\n";
        assert!(Policy::parse(ok.as_bytes()).is_ok());
        let with = |from: &str, to: &str| Policy::parse(ok.replace(from, to).as_bytes());
        assert_eq!(with("STSv1", "STSv2"), Err(PolicyError::Version));
        assert_eq!(with("testing", "strict"), Err(PolicyError::BadMode("strict".into())));
        assert_eq!(with("86400", "31557601"), Err(PolicyError::BadMaxAge("31557601".into())));
        assert_eq!(with("86400", "-1"), Err(PolicyError::BadMaxAge("-1".into())));
        assert_eq!(with("mx: mx.a.test\n", ""), Err(PolicyError::Missing("mx")));
        assert!(with("mx: mx.a.test\nmode: testing", "mode: none").is_ok(), "none needs no mx");
        assert_eq!(with("mx.a.test", "mx a"), Err(PolicyError::BadMx("mx a".into())));
        assert_eq!(with("mx.a.test", "*.*.a.test"), Err(PolicyError::BadMx("*.*.a.test".into())));
        assert!(matches!(with("mode", "mode\nbroken"), Err(PolicyError::BadLine(_))));
        assert_eq!(Policy::parse(&vec![b'\n'; MAX_POLICY_BYTES + 1]), Err(PolicyError::TooLarge));
        assert_eq!(Policy::parse(b"\xff: x"), Err(PolicyError::NotUtf8));
        let many: String = (0..=MAX_MX_PATTERNS).map(|i| format!("mx: m{i}.a.test\n")).collect();
        assert_eq!(Policy::parse(format!("{ok}{many}").as_bytes()), Err(PolicyError::TooManyMx));
    }

    #[test]
    fn mx_patterns_match_one_label_at_most() {
        let policy = Policy { mode: Mode::Enforce, max_age: 1, mx: vec!["mx.a.test".into(), "*.b.test".into()] };
        assert!(policy.allows("MX.A.test."));
        assert!(policy.allows("x.b.test"));
        assert!(!policy.allows("b.test"), "the wildcard needs a label");
        assert!(!policy.allows("y.x.b.test"), "and only one");
        assert!(!policy.allows("mx.a.test.evil.test"));
        assert!(!policy.allows(".b.test"));
    }

    #[test]
    fn txt_records_give_the_id_of_the_one_sts_record() {
        let id = |records: &[&str]| txt_id(records.iter().map(|r| r.as_bytes()));
        assert_eq!(id(&["v=STSv1; id=20160831085700Z;"]), Some("20160831085700Z".into()));
        assert_eq!(id(&["v=spf1 -all", "v=STSv1;id=abc"]), Some("abc".into()));
        assert_eq!(id(&["v=STSv1; id=a", "v=STSv1; id=b"]), None, "two records: no policy");
        assert_eq!(id(&["v=STSv1; id=a-b"]), None);
        assert_eq!(id(&["v=STSv1; id="]), None);
        assert_eq!(id(&["v=STSv1"]), None);
        assert_eq!(id(&["v=STSv10; id=a"]), None);
        assert_eq!(id(&[]), None);
    }
}
