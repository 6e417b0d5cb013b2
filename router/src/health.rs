//! Node health per service: periodic active probes with hysteresis, plus passive failures
//! from the forwarder.
//!
//! Health is kept per (node, service): a node whose IMAP listener is wedged stops getting IMAP
//! clients while its SMTP and POP3 keep theirs. Each service the router forwards to a node is
//! probed on its own port with that protocol's greeting ([`GreetingProbe`]); a storage node,
//! which takes no client, has its Store service probed at its endpoint
//! ([`crate::store_probe::StoreProbe`]), so that failover knows whether it lives.
//!
//! A (node, service) that is up goes down after `fall` consecutive failed probes; one that is
//! down comes back after `rise` consecutive successful ones, so one lost probe neither evicts
//! a node nor one lucky probe readmits a flapping one. A connect failure seen by the
//! forwarder ([`HealthMonitor::mark_failed`]) takes that (node, service) down at once: it is a
//! real client that just failed, and every further client sent there pays a failed attempt.
//! It then needs `rise` successful probes to return.
//!
//! Besides the verdict with hysteresis, each (node, service) keeps its [`Streak`]: whether the
//! latest probes passed and since when. Failover wants "failing for 3 s", not "down", for
//! storage nodes: it counts from the first failed probe (`failover.rs`).
//!
//! Readers get an immutable [`HealthSnapshot`] behind an `Arc` from a `tokio::sync::watch`
//! channel: reading is a clone of an `Arc`, and tests or the control plane can await changes.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::forward::{Backend, ConnectFailures};
use crate::node::NodeId;
use crate::service::Service;

/// Whether a node's service passes its health checks.
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
    /// Consecutive failures that take an up (node, service) down.
    pub fall: u32,
    /// Consecutive successes that bring a down (node, service) up.
    pub rise: u32,
    /// Health of a newly added (node, service) before its first probe.
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

/// Where a service is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeTarget {
    /// A mail service: the node's address and the service's port.
    Addr(SocketAddr),
    /// A Store service: its endpoint URL as the nodes use it, since its host name is what
    /// cluster TLS verifies.
    Endpoint(Arc<str>),
}

impl From<SocketAddr> for ProbeTarget {
    fn from(addr: SocketAddr) -> ProbeTarget {
        ProbeTarget::Addr(addr)
    }
}

impl fmt::Display for ProbeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeTarget::Addr(addr) => write!(f, "{addr}"),
            ProbeTarget::Endpoint(url) => write!(f, "{url}"),
        }
    }
}

impl ProbeTarget {
    /// Connects to the target over TCP (an endpoint's host is resolved).
    async fn connect(&self) -> io::Result<TcpStream> {
        match self {
            ProbeTarget::Addr(addr) => TcpStream::connect(addr).await,
            ProbeTarget::Endpoint(url) => {
                let invalid = || io::Error::new(io::ErrorKind::InvalidInput, format!("not a host and port: {url}"));
                let uri: tonic::transport::Uri = url.parse().map_err(|_| invalid())?;
                let host = uri.host().ok_or_else(invalid)?.trim_start_matches('[').trim_end_matches(']');
                let port = match (uri.port_u16(), uri.scheme_str()) {
                    (Some(port), _) => port,
                    (None, Some("https")) => 443,
                    (None, _) => 80,
                };
                TcpStream::connect((host, port)).await
            }
        }
    }
}

/// One health check of one service of one node.
pub trait Probe: Send + Sync + 'static {
    /// Checks `service` at `target`; the monitor applies the timeout.
    fn probe(&self, service: Service, target: &ProbeTarget) -> impl Future<Output = io::Result<()>> + Send;
}

/// The default probe: the service is up if its port accepts a TCP connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnectProbe;

impl Probe for TcpConnectProbe {
    async fn probe(&self, _service: Service, target: &ProbeTarget) -> io::Result<()> {
        target.connect().await.map(drop)
    }
}

/// The probe the router uses: a service is up if it greets as it would greet a client. The
/// connection starts with a PROXY v2 `LOCAL` header (the router's own connection, no client
/// to name); SMTP and submission must answer `220`, IMAP `* OK`, POP3 `+OK`, and the
/// protocol's own goodbye ends the session. A TCP connect is not enough: a frozen or wedged
/// node's kernel still accepts connections.
///
/// The implicit-TLS ports (submissions, imaps, pop3s) greet only inside TLS. For them the
/// node must answer a TLS handshake with its certificate: the probe trusts no certificate, so
/// the handshake always ends there, after the node has shown its TLS listener is serving. (The
/// router relays client TLS untouched and never judges node certificates.)
#[derive(Debug, Clone, Copy, Default)]
pub struct GreetingProbe;

