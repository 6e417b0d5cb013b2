//! The MTA-STS policy (RFC 8461): served at `https://mta-sts.DOMAIN/.well-known/mta-sts.txt`
//! for every domain the cluster hosts, it tells sending servers to deliver only over TLS with
//! a valid certificate, to the MX names listed. Senders look for it only when the domain
//! publishes `_mta-sts.DOMAIN TXT "v=STSv1; id=…"`; the router logs the record to publish
//! ([`Policy::id`] changes when the policy does, which tells senders to fetch it again).

pub use sirms_proto::mta_sts::{MAX_AGE_LIMIT, Mode};

/// The request path of the policy.
pub const PATH: &str = "/.well-known/mta-sts.txt";

/// Default `max_age`: a week, as the RFC's examples use.
pub const DEFAULT_MAX_AGE: u64 = 604_800;

/// One policy for every hosted domain: they all receive on the same MX names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    pub max_age: u64,
    pub mx: Vec<String>,
}

impl Policy {
    /// From `[autoconfig.mta_sts]`; the MX defaults to `hostname`.
    pub fn new(config: &crate::config::MtaStsConfig, hostname: &str) -> Policy {
        let mx = if config.mx.is_empty() { vec![hostname.to_string()] } else { config.mx.clone() };
        Policy {
            mode: config.mode,
            max_age: config.max_age.unwrap_or(DEFAULT_MAX_AGE).min(MAX_AGE_LIMIT),
            mx: mx.into_iter().map(|m| m.to_ascii_lowercase()).collect(),
        }
    }

    /// The policy file: `version`, `mode`, one `mx` per name, `max_age`, each line ended
    /// with CRLF (the ABNF's `sts-policy-term` allows LF or CRLF; CRLF is what its examples
    /// and most senders' parsers expect).
    pub fn text(&self) -> String {
        let mut out = format!("version: STSv1\r\nmode: {}\r\n", self.mode.name());
        for mx in &self.mx {
            out.push_str(&format!("mx: {mx}\r\n"));
        }
        out.push_str(&format!("max_age: {}\r\n", self.max_age));
        out
    }

    /// The policy's `id` for the `_mta-sts` TXT record: its first 64 bits of SHA-256 in hex,
    /// so it changes exactly when the policy does (and is 1–32 alphanumerics, as §3.1 wants).
    pub fn id(&self) -> String {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.text().as_bytes());
        digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MtaStsConfig;

    #[test]
    fn the_policy_file_byte_for_byte() {
        let policy = Policy::new(&MtaStsConfig::default(), "Mail.Example.com");
        assert_eq!(policy.text(), "version: STSv1\r\nmode: testing\r\nmx: mail.example.com\r\nmax_age: 604800\r\n");
        let config = MtaStsConfig {
            mode: Mode::Enforce,
            max_age: Some(86_400),
            mx: vec!["mx1.example.com".into(), "*.example.net".into()],
        };
        let policy = Policy::new(&config, "ignored.example.com");
        assert_eq!(
            policy.text(),
            "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmx: *.example.net\r\nmax_age: 86400\r\n"
        );
        assert_eq!(policy.id().len(), 16);
        assert_ne!(policy.id(), Policy::new(&MtaStsConfig::default(), "m.test").id());
    }
}
