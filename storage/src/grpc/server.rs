//! `StoreService`: any `MailStore` exported as the Store gRPC service.

use std::future::Future;
use std::iter;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use sirms_proto::cluster_tls::{ClientAuth, ClusterTls, Role};
use sirms_proto::store::store_server::{Store, StoreServer};
use sirms_proto::store::{self as proto, append_chunk, fetch_chunk};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, Streaming};

use super::MAX_GRPC_MESSAGE;
use super::apply_batch::MAX_APPLY_BATCH;
use super::idempotency::{self, MAX_KEY_LEN, RecentAppends};
use super::{body, convert};
use crate::error::StoreError;
use crate::message::{Cached, FetchedMessage, MessageMeta, NewMessage};
use crate::replica::ReplicaStore;
use crate::store::MailStore;

/// The Store gRPC service over a `MailStore`, open to callers that present the cluster token.
pub struct StoreService {
    store: Arc<dyn MailStore>,
    /// The store replicas are kept in (the same mail as `store`, unmeasured); without it the
    /// replication calls are refused.
    replica: Option<Arc<dyn ReplicaStore>>,
    token: String,
    /// Appends by idempotency key, so a retried one stores its message once.
    recent: Arc<RecentAppends>,
}

/// The reply to an append that stored its message (now or under its key before).
fn answer(result: crate::message::AppendResult) -> Result<Response<proto::AppendReply>, Status> {
    if idempotency::lose_answer() {
        return Err(Status::unavailable("test switch: the answer to a stored append is lost"));
    }
    Ok(Response::new(result.into()))
}

impl StoreService {
    /// Serves `store` to callers whose `x-sirms-token` metadata equals `token`.
    pub fn new(store: Arc<dyn MailStore>, token: String) -> Self {
        StoreService { store, replica: None, token, recent: Arc::default() }
    }

    /// Also takes the replication calls, applying them to `replica`.
    pub fn with_replica(mut self, replica: Arc<dyn ReplicaStore>) -> Self {
        self.replica = Some(replica);
        self
    }

    /// The tonic service, for callers that build their own server around it.
    pub fn into_server(self) -> StoreServer<StoreService> {
        StoreServer::new(self).max_decoding_message_size(MAX_GRPC_MESSAGE).max_encoding_message_size(MAX_GRPC_MESSAGE)
    }

    /// Serves on `listener` until `shutdown` completes, then lets running calls finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: Option<&ClusterTls>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        let routes = super::server().add_service(self.into_server());
        sirms_proto::cluster_tls::serve(routes, tls, ClientAuth::Required, listener, shutdown).await
    }

    /// The store, if the request carries the cluster token: every handler starts here, so
    /// none can reach the store without the check.
    /// Over mutual TLS, only the cluster's nodes, storage nodes and its administrator (`sirms
    /// ctl users move`) may read mailboxes: not a router, and no one without a certificate.
    fn authorized<T>(&self, request: &Request<T>) -> Result<&dyn MailStore, Status> {
        sirms_proto::cluster_tls::authorize(request, &[Role::Node, Role::Storage, Role::Admin])?;
        if sirms_proto::token::presented(request, &self.token) {
            Ok(&*self.store)
        } else {
            Err(StoreError::Unauthorized.into())
        }
    }

    /// The replica store, under the same checks as [`StoreService::authorized`].
    fn replica<T>(&self, request: &Request<T>) -> Result<&dyn ReplicaStore, Status> {
        self.authorized(request)?;
        self.replica.as_deref().ok_or_else(|| Status::unimplemented("this store keeps no replicas"))
    }
}

#[tonic::async_trait]
impl Store for StoreService {
    async fn list_mailboxes(
        &self,
        request: Request<proto::UserRequest>,
    ) -> Result<Response<proto::MailboxList>, Status> {
        let store = self.authorized(&request)?;
        let mailboxes = store.list_mailboxes(&request.get_ref().user).await?;
        let mailboxes = mailboxes.into_iter().map(Into::into).collect();
        Ok(Response::new(proto::MailboxList { mailboxes }))
    }

    async fn create_mailbox(
        &self,
        request: Request<proto::CreateMailboxRequest>,
    ) -> Result<Response<proto::Empty>, Status> {
        let store = self.authorized(&request)?;
        let request = request.get_ref();
        let special_use = convert::special_use_from_proto(request.special_use);
        store.create_mailbox(&request.user, &request.mailbox, special_use).await?;
        Ok(Response::new(proto::Empty {}))
    }