/// Longest greeting line read.
const MAX_GREETING: usize = 512;

/// What a service's greeting starts with, and how to leave politely.
struct Greeting {
    /// Accepted beginnings of the first line.
    starts: &'static [&'static [u8]],
    /// Sent after a good greeting so the node ends the session cleanly.
    goodbye: &'static [u8],
}

impl Greeting {
    /// The greeting of `service`; `None` for implicit TLS, whose greeting is encrypted, and
    /// for the Store service, which greets no one (gRPC speaks only when asked).
    fn of(service: Service) -> Option<Greeting> {
        match service {
            Service::Smtp | Service::Submission => Some(Greeting { starts: &[b"220 ", b"220-"], goodbye: b"QUIT\r\n" }),
            Service::Imap => Some(Greeting { starts: &[b"* OK"], goodbye: b"0 LOGOUT\r\n" }),
            Service::Pop3 => Some(Greeting { starts: &[b"+OK"], goodbye: b"QUIT\r\n" }),
            // ManageSieve greets with its capabilities, IMPLEMENTATION first (RFC 5804 §1.7).
            Service::Sieve => Some(Greeting { starts: &[b"\"IMPLEMENTATION\""], goodbye: b"LOGOUT\r\n" }),
            Service::Submissions | Service::Imaps | Service::Pop3s | Service::Store => None,
        }
    }
}

/// Reads up to the first line feed (or [`MAX_GREETING`] bytes).
async fn first_line(tcp: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut line = Vec::with_capacity(64);
    let mut buf = [0u8; MAX_GREETING];
    while !line.contains(&b'\n') && line.len() < MAX_GREETING {
        let n = tcp.read(&mut buf[..MAX_GREETING - line.len()]).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before greeting"));
        }
        line.extend_from_slice(&buf[..n]);
    }
    Ok(line)
}

/// Starts a TLS handshake on `tcp` and waits for the node's certificate; see [`GreetingProbe`].
async fn tls_answers(tcp: TcpStream, addr: SocketAddr) -> io::Result<()> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    match tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await {
        // Not with no trusted roots; a finished handshake is an answer all the same.
        Ok(_) => Ok(()),
        Err(error) if presented_certificate(&error) => Ok(()),
        Err(error) => Err(error),
    }
}

/// Whether a failed handshake got as far as the node's certificate.
fn presented_certificate(error: &io::Error) -> bool {
    let rustls_error = error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    matches!(rustls_error, Some(rustls::Error::InvalidCertificate(_)))
}

impl Probe for GreetingProbe {
    async fn probe(&self, service: Service, target: &ProbeTarget) -> io::Result<()> {
        let (ProbeTarget::Addr(addr), false) = (target, service == Service::Store) else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{} at {target}: not a mail service's port, no greeting to wait for", service.name()),
            ));
        };
        let addr = *addr;
        let mut tcp = TcpStream::connect(addr).await?;
        tcp.write_all(sirms_proto::proxy_v2::ProxyHeader::Local.encode().as_ref()).await?;
        let Some(greeting) = Greeting::of(service) else { return tls_answers(tcp, addr).await };
        let line = first_line(&mut tcp).await?;
        if !greeting.starts.iter().any(|start| line.starts_with(start)) {
            let first = String::from_utf8_lossy(&line[..line.len().min(80)]).trim_end().to_string();
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} greeting is not the expected one: {first:?}", service.name()),
            ));
        }
        // Best effort: the node ends the session cleanly; a reset here changes nothing.
        let _ = tcp.write_all(greeting.goodbye).await;
        Ok(())
    }
}

/// A run of probes of one (node, service) that agreed: whether they passed, and when the first
/// of them ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streak {
    /// The probes passed.
    pub passing: bool,
    /// The first probe of the run.
    pub since: Instant,
}

/// The health of each probed service of one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeHealth {
    services: BTreeMap<Service, Health>,
    /// The current run of probe results of each service probed at least once.
    streaks: BTreeMap<Service, Streak>,
}

impl NodeHealth {
    /// The health of `service`, if the node offers it (and it is probed).
    pub fn get(&self, service: Service) -> Option<Health> {
        self.services.get(&service).copied()
    }

