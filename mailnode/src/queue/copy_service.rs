//! The SpoolCopies gRPC service: other nodes' spool entries kept here (see [`super::copies`]).
//! Served next to the Store service, to other mail nodes only.

use std::sync::Arc;

use sirms_proto::cluster::spool_copies_server::{SpoolCopies, SpoolCopiesServer};
use sirms_proto::cluster::{Ack, CopyList, CopyRef, Empty, IdList, Name, SpoolCopy};
use sirms_proto::cluster_tls::Role;
use tonic::{Request, Response, Status};

use super::copies::Copies;
use super::{QueuedEnvelope, rpc};

/// Largest message a peer may ask us to keep (the SMTP limit's order of magnitude).
const MAX_COPY_MESSAGE: usize = 256 * 1024 * 1024;

/// Copies of other nodes' spool entries, open to callers that present the cluster token.
pub struct CopyService {
    copies: Arc<Copies>,
    token: String,
}

impl CopyService {
    /// Serves `copies`.
    pub fn new(copies: Arc<Copies>, token: String) -> CopyService {
        CopyService { copies, token }
    }

    /// The tonic service.
    pub fn into_server(self) -> SpoolCopiesServer<CopyService> {
        SpoolCopiesServer::new(self).max_decoding_message_size(MAX_COPY_MESSAGE + 64 * 1024)
    }

    /// Over mutual TLS only another mail node may hand us its mail.
    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        rpc::authorize(request, &[Role::Node], &self.token)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Copies) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        let copies = self.copies.clone();
        let done =
            tokio::task::spawn_blocking(move || f(&copies)).await.map_err(|e| Status::internal(e.to_string()))?;
        done.map_err(|e| rpc::status(e, "no such copy", "spool copies"))
    }
}

#[tonic::async_trait]
impl SpoolCopies for CopyService {
    async fn keep(&self, request: Request<SpoolCopy>) -> Result<Response<Ack>, Status> {
        self.check(&request)?;
        let copy = request.into_inner();
        let envelope = QueuedEnvelope::parse(&copy.id, &copy.envelope)
            .ok_or_else(|| Status::invalid_argument("unreadable envelope"))?;
        let message = (!copy.envelope_only).then_some(copy.message);
        self.blocking(move |copies| copies.keep(&copy.origin, &envelope, message.as_deref())).await?;
        Ok(Response::new(Ack {}))
    }

    async fn forget(&self, request: Request<CopyRef>) -> Result<Response<Ack>, Status> {
        self.check(&request)?;
        let CopyRef { origin, id } = request.into_inner();
        self.blocking(move |copies| copies.forget(&origin, &id)).await?;
        Ok(Response::new(Ack {}))
    }

    async fn adopted(&self, request: Request<Name>) -> Result<Response<IdList>, Status> {
        self.check(&request)?;
        let origin = request.into_inner().name;
        let ids = self.blocking(move |copies| copies.adopted(&origin)).await?;
        Ok(Response::new(IdList { ids }))
    }

    async fn forget_adopted(&self, request: Request<CopyList>) -> Result<Response<Ack>, Status> {
        self.check(&request)?;
        let CopyList { origin, ids } = request.into_inner();
        self.blocking(move |copies| copies.clear_adopted(&origin, &ids)).await?;
        Ok(Response::new(Ack {}))
    }

    async fn alive(&self, request: Request<Empty>) -> Result<Response<Ack>, Status> {
        self.check(&request)?;
        Ok(Response::new(Ack {}))
    }
}
