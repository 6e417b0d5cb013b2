//! Failed-login throttling, shared by SMTP, IMAP and POP3 so an attacker cannot spread a
//! guessing run over the three protocols.
//!
//! Two counters, each a fixed window:
//! - per client network (the address, or its /64 for IPv6, where one host holds many
//!   addresses): too many failures ban the network for a while, whatever login it tries;
//! - per account: too many failures, from anywhere, lock the account against every address
//!   that has itself failed lately. An attacker can therefore not lock the owner out: from
//!   an address with no failed logins, the right password still works.
//!
//! The client address is the real one (nodes take it from the router's PROXY v2 header), so
//! the router is never the one banned; trusted proxies and the allowlist are never banned.
//! Memory is bounded: at most [`MAX_TRACKED`] records per kind, stale ones pruned first.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use sirms_proto::cidr::{Cidr, CidrError};

/// Records kept per kind (networks, accounts) before new ones are no longer tracked.
pub const MAX_TRACKED: usize = 100_000;

/// `[auth]` in node.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Failures are counted over windows of this length.
    pub window_secs: u64,
    /// Failed logins from one client network, within a window, that ban it.
    pub max_failures_per_ip: u32,
    /// Failed logins for one account, within a window, that lock it (see the module doc).
    pub max_failures_per_account: u32,
    /// How long a ban or lock lasts.
    pub ban_secs: u64,
    /// Networks never banned (monitoring, office NAT), as CIDRs or addresses.
    pub allow: Vec<String>,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            window_secs: 600,
            max_failures_per_ip: 10,
            max_failures_per_account: 30,
            ban_secs: 900,
            allow: Vec::new(),
        }
    }
}

/// Why a login attempt is refused before its password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client's network failed too often.
    Network,
    /// The account failed too often, and so did this client.
    Account,
}

/// Failure counts of one network or account.
#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    window_start: Instant,
    banned_until: Option<Instant>,
}

impl Record {
    fn new(now: Instant) -> Record {
        Record { failures: 0, window_start: now, banned_until: None }
    }

    fn banned(&self, now: Instant) -> bool {
        self.banned_until.is_some_and(|until| now < until)
    }

    /// Failures in the current window.
    fn recent(&self, now: Instant, window: Duration) -> u32 {
        if now.saturating_duration_since(self.window_start) > window { 0 } else { self.failures }
    }

    /// Counts a failure; true if it starts a ban.
    fn fail(&mut self, now: Instant, window: Duration, max: u32, ban: Duration) -> bool {
        self.failures = self.recent(now, window) + 1;
        if self.failures == 1 {
            self.window_start = now;
        }
        if self.failures >= max.max(1) && !self.banned(now) {
            self.banned_until = Some(now + ban);
            return true;
        }
        false
    }

    fn stale(&self, now: Instant, window: Duration) -> bool {
        !self.banned(now) && self.recent(now, window) == 0
    }
}

/// Failure records of one kind, bounded.
#[derive(Debug)]
struct Records<K> {
    map: HashMap<K, Record>,
    /// When a full map was last pruned: a spray of new keys must not rescan it every time.
    pruned: Option<Instant>,
}

impl<K: std::hash::Hash + Eq> Records<K> {
    fn new() -> Self {
        Records { map: HashMap::new(), pruned: None }
    }

    fn get(&self, key: &K) -> Option<&Record> {
        self.map.get(key)
    }

    /// The record for `key`, created if there is room (after pruning stale ones, at most
    /// once a second).
    fn entry(&mut self, key: K, now: Instant, window: Duration) -> Option<&mut Record> {
        if !self.map.contains_key(&key) && self.map.len() >= MAX_TRACKED {
            if self.pruned.is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(1)) {
                return None;
            }
            self.pruned = Some(now);
            self.map.retain(|_, r| !r.stale(now, window));
            if self.map.len() >= MAX_TRACKED {
                return None;
            }
        }
        Some(self.map.entry(key).or_insert_with(|| Record::new(now)))
    }
}

/// The failed-login book of one node.
#[derive(Debug)]
pub struct Throttle {
    window: Duration,
    ban: Duration,
    max_per_ip: u32,
    max_per_account: u32,
    allow: Vec<Cidr>,
    books: Mutex<(Records<IpAddr>, Records<String>)>,
}

impl Throttle {
    /// A throttle from `config`; `trusted` (the routers) are added to its allowlist.
    pub fn new(config: &ThrottleConfig, trusted: &[IpAddr]) -> Result<Throttle, CidrError> {
        let mut allow: Vec<Cidr> = config.allow.iter().map(|a| a.parse()).collect::<Result<_, _>>()?;
        allow.extend(trusted.iter().map(|ip| Cidr::host(*ip)));
        Ok(Throttle {
            window: Duration::from_secs(config.window_secs),
            ban: Duration::from_secs(config.ban_secs),
            max_per_ip: config.max_failures_per_ip,
            max_per_account: config.max_failures_per_account,
            allow,
            books: Mutex::new((Records::new(), Records::new())),
        })
    }

    /// Whether a login for `account` from `ip` may be checked now.
    pub fn check(&self, ip: IpAddr, account: &str) -> Result<(), Refusal> {
        self.check_at(Instant::now(), ip, account)
    }

    /// Counts a failed login for `account` from `ip`.
    pub fn failed(&self, ip: IpAddr, account: &str) {
        self.failed_at(Instant::now(), ip, account)
    }

