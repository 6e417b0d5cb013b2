//! The directory as data: every record in memory, and every admin change checked against it
//! and turned into record writes. Pure, so both stores (sled, etcd) accept and refuse exactly
//! the same changes, and it is tested without either.

use std::collections::BTreeMap;
use std::str::FromStr;

use prost::Message;
use sirms_proto::cluster::{
    Alias, DirectorySnapshot, DkimKey, DomainQuota, Group, Invite, Node, ReplicaState, Route, Transport, User,
};

use super::DirectoryError;
use super::placement::{self, Copies};
use crate::node::{GroupName, NodeId};
use crate::table::{Cidr, Target};

/// Longest e-mail address accepted (RFC 5321 path limit).
const MAX_ADDRESS_LEN: usize = 256;

/// The kinds of record; each is a sled tree, or a key prefix in etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Nodes,
    Routes,
    Groups,
    Domains,
    Users,
    Aliases,
    Transports,
    DkimKeys,
    /// Node invitations by the SHA-256 of their token: routers only, never sent to nodes.
    Invites,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 9] = [
        Table::Nodes,
        Table::Routes,
        Table::Groups,
        Table::Domains,
        Table::Users,
        Table::Aliases,
        Table::Transports,
        Table::DkimKeys,
        Table::Invites,
    ];

    /// The name on disk (sled tree) and in etcd keys.
    pub fn name(self) -> &'static str {
        match self {
            Table::Nodes => "nodes",
            Table::Routes => "routes",
            Table::Groups => "groups",
            Table::Domains => "domains",
            Table::Users => "users",
            Table::Aliases => "aliases",
            Table::Transports => "transports",
            Table::DkimKeys => "dkim_keys",
            Table::Invites => "invites",
        }
    }

    /// The table of a stored name.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// One record written or removed by a change. Values are the records' protobuf encoding (a
/// domain's is its [`DomainQuota`], empty when it has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put(Table, String, Vec<u8>),
    Delete(Table, String),
}

/// The whole directory at one version.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// Bumped by every change; the same number on every router and node that has it.
    pub version: u64,
    /// Whether this is the directory as read from its store: false in a router that has not
    /// reached its store yet, whose empty copy must not be taken for an empty directory.
    pub loaded: bool,
    nodes: BTreeMap<String, Node>,
    routes: BTreeMap<String, Route>,
    groups: BTreeMap<String, Group>,
    /// Each domain with its quota (all limits 0 when it has none).
    domains: BTreeMap<String, DomainQuota>,
    users: BTreeMap<String, User>,
    aliases: BTreeMap<String, Alias>,
    transports: BTreeMap<String, Transport>,
    dkim_keys: BTreeMap<String, DkimKey>,
    invites: BTreeMap<String, Invite>,
}

/// A domain as the directory keeps it (lower case), or why it is not one.
fn checked_domain(domain: &str) -> Result<String, DirectoryError> {
    let domain = domain.trim().to_lowercase();
    if domain.is_empty() || domain.contains(['@', '/', ' ', ':']) || domain.len() > 253 {
        return Err(DirectoryError::Invalid(format!("invalid domain {domain:?}")));
    }
    Ok(domain)
}

/// Normalises an address (lower case) and checks its shape.
pub fn canonical_address(address: &str) -> Result<(String, String), DirectoryError> {
    let bad = || DirectoryError::Address(address.to_string());
    if address.len() > MAX_ADDRESS_LEN || address.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad());
    }
    let (local, domain) = address.rsplit_once('@').ok_or_else(bad)?;
    if local.is_empty() || domain.is_empty() {
        return Err(bad());
    }
    Ok((local.to_lowercase(), domain.to_lowercase()))
}

fn put(table: Table, key: &str, record: &impl Message) -> Vec<Write> {
    vec![Write::Put(table, key.to_string(), record.encode_to_vec())]
}

/// A removal of a record that must exist.
fn delete(table: Table, key: String, exists: bool, what: &str) -> Result<Vec<Write>, DirectoryError> {
    if !exists {
        return Err(DirectoryError::NotFound(format!("{what} {key}")));
    }
    Ok(vec![Write::Delete(table, key)])
}

