//! `FailFast`: the layer under every `RemoteStore` call (and a mail node's spool-copy calls)
//! that stops callers of a peer that stopped answering from each waiting out the same failure.
//!
//! Without it, calls to a store that died queue on the channel, and each waits for its own
//! connection attempt (2 s against a vanished host), one after another: the eighth call
//! queued waited 16 s, the slowest session in a docker failover 25 s, past the failover
//! that would have sent it elsewhere (docs/STORAGE.md, "Tested"). With it:
//!
//! - a transport failure — a connection refused or timed out, one given up for unanswered
//!   pings — fails every call then waiting on the channel at once, with the same error (a call
//!   that merely ran out its own time fails alone);
//! - a failure that took long (the peer did not answer at all: a vanished host, a frozen
//!   process) also fails the calls of the next [`HOLD`] at once, but one, which tries the peer
//!   again. A session making several calls in a row thus waits for one failure, not one each.
//!   A refusal is quick, so it holds nothing back: a peer that restarted is used at once.
//!
//! One [`PeerHealth`] per peer address is shared by every channel to it in the process, so
//! a failure seen by one kind of call spares the others the wait.
//!
//! Only the wait for the reply's head is covered: a reply that is streaming (a fetch, a
//! watch) already reached a live peer, and the connection's pings end it if the peer goes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use sirms_proto::cluster_tls::ClusterEndpoint;
use tokio::sync::watch;
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::transport::Channel;
use tonic::{Status, TimeoutExpired};

/// How long establishing a connection may take before the call fails as unavailable. Peers
/// are on the cluster's own network, where a live one answers a SYN in a millisecond; 2 s
/// still allows one lost SYN (resent after 1 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection may be silent before it is pinged (idle or not), and how long the
/// ping may go unanswered before the connection is given up with every call on it. A peer
/// that vanished without closing the connection — cut off, frozen, killed with the reset
/// lost — thus fails its calls within about 4 s instead of holding them (a write waiting on
/// its replica, a watch) until it is back or a caller's own timeout fires. A live but busy
/// peer answers a ping from its connection task, without waiting for the disk.
const PING_AFTER: Duration = Duration::from_secs(1);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// A channel to the cluster peer at `address` (reached through `endpoint`), as every caller
/// of peers makes one: connecting lazily within [`CONNECT_TIMEOUT`], pinging the connection,
/// guarded by the peer's shared [`PeerHealth`].
pub fn peer_channel(endpoint: ClusterEndpoint, address: &str) -> FailFast<Channel> {
    let channel = endpoint
        .configure(|e| {
            e.connect_timeout(CONNECT_TIMEOUT)
                // Pings even without calls in flight, so a watch on a vanished peer ends.
                .http2_keep_alive_interval(PING_AFTER)
                .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                .keep_alive_while_idle(true)
        })
        .connect_lazy();
    FailFast::new(channel, PeerHealth::shared(address))
}

/// How long after a slow transport failure calls fail without trying the peer.
pub const HOLD: Duration = Duration::from_secs(3);
/// A failure that took at least this long was a peer not answering, not one refusing.
const SLOW: Duration = Duration::from_millis(500);

/// What one peer's calls have come to, shared by every channel to it.
#[derive(Debug)]
pub struct PeerHealth {
    /// Bumped on every transport failure: the calls then in flight give up.
    failures: watch::Sender<u64>,
    /// Since when calls fail without trying (a slow failure, or a retry under way); `None`:
    /// calls go to the peer.
    held_since: Mutex<Option<Instant>>,
    /// Names the peer in errors.
    peer: String,
}

/// What a call may do now.
#[derive(Debug, PartialEq, Eq)]
enum Admission {
    Try,
    Refuse,
}

impl PeerHealth {
    /// A peer with no failure seen, on its own (tests; see [`PeerHealth::shared`]).
    pub fn new(peer: impl Into<String>) -> PeerHealth {
        PeerHealth { failures: watch::Sender::new(0), held_since: Mutex::new(None), peer: peer.into() }
    }

