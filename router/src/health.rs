//! Node health: periodic active probes with hysteresis, plus passive failures from the forwarder.
//!
//! A node that is up goes down after `fall` consecutive failed probes; a node that is down
//! comes back after `rise` consecutive successful ones, so one lost probe neither evicts a
//! node nor one lucky probe readmits a flapping one. A connect failure seen by the
//! forwarder ([`HealthMonitor::mark_failed`]) takes a node down at once: it is a real client
//! that just failed, and every further client sent there pays a failed attempt. The node
//! then needs `rise` successful probes to return.
//!
//! Readers get an immutable [`HealthSnapshot`] behind an `Arc` from a `tokio::sync::watch`
//! channel: reading is a clone of an `Arc`, and tests or the control plane can await changes.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::forward::{Backend, ConnectFailures};
use crate::node::NodeId;

/// Whether a node passes its health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// Passing.
    Up,
    /// Failing.
    Down,
}

impl Health {
    /// True for [`Health::Up`].
    pub fn is_up(self) -> bool {
        self == Self::Up
    }
}

/// How often and how strictly nodes are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Time between the starts of two check rounds.
    pub interval: Duration,
    /// Limit for one probe; a probe that takes longer failed.
    pub timeout: Duration,
    /// Consecutive failures that take an up node down.
    pub fall: u32,
    /// Consecutive successes that bring a down node up.
    pub rise: u32,
    /// Health of a newly added node before its first probe.
    pub initial: Health,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            fall: 3,
            rise: 2,
            // Optimistic: a new or restarted router serves at once, and a node that is in fact
            // dead is caught by the first client's failed connect (passive failure).
            initial: Health::Up,
        }
    }
}

/// One health check of one node.
pub trait Probe: Send + Sync + 'static {
    /// Checks the node at `addr`; the monitor applies the timeout.
    fn probe(&self, addr: SocketAddr) -> impl Future<Output = io::Result<()>> + Send;
}

/// The default probe: the node is up if it accepts a TCP connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnectProbe;

impl Probe for TcpConnectProbe {
    async fn probe(&self, addr: SocketAddr) -> io::Result<()> {
        TcpStream::connect(addr).await.map(drop)
    }
}

/// The probe the router uses: the node is up if its SMTP service greets as it would greet a
/// client. The connection starts with a PROXY v2 `LOCAL` header (the router's own
/// connection, no client to name), the first line must be `220`, and `QUIT` ends it. A TCP
/// connect is not enough: a frozen or wedged node's kernel still accepts connections.
#[derive(Debug, Clone, Copy, Default)]
pub struct GreetingProbe;

/// Longest greeting line read.
const MAX_GREETING: usize = 512;

impl Probe for GreetingProbe {
    async fn probe(&self, addr: SocketAddr) -> io::Result<()> {
        let mut tcp = TcpStream::connect(addr).await?;
        tcp.write_all(sirms_proto::proxy_v2::ProxyHeader::Local.encode().as_ref()).await?;
        let mut line = Vec::with_capacity(64);
        let mut buf = [0u8; MAX_GREETING];
        while !line.contains(&b'\n') && line.len() < MAX_GREETING {
            let n = tcp.read(&mut buf[..MAX_GREETING - line.len()]).await?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before greeting"));
            }
            line.extend_from_slice(&buf[..n]);
        }
        if !(line.starts_with(b"220 ") || line.starts_with(b"220-")) {
            let first = String::from_utf8_lossy(&line[..line.len().min(80)]).trim_end().to_string();
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("greeting is not 220: {first:?}")));
        }
        // Best effort: the node ends the session cleanly; a reset here changes nothing.
        let _ = tcp.write_all(b"QUIT\r\n").await;
        Ok(())
    }
}

/// The health of every known node at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthSnapshot {
    nodes: BTreeMap<NodeId, Health>,
}

impl HealthSnapshot {
    /// The health of `node`, if it is monitored.
    pub fn get(&self, node: &NodeId) -> Option<Health> {
        self.nodes.get(node).copied()
    }

    /// Every monitored node and its health, ordered by id.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, Health)> {
        self.nodes.iter().map(|(id, health)| (id, *health))
    }
}