impl State {
    /// Takes one stored record into the state. A value that does not decode is skipped, as
    /// a record this version cannot read should not take the whole directory down.
    pub fn apply(&mut self, write: &Write) {
        fn set<M: Message + Default>(map: &mut BTreeMap<String, M>, key: &str, value: &[u8]) {
            if let Ok(record) = M::decode(value) {
                map.insert(key.to_string(), record);
            }
        }
        match write {
            Write::Put(table, key, value) => match table {
                Table::Nodes => set(&mut self.nodes, key, value),
                Table::Routes => set(&mut self.routes, key, value),
                Table::Groups => set(&mut self.groups, key, value),
                Table::Domains => {
                    // A value that does not decode still names a domain: mail for it must not bounce.
                    let quota = DomainQuota::decode(value.as_slice()).unwrap_or_default();
                    self.domains.insert(key.clone(), DomainQuota { domain: key.clone(), ..quota });
                }
                Table::Users => set(&mut self.users, key, value),
                Table::Aliases => set(&mut self.aliases, key, value),
                Table::Transports => set(&mut self.transports, key, value),
                Table::DkimKeys => set(&mut self.dkim_keys, key, value),
                Table::Invites => set(&mut self.invites, key, value),
            },
            Write::Delete(table, key) => {
                match table {
                    Table::Nodes => self.nodes.remove(key).is_some(),
                    Table::Routes => self.routes.remove(key).is_some(),
                    Table::Groups => self.groups.remove(key).is_some(),
                    Table::Domains => self.domains.remove(key).is_some(),
                    Table::Users => self.users.remove(key).is_some(),
                    Table::Aliases => self.aliases.remove(key).is_some(),
                    Table::Transports => self.transports.remove(key).is_some(),
                    Table::DkimKeys => self.dkim_keys.remove(key).is_some(),
                    Table::Invites => self.invites.remove(key).is_some(),
                };
            }
        }
    }

    /// Whether `domain` (lower case) is one of the cluster's.
    pub fn has_domain(&self, domain: &str) -> bool {
        self.domains.contains_key(domain)
    }

    /// The whole directory as the Directory service sends it.
    pub fn snapshot(&self) -> DirectorySnapshot {
        DirectorySnapshot {
            version: self.version,
            nodes: self.nodes.values().cloned().collect(),
            domains: self.domains.keys().cloned().collect(),
            domain_quotas: (self.domains.values())
                .filter(|q| q.quota_bytes > 0 || q.quota_messages > 0)
                .cloned()
                .collect(),
            users: self.users.values().cloned().collect(),
            aliases: self.aliases.values().cloned().collect(),
            transports: self.transports.values().cloned().collect(),
            dkim_keys: self.dkim_keys.values().cloned().collect(),
        }
    }

    /// The routing table entries.
    pub fn routes(&self) -> Vec<Route> {
        self.routes.values().cloned().collect()
    }

    /// The node groups.
    pub fn groups(&self) -> Vec<Group> {
        self.groups.values().cloned().collect()
    }

