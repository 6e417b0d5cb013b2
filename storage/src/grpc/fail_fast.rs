//! `FailFast`: the layer under every `RemoteStore` call that stops callers of a peer that
//! stopped answering from each waiting out the same failure in turn.
//!
//! Without it, calls to a store that died queue on the channel, and each waits for its own
//! connection attempt (2 s against a vanished host), one after another: the eighth call
//! queued waited 16 s, the slowest session in a docker failover 25 s, past the failover
//! that would have sent it elsewhere (docs/STORAGE.md, "Tested"). With it, a transport
//! failure — a connection refused or timed out, one given up for unanswered pings — fails
//! every call then waiting on the channel at once, with the same error. A call that merely
//! ran out its own time fails alone. Calls made afterwards try the peer again, so one that
//! restarted is used at once.
//!
//! Only the wait for the reply's head is covered: a reply that is streaming (a fetch, a
//! watch) already reached a live peer, and the connection's pings end it if the peer goes.

use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::watch;
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::{Status, TimeoutExpired};

/// What one peer's calls have come to, shared by every clone of its channel.
#[derive(Debug)]
pub struct PeerHealth {
    /// Bumped on every transport failure: the calls then in flight give up.
    failures: watch::Sender<u64>,
    /// Names the peer in errors.
    peer: String,
}

impl PeerHealth {
    /// A peer with no failure seen.
    pub fn new(peer: impl Into<String>) -> PeerHealth {
        PeerHealth { failures: watch::Sender::new(0), peer: peer.into() }
    }

    /// Notes a transport failure: every call in flight gives up.
    fn failed(&self) {
        self.failures.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Whether `error` says the peer cannot be reached (not that one call ran out of time).
fn unreachable(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.is::<TimeoutExpired>() {
            return false;
        }
        source = e.source();
    }
    true
}

/// The layer itself: wraps a channel, sharing one [`PeerHealth`] across clones.
#[derive(Clone, Debug)]
pub struct FailFast<S> {
    inner: S,
    health: Arc<PeerHealth>,
}

impl<S> FailFast<S> {
    /// `inner` guarded by `health`.
    pub fn new(inner: S, health: Arc<PeerHealth>) -> FailFast<S> {
        FailFast { inner, health }
    }
}

impl<S, B> Service<http::Request<B>> for FailFast<S>
where
    S: Service<http::Request<B>> + Send,
    S::Future: Send + 'static,
    S::Error: Into<StdError>,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = StdError;
    type Future = BoxFuture<S::Response, StdError>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StdError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let health = self.health.clone();
        // Subscribed before the call starts, so every failure from here on is seen.
        let mut failures = health.failures.subscribe();
        let call = self.inner.call(request);
        Box::pin(async move {
            tokio::select! {
                reply = call => reply.map_err(|e| {
                    let e: StdError = e.into();
                    if unreachable(&*e) {
                        health.failed();
                    }
                    e
                }),
                _ = failures.changed() => {
                    let why = format!("store {} did not answer another call (the connection failed)", health.peer);
                    Err(Status::unavailable(why).into())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_failure_reaches_calls_in_flight() {
        let health = PeerHealth::new("n2");
        let in_flight = health.failures.subscribe();
        assert!(!in_flight.has_changed().expect("sender alive"));
        health.failed();
        assert!(in_flight.has_changed().expect("sender alive"));
    }

    #[test]
    fn a_call_that_ran_out_of_time_does_not_fail_the_others() {
        let timeout: StdError = Box::new(TimeoutExpired(()));
        assert!(!unreachable(&*timeout));
        let refused: StdError = Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(unreachable(&*refused));
    }

    /// A peer that takes no connection, as a host that vanished: a listener whose accept
    /// queue is full drops every new SYN, so each connection attempt runs out its time.
    async fn vanished_peer() -> (std::net::SocketAddr, Vec<tokio::net::TcpStream>, tokio::net::TcpListener) {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let listener = socket.listen(0).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let mut fillers = Vec::new();
        // A backlog of 0 still queues one connection; a few more make sure it is full.
        for _ in 0..4 {
            match tokio::time::timeout(Duration::from_millis(300), tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => fillers.push(stream),
                _ => break,
            }
        }
        (addr, fillers, listener)
    }

    #[tokio::test]
    async fn calls_queued_for_a_vanished_peer_fail_with_the_first_attempt_not_one_after_another() {
        use crate::store::MailStore;
        let (addr, _fillers, _listener) = vanished_peer().await;
        let store = crate::RemoteStore::connect(&format!("http://{addr}"), "token").expect("client");
        let started = Instant::now();
        let calls: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.status(&format!("u{i}"), "INBOX").await })
            })
            .collect();
        for call in calls {
            let result = call.await.expect("joined");
            assert!(matches!(result, Err(crate::StoreError::Unavailable(_))), "{result:?}");
        }
        // One connection attempt (2 s) for all eight; one after another they took 16 s.
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "eight calls to a vanished peer took {took:?}");
    }
}
