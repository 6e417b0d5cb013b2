//! `RemoteStore`: a `MailStore` that calls a Store gRPC service.

use std::iter;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream;
use sirms_proto::cluster_tls::Credentials;
use sirms_proto::store::store_client::StoreClient;
use sirms_proto::store::{self as proto, append_chunk, fetch_chunk};
use sirms_proto::token::TokenInterceptor;
use tonic::Code;
use tonic::codec::Streaming;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::MAX_GRPC_MESSAGE;
use super::apply_batch::{self, ApplyQueue};
use super::fail_fast::{FailFast, peer_channel};
use super::idempotency::MAX_KEY_LEN;
use super::{body, convert};
use crate::change::{Change, ChangeStream};
use crate::error::{Result, StoreError};
use crate::flags::{FlagOp, Flags};
use crate::mailbox::{MailboxInfo, MailboxStatus, SpecialUse};
use crate::maildrop::MaildropLock;
use crate::message::{
    AppendResult, BodyPart, Cached, CopyResult, FetchedMessage, MAX_CACHED_SIZE, MAX_MESSAGE_SIZE, MessageMeta,
    NewMessage, QuotaUsage,
};
use crate::replica::{Apply, ReplicaStore};
use crate::store::MailStore;
use crate::uidset::UidSet;

/// How long any call may take to be answered (a watch: to start; a fetch: to start sending),
/// so that a store that is up but stuck does not hold its callers — an SMTP session, an
/// IMAP command — for ever.
const CALL_DEADLINE: Duration = Duration::from_secs(60);
/// How long an append may take, beyond the time its bytes take at [`APPEND_RATE`].
const APPEND_DEADLINE: Duration = Duration::from_secs(20);
/// The slowest transfer of an append allowed for, in bytes per second.
const APPEND_RATE: u64 = 8 * 1024 * 1024;
/// How soon a store whose answer to an append was lost must answer a ping for the append to be
/// asked again: a live one answers in milliseconds, and a dead one is not waited for twice.
const RETRY_PING: Duration = Duration::from_secs(1);

pub(super) type Client = StoreClient<InterceptedService<FailFast<Channel>, TokenInterceptor>>;

/// A key no other append shares: 128 random bits (from the kernel), in hex.
fn append_key() -> String {
    let mut bytes = [0u8; 16];
    // SAFETY: a buffer we own, of the length given.
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if filled != bytes.len() as isize {
        // Never seen on Linux for 16 bytes; unique enough for a retry window of seconds.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        return format!("{:x}-{nanos:x}-{n:x}", std::process::id());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A user's mailboxes kept by a Store service elsewhere in the cluster.
#[derive(Clone)]
pub struct RemoteStore {
    client: Client,
    /// Small replica appends waiting to share a call (see [`super::apply_batch`]).
    applies: ApplyQueue,
}

impl RemoteStore {
    /// A store at `endpoint` (e.g. `http://127.0.0.1:7000`), called with the cluster `token`.
    ///
    /// Connects lazily, so a store that is down now is tried again later; after a transport
    /// failure, calls fail at once for a few seconds (see [`super::fail_fast`]).
    /// Must be called from within a Tokio runtime.
    pub fn connect(endpoint: &str, token: impl Into<String>) -> Result<RemoteStore> {
        RemoteStore::connect_with(endpoint, &Credentials::token(token))
    }

    /// A store at `endpoint`, reached with `credentials` (over mutual TLS when they have it).
    pub fn connect_with(endpoint: &str, credentials: &Credentials) -> Result<RemoteStore> {
        let token = TokenInterceptor::new(&credentials.token)
            .ok_or_else(|| StoreError::Protocol("the cluster token is not a valid gRPC metadata value".into()))?;
        let settings = credentials
            .endpoint(endpoint)
            .map_err(|e| StoreError::Unavailable(format!("invalid store endpoint {endpoint:?}: {e}")))?
            .configure(|e| e.timeout(CALL_DEADLINE));
        let channel = peer_channel(settings, endpoint);
        let client = StoreClient::with_interceptor(channel, token)
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE);
        Ok(RemoteStore { client, applies: ApplyQueue::default() })
    }

    /// Asks whether the store serves (a liveness probe): `Ok` once it answered. A store that
    /// predates the call (`UNIMPLEMENTED`) answered all the same; a refusal of the caller's
    /// credentials is an error, since every node holds the same ones and none could use it.
    pub async fn ping(&self) -> Result<()> {
        match self.client().ping(proto::Empty {}).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::Unimplemented => Ok(()),
            Err(status) => Err(status.into()),
        }
    }

    /// One attempt of an append under `key`; a failure is the status as it came (answered by
    /// the store or not), with no answer in time as an untagged `DEADLINE_EXCEEDED`.
    async fn append_once(
        &self,
        user: &str,
        mailbox: &str,
        message: &NewMessage,
        key: &str,
    ) -> std::result::Result<AppendResult, tonic::Status> {
        let size = message.bytes.len() as u64;
        let header = proto::AppendHeader {
            user: user.to_owned(),
            mailbox: mailbox.to_owned(),
            flags: Some(message.flags.clone().into()),
            internal_date: message.internal_date.unwrap_or(0),
            size,
            idempotency_key: key.to_owned(),
            keep_uid: message.keep_uid.unwrap_or(0),
        };
        let limit = APPEND_DEADLINE + Duration::from_secs(size / APPEND_RATE);
        let data = body::chunks(message.bytes.clone()).map(append_chunk::Part::Data);
        let chunks = iter::once(append_chunk::Part::Header(header))
            .chain(data)
            .map(|part| proto::AppendChunk { part: Some(part) });
        match tokio::time::timeout(limit, self.client().append(stream::iter(chunks))).await {
            Ok(reply) => Ok(reply?.into_inner().into()),
            Err(_) => Err(tonic::Status::deadline_exceeded(format!("no answer to an append in {limit:?}"))),
        }
    }

    /// Whether the store answers a ping within `wait`.
    async fn answers_within(&self, wait: Duration) -> bool {
        matches!(tokio::time::timeout(wait, self.ping()).await, Ok(Ok(())))
    }

    /// A handle for one call: tonic's calls take `&mut self`, and clones share the channel.
    fn client(&self) -> Client {
        self.client.clone()
    }
}