    async fn delete_mailbox(&self, request: Request<proto::MailboxRequest>) -> Result<Response<proto::Empty>, Status> {
        let store = self.authorized(&request)?;
        let request = request.get_ref();
        store.delete_mailbox(&request.user, &request.mailbox).await?;
        Ok(Response::new(proto::Empty {}))
    }

    async fn rename_mailbox(
        &self,
        request: Request<proto::RenameMailboxRequest>,
    ) -> Result<Response<proto::Empty>, Status> {
        let store = self.authorized(&request)?;
        let request = request.get_ref();
        store.rename_mailbox(&request.user, &request.from, &request.to).await?;
        Ok(Response::new(proto::Empty {}))
    }

    async fn user_files(&self, request: Request<proto::UserRequest>) -> Result<Response<proto::UserFileList>, Status> {
        let store = self.authorized(&request)?;
        let files = store.user_files(&request.get_ref().user).await?;
        let files = files
            .into_iter()
            .map(|f| proto::UserFile { user: String::new(), name: f.name, content: f.content, present: true })
            .collect();
        Ok(Response::new(proto::UserFileList { files }))
    }

    async fn put_user_file(&self, request: Request<proto::UserFile>) -> Result<Response<proto::Empty>, Status> {
        let store = self.authorized(&request)?;
        let file = request.into_inner();
        let content = file.present.then_some(file.content);
        store.put_user_file(&file.user, &file.name, content).await?;
        Ok(Response::new(proto::Empty {}))
    }

    async fn subscribe(&self, request: Request<proto::SubscribeRequest>) -> Result<Response<proto::Empty>, Status> {
        let store = self.authorized(&request)?;
        let request = request.get_ref();
        store.subscribe(&request.user, &request.mailbox, request.subscribed).await?;
        Ok(Response::new(proto::Empty {}))
    }

    async fn append(
        &self,
        request: Request<Streaming<proto::AppendChunk>>,
    ) -> Result<Response<proto::AppendReply>, Status> {
        self.authorized(&request)?;
        let mut chunks = request.into_inner();
        let Some(append_chunk::Part::Header(header)) = chunks.message().await?.and_then(|chunk| chunk.part) else {
            return Err(StoreError::Protocol("an append must start with its header".into()).into());
        };
        if header.idempotency_key.len() > MAX_KEY_LEN {
            return Err(StoreError::Protocol("idempotency key too long".into()).into());
        }
        // Held until this attempt's outcome is known: a retry of it waits, then finds the result.
        let key = Some(header.idempotency_key.clone()).filter(|k| !k.is_empty());
        let mut done = match &key {
            None => None,
            Some(key) => Some(self.recent.slot(&header.user, key).lock_owned().await),
        };
        if let Some(result) = done.as_ref().and_then(|d| **d) {
            return answer(result);
        }
        // A retry of an append this process never saw: the store committed it, then restarted
        // before answering. The key is in the message's file name.
        if let (Some(key), Some(slot), Some(replica)) = (&key, done.as_mut(), &self.replica)
            && self.recent.may_predate_start()
            && let Some(result) = replica.appended_under(&header.user, &header.mailbox, key).await?
        {
            **slot = Some(result);
            return answer(result);
        }
        let message = NewMessage {
            bytes: body::receive(&mut chunks, header.size, append_data).await?,
            flags: convert::flags(header.flags),
            internal_date: (header.internal_date != 0).then_some(header.internal_date),
            // The store writes it into the file name, where a restarted store finds it.
            idempotency_key: key,
            keep_uid: (header.keep_uid != 0).then_some(header.keep_uid),
        };
        // On a task of its own: a caller that gives up (its deadline, a broken connection)
        // cancels this handler, and a store write cancelled after it was committed would leave
        // the message stored with no result for the retry to find.
        let store = self.store.clone();
        let write = tokio::spawn(async move {
            let result = store.append(&header.user, &header.mailbox, message).await;
            if let (Ok(appended), Some(mut done)) = (&result, done) {
                *done = Some(*appended);
            }
            result
        });
        let result = write.await.map_err(|e| StoreError::Unavailable(format!("append task failed: {e}")))??;
        answer(result)
    }

    async fn messages(&self, request: Request<proto::MailboxRequest>) -> Result<Response<proto::MessageList>, Status> {
        let store = self.authorized(&request)?;
        let request = request.get_ref();
        let (status, messages) = store.messages(&request.user, &request.mailbox).await?;
        Ok(Response::new(message_list(Some(status.into()), messages)))
    }

    type FetchStream = BoxStream<'static, Result<proto::FetchChunk, Status>>;