    /// The current run of `service`'s probe results; `None` before its first probe (its
    /// health is then the configured initial one, a guess).
    pub fn streak(&self, service: Service) -> Option<Streak> {
        self.streaks.get(&service).copied()
    }

    /// Every probed service and its health, in [`Service`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Service, Health)> + '_ {
        self.services.iter().map(|(service, health)| (*service, *health))
    }

    /// The services failing their checks.
    pub fn down(&self) -> impl Iterator<Item = Service> + '_ {
        self.iter().filter(|(_, health)| *health == Health::Down).map(|(service, _)| service)
    }

    /// The node as a whole: down only when every probed service is down. One wedged listener
    /// is a service problem, not a dead node; failover moves mailboxes only off dead nodes.
    pub fn node(&self) -> Health {
        if !self.services.is_empty() && self.services.values().all(|h| *h == Health::Down) {
            Health::Down
        } else {
            Health::Up
        }
    }
}

/// The health of every known node at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthSnapshot {
    nodes: BTreeMap<NodeId, NodeHealth>,
}

impl HealthSnapshot {
    /// The health of each service of `node`, if it is monitored.
    pub fn node(&self, node: &NodeId) -> Option<&NodeHealth> {
        self.nodes.get(node)
    }

    /// The health of `service` on `node`, if both are monitored.
    pub fn get(&self, node: &NodeId, service: Service) -> Option<Health> {
        self.nodes.get(node)?.get(service)
    }

    /// Every monitored node and its services' health, ordered by id.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &NodeHealth)> {
        self.nodes.iter()
    }
}

/// One (node, service)'s probe target and hysteresis state.
#[derive(Debug, Clone)]
struct Tracker {
    target: ProbeTarget,
    health: Health,
    /// Consecutive results that disagree with `health`; reaching fall/rise flips it.
    contrary: u32,
    /// The probes' own results, without hysteresis; `None` before the first.
    streak: Option<Streak>,
}

/// Every monitored node's trackers, one per service it offers.
type Trackers = BTreeMap<NodeId, BTreeMap<Service, Tracker>>;

/// Tracks the health of each (node, service) and runs the active checks.
#[derive(Debug)]
pub struct HealthMonitor<P = TcpConnectProbe> {
    config: HealthConfig,
    probe: Arc<P>,
    nodes: Mutex<Trackers>,
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

    /// Starts monitoring `node`'s `services` at their targets, or brings a monitored node's
    /// service list up to date (a kept service keeps its health, even at a new target; a
    /// service no longer listed is dropped); true if the node is new.
    pub fn add_node<T: Into<ProbeTarget>>(
        &self,
        node: NodeId,
        services: impl IntoIterator<Item = (Service, T)>,
    ) -> bool {
        let mut nodes = self.lock();
        let added = !nodes.contains_key(&node);
        let old = nodes.remove(&node).unwrap_or_default();
        let trackers = services
            .into_iter()
            .map(|(service, target)| {
                let target = target.into();
                let tracker = match old.get(&service) {
                    Some(kept) => Tracker { target, ..kept.clone() },
                    None => Tracker { target, health: self.config.initial, contrary: 0, streak: None },
                };
                (service, tracker)
            })
            .collect();
        nodes.insert(node, trackers);
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

    /// Records a passive failure of `service` on `node`: it goes down at once and must pass
    /// `rise` probes to return. The node's other services are untouched.
    pub fn mark_failed(&self, node: &NodeId, service: Service) {
        let mut nodes = self.lock();
        let Some(tracker) = nodes.get_mut(node).and_then(|services| services.get_mut(&service)) else { return };
        tracker.contrary = 0;
        if tracker.health == Health::Up {
            tracker.health = Health::Down;
            tracing::warn!(%node, service = service.name(), "service marked down after a failed connection");
            self.publish(&nodes);
        }
    }

    /// Applies one probe result to the hysteresis of `service` on `node`; returns its health afterwards.
    pub fn record(&self, node: &NodeId, service: Service, success: bool) -> Option<Health> {
        self.record_at(node, service, success, Instant::now())
    }

    /// The same, for a probe that ended `at`.
    pub(crate) fn record_at(&self, node: &NodeId, service: Service, success: bool, at: Instant) -> Option<Health> {
        let mut nodes = self.lock();
        let tracker = nodes.get_mut(node)?.get_mut(&service)?;
        let streak_ends = tracker.streak.is_none_or(|streak| streak.passing != success);
        if streak_ends {
            tracker.streak = Some(Streak { passing: success, since: at });
        }
        let agrees = success == tracker.health.is_up();
        if agrees {
            tracker.contrary = 0;
            let health = tracker.health;
            if streak_ends {
                self.publish(&nodes);
            }
            return Some(health);
        }
        tracker.contrary += 1;
        let threshold = match tracker.health {
            Health::Up => self.config.fall,
            Health::Down => self.config.rise,
        };
        if tracker.contrary < threshold {
            let health = tracker.health;
            if streak_ends {
                self.publish(&nodes);
            }
            return Some(health);
        }
        tracker.contrary = 0;
        tracker.health = if success { Health::Up } else { Health::Down };
        let health = tracker.health;
        match health {
            Health::Up => tracing::info!(%node, service = service.name(), "service is up"),
            Health::Down => tracing::warn!(
                %node, service = service.name(), "service is down: failed {threshold} health checks in a row"
            ),
        }
        self.publish(&nodes);
        Some(health)
    }

    /// The current health of every node; cheap (an `Arc` clone).
    pub fn snapshot(&self) -> Arc<HealthSnapshot> {
        self.snapshot.borrow().clone()
    }

    /// A receiver that sees a new snapshot whenever a (node, service)'s health or the node set changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<HealthSnapshot>> {
        self.snapshot.subscribe()
    }

