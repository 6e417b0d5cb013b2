//! The running router: the public listeners, the routing state rebuilt from the directory
//! and the health monitor, and the forwarding of each connection. The monitor also probes
//! the storage nodes, which take no connection, for failover's sake.

use sirms_proto::budget::ConnectionBudget;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sirms_proto::cluster::{Node, NodeLoad, NodeStatus};
use sirms_proto::cluster_tls::Credentials;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{NatConfig, PublicListen, RouterConfig};
use crate::directory::ClusterDirectory;
use crate::forward::{Backend, Forwarder, Inbound};
use crate::health::{Health, HealthConfig, HealthMonitor, HealthSnapshot, ProbeTarget};
use crate::membership::{Live, Membership};
use crate::metrics::RouterMetrics;
use crate::nat::tun::{NatStats, Tun};
use crate::nat::{NatNode, NatView, Translator};
use crate::node::{GroupName, NodeId, NodeState};
use crate::pick::{Choice, Cluster, ClusterNode};
use crate::service::Service;
use crate::store_probe::RouterProbe;
use crate::table::{Cidr, RouteTable, Target};

/// What routing decisions are made from, swapped whole when the directory or health changes.
#[derive(Default)]
struct Routing {
    table: RouteTable,
    /// One per service, indexed by `Service as usize`: health is per (node, service), so a
    /// node can be up for SMTP and down for IMAP. The Store service's stays empty: the router
    /// forwards no one to it.
    clusters: [Cluster; Service::COUNT],
    /// Whole nodes, down only when every service is: NAT mode's single view of the cluster.
    whole: Cluster,
    /// Mail nodes with their resolved address.
    nodes: HashMap<String, (Node, IpAddr)>,
}

#[derive(Default, Clone, Copy)]
struct Counters {
    active: u64,
    total: u64,
}

/// The router's shared state.
pub struct Router {
    directory: Arc<ClusterDirectory>,
    health: Arc<HealthMonitor<RouterProbe>>,
    routing: watch::Sender<Arc<Routing>>,
    counters: Mutex<HashMap<String, Counters>>,
    /// Each node's last heartbeat and when it came.
    loads: Mutex<HashMap<String, (NodeLoad, std::time::Instant)>>,
    forwarder: Forwarder,
    /// NAT mode's counts (all zero in proxy mode).
    nat_stats: Arc<NatStats>,
    nat_mode: bool,
    metrics: RouterMetrics,
    /// Node leases in etcd; `None` with the sled directory, where health checks alone decide.
    membership: Option<Membership>,
}

/// The longest routing goes without a rebuild. Changes rebuild it at once; this bounds how long
/// a state built from a host that did not resolve for a moment, or a rebuild that raced a
/// change, can stand. `docker/test-ha.sh` saw two of five runs route sources of up nodes
/// elsewhere through the surviving router for seconds after the other's death, while that
/// router's own status showed every node up and a member; the cause is not found yet.
const REBUILD_EVERY: Duration = Duration::from_secs(2);

/// A heartbeat older than this is not shown: the node's load is unknown.
const LOAD_STALE: Duration = Duration::from_secs(30);

/// Resolves a node's host (an address, or a name such as a compose service).
async fn resolve(host: &str) -> Option<IpAddr> {
    if let Ok(ip) = IpAddr::from_str(host) {
        return Some(ip);
    }
    tokio::net::lookup_host((host, 0)).await.ok()?.next().map(|a| a.ip())
}

impl Routing {
    /// The cluster as `service` sees it.
    fn cluster(&self, service: Service) -> &Cluster {
        &self.clusters[service as usize]
    }
}

