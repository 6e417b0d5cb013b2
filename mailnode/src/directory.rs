//! Who is ours: domains, users, aliases and their stored password hashes, behind the
//! `Directory` trait (checking passwords is `auth::password`'s).
//!
//! This file has the trait, the directory data (from the node's TOML for a node alone —
//! the paper's N1 — or from the router's snapshots in a cluster) and the live directory a
//! running node swaps snapshots into.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::auth::password::{DEFAULT_UNKNOWN_USER_HASH, unknown_hash_for};
use crate::quota::Limits;

/// Longest address accepted (RFC 5321 path limit).
pub const MAX_ADDRESS_LEN: usize = 256;
/// How deep alias expansion goes before it is treated as a loop.
const MAX_ALIAS_DEPTH: usize = 8;
/// What an envelope recipient is to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// Delivered to these users' mailboxes (logins).
    Local(Vec<String>),
    /// A domain of ours with no such user.
    Unknown,
    /// Aliases that lead back to themselves (or deeper than [`MAX_ALIAS_DEPTH`]) and reach no
    /// user: the chain of addresses, for the log (RFC 3463's 5.4.6, a routing loop).
    Loop(Vec<String>),
    /// Not one of our domains: relaying.
    Remote,
}

/// The users and domains a node serves.
pub trait Directory: Send + Sync {
    /// Resolves an envelope recipient through aliases and subaddressing.
    fn resolve(&self, address: &str) -> Recipient;
    /// The stored password hash of a login, if the user exists.
    fn password_hash(&self, login: &str) -> Option<String>;
    /// Whether `login` may use `address` as envelope sender.
    fn may_send_as(&self, login: &str, address: &str) -> bool;
    /// The limits the administrator set on what `login` may store.
    fn quota(&self, login: &str) -> Limits;
    /// The limits on what all of `domain`'s users together may store.
    fn domain_quota(&self, _domain: &str) -> Limits {
        Limits::default()
    }
    /// The logins of `domain`'s users (what its quota counts).
    fn domain_users(&self, _domain: &str) -> Vec<String> {
        Vec::new()
    }
    /// What a login naming no user is checked against: a hash that costs what checking this
    /// directory's users costs, so the time a refusal takes does not tell which logins exist.
    fn unknown_user_hash(&self) -> String {
        DEFAULT_UNKNOWN_USER_HASH.to_string()
    }
    /// The admin's static outbound relay for a foreign domain (`sirms ctl transports`).
    fn transport(&self, _domain: &str) -> Option<String> {
        None
    }
    /// The DKIM selector and PKCS#8 PEM key of one of our domains (`sirms ctl dkim`).
    fn dkim_key(&self, _domain: &str) -> Option<(String, String)> {
        None
    }
    /// Whether there is a directory at all: false in a cluster node that has neither reached a
    /// router nor a cached copy. Then nothing may be refused for good (no 550 for a user it
    /// cannot know, no failed login counted): every answer is "try again later".
    fn available(&self) -> bool {
        true
    }
}

/// Splits and normalises an address: the domain is lower-cased, and so is the local
/// part (SIRMS treats local parts case-insensitively, as nearly every site does).
pub fn normalize(address: &str) -> Option<(String, String)> {
    if address.len() > MAX_ADDRESS_LEN || address.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return None;
    }
    let (local, domain) = address.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() || domain.starts_with('.') || domain.ends_with('.') {
        return None;
    }
    Some((local.to_lowercase(), domain.to_lowercase()))
}

/// One user in the node's TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    /// The login and primary address.
    pub address: String,
    /// argon2 PHC hash (`sirms hash-password`), or `{plain}secret` for development.
    pub password: String,
    /// The most bytes the user may store (IMAP QUOTA shows it); absent or 0: no limit.
    #[serde(default)]
    pub quota_bytes: Option<u64>,
    /// The most messages the user may store; absent or 0: no limit.
    #[serde(default)]
    pub quota_messages: Option<u64>,
}

