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
use crate::config::NodeConfig;
use crate::delivery::Delivery;
use crate::directory::{DirectoryData, DirectoryError, LiveDirectory};
use crate::imap::ImapService;
use crate::imap::connection::ImapLimits;
use crate::metrics::NodeMetrics;
use crate::net::listener::{self, ListenerSettings};
use crate::net::tls::{self, TlsError};
use crate::outbound::Outbound;
use crate::pop3::SessionConfig as Pop3Config;
use crate::pop3::connection::{MaildropLocks, Pop3Service};
use crate::queue::admin::QueueAdmin;
use crate::queue::{self, Spool};
use crate::smtp::connection::SmtpService;
use crate::smtp::session::SessionConfig;

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
    new_store: bool,
    member: Member,
    stopped: watch::Receiver<bool>,
) -> Result<Arc<dyn MailStore>, NodeError> {
    let Member { directory, metrics, spool, wake } = member;
    let token = config.cluster.token.clone().unwrap_or_else(|| DEV_TOKEN.to_string());
    let tls = config.cluster_tls.as_ref().map(ClusterTls::load).transpose()?;
    let credentials = Credentials { token: token.clone(), tls };
    let node_id = config
        .cluster
        .node_id
        .clone()
        .unwrap_or_else(|| config.hostname.split('.').next().unwrap_or("node").to_string());
    let host = config.cluster.advertise_host.clone().unwrap_or_else(|| config.listen.smtp.ip().to_string());
    let mut store_endpoint = String::new();
    if let Some(addr) = config.cluster.store_listen {
        // The dev token is public: off loopback it would open every mailbox to anyone.
        if token == DEV_TOKEN && !addr.ip().is_loopback() {
            return Err(NodeError::InsecureToken(addr));
        }
        let listener = bind(addr).await?;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(addr.port());
        store_endpoint = format!("http://{host}:{port}");
        let store = StoreService::new(own_store.clone(), token.clone()).with_replica(own_store.clone()).into_server();
        let queue = QueueAdmin::new(spool, wake, token.clone()).into_server();
        let mut stop = stopped.clone();
        let server_tls = credentials.tls.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.changed().await;
            };
            let routes = grpc::server().add_service(store).add_service(queue);
            let served =
                cluster_tls::serve(routes, server_tls.as_ref(), ClientAuth::Required, listener, shutdown).await;
            if let Err(e) = served {
                tracing::error!(error = %e, "store and queue service failed");
            }
        });
        tracing::info!(%addr, "serving this node's mailboxes and queue to the cluster");
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
    std::fs::create_dir_all(&config.data_dir).map_err(StoreError::Io)?;
    if membership.load_cache() {
        tracing::info!("serving from the cached directory until the router answers");
    }
    let states = Arc::new(ReplicaStates::new(membership.routers.clone(), credentials.clone()));
    tokio::spawn(membership.run(stopped.clone()));
    let home = Arc::new(
        HomeStore::new(node_id.clone(), own_store, directory.clone(), endpoints, credentials)
            .with_states(states.clone()),
    );
    if new_store {
        tokio::spawn(catch_up::report_lost_copies(directory.clone(), states.clone(), node_id.clone(), stopped.clone()));
    }
    tokio::spawn(catch_up::run(home.clone(), directory, states, node_id, stopped));
    Ok(home)
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr).await.map_err(|source| NodeError::Listen { addr, source })
}