#[async_trait]
impl MailStore for RemoteStore {
    async fn list_mailboxes(&self, user: &str) -> Result<Vec<MailboxInfo>> {
        let request = proto::UserRequest { user: user.to_owned() };
        let reply = self.client().list_mailboxes(request).await?.into_inner();
        Ok(reply.mailboxes.into_iter().map(Into::into).collect())
    }

    async fn create_mailbox(&self, user: &str, name: &str, special_use: Option<SpecialUse>) -> Result<()> {
        let request = proto::CreateMailboxRequest {
            user: user.to_owned(),
            mailbox: name.to_owned(),
            special_use: convert::special_use_to_proto(special_use),
        };
        self.client().create_mailbox(request).await?;
        Ok(())
    }

    async fn delete_mailbox(&self, user: &str, name: &str) -> Result<()> {
        self.client().delete_mailbox(mailbox_request(user, name)).await?;
        Ok(())
    }

    async fn rename_mailbox(&self, user: &str, from: &str, to: &str) -> Result<()> {
        let request = proto::RenameMailboxRequest { user: user.to_owned(), from: from.to_owned(), to: to.to_owned() };
        self.client().rename_mailbox(request).await?;
        Ok(())
    }

    async fn subscribe(&self, user: &str, name: &str, subscribed: bool) -> Result<()> {
        let request = proto::SubscribeRequest { user: user.to_owned(), mailbox: name.to_owned(), subscribed };
        self.client().subscribe(request).await?;
        Ok(())
    }

    /// An append whose answer never came (the connection broke, the time ran out) may have been
    /// stored all the same: if the store answers a ping at once it is asked again under the same
    /// idempotency key, and answers with the first attempt's result rather than a second copy.
    async fn append(&self, user: &str, mailbox: &str, message: NewMessage) -> Result<AppendResult> {
        // The server refuses it too, but only after the bytes have crossed the network.
        if message.bytes.len() as u64 > MAX_MESSAGE_SIZE {
            return Err(StoreError::TooLarge);
        }
        // A key the store would refuse as too long is replaced: the append must not fail for it.
        let key = message.idempotency_key.clone().filter(|k| k.len() <= MAX_KEY_LEN).unwrap_or_else(append_key);
        let status = match self.append_once(user, mailbox, &message, &key).await {
            Ok(appended) => return Ok(appended),
            Err(status) => status,
        };
        if convert::answered(&status) || !self.answers_within(RETRY_PING).await {
            return Err(status.into());
        }
        tracing::info!(user, mailbox, error = %status.message(), "append unanswered: asked again under its key");
        Ok(self.append_once(user, mailbox, &message, &key).await?)
    }

    async fn messages(&self, user: &str, mailbox: &str) -> Result<(MailboxStatus, Vec<MessageMeta>)> {
        let reply = self.client().messages(mailbox_request(user, mailbox)).await?.into_inner();
        let status = convert::required(reply.status, "mailbox status")?;
        Ok((status.into(), reply.messages.into_iter().map(Into::into).collect()))
    }