impl Router {
    /// A router over `directory`; it probes storage nodes' Store service with `credentials`
    /// (the cluster token, and the router's certificate under cluster TLS).
    pub fn new(
        directory: Arc<ClusterDirectory>,
        membership: Option<Membership>,
        config: &RouterConfig,
        credentials: Credentials,
    ) -> Arc<Router> {
        let health =
            HealthConfig { interval: Duration::from_secs(config.health_interval_secs.max(1)), ..Default::default() };
        Arc::new(Router {
            directory,
            health: Arc::new(HealthMonitor::with_probe(health, RouterProbe::new(credentials))),
            routing: watch::Sender::new(Arc::new(Routing::default())),
            counters: Mutex::new(HashMap::new()),
            loads: Mutex::new(HashMap::new()),
            forwarder: Forwarder::new(config.forward()),
            nat_stats: Arc::default(),
            nat_mode: config.mode == crate::config::Mode::Nat,
            metrics: RouterMetrics::default(),
            membership,
        })
    }

    /// Node membership by lease, when the directory is in etcd.
    pub fn membership(&self) -> Option<&Membership> {
        self.membership.as_ref()
    }

    /// Whether `node` holds a lease: always with no membership, or before it was first read.
    fn member(&self, live: &Live, node: &str) -> bool {
        live.as_ref().is_none_or(|live| live.contains_key(node))
    }

    fn live(&self) -> Live {
        self.membership.as_ref().and_then(|m| m.subscribe().borrow().clone())
    }

    /// Follows this router's health checks of the mail nodes and storage nodes.
    pub fn follow_health(&self) -> watch::Receiver<Arc<HealthSnapshot>> {
        self.health.subscribe()
    }

    /// The health of each service of each mail node, and of each storage node's Store, now.
    pub fn health(&self) -> Arc<HealthSnapshot> {
        self.health.snapshot()
    }

    /// The directory this router serves.
    pub fn directory(&self) -> &Arc<ClusterDirectory> {
        &self.directory
    }

    /// What the data plane counts.
    pub fn metrics(&self) -> &RouterMetrics {
        &self.metrics
    }

    fn current(&self) -> Arc<Routing> {
        self.routing.borrow().clone()
    }

    /// NAT mode's flow and packet counts; `None` in proxy mode.
    pub fn nat_status(&self) -> Option<sirms_proto::cluster::NatStatus> {
        if !self.nat_mode {
            return None;
        }
        let s = &self.nat_stats;
        let get = |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
        Some(sirms_proto::cluster::NatStatus {
            flows: get(&s.flows),
            forwarded: get(&s.forwarded),
            answered: get(&s.answered),
            discarded: get(&s.discarded),
            flows_opened: get(&s.flows_opened),
            flows_reset: get(&s.flows_reset),
            write_errors: get(&s.write_errors),
        })
    }

    /// The cluster as NAT mode needs it: the routing state, each node's private IPv4 address,
    /// its port for each public port of `listen`, and its alias from `nat`.
    fn nat_view(&self, listen: &PublicListen, nat: &NatConfig) -> NatView {
        let routing = self.current();
        let nodes = routing
            .nodes
            .iter()
            .filter_map(|(id, (node, ip))| {
                let IpAddr::V4(ip) = ip.to_canonical() else {
                    tracing::warn!(node = %id, %ip, "nat mode needs an IPv4 node address");
                    return None;
                };
                let ports = Service::ALL
                    .iter()
                    .filter_map(|s| {
                        Some((s.listen(listen)?.port(), u16::try_from(s.port(node)).ok().filter(|p| *p != 0)?))
                    })
                    .collect();
                let alias = nat.aliases.get(id).copied();
                Some((NodeId::from_str(id).ok()?, NatNode { ip, ports, alias }))
            })
            .collect();
        NatView { table: routing.table.clone(), cluster: routing.whole.clone(), nodes }
    }