/// A domain's quota in the node's TOML: over all of its users together.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DomainQuotaEntry {
    /// The most bytes; absent or 0: no limit.
    pub quota_bytes: Option<u64>,
    /// The most messages; absent or 0: no limit.
    pub quota_messages: Option<u64>,
}

/// The directory section of the node's TOML.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirectoryConfig {
    pub domains: Vec<String>,
    pub users: Vec<UserEntry>,
    /// alias address → target addresses.
    pub aliases: BTreeMap<String, Vec<String>>,
    /// domain → what all of its users together may store.
    pub domain_quotas: BTreeMap<String, DomainQuotaEntry>,
}

/// One user as a node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub password_hash: String,
    /// The node that holds the mailbox; empty means this node.
    pub home: String,
    /// What the user may store.
    pub quota: Limits,
    /// The node holding the second copy; empty: none.
    pub replica: String,
    /// Raised by the directory whenever home, replica or `replica_in_sync` change.
    pub epoch: u64,
    /// Whether the replica holds every acknowledged write.
    pub replica_in_sync: bool,
}

/// Who is ours at one moment: from the node's TOML (a node alone, the paper's N1) or from
/// a snapshot of the router's cluster directory.
#[derive(Debug, Clone, Default)]
pub struct DirectoryData {
    domains: BTreeSet<String>,
    users: BTreeMap<String, UserRecord>,
    aliases: BTreeMap<String, Vec<String>>,
    /// Lower-case domain → what all of its users together may store (only domains with limits).
    domain_quotas: BTreeMap<String, Limits>,
    /// Lower-case domain → relay `host:port`.
    transports: BTreeMap<String, String>,
    /// Lower-case domain → (selector, PKCS#8 PEM key).
    dkim_keys: BTreeMap<String, (String, String)>,
    /// See [`Directory::unknown_user_hash`]; empty until users are loaded.
    unknown_user_hash: String,
    /// The cluster's mail nodes (not its storage nodes), by id.
    mail_nodes: BTreeSet<String>,
}

/// Errors in the directory section of a config.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("invalid address {0:?}")]
    InvalidAddress(String),
    #[error("user {0} is in no configured domain")]
    ForeignUser(String),
    #[error("user {0} is listed twice")]
    Duplicate(String),
    #[error("domain quota for {0}, which is no configured domain")]
    ForeignDomainQuota(String),
}

fn canonical(address: &str) -> Result<String, DirectoryError> {
    normalize(address).map(|(l, d)| format!("{l}@{d}")).ok_or_else(|| DirectoryError::InvalidAddress(address.into()))
}

impl DirectoryData {
    /// Builds the directory from a node's config, checking every address.
    pub fn from_config(config: &DirectoryConfig) -> Result<DirectoryData, DirectoryError> {
        let mut dir = DirectoryData::default();
        for d in &config.domains {
            dir.domains.insert(d.trim().to_lowercase());
        }
        for u in &config.users {
            let login = canonical(&u.address)?;
            let domain = login.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap_or_default();
            if !dir.domains.contains(&domain) {
                return Err(DirectoryError::ForeignUser(login));
            }
            let record = UserRecord {
                password_hash: u.password.clone(),
                home: String::new(),
                quota: Limits::new(u.quota_bytes, u.quota_messages),
                replica: String::new(),
                epoch: 0,
                replica_in_sync: false,
            };
            if dir.users.insert(login.clone(), record).is_some() {
                return Err(DirectoryError::Duplicate(login));
            }
        }
        for (alias, targets) in &config.aliases {
            let targets: Result<Vec<String>, _> = targets.iter().map(|t| canonical(t)).collect();
            dir.aliases.insert(canonical(alias)?, targets?);
        }
        for (domain, q) in &config.domain_quotas {
            let domain = domain.trim().to_lowercase();
            if !dir.domains.contains(&domain) {
                return Err(DirectoryError::ForeignDomainQuota(domain));
            }
            let limits = Limits::new(q.quota_bytes, q.quota_messages);
            if limits.any() {
                dir.domain_quotas.insert(domain, limits);
            }
        }
        dir.unknown_user_hash = unknown_hash_for(dir.users.values().map(|u| u.password_hash.as_str()));
        Ok(dir)
    }