    async fn fetch(&self, user: &str, mailbox: &str, uids: &UidSet, body: BodyPart) -> Result<Vec<FetchedMessage>> {
        let (kind, offset, length) = convert::body_part_to_proto(body);
        let request = proto::FetchRequest {
            user: user.to_owned(),
            mailbox: mailbox.to_owned(),
            uids: Some(uids.into()),
            body: kind,
            offset,
            length,
        };
        let chunks = self.client().fetch(request).await?.into_inner();
        receive_fetched(chunks).await
    }

    async fn cache_get(&self, user: &str, mailbox: &str, uids: &UidSet) -> Result<Vec<Cached>> {
        let request =
            proto::CacheGetRequest { user: user.to_owned(), mailbox: mailbox.to_owned(), uids: Some(uids.into()) };
        let reply = self.client().cache_get(request).await?.into_inner();
        Ok(reply.entries.into_iter().map(|e| Cached { uid: e.uid, data: e.data }).collect())
    }

    async fn cache_put(&self, user: &str, mailbox: &str, items: Vec<Cached>) -> Result<()> {
        // The server drops these too, but only after they have crossed the network.
        let entries: Vec<proto::CacheEntry> = items
            .into_iter()
            .filter(|c| c.data.len() <= MAX_CACHED_SIZE)
            .map(|c| proto::CacheEntry { uid: c.uid, data: c.data })
            .collect();
        if entries.is_empty() {
            return Ok(());
        }
        let request = proto::CachePutRequest { user: user.to_owned(), mailbox: mailbox.to_owned(), entries };
        self.client().cache_put(request).await?;
        Ok(())
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
        // The wire reads UNCHANGEDSINCE 0 as "unconditional", yet it matches no message
        // (mod-sequences start at 1). Sending no UIDs keeps its meaning: the mailbox and
        // the flags are still checked, and nothing changes.
        let uids = match unchanged_since {
            Some(0) => proto::UidSet::default(),
            _ => uids.into(),
        };
        let request = proto::StoreFlagsRequest {
            user: user.to_owned(),
            mailbox: mailbox.to_owned(),
            uids: Some(uids),
            op: proto::FlagOp::from(op).into(),
            flags: Some(flags.clone().into()),
            unchanged_since: unchanged_since.unwrap_or(0),
        };
        let reply = self.client().store_flags(request).await?.into_inner();
        Ok(reply.messages.into_iter().map(Into::into).collect())
    }

    async fn expunge(&self, user: &str, mailbox: &str, uids: Option<&UidSet>) -> Result<Vec<u32>> {
        let request = proto::ExpungeRequest {
            user: user.to_owned(),
            mailbox: mailbox.to_owned(),
            uids: uids.map(Into::into),
            restrict: uids.is_some(),
        };
        Ok(self.client().expunge(request).await?.into_inner().uids)
    }

    async fn copy(&self, user: &str, from: &str, to: &str, uids: &UidSet) -> Result<CopyResult> {
        let reply = self.client().copy(copy_request(user, from, to, uids)).await?.into_inner();
        Ok(reply.into())
    }

    async fn move_messages(&self, user: &str, from: &str, to: &str, uids: &UidSet) -> Result<CopyResult> {
        let reply = self.client().r#move(copy_request(user, from, to, uids)).await?.into_inner();
        Ok(reply.into())
    }

    async fn status(&self, user: &str, mailbox: &str) -> Result<MailboxStatus> {
        let reply = self.client().status(mailbox_request(user, mailbox)).await?.into_inner();
        Ok(reply.into())
    }

    async fn claim_recent(&self, user: &str, mailbox: &str) -> Result<Vec<u32>> {
        Ok(self.client().claim_recent(mailbox_request(user, mailbox)).await?.into_inner().uids)
    }

    async fn adopt_uid_validity(&self, user: &str, mailbox: &str, uid_validity: u32) -> Result<u32> {
        let request = proto::AdoptRequest { user: user.to_owned(), mailbox: mailbox.to_owned(), uid_validity };
        Ok(self.client().adopt_uid_validity(request).await?.into_inner().uid_validity)
    }

    async fn quota(&self, user: &str) -> Result<QuotaUsage> {
        let request = proto::UserRequest { user: user.to_owned() };
        Ok(self.client().quota(request).await?.into_inner().into())
    }

    async fn watch(&self, user: &str, mailbox: &str) -> Result<ChangeStream> {
        let changes = self.client().watch(mailbox_request(user, mailbox)).await?.into_inner();
        Ok(Box::pin(stream::unfold(Some(changes), next_change)))
    }