    async fn fetch(&self, request: Request<proto::FetchRequest>) -> Result<Response<Self::FetchStream>, Status> {
        let store = self.authorized(&request)?;
        let request = request.into_inner();
        let body = convert::body_part_from_proto(&request)?;
        let uids = convert::uid_set(request.uids);
        let messages = store.fetch(&request.user, &request.mailbox, &uids, body).await?;
        // Lazy, so only one chunk of the bodies at a time is copied into a wire message.
        let chunks = messages.into_iter().flat_map(fetch_chunks).map(Ok);
        Ok(Response::new(stream::iter(chunks).boxed()))
    }

    async fn cache_get(
        &self,
        request: Request<proto::CacheGetRequest>,
    ) -> Result<Response<proto::CacheEntries>, Status> {
        let store = self.authorized(&request)?;
        let request = request.into_inner();
        let uids = convert::uid_set(request.uids);
        let found = store.cache_get(&request.user, &request.mailbox, &uids).await?;
        let entries = found.into_iter().map(|c| proto::CacheEntry { uid: c.uid, data: c.data }).collect();
        Ok(Response::new(proto::CacheEntries { entries }))
    }

    async fn cache_put(&self, request: Request<proto::CachePutRequest>) -> Result<Response<proto::Empty>, Status> {
        let store = self.authorized(&request)?;
        let request = request.into_inner();
        let items = request.entries.into_iter().map(|e| Cached { uid: e.uid, data: e.data }).collect();
        store.cache_put(&request.user, &request.mailbox, items).await?;
        Ok(Response::new(proto::Empty {}))
    }

    async fn store_flags(
        &self,
        request: Request<proto::StoreFlagsRequest>,
    ) -> Result<Response<proto::MessageList>, Status> {
        let store = self.authorized(&request)?;
        let request = request.into_inner();
        let op = convert::flag_op_from_proto(request.op)?;
        let uids = convert::uid_set(request.uids);
        let flags = convert::flags(request.flags);
        let unchanged_since = (request.unchanged_since != 0).then_some(request.unchanged_since);
        let changed = store.store_flags(&request.user, &request.mailbox, &uids, op, &flags, unchanged_since).await?;
        Ok(Response::new(message_list(None, changed)))
    }

    async fn expunge(&self, request: Request<proto::ExpungeRequest>) -> Result<Response<proto::UidList>, Status> {
        let store = self.authorized(&request)?;
        let request = request.into_inner();
        // `restrict` is what asks for UID EXPUNGE; a missing set then restricts to nothing.
        let uids = request.restrict.then(|| convert::uid_set(request.uids));
        let uids = store.expunge(&request.user, &request.mailbox, uids.as_ref()).await?;
        Ok(Response::new(proto::UidList { uids }))
    }

    async fn copy(&self, request: Request<proto::CopyRequest>) -> Result<Response<proto::CopyReply>, Status> {
        let store = self.authorized(&request)?;
        let request = request.into_inner();
        let uids = convert::uid_set(request.uids);
        let result = store.copy(&request.user, &request.from, &request.to, &uids).await?;
        Ok(Response::new(result.into()))
    }

