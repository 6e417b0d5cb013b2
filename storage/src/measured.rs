//! A [`MailStore`] that times every call of the store it wraps: the store latency histogram
//! of each role's metrics, whatever the store is (local Maildir or remote over gRPC).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use sirms_telemetry::{Counter, Exposition, Histogram, Render};

use crate::change::ChangeStream;
use crate::error::Result;
use crate::flags::{FlagOp, Flags};
use crate::mailbox::{MailboxInfo, MailboxStatus, SpecialUse};
use crate::message::{AppendResult, BodyPart, Cached, CopyResult, FetchedMessage, MessageMeta, NewMessage, QuotaUsage};
use crate::store::MailStore;
use crate::uidset::UidSet;

/// The store operations, as metric labels.
#[derive(Debug, Clone, Copy)]
enum Op {
    ListMailboxes,
    CreateMailbox,
    DeleteMailbox,
    RenameMailbox,
    Subscribe,
    Append,
    Messages,
    Fetch,
    CacheGet,
    CachePut,
    StoreFlags,
    Expunge,
    Copy,
    Move,
    Status,
    ClaimRecent,
    Quota,
    Watch,
}

impl Op {
    const ALL: [Op; 18] = [
        Op::ListMailboxes,
        Op::CreateMailbox,
        Op::DeleteMailbox,
        Op::RenameMailbox,
        Op::Subscribe,
        Op::Append,
        Op::Messages,
        Op::Fetch,
        Op::CacheGet,
        Op::CachePut,
        Op::StoreFlags,
        Op::Expunge,
        Op::Copy,
        Op::Move,
        Op::Status,
        Op::ClaimRecent,
        Op::Quota,
        Op::Watch,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::ListMailboxes => "list_mailboxes",
            Op::CreateMailbox => "create_mailbox",
            Op::DeleteMailbox => "delete_mailbox",
            Op::RenameMailbox => "rename_mailbox",
            Op::Subscribe => "subscribe",
            Op::Append => "append",
            Op::Messages => "messages",
            Op::Fetch => "fetch",
            Op::CacheGet => "cache_get",
            Op::CachePut => "cache_put",
            Op::StoreFlags => "store_flags",
            Op::Expunge => "expunge",
            Op::Copy => "copy",
            Op::Move => "move",
            Op::Status => "status",
            Op::ClaimRecent => "claim_recent",
            Op::Quota => "quota",
            Op::Watch => "watch",
        }
    }
}

/// Latency and errors of each store operation.
pub struct StoreMetrics {
    latency: Vec<Histogram>,
    errors: Vec<Counter>,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            latency: Op::ALL.iter().map(|_| Histogram::latency()).collect(),
            errors: Op::ALL.iter().map(|_| Counter::default()).collect(),
        }
    }
}

impl Render for StoreMetrics {
    fn render(&self, out: &mut Exposition) {
        let labels: Vec<[(&str, &str); 1]> = Op::ALL.iter().map(|op| [("op", op.name())]).collect();
        let latency: Vec<_> = labels.iter().zip(&self.latency).map(|(l, h)| (&l[..], h)).collect();
        out.histogram("sirms_store_op_seconds", "Time taken by mail store operations.", &latency);
        let errors: Vec<_> = labels.iter().zip(&self.errors).map(|(l, c)| (&l[..], c.get())).collect();
        out.counter("sirms_store_op_errors_total", "Mail store operations that failed.", &errors);
    }
}

/// Wraps a store, timing each call into [`StoreMetrics`].
pub struct Measured {
    inner: Arc<dyn MailStore>,
    metrics: Arc<StoreMetrics>,
}

impl Measured {
    /// Times the calls made to `inner`.
    pub fn new(inner: Arc<dyn MailStore>, metrics: Arc<StoreMetrics>) -> Measured {
        Measured { inner, metrics }
    }

    async fn timed<T>(&self, op: Op, call: impl Future<Output = Result<T>>) -> Result<T> {
        let started = Instant::now();
        let result = call.await;
        self.metrics.latency[op as usize].observe(started.elapsed());
        if result.is_err() {
            self.metrics.errors[op as usize].inc();
        }
        result
    }
}

