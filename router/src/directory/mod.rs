//! The cluster directory: nodes, routes, groups, domains, users, aliases, transports and DKIM
//! keys, changed only through the admin API. Every change bumps one version number; routers
//! rebuild their routing from it and mail nodes follow it through the Directory service.
//!
//! Where it is kept is a [`Store`]: a sled database on the router's disk ([`sled`], the
//! default, for `sirms dev` and one router), or etcd ([`etcd`]), which several routers share.
//! Either way every router holds the whole directory in memory ([`State`]) and serves reads
//! from there, so reads keep working while the store is away; changes are checked against
//! that state in one place ([`state`]) and committed only if nobody changed the directory
//! meanwhile.

pub mod etcd;
pub mod placement;
pub mod sled;
pub mod state;

use std::sync::Arc;
use std::time::Duration;

use sirms_proto::cluster::{
    Alias, DirectorySnapshot, DkimKey, DomainQuota, GreylistAnswer, GreylistQuery, Group, Invite, Node, ReplicaState,
    Route, User,
};
use tokio::sync::watch;

pub use placement::Copies;
pub use state::{State, Table, Write, canonical_address};

use crate::greylist::{self, Policy, Record};
use crate::node::NameError;
use crate::table::CidrError;

/// How often a change is planned again after losing a race with another router's change.
const MAX_ATTEMPTS: usize = 16;
/// How long a committed change may take to show in this router's copy.
const SETTLE: Duration = Duration::from_secs(5);