    /// A node by id.
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.get(id)
    }

    /// Adds or replaces a node.
    pub fn put_node(&self, mut node: Node) -> Result<Vec<Write>, DirectoryError> {
        NodeId::from_str(&node.id)?;
        if node.host.is_empty() {
            return Err(DirectoryError::Invalid("node host is empty".into()));
        }
        if node.weight == 0 && !node.storage_only {
            node.weight = 100;
        }
        Ok(put(Table::Nodes, &node.id, &node))
    }

    /// A node announcing itself: one already known keeps what the admin set (weight, drain);
    /// only its addresses are taken from what it announces.
    pub fn register_node(&self, node: Node) -> Result<Vec<Write>, DirectoryError> {
        let merged = match self.nodes.get(&node.id) {
            Some(known) => Node { weight: known.weight, drained: known.drained, ..node },
            None => node,
        };
        // A node coming back unchanged (a restart, another router) changes nothing: no new
        // version for every node to fetch, and no write that a control plane without quorum
        // would refuse.
        if self.nodes.get(&merged.id) == Some(&merged) {
            return Ok(Vec::new());
        }
        self.put_node(merged)
    }

    /// Removes a node; users homed there keep their home until moved.
    pub fn remove_node(&self, id: &str) -> Result<Vec<Write>, DirectoryError> {
        delete(Table::Nodes, id.to_string(), self.nodes.contains_key(id), "node")
    }

    /// Drains or undrains a node.
    pub fn set_drained(&self, id: &str, drained: bool) -> Result<Vec<Write>, DirectoryError> {
        let node = self.nodes.get(id).ok_or_else(|| DirectoryError::UnknownNode(id.to_string()))?;
        Ok(put(Table::Nodes, id, &Node { drained, ..node.clone() }))
    }

    /// Adds or replaces a route (CIDR → node or `group:NAME`).
    pub fn put_route(&self, cidr: &str, target: &str) -> Result<Vec<Write>, DirectoryError> {
        let cidr = Cidr::from_str(cidr)?;
        Target::from_str(target).map_err(|_| DirectoryError::Target(target.to_string()))?;
        let route = Route { cidr: cidr.to_string(), target: target.to_string() };
        Ok(put(Table::Routes, &route.cidr, &route))
    }

    /// Removes a route.
    pub fn remove_route(&self, cidr: &str) -> Result<Vec<Write>, DirectoryError> {
        let cidr = Cidr::from_str(cidr)?.to_string();
        let exists = self.routes.contains_key(&cidr);
        delete(Table::Routes, cidr, exists, "route")
    }

    /// Adds or replaces a node group.
    pub fn put_group(&self, group: Group) -> Result<Vec<Write>, DirectoryError> {
        GroupName::from_str(&group.name)?;
        for m in &group.members {
            NodeId::from_str(m)?;
        }
        Ok(put(Table::Groups, &group.name, &group))
    }

    /// Removes a node group.
    pub fn remove_group(&self, name: &str) -> Result<Vec<Write>, DirectoryError> {
        delete(Table::Groups, name.to_string(), self.groups.contains_key(name), "group")
    }

    /// Adds a mail domain; adding one that exists keeps its quota.
    pub fn put_domain(&self, domain: &str) -> Result<Vec<Write>, DirectoryError> {
        let domain = checked_domain(domain)?;
        if self.domains.contains_key(&domain) {
            return Ok(Vec::new());
        }
        Ok(vec![Write::Put(Table::Domains, domain, Vec::new())])
    }

    /// Sets the quota over all of one domain's users (both limits 0: none).
    pub fn set_domain_quota(&self, quota: &DomainQuota) -> Result<Vec<Write>, DirectoryError> {
        let domain = checked_domain(&quota.domain)?;
        if !self.domains.contains_key(&domain) {
            return Err(DirectoryError::UnknownDomain(domain));
        }
        // The key names the domain; the value holds only the limits.
        let value = DomainQuota { domain: String::new(), ..quota.clone() };
        Ok(put(Table::Domains, &domain, &value))
    }

    /// Removes a mail domain.
    pub fn remove_domain(&self, domain: &str) -> Result<Vec<Write>, DirectoryError> {
        let domain = domain.trim().to_lowercase();
        let exists = self.domains.contains_key(&domain);
        delete(Table::Domains, domain, exists, "domain")
    }

    /// Sends mail for a (foreign) domain to one relay instead of its MX hosts.
    pub fn put_transport(&self, domain: &str, relay: &str) -> Result<Vec<Write>, DirectoryError> {
        let domain = checked_domain(domain)?;
        let relay = relay.trim();
        let (host, port) = match relay.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => (h, Some(p)),
            _ => (relay, None),
        };
        let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
        if host.trim_matches(['[', ']']).is_empty() || host.contains(char::is_whitespace) || !port_ok {
            return Err(DirectoryError::Invalid(format!("relay {relay:?} is not host:port")));
        }
        let transport = Transport { domain, relay: relay.to_string() };
        Ok(put(Table::Transports, &transport.domain, &transport))
    }

    /// Removes a static transport: the domain's MX hosts are used again.
    pub fn remove_transport(&self, domain: &str) -> Result<Vec<Write>, DirectoryError> {
        let domain = domain.trim().to_lowercase();
        let exists = self.transports.contains_key(&domain);
        delete(Table::Transports, domain, exists, "transport for")
    }

    /// Sets the DKIM key of one of our domains (replacing any other selector).
    pub fn put_dkim_key(&self, mut key: DkimKey) -> Result<Vec<Write>, DirectoryError> {
        key.domain = checked_domain(&key.domain)?;
        if !self.domains.contains_key(&key.domain) {
            return Err(DirectoryError::UnknownDomain(key.domain));
        }
        let selector_ok = !key.selector.is_empty()
            && key.selector.len() <= 63
            && key.selector.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !selector_ok {
            return Err(DirectoryError::Invalid(format!("invalid selector {:?}", key.selector)));
        }
        if !key.private_key_pem.contains("PRIVATE KEY") || key.private_key_pem.len() > 16 * 1024 {
            return Err(DirectoryError::Invalid("the key is not a PEM private key".into()));
        }
        Ok(put(Table::DkimKeys, &key.domain, &key))
    }

    /// Removes a domain's DKIM key: its mail goes out unsigned.
    pub fn remove_dkim_key(&self, domain: &str) -> Result<Vec<Write>, DirectoryError> {
        let domain = domain.trim().to_lowercase();
        let exists = self.dkim_keys.contains_key(&domain);
        delete(Table::DkimKeys, domain, exists, "DKIM key for")
    }

    /// Records invitation `invite` under `hash` (of its token), dropping every invitation
    /// that expired by `now` (Unix seconds).
    pub fn put_invite(&self, hash: &str, invite: Invite, now: u64) -> Result<Vec<Write>, DirectoryError> {
        if !matches!(invite.role.as_str(), "node" | "storage") {
            return Err(DirectoryError::Invalid(format!(
                "invitations are for a node or storage node, not {:?}",
                invite.role
            )));
        }
        NodeId::from_str(&invite.node)?;
        if invite.expires_unix <= now {
            return Err(DirectoryError::Invalid("the invitation would have expired already".into()));
        }
        let mut writes: Vec<Write> = (self.invites.iter())
            .filter(|(_, i)| i.expires_unix <= now)
            .map(|(h, _)| Write::Delete(Table::Invites, h.clone()))
            .collect();
        writes.extend(put(Table::Invites, hash, &invite));
        Ok(writes)
    }

    /// The invitation under `hash`, if it is still valid at `now`.
    pub fn invite(&self, hash: &str, now: u64) -> Option<&Invite> {
        self.invites.get(hash).filter(|i| i.expires_unix > now)
    }

    /// Uses up the invitation under `hash`: it is removed, so no one can use it again.
    pub fn take_invite(&self, hash: &str, now: u64) -> Result<Vec<Write>, DirectoryError> {
        match self.invite(hash, now) {
            Some(_) => Ok(vec![Write::Delete(Table::Invites, hash.to_string())]),
            None => Err(DirectoryError::NotFound("invitation (unknown, used or expired)".into())),
        }
    }

    /// Adds or replaces a user (the rules of `placement`). An empty password hash keeps the
    /// stored one; an empty home or replica keeps the stored one or picks one. The epoch and
    /// `replica_in_sync` are the directory's own: what the request says of them is ignored. A
    /// new user starts at epoch 1 in sync (both copies are empty); a change of home or replica
    /// raises the epoch and marks the replica out of sync until the nodes have filled the new
    /// copy.
    pub fn put_user(&self, mut user: User, copies: Copies) -> Result<Vec<Write>, DirectoryError> {
        let (local, domain) = canonical_address(&user.address)?;
        if !self.domains.contains_key(&domain) {
            return Err(DirectoryError::UnknownDomain(domain));
        }
        user.address = format!("{local}@{domain}");
        let old = self.users.get(&user.address);
        if user.password_hash.is_empty() {
            user.password_hash = old.map(|o| o.password_hash.clone()).unwrap_or_default();
            if user.password_hash.is_empty() {
                return Err(DirectoryError::Invalid("a new user needs a password".into()));
            }
        }
        user.quota_bytes = limit_or_stored(user.quota_bytes, old.and_then(|o| o.quota_bytes));
        user.quota_messages = limit_or_stored(user.quota_messages, old.and_then(|o| o.quota_messages));
        if user.home.is_empty() {
            user.home = match old.map(|o| o.home.clone()).filter(|h| !h.is_empty()) {
                Some(home) => home,
                None => placement::pick_home(&self.nodes, &user.address)
                    .ok_or_else(|| DirectoryError::Invalid("no node to home the user on: add a node first".into()))?,
            };
        } else if !self.nodes.contains_key(&user.home) {
            return Err(DirectoryError::UnknownNode(user.home));
        }
        if user.replica.is_empty() {
            // The stored replica, unless the home just moved onto it.
            let kept = old.map(|o| o.replica.clone()).filter(|r| !r.is_empty() && *r != user.home);
            user.replica = match kept {
                Some(replica) => replica,
                None => {
                    placement::pick_replica(&self.nodes, copies, &user.address, &user.home).node().unwrap_or_default()
                }
            };
        } else if !self.nodes.contains_key(&user.replica) {
            return Err(DirectoryError::UnknownNode(user.replica));
        } else if user.replica == user.home {
            return Err(DirectoryError::Invalid(format!("the replica must not be the home ({})", user.home)));
        }
        (user.epoch, user.replica_in_sync) = match old {
            None => (1, true),
            Some(o) if o.home == user.home && o.replica == user.replica => (o.epoch, o.replica_in_sync),
            Some(o) => (o.epoch + 1, false),
        };
        Ok(put(Table::Users, &user.address, &user))
    }

    /// A user by (canonical) address.
    pub fn user(&self, address: &str) -> Option<&User> {
        self.users.get(address)
    }

    /// Every user, by address.
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    /// Writes `users` back as they are (after a failover or a reconcile changed them).
    pub fn replace_users<'a>(&self, users: impl IntoIterator<Item = &'a User>) -> Vec<Write> {
        users.into_iter().flat_map(|u| put(Table::Users, &u.address, u)).collect()
    }

    /// A node reporting a user's replica in or out of sync, as of `epoch` (the compare half of
    /// a compare-and-swap, whose swap is the commit's own version check). A changed state
    /// raises the epoch; the same state again changes nothing. Returns the writes and the
    /// state they leave.
    pub fn set_replica_state(&self, request: &ReplicaState) -> Result<(Vec<Write>, ReplicaState), DirectoryError> {
        let (local, domain) = canonical_address(&request.user)?;
        let address = format!("{local}@{domain}");
        let user = self.users.get(&address).ok_or_else(|| DirectoryError::NotFound(format!("user {address}")))?;
        if user.replica.is_empty() {
            return Err(DirectoryError::NoReplica(address));
        }
        if user.epoch != request.epoch {
            return Err(DirectoryError::StaleEpoch(user.epoch));
        }
        if request.promote {
            if !user.replica_in_sync {
                return Err(DirectoryError::Invalid(format!("{address}'s replica is not in sync: cannot promote it")));
            }
            let changed = User {
                home: user.replica.clone(),
                replica: user.home.clone(),
                epoch: user.epoch + 1,
                replica_in_sync: false,
                ..user.clone()
            };
            let state = ReplicaState { user: address, epoch: changed.epoch, in_sync: false, promote: true };
            return Ok((put(Table::Users, &changed.address, &changed), state));
        }
        if user.replica_in_sync == request.in_sync {
            let unchanged =
                ReplicaState { user: address, epoch: user.epoch, in_sync: user.replica_in_sync, promote: false };
            return Ok((Vec::new(), unchanged));
        }
        let changed = User { epoch: user.epoch + 1, replica_in_sync: request.in_sync, ..user.clone() };
        let state =
            ReplicaState { user: address, epoch: changed.epoch, in_sync: changed.replica_in_sync, promote: false };
        Ok((put(Table::Users, &changed.address, &changed), state))
    }

    /// The nodes, by id.
    pub fn nodes(&self) -> &BTreeMap<String, Node> {
        &self.nodes
    }

    /// Removes a user (the mailbox stays on its home until an admin deletes it).
    pub fn remove_user(&self, address: &str) -> Result<Vec<Write>, DirectoryError> {
        let (local, domain) = canonical_address(address)?;
        let key = format!("{local}@{domain}");
        let exists = self.users.contains_key(&key);
        delete(Table::Users, key, exists, "user")
    }

    /// Adds or replaces an alias.
    pub fn put_alias(&self, alias: Alias) -> Result<Vec<Write>, DirectoryError> {
        let (local, domain) = canonical_address(&alias.address)?;
        if !self.domains.contains_key(&domain) {
            return Err(DirectoryError::UnknownDomain(domain));
        }
        let mut targets = Vec::with_capacity(alias.targets.len());
        for t in &alias.targets {
            let (l, d) = canonical_address(t)?;
            targets.push(format!("{l}@{d}"));
        }
        if targets.is_empty() {
            return Err(DirectoryError::Invalid("an alias needs at least one target".into()));
        }
        let alias = Alias { address: format!("{local}@{domain}"), targets };
        Ok(put(Table::Aliases, &alias.address, &alias))
    }

    /// Removes an alias.
    pub fn remove_alias(&self, address: &str) -> Result<Vec<Write>, DirectoryError> {
        let (local, domain) = canonical_address(address)?;
        let key = format!("{local}@{domain}");
        let exists = self.aliases.contains_key(&key);
        delete(Table::Aliases, key, exists, "alias")
    }
}

/// A quota limit as a `PutUser` gives it: unset keeps the stored one, 0 removes it.
fn limit_or_stored(given: Option<u64>, stored: Option<u64>) -> Option<u64> {
    match given {
        None => stored,
        Some(0) => None,
        limit => limit,
    }
}
