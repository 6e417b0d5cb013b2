//! The NodeAdmin gRPC service: this node's queue as `sirms ctl queue` sees it. Served next
//! to the Store service, behind the same cluster token.

use std::sync::Arc;

use sirms_proto::cluster::node_admin_server::{NodeAdmin, NodeAdminServer};
use sirms_proto::cluster::{Ack, Empty, Name, QueueList, QueuedMessage};
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use super::{QueuedEnvelope, Spool, rpc};

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
        rpc::authorize(request, &[sirms_proto::cluster_tls::Role::Admin], &self.token)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Spool) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        self.spool.run(f).await.map_err(|e| rpc::status(e, "no such queued message", "queue"))
    }
}

/// Makes every waiting message due now (blocking); the number changed. An entry the runner
/// holds is being attempted right now: flushing it is moot, and writing it would bring back
/// the recipients the runner is finishing (duplicates), so it is left alone.
fn flush(spool: &Spool) -> std::io::Result<usize> {
    let mut n = 0;
    for env in spool.list()?.envelopes.into_iter().filter(|e| e.next_attempt > 0) {
        let Some(claim) = spool.claim(&env.id) else { continue };
        // The listing may predate the runner's last write: change the envelope as it is now.
        let Some(mut env) = spool.envelope(&env.id)? else { continue };
        env.next_attempt = 0;
        spool.update(&claim, &env)?;
        n += 1;
    }
    Ok(n)
}

/// Removes one message for the admin (blocking); refused as busy while the runner holds it.
fn remove(spool: &Spool, id: &str) -> std::io::Result<()> {
    let claim = spool.claim(id).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::ResourceBusy, "the message is being delivered; try again")
    })?;
    spool.remove(&claim)
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
                let listing = spool.list()?;
                for bad in &listing.unreadable {
                    tracing::error!(id = %bad.id, reason = %bad.reason, "unreadable queue envelope: its message is stuck");
                }
                Ok(listing
                    .envelopes
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
        let flushed = self.blocking(flush).await?;
        tracing::info!(flushed, "queue flushed by the admin");
        self.wake.notify_one();
        Ok(Response::new(Ack {}))
    }

    async fn remove_queued(&self, request: Request<Name>) -> Result<Response<Ack>, Status> {
        self.check(&request)?;
        let id = request.into_inner().name;
        let removed = id.clone();
        self.blocking(move |spool| remove(spool, &removed)).await?;
        tracing::info!(%id, "queued message removed by the admin");
        Ok(Response::new(Ack {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(id: &str) -> QueuedEnvelope {
        QueuedEnvelope {
            id: id.into(),
            from: "a@b.test".into(),
            local: vec!["u@example.test".into(), "v@example.test".into()],
            next_attempt: i64::MAX,
            ..Default::default()
        }
    }

    /// Issue 28: flush leaves an entry the runner holds alone, so the runner's write (here: one
    /// recipient done) is not undone by flush's older copy; it flushes the others.
    #[test]
    fn flush_does_not_rewrite_an_entry_being_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.enqueue(&waiting("busy.1"), b"m").unwrap();
        spool.enqueue(&waiting("idle.1"), b"m").unwrap();
        let runner = spool.claim("busy.1").unwrap();
        let delivered = QueuedEnvelope { local: vec!["v@example.test".into()], ..waiting("busy.1") };
        assert_eq!(flush(&spool).unwrap(), 1);
        spool.update(&runner, &delivered).unwrap();
        drop(runner);
        assert_eq!(spool.envelope("busy.1").unwrap(), Some(delivered));
        assert_eq!(spool.envelope("idle.1").unwrap().unwrap().next_attempt, 0);
        // Free again, it is flushed like any other.
        assert_eq!(flush(&spool).unwrap(), 1);
        assert_eq!(spool.envelope("busy.1").unwrap().unwrap().next_attempt, 0);
    }

    #[test]
    fn remove_waits_for_the_runner() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.enqueue(&waiting("busy.1"), b"m").unwrap();
        let runner = spool.claim("busy.1").unwrap();
        assert_eq!(remove(&spool, "busy.1").unwrap_err().kind(), std::io::ErrorKind::ResourceBusy);
        drop(runner);
        remove(&spool, "busy.1").unwrap();
        assert_eq!(spool.list().unwrap().envelopes, vec![]);
    }
}