    /// The health of the peer at `address`, shared by every channel to it in this process.
    pub fn shared(address: &str) -> Arc<PeerHealth> {
        static PEERS: OnceLock<Mutex<HashMap<String, Weak<PeerHealth>>>> = OnceLock::new();
        let mut peers = PEERS.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(health) = peers.get(address).and_then(Weak::upgrade) {
            return health;
        }
        peers.retain(|_, health| health.strong_count() > 0);
        let health = Arc::new(PeerHealth::new(address));
        peers.insert(address.to_string(), Arc::downgrade(&health));
        health
    }

    /// Whether a call may go to the peer at `now`. After [`HOLD`], the one call that is told
    /// to try restarts the hold, so the others keep failing at once while it finds out.
    fn admit(&self, now: Instant) -> Admission {
        let mut held_since = self.held_since.lock().unwrap_or_else(|p| p.into_inner());
        match *held_since {
            Some(since) if now.saturating_duration_since(since) < HOLD => Admission::Refuse,
            Some(_) => {
                *held_since = Some(now);
                Admission::Try
            }
            None => Admission::Try,
        }
    }

    /// Notes that the peer answered: calls go to it again.
    fn answered(&self) {
        *self.held_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Notes a transport failure at `now` of a call that took `took`: every call in flight
    /// gives up, and a slow failure holds new calls back for [`HOLD`].
    fn failed(&self, now: Instant, took: Duration) {
        if took >= SLOW {
            *self.held_since.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
        }
        self.failures.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn unavailable(&self, why: &str) -> Status {
        Status::unavailable(format!("peer {} {why}", self.peer))
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
        if health.admit(Instant::now()) == Admission::Refuse {
            let refused = health.unavailable(&format!("did not answer lately; tried again every {HOLD:?}"));
            return Box::pin(async move { Err(refused.into()) });
        }
        // Subscribed before the call starts, so every failure from here on is seen.
        let mut failures = health.failures.subscribe();
        let started = Instant::now();
        let call = self.inner.call(request);
        Box::pin(async move {
            tokio::select! {
                reply = call => match reply {
                    Ok(reply) => {
                        health.answered();
                        Ok(reply)
                    }
                    Err(e) => {
                        let e: StdError = e.into();
                        if unreachable(&*e) {
                            health.failed(Instant::now(), started.elapsed());
                        }
                        Err(e)
                    }
                },
                _ = failures.changed() => Err(health.unavailable("stopped answering another call").into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_reaches_calls_in_flight() {
        let health = PeerHealth::new("n2");
        let in_flight = health.failures.subscribe();
        assert!(!in_flight.has_changed().expect("sender alive"));
        health.failed(Instant::now(), Duration::ZERO);
        assert!(in_flight.has_changed().expect("sender alive"));
    }

    #[test]
    fn a_slow_failure_holds_calls_back_until_one_retry_a_quick_one_does_not() {
        let health = PeerHealth::new("n2");
        let t0 = Instant::now();
        health.failed(t0, SLOW / 2);
        assert_eq!(health.admit(t0), Admission::Try, "a refusal is quick: a restarted peer is used at once");
        health.failed(t0, SLOW);
        assert_eq!(health.admit(t0 + HOLD / 2), Admission::Refuse);
        assert_eq!(health.admit(t0 + HOLD), Admission::Try, "one call tries again");
        assert_eq!(health.admit(t0 + HOLD + HOLD / 2), Admission::Refuse, "the others fail while it does");
        health.answered();
        assert_eq!(health.admit(t0 + HOLD + HOLD / 2), Admission::Try);
    }

    #[test]
    fn channels_to_one_address_share_its_health() {
        let (a, b) = (PeerHealth::shared("http://10.0.0.7:7000"), PeerHealth::shared("http://10.0.0.7:7000"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &PeerHealth::shared("http://10.0.0.8:7000")));
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
        // The failure was slow: the next call fails at once.
        let again = Instant::now();
        assert!(store.status("u0", "INBOX").await.is_err());
        assert!(again.elapsed() < Duration::from_millis(500), "took {:?}", again.elapsed());
    }
}
