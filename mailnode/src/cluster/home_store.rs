//! A `MailStore` that sends each user's operations to the node holding the mailbox: the
//! local store for users homed here, a `RemoteStore` for users homed elsewhere. Protocol
//! code never knows the difference. A user with a replica has every write copied to it
//! before it is acknowledged (see [`super::replication`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use sirms_proto::cluster_tls::Credentials;
use sirms_storage::{
    AppendResult, Apply, BodyPart, Cached, ChangeStream, CopyResult, FetchedMessage, FlagOp, Flags, MailStore,
    MailboxInfo, MailboxStatus, MaildropLock, MessageMeta, NewMessage, QuotaUsage, RemoteStore, ReplicaStore, Result,
    SpecialUse, StoreError, UidSet, UserFile,
};

use sirms_storage::replica::sync::SyncReport;

use super::replica_state::ReplicaStates;
use super::replication::{Replica, Route, Undo};
use super::unreachable::Unreachable;
use crate::directory::LiveDirectory;

/// Where a home node's Store service is.
pub type Endpoints = Arc<Mutex<HashMap<String, String>>>;

/// Most (node, user, epoch) fences remembered before the memory is cleared.
const MAX_FENCED: usize = 100_000;

/// Dispatches by the user's home.
pub struct HomeStore {
    node_id: String,
    local: Arc<dyn ReplicaStore>,
    directory: Arc<LiveDirectory>,
    endpoints: Endpoints,
    credentials: Credentials,
    remotes: Mutex<HashMap<String, RemoteStore>>,
    states: Arc<ReplicaStates>,
    /// Primaries this node has fenced at a user's epoch: once per epoch is enough.
    fenced: Mutex<HashSet<(String, String, u64)>>,
    /// Replica nodes that failed lately: writes do not wait for them.
    unreachable: Arc<Unreachable>,
}

impl HomeStore {
    /// A store for node `node_id` over its `local` store.
    pub fn new(
        node_id: String,
        local: Arc<dyn ReplicaStore>,
        directory: Arc<LiveDirectory>,
        endpoints: Endpoints,
        credentials: Credentials,
    ) -> HomeStore {
        HomeStore {
            node_id,
            local,
            directory,
            endpoints,
            credentials,
            remotes: Mutex::new(HashMap::new()),
            states: Arc::new(ReplicaStates::new(Vec::new(), Credentials::token(""))),
            fenced: Mutex::new(HashSet::new()),
            unreachable: Arc::default(),
        }
    }

    /// Shares `unreachable` (the node's view of peers that stopped answering) with the
    /// node's other callers of peers.
    pub fn with_unreachable(mut self, unreachable: Arc<Unreachable>) -> HomeStore {
        self.unreachable = unreachable;
        self
    }

    /// Marks replicas out of sync through `states` when they fail (without it, a failed
    /// replica fails the write).
    pub fn with_states(mut self, states: Arc<ReplicaStates>) -> HomeStore {
        self.states = states;
        self
    }