    /// Probes every service of every node once, concurrently, and applies the results;
    /// bounded by the probe timeout.
    pub async fn check_all(&self) {
        let targets: Vec<(NodeId, Service, ProbeTarget)> = self
            .lock()
            .iter()
            .flat_map(|(id, services)| {
                services.iter().map(|(service, tracker)| (id.clone(), *service, tracker.target.clone()))
            })
            .collect();
        let mut probes = JoinSet::new();
        for (node, service, target) in targets {
            let probe = Arc::clone(&self.probe);
            let limit = self.config.timeout;
            probes.spawn(async move {
                let result = match tokio::time::timeout(limit, probe.probe(service, &target)).await {
                    Ok(result) => result,
                    Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "health probe timed out")),
                };
                (node, service, target, result)
            });
        }
        while let Some(joined) = probes.join_next().await {
            let (node, service, target, result) = match joined {
                Ok(outcome) => outcome,
                Err(error) => {
                    tracing::error!(%error, "health probe task failed");
                    continue;
                }
            };
            if let Err(error) = &result {
                tracing::debug!(%node, service = service.name(), %target, %error, "health probe failed");
            }
            // The target may have changed while probing; a result for the old one says nothing.
            let current = self.lock().get(&node).and_then(|services| services.get(&service)).map(|t| t.target.clone());
            if current.as_ref() == Some(&target) {
                self.record(&node, service, result.is_ok());
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

    fn lock(&self) -> MutexGuard<'_, Trackers> {
        // The map is consistent after every statement that mutates it, so a poisoned lock is safe to use.
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, nodes: &Trackers) {
        let snapshot = HealthSnapshot {
            nodes: nodes
                .iter()
                .map(|(id, services)| {
                    let streaks = services.iter().filter_map(|(service, t)| Some((*service, t.streak?))).collect();
                    let services = services.iter().map(|(service, t)| (*service, t.health)).collect();
                    (id.clone(), NodeHealth { services, streaks })
                })
                .collect(),
        };
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
        self.mark_failed(&backend.node, backend.service);
    }
}

/// A node's health as people are shown it (`sirms ctl nodes list`, the status page): one
/// reading of a `NodeStatus`, so both say the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown<'a> {
    /// Every service passes its checks.
    Up,
    /// Down as a whole: every service it offers is failing, or it is out of routing.
    Down,
    /// These services are failing; its others still serve.
    Partly(&'a [String]),
}