#[async_trait]
impl MailStore for Measured {
    async fn list_mailboxes(&self, user: &str) -> Result<Vec<MailboxInfo>> {
        self.timed(Op::ListMailboxes, self.inner.list_mailboxes(user)).await
    }
    async fn create_mailbox(&self, user: &str, name: &str, special_use: Option<SpecialUse>) -> Result<()> {
        self.timed(Op::CreateMailbox, self.inner.create_mailbox(user, name, special_use)).await
    }
    async fn delete_mailbox(&self, user: &str, name: &str) -> Result<()> {
        self.timed(Op::DeleteMailbox, self.inner.delete_mailbox(user, name)).await
    }
    async fn rename_mailbox(&self, user: &str, from: &str, to: &str) -> Result<()> {
        self.timed(Op::RenameMailbox, self.inner.rename_mailbox(user, from, to)).await
    }
    async fn subscribe(&self, user: &str, name: &str, subscribed: bool) -> Result<()> {
        self.timed(Op::Subscribe, self.inner.subscribe(user, name, subscribed)).await
    }
    async fn append(&self, user: &str, mailbox: &str, message: NewMessage) -> Result<AppendResult> {
        self.timed(Op::Append, self.inner.append(user, mailbox, message)).await
    }
    async fn messages(&self, user: &str, mailbox: &str) -> Result<(MailboxStatus, Vec<MessageMeta>)> {
        self.timed(Op::Messages, self.inner.messages(user, mailbox)).await
    }
    async fn fetch(&self, user: &str, mailbox: &str, uids: &UidSet, body: BodyPart) -> Result<Vec<FetchedMessage>> {
        self.timed(Op::Fetch, self.inner.fetch(user, mailbox, uids, body)).await
    }
    async fn cache_get(&self, user: &str, mailbox: &str, uids: &UidSet) -> Result<Vec<Cached>> {
        self.timed(Op::CacheGet, self.inner.cache_get(user, mailbox, uids)).await
    }
    async fn cache_put(&self, user: &str, mailbox: &str, items: Vec<Cached>) -> Result<()> {
        self.timed(Op::CachePut, self.inner.cache_put(user, mailbox, items)).await
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
        self.timed(Op::StoreFlags, self.inner.store_flags(user, mailbox, uids, op, flags, unchanged_since)).await
    }
    async fn expunge(&self, user: &str, mailbox: &str, uids: Option<&UidSet>) -> Result<Vec<u32>> {
        self.timed(Op::Expunge, self.inner.expunge(user, mailbox, uids)).await
    }
    async fn copy(&self, user: &str, from: &str, to: &str, uids: &UidSet) -> Result<CopyResult> {
        self.timed(Op::Copy, self.inner.copy(user, from, to, uids)).await
    }
    async fn move_messages(&self, user: &str, from: &str, to: &str, uids: &UidSet) -> Result<CopyResult> {
        self.timed(Op::Move, self.inner.move_messages(user, from, to, uids)).await
    }
    async fn status(&self, user: &str, mailbox: &str) -> Result<MailboxStatus> {
        self.timed(Op::Status, self.inner.status(user, mailbox)).await
    }
    async fn claim_recent(&self, user: &str, mailbox: &str) -> Result<Vec<u32>> {
        self.timed(Op::ClaimRecent, self.inner.claim_recent(user, mailbox)).await
    }
    async fn adopt_uid_validity(&self, user: &str, mailbox: &str, uid_validity: u32) -> Result<u32> {
        // Once per mailbox of an import: not a mail operation worth a histogram.
        self.inner.adopt_uid_validity(user, mailbox, uid_validity).await
    }
    async fn quota(&self, user: &str) -> Result<QuotaUsage> {
        self.timed(Op::Quota, self.inner.quota(user)).await
    }
    async fn watch(&self, user: &str, mailbox: &str) -> Result<ChangeStream> {
        self.timed(Op::Watch, self.inner.watch(user, mailbox)).await
    }
    async fn lock_maildrop(&self, user: &str) -> Result<Option<crate::MaildropLock>> {
        // A lock, not a mail operation: not timed.
        self.inner.lock_maildrop(user).await
    }
    async fn user_files(&self, user: &str) -> Result<Vec<crate::UserFile>> {
        // Settings, not mail: not timed.
        self.inner.user_files(user).await
    }
    async fn put_user_file(&self, user: &str, name: &str, content: Option<bytes::Bytes>) -> Result<()> {
        self.inner.put_user_file(user, name, content).await
    }
}
