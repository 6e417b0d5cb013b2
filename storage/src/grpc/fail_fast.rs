//! `FailFast`: the layer under every `RemoteStore` call that stops callers of a peer that
//! stopped answering from each waiting out the same failure.
//!
//! Without it, calls to a store that died queue on the channel: each waits for its own
//! connection attempt (2 s against a vanished host), one after another, so the tenth session
//! of a node's users that died waits 20 s, past the failover that would have sent it
//! elsewhere (docs/STORAGE.md, "Tested"). With it, the first transport failure — a refused
//! or timed-out connection, a connection given up for unanswered pings — fails every call
//! then waiting on the channel at once, and calls in the next [`HOLD`] fail at once too,
//! except one that tries the peer again. An answer of any kind (an error included) closes it.
//!
//! Only the wait for the reply's head is covered: a reply that is streaming (a fetch, a
//! watch) already reached a live peer, and the connection's pings end it if the peer goes.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tonic::Status;
use tonic::codegen::{BoxFuture, Service, StdError, http};

/// How long after a transport failure calls fail without trying the peer.
pub const HOLD: Duration = Duration::from_secs(3);

/// What one peer's calls have come to lately, shared by every clone of its channel.
#[derive(Debug)]
pub struct PeerHealth {
    /// When a call last failed in transport (or the last retry began); `None`: answering.
    failed_at: Mutex<Option<Instant>>,
    /// Bumped on every transport failure: calls in flight see it and give up.
    failures: watch::Sender<u64>,
    /// Names the peer in errors.
    peer: String,
}

/// What a call may do now.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Go to the peer.
    Try,
    /// Fail now: the peer failed less than [`HOLD`] ago, or another call is retrying it.
    Refuse,
}

impl PeerHealth {
    /// A peer not known to have failed.
    pub fn new(peer: impl Into<String>) -> PeerHealth {
        PeerHealth { failed_at: Mutex::new(None), failures: watch::Sender::new(0), peer: peer.into() }
    }

    /// Whether a call may go to the peer at `now`. After [`HOLD`], the one call that is told
    /// to try restarts the hold, so the others keep failing fast while it finds out.
    pub fn admit(&self, now: Instant) -> Admission {
        let mut failed_at = self.failed_at.lock().unwrap_or_else(|p| p.into_inner());
        match *failed_at {
            Some(at) if now.saturating_duration_since(at) < HOLD => Admission::Refuse,
            Some(_) => {
                *failed_at = Some(now);
                Admission::Try
            }
            None => Admission::Try,
        }
    }

    /// Notes that the peer answered: calls go to it again.
    pub fn answered(&self) {
        *self.failed_at.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Notes a transport failure at `now`: calls in flight give up, new ones fail for [`HOLD`].
    pub fn failed(&self, now: Instant) {
        *self.failed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
        self.failures.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The error a refused or abandoned call gets.
    fn unavailable(&self, why: &str) -> Status {
        Status::unavailable(format!("store {} {why}; calls to it fail for {HOLD:?} after that", self.peer))
    }
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
        if health.admit(Instant::now()) == Admission::Refuse {
            return Box::pin(async move { Err(health.unavailable("did not answer lately").into()) });
        }
        // Subscribed before the call starts, so a failure from here on is seen.
        let mut failures = health.failures.subscribe();
        let call = self.inner.call(request);
        Box::pin(async move {
            tokio::select! {
                reply = call => {
                    match &reply {
                        Ok(_) => health.answered(),
                        Err(_) => health.failed(Instant::now()),
                    }
                    reply.map_err(Into::into)
                }
                _ = failures.changed() => Err(health.unavailable("stopped answering another call").into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_peer_is_refused_until_the_hold_passes_then_tried_by_one_call() {
        let health = PeerHealth::new("n2");
        let t0 = Instant::now();
        assert_eq!(health.admit(t0), Admission::Try, "a peer never failed is tried");
        health.failed(t0);
        assert_eq!(health.admit(t0 + HOLD / 2), Admission::Refuse);
        assert_eq!(health.admit(t0 + HOLD), Admission::Try, "one call tries again");
        assert_eq!(health.admit(t0 + HOLD + HOLD / 2), Admission::Refuse, "the others fail while it does");
        health.answered();
        assert_eq!(health.admit(t0 + HOLD + HOLD / 2), Admission::Try);
    }

    #[test]
    fn a_failure_reaches_calls_in_flight() {
        let health = PeerHealth::new("n2");
        let in_flight = health.failures.subscribe();
        assert!(!in_flight.has_changed().expect("sender alive"));
        health.failed(Instant::now());
        assert!(in_flight.has_changed().expect("sender alive"));
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
        // Within the hold, the next call does not wait at all.
        let again = Instant::now();
        assert!(store.status("u0", "INBOX").await.is_err());
        assert!(again.elapsed() < Duration::from_millis(500), "took {:?}", again.elapsed());
    }
}