    async fn r#move(&self, request: Request<proto::CopyRequest>) -> Result<Response<proto::CopyReply>, Status> {
        let store = self.authorized(&request)?;
        let request = request.into_inner();
        let uids = convert::uid_set(request.uids);
        let result = store.move_messages(&request.user, &request.from, &request.to, &uids).await?;
        Ok(Response::new(result.into()))
    }

    async fn status(&self, request: Request<proto::MailboxRequest>) -> Result<Response<proto::MailboxStatus>, Status> {
        let store = self.authorized(&request)?;
        let request = request.get_ref();
        let status = store.status(&request.user, &request.mailbox).await?;
        Ok(Response::new(status.into()))
    }

    async fn claim_recent(&self, request: Request<proto::MailboxRequest>) -> Result<Response<proto::UidList>, Status> {
        let store = self.authorized(&request)?;
        let request = request.get_ref();
        let uids = store.claim_recent(&request.user, &request.mailbox).await?;
        Ok(Response::new(proto::UidList { uids }))
    }

    async fn quota(&self, request: Request<proto::UserRequest>) -> Result<Response<proto::QuotaUsage>, Status> {
        let store = self.authorized(&request)?;
        let usage = store.quota(&request.get_ref().user).await?;
        Ok(Response::new(usage.into()))
    }

    async fn adopt_uid_validity(
        &self,
        request: Request<proto::AdoptRequest>,
    ) -> Result<Response<proto::AdoptReply>, Status> {
        let store = self.authorized(&request)?;
        let request = request.get_ref();
        let uid_validity = store.adopt_uid_validity(&request.user, &request.mailbox, request.uid_validity).await?;
        Ok(Response::new(proto::AdoptReply { uid_validity }))
    }

    async fn fence(&self, request: Request<proto::FenceRequest>) -> Result<Response<proto::FenceReply>, Status> {
        let replica = self.replica(&request)?;
        let request = request.get_ref();
        let epoch = replica.fence(&request.user, request.epoch).await?;
        Ok(Response::new(proto::FenceReply { epoch }))
    }

    async fn apply(&self, request: Request<proto::ApplyRequest>) -> Result<Response<proto::Empty>, Status> {
        let replica = self.replica(&request)?;
        let request = request.into_inner();
        let record = convert::apply_from_proto(request.record)?;
        replica.apply(&request.user, request.epoch, record).await?;
        Ok(Response::new(proto::Empty {}))
    }

    async fn apply_batch(
        &self,
        request: Request<proto::ApplyBatchRequest>,
    ) -> Result<Response<proto::ApplyBatchReply>, Status> {
        let replica = self.replica(&request)?;
        let records = request.into_inner().records;
        if records.len() > MAX_APPLY_BATCH {
            return Err(StoreError::Protocol(format!(
                "{} records in one batch, at most {MAX_APPLY_BATCH}",
                records.len()
            ))
            .into());
        }
        // Together, so that one group commit makes them all durable.
        let outcomes = futures::future::join_all(records.into_iter().map(|request| async move {
            let record = convert::apply_from_proto(request.record)?;
            replica.apply(&request.user, request.epoch, record).await
        }))
        .await;
        Ok(Response::new(proto::ApplyBatchReply {
            outcomes: outcomes.into_iter().map(convert::apply_outcome_to_proto).collect(),
        }))
    }

    async fn ping(&self, request: Request<proto::Empty>) -> Result<Response<proto::Empty>, Status> {
        // A router may ask this and nothing else: a liveness probe reads no mail.
        sirms_proto::cluster_tls::authorize(&request, &[Role::Node, Role::Storage, Role::Admin, Role::Router])?;
        if !sirms_proto::token::presented(&request, &self.token) {
            return Err(StoreError::Unauthorized.into());
        }
        Ok(Response::new(proto::Empty {}))
    }

    type WatchStream = BoxStream<'static, Result<proto::Change, Status>>;

    async fn watch(&self, request: Request<proto::MailboxRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let store = self.authorized(&request)?;
        let request = request.get_ref();
        let changes = store.watch(&request.user, &request.mailbox).await?;
        // `Lagged` has no wire form: it becomes a DataLoss error, which ends the response
        // (tonic stops at the first error) and which the client turns back into `Lagged`.
        let changes = changes
            .map(|change| convert::change_to_proto(change).ok_or_else(|| Status::data_loss("the watcher fell behind")));
        Ok(Response::new(changes.boxed()))
    }

    type HoldMaildropStream = BoxStream<'static, Result<proto::MaildropHeld, Status>>;

    async fn hold_maildrop(
        &self,
        request: Request<proto::UserRequest>,
    ) -> Result<Response<Self::HoldMaildropStream>, Status> {
        let store = self.authorized(&request)?;
        let lock = store.lock_maildrop(&request.get_ref().user).await?;
        let held = proto::MaildropHeld { held: lock.is_some() };
        // The lock lives in the stream, which tonic drops when the caller ends the call or its
        // connection dies: that releases it. A lock not taken ends the call at once.
        let open = match lock {
            Some(lock) => stream::pending::<std::convert::Infallible>()
                .map(move |never| {
                    let _held = &lock;
                    match never {}
                })
                .boxed(),
            None => stream::empty().boxed(),
        };
        Ok(Response::new(stream::once(async move { Ok(held) }).chain(open).boxed()))
    }
}

/// Reads the data chunks of an append, holding the client to the size it announced.
fn append_data(chunk: proto::AppendChunk) -> Option<Bytes> {
    match chunk.part {
        Some(append_chunk::Part::Data(data)) => Some(data),
        _ => None,
    }
}

/// One fetched message on the wire: its metadata, then its body, if fetched, in chunks.
fn fetch_chunks(message: FetchedMessage) -> impl Iterator<Item = proto::FetchChunk> {
    let meta = fetch_chunk::Part::Meta(message.meta.into());
    let data = message.body.into_iter().flat_map(body::chunks).map(fetch_chunk::Part::Data);
    iter::once(meta).chain(data).map(|part| proto::FetchChunk { part: Some(part) })
}

/// A `MessageList` reply.
fn message_list(status: Option<proto::MailboxStatus>, messages: Vec<MessageMeta>) -> proto::MessageList {
    proto::MessageList { status, messages: messages.into_iter().map(Into::into).collect() }
}