    /// Rebuilds the routing state from the directory and the latest health.
    pub async fn rebuild(&self) {
        let snapshot = self.directory.snapshot();
        let mut nodes = HashMap::new();
        let mut stores = HashMap::new();
        for node in snapshot.nodes {
            if node.storage_only {
                // Reached at its endpoint as the nodes reach it; not routed to. One without an
                // endpoint cannot be probed (nor used): its liveness stays unknown.
                if !node.store_endpoint.is_empty() {
                    stores.insert(node.id.clone(), ProbeTarget::Endpoint(node.store_endpoint.as_str().into()));
                }
                continue;
            }
            match resolve(&node.host).await {
                Some(ip) => {
                    nodes.insert(node.id.clone(), (node, ip));
                }
                None => tracing::warn!(node = %node.id, host = %node.host, "cannot resolve node host"),
            }
        }
        // Keep the health monitor's node list in step with the directory.
        let known: BTreeSet<NodeId> = self.health.snapshot().iter().map(|(id, _)| id.clone()).collect();
        for (id, (node, ip)) in &nodes {
            if let Ok(id) = NodeId::from_str(id) {
                // Every service the router forwards to the node is probed on its own port.
                self.health.add_node(id, Service::ALL.into_iter().filter_map(|s| Some((s, s.addr(node, *ip)?))));
            }
        }
        for (id, target) in &stores {
            if let Ok(id) = NodeId::from_str(id) {
                self.health.add_node(id, [(Service::Store, target.clone())]);
            }
        }
        for id in known.iter().filter(|id| !nodes.contains_key(id.as_str()) && !stores.contains_key(id.as_str())) {
            self.health.remove_node(id);
        }
        let health = self.health.snapshot();
        let live = self.live();
        let mut clusters: [Cluster; Service::COUNT] = Default::default();
        let mut whole = Cluster::default();
        for (id, (node, _)) in &nodes {
            let Ok(node_id) = NodeId::from_str(id) else { continue };
            let member = self.member(&live, id);
            let probed = health.node(&node_id);
            let entry = |up: bool| ClusterNode {
                id: node_id.clone(),
                weight: node.weight,
                state: NodeState::new(node.drained, up && member),
            };
            for service in Service::ALL {
                // Not probed (not yet monitored, or the node lacks the service, which `handle`
                // skips anyway): nothing says it is down.
                let up = probed.and_then(|h| h.get(service)).is_none_or(Health::is_up);
                clusters[service as usize].upsert_node(entry(up));
            }
            whole.upsert_node(entry(probed.is_none_or(|h| h.node().is_up())));
        }
        for group in self.directory.groups() {
            if let Ok(name) = GroupName::from_str(&group.name) {
                let members: BTreeSet<NodeId> = group.members.iter().filter_map(|m| NodeId::from_str(m).ok()).collect();
                for cluster in clusters.iter_mut().chain([&mut whole]) {
                    cluster.set_group(name.clone(), members.clone());
                }
            }
        }
        let table: RouteTable = self
            .directory
            .routes()
            .into_iter()
            .filter_map(|r| Some((Cidr::from_str(&r.cidr).ok()?, Target::from_str(&r.target).ok()?)))
            .collect();
        self.routing.send_replace(Arc::new(Routing { table, clusters, whole, nodes }));
    }

    /// Where a client of `service` at `ip` goes now.
    pub fn choose(&self, ip: IpAddr, service: Service) -> Choice {
        let routing = self.current();
        routing.cluster(service).choose(ip, &routing.table)
    }

    /// What `sirms ctl status` shows (the Admin `Status` call) and the status page renders:
    /// nodes, directory counts and NAT counters. Call `directory().catch_up()` first for the
    /// latest directory.
    pub fn cluster_status(&self) -> sirms_proto::cluster::ClusterStatus {
        let snapshot = self.directory.snapshot();
        sirms_proto::cluster::ClusterStatus {
            nodes: self.status(),
            directory_version: snapshot.version,
            users: snapshot.users.len() as u64,
            domains: snapshot.domains.len() as u64,
            routes: self.directory.routes().len() as u64,
            nat: self.nat_status(),
        }
    }

