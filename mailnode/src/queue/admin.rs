//! The NodeAdmin gRPC service: this node's queue as `sirms ctl queue` sees it. Served next
//! to the Store service, behind the same cluster token.

use std::sync::Arc;

use sirms_proto::cluster::node_admin_server::{NodeAdmin, NodeAdminServer};
use sirms_proto::cluster::{Ack, Empty, Name, QueueList, QueuedMessage};
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use super::{QueuedEnvelope, Spool};

/// The queue, open to callers that present the cluster token.
pub struct QueueAdmin {
    spool: Arc<Spool>,
    wake: Arc<Notify>,
    token: String,
}

impl QueueAdmin {
    /// Admin access to `spool`; `wake` is the queue runner's bell.
    pub fn new(spool: Arc<Spool>, wake: Arc<Notify>, token: String) -> QueueAdmin {
        QueueAdmin { spool, wake, token }
    }

    /// The tonic service.
    pub fn into_server(self) -> NodeAdminServer<QueueAdmin> {
        NodeAdminServer::new(self)
    }

    /// Over mutual TLS only the administrator may see or change a node's queue.
    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        sirms_proto::cluster_tls::authorize(request, &[sirms_proto::cluster_tls::Role::Admin])?;
        if sirms_proto::token::presented(request, &self.token) {
            Ok(())
        } else {
            Err(Status::unauthenticated("missing or wrong cluster token"))
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Spool) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        self.spool.run(f).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Status::not_found("no such queued message"),
            std::io::ErrorKind::InvalidInput => Status::invalid_argument(e.to_string()),
            _ => Status::internal(format!("queue: {e}")),
        })
    }
}

fn to_proto(env: QueuedEnvelope, size: u64) -> QueuedMessage {
    QueuedMessage {
        id: env.id,
        sender: env.from,
        local: env.local,
        remote: env.remote,
        attempts: env.attempts,
        next_attempt: env.next_attempt,
        created: env.created,
        errors: env.errors.into_iter().collect(),
        size,
    }
}

#[tonic::async_trait]
impl NodeAdmin for QueueAdmin {
    async fn list_queue(&self, request: Request<Empty>) -> Result<Response<QueueList>, Status> {
        self.check(&request)?;
        let messages = self
            .blocking(|spool| {
                let queued = spool.list()?;
                Ok(queued
                    .into_iter()
                    .map(|env| {
                        let size = spool.message_size(&env.id).unwrap_or(0);
                        to_proto(env, size)
                    })
                    .collect())
            })
            .await?;
        Ok(Response::new(QueueList { messages }))
    }

    async fn flush_queue(&self, request: Request<Empty>) -> Result<Response<Ack>, Status> {
        self.check(&request)?;
        let flushed = self
            .blocking(|spool| {
                let mut n = 0;
                for mut env in spool.list()?.into_iter().filter(|e| e.next_attempt > 0) {
                    env.next_attempt = 0;
                    spool.update(&env)?;
                    n += 1;
                }
                Ok(n)
            })
            .await?;
        tracing::info!(flushed, "queue flushed by the admin");
        self.wake.notify_one();
        Ok(Response::new(Ack {}))
    }

    async fn remove_queued(&self, request: Request<Name>) -> Result<Response<Ack>, Status> {
        self.check(&request)?;
        let id = request.into_inner().name;
        let removed = id.clone();
        self.blocking(move |spool| spool.remove(&removed)).await?;
        tracing::info!(%id, "queued message removed by the admin");
        Ok(Response::new(Ack {}))
    }
}