impl Shown<'_> {
    /// How `status` reads.
    pub fn of(status: &sirms_proto::cluster::NodeStatus) -> Shown<'_> {
        let offered = status.node.as_ref().map_or(0, |n| {
            // A storage node's mail ports (defaults in its record) are served by no one: the
            // router probes its Store service alone.
            if n.storage_only {
                return 1;
            }
            let ports = [
                n.smtp_port,
                n.submission_port,
                n.submissions_port,
                n.imap_port,
                n.imaps_port,
                n.pop3_port,
                n.pop3s_port,
            ];
            ports.iter().filter(|p| **p != 0).count()
        });
        match (status.healthy, status.down_services.as_slice()) {
            (true, _) => Shown::Up,
            (false, down) if down.is_empty() || down.len() >= offered => Shown::Down,
            (false, down) => Shown::Partly(down),
        }
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

    /// A node offering SMTP only, at `addr`.
    fn smtp_at(addr: SocketAddr) -> [(Service, SocketAddr); 1] {
        [(Service::Smtp, addr)]
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

    /// Probes `service` at a greeter sending `greeting`; the error kind if it failed, bounded.
    async fn probed(service: Service, greeting: Option<&'static [u8]>) -> Result<(), io::ErrorKind> {
        let addr = greeter(greeting).await;
        match tokio::time::timeout(Duration::from_millis(300), GreetingProbe.probe(service, &addr.into())).await {
            Ok(result) => result.map_err(|e| e.kind()),
            Err(_) => Err(io::ErrorKind::TimedOut),
        }
    }

    #[tokio::test]
    async fn greeting_probe_wants_a_220_greeting() {
        for service in [Service::Smtp, Service::Submission] {
            assert_eq!(probed(service, Some(b"220 node1 ESMTP\r\n")).await, Ok(()));
            assert_eq!(probed(service, Some(b"220-node1 ESMTP\r\n220 go\r\n")).await, Ok(()));
            let busy = probed(service, Some(b"421 4.7.0 too many connections\r\n")).await;
            assert_eq!(busy, Err(io::ErrorKind::InvalidData));
            assert_eq!(probed(service, None).await, Err(io::ErrorKind::TimedOut), "accepts but never greets");
        }
    }

    #[tokio::test]
    async fn greeting_probe_wants_each_protocols_own_greeting() {
        assert_eq!(probed(Service::Imap, Some(b"* OK [CAPABILITY IMAP4rev1] node1 ready\r\n")).await, Ok(()));
        assert_eq!(probed(Service::Pop3, Some(b"+OK node1 POP3 ready\r\n")).await, Ok(()));
        // Another protocol's greeting on the port is as wrong as a refusal.
        assert_eq!(probed(Service::Imap, Some(b"220 node1 ESMTP\r\n")).await, Err(io::ErrorKind::InvalidData));
        assert_eq!(probed(Service::Imap, Some(b"* BYE too busy\r\n")).await, Err(io::ErrorKind::InvalidData));
        assert_eq!(probed(Service::Pop3, Some(b"-ERR busy\r\n")).await, Err(io::ErrorKind::InvalidData));
        assert_eq!(probed(Service::Smtp, Some(b"+OK node1 POP3 ready\r\n")).await, Err(io::ErrorKind::InvalidData));
        for service in [Service::Imap, Service::Pop3] {
            assert_eq!(probed(service, None).await, Err(io::ErrorKind::TimedOut), "{service:?} never greets");
        }
    }

    /// A TLS server on loopback with a self-signed certificate that, after the PROXY header,
    /// answers handshakes as a node's implicit-TLS listener does.
    async fn tls_server() -> SocketAddr {
        let cert = rcgen::generate_simple_self_signed(vec!["node1.example.test".into()]).expect("certificate");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("default versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let mut header = [0u8; 16];
                    if tcp.read_exact(&mut header).await.is_ok() {
                        // The probe gives up at the certificate; the handshake's failure is expected.
                        let _ = acceptor.accept(tcp).await;
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn implicit_tls_ports_must_answer_a_handshake() {
        let tls = tls_server().await;
        for service in [Service::Submissions, Service::Imaps, Service::Pop3s] {
            let answered =
                tokio::time::timeout(Duration::from_secs(5), GreetingProbe.probe(service, &tls.into())).await;
            assert_eq!(answered.expect("bounded").map_err(|e| e.kind()), Ok(()), "{service:?}");
            // Accepted by the kernel, the header read, then nothing: wedged inside.
            assert_eq!(probed(service, None).await, Err(io::ErrorKind::TimedOut), "{service:?}");
            // Plain text where TLS should be is no TLS listener.
            let plain = probed(service, Some(b"* OK plain IMAP\r\n")).await;
            assert!(plain.is_err(), "{service:?}: {plain:?}");
            let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr");
            let refused = GreetingProbe.probe(service, &closed.into()).await.map_err(|e| e.kind());
            assert_eq!(refused, Err(io::ErrorKind::ConnectionRefused), "{service:?}");
        }
    }

    /// The case: one node's IMAP listener accepts and never greets. Only its IMAP goes
    /// down; its SMTP and POP3 stay up, as does the node as a whole.
    #[tokio::test]
    async fn a_wedged_service_goes_down_alone() {
        let monitor = HealthMonitor::with_probe(config(2, 1), GreetingProbe);
        let node = id("node1");
        let services = [
            (Service::Smtp, greeter(Some(b"220 node1 ESMTP\r\n")).await),
            (Service::Imap, greeter(None).await),
            (Service::Pop3, greeter(Some(b"+OK node1\r\n")).await),
        ];
        monitor.add_node(node.clone(), services);
        let changes = monitor.subscribe();
        for _ in 0..2 {
            tokio::time::timeout(Duration::from_secs(5), monitor.check_all()).await.expect("round is bounded");
        }
        assert!(changes.has_changed().expect("sender alive"), "the change is published");
        let snapshot = monitor.snapshot();
        let health = snapshot.node(&node).expect("monitored");
        assert_eq!(health.down().collect::<Vec<_>>(), [Service::Imap]);
        assert_eq!(health.get(Service::Smtp), Some(Health::Up));
        assert_eq!(health.get(Service::Pop3), Some(Health::Up));
        assert_eq!(health.get(Service::Imaps), None, "a service the node does not offer is not probed");
        assert_eq!(health.node(), Health::Up, "one wedged listener is not a dead node");
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
        async fn probe(&self, _service: Service, _target: &ProbeTarget) -> io::Result<()> {
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
        monitor.add_node(node.clone(), [(Service::Smtp, addr()), (Service::Imap, addr())]);
        let mut seen = Vec::new();
        for success in [false, false, true, false, false, false, true, false, true, true, true] {
            seen.push(monitor.record(&node, Service::Imap, success).expect("known node"));
            // Each (node, service) keeps its own count: SMTP's successes do not reset IMAP's.
            assert_eq!(monitor.record(&node, Service::Smtp, true), Some(Health::Up));
        }
        use Health::{Down, Up};
        assert_eq!(seen, [Up, Up, Up, Up, Up, Down, Down, Down, Down, Up, Up]);
        assert_eq!(monitor.record(&id("ghost"), Service::Smtp, true), None);
        assert_eq!(monitor.record(&node, Service::Pop3, true), None, "not offered, not tracked");
    }

    /// A streak starts at the first probe of a run and is published when it starts, whether
    /// or not the hysteresis flips; a passive failure is no probe result and starts none.
    #[test]
    fn a_streak_dates_from_the_first_probe_of_its_run() {
        let monitor = HealthMonitor::new(config(3, 2));
        let node = id("store1");
        let target = ProbeTarget::Endpoint("http://store1:7400".into());
        monitor.add_node(node.clone(), [(Service::Store, target)]);
        let streak = || monitor.snapshot().node(&node).and_then(|h| h.streak(Service::Store));
        assert_eq!(streak(), None, "not probed yet");
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        monitor.record_at(&node, Service::Store, true, at(0));
        monitor.record_at(&node, Service::Store, true, at(1));
        assert_eq!(streak(), Some(Streak { passing: true, since: at(0) }));
        let mut changes = monitor.subscribe();
        changes.borrow_and_update();
        assert_eq!(monitor.record_at(&node, Service::Store, false, at(2)), Some(Health::Up));
        assert!(changes.has_changed().expect("sender alive"), "a new streak is published before the flip");
        monitor.mark_failed(&node, Service::Store);
        monitor.record_at(&node, Service::Store, false, at(3));
        assert_eq!(streak(), Some(Streak { passing: false, since: at(2) }));
        monitor.record_at(&node, Service::Store, true, at(4));
        assert_eq!(streak(), Some(Streak { passing: true, since: at(4) }));
    }

    #[test]
    fn passive_failure_takes_a_node_down_at_once() {
        let monitor = HealthMonitor::new(config(3, 2));
        let node = id("node1");
        monitor.add_node(node.clone(), [(Service::Smtp, addr()), (Service::Pop3, addr())]);
        let backend = Backend { node: node.clone(), service: Service::Pop3, addr: addr() };
        monitor.connect_failed(&backend, &io::ErrorKind::ConnectionRefused.into());
        assert_eq!(monitor.snapshot().get(&node, Service::Pop3), Some(Health::Down));
        assert_eq!(monitor.snapshot().get(&node, Service::Smtp), Some(Health::Up), "other services untouched");
        assert_eq!(monitor.record(&node, Service::Pop3, true), Some(Health::Down));
        // A passive failure in the middle of a recovery restarts the count.
        monitor.mark_failed(&node, Service::Pop3);
        assert_eq!(monitor.record(&node, Service::Pop3, true), Some(Health::Down));
        assert_eq!(monitor.record(&node, Service::Pop3, true), Some(Health::Up));
        monitor.mark_failed(&id("ghost"), Service::Smtp);
        monitor.mark_failed(&node, Service::Imap);
        assert_eq!(monitor.snapshot().get(&node, Service::Imap), None);
    }

    #[test]
    fn snapshots_follow_the_node_set() {
        let monitor = HealthMonitor::new(HealthConfig { initial: Health::Down, ..config(1, 1) });
        let mut changes = monitor.subscribe();
        assert!(monitor.add_node(id("a"), smtp_at(addr())));
        assert!(!monitor.add_node(id("a"), smtp_at("127.0.0.1:10".parse().expect("valid"))));
        assert!(changes.has_changed().expect("sender alive"));
        assert_eq!(changes.borrow_and_update().get(&id("a"), Service::Smtp), Some(Health::Down));
        // Re-adding with a new address changes no health, so no new snapshot.
        monitor.add_node(id("a"), smtp_at(addr()));
        assert!(!changes.has_changed().expect("sender alive"));
        // A node's service list follows what it offers; a kept service keeps its health.
        monitor.record(&id("a"), Service::Smtp, true);
        monitor.add_node(id("a"), [(Service::Smtp, addr()), (Service::Imap, addr())]);
        let snapshot = monitor.snapshot();
        let a = snapshot.node(&id("a")).expect("monitored");
        assert_eq!(a.iter().collect::<Vec<_>>(), [(Service::Smtp, Health::Up), (Service::Imap, Health::Down)]);
        monitor.add_node(id("a"), [(Service::Imap, addr())]);
        assert_eq!(monitor.snapshot().get(&id("a"), Service::Smtp), None);
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
        monitor.add_node(id("open"), smtp_at(listener.local_addr().expect("local addr")));
        monitor.add_node(id("closed"), smtp_at(closed));
        monitor.check_all().await;
        let snapshot = monitor.snapshot();
        assert_eq!(snapshot.get(&id("open"), Service::Smtp), Some(Health::Up));
        assert_eq!(snapshot.get(&id("closed"), Service::Smtp), Some(Health::Down));
        assert_eq!(snapshot.node(&id("closed")).map(NodeHealth::node), Some(Health::Down), "its only service");
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
        monitor.add_node(id("node1"), smtp_at(addr()));
        tokio::time::timeout(Duration::from_secs(5), monitor.check_all()).await.expect("round is bounded");
        assert_eq!(monitor.snapshot().get(&id("node1"), Service::Smtp), Some(Health::Down));
    }

    #[tokio::test]
    async fn run_loop_flips_state_after_consecutive_results() {
        let switch = Arc::new(Switch::default());
        let monitor = Arc::new(HealthMonitor::with_probe(config(2, 2), Arc::clone(&switch)));
        let node = id("node1");
        monitor.add_node(node.clone(), smtp_at(addr()));
        let mut changes = monitor.subscribe();
        changes.borrow_and_update();
        let runner = tokio::spawn({
            let monitor = Arc::clone(&monitor);
            async move { monitor.run().await }
        });

        // Every published snapshot's SMTP health, until it is `want`; a new streak is
        // published at its first probe, before the hysteresis flips.
        async fn until(changes: &mut watch::Receiver<Arc<HealthSnapshot>>, node: &NodeId, want: Health) -> Vec<Health> {
            let mut seen = Vec::new();
            while seen.last() != Some(&want) {
                let changed = tokio::time::timeout(Duration::from_secs(5), changes.changed()).await;
                changed.expect("changes in time").expect("sender alive");
                seen.extend(changes.borrow_and_update().get(node, Service::Smtp));
            }
            seen
        }
        use Health::{Down, Up};
        assert_eq!(until(&mut changes, &node, Down).await, [Up, Down], "a failing streak, then down");
        switch.up.store(true, Ordering::SeqCst);
        assert_eq!(until(&mut changes, &node, Up).await, [Down, Up], "a passing streak, then up");
        runner.abort();
    }
}
