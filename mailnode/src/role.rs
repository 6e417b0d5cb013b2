//! The `sirms node` role: builds the directory, the store and TLS, then runs every listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sirms_proto::cluster_tls::{self, ClientAuth, ClusterTls, Credentials};
use sirms_storage::role::DEV_TOKEN;
use sirms_storage::{LocalStore, MailStore, Measured, RemoteStore, ReplicaStore, StoreError, StoreService, grpc};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::auth::Authenticator;
use crate::auth::throttle::Throttle;
use crate::cluster::catch_up;
use crate::cluster::home_store::{Endpoints, HomeStore};
use crate::cluster::membership::Membership;
use crate::cluster::replica_state::ReplicaStates;
use crate::cluster::spool_copy::SpoolPeers;
use crate::cluster::triplets::Triplets;
use crate::cluster::unreachable::Unreachable;
use crate::config::NodeConfig;
use crate::delivery::Delivery;
use crate::directory::{DirectoryData, DirectoryError, LiveDirectory};
use crate::imap::ImapService;
use crate::imap::connection::ImapLimits;
use crate::import::service::ImportService;
use crate::inbound::Checks;
use crate::inbound::dnsbl::Dnsbl;
use crate::inbound::greylist::Greylist;
use crate::managesieve::SieveService;
use crate::metrics::NodeMetrics;
use crate::net::listener::{self, ListenerSettings};
use crate::outbound::Outbound;
use crate::pop3::SessionConfig as Pop3Config;
use crate::pop3::connection::Pop3Service;
use crate::queue::admin::QueueAdmin;
use crate::queue::copies::Copies;
use crate::queue::copy_service::CopyService;
use crate::queue::notice::Notifier;
use crate::queue::{self, Spool};
use crate::quota::Quotas;
use crate::sieve;
use crate::sieve::deliver::Sieve;
use crate::smtp::connection::SmtpService;
use crate::smtp::rate::SendRate;
use crate::smtp::session::SessionConfig;
use crate::spill::{self, SpillDir};
use sirms_proto::budget::ConnectionBudget;
use sirms_proto::public_tls::{self as tls, TlsError};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("directory: {0}")]
    Directory(#[from] DirectoryError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Outbound(#[from] crate::outbound::OutboundError),
    #[error("{0}")]
    Inbound(#[from] crate::inbound::ConfigError),
    #[error("[auth] allow: {0}")]
    AuthAllow(#[from] sirms_proto::cidr::CidrError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("cluster TLS: {0}")]
    ClusterTls(#[from] sirms_proto::cluster_tls::ClusterTlsError),
    #[error("refusing to serve the Store and queue API on {0} with the default dev token: set [cluster] token")]
    InsecureToken(SocketAddr),
}

/// What a node shares with the cluster besides its mailboxes.
struct Member {
    directory: Arc<LiveDirectory>,
    metrics: Arc<NodeMetrics>,
    spool: Arc<Spool>,
    /// The queue runner's bell, for `sirms ctl queue flush`.
    wake: Arc<Notify>,
}

/// Registers with the router, serves this node's mailboxes and queue to the cluster, and
/// returns the store that reaches every user's home.
async fn join_cluster(
    config: &NodeConfig,
    routers: Vec<String>,
    own_store: Arc<dyn ReplicaStore>,
    member: Member,
    stopped: watch::Receiver<bool>,
) -> Result<(Arc<dyn MailStore>, Arc<SpoolPeers>, Triplets), NodeError> {
    let Member { directory, metrics, spool, wake } = member;
    let copies = Arc::new(Copies::open(config.data_dir.join("spool-copies")).map_err(StoreError::Io)?);
    let token = config.cluster.token.clone().unwrap_or_else(|| DEV_TOKEN.to_string());
    let tls = config.cluster_tls.as_ref().map(ClusterTls::load).transpose()?;
    let credentials = Credentials { token: token.clone(), tls };
    let node_id = config.node_id();
    let host = config.cluster.advertise_host.clone().unwrap_or_else(|| config.listen.smtp.ip().to_string());
    let mut store_endpoint = String::new();
    let mut serving = None;
    if let Some(addr) = config.cluster.store_listen {
        // The dev token is public: off loopback it would open every mailbox to anyone.
        if token == DEV_TOKEN && !addr.ip().is_loopback() {
            return Err(NodeError::InsecureToken(addr));
        }
        let listener = bind(addr).await?;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(addr.port());
        store_endpoint = format!("http://{host}:{port}");
        let store = StoreService::new(own_store.clone(), token.clone()).with_replica(own_store.clone()).into_server();
        let queue = QueueAdmin::new(spool.clone(), wake.clone(), token.clone()).into_server();
        let spool_copies = CopyService::new(copies.clone(), token.clone()).into_server();
        let routes = grpc::server().add_service(store).add_service(queue).add_service(spool_copies);
        serving = Some((addr, listener, routes, credentials.tls.clone()));
    }
    let port = |a: SocketAddr| u32::from(a.port());
    let node = sirms_proto::cluster::Node {
        id: node_id.clone(),
        host,
        weight: config.cluster.weight.unwrap_or(100),
        smtp_port: port(config.listen.smtp),
        submission_port: port(config.listen.submission),
        submissions_port: port(config.listen.submissions),
        imap_port: port(config.listen.imap),
        imaps_port: port(config.listen.imaps),
        pop3_port: port(config.listen.pop3),
        pop3s_port: port(config.listen.pop3s),
        sieve_port: config.listen.sieve.map_or(0, port),
        store_endpoint,
        drained: false,
        storage_only: false,
    };
    if let Some(files) = &config.cluster_tls {
        // Renewed at a router before it expires, and picked up without a restart.
        tokio::spawn(cluster_tls::enrol::keep_renewed(routers.clone(), credentials.clone(), files.clone()));
    }
    let endpoints: Endpoints = Default::default();
    let membership = Membership {
        node,
        routers,
        credentials: credentials.clone(),
        directory: directory.clone(),
        endpoints: endpoints.clone(),
        cache: config.data_dir.join("directory.cache"),
        metrics,
    };
    sirms_storage::durable::create_dir_all(&config.data_dir, "setup-dirs").map_err(StoreError::Io)?;
    if membership.load_cache() {
        tracing::info!("serving from the cached directory until the router answers");
    }
    let states = Arc::new(ReplicaStates::new(membership.routers.clone(), credentials.clone()));
    let triplets = Triplets::new(&membership.routers, &credentials)
        .map_err(|e| crate::inbound::ConfigError(format!("greylist: {e}")))?;
    tokio::spawn(membership.run(stopped.clone()));
    let unreachable = Arc::new(Unreachable::default());
    let peers = Arc::new(SpoolPeers::new(
        node_id.clone(),
        directory.clone(),
        endpoints.clone(),
        credentials.clone(),
        unreachable.clone(),
        Duration::from_secs(config.cluster.spool_takeover_secs.unwrap_or(DEFAULT_SPOOL_TAKEOVER_SECS)),
    ));
    tokio::spawn(peers.clone().watch_holders(copies, spool, wake, stopped.clone()));
    let home = Arc::new(
        HomeStore::new(node_id.clone(), own_store, directory.clone(), endpoints, credentials)
            .with_states(states.clone())
            .with_unreachable(unreachable),
    );
    if let Some((addr, listener, routes, server_tls)) = serving {
        // Served once the store that reaches every home exists: imports write through it.
        let routes = routes.add_service(ImportService::new(home.clone(), token).into_server());
        let mut stop = stopped.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.changed().await;
            };
            let served =
                cluster_tls::serve(routes, server_tls.as_ref(), ClientAuth::Required, listener, shutdown).await;
            if let Err(e) = served {
                tracing::error!(error = %e, "store and queue service failed");
            }
        });
        tracing::info!(%addr, "serving this node's mailboxes, queue and imports to the cluster");
    }
    tokio::spawn(catch_up::run(home.clone(), directory, states, node_id, stopped));
    Ok((home, peers, triplets))
}