    async fn user_files(&self, user: &str) -> Result<Vec<crate::UserFile>> {
        let request = proto::UserRequest { user: user.to_owned() };
        let list = self.client().user_files(request).await?.into_inner();
        Ok(list.files.into_iter().map(|f| crate::UserFile { name: f.name, content: f.content }).collect())
    }

    async fn put_user_file(&self, user: &str, name: &str, content: Option<Bytes>) -> Result<()> {
        let present = content.is_some();
        let request = proto::UserFile {
            user: user.to_owned(),
            name: name.to_owned(),
            content: content.unwrap_or_default(),
            present,
        };
        self.client().put_user_file(request).await?;
        Ok(())
    }

    async fn lock_maildrop(&self, user: &str) -> Result<Option<MaildropLock>> {
        let request = proto::UserRequest { user: user.to_owned() };
        let mut call = self.client().hold_maildrop(request).await?.into_inner();
        match call.message().await? {
            // The open call is the lock: dropping it ends the call, which releases the lock.
            Some(proto::MaildropHeld { held: true }) => Ok(Some(MaildropLock::new(call))),
            Some(_) => Ok(None),
            None => Err(StoreError::Protocol("the maildrop call ended without an answer".into())),
        }
    }
}

fn mailbox_request(user: &str, mailbox: &str) -> proto::MailboxRequest {
    proto::MailboxRequest { user: user.to_owned(), mailbox: mailbox.to_owned() }
}

fn copy_request(user: &str, from: &str, to: &str, uids: &UidSet) -> proto::CopyRequest {
    proto::CopyRequest { user: user.to_owned(), from: from.to_owned(), to: to.to_owned(), uids: Some(uids.into()) }
}

/// Reassembles a fetch reply: each `meta` chunk starts a message, data chunks extend its body.
async fn receive_fetched(mut chunks: Streaming<proto::FetchChunk>) -> Result<Vec<FetchedMessage>> {
    let mut messages: Vec<(MessageMeta, Option<Vec<u8>>)> = Vec::new();
    while let Some(chunk) = chunks.message().await? {
        match chunk.part {
            Some(fetch_chunk::Part::Meta(meta)) => messages.push((meta.into(), None)),
            Some(fetch_chunk::Part::Data(data)) => {
                let (_, body) = messages
                    .last_mut()
                    .ok_or_else(|| StoreError::Protocol("fetch data before any message metadata".into()))?;
                extend_body(body, data)?;
            }
            None => return Err(StoreError::Protocol("empty fetch chunk".into())),
        }
    }
    let messages = messages.into_iter().map(|(meta, body)| FetchedMessage { meta, body: body.map(Bytes::from) });
    Ok(messages.collect())
}

/// Adds a data chunk to a fetched body, which may not outgrow the largest message there is.
fn extend_body(body: &mut Option<Vec<u8>>, data: Bytes) -> Result<()> {
    let held = body.as_ref().map_or(0, Vec::len);
    if (held + data.len()) as u64 > MAX_MESSAGE_SIZE {
        return Err(StoreError::Protocol("fetched body larger than any message can be".into()));
    }
    match body {
        Some(body) => body.extend_from_slice(&data),
        // The first chunk becomes the body as is, so a body sent in one chunk is never copied.
        None => *body = Some(data.into()),
    }
    Ok(())
}

#[async_trait]
impl ReplicaStore for RemoteStore {
    async fn fence(&self, user: &str, epoch: u64) -> Result<u64> {
        Ok(self.client().fence(proto::FenceRequest { user: user.to_owned(), epoch }).await?.into_inner().epoch)
    }

    async fn apply(&self, user: &str, epoch: u64, record: Apply) -> Result<()> {
        let request = convert::apply_to_proto(user, epoch, record);
        match apply_batch::batchable(&request) {
            Some(bytes) => self.applies.apply(&self.client, request, bytes).await,
            None => self.client().apply(request).await.map(drop).map_err(StoreError::from),
        }
    }
}

/// One step of a watch: the next change, or after an error a last `Lagged` and the end.
async fn next_change(changes: Option<Streaming<proto::Change>>) -> Option<(Change, Option<Streaming<proto::Change>>)> {
    let mut changes = changes?;
    let failure = match changes.message().await {
        Ok(None) => return None,
        Ok(Some(change)) => match Change::try_from(change) {
            Ok(change) => return Some((change, Some(changes))),
            Err(e) => e.to_string(),
        },
        Err(status) if status.code() == Code::DataLoss => return Some((Change::Lagged, None)),
        Err(status) => StoreError::from(status).to_string(),
    };
    // Changes may have been missed, which is what `Lagged` tells the watcher: re-read the
    // mailbox (and watch again if it still wants to).
    tracing::warn!(error = %failure, "mailbox watch ended");
    Some((Change::Lagged, None))
}