    /// Builds the directory from the router's snapshot (already checked by the router).
    pub fn from_snapshot(snapshot: &sirms_proto::cluster::DirectorySnapshot) -> DirectoryData {
        let mut dir = DirectoryData {
            domains: snapshot.domains.iter().map(|d| d.to_lowercase()).collect(),
            users: snapshot
                .users
                .iter()
                .map(|u| {
                    let record = UserRecord {
                        password_hash: u.password_hash.clone(),
                        home: u.home.clone(),
                        quota: Limits::new(u.quota_bytes, u.quota_messages),
                        replica: u.replica.clone(),
                        epoch: u.epoch,
                        replica_in_sync: u.replica_in_sync,
                    };
                    (u.address.to_lowercase(), record)
                })
                .collect(),
            aliases: snapshot.aliases.iter().map(|a| (a.address.to_lowercase(), a.targets.clone())).collect(),
            domain_quotas: (snapshot.domain_quotas.iter())
                .map(|q| (q.domain.to_lowercase(), Limits::new(Some(q.quota_bytes), Some(q.quota_messages))))
                .filter(|(_, limits)| limits.any())
                .collect(),
            transports: snapshot.transports.iter().map(|t| (t.domain.to_lowercase(), t.relay.clone())).collect(),
            dkim_keys: snapshot
                .dkim_keys
                .iter()
                .map(|k| (k.domain.to_lowercase(), (k.selector.clone(), k.private_key_pem.clone())))
                .collect(),
            unknown_user_hash: String::new(),
            mail_nodes: snapshot.nodes.iter().filter(|n| !n.storage_only).map(|n| n.id.clone()).collect(),
        };
        dir.unknown_user_hash = unknown_hash_for(dir.users.values().map(|u| u.password_hash.as_str()));
        dir
    }

    /// Users whose password is stored in plain text (to warn about).
    pub fn plain_password_users(&self) -> Vec<String> {
        self.users.iter().filter(|(_, r)| r.password_hash.starts_with("{plain}")).map(|(u, _)| u.clone()).collect()
    }

    /// The node holding a user's mailbox (empty: this node).
    pub fn home_of(&self, login: &str) -> Option<&str> {
        self.users.get(login).map(|r| r.home.as_str())
    }

    /// A user's record.
    pub fn user(&self, login: &str) -> Option<&UserRecord> {
        self.users.get(login)
    }

    /// Every user with their record.
    pub fn users(&self) -> impl Iterator<Item = (&str, &UserRecord)> {
        self.users.iter().map(|(u, r)| (u.as_str(), r))
    }

    /// Users with a replica that is out of sync.
    pub fn replicas_behind(&self) -> impl Iterator<Item = (&str, &UserRecord)> {
        self.users().filter(|(_, r)| !r.replica.is_empty() && !r.replica_in_sync)
    }

    /// Whether `id` is one of the cluster's mail nodes (as opposed to a storage node).
    pub fn is_mail_node(&self, id: &str) -> bool {
        self.mail_nodes.contains(id)
    }

    /// The cluster's mail nodes, by id.
    pub fn mail_nodes(&self) -> impl Iterator<Item = &str> {
        self.mail_nodes.iter().map(String::as_str)
    }

    /// The first mail node by id.
    pub fn first_mail_node(&self) -> Option<&str> {
        self.mail_nodes.iter().next().map(String::as_str)
    }