/// How long a peer holding this node's spool copies waits, after this node stopped
/// answering, before it delivers them itself.
const DEFAULT_SPOOL_TAKEOVER_SECS: u64 = 300;

async fn bind(addr: SocketAddr) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr).await.map_err(|source| NodeError::Listen { addr, source })
}

/// Runs the node until `shutdown` resolves.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    // Everything under it is private: the directory cache (password hashes, DKIM keys), the
    // store and the spool.
    sirms_storage::durable::create_private_dir(&config.data_dir).map_err(StoreError::Io)?;
    let initial = DirectoryData::from_config(&config.directory)?;
    for user in initial.plain_password_users() {
        tracing::warn!(%user, "password stored in plain text; use `sirms hash-password`");
    }
    let routers = config.cluster.router_list();
    // A cluster node has no directory until its cache or a router gives it one.
    let directory = Arc::new(if routers.is_empty() { LiveDirectory::new(initial) } else { LiveDirectory::awaiting() });
    let (stop, stopped) = watch::channel(false);
    let mut local = None;
    let own_store: Arc<dyn ReplicaStore> = match &config.store.remote {
        Some(endpoint) => {
            let token = config.store.token.clone().unwrap_or_else(|| DEV_TOKEN.to_string());
            let tls = config.cluster_tls.as_ref().map(ClusterTls::load).transpose()?;
            Arc::new(RemoteStore::connect_with(endpoint, &Credentials { token, tls })?)
        }
        None => {
            let store = LocalStore::open(config.data_dir.join("store"))?;
            local = Some(store.clone());
            Arc::new(store)
        }
    };
    let send_rate = SendRate::new(
        config.limits.submission_recipients_per_hour,
        config.limits.submission_domain_recipients_per_hour,
    );
    let metrics = Arc::new(NodeMetrics::new(config.data_dir.join("queue").join("env")).with_send_rate(send_rate));
    let spool = Arc::new(Spool::open(config.data_dir.join("queue")).map_err(StoreError::Io)?);
    let wake = Arc::new(Notify::new());
    let (store, spool_peers, triplets): (Arc<dyn MailStore>, _, _) = if routers.is_empty() {
        (own_store as Arc<dyn MailStore>, None, None)
    } else {
        let member =
            Member { directory: directory.clone(), metrics: metrics.clone(), spool: spool.clone(), wake: wake.clone() };
        let (store, peers, triplets) = join_cluster(&config, routers, own_store, member, stopped.clone()).await?;
        (store, Some(peers), Some(triplets))
    };
    let store: Arc<dyn MailStore> = Arc::new(Measured::new(store, metrics.store.clone()));
    if let Some(addr) = config.listen.metrics {
        let listener = bind(addr).await?;
        tracing::info!(%addr, "metrics at /metrics");
        tokio::spawn(sirms_telemetry::http::serve(listener, metrics.clone(), stopped.clone()));
    }
    let (acceptor, certificates) = tls::acceptor(&config.tls, &config.hostname)?;
    metrics.watch_certificates(certificates);
    let throttle = Throttle::new(&config.auth, &config.trusted_proxies)?;
    let authenticator = Authenticator::new(directory.clone(), Arc::new(throttle)).counting(metrics.clone());
    let quotas = Quotas::new(store.clone(), directory.clone());
    let notifier = Notifier {
        hostname: config.hostname.clone(),
        directory: directory.clone(),
        spool: spool.clone(),
        spool_peers: spool_peers.clone(),
    };
    let delivery = Delivery::new(store.clone(), quotas.clone(), metrics.clone())
        .with_sieve(Arc::new(Sieve::new(store.clone(), notifier.clone())));
    let worker = queue::worker::Worker {
        spool: spool.clone(),
        delivery: delivery.clone(),
        outbound: Arc::new(Outbound::new(
            &config.outbound,
            &config.hostname,
            directory.clone(),
            &config.data_dir,
            metrics.tls_policy.clone(),
        )?),
        notifier: notifier.clone(),
        wake,
        metrics: metrics.clone(),
        spool_peers: spool_peers.clone(),
        reported: Arc::default(),
    };
    tokio::spawn(worker.run(stopped.clone()));
    let started = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    // Message ids name the spool's generation, which every start advances durably: a node
    // restarted within the same second (after a crash, say) cannot repeat an id of its last run.
    // The start time keeps ids of different nodes apart in the cluster's logs.
    let generation = spool.generation();
    let trusted = Arc::new(config.trusted_proxies.clone());
    let limits = &config.limits;

    let send_rate = metrics.send_rate.clone();
    let greylist = Greylist::new(&config.inbound.greylist, triplets, metrics.clone())?.map(Arc::new);
    let spill_threshold = spill::threshold();
    let smtp_session = |submission: bool| {
        Arc::new(SessionConfig {
            hostname: config.hostname.clone(),
            submission,
            tls_available: true,
            allow_plaintext_auth: config.allow_plaintext_auth,
            max_message_size: limits.max_message_size,
            spill_threshold,
            max_recipients: limits.max_recipients,
            max_hops: limits.max_hops,
            max_errors: limits.max_errors,
            max_auth_failures: limits.max_auth_failures,
            send_rate: send_rate.clone(),
            greylisting: !submission && greylist.is_some(),
        })
    };
    let spill_dir = Arc::new(SpillDir::open(&config.data_dir.join("spill")).map_err(StoreError::Io)?);
    let checks = Arc::new(Checks::new(&config.inbound, &config.hostname, &metrics)?);
    let dnsbl = Dnsbl::new(&config.inbound.dnsbl, &config.inbound.nameservers)?.map(Arc::new);
    let smtp_service = |submission: bool| {
        Arc::new(SmtpService {
            config: smtp_session(submission),
            directory: directory.clone(),
            authenticator: authenticator.clone(),
            delivery: delivery.clone(),
            spool: spool.clone(),
            spool_peers: spool_peers.clone(),
            tls: Some(acceptor.clone()),
            idle_timeout: Duration::from_secs(limits.smtp_idle_secs),
            id_prefix: id_prefix(&config.node_id(), started, generation),
            metrics: metrics.clone(),
            notifier: notifier.clone(),
            checks: checks.clone(),
            dnsbl: dnsbl.clone(),
            greylist: greylist.clone().filter(|_| !submission),
            spill: spill_dir.clone(),
        })
    };
    let budget = ConnectionBudget::new(limits.max_connections, limits.max_connections_per_ip);
    let settings = |service: &'static str, implicit_tls: bool, busy_reply: &'static [u8]| ListenerSettings {
        service,
        metrics: metrics.clone(),
        budget: budget.clone(),
        trusted_proxies: trusted.clone(),
        implicit_tls: implicit_tls.then(|| acceptor.clone()),
        busy_reply,
    };
    const SMTP_BUSY: &[u8] = b"421 4.7.0 too many connections, try again later\r\n";

    let smtp_listeners = [
        ("smtp", config.listen.smtp, false, false),
        ("submission", config.listen.submission, true, false),
        ("submissions", config.listen.submissions, true, true),
    ];
    for (name, addr, submission, implicit_tls) in smtp_listeners {
        let listener = bind(addr).await?;
        let service = smtp_service(submission);
        tracing::info!(service = name, %addr, hostname = %config.hostname, "listening");
        tokio::spawn(listener::serve(
            listener,
            settings(name, implicit_tls, SMTP_BUSY),
            move |conn| service.clone().handle(conn),
            stopped.clone(),
        ));
    }

    const POP3_BUSY: &[u8] = b"-ERR [SYS/TEMP] too many connections, try again later\r\n";
    for (name, addr, implicit_tls) in [("pop3", config.listen.pop3, false), ("pop3s", config.listen.pop3s, true)] {
        let listener = bind(addr).await?;
        let mut session = Pop3Config::new(config.hostname.clone());
        session.plaintext_without_tls = config.allow_plaintext_auth;
        session.max_auth_failures = limits.max_auth_failures;
        let service = Arc::new(Pop3Service {
            config: session,
            authenticator: authenticator.clone(),
            store: store.clone(),
            tls: Some(acceptor.clone()),
            idle_timeout: Duration::from_secs(limits.pop3_idle_secs),
        });
        tracing::info!(service = name, %addr, "listening");
        tokio::spawn(listener::serve(
            listener,
            settings(name, implicit_tls, POP3_BUSY),
            move |conn| service.clone().handle(conn),
            stopped.clone(),
        ));
    }

    if let Some(addr) = config.listen.sieve {
        const SIEVE_BUSY: &[u8] = b"BYE (TRYLATER) \"too many connections, try again later\"\r\n";
        let listener = bind(addr).await?;
        let service = Arc::new(SieveService {
            config: sieve::managesieve_config(&config.hostname, config.allow_plaintext_auth, limits.max_auth_failures),
            authenticator: authenticator.clone(),
            store: store.clone(),
            tls: Some(acceptor.clone()),
            idle_timeout: Duration::from_secs(limits.smtp_idle_secs),
        });
        tracing::info!(service = "sieve", %addr, "listening");
        tokio::spawn(listener::serve(
            listener,
            settings("sieve", false, SIEVE_BUSY),
            move |conn| service.clone().handle(conn),
            stopped.clone(),
        ));
    }

    const IMAP_BUSY: &[u8] = b"* BYE [UNAVAILABLE] too many connections, try again later\r\n";
    let imap_limits = ImapLimits {
        max_append: limits.imap_max_append,
        max_bad_commands: limits.max_errors,
        max_auth_failures: limits.max_auth_failures,
        ..ImapLimits::default()
    };
    for (name, addr, implicit_tls) in [("imap", config.listen.imap, false), ("imaps", config.listen.imaps, true)] {
        let listener = bind(addr).await?;
        let service = Arc::new(ImapService {
            hostname: config.hostname.clone(),
            authenticator: authenticator.clone(),
            quotas: quotas.clone(),
            store: store.clone(),
            tls: Some(acceptor.clone()),
            allow_plaintext_auth: config.allow_plaintext_auth,
            idle_timeout: Duration::from_secs(limits.imap_idle_secs),
            idle_keepalive: (limits.imap_idle_keepalive_secs > 0)
                .then(|| Duration::from_secs(limits.imap_idle_keepalive_secs)),
            limits: imap_limits,
            spill: spill_dir.clone(),
            spill_threshold,
        });
        tracing::info!(service = name, %addr, "listening");
        tokio::spawn(listener::serve(
            listener,
            settings(name, implicit_tls, IMAP_BUSY),
            move |conn| service.clone().handle(conn),
            stopped.clone(),
        ));
    }

    shutdown.await;
    tracing::info!("node stopping");
    let _ = stop.send(true);
    if let Some(store) = local {
        store.flush().await?;
    }
    Ok(())
}

/// The start of this run's message ids: the node's id (as far as queue ids allow: letters,
/// digits and `-`), its start time and the spool's generation. Ids must be unique in the
/// cluster, not just on the node: nodes started in the same second share the rest, and another
/// node keeps spool copies and delivery keys under them.
fn id_prefix(node_id: &str, started: u64, generation: u64) -> String {
    let node: String = node_id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(32).collect();
    format!("{node}-{started:x}-{generation:x}.")
}

#[cfg(test)]
mod tests {
    use super::id_prefix;

    #[test]
    fn nodes_started_together_have_ids_of_their_own() {
        assert_ne!(id_prefix("node1", 0x65, 1), id_prefix("node2", 0x65, 1));
        assert_eq!(id_prefix("node 1/é", 0x65, 1), "node1-65-1.", "only what a queue id may hold");
    }
}