/// One node's probe address and hysteresis state.
#[derive(Debug, Clone)]
struct Tracker {
    addr: SocketAddr,
    health: Health,
    /// Consecutive results that disagree with `health`; reaching fall/rise flips it.
    contrary: u32,
}

/// Tracks node health and runs the active checks.
#[derive(Debug)]
pub struct HealthMonitor<P = TcpConnectProbe> {
    config: HealthConfig,
    probe: Arc<P>,
    nodes: Mutex<BTreeMap<NodeId, Tracker>>,
    snapshot: watch::Sender<Arc<HealthSnapshot>>,
}

impl HealthMonitor<TcpConnectProbe> {
    /// A monitor that probes by TCP connect.
    pub fn new(config: HealthConfig) -> Self {
        Self::with_probe(config, TcpConnectProbe)
    }
}

impl<P: Probe> HealthMonitor<P> {
    /// A monitor using a custom probe (e.g. a gRPC health call).
    pub fn with_probe(config: HealthConfig, probe: P) -> Self {
        Self {
            config,
            probe: Arc::new(probe),
            nodes: Mutex::new(BTreeMap::new()),
            snapshot: watch::Sender::new(Arc::default()),
        }
    }

    /// Starts monitoring `node` at `addr`, or changes its address (keeping its health); true if new.
    pub fn add_node(&self, node: NodeId, addr: SocketAddr) -> bool {
        let mut nodes = self.lock();
        let added = match nodes.get_mut(&node) {
            Some(tracker) => {
                tracker.addr = addr;
                false
            }
            None => {
                nodes.insert(node, Tracker { addr, health: self.config.initial, contrary: 0 });
                true
            }
        };
        self.publish(&nodes);
        added
    }

    /// Stops monitoring `node`; true if it was monitored.
    pub fn remove_node(&self, node: &NodeId) -> bool {
        let mut nodes = self.lock();
        let removed = nodes.remove(node).is_some();
        self.publish(&nodes);
        removed
    }

    /// Records a passive failure: the node goes down at once and must pass `rise` probes to return.
    pub fn mark_failed(&self, node: &NodeId) {
        let mut nodes = self.lock();
        let Some(tracker) = nodes.get_mut(node) else { return };
        tracker.contrary = 0;
        if tracker.health == Health::Up {
            tracker.health = Health::Down;
            tracing::warn!(%node, "node marked down after a failed connection");
            self.publish(&nodes);
        }
    }

    /// Applies one probe result to `node`'s hysteresis; returns its health afterwards.
    pub fn record(&self, node: &NodeId, success: bool) -> Option<Health> {
        let mut nodes = self.lock();
        let tracker = nodes.get_mut(node)?;
        let agrees = success == tracker.health.is_up();
        if agrees {
            tracker.contrary = 0;
            return Some(tracker.health);
        }
        tracker.contrary += 1;
        let threshold = match tracker.health {
            Health::Up => self.config.fall,
            Health::Down => self.config.rise,
        };
        if tracker.contrary < threshold {
            return Some(tracker.health);
        }
        tracker.contrary = 0;
        tracker.health = if success { Health::Up } else { Health::Down };
        let health = tracker.health;
        match health {
            Health::Up => tracing::info!(%node, "node is up"),
            Health::Down => tracing::warn!(%node, "node is down: failed {} health checks in a row", threshold),
        }
        self.publish(&nodes);
        Some(health)
    }

    /// The current health of every node; cheap (an `Arc` clone).
    pub fn snapshot(&self) -> Arc<HealthSnapshot> {
        self.snapshot.borrow().clone()
    }

