//! A `MailStore` that sends each user's operations to the node holding the mailbox: the
//! local store for users homed here, a `RemoteStore` for users homed elsewhere. Protocol
//! code never knows the difference.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sirms_proto::cluster_tls::Credentials;
use sirms_storage::{
    AppendResult, BodyPart, Cached, ChangeStream, CopyResult, FetchedMessage, FlagOp, Flags, MailStore, MailboxInfo,
    MailboxStatus, MessageMeta, NewMessage, QuotaUsage, RemoteStore, Result, SpecialUse, StoreError, UidSet,
};

use crate::directory::LiveDirectory;

/// Where a home node's Store service is.
pub type Endpoints = Arc<Mutex<HashMap<String, String>>>;

/// Dispatches by the user's home.
pub struct HomeStore {
    node_id: String,
    local: Arc<dyn MailStore>,
    directory: Arc<LiveDirectory>,
    endpoints: Endpoints,
    credentials: Credentials,
    remotes: Mutex<HashMap<String, RemoteStore>>,
}

impl HomeStore {
    /// A store for node `node_id` over its `local` store.
    pub fn new(
        node_id: String,
        local: Arc<dyn MailStore>,
        directory: Arc<LiveDirectory>,
        endpoints: Endpoints,
        credentials: Credentials,
    ) -> HomeStore {
        HomeStore { node_id, local, directory, endpoints, credentials, remotes: Mutex::new(HashMap::new()) }
    }

    /// The store holding `user`'s mailbox.
    fn store_for(&self, user: &str) -> Result<Arc<dyn MailStore>> {
        let home = self.directory.current().home_of(user).map(str::to_string).unwrap_or_default();
        if home.is_empty() || home == self.node_id {
            return Ok(self.local.clone());
        }
        let endpoint = self
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&home)
            .cloned()
            .ok_or_else(|| StoreError::Unavailable(format!("home node {home} has no store endpoint")))?;
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
}

#[async_trait]
impl MailStore for HomeStore {
    async fn list_mailboxes(&self, user: &str) -> Result<Vec<MailboxInfo>> {
        self.store_for(user)?.list_mailboxes(user).await
    }
    async fn create_mailbox(&self, user: &str, name: &str, special_use: Option<SpecialUse>) -> Result<()> {
        self.store_for(user)?.create_mailbox(user, name, special_use).await
    }
    async fn delete_mailbox(&self, user: &str, name: &str) -> Result<()> {
        self.store_for(user)?.delete_mailbox(user, name).await
    }
    async fn rename_mailbox(&self, user: &str, from: &str, to: &str) -> Result<()> {
        self.store_for(user)?.rename_mailbox(user, from, to).await
    }
    async fn subscribe(&self, user: &str, name: &str, subscribed: bool) -> Result<()> {
        self.store_for(user)?.subscribe(user, name, subscribed).await
    }
    async fn append(&self, user: &str, mailbox: &str, message: NewMessage) -> Result<AppendResult> {
        self.store_for(user)?.append(user, mailbox, message).await
    }
    async fn messages(&self, user: &str, mailbox: &str) -> Result<(MailboxStatus, Vec<MessageMeta>)> {
        self.store_for(user)?.messages(user, mailbox).await
    }
    async fn fetch(&self, user: &str, mailbox: &str, uids: &UidSet, body: BodyPart) -> Result<Vec<FetchedMessage>> {
        self.store_for(user)?.fetch(user, mailbox, uids, body).await
    }
    async fn cache_get(&self, user: &str, mailbox: &str, uids: &UidSet) -> Result<Vec<Cached>> {
        self.store_for(user)?.cache_get(user, mailbox, uids).await
    }
    async fn cache_put(&self, user: &str, mailbox: &str, items: Vec<Cached>) -> Result<()> {
        self.store_for(user)?.cache_put(user, mailbox, items).await
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
        self.store_for(user)?.store_flags(user, mailbox, uids, op, flags, unchanged_since).await
    }
    async fn expunge(&self, user: &str, mailbox: &str, uids: Option<&UidSet>) -> Result<Vec<u32>> {
        self.store_for(user)?.expunge(user, mailbox, uids).await
    }
    async fn copy(&self, user: &str, from: &str, to: &str, uids: &UidSet) -> Result<CopyResult> {
        self.store_for(user)?.copy(user, from, to, uids).await
    }
    async fn move_messages(&self, user: &str, from: &str, to: &str, uids: &UidSet) -> Result<CopyResult> {
        self.store_for(user)?.move_messages(user, from, to, uids).await
    }
    async fn status(&self, user: &str, mailbox: &str) -> Result<MailboxStatus> {
        self.store_for(user)?.status(user, mailbox).await
    }
    async fn claim_recent(&self, user: &str, mailbox: &str) -> Result<Vec<u32>> {
        self.store_for(user)?.claim_recent(user, mailbox).await
    }
    async fn quota(&self, user: &str) -> Result<QuotaUsage> {
        self.store_for(user)?.quota(user).await
    }
    async fn watch(&self, user: &str, mailbox: &str) -> Result<ChangeStream> {
        self.store_for(user)?.watch(user, mailbox).await
    }
}