    /// Every node with its health and connection counts.
    pub fn status(&self) -> Vec<NodeStatus> {
        let health = self.health.snapshot();
        let counters = self.counters.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let loads = self.loads.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let live = self.live();
        self.directory
            .snapshot()
            .nodes
            .into_iter()
            .map(|node| {
                // A node the monitor does not know (a mail node whose host did not resolve, a
                // storage node without an endpoint) is not reachable either. A storage node
                // holds no lease: its Store probe alone speaks for it.
                let probed = NodeId::from_str(&node.id).ok().and_then(|id| health.node(&id).cloned());
                let down_services: Vec<String> =
                    probed.iter().flat_map(|h| h.down()).map(|s| s.name().to_string()).collect();
                let healthy =
                    probed.is_some() && down_services.is_empty() && (node.storage_only || self.member(&live, &node.id));
                let c = counters.get(&node.id).copied().unwrap_or_default();
                // A heartbeat to this router, else the load the node's lease carries (it may
                // heartbeat to another router).
                let load = loads
                    .get(&node.id)
                    .filter(|(_, at)| at.elapsed() < LOAD_STALE)
                    .map(|(l, _)| l.clone())
                    .or_else(|| live.as_ref()?.get(&node.id).filter(|l| !l.node_id.is_empty()).cloned());
                NodeStatus {
                    node: Some(node),
                    healthy,
                    active_connections: c.active,
                    total_connections: c.total,
                    load,
                    down_services,
                }
            })
            .collect()
    }

    /// Records a node's heartbeat.
    pub fn record_load(&self, load: NodeLoad) {
        let mut loads = self.loads.lock().unwrap_or_else(|p| p.into_inner());
        loads.insert(load.node_id.clone(), (load, std::time::Instant::now()));
    }

    fn count(&self, node: &str, delta: i64) {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let c = counters.entry(node.to_string()).or_default();
        if delta > 0 {
            c.active += 1;
            c.total += 1;
        } else {
            c.active = c.active.saturating_sub(1);
        }
    }

    /// Forwards one client connection of `service`.
    async fn handle(self: Arc<Self>, service: Service, inbound: Inbound) {
        let peer = inbound.peer;
        let _session = self.metrics.connection(service);
        let routing = self.current();
        let choice = routing.cluster(service).choose(peer.ip(), &routing.table);
        let backends: Vec<Backend> = choice
            .candidates
            .iter()
            .filter_map(|id| {
                let (node, ip) = routing.nodes.get(id.as_str())?;
                Some(Backend { node: id.clone(), service, addr: service.addr(node, *ip)? })
            })
            .collect();
        let intended = backends.first().map(|b| b.node.to_string()).unwrap_or_default();
        self.count(&intended, 1);
        let health = self.health.clone();
        let metrics = &self.metrics;
        let failures = move |backend: &Backend, error: &std::io::Error| {
            tracing::warn!(
                node = %backend.node, service = service.name(), addr = %backend.addr, %error,
                "node refused a connection; marking the service down there"
            );
            metrics.connect_failed(backend.node.as_str());
            health.mark_failed(&backend.node, backend.service);
        };
        let result = self.forwarder.forward(inbound, &backends, &failures).await;
        self.count(&intended, -1);
        match &result {
            Ok(stats) => {
                self.metrics.routed(Some(stats.backend.node.as_str()), &choice.reason);
                self.metrics.relayed(stats.client_to_backend, stats.backend_to_client);
            }
            Err(_) => self.metrics.routed(None, &choice.reason),
        }
        match result {
            Ok(stats) => tracing::info!(
                service = service.name(), client = %peer, node = %stats.backend.node, reason = %choice.reason,
                up = stats.client_to_backend, down = stats.backend_to_client, end = ?stats.end, "connection done"
            ),
            Err(e) => tracing::warn!(service = service.name(), client = %peer, error = %e, "connection not forwarded"),
        }
    }
}