    /// Expands `address` into the users it reaches (into `out`; true if any). `path` is the
    /// chain of addresses that led here: an address already on it is a loop, and the chain
    /// from the recipient to the repeated address goes into `looped` (the first one found). A branch that loops reaches no one, but its
    /// siblings still deliver (`a → [b, alice]`, `b → a` reaches alice).
    fn expand(
        &self,
        address: &str,
        path: &mut Vec<String>,
        out: &mut BTreeSet<String>,
        looped: &mut Option<Vec<String>>,
    ) -> bool {
        if path.iter().any(|p| p == address) || path.len() > MAX_ALIAS_DEPTH {
            if looped.is_none() {
                let mut chain = path.clone();
                chain.push(address.to_string());
                *looped = Some(chain);
            }
            return false;
        }
        if self.users.contains_key(address) {
            out.insert(address.to_string());
            return true;
        }
        path.push(address.to_string());
        let any = if let Some(targets) = self.aliases.get(address) {
            let mut any = false;
            for t in targets {
                any |= self.expand(t, path, out, looped);
            }
            any
        } else if let Some((local, domain)) = address.split_once('@')
            && let Some((base, _tag)) = local.split_once('+')
        {
            // Subaddressing: user+tag@domain reaches user@domain.
            self.expand(&format!("{base}@{domain}"), path, out, looped)
        } else {
            false
        };
        path.pop();
        any
    }
}

impl DirectoryData {
    /// RFC 5321 §4.5.1: `postmaster` of every domain of ours must exist. Without an alias
    /// or user of that name, it reaches the domain's first user (alphabetically).
    fn postmaster_of(&self, domain: &str) -> Recipient {
        let suffix = format!("@{domain}");
        match self.users.keys().find(|u| u.ends_with(&suffix)) {
            Some(user) => Recipient::Local(vec![user.clone()]),
            None => Recipient::Unknown,
        }
    }
}

impl Directory for DirectoryData {
    fn resolve(&self, address: &str) -> Recipient {
        if address.eq_ignore_ascii_case("postmaster") {
            // The unqualified form: the postmaster of our first domain.
            return match self.domains.iter().next() {
                Some(domain) => self.resolve(&format!("postmaster@{domain}")),
                None => Recipient::Unknown,
            };
        }
        let Some((local, domain)) = normalize(address) else { return Recipient::Unknown };
        if !self.domains.contains(&domain) {
            return Recipient::Remote;
        }
        let (mut users, mut looped) = (BTreeSet::new(), None);
        if self.expand(&format!("{local}@{domain}"), &mut Vec::new(), &mut users, &mut looped) {
            Recipient::Local(users.into_iter().collect())
        } else if local == "postmaster" {
            self.postmaster_of(&domain)
        } else if let Some(chain) = looped {
            Recipient::Loop(chain)
        } else {
            Recipient::Unknown
        }
    }

    fn password_hash(&self, login: &str) -> Option<String> {
        let login = canonical(login).ok()?;
        self.users.get(&login).map(|r| r.password_hash.clone())
    }

    fn may_send_as(&self, login: &str, address: &str) -> bool {
        let Ok(login) = canonical(login) else { return false };
        match self.resolve(address) {
            Recipient::Local(users) => users == [login],
            _ => false,
        }
    }

    fn quota(&self, login: &str) -> Limits {
        let Ok(login) = canonical(login) else { return Limits::default() };
        self.users.get(&login).map(|u| u.quota).unwrap_or_default()
    }

    fn domain_quota(&self, domain: &str) -> Limits {
        self.domain_quotas.get(&domain.to_lowercase()).copied().unwrap_or_default()
    }

    fn domain_users(&self, domain: &str) -> Vec<String> {
        let suffix = format!("@{}", domain.to_lowercase());
        self.users.keys().filter(|u| u.ends_with(&suffix)).cloned().collect()
    }

    fn transport(&self, domain: &str) -> Option<String> {
        self.transports.get(&domain.to_lowercase()).cloned()
    }

    fn dkim_key(&self, domain: &str) -> Option<(String, String)> {
        self.dkim_keys.get(&domain.to_lowercase()).cloned()
    }

    fn unknown_user_hash(&self) -> String {
        if self.unknown_user_hash.is_empty() {
            DEFAULT_UNKNOWN_USER_HASH.to_string()
        } else {
            self.unknown_user_hash.clone()
        }
    }
}

