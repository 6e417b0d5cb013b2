//! A small etcd v3 client over the generated API in `sirms_proto::etcd`: ranges and
//! transactions, prefix watches. Every call goes to the endpoint that answered last and moves
//! on to the next one when that endpoint is down or has lost its cluster's leader (calls
//! carry etcd's "require leader" mark, so a member cut off from the majority answers at once
//! instead of waiting), so a cluster with one member of three down is not noticed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sirms_proto::etcd::kv_client::KvClient;
use sirms_proto::etcd::lease_client::LeaseClient;
use sirms_proto::etcd::watch_client::WatchClient;
use sirms_proto::etcd::watch_request::RequestUnion;
use sirms_proto::etcd::{
    Event, KeyValue, LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest, RangeRequest, TxnRequest, TxnResponse,
    WatchCreateRequest, WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status, Streaming};

/// The pause between two rounds over the members.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// How long reads and transactions go on over the members while none has a leader. After the
/// leader's death etcd elects another within its election timeout (1 s by default) plus a
/// round of votes — on a loaded machine, seen at over 2 s: an admin write made then waits for
/// it instead of failing. Leases and watches keep the shorter budget of twice the timeout, so
/// a node's heartbeat moves on to another router in time.
const ELECTION_WAIT: Duration = Duration::from_secs(5);

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
        EtcdClient::with_tls(endpoints, timeout, None)
    }

    /// The same over TLS with `tls` (a client certificate, and the CA etcd's certificates are
    /// checked against) when there is one; the endpoints are then `https://`.
    pub fn with_tls(
        endpoints: &[String],
        timeout: Duration,
        tls: Option<ClientTlsConfig>,
    ) -> Result<EtcdClient, EtcdError> {
        let mut channels = Vec::new();
        let scheme = if tls.is_some() { "https" } else { "http" };
        for endpoint in endpoints {
            let uri = match endpoint.split_once("://") {
                Some((_, rest)) => format!("{scheme}://{rest}"),
                None => format!("{scheme}://{endpoint}"),
            };
            let mut channel = Endpoint::from_shared(uri).map_err(|_| EtcdError::Endpoint(endpoint.clone()))?;
            if let Some(tls) = &tls {
                channel = channel.tls_config(tls.clone()).map_err(|_| EtcdError::Endpoint(endpoint.clone()))?;
            }
            let channel = channel.connect_timeout(timeout).connect_lazy();
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

    /// Runs `call` on each member in turn, from the preferred one, until one answers. When
    /// none does, tries again for up to twice the timeout: a member just lost, or its leader
    /// with it, is covered by an election that takes about a second.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, EtcdError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.call_for(self.timeout * 2, call).await
    }

    /// [`Self::call`], going on through an election (see [`ELECTION_WAIT`]).
    async fn call_through_election<T, F, Fut>(&self, call: F) -> Result<T, EtcdError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.call_for((self.timeout * 2).max(ELECTION_WAIT), call).await
    }

    /// Tries the members in turn, round after round, for at most `budget`.
    async fn call_for<T, F, Fut>(&self, budget: Duration, call: F) -> Result<T, EtcdError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline = tokio::time::Instant::now() + budget;
        loop {
            let first = self.preferred.load(Ordering::Relaxed);
            let mut failures = Vec::new();
            for i in 0..self.channels.len() {
                let index = (first + i) % self.channels.len();
                let (endpoint, channel) = &self.channels[index];
                match tokio::time::timeout(self.timeout, call(channel.clone())).await {
                    Ok(Ok(reply)) => {
                        self.preferred.store(index, Ordering::Relaxed);
                        return Ok(reply);
                    }
                    Ok(Err(status)) if !try_elsewhere(&status) => return Err(EtcdError::Refused(status)),
                    Ok(Err(status)) => failures.push(format!("{endpoint}: {}", status.message())),
                    Err(_) => failures.push(format!("{endpoint}: no answer in {:?}", self.timeout)),
                }
            }
            if tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
                return Err(EtcdError::Unreachable(failures.join("; ")));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// The value of `key`, if it exists.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EtcdError> {
        let (_, kvs) = self.range(RangeRequest { key: key.to_vec().into(), ..Default::default() }).await?;
        Ok(kvs.into_iter().next().map(|kv| kv.value.to_vec()))
    }

    /// Every key under `prefix`, with the revision they were read at.
    pub async fn range_prefix(&self, prefix: &[u8]) -> Result<(i64, Vec<KeyValue>), EtcdError> {
        self.range(RangeRequest {
            key: prefix.to_vec().into(),
            range_end: prefix_end(prefix).into(),
            ..Default::default()
        })
        .await
    }

    /// At most `limit` keys from `from` (included) up to `end` (excluded), and whether more
    /// follow: for reading a prefix too large for one answer.
    pub async fn range_page(&self, from: &[u8], end: &[u8], limit: i64) -> Result<(Vec<KeyValue>, bool), EtcdError> {
        let range =
            RangeRequest { key: from.to_vec().into(), range_end: end.to_vec().into(), limit, ..Default::default() };
        let reply = self
            .call_through_election(|channel| {
                let range = range.clone();
                async move { KvClient::new(channel).range(request(range)).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok((reply.kvs, reply.more))
    }

    /// A range read, with the revision it was read at.
    async fn range(&self, range: RangeRequest) -> Result<(i64, Vec<KeyValue>), EtcdError> {
        let reply = self
            .call_through_election(|channel| {
                let range = range.clone();
                async move { KvClient::new(channel).range(request(range)).await.map(|r| r.into_inner()) }
            })
            .await?;
        let revision = reply.header.map_or(0, |h| h.revision);
        Ok((revision, reply.kvs))
    }

    /// A transaction: its compares, then its success or failure operations, atomically.
    pub async fn txn(&self, txn: TxnRequest) -> Result<TxnResponse, EtcdError> {
        self.call_through_election(|channel| {
            let txn = txn.clone();
            async move { KvClient::new(channel).txn(request(txn)).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// Writes `key` = `value`, attached to `lease` (0: none).
    pub async fn put(&self, key: &[u8], value: &[u8], lease: i64) -> Result<(), EtcdError> {
        let put = PutRequest { key: key.to_vec().into(), value: value.to_vec().into(), lease, ..Default::default() };
        self.call(|channel| {
            let put = put.clone();
            async move { KvClient::new(channel).put(request(put)).await.map(|_| ()) }
        })
        .await
    }

    /// A new lease of `ttl` seconds; its id.
    pub async fn lease_grant(&self, ttl: i64) -> Result<i64, EtcdError> {
        let reply = self
            .call(|channel| async move {
                LeaseClient::new(channel)
                    .lease_grant(request(LeaseGrantRequest { ttl, id: 0 }))
                    .await
                    .map(|r| r.into_inner())
            })
            .await?;
        if reply.error.is_empty() { Ok(reply.id) } else { Err(EtcdError::Refused(Status::internal(reply.error))) }
    }

    /// Renews lease `id` once; its remaining seconds, 0 if it has expired.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64, EtcdError> {
        self.call(|channel| async move {
            let once = tokio_stream::once(LeaseKeepAliveRequest { id });
            let mut replies = LeaseClient::new(channel).lease_keep_alive(request(once)).await?.into_inner();
            let reply = replies.message().await?.ok_or_else(|| Status::unavailable("keep-alive stream ended"))?;
            Ok(reply.ttl)
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

/// What keeps a copy of a prefix: told the whole prefix when following starts (again), then
/// the events of each revision in order.
pub trait Follower: Send {
    /// The whole prefix as it is now, replacing whatever the copy held.
    fn reset(&mut self, kvs: &[KeyValue]);
    /// The changes of one revision.
    fn events(&mut self, events: &[Event]);
}

/// Longest pause between two attempts to read or follow a prefix: short, since a copy that
/// lags after etcd comes back serves stale routing and listings until it follows again.
const MAX_FOLLOW_BACKOFF: Duration = Duration::from_millis(500);

/// Keeps `follower` equal to what etcd holds under `prefix`, for ever: a whole read, then a
/// watch from the next revision; again from a whole read whenever the watch breaks (etcd
/// away, a member lost, history compacted).
pub async fn follow_prefix(client: std::sync::Arc<EtcdClient>, prefix: Vec<u8>, mut follower: impl Follower) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match follow_once(&client, &prefix, &mut follower).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(error = %e, etcd = %client.endpoints(), prefix = %String::from_utf8_lossy(&prefix), "following etcd");
                backoff = (backoff * 2).min(MAX_FOLLOW_BACKOFF);
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

async fn follow_once(client: &EtcdClient, prefix: &[u8], follower: &mut impl Follower) -> Result<(), EtcdError> {
    let (revision, kvs) = client.range_prefix(prefix).await?;
    follower.reset(&kvs);
    let mut watch = client.watch_prefix(prefix, revision + 1).await?;
    loop {
        let response = match watch.next().await {
            Ok(Some(response)) => response,
            Ok(None) => return Ok(()),
            Err(status) => return Err(EtcdError::Refused(status)),
        };
        if response.canceled || response.compact_revision > 0 {
            tracing::info!(reason = %response.cancel_reason, "etcd ended a watch; reading the prefix again");
            return Ok(());
        }
        if !response.events.is_empty() {
            follower.events(&response.events);
        }
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