/// A random duration up to `max`.
fn jitter(max: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // A fresh RandomState is randomly keyed: random enough to break ties, with no crate.
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    max.mul_f64((random % 1000) as f64 / 1000.0)
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Why a directory change was refused or failed.
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
    Db(#[from] ::sled::Error),
    /// The store did not answer (etcd without quorum, unreachable): nothing was changed
    /// that this router knows of, and reads still come from its copy.
    #[error("the directory cannot be changed now: {0}")]
    Unavailable(String),
    #[error("the directory kept changing under this change ({0} attempts); try again")]
    Conflict(usize),
    /// A replica state reported as of an epoch that is no longer the user's.
    #[error("stale epoch: now {0}")]
    StaleEpoch(u64),
    #[error("user {0} has no replica")]
    NoReplica(String),
}

/// Says of a stored greylisting record whether it has run out (what pruning removes).
pub type Expired = dyn Fn(&[u8]) -> bool + Sync;

/// Where the directory is kept.
#[tonic::async_trait]
pub trait Store: Send + Sync {
    /// Makes `writes` and the version `base + 1` durable in one step if the stored version is
    /// still `base`; `false` if it is not (another router changed the directory first). The
    /// store then brings the new state to every router's copy, this one's included.
    async fn commit(&self, base: u64, writes: &[Write]) -> Result<bool, DirectoryError>;
    /// The latest committed version, read from the store itself (not from a copy).
    async fn latest(&self) -> Result<u64, DirectoryError>;
    /// What it is, for logs and errors.
    fn describe(&self) -> String;

    /// A greylisting record ([`crate::greylist`]). Records live beside the directory, not in
    /// it: no version, in no router's copy, never sent to nodes.
    async fn grey_record(&self, key: &str) -> Result<Option<Vec<u8>>, DirectoryError>;
    /// Stores greylisting records, durably before it returns.
    async fn put_grey_records(&self, records: &[(String, Vec<u8>)]) -> Result<(), DirectoryError>;
    /// Removes every greylisting record `expired` says has run out; how many are left. A
    /// record rewritten meanwhile (by another router) is kept.
    async fn prune_grey_records(&self, expired: &Expired) -> Result<u64, DirectoryError>;
}

/// The directory as one router sees it: a copy of the whole, kept current by its store.
pub struct ClusterDirectory {
    store: Box<dyn Store>,
    state: watch::Receiver<Arc<State>>,
    /// One change at a time from this router: its changes never race each other, only
    /// other routers' changes.
    writing: tokio::sync::Mutex<()>,
    /// How many copies of a mailbox new placements make.
    copies: Copies,
    /// How many greylisting records the store holds, as last counted by a prune and added to
    /// since (an estimate: other routers add too); bounds the store at [`greylist::MAX_RECORDS`].
    grey_records: std::sync::atomic::AtomicU64,
}

impl ClusterDirectory {
    /// Opens (creating if needed) the sled directory at `path`.
    pub fn open(path: &std::path::Path) -> Result<ClusterDirectory, DirectoryError> {
        let (store, state) = sled::SledStore::open(path)?;
        Ok(ClusterDirectory::new(Box::new(store), state))
    }

    /// A directory over `store`, whose copy `state` the store keeps current.
    pub fn new(store: Box<dyn Store>, state: watch::Receiver<Arc<State>>) -> ClusterDirectory {
        ClusterDirectory {
            store,
            state,
            writing: tokio::sync::Mutex::new(()),
            copies: Copies::default(),
            grey_records: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The same directory placing `copies` copies of each mailbox (two unless told).
    pub fn with_copies(self, copies: Copies) -> ClusterDirectory {
        ClusterDirectory { copies, ..self }
    }

    /// How many copies of each mailbox placements make.
    pub fn copies(&self) -> Copies {
        self.copies
    }

    /// Follows the directory: the receiver sees every new version.
    pub fn subscribe(&self) -> watch::Receiver<Arc<State>> {
        self.state.clone()
    }

    /// The directory as it is now.
    pub fn current(&self) -> Arc<State> {
        self.state.borrow().clone()
    }

    /// The whole directory as it is now.
    pub fn snapshot(&self) -> DirectorySnapshot {
        self.current().snapshot()
    }

    /// The routing table entries.
    pub fn routes(&self) -> Vec<Route> {
        self.current().routes()
    }

    /// The node groups.
    pub fn groups(&self) -> Vec<Group> {
        self.current().groups()
    }

    /// A node by id.
    pub fn node(&self, id: &str) -> Option<Node> {
        self.current().node(id).cloned()
    }

    /// What keeps the directory, for logs and status.
    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// Plans a change against the current directory and commits it; planned again when
    /// another router's change came first. Returns once this router's copy has it.
    pub(crate) async fn change(
        &self,
        plan: impl Fn(&State) -> Result<Vec<Write>, DirectoryError>,
    ) -> Result<(), DirectoryError> {
        // A change that is nothing by this router's copy (a node registering unchanged) needs
        // no turn: it must not queue behind a write that is waiting out an etcd election or a
        // lost quorum (up to 5 s), as a node's registration would, past its own deadline.
        if plan(&self.current())?.is_empty() {
            return Ok(());
        }
        let _writing = self.writing.lock().await;
        let mut attempt = 0;
        while (attempt as usize) < MAX_ATTEMPTS {
            let state = self.current();
            let writes = plan(&state)?;
            // Nothing to do by this router's copy (a node registering unchanged): done, even
            // while the store cannot take writes.
            if writes.is_empty() {
                return Ok(());
            }
            // Plan against every change committed so far, through any router: a domain just
            // added through another router must not be "unknown" here.
            let latest = self.store.latest().await?;
            if latest > state.version {
                self.settle(latest).await?;
                attempt += 1;
                continue;
            }
            let committed = self.store.commit(state.version, &writes).await?;
            if committed {
                // Returns once this router's copy has it: read-your-writes for the admin.
                return self.settle(state.version + 1).await;
            }
            // Lost to another router, which may have more changes queued: step back a random
            // while, longer each time, so that it cannot keep winning by being first.
            attempt += 1;
            tokio::time::sleep(jitter(Duration::from_millis(10) * attempt)).await;
        }
        Err(DirectoryError::Conflict(MAX_ATTEMPTS))
    }

    /// Brings this router's copy up to the latest version in the store before an admin reads
    /// it, so that a change just made through another router shows here too. When the store
    /// cannot say (etcd without quorum), the copy is what there is: reads keep working.
    pub async fn catch_up(&self) {
        if let Ok(latest) = self.store.latest().await {
            let _ = self.settle(latest).await;
        }
    }

    /// Brings this router's copy up to the latest version in the store, or fails: for a
    /// decision that must not be taken on a copy that lags (a compare-and-swap's compare).
    async fn up_to_date(&self) -> Result<(), DirectoryError> {
        let latest = self.store.latest().await?;
        self.settle(latest).await
    }

    /// Waits (bounded) until this router's copy has `version`.
    async fn settle(&self, version: u64) -> Result<(), DirectoryError> {
        let mut follower = self.state.clone();
        let seen = tokio::time::timeout(SETTLE, follower.wait_for(|s| s.loaded && s.version >= version)).await;
        if matches!(seen, Ok(Ok(_))) {
            return Ok(());
        }
        Err(DirectoryError::Unavailable(format!(
            "this router's copy of {} did not reach version {version} within {SETTLE:?}",
            self.store.describe()
        )))
    }

    /// Records a node invitation under the hash of its token.
    pub async fn put_invite(&self, hash: &str, invite: Invite) -> Result<(), DirectoryError> {
        self.change(|s| s.put_invite(hash, invite.clone(), unix_now())).await
    }

    /// Uses up the invitation under `hash` and returns it: of two routers that race with the
    /// same token, one commits the removal and the other then finds it gone.
    pub async fn take_invite(&self, hash: &str) -> Result<Invite, DirectoryError> {
        let now = unix_now();
        // What the committed plan removed (a plan may run again after a race).
        let taken = std::sync::Mutex::new(None);
        self.change(|s| {
            let writes = s.take_invite(hash, now)?;
            *taken.lock().unwrap_or_else(|e| e.into_inner()) = s.invite(hash, now).cloned();
            Ok(writes)
        })
        .await?;
        let taken = taken.into_inner().unwrap_or_else(|e| e.into_inner());
        taken.ok_or_else(|| DirectoryError::NotFound("invitation".into()))
    }

    /// Adds or replaces a node.
    pub async fn put_node(&self, node: Node) -> Result<(), DirectoryError> {
        self.change(|s| s.put_node(node.clone())).await
    }

    /// A node announcing itself; it keeps the weight and drain the admin set.
    pub async fn register_node(&self, node: Node) -> Result<(), DirectoryError> {
        self.change(|s| s.register_node(node.clone())).await
    }

    /// Removes a node; users homed there keep their home until moved.
    pub async fn remove_node(&self, id: &str) -> Result<(), DirectoryError> {
        self.change(|s| s.remove_node(id)).await
    }

    /// Drains or undrains a node.
    pub async fn set_drained(&self, id: &str, drained: bool) -> Result<(), DirectoryError> {
        self.change(|s| s.set_drained(id, drained)).await
    }

    /// Adds or replaces a route (CIDR → node or `group:NAME`).
    pub async fn put_route(&self, cidr: &str, target: &str) -> Result<(), DirectoryError> {
        self.change(|s| s.put_route(cidr, target)).await
    }

    /// Removes a route.
    pub async fn remove_route(&self, cidr: &str) -> Result<(), DirectoryError> {
        self.change(|s| s.remove_route(cidr)).await
    }

    /// Adds or replaces a node group.
    pub async fn put_group(&self, group: Group) -> Result<(), DirectoryError> {
        self.change(|s| s.put_group(group.clone())).await
    }

    /// Removes a node group.
    pub async fn remove_group(&self, name: &str) -> Result<(), DirectoryError> {
        self.change(|s| s.remove_group(name)).await
    }

    /// Adds a mail domain.
    pub async fn put_domain(&self, domain: &str) -> Result<(), DirectoryError> {
        self.change(|s| s.put_domain(domain)).await
    }

    /// Sets (or removes, with both limits 0) the quota over all of a domain's users.
    pub async fn set_domain_quota(&self, quota: &DomainQuota) -> Result<(), DirectoryError> {
        self.change(|s| s.set_domain_quota(quota)).await
    }

    /// Removes a mail domain.
    pub async fn remove_domain(&self, domain: &str) -> Result<(), DirectoryError> {
        self.change(|s| s.remove_domain(domain)).await
    }

    /// Sends mail for a (foreign) domain to one relay instead of its MX hosts.
    pub async fn put_transport(&self, domain: &str, relay: &str) -> Result<(), DirectoryError> {
        self.change(|s| s.put_transport(domain, relay)).await
    }

    /// Removes a static transport.
    pub async fn remove_transport(&self, domain: &str) -> Result<(), DirectoryError> {
        self.change(|s| s.remove_transport(domain)).await
    }

    /// Sets the DKIM key of one of our domains.
    pub async fn put_dkim_key(&self, key: DkimKey) -> Result<(), DirectoryError> {
        self.change(|s| s.put_dkim_key(key.clone())).await
    }

    /// Removes a domain's DKIM key.
    pub async fn remove_dkim_key(&self, domain: &str) -> Result<(), DirectoryError> {
        self.change(|s| s.remove_dkim_key(domain)).await
    }

    /// Adds or replaces a user (an empty hash, home or replica keeps the stored one).
    pub async fn put_user(&self, user: User) -> Result<(), DirectoryError> {
        self.change(|s| s.put_user(user.clone(), self.copies)).await
    }

    /// Marks a user's replica in or out of sync if the user's epoch is still
    /// `request.epoch`; returns the user's state after it. Atomic across routers: the epoch is
    /// compared with the latest directory (this router's copy is first brought up to the
    /// store's latest version, and every plan after a lost race looks again), and the commit
    /// succeeds only if nothing changed in between.
    pub async fn set_replica_state(&self, request: ReplicaState) -> Result<ReplicaState, DirectoryError> {
        // A lagging copy would refuse an epoch the node has already seen as stale, or let an
        // unchanged state through on an epoch that is no longer the user's.
        self.up_to_date().await?;
        let reply = std::sync::Mutex::new(None);
        self.change(|s| {
            let (writes, state) = s.set_replica_state(&request)?;
            *reply.lock().unwrap_or_else(|e| e.into_inner()) = Some(state);
            Ok(writes)
        })
        .await?;
        let reply = reply.into_inner().unwrap_or_else(|e| e.into_inner());
        reply.ok_or_else(|| DirectoryError::Invalid("no replica state was planned".into()))
    }

    /// Greylisting's answer for one triplet ([`greylist::decide`]), with its records stored
    /// before it is given.
    pub async fn greylist(&self, query: &GreylistQuery) -> Result<GreylistAnswer, DirectoryError> {
        use std::sync::atomic::Ordering;
        let invalid = |e: greylist::QueryError| DirectoryError::Invalid(e.to_string());
        let policy = Policy::of(query).map_err(invalid)?;
        let (triplet_key, network_key) = greylist::keys(query).map_err(invalid)?;
        let record = |bytes: Option<Vec<u8>>| bytes.as_deref().and_then(Record::decode);
        let triplet = record(self.store.grey_record(&triplet_key).await?);
        let network = record(self.store.grey_record(&network_key).await?);
        let full = self.grey_records.load(Ordering::Relaxed) >= greylist::MAX_RECORDS;
        let decision = greylist::decide(triplet, network, &policy, unix_now(), full);
        let mut writes = Vec::new();
        if let Some(t) = decision.triplet {
            writes.push((triplet_key, t.encode()));
        }
        if let Some(n) = decision.network {
            writes.push((network_key, n.encode()));
        }
        if !writes.is_empty() {
            self.store.put_grey_records(&writes).await?;
            let new = u64::from(triplet.is_none() && decision.triplet.is_some())
                + u64::from(network.is_none() && decision.network.is_some());
            self.grey_records.fetch_add(new, Ordering::Relaxed);
        }
        if decision.reason == greylist::Reason::Full {
            tracing::warn!(limit = greylist::MAX_RECORDS, "greylisting store full: a new triplet passed unrecorded");
        }
        Ok(decision.answer())
    }

    /// Removes the greylisting records that ran out; how many are left.
    pub async fn prune_greylist(&self) -> Result<u64, DirectoryError> {
        let now = unix_now();
        let left = self.store.prune_grey_records(&move |bytes| Record::expired(bytes, now)).await?;
        self.grey_records.store(left, std::sync::atomic::Ordering::Relaxed);
        Ok(left)
    }

    /// Removes a user.
    pub async fn remove_user(&self, address: &str) -> Result<(), DirectoryError> {
        self.change(|s| s.remove_user(address)).await
    }

    /// Adds or replaces an alias.
    pub async fn put_alias(&self, alias: Alias) -> Result<(), DirectoryError> {
        self.change(|s| s.put_alias(alias.clone())).await
    }

    /// Removes an alias.
    pub async fn remove_alias(&self, address: &str) -> Result<(), DirectoryError> {
        self.change(|s| s.remove_alias(address)).await
    }
}
