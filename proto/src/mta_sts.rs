//! What MTA-STS (RFC 8461) means on both of its sides: the router publishes a policy for the
//! cluster's domains, and a mail node reads other domains' policies before it sends.

use serde::Deserialize;

/// The longest `max_age` RFC 8461 §3.2 allows: 31,557,600 s (about a year).
pub const MAX_AGE_LIMIT: u64 = 31_557_600;

/// What a sender does when delivery cannot meet the policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deliver only over validated TLS to a listed MX; otherwise wait.
    Enforce,
    /// Deliver anyway, and report what would have failed: the safe first step.
    #[default]
    Testing,
    /// No policy: what a domain publishes to withdraw one.
    None,
}

impl Mode {
    /// The name in the policy file.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}
