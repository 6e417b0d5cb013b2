//! What happens to a message once its results are in: DMARC's published policy, bent by the
//! node's overrides, allowlist, trusted ARC sealers and its stance on DNS failures.

use serde::Deserialize;

/// What the node does when a published DMARC policy applies to a failing message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// Refuse it at the end of DATA (`550 5.7.1`).
    Reject,
    /// Deliver it into the Junk folder.
    Quarantine,
    /// Deliver it as usual; `Authentication-Results:` still says `dmarc=fail`.
    None,
}

/// What the node does when a DNS answer needed for the verdict did not come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnTempError {
    /// `451 4.7.0`: the sender retries later, when DNS may answer.
    #[default]
    Defer,
    /// Deliver, with the `temperror` results in `Authentication-Results:`.
    Accept,
}

/// The DMARC outcome, without the error details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dmarc {
    Pass,
    Fail,
    /// No record, or a message DMARC does not apply to (no or many From domains).
    None,
    TempError,
    PermError,
}

/// The policy the author domain published (`p=`, or `sp=` for a subdomain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    None,
    Quarantine,
    Reject,
}

/// What the results say, as the decision needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub dmarc: Dmarc,
    pub published: Published,
    /// A lookup the verdict depends on failed for now (SPF, DKIM key, DMARC record, ARC key).
    pub temperror: bool,
    /// The client or the sender's domain is on `[inbound.auth] allow`.
    pub allowlisted: bool,
    /// A valid ARC chain, last sealed by a trusted sealer, says DMARC passed there.
    pub arc_trusted_pass: bool,
}

/// How the node treats each policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// For `p=reject`.
    pub on_reject: Enforcement,
    /// For `p=quarantine`.
    pub on_quarantine: Enforcement,
    pub temperror: OnTempError,
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Deliver,
    Junk,
    Reject,
    Defer,
}

/// Decides what to do with a message.
pub fn decide(facts: Facts, rules: Rules) -> Action {
    if facts.dmarc == Dmarc::Pass || facts.allowlisted {
        return Action::Deliver;
    }
    // A failure resting on an unanswered lookup may be a pass on the next try: never punish
    // it, but never pass it silently either.
    if facts.temperror || facts.dmarc == Dmarc::TempError {
        return match rules.temperror {
            OnTempError::Defer => Action::Defer,
            OnTempError::Accept => Action::Deliver,
        };
    }
    if facts.dmarc != Dmarc::Fail || facts.arc_trusted_pass {
        return Action::Deliver;
    }
    let enforcement = match facts.published {
        Published::Reject => rules.on_reject,
        Published::Quarantine => rules.on_quarantine,
        Published::None => Enforcement::None,
    };
    match enforcement {
        Enforcement::Reject => Action::Reject,
        Enforcement::Quarantine => Action::Junk,
        Enforcement::None => Action::Deliver,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules =
        Rules { on_reject: Enforcement::Reject, on_quarantine: Enforcement::Quarantine, temperror: OnTempError::Defer };

    fn failing(published: Published) -> Facts {
        Facts { dmarc: Dmarc::Fail, published, temperror: false, allowlisted: false, arc_trusted_pass: false }
    }

    #[test]
    fn published_policy_applies_to_failures_only() {
        assert_eq!(decide(failing(Published::Reject), RULES), Action::Reject);
        assert_eq!(decide(failing(Published::Quarantine), RULES), Action::Junk);
        assert_eq!(decide(failing(Published::None), RULES), Action::Deliver);
        let pass = Facts { dmarc: Dmarc::Pass, ..failing(Published::Reject) };
        assert_eq!(decide(pass, RULES), Action::Deliver);
        for dmarc in [Dmarc::None, Dmarc::PermError] {
            assert_eq!(decide(Facts { dmarc, ..failing(Published::Reject) }, RULES), Action::Deliver);
        }
    }

    #[test]
    fn overrides_soften_or_harden() {
        let soft = Rules { on_reject: Enforcement::Quarantine, on_quarantine: Enforcement::None, ..RULES };
        assert_eq!(decide(failing(Published::Reject), soft), Action::Junk);
        assert_eq!(decide(failing(Published::Quarantine), soft), Action::Deliver);
        let hard = Rules { on_quarantine: Enforcement::Reject, ..RULES };
        assert_eq!(decide(failing(Published::Quarantine), hard), Action::Reject);
    }

    #[test]
    fn allowlist_and_trusted_arc_deliver_failures() {
        let allowed = Facts { allowlisted: true, ..failing(Published::Reject) };
        assert_eq!(decide(allowed, RULES), Action::Deliver);
        let forwarded = Facts { arc_trusted_pass: true, ..failing(Published::Reject) };
        assert_eq!(decide(forwarded, RULES), Action::Deliver);
    }

    #[test]
    fn temperror_defers_or_accepts_but_not_a_pass() {
        let dns_down = Facts { dmarc: Dmarc::TempError, ..failing(Published::None) };
        assert_eq!(decide(dns_down, RULES), Action::Defer);
        let accept = Rules { temperror: OnTempError::Accept, ..RULES };
        assert_eq!(decide(dns_down, accept), Action::Deliver);
        // A DKIM key that did not come may have made the difference: not a reject.
        let key_missing = Facts { temperror: true, ..failing(Published::Reject) };
        assert_eq!(decide(key_missing, RULES), Action::Defer);
        // A pass does not depend on the lookup that failed.
        let passed = Facts { dmarc: Dmarc::Pass, temperror: true, ..failing(Published::Reject) };
        assert_eq!(decide(passed, RULES), Action::Deliver);
    }
}