/// The directory a running node uses: swapped whole when the router sends a new snapshot.
#[derive(Debug, Default)]
pub struct LiveDirectory {
    data: std::sync::RwLock<std::sync::Arc<DirectoryData>>,
    /// Whether `data` is a directory (from the config, the cluster or its cache) and not a
    /// stand-in while the node waits for one.
    loaded: std::sync::atomic::AtomicBool,
}

impl LiveDirectory {
    /// A live directory starting from `data`.
    pub fn new(data: DirectoryData) -> LiveDirectory {
        LiveDirectory { data: std::sync::RwLock::new(std::sync::Arc::new(data)), loaded: true.into() }
    }

    /// A live directory that has none yet: unavailable until the first [`LiveDirectory::replace`].
    pub fn awaiting() -> LiveDirectory {
        LiveDirectory { data: Default::default(), loaded: false.into() }
    }

    /// The directory as it is now.
    pub fn current(&self) -> std::sync::Arc<DirectoryData> {
        self.data.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `user`'s record once this node's directory shows it at `epoch` or later, polled for at
    /// most `wait` (a change made through a router reaches the node a moment later); `None`
    /// if it did not in time, or the user is gone.
    pub async fn user_at_epoch(&self, user: &str, epoch: u64, wait: std::time::Duration) -> Option<UserRecord> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.current().user(user) {
                Some(r) if r.epoch >= epoch => return Some(r.clone()),
                _ if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await
                }
                _ => return None,
            }
        }
    }

    /// Replaces the directory.
    pub fn replace(&self, data: DirectoryData) {
        *self.data.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(data);
        self.loaded.store(true, std::sync::atomic::Ordering::Release);
    }
}