/// Binds every public listener (so a port in use fails at start), then serves them and
/// keeps routing current until `shutdown` turns true.
pub async fn serve(
    router: Arc<Router>,
    listen: &PublicListen,
    budget: Arc<ConnectionBudget>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut listeners = Vec::new();
    for service in Service::ALL {
        let Some(addr) = service.listen(listen) else { continue };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr} ({}): {e}", service.name())))?;
        tracing::info!(service = service.name(), %addr, "router listening");
        listeners.push((service, listener));
    }
    router.rebuild().await;
    let mut tasks = tokio::task::JoinSet::new();
    for (service, listener) in listeners {
        let (router, budget) = (router.clone(), budget.clone());
        tasks.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        // Over the budget the connection is closed unanswered: the router
                        // speaks no protocol of its own, and a client retries a closed one.
                        let Some(slots) = budget.slot().zip(budget.ip_slot(peer.ip())) else {
                            router.metrics.refused(service);
                            tracing::warn!(service = service.name(), client = %peer, "connection limit reached");
                            continue;
                        };
                        match Inbound::from_stream(stream) {
                            Ok(inbound) => {
                                let router = router.clone();
                                tokio::spawn(async move {
                                    router.handle(service, inbound).await;
                                    drop(slots);
                                });
                            }
                            Err(e) => tracing::debug!(error = %e, "connection gone before routing"),
                        }
                    }
                    Err(e) => {
                        tracing::warn!(service = service.name(), error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }
    let monitor = router.health.clone();
    tasks.spawn(async move { monitor.run().await });
    follow_changes(&router, &mut shutdown, || {}).await;
    tasks.abort_all();
    Ok(())
}

/// Rebuilds routing whenever the directory, any node's health or the live members change, and
/// at least every [`REBUILD_EVERY`], calling `changed` after each rebuild, until `shutdown`
/// turns true.
async fn follow_changes(router: &Router, shutdown: &mut watch::Receiver<bool>, mut changed: impl FnMut()) {
    let (mut versions, mut health) = (router.directory.subscribe(), router.health.subscribe());
    // With the sled directory nothing ever changes here: a channel whose sender stays alive.
    let (_no_membership, unchanging) = watch::channel(None);
    let mut members = router.membership.as_ref().map_or(unchanging, |m| m.subscribe());
    let mut every = tokio::time::interval(REBUILD_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            result = versions.changed() => if result.is_err() { break },
            result = health.changed() => if result.is_err() { break },
            result = members.changed() => if result.is_err() { break },
            _ = every.tick() => {}
            _ = shutdown.changed() => break,
        }
        router.rebuild().await;
        changed();
    }
}

/// NAT mode: attaches to the TUN device (so a missing device or privilege fails at start),
/// then translates packets, keeping the translator's view of the cluster current, until
/// `shutdown` turns true. Nothing listens on `listen`: its ports are the public address's.
pub async fn serve_nat(
    router: Arc<Router>,
    listen: &PublicListen,
    nat: &NatConfig,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let public = nat
        .public
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "mode = \"nat\" needs nat.public"))?;
    let tun = Tun::open(&nat.device)?;
    tracing::info!(device = tun.name(), %public, "router in nat mode");
    router.rebuild().await;
    let (views, view) = watch::channel(Arc::new(router.nat_view(listen, nat)));
    let translator = Translator::new(public, nat.max_flows, nat.timeouts());
    let mut tasks = tokio::task::JoinSet::new();
    let mut translating =
        tokio::spawn(crate::nat::tun::run(tun, translator, view, router.nat_stats.clone(), shutdown.clone()));
    let monitor = router.health.clone();
    tasks.spawn(async move { monitor.run().await });
    let result = tokio::select! {
        _ = follow_changes(&router, &mut shutdown, || {
            views.send_replace(Arc::new(router.nat_view(listen, nat)));
        }) => (&mut translating).await,
        result = &mut translating => result,
    };
    tasks.abort_all();
    result.unwrap_or_else(|e| Err(std::io::Error::other(format!("nat loop: {e}"))))
}