/// Runs the node until `shutdown` resolves.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    let initial = DirectoryData::from_config(&config.directory)?;
    for user in initial.plain_password_users() {
        tracing::warn!(%user, "password stored in plain text; use `sirms hash-password`");
    }
    let routers = config.cluster.router_list();
    // A cluster node has no directory until its cache or a router gives it one.
    let directory = Arc::new(if routers.is_empty() { LiveDirectory::new(initial) } else { LiveDirectory::awaiting() });
    let (stop, stopped) = watch::channel(false);
    let mut local = None;
    // A local store opened where there was none holds none of the copies the directory may
    // say this node keeps (a new disk, a lost volume).
    let mut new_store = false;
    let own_store: Arc<dyn ReplicaStore> = match &config.store.remote {
        Some(endpoint) => {
            let token = config.store.token.clone().unwrap_or_else(|| DEV_TOKEN.to_string());
            let tls = config.cluster_tls.as_ref().map(ClusterTls::load).transpose()?;
            Arc::new(RemoteStore::connect_with(endpoint, &Credentials { token, tls })?)
        }
        None => {
            new_store = !config.data_dir.join("store").join("mail").is_dir();
            let store = LocalStore::open(config.data_dir.join("store"))?;
            local = Some(store.clone());
            Arc::new(store)
        }
    };
    let metrics = Arc::new(NodeMetrics::new(config.data_dir.join("queue").join("env")));
    let spool = Arc::new(Spool::open(config.data_dir.join("queue")).map_err(StoreError::Io)?);
    let wake = Arc::new(Notify::new());
    let store: Arc<dyn MailStore> = if routers.is_empty() {
        own_store as Arc<dyn MailStore>
    } else {
        let member =
            Member { directory: directory.clone(), metrics: metrics.clone(), spool: spool.clone(), wake: wake.clone() };
        join_cluster(&config, routers, own_store, new_store, member, stopped.clone()).await?
    };
    let store: Arc<dyn MailStore> = Arc::new(Measured::new(store, metrics.store.clone()));
    if let Some(addr) = config.listen.metrics {
        let listener = bind(addr).await?;
        tracing::info!(%addr, "metrics at /metrics");
        tokio::spawn(sirms_telemetry::http::serve(listener, metrics.clone(), stopped.clone()));
    }
    let acceptor = tls::acceptor(&config.tls, &config.hostname)?;
    let throttle = Throttle::new(&config.auth, &config.trusted_proxies)?;
    let authenticator = Authenticator::new(directory.clone(), Arc::new(throttle)).counting(metrics.clone());
    let delivery = Delivery::new(store.clone(), metrics.clone());
    let worker = queue::worker::Worker {
        spool: spool.clone(),
        delivery: delivery.clone(),
        outbound: Arc::new(Outbound::new(&config.outbound, &config.hostname, directory.clone())?),
        directory: directory.clone(),
        hostname: config.hostname.clone(),
        wake,
        metrics: metrics.clone(),
    };
    tokio::spawn(worker.run(stopped.clone()));
    let started = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    // Nodes started in the same second must not hand out the same message ids: add a
    // per-process random part (RandomState is seeded from the OS).
    let nonce = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), started) as u16;
    let trusted = Arc::new(config.trusted_proxies.clone());
    let limits = &config.limits;

    let smtp_session = |submission: bool| {
        Arc::new(SessionConfig {
            hostname: config.hostname.clone(),
            submission,
            tls_available: true,
            allow_plaintext_auth: config.allow_plaintext_auth,
            max_message_size: limits.max_message_size,
            max_recipients: limits.max_recipients,
            max_errors: limits.max_errors,
            max_auth_failures: limits.max_auth_failures,
        })
    };
    let smtp_service = |submission: bool| {
        Arc::new(SmtpService {
            config: smtp_session(submission),
            directory: directory.clone(),
            authenticator: authenticator.clone(),
            delivery: delivery.clone(),
            spool: spool.clone(),
            tls: Some(acceptor.clone()),
            idle_timeout: Duration::from_secs(limits.smtp_idle_secs),
            id_prefix: format!("{started:x}{nonce:04x}."),
            metrics: metrics.clone(),
        })
    };
    let settings = |service: &'static str, implicit_tls: bool, busy_reply: &'static [u8]| ListenerSettings {
        service,
        metrics: metrics.clone(),
        max_connections: limits.max_connections,
        max_per_ip: limits.max_connections_per_ip,
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
    let locks = Arc::new(MaildropLocks::default());
    for (name, addr, implicit_tls) in [("pop3", config.listen.pop3, false), ("pop3s", config.listen.pop3s, true)] {
        let listener = bind(addr).await?;
        let mut session = Pop3Config::new(config.hostname.clone());
        session.plaintext_without_tls = config.allow_plaintext_auth;
        session.max_auth_failures = limits.max_auth_failures;
        let service = Arc::new(Pop3Service {
            config: session,
            authenticator: authenticator.clone(),
            store: store.clone(),
            locks: locks.clone(),
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
            directory: directory.clone(),
            store: store.clone(),
            tls: Some(acceptor.clone()),
            allow_plaintext_auth: config.allow_plaintext_auth,
            idle_timeout: Duration::from_secs(limits.imap_idle_secs),
            limits: imap_limits,
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