impl Directory for LiveDirectory {
    fn available(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Acquire)
    }
    fn resolve(&self, address: &str) -> Recipient {
        self.current().resolve(address)
    }
    fn password_hash(&self, login: &str) -> Option<String> {
        self.current().password_hash(login)
    }
    fn may_send_as(&self, login: &str, address: &str) -> bool {
        self.current().may_send_as(login, address)
    }
    fn quota(&self, login: &str) -> Limits {
        self.current().quota(login)
    }
    fn domain_quota(&self, domain: &str) -> Limits {
        self.current().domain_quota(domain)
    }
    fn domain_users(&self, domain: &str) -> Vec<String> {
        self.current().domain_users(domain)
    }
    fn transport(&self, domain: &str) -> Option<String> {
        self.current().transport(domain)
    }
    fn dkim_key(&self, domain: &str) -> Option<(String, String)> {
        self.current().dkim_key(domain)
    }
    fn unknown_user_hash(&self) -> String {
        self.current().unknown_user_hash()
    }
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::rand_core::OsRng;
    use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
    use argon2::{Algorithm, Argon2, Params, Version};

    use super::*;
    use crate::auth::password::{cost_class, hash_password, verify_password};

    fn dir() -> DirectoryData {
        let cfg: DirectoryConfig = toml::from_str(
            r#"
            domains = ["Example.test"]
            users = [ { address = "Alice@example.test", password = "{plain}pw", quota_bytes = 1048576, quota_messages = 10 },
                      { address = "bob@example.test", password = "{plain}pw2" },
                      { address = "carol@example.test", password = "{plain}pw3", quota_bytes = 0 } ]
            [aliases]
            "postmaster@example.test" = ["alice@example.test"]
            "team@example.test" = ["alice@example.test", "bob@example.test"]
            "loop@example.test" = ["loop@example.test"]
            "a@example.test" = ["b@example.test"]
            "b@example.test" = ["a@example.test"]
            "half@example.test" = ["a@example.test", "bob@example.test"]
            "d0@example.test" = ["d1@example.test"]
            "d1@example.test" = ["d2@example.test"]
            "d2@example.test" = ["d3@example.test"]
            "d3@example.test" = ["d4@example.test"]
            "d4@example.test" = ["d5@example.test"]
            "d5@example.test" = ["d6@example.test"]
            "d6@example.test" = ["d7@example.test"]
            "d7@example.test" = ["d8@example.test"]
            "d8@example.test" = ["d9@example.test"]
            "d9@example.test" = ["alice@example.test"]
            "#,
        )
        .unwrap();
        DirectoryData::from_config(&cfg).unwrap()
    }

    #[test]
    fn resolves_users_aliases_and_subaddresses() {
        let d = dir();
        assert_eq!(d.resolve("ALICE@Example.Test"), Recipient::Local(vec!["alice@example.test".into()]));
        assert_eq!(d.resolve("alice+lists@example.test"), Recipient::Local(vec!["alice@example.test".into()]));
        assert_eq!(d.resolve("postmaster@example.test"), Recipient::Local(vec!["alice@example.test".into()]));
        assert_eq!(
            d.resolve("team@example.test"),
            Recipient::Local(vec!["alice@example.test".into(), "bob@example.test".into()])
        );
        assert_eq!(d.resolve("nobody@example.test"), Recipient::Unknown);
        assert_eq!(d.resolve("ghost+tag@example.test"), Recipient::Unknown);
        assert_eq!(d.resolve("x@elsewhere.test"), Recipient::Remote);
        assert_eq!(d.resolve("no-at-sign"), Recipient::Unknown);
        // postmaster always exists, qualified or not.
        assert_eq!(d.resolve("Postmaster"), Recipient::Local(vec!["alice@example.test".into()]));
        // Relay tricks stay local names that do not exist, or foreign domains.
        for trick in
            ["a%elsewhere.test@example.test", "elsewhere.test!a@example.test", "\"a@elsewhere.test\"@example.test"]
        {
            assert_eq!(d.resolve(trick), Recipient::Unknown, "{trick}");
        }
        for trick in ["a@[192.0.2.1]", "a@sub.example.test", "a@example.test.evil.test"] {
            assert_eq!(d.resolve(trick), Recipient::Remote, "{trick}");
        }
        assert_eq!(d.resolve("a@example.test."), Recipient::Unknown);
    }

    /// Issue 28: an alias loop is told apart from a missing user, with the chain that loops.
    #[test]
    fn alias_loops_are_loops_not_unknown_users() {
        let d = dir();
        let chain = |c: &[&str]| Recipient::Loop(c.iter().map(|a| format!("{a}@example.test")).collect());
        assert_eq!(d.resolve("loop@example.test"), chain(&["loop", "loop"]));
        assert_eq!(d.resolve("A@example.test"), chain(&["a", "b", "a"]));
        assert_eq!(d.resolve("b+x@example.test"), chain(&["b+x", "b", "a", "b"]));
        // A looping branch beside one that reaches a user: the user gets the mail.
        assert_eq!(d.resolve("half@example.test"), Recipient::Local(vec!["bob@example.test".into()]));
        // Deeper than the limit without a cycle: a loop all the same.
        assert!(matches!(d.resolve("d0@example.test"), Recipient::Loop(c) if c.len() == MAX_ALIAS_DEPTH + 2));
        assert_eq!(d.resolve("d2@example.test"), Recipient::Local(vec!["alice@example.test".into()]));
    }

    #[test]
    fn passwords_and_senders() {
        let d = dir();
        assert!(verify_password(&d.password_hash("alice@EXAMPLE.test").unwrap(), "pw"));
        assert!(!verify_password(&d.password_hash("alice@example.test").unwrap(), "pw2"));
        assert!(d.may_send_as("alice@example.test", "Alice+x@example.test"));
        assert!(!d.may_send_as("alice@example.test", "bob@example.test"));
    }

    #[test]
    fn quotas() {
        let d = dir();
        assert_eq!(d.quota("ALICE@example.test"), Limits { bytes: Some(1_048_576), messages: Some(10) });
        assert_eq!(d.quota("bob@example.test"), Limits::default(), "no quota: no limit");
        assert_eq!(d.quota("carol@example.test"), Limits::default(), "0 means no limit, as in the cluster directory");
        assert_eq!(d.quota("nobody@example.test"), Limits::default());
        let user = |address: &str, quota_bytes, quota_messages| sirms_proto::cluster::User {
            address: address.into(),
            password_hash: "x".into(),
            quota_bytes,
            quota_messages,
            ..Default::default()
        };
        let snapshot = sirms_proto::cluster::DirectorySnapshot {
            domains: vec!["example.test".into()],
            users: vec![
                user("a@example.test", Some(5000), None),
                user("b@example.test", Some(0), Some(7)),
                user("c@example.test", None, None),
            ],
            ..Default::default()
        };
        let d = DirectoryData::from_snapshot(&snapshot);
        assert_eq!(d.quota("a@example.test"), Limits { bytes: Some(5000), messages: None });
        assert_eq!(d.quota("b@example.test"), Limits { bytes: None, messages: Some(7) });
        assert_eq!(d.quota("c@example.test"), Limits::default());
    }

    #[test]
    fn rejects_bad_config() {
        let cfg = DirectoryConfig {
            domains: vec!["a.test".into()],
            users: vec![UserEntry {
                address: "u@b.test".into(),
                password: "x".into(),
                quota_bytes: None,
                quota_messages: None,
            }],
            ..Default::default()
        };
        assert!(matches!(DirectoryData::from_config(&cfg), Err(DirectoryError::ForeignUser(_))));
    }

    /// A directory of the given stored passwords, one user each.
    fn with_passwords(passwords: &[&str]) -> DirectoryData {
        let cfg = DirectoryConfig {
            domains: vec!["example.test".into()],
            users: passwords
                .iter()
                .enumerate()
                .map(|(i, p)| UserEntry {
                    address: format!("u{i}@example.test"),
                    password: p.to_string(),
                    quota_bytes: None,
                    quota_messages: None,
                })
                .collect(),
            ..Default::default()
        };
        DirectoryData::from_config(&cfg).unwrap()
    }

    #[test]
    fn unknown_logins_are_checked_at_the_cost_of_known_ones() {
        // Plain-text passwords (development): a plain compare, not 19 MiB of argon2.
        let plain = with_passwords(&["{plain}a", "{plain}b"]);
        assert!(plain.unknown_user_hash().starts_with("{plain}"), "{}", plain.unknown_user_hash());

        // argon2 with other parameters than ours (hashes from another tool): the same ones.
        let cheap = |password: &str| {
            let params = Params::new(64, 1, 1, None).unwrap();
            let salt = SaltString::generate(&mut OsRng);
            Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password(password.as_bytes(), &salt)
                .unwrap()
                .to_string()
        };
        let (x, y) = (cheap("x"), cheap("y"));
        let mixed = with_passwords(&[&x, "{plain}p", &y]);
        let made_up = mixed.unknown_user_hash();
        assert!(made_up.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{made_up}");
        let (ours, theirs) = (PasswordHash::new(&made_up).unwrap(), PasswordHash::new(&x).unwrap());
        assert_eq!(ours.hash.unwrap().len(), theirs.hash.unwrap().len());
        for attempt in ["x", "y", "p", ""] {
            assert!(!verify_password(&made_up, attempt));
        }
        // Through a live directory too, as a node uses it.
        assert_eq!(LiveDirectory::new(mixed).unknown_user_hash(), made_up);

        // No users, or none with a usable hash: argon2 with our own parameters.
        for empty in [with_passwords(&[]), with_passwords(&["garbage"]), DirectoryData::default()] {
            let made_up = empty.unknown_user_hash();
            assert!(made_up.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{made_up}");
            assert!(!verify_password(&made_up, "pw"));
        }
        // The default is a real hash of our default parameters, as `hash_password` makes.
        let ours = hash_password("pw").unwrap();
        assert_eq!(cost_class(DEFAULT_UNKNOWN_USER_HASH), cost_class(&ours).map(|(p, _)| (p, 43)));
        assert_eq!(with_passwords(&[&ours]).unknown_user_hash().rsplitn(3, '$').nth(2), ours.rsplitn(3, '$').nth(2));
    }
}