    /// A receiver that sees a new snapshot whenever a node's health or the node set changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<HealthSnapshot>> {
        self.snapshot.subscribe()
    }

    /// Probes every node once, concurrently, and applies the results; bounded by the probe timeout.
    pub async fn check_all(&self) {
        let targets: Vec<(NodeId, SocketAddr)> =
            self.lock().iter().map(|(id, tracker)| (id.clone(), tracker.addr)).collect();
        let mut probes = JoinSet::new();
        for (node, addr) in targets {
            let probe = Arc::clone(&self.probe);
            let limit = self.config.timeout;
            probes.spawn(async move {
                let result = match tokio::time::timeout(limit, probe.probe(addr)).await {
                    Ok(result) => result,
                    Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "health probe timed out")),
                };
                (node, addr, result)
            });
        }
        while let Some(joined) = probes.join_next().await {
            let (node, addr, result) = match joined {
                Ok(outcome) => outcome,
                Err(error) => {
                    tracing::error!(%error, "health probe task failed");
                    continue;
                }
            };
            if let Err(error) = &result {
                tracing::debug!(%node, %addr, %error, "health probe failed");
            }
            // The address may have changed while probing; a result for the old one says nothing.
            if self.lock().get(&node).is_some_and(|tracker| tracker.addr == addr) {
                self.record(&node, result.is_ok());
            }
        }
    }

    /// Checks every node each interval, forever; stop it by dropping or aborting the task.
    pub async fn run(&self) {
        let mut ticker = tokio::time::interval(self.config.interval);
        // After a slow round, wait a full interval rather than firing a burst of catch-up rounds.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.check_all().await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<NodeId, Tracker>> {
        // The map is consistent after every statement that mutates it, so a poisoned lock is safe to use.
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, nodes: &BTreeMap<NodeId, Tracker>) {
        let snapshot = HealthSnapshot { nodes: nodes.iter().map(|(id, t)| (id.clone(), t.health)).collect() };
        self.snapshot.send_if_modified(|current| {
            if **current == snapshot {
                return false;
            }
            *current = Arc::new(snapshot);
            true
        });
    }
}

impl<P: Probe> ConnectFailures for HealthMonitor<P> {
    fn connect_failed(&self, backend: &Backend, _error: &io::Error) {
        self.mark_failed(&backend.node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::net::TcpListener;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).expect("valid node name")
    }

    fn addr() -> SocketAddr {
        "127.0.0.1:9".parse().expect("valid address")
    }

