//! The Import gRPC service: `sirms ctl import` stores what it read through a mail node, whose
//! store puts each message in the user's home and replica with the node's own replication
//! rules. Served next to NodeAdmin, to the administrator only.

use std::sync::Arc;

use bytes::Bytes;
use sirms_proto::cluster::import_server::{Import, ImportServer};
use sirms_proto::cluster::{
    Ack, ImportChunk, ImportMailbox, ImportUserFile, ImportedMailbox, ImportedMessage, ImportedMeta, import_chunk,
};
use sirms_storage::grpc::body;
use sirms_storage::{BodyPart, Flags, MailStore, NewMessage, StoreError, SystemFlags, UidSet};
use tonic::{Request, Response, Status, Streaming};

use crate::queue::rpc;

/// Most candidates one message is compared with.
const MAX_SAME_AS: usize = 64;

/// Imports into the users' homes, wherever they are, through `store`.
pub struct ImportService {
    store: Arc<dyn MailStore>,
    token: String,
}

impl ImportService {
    /// The service over the node's store (the one that reaches every home).
    pub fn new(store: Arc<dyn MailStore>, token: String) -> ImportService {
        ImportService { store, token }
    }

    /// The tonic service.
    pub fn into_server(self) -> ImportServer<ImportService> {
        ImportServer::new(self)
    }

    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        rpc::authorize(request, &[sirms_proto::cluster_tls::Role::Admin], &self.token)
    }
}

#[tonic::async_trait]
impl Import for ImportService {
    async fn open_mailbox(&self, request: Request<ImportMailbox>) -> Result<Response<ImportedMailbox>, Status> {
        self.check(&request)?;
        let ImportMailbox { user, mailbox, uid_validity } = request.into_inner();
        match self.store.create_mailbox(&user, &mailbox, None).await {
            Ok(()) | Err(StoreError::MailboxExists) => {}
            Err(e) => return Err(e.into()),
        }
        if uid_validity != 0 {
            self.store.adopt_uid_validity(&user, &mailbox, uid_validity).await?;
        }
        let (status, metas) = self.store.messages(&user, &mailbox).await?;
        let messages = metas
            .into_iter()
            .map(|m| ImportedMeta { uid: m.uid, size: m.size, internal_date: m.internal_date })
            .collect();
        Ok(Response::new(ImportedMailbox { uid_validity: status.uid_validity, uid_next: status.uid_next, messages }))
    }

    async fn message(&self, request: Request<Streaming<ImportChunk>>) -> Result<Response<ImportedMessage>, Status> {
        self.check(&request)?;
        let mut chunks = request.into_inner();
        let Some(import_chunk::Part::Header(header)) = chunks.message().await?.and_then(|c| c.part) else {
            return Err(Status::invalid_argument("an import must start with its header"));
        };
        let bytes = body::receive(&mut chunks, header.size, data).await?;
        if !header.same_as.is_empty() {
            let uids = UidSet::from_ranges(header.same_as.iter().take(MAX_SAME_AS).map(|&uid| (uid, uid)));
            for found in self.store.fetch(&header.user, &header.mailbox, &uids, BodyPart::Full).await? {
                if found.body.as_ref() == Some(&bytes) {
                    return Ok(Response::new(ImportedMessage { uid: found.meta.uid, duplicate: true }));
                }
            }
        }
        let message = NewMessage {
            bytes,
            flags: Flags::new(SystemFlags::from_bits(header.system_flags), header.keywords),
            internal_date: (header.internal_date != 0).then_some(header.internal_date),
            idempotency_key: None,
            keep_uid: (header.keep_uid != 0).then_some(header.keep_uid),
        };
        let appended = self.store.append(&header.user, &header.mailbox, message).await?;
        Ok(Response::new(ImportedMessage { uid: appended.uid, duplicate: false }))
    }

    async fn put_user_file(&self, request: Request<ImportUserFile>) -> Result<Response<Ack>, Status> {
        self.check(&request)?;
        let ImportUserFile { user, name, content } = request.into_inner();
        // The store checks the name and the size, as for a ManageSieve upload.
        self.store.put_user_file(&user, &name, Some(content)).await?;
        Ok(Response::new(Ack {}))
    }
}

fn data(chunk: ImportChunk) -> Option<Bytes> {
    match chunk.part {
        Some(import_chunk::Part::Data(data)) => Some(data),
        _ => None,
    }
}
