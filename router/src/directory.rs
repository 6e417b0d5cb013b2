//! The cluster directory: nodes, routes, groups, domains, users and aliases, kept in sled
//! by the router and changed only through the admin API. Every change bumps a version;
//! mail nodes follow it through the Directory service's watch stream.

use std::path::Path;
use std::str::FromStr;

use prost::Message;
use sirms_proto::cluster::{Alias, DirectorySnapshot, DkimKey, Group, Node, Route, Transport, User};
use tokio::sync::watch;

use crate::hashing::{Rendezvous, WeightedNode};
use crate::node::{GroupName, NameError, NodeId};
use crate::table::{Cidr, CidrError, Target};

/// Longest e-mail address accepted (RFC 5321 path limit).
const MAX_ADDRESS_LEN: usize = 256;

/// Why a directory change was refused.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("invalid name: {0}")]
    Name(#[from] NameError),
    #[error("invalid CIDR: {0}")]
    Cidr(#[from] CidrError),
    #[error("invalid route target {0:?}: use a node name or group:NAME")]
    Target(String),
    #[error("invalid address {0:?}")]
    Address(String),
    #[error("domain {0} is not in the directory")]
    UnknownDomain(String),
    #[error("node {0} is not in the directory")]
    UnknownNode(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("directory database: {0}")]
    Db(#[from] sled::Error),
}

/// The directory, persisted in sled.
pub struct ClusterDirectory {
    db: sled::Db,
    nodes: sled::Tree,
    routes: sled::Tree,
    groups: sled::Tree,
    domains: sled::Tree,
    users: sled::Tree,
    aliases: sled::Tree,
    transports: sled::Tree,
    dkim_keys: sled::Tree,
    version: watch::Sender<u64>,
}

const VERSION_KEY: &[u8] = b"version";

fn decode_all<M: Message + Default>(tree: &sled::Tree) -> Vec<M> {
    // A value that does not decode is skipped rather than failing the whole snapshot.
    tree.iter().values().filter_map(|v| v.ok()).filter_map(|v| M::decode(v.as_ref()).ok()).collect()
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

impl ClusterDirectory {
    /// Opens (creating if needed) the directory database at `path`.
    pub fn open(path: &Path) -> Result<ClusterDirectory, DirectoryError> {
        let db = sled::open(path)?;
        let version = db.get(VERSION_KEY)?.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok()).map(u64::from_be_bytes);
        let (version, _) = watch::channel(version.unwrap_or(0));
        Ok(ClusterDirectory {
            nodes: db.open_tree("nodes")?,
            routes: db.open_tree("routes")?,
            groups: db.open_tree("groups")?,
            domains: db.open_tree("domains")?,
            users: db.open_tree("users")?,
            aliases: db.open_tree("aliases")?,
            transports: db.open_tree("transports")?,
            dkim_keys: db.open_tree("dkim_keys")?,
            db,
            version,
        })
    }

    /// Follows the directory's version: it changes after every committed change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Records a change durably and tells the watchers.
    fn commit(&self) -> Result<(), DirectoryError> {
        let next = *self.version.borrow() + 1;
        self.db.insert(VERSION_KEY, &next.to_be_bytes())?;
        // Admin changes are rare: pay for the flush so an acknowledged change survives a crash.
        self.db.flush()?;
        self.version.send_replace(next);
        Ok(())
    }

    /// The whole directory as it is now.
    pub fn snapshot(&self) -> DirectorySnapshot {
        DirectorySnapshot {
            version: *self.version.borrow(),
            nodes: decode_all(&self.nodes),
            domains: self
                .domains
                .iter()
                .keys()
                .filter_map(|k| k.ok())
                .filter_map(|k| String::from_utf8(k.to_vec()).ok())
                .collect(),
            users: decode_all(&self.users),
            aliases: decode_all(&self.aliases),
            transports: decode_all(&self.transports),
            dkim_keys: decode_all(&self.dkim_keys),
        }
    }

    /// The routing table entries.
    pub fn routes(&self) -> Vec<Route> {
        decode_all(&self.routes)
    }

    /// The node groups.
    pub fn groups(&self) -> Vec<Group> {
        decode_all(&self.groups)
    }

    /// A node by id.
    pub fn node(&self, id: &str) -> Result<Option<Node>, DirectoryError> {
        Ok(self.nodes.get(id.as_bytes())?.and_then(|v| Node::decode(v.as_ref()).ok()))
    }

    /// Adds or replaces a node.
    pub fn put_node(&self, mut node: Node) -> Result<(), DirectoryError> {
        NodeId::from_str(&node.id)?;
        if node.host.is_empty() {
            return Err(DirectoryError::Invalid("node host is empty".into()));
        }
        if node.weight == 0 && !node.storage_only {
            node.weight = 100;
        }
        self.nodes.insert(node.id.as_bytes(), node.encode_to_vec())?;
        self.commit()
    }

    /// Removes a node; users homed there keep their home until moved.
    pub fn remove_node(&self, id: &str) -> Result<(), DirectoryError> {
        self.nodes.remove(id.as_bytes())?.ok_or_else(|| DirectoryError::NotFound(format!("node {id}")))?;
        self.commit()
    }

    /// Drains or undrains a node.
    pub fn set_drained(&self, id: &str, drained: bool) -> Result<(), DirectoryError> {
        let mut node = self.node(id)?.ok_or_else(|| DirectoryError::UnknownNode(id.to_string()))?;
        node.drained = drained;
        self.nodes.insert(id.as_bytes(), node.encode_to_vec())?;
        self.commit()
    }

    /// Adds or replaces a route (CIDR → node or `group:NAME`).
    pub fn put_route(&self, cidr: &str, target: &str) -> Result<(), DirectoryError> {
        let cidr = Cidr::from_str(cidr)?;
        Target::from_str(target).map_err(|_| DirectoryError::Target(target.to_string()))?;
        let route = Route { cidr: cidr.to_string(), target: target.to_string() };
        self.routes.insert(route.cidr.as_bytes(), route.encode_to_vec())?;
        self.commit()
    }

    /// Removes a route.
    pub fn remove_route(&self, cidr: &str) -> Result<(), DirectoryError> {
        let cidr = Cidr::from_str(cidr)?.to_string();
        self.routes.remove(cidr.as_bytes())?.ok_or_else(|| DirectoryError::NotFound(format!("route {cidr}")))?;
        self.commit()
    }

    /// Adds or replaces a node group.
    pub fn put_group(&self, group: Group) -> Result<(), DirectoryError> {
        GroupName::from_str(&group.name)?;
        for m in &group.members {
            NodeId::from_str(m)?;
        }
        self.groups.insert(group.name.as_bytes(), group.encode_to_vec())?;
        self.commit()
    }

    /// Removes a node group.
    pub fn remove_group(&self, name: &str) -> Result<(), DirectoryError> {
        self.groups.remove(name.as_bytes())?.ok_or_else(|| DirectoryError::NotFound(format!("group {name}")))?;
        self.commit()
    }

    /// Adds a mail domain.
    pub fn put_domain(&self, domain: &str) -> Result<(), DirectoryError> {
        let domain = checked_domain(domain)?;
        self.domains.insert(domain.as_bytes(), &[])?;
        self.commit()
    }

    /// Sends mail for a (foreign) domain to one relay instead of its MX hosts.
    pub fn put_transport(&self, domain: &str, relay: &str) -> Result<(), DirectoryError> {
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
        self.transports.insert(transport.domain.as_bytes(), transport.encode_to_vec())?;
        self.commit()
    }

    /// Sets the DKIM key of one of our domains (replacing any other selector).
    pub fn put_dkim_key(&self, mut key: DkimKey) -> Result<(), DirectoryError> {
        key.domain = checked_domain(&key.domain)?;
        if !self.domains.contains_key(key.domain.as_bytes())? {
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
        self.dkim_keys.insert(key.domain.as_bytes(), key.encode_to_vec())?;
        self.commit()
    }

    /// Removes a domain's DKIM key: its mail goes out unsigned.
    pub fn remove_dkim_key(&self, domain: &str) -> Result<(), DirectoryError> {
        let domain = domain.trim().to_lowercase();
        self.dkim_keys
            .remove(domain.as_bytes())?
            .ok_or_else(|| DirectoryError::NotFound(format!("DKIM key for {domain}")))?;
        self.commit()
    }

    /// Removes a static transport: the domain's MX hosts are used again.
    pub fn remove_transport(&self, domain: &str) -> Result<(), DirectoryError> {
        let domain = domain.trim().to_lowercase();
        self.transports
            .remove(domain.as_bytes())?
            .ok_or_else(|| DirectoryError::NotFound(format!("transport for {domain}")))?;
        self.commit()
    }

    /// Removes a mail domain.
    pub fn remove_domain(&self, domain: &str) -> Result<(), DirectoryError> {
        let domain = domain.trim().to_lowercase();
        self.domains.remove(domain.as_bytes())?.ok_or_else(|| DirectoryError::NotFound(format!("domain {domain}")))?;
        self.commit()
    }

    /// Where a new user's mailbox goes when the admin names no home: a storage node if the
    /// cluster has one, else a mail node, chosen by hashing the address so it is stable.
    fn pick_home(&self, address: &str) -> Option<String> {
        let nodes: Vec<Node> = decode_all(&self.nodes);
        let storage: Vec<&Node> = nodes.iter().filter(|n| n.storage_only && !n.drained).collect();
        let pool: Vec<&Node> = if storage.is_empty() { nodes.iter().filter(|n| !n.drained).collect() } else { storage };
        let candidates: Vec<WeightedNode> = pool
            .iter()
            .filter_map(|n| NodeId::from_str(&n.id).ok().map(|id| WeightedNode { id, weight: n.weight.max(1) }))
            .collect();
        Rendezvous::default().best_for_key(address.as_bytes(), &candidates).map(|n| n.id.to_string())
    }

    /// Adds or replaces a user. An empty password hash keeps the stored one; an empty home
    /// keeps the stored one or picks one.
    pub fn put_user(&self, mut user: User) -> Result<(), DirectoryError> {
        let (local, domain) = canonical_address(&user.address)?;
        if !self.domains.contains_key(domain.as_bytes())? {
            return Err(DirectoryError::UnknownDomain(domain));
        }
        user.address = format!("{local}@{domain}");
        let old = self.users.get(user.address.as_bytes())?.and_then(|v| User::decode(v.as_ref()).ok());
        if user.password_hash.is_empty() {
            user.password_hash = old.as_ref().map(|o| o.password_hash.clone()).unwrap_or_default();
            if user.password_hash.is_empty() {
                return Err(DirectoryError::Invalid("a new user needs a password".into()));
            }
        }
        if user.home.is_empty() {
            user.home = match old.map(|o| o.home).filter(|h| !h.is_empty()) {
                Some(home) => home,
                None => self
                    .pick_home(&user.address)
                    .ok_or_else(|| DirectoryError::Invalid("no node to home the user on: add a node first".into()))?,
            };
        } else if !self.nodes.contains_key(user.home.as_bytes())? {
            return Err(DirectoryError::UnknownNode(user.home));
        }
        self.users.insert(user.address.as_bytes(), user.encode_to_vec())?;
        self.commit()
    }

    /// Removes a user (the mailbox stays on its home until an admin deletes it).
    pub fn remove_user(&self, address: &str) -> Result<(), DirectoryError> {
        let (local, domain) = canonical_address(address)?;
        let key = format!("{local}@{domain}");
        self.users.remove(key.as_bytes())?.ok_or_else(|| DirectoryError::NotFound(format!("user {key}")))?;
        self.commit()
    }

    /// Adds or replaces an alias.
    pub fn put_alias(&self, alias: Alias) -> Result<(), DirectoryError> {
        let (local, domain) = canonical_address(&alias.address)?;
        if !self.domains.contains_key(domain.as_bytes())? {
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
        self.aliases.insert(alias.address.as_bytes(), alias.encode_to_vec())?;
        self.commit()
    }

    /// Removes an alias.
    pub fn remove_alias(&self, address: &str) -> Result<(), DirectoryError> {
        let (local, domain) = canonical_address(address)?;
        let key = format!("{local}@{domain}");
        self.aliases.remove(key.as_bytes())?.ok_or_else(|| DirectoryError::NotFound(format!("alias {key}")))?;
        self.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, storage_only: bool) -> Node {
        Node { id: id.into(), host: "127.0.0.1".into(), smtp_port: 25, storage_only, ..Default::default() }
    }

    #[test]
    fn changes_persist_and_bump_the_version() {
        let dir = tempfile::tempdir().unwrap();
        {
            let d = ClusterDirectory::open(dir.path()).unwrap();
            let mut watch = d.subscribe();
            d.put_node(node("node1", false)).unwrap();
            d.put_node(node("store1", true)).unwrap();
            d.put_domain("Example.TEST").unwrap();
            d.put_user(User { address: "Alice@Example.test".into(), password_hash: "h".into(), ..Default::default() })
                .unwrap();
            assert!(watch.has_changed().unwrap());
            assert_eq!(*watch.borrow_and_update(), 4);
            d.put_route("192.0.2.0/24", "node1").unwrap();
            d.put_alias(Alias { address: "team@example.test".into(), targets: vec!["alice@example.test".into()] })
                .unwrap();
        }
        let d = ClusterDirectory::open(dir.path()).unwrap();
        let snap = d.snapshot();
        assert_eq!(snap.version, 6);
        assert_eq!(snap.domains, vec!["example.test"]);
        assert_eq!(snap.users[0].address, "alice@example.test");
        // With a storage node in the cluster, new users are homed there.
        assert_eq!(snap.users[0].home, "store1");
        assert_eq!(d.routes()[0].target, "node1");
        assert_eq!(snap.nodes.iter().find(|n| n.id == "node1").unwrap().weight, 100);
    }

    #[test]
    fn refuses_bad_changes() {
        let dir = tempfile::tempdir().unwrap();
        let d = ClusterDirectory::open(dir.path()).unwrap();
        let user = User { address: "a@nowhere.test".into(), password_hash: "h".into(), ..Default::default() };
        assert!(matches!(d.put_user(user), Err(DirectoryError::UnknownDomain(_))));
        d.put_domain("example.test").unwrap();
        let homeless = User { address: "a@example.test".into(), password_hash: "h".into(), ..Default::default() };
        assert!(matches!(d.put_user(homeless), Err(DirectoryError::Invalid(_))));
        assert!(matches!(d.put_route("10.0.0.1/8", "node1"), Err(DirectoryError::Cidr(_))));
        assert!(matches!(d.put_node(node("bad name", false)), Err(DirectoryError::Name(_))));
        assert!(matches!(d.set_drained("ghost", true), Err(DirectoryError::UnknownNode(_))));
        assert!(matches!(d.remove_user("x@example.test"), Err(DirectoryError::NotFound(_))));
    }
}
