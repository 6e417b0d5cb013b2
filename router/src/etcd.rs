//! A small etcd v3 client over the generated API in `sirms_proto::etcd`: ranges and
//! transactions, prefix watches. Every call goes to the endpoint that answered last and moves
//! on to the next one when that endpoint is down or has lost its cluster's leader (calls
//! carry etcd's "require leader" mark, so a member cut off from the majority answers at once
//! instead of waiting), so a cluster with one member of three down is not noticed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sirms_proto::etcd::kv_client::KvClient;
use sirms_proto::etcd::watch_client::WatchClient;
use sirms_proto::etcd::watch_request::RequestUnion;
use sirms_proto::etcd::{
    KeyValue, RangeRequest, TxnRequest, TxnResponse, WatchCreateRequest, WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status, Streaming};

/// What a call to etcd can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("invalid etcd endpoint {0:?}")]
    Endpoint(String),
    /// No endpoint answered with a leader behind it: the cluster is down or has no quorum.
    #[error("no etcd member answered with a leader ({0})")]
    Unreachable(String),
    #[error("etcd refused the request: {0}")]
    Refused(Status),
}

/// An etcd cluster, reached through any of its members.
pub struct EtcdClient {
    channels: Vec<(String, Channel)>,
    /// The endpoint that answered last: tried first.
    preferred: AtomicUsize,
    timeout: Duration,
}

/// The key range of every key under `prefix`: etcd's `[prefix, prefix + 1)`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): every key from `prefix` on.
    vec![0]
}

/// Whether another member may answer where this one failed.
fn try_elsewhere(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled)
}

/// A request with etcd's "fail unless there is a leader" mark.
fn request<T>(body: T) -> Request<T> {
    let mut request = Request::new(body);
    request.metadata_mut().insert("hasleader", tonic::metadata::MetadataValue::from_static("true"));
    request
}

/// A prefix watch: events as etcd sends them, one response per revision.
pub struct Watch {
    /// Dropping it would end the watch.
    _requests: mpsc::Sender<WatchRequest>,
    responses: Streaming<WatchResponse>,
}

impl Watch {
    /// The next response; `None` when etcd ended the stream.
    pub async fn next(&mut self) -> Result<Option<WatchResponse>, Status> {
        self.responses.message().await
    }
}

impl EtcdClient {
    /// A client of the members at `endpoints` (`host:port` or `http://host:port`); connects
    /// lazily, so etcd need not be up yet.
    pub fn new(endpoints: &[String], timeout: Duration) -> Result<EtcdClient, EtcdError> {
        let mut channels = Vec::new();
        for endpoint in endpoints {
            let uri = if endpoint.contains("://") { endpoint.clone() } else { format!("http://{endpoint}") };
            let channel = Endpoint::from_shared(uri)
                .map_err(|_| EtcdError::Endpoint(endpoint.clone()))?
                .connect_timeout(timeout)
                .connect_lazy();
            channels.push((endpoint.clone(), channel));
        }
        if channels.is_empty() {
            return Err(EtcdError::Endpoint(String::new()));
        }
        Ok(EtcdClient { channels, preferred: AtomicUsize::new(0), timeout })
    }

    /// The endpoints, for messages.
    pub fn endpoints(&self) -> String {
        self.channels.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>().join(", ")
    }

    /// Runs `call` on each member in turn, from the preferred one, until one answers.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, EtcdError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let first = self.preferred.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for i in 0..self.channels.len() {
            let index = (first + i) % self.channels.len();
            let (endpoint, channel) = &self.channels[index];
            let outcome = tokio::time::timeout(self.timeout, call(channel.clone())).await;
            match outcome {
                Ok(Ok(reply)) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(reply);
                }
                Ok(Err(status)) if !try_elsewhere(&status) => return Err(EtcdError::Refused(status)),
                Ok(Err(status)) => failures.push(format!("{endpoint}: {}", status.message())),
                Err(_) => failures.push(format!("{endpoint}: no answer in {:?}", self.timeout)),
            }
        }
        Err(EtcdError::Unreachable(failures.join("; ")))
    }

    /// Every key under `prefix`, with the revision they were read at.
    pub async fn range_prefix(&self, prefix: &[u8]) -> Result<(i64, Vec<KeyValue>), EtcdError> {
        let range =
            RangeRequest { key: prefix.to_vec().into(), range_end: prefix_end(prefix).into(), ..Default::default() };
        let reply = self
            .call(|channel| {
                let range = range.clone();
                async move { KvClient::new(channel).range(request(range)).await.map(|r| r.into_inner()) }
            })
            .await?;
        let revision = reply.header.map_or(0, |h| h.revision);
        Ok((revision, reply.kvs))
    }

    /// A transaction: its compares, then its success or failure operations, atomically.
    pub async fn txn(&self, txn: TxnRequest) -> Result<TxnResponse, EtcdError> {
        self.call(|channel| {
            let txn = txn.clone();
            async move { KvClient::new(channel).txn(request(txn)).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// Watches every key under `prefix` from `start_revision` on (0: from now).
    pub async fn watch_prefix(&self, prefix: &[u8], start_revision: i64) -> Result<Watch, EtcdError> {
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: prefix.to_vec().into(),
                range_end: prefix_end(prefix).into(),
                start_revision,
                ..Default::default()
            })),
        };
        self.call(|channel| {
            let create = create.clone();
            async move {
                let (requests, outgoing) = mpsc::channel(4);
                requests.send(create).await.map_err(|_| Status::cancelled("watch request dropped"))?;
                let responses = WatchClient::new(channel).watch(request(ReceiverStream::new(outgoing))).await?;
                Ok(Watch { _requests: requests, responses: responses.into_inner() })
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/sirms/"), b"/sirms0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
