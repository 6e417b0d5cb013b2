//! Greylisting's decision (RFC 6647), taken by the router over the triplets its directory's
//! store keeps for the whole cluster: a sender retrying through another node or router is
//! recognised.
//!
//! For one recipient's triplet (client network, reverse path, recipient — hashed by the node):
//!
//! * unknown (or expired): recorded as pending, deferred for the delay;
//! * pending, retried before the delay is over: deferred for what is left of it (the first
//!   attempt's time is kept: an impatient sender does not push its own delay back);
//! * pending, retried after the delay: passes, and is remembered as passed for `pass_ttl`;
//!   its network's count of passed triplets goes up by one;
//! * passed: passes (its expiry is moved on at most once a day, so a regular sender costs the
//!   store one write a day, not one per message);
//! * any triplet of a network that has passed `network_passes` triplets: passes.
//!
//! The decision is [`decide`], a pure function of the stored records and the time; the
//! records are 32 bytes each ([`Record`]).

use sirms_proto::cluster::{GreylistAnswer, GreylistQuery};

/// Most triplet and network records the store holds: past it, new triplets are not recorded
/// and pass (greylisting fails open rather than let the store grow without end). About
/// 100 bytes a record: 50 MB in sled or etcd.
pub const MAX_RECORDS: u64 = 500_000;

/// How long a passed record's expiry may lag behind its last use before it is moved on.
const REFRESH_SECS: u64 = 24 * 3600;

/// Longest delay and lifetimes a node may ask for: a year (bounds arithmetic, catches typos).
const MAX_SECS: u64 = 366 * 24 * 3600;

/// One stored triplet or network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Record {
    /// When the triplet was first seen (Unix seconds).
    pub first_seen: u64,
    /// When it last passed; 0 while pending.
    pub passed_at: u64,
    /// A network's passed triplets; a triplet's passes.
    pub count: u64,
    /// When the record stops counting (Unix seconds); the store's pruning removes it after.
    pub expires: u64,
}

impl Record {
    /// The stored form: four big-endian u64s.
    pub fn encode(&self) -> Vec<u8> {
        [self.first_seen, self.passed_at, self.count, self.expires].iter().flat_map(|v| v.to_be_bytes()).collect()
    }

    /// A stored record; `None` for anything that is not one (taken as unknown).
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        let field = |i: usize| Some(u64::from_be_bytes(bytes.get(i * 8..i * 8 + 8)?.try_into().ok()?));
        if bytes.len() != 32 {
            return None;
        }
        Some(Record { first_seen: field(0)?, passed_at: field(1)?, count: field(2)?, expires: field(3)? })
    }

    /// Whether the stored record has run out at `now` (what pruning removes).
    pub fn expired(bytes: &[u8], now: u64) -> bool {
        Record::decode(bytes).is_none_or(|r| r.expires <= now)
    }
}

/// The asking node's policy, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub delay: u64,
    pub pending_ttl: u64,
    pub pass_ttl: u64,
    pub network_passes: u32,
}

/// A query the router cannot act on.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("the {0} hash must be 32 bytes")]
    Hash(&'static str),
    #[error("{0} must be between 1 second and a year")]
    Range(&'static str),
}

/// The store keys of a query: `t/HEX` for the triplet, `n/HEX` for its network.
pub fn keys(query: &GreylistQuery) -> Result<(String, String), QueryError> {
    let hex = |bytes: &[u8], what| {
        if bytes.len() != 32 {
            return Err(QueryError::Hash(what));
        }
        Ok(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
    };
    Ok((format!("t/{}", hex(&query.triplet, "triplet")?), format!("n/{}", hex(&query.network, "network")?)))
}

impl Policy {
    /// The policy a query carries, if its numbers are sane.
    pub fn of(query: &GreylistQuery) -> Result<Policy, QueryError> {
        let secs = |v: u64, what| if (1..=MAX_SECS).contains(&v) { Ok(v) } else { Err(QueryError::Range(what)) };
        Ok(Policy {
            delay: secs(query.delay_secs, "delay")?,
            pending_ttl: secs(query.pending_ttl_secs, "the pending lifetime")?,
            pass_ttl: secs(query.pass_ttl_secs, "the pass lifetime")?,
            network_passes: query.network_passes,
        })
    }
}

/// Why a triplet passed or was deferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Never seen (or expired): recorded, deferred.
    New,
    /// Retried before the delay was over: deferred.
    Early,
    /// Retried after the delay: passed, remembered.
    Retried,
    /// Passed before: passes.
    Known,
    /// Its network passed enough triplets: passes.
    Network,
    /// The store is full: not recorded, passes.
    Full,
}

impl Reason {
    /// The name in answers and logs.
    pub fn name(self) -> &'static str {
        match self {
            Reason::New => "new",
            Reason::Early => "early",
            Reason::Retried => "retried",
            Reason::Known => "known",
            Reason::Network => "network",
            Reason::Full => "full",
        }
    }
}