    /// The store of node `id` (this node's own for an empty id).
    pub fn node_store(&self, id: &str) -> Result<Arc<dyn ReplicaStore>> {
        if id.is_empty() || id == self.node_id {
            return Ok(self.local.clone());
        }
        let endpoint = self
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| StoreError::Unavailable(format!("node {id} has no store endpoint")))?;
        let mut remotes = self.remotes.lock().unwrap_or_else(|p| p.into_inner());
        let remote = match remotes.get(&endpoint) {
            Some(r) => r.clone(),
            None => {
                let r = RemoteStore::connect_with(&endpoint, &self.credentials)?;
                remotes.insert(endpoint, r.clone());
                r
            }
        };
        Ok(Arc::new(remote))
    }

    /// The store holding `user`'s mailbox now: reads need nothing else.
    fn primary(&self, user: &str) -> Result<Arc<dyn ReplicaStore>> {
        let current = self.directory.current();
        self.node_store(current.home_of(user).unwrap_or_default())
    }

    /// Where `user`'s mailbox and its replica are now.
    pub fn route(&self, user: &str) -> Result<Route> {
        let record = self.directory.current().user(user).cloned();
        let (home, replica, epoch, in_sync) = match &record {
            Some(r) => {
                let in_sync = r.replica_in_sync && !self.states.marked_behind(user, r.epoch);
                (r.home.as_str(), r.replica.as_str(), r.epoch, in_sync)
            }
            None => ("", "", 0, false),
        };
        let replica = match replica {
            "" => None,
            id => Some(Replica { id: id.to_string(), store: self.node_store(id).map_err(|e| e.to_string()), in_sync }),
        };
        Ok(Route {
            user: user.to_string(),
            primary_id: if home.is_empty() { self.node_id.clone() } else { home.to_string() },
            primary: self.node_store(home)?,
            replica,
            epoch,
            states: self.states.clone(),
            unreachable: self.unreachable.clone(),
            directory: self.directory.clone(),
            renewals: 0,
        })
    }

    /// Whether replica node `id` failed a write or a catch-up lately (see
    /// [`super::unreachable::HOLD`]).
    pub fn replica_unreachable(&self, id: &str) -> bool {
        self.unreachable.recently_failed(id)
    }

    /// The route for a write: the primary fenced at the user's epoch first, so that a
    /// replica promoted in its place refuses its old primary's records from then on.
    async fn write_route(&self, user: &str) -> Result<Route> {
        let route = self.route(user)?;
        if route.epoch > 0 {
            let key = (route.primary_id.clone(), user.to_string(), route.epoch);
            if !self.fenced.lock().unwrap_or_else(|p| p.into_inner()).contains(&key) {
                route.refuse_a_lost_primary().await?;
                route.primary.fence(user, route.epoch).await?;
                let mut fenced = self.fenced.lock().unwrap_or_else(|p| p.into_inner());
                if fenced.len() >= MAX_FENCED {
                    fenced.clear();
                }
                fenced.insert(key);
            }
        }
        Ok(route)
    }

    /// Compares `user`'s mailboxes with the replica's and gives the replica what it lacks;
    /// returns the route it used (its epoch is the one the copies now match at).
    pub async fn catch_up(&self, user: &str) -> Result<(Route, SyncReport)> {
        let route = self.write_route(user).await?;
        let replica =
            route.replica.as_ref().ok_or_else(|| StoreError::Unavailable(format!("{user} has no replica")))?;
        let report = route.sync_user(replica).await?;
        Ok((route, report))
    }

    /// Readies `user`'s replica, behind at the user's epoch E, to be marked in sync (which
    /// makes E + 1): compares until the copies match, raises the primary's floor to E + 1,
    /// and compares once more. From the raise on, a write at E that the replica misses is
    /// refused rather than acknowledged on the primary alone (replication.rs,
    /// `behind_still`), and the last compare copies every write the primary took before it.
    /// So once the directory counts two copies, both hold every acknowledged write, even if
    /// the primary dies the next moment. A raise whose marking did not go through (no router
    /// answered) is found here next time and the catch-up resumes from it.
    pub async fn ready_to_mark_in_sync(&self, user: &str) -> Result<(Route, SyncReport)> {
        let route = self.route(user)?;
        let replica =
            route.replica.as_ref().ok_or_else(|| StoreError::Unavailable(format!("{user} has no replica")))?;
        let next = route.epoch + 1;
        if route.primary.fence(user, 0).await? != next {
            route.refuse_a_lost_primary().await?;
            route.primary.fence(user, route.epoch).await?;
        }
        let mut report = route.sync_user(replica).await?;
        route.primary.fence(user, next).await?;
        report.add(route.sync_user(replica).await?);
        Ok((route, report))
    }
}