    /// A server on loopback that reads the PROXY header, then sends `greeting` (or nothing).
    async fn greeter(greeting: Option<&'static [u8]>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut header = [0u8; 16];
                    let _ = tcp.read_exact(&mut header).await;
                    assert_eq!(header[12], 0x20, "a PROXY v2 LOCAL header comes first");
                    match greeting {
                        Some(g) => {
                            let _ = tcp.write_all(g).await;
                            let mut rest = Vec::new();
                            let _ = tcp.read_to_end(&mut rest).await;
                        }
                        // Accepted by the kernel, never served: a frozen node.
                        None => tokio::time::sleep(Duration::from_secs(30)).await,
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn greeting_probe_wants_a_220_greeting() {
        assert!(GreetingProbe.probe(greeter(Some(b"220 node1 ESMTP\r\n")).await).await.is_ok());
        assert!(GreetingProbe.probe(greeter(Some(b"220-node1 ESMTP\r\n220 go\r\n")).await).await.is_ok());
        let busy = GreetingProbe.probe(greeter(Some(b"421 4.7.0 too many connections\r\n")).await).await;
        assert_eq!(busy.map_err(|e| e.kind()), Err(io::ErrorKind::InvalidData));
        let silent = greeter(None).await;
        let frozen = tokio::time::timeout(Duration::from_millis(300), GreetingProbe.probe(silent)).await;
        assert!(frozen.is_err(), "a node that accepts but never greets is not up");
    }

    fn config(fall: u32, rise: u32) -> HealthConfig {
        HealthConfig {
            interval: Duration::from_millis(10),
            timeout: Duration::from_millis(200),
            fall,
            rise,
            ..Default::default()
        }
    }

    /// A probe whose verdict the test sets; `hang` makes it never answer.
    #[derive(Debug, Default)]
    struct Switch {
        up: AtomicBool,
        hang: AtomicBool,
    }

    impl Probe for Arc<Switch> {
        async fn probe(&self, _addr: SocketAddr) -> io::Result<()> {
            if self.hang.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            if self.up.load(Ordering::SeqCst) { Ok(()) } else { Err(io::ErrorKind::ConnectionRefused.into()) }
        }
    }

    #[test]
    fn hysteresis_needs_consecutive_results() {
        let monitor = HealthMonitor::new(config(3, 2));
        let node = id("node1");
        monitor.add_node(node.clone(), addr());
        let mut seen = Vec::new();
        for success in [false, false, true, false, false, false, true, false, true, true, true] {
            seen.push(monitor.record(&node, success).expect("known node"));
        }
        use Health::{Down, Up};
        assert_eq!(seen, [Up, Up, Up, Up, Up, Down, Down, Down, Down, Up, Up]);
        assert_eq!(monitor.record(&id("ghost"), true), None);
    }

    #[test]
    fn passive_failure_takes_a_node_down_at_once() {
        let monitor = HealthMonitor::new(config(3, 2));
        let node = id("node1");
        monitor.add_node(node.clone(), addr());
        monitor.connect_failed(&Backend { node: node.clone(), addr: addr() }, &io::ErrorKind::ConnectionRefused.into());
        assert_eq!(monitor.snapshot().get(&node), Some(Health::Down));
        assert_eq!(monitor.record(&node, true), Some(Health::Down));
        // A passive failure in the middle of a recovery restarts the count.
        monitor.mark_failed(&node);
        assert_eq!(monitor.record(&node, true), Some(Health::Down));
        assert_eq!(monitor.record(&node, true), Some(Health::Up));
        monitor.mark_failed(&id("ghost"));
    }

    #[test]
    fn snapshots_follow_the_node_set() {
        let monitor = HealthMonitor::new(HealthConfig { initial: Health::Down, ..config(1, 1) });
        let mut changes = monitor.subscribe();
        assert!(monitor.add_node(id("a"), addr()));
        assert!(!monitor.add_node(id("a"), "127.0.0.1:10".parse().expect("valid")));
        assert!(changes.has_changed().expect("sender alive"));
        assert_eq!(changes.borrow_and_update().get(&id("a")), Some(Health::Down));
        // Re-adding with a new address changes no health, so no new snapshot.
        monitor.add_node(id("a"), addr());
        assert!(!changes.has_changed().expect("sender alive"));
        assert!(monitor.remove_node(&id("a")));
        assert!(!monitor.remove_node(&id("a")));
        assert_eq!(monitor.snapshot().iter().count(), 0);
    }

    #[tokio::test]
    async fn tcp_probe_sees_listening_and_closed_ports() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let closed = {
            let gone = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            gone.local_addr().expect("local addr")
        };
        let monitor = HealthMonitor::new(config(1, 1));
        monitor.add_node(id("open"), listener.local_addr().expect("local addr"));
        monitor.add_node(id("closed"), closed);
        monitor.check_all().await;
        let snapshot = monitor.snapshot();
        assert_eq!(snapshot.get(&id("open")), Some(Health::Up));
        assert_eq!(snapshot.get(&id("closed")), Some(Health::Down));
    }

    #[tokio::test]
    async fn a_probe_that_hangs_counts_as_failed() {
        let switch = Arc::new(Switch::default());
        switch.up.store(true, Ordering::SeqCst);
        switch.hang.store(true, Ordering::SeqCst);
        let monitor = HealthMonitor::with_probe(
            HealthConfig { timeout: Duration::from_millis(20), ..config(1, 1) },
            Arc::clone(&switch),
        );
        monitor.add_node(id("node1"), addr());
        tokio::time::timeout(Duration::from_secs(5), monitor.check_all()).await.expect("round is bounded");
        assert_eq!(monitor.snapshot().get(&id("node1")), Some(Health::Down));
    }

    #[tokio::test]
    async fn run_loop_flips_state_after_consecutive_results() {
        let switch = Arc::new(Switch::default());
        let monitor = Arc::new(HealthMonitor::with_probe(config(2, 2), Arc::clone(&switch)));
        let node = id("node1");
        monitor.add_node(node.clone(), addr());
        let mut changes = monitor.subscribe();
        changes.borrow_and_update();
        let runner = tokio::spawn({
            let monitor = Arc::clone(&monitor);
            async move { monitor.run().await }
        });

        let wait = Duration::from_secs(5);
        tokio::time::timeout(wait, changes.changed()).await.expect("goes down in time").expect("sender alive");
        assert_eq!(changes.borrow_and_update().get(&node), Some(Health::Down));

        switch.up.store(true, Ordering::SeqCst);
        tokio::time::timeout(wait, changes.changed()).await.expect("comes back in time").expect("sender alive");
        assert_eq!(changes.borrow_and_update().get(&node), Some(Health::Up));
        runner.abort();
    }
}