/// What to answer and what to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub reason: Reason,
    /// Deferred: seconds until a retry passes; 0 when passed.
    pub retry_in: u64,
    /// The triplet's new record, if it changes.
    pub triplet: Option<Record>,
    /// The network's new record, if it changes.
    pub network: Option<Record>,
}

impl Decision {
    /// Whether the recipient is let through.
    pub fn pass(&self) -> bool {
        self.retry_in == 0
    }

    /// The answer to the node.
    pub fn answer(&self) -> GreylistAnswer {
        GreylistAnswer { pass: self.pass(), retry_in_secs: self.retry_in, reason: self.reason.name().to_string() }
    }
}

/// Decides on one triplet from its stored record and its network's, at `now`. `full`: the
/// store holds [`MAX_RECORDS`] already, so a new triplet is not recorded.
pub fn decide(triplet: Option<Record>, network: Option<Record>, policy: &Policy, now: u64, full: bool) -> Decision {
    let live = |r: Option<Record>| r.filter(|r| r.expires > now);
    let (triplet, network) = (live(triplet), live(network));
    let answer = |reason, retry_in, triplet, network| Decision { reason, retry_in, triplet, network };
    if policy.network_passes > 0
        && let Some(n) = network
        && n.count >= u64::from(policy.network_passes)
    {
        let refreshed = (now.saturating_sub(n.passed_at) >= REFRESH_SECS).then_some(Record {
            passed_at: now,
            expires: now + policy.pass_ttl,
            ..n
        });
        return answer(Reason::Network, 0, None, refreshed);
    }
    match triplet {
        None if full => answer(Reason::Full, 0, None, None),
        None => {
            let pending = Record { first_seen: now, passed_at: 0, count: 0, expires: now + policy.pending_ttl };
            answer(Reason::New, policy.delay.max(1), Some(pending), None)
        }
        Some(t) if t.passed_at == 0 && now < t.first_seen + policy.delay => {
            answer(Reason::Early, t.first_seen + policy.delay - now, None, None)
        }
        Some(t) if t.passed_at == 0 => {
            let passed = Record { passed_at: now, count: 1, expires: now + policy.pass_ttl, ..t };
            let n = network.unwrap_or(Record { first_seen: now, ..Record::default() });
            let network = Record { passed_at: now, count: n.count + 1, expires: now + policy.pass_ttl, ..n };
            answer(Reason::Retried, 0, Some(passed), Some(network))
        }
        Some(t) => {
            let refreshed = (now.saturating_sub(t.passed_at) >= REFRESH_SECS).then_some(Record {
                passed_at: now,
                count: t.count + 1,
                expires: now + policy.pass_ttl,
                ..t
            });
            answer(Reason::Known, 0, refreshed, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy { delay: 300, pending_ttl: 86_400, pass_ttl: 36 * 86_400, network_passes: 3 };

    /// Runs `decide` the way the router does, keeping the records in two variables.
    struct Run {
        triplet: Option<Record>,
        network: Option<Record>,
    }

    impl Run {
        fn at(&mut self, now: u64) -> Decision {
            let d = decide(self.triplet, self.network, &POLICY, now, false);
            self.triplet = d.triplet.or(self.triplet);
            self.network = d.network.or(self.network);
            d
        }
    }

    #[test]
    fn a_new_triplet_waits_the_delay_and_then_passes_for_good() {
        let mut run = Run { triplet: None, network: None };
        let first = run.at(1000);
        assert_eq!((first.reason, first.retry_in), (Reason::New, 300));
        let early = run.at(1100);
        assert_eq!((early.reason, early.retry_in), (Reason::Early, 200), "the first attempt's time is kept");
        assert!(!early.pass());
        let retried = run.at(1300);
        assert!(retried.pass() && retried.reason == Reason::Retried);
        assert_eq!(run.network.map(|n| n.count), Some(1));
        let again = run.at(2000);
        assert_eq!(again.reason, Reason::Known);
        assert_eq!(again.triplet, None, "no write for a triplet passed less than a day ago");
        let next_day = run.at(1300 + REFRESH_SECS);
        assert_eq!(next_day.triplet.map(|t| t.expires), Some(1300 + REFRESH_SECS + POLICY.pass_ttl));
    }

    #[test]
    fn records_expire() {
        let mut run = Run { triplet: None, network: None };
        run.at(0);
        assert_eq!(run.at(POLICY.pending_ttl).reason, Reason::New, "a pending triplet never retried is forgotten");
        run.at(POLICY.pending_ttl + 300);
        let passed_until = POLICY.pending_ttl + 300 + POLICY.pass_ttl;
        assert_eq!(run.at(passed_until - 1).reason, Reason::Known);
        assert_eq!(run.at(passed_until + REFRESH_SECS).reason, Reason::Known, "refreshed by the use a day before");
        assert_eq!(run.at(passed_until * 3).reason, Reason::New);
    }

    #[test]
    fn a_network_that_passed_often_enough_passes_at_once() {
        let three = Record { first_seen: 1, passed_at: 10, count: 3, expires: 100_000 };
        let network = Some(three);
        let d = decide(None, network, &POLICY, 50, false);
        assert!(d.pass() && d.reason == Reason::Network && d.triplet.is_none());
        let two = Some(Record { count: 2, ..three });
        assert_eq!(decide(None, two, &POLICY, 50, false).reason, Reason::New);
        let off = Policy { network_passes: 0, ..POLICY };
        assert_eq!(decide(None, network, &off, 50, false).reason, Reason::New, "0 turns it off");
    }

    #[test]
    fn a_full_store_records_nothing_new_and_lets_it_through() {
        let d = decide(None, None, &POLICY, 50, true);
        assert!(d.pass() && d.reason == Reason::Full && d.triplet.is_none() && d.network.is_none());
        let pending = Some(Record { first_seen: 0, passed_at: 0, count: 0, expires: 1000 });
        assert_eq!(decide(pending, None, &POLICY, 50, true).reason, Reason::Early, "known triplets still count");
    }

    #[test]
    fn records_round_trip_and_garbage_is_unknown() {
        let r = Record { first_seen: 1, passed_at: 2, count: 3, expires: u64::MAX };
        assert_eq!(Record::decode(&r.encode()), Some(r));
        assert_eq!(Record::decode(b"short"), None);
        assert!(Record::expired(b"short", 0), "garbage is pruned");
        assert!(!Record::expired(&r.encode(), 5));
    }

    #[test]
    fn queries_are_checked() {
        let good = GreylistQuery {
            triplet: vec![1; 32].into(),
            network: vec![2; 32].into(),
            delay_secs: 2,
            pending_ttl_secs: 10,
            pass_ttl_secs: 10,
            network_passes: 0,
        };
        let (t, n) = keys(&good).expect("keys");
        assert!(t.starts_with("t/0101") && n.starts_with("n/0202") && t.len() == 66);
        assert!(keys(&GreylistQuery { triplet: vec![1; 31].into(), ..good.clone() }).is_err());
        assert!(Policy::of(&GreylistQuery { delay_secs: 0, ..good.clone() }).is_err());
        assert!(Policy::of(&GreylistQuery { pass_ttl_secs: u64::MAX, ..good.clone() }).is_err());
        assert!(Policy::of(&good).is_ok());
    }
}