#[async_trait]
impl MailStore for HomeStore {
    async fn list_mailboxes(&self, user: &str) -> Result<Vec<MailboxInfo>> {
        self.primary(user)?.list_mailboxes(user).await
    }
    async fn create_mailbox(&self, user: &str, name: &str, special_use: Option<SpecialUse>) -> Result<()> {
        let route = self.write_route(user).await?;
        route.primary.create_mailbox(user, name, special_use).await?;
        let status = route.primary.status(user, name).await?;
        let record = Apply::Mailbox { name: name.to_string(), uid_validity: status.uid_validity, special_use };
        route.replicate(vec![record], Undo::Nothing).await
    }
    async fn delete_mailbox(&self, user: &str, name: &str) -> Result<()> {
        let route = self.write_route(user).await?;
        route.primary.delete_mailbox(user, name).await?;
        route.replicate(vec![Apply::Delete { name: name.to_string() }], Undo::Nothing).await
    }
    async fn rename_mailbox(&self, user: &str, from: &str, to: &str) -> Result<()> {
        let route = self.write_route(user).await?;
        route.primary.rename_mailbox(user, from, to).await?;
        // Renaming INBOX moves its messages into a new mailbox, and a renamed mailbox's
        // messages get new MODSEQs: neither can a replica repeat by itself, so after its own
        // rename the user is compared whole.
        let record = (!from.eq_ignore_ascii_case("INBOX")).then(|| Apply::Rename { from: from.into(), to: to.into() });
        route.replicate_then_compare(record).await
    }
    async fn subscribe(&self, user: &str, name: &str, subscribed: bool) -> Result<()> {
        let route = self.write_route(user).await?;
        route.primary.subscribe(user, name, subscribed).await?;
        route.replicate(vec![Apply::Subscribe { name: name.to_string(), subscribed }], Undo::Nothing).await
    }
    async fn append(&self, user: &str, mailbox: &str, message: NewMessage) -> Result<AppendResult> {
        let route = self.write_route(user).await?;
        let (bytes, flags) = (message.bytes.clone(), Flags::new(message.flags.system, message.flags.keywords.clone()));
        let result = route.primary.append(user, mailbox, message).await?;
        let meta = MessageMeta {
            uid: result.uid,
            flags,
            internal_date: result.internal_date,
            size: bytes.len() as u64,
            modseq: result.modseq,
        };
        let record = Apply::Append { mailbox: mailbox.to_string(), uid_validity: result.uid_validity, meta, bytes };
        let undo = Undo::Remove { mailbox: mailbox.to_string(), uids: UidSet::single(result.uid) };
        route.replicate(vec![record], undo).await?;
        Ok(result)
    }
    async fn messages(&self, user: &str, mailbox: &str) -> Result<(MailboxStatus, Vec<MessageMeta>)> {
        self.primary(user)?.messages(user, mailbox).await
    }
    async fn fetch(&self, user: &str, mailbox: &str, uids: &UidSet, body: BodyPart) -> Result<Vec<FetchedMessage>> {
        self.primary(user)?.fetch(user, mailbox, uids, body).await
    }
    async fn cache_get(&self, user: &str, mailbox: &str, uids: &UidSet) -> Result<Vec<Cached>> {
        self.primary(user)?.cache_get(user, mailbox, uids).await
    }
    async fn cache_put(&self, user: &str, mailbox: &str, items: Vec<Cached>) -> Result<()> {
        // Derived data: a replica derives its own after a failover.
        self.primary(user)?.cache_put(user, mailbox, items).await
    }
    async fn store_flags(
        &self,
        user: &str,
        mailbox: &str,
        uids: &UidSet,
        op: FlagOp,
        flags: &Flags,
        unchanged_since: Option<u64>,
    ) -> Result<Vec<MessageMeta>> {
        let route = self.write_route(user).await?;
        let changed = route.primary.store_flags(user, mailbox, uids, op, flags, unchanged_since).await?;
        if !changed.is_empty() {
            let uid_validity = route.primary.status(user, mailbox).await?.uid_validity;
            let record =
                Apply::Flags { mailbox: mailbox.to_string(), uid_validity, metas: changed.clone(), exact: false };
            route.replicate(vec![record], Undo::Nothing).await?;
        }
        Ok(changed)
    }
    async fn expunge(&self, user: &str, mailbox: &str, uids: Option<&UidSet>) -> Result<Vec<u32>> {
        let route = self.write_route(user).await?;
        let gone = route.primary.expunge(user, mailbox, uids).await?;
        if !gone.is_empty() {
            let status = route.primary.status(user, mailbox).await?;
            route.replicate(route.expunged(mailbox, &status, gone.clone()), Undo::Nothing).await?;
        }
        Ok(gone)
    }
    async fn copy(&self, user: &str, from: &str, to: &str, uids: &UidSet) -> Result<CopyResult> {
        let route = self.write_route(user).await?;
        let result = route.primary.copy(user, from, to, uids).await?;
        route.replicate_transfer(from, to, &result, false).await?;
        Ok(result)
    }
    async fn move_messages(&self, user: &str, from: &str, to: &str, uids: &UidSet) -> Result<CopyResult> {
        let route = self.write_route(user).await?;
        let result = route.primary.move_messages(user, from, to, uids).await?;
        route.replicate_transfer(from, to, &result, true).await?;
        Ok(result)
    }
    async fn status(&self, user: &str, mailbox: &str) -> Result<MailboxStatus> {
        self.primary(user)?.status(user, mailbox).await
    }
    async fn claim_recent(&self, user: &str, mailbox: &str) -> Result<Vec<u32>> {
        // \Recent belongs to sessions, not to the mail: it is not replicated.
        self.primary(user)?.claim_recent(user, mailbox).await
    }
    async fn adopt_uid_validity(&self, user: &str, mailbox: &str, uid_validity: u32) -> Result<u32> {
        let route = self.write_route(user).await?;
        let adopted = route.primary.adopt_uid_validity(user, mailbox, uid_validity).await?;
        // The replica's copy is as empty as the primary's was: it takes the same UIDVALIDITY.
        let record = Apply::Mailbox { name: mailbox.to_string(), uid_validity: adopted, special_use: None };
        route.replicate(vec![record], Undo::Nothing).await?;
        Ok(adopted)
    }
    async fn quota(&self, user: &str) -> Result<QuotaUsage> {
        self.primary(user)?.quota(user).await
    }
    async fn watch(&self, user: &str, mailbox: &str) -> Result<ChangeStream> {
        self.primary(user)?.watch(user, mailbox).await
    }
    async fn user_files(&self, user: &str) -> Result<Vec<UserFile>> {
        self.primary(user)?.user_files(user).await
    }
    async fn put_user_file(&self, user: &str, name: &str, content: Option<Bytes>) -> Result<()> {
        let route = self.write_route(user).await?;
        route.primary.put_user_file(user, name, content.clone()).await?;
        route.replicate(vec![Apply::UserFile { name: name.to_string(), content }], Undo::Nothing).await
    }
    async fn lock_maildrop(&self, user: &str) -> Result<Option<MaildropLock>> {
        // The home's lock: one POP3 session per maildrop across the cluster.
        self.primary(user)?.lock_maildrop(user).await
    }
}