    fn check_at(&self, now: Instant, ip: IpAddr, account: &str) -> Result<(), Refusal> {
        if self.allowed(ip) {
            return Ok(());
        }
        let books = self.books.lock().unwrap_or_else(|p| p.into_inner());
        let network = books.0.get(&network_of(ip));
        if network.is_some_and(|r| r.banned(now)) {
            return Err(Refusal::Network);
        }
        let client_failed = network.is_some_and(|r| r.recent(now, self.window) > 0);
        if client_failed && books.1.get(&account_key(account)).is_some_and(|r| r.banned(now)) {
            return Err(Refusal::Account);
        }
        Ok(())
    }

    fn failed_at(&self, now: Instant, ip: IpAddr, account: &str) {
        if self.allowed(ip) {
            return;
        }
        let (window, ban) = (self.window, self.ban);
        let mut books = self.books.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = books.0.entry(network_of(ip), now, window)
            && r.fail(now, window, self.max_per_ip, ban)
        {
            tracing::warn!(client = %ip, ban_secs = ban.as_secs(), "too many failed logins: client banned");
        }
        if let Some(r) = books.1.entry(account_key(account), now, window)
            && r.fail(now, window, self.max_per_account, ban)
        {
            tracing::warn!(account = ?account, ban_secs = ban.as_secs(), "too many failed logins: account locked against failing clients");
        }
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|c| c.contains(ip))
    }
}

/// The unit a ban applies to: an IPv4 address, or an IPv6 /64.
fn network_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

/// Accounts are counted case-insensitively and bounded in length, whatever a client sends.
fn account_key(account: &str) -> String {
    account.chars().take(320).flat_map(char::to_lowercase).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(allow: &[&str]) -> Throttle {
        let config = ThrottleConfig {
            max_failures_per_ip: 3,
            max_failures_per_account: 5,
            allow: allow.iter().map(|s| s.to_string()).collect(),
            ..ThrottleConfig::default()
        };
        Throttle::new(&config, &["10.0.0.1".parse().unwrap()]).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_network_is_banned_after_its_failures_and_released_later() {
        let t = throttle(&[]);
        let now = Instant::now();
        for _ in 0..2 {
            t.failed_at(now, ip("192.0.2.7"), "alice@example.test");
        }
        assert_eq!(t.check_at(now, ip("192.0.2.7"), "bob@example.test"), Ok(()));
        t.failed_at(now, ip("192.0.2.7"), "carol@example.test");
        assert_eq!(t.check_at(now, ip("192.0.2.7"), "bob@example.test"), Err(Refusal::Network));
        assert_eq!(t.check_at(now, ip("192.0.2.8"), "bob@example.test"), Ok(()));
        let later = now + Duration::from_secs(901);
        assert_eq!(t.check_at(later, ip("192.0.2.7"), "bob@example.test"), Ok(()));
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let t = throttle(&[]);
        let now = Instant::now();
        for i in 0..10u64 {
            t.failed_at(now + Duration::from_secs(i * 601), ip("192.0.2.7"), "alice@example.test");
        }
        assert_eq!(t.check_at(now + Duration::from_secs(6010), ip("192.0.2.7"), "x"), Ok(()));
    }

    #[test]
    fn ipv6_is_banned_by_64() {
        let t = throttle(&[]);
        let now = Instant::now();
        for host in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"] {
            t.failed_at(now, ip(host), "alice@example.test");
        }
        assert_eq!(t.check_at(now, ip("2001:db8:1:2::99"), "bob"), Err(Refusal::Network));
        assert_eq!(t.check_at(now, ip("2001:db8:1:3::1"), "bob"), Ok(()));
    }

    #[test]
    fn a_locked_account_still_opens_for_a_client_that_never_failed() {
        let t = throttle(&[]);
        let now = Instant::now();
        // A distributed guess: five networks, one failure each, all at alice.
        for n in 1..=5 {
            t.failed_at(now, ip(&format!("198.51.100.{n}")), "Alice@Example.TEST");
        }
        assert_eq!(t.check_at(now, ip("198.51.100.1"), "alice@example.test"), Err(Refusal::Account));
        assert_eq!(t.check_at(now, ip("198.51.100.1"), "bob@example.test"), Ok(()));
        assert_eq!(t.check_at(now, ip("203.0.113.9"), "alice@example.test"), Ok(()));
    }

    #[test]
    fn trusted_and_allowlisted_clients_are_never_banned() {
        let t = throttle(&["192.0.2.0/24"]);
        let now = Instant::now();
        for _ in 0..50 {
            t.failed_at(now, ip("192.0.2.7"), "alice");
            t.failed_at(now, ip("10.0.0.1"), "alice");
        }
        assert_eq!(t.check_at(now, ip("192.0.2.7"), "alice"), Ok(()));
        assert_eq!(t.check_at(now, ip("10.0.0.1"), "alice"), Ok(()));
        assert!(
            Throttle::new(&ThrottleConfig { allow: vec!["10.0.0.1/8".into()], ..Default::default() }, &[]).is_err()
        );
    }

    #[test]
    fn memory_stays_bounded_under_a_spray() {
        let t = throttle(&[]);
        let now = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 1000) {
            t.failed_at(now, IpAddr::from(i.to_be_bytes()), &format!("user{i}"));
        }
        let books = t.books.lock().unwrap();
        assert!(books.0.map.len() <= MAX_TRACKED && books.1.map.len() <= MAX_TRACKED);
    }
}
