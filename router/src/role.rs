//! The `sirms router` role: the directory, the admin API and the public listeners.

use sirms_proto::budget::ConnectionBudget;
use std::sync::Arc;

use tokio::sync::watch;

use crate::admin::AdminService;
use crate::config::{DEV_TOKEN, DirectoryKind, Mode, RouterConfig};
use crate::directory::etcd::EtcdStore;
use crate::directory::{ClusterDirectory, DirectoryError};
use crate::enrol::{EnrolmentService, IssuerError};
use crate::etcd::{EtcdClient, EtcdError};
use crate::membership::Membership;
use crate::server::{self, Router};
use crate::status_page::StatusPage;
use crate::status_page::errors::RecentErrors;
use sirms_proto::cluster_tls::{self, ClientAuth, ClusterTls};

/// Why the router stopped.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("directory: {0}")]
    Directory(#[from] DirectoryError),
    #[error("directory: {0}")]
    Etcd(#[from] EtcdError),
    #[error("refusing to serve the admin API on {0} with the default dev token: set `token`")]
    InsecureToken(std::net::SocketAddr),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("admin API: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("cluster TLS: {0}")]
    ClusterTls(#[from] sirms_proto::cluster_tls::ClusterTlsError),
    #[error("[issuer]: {0}")]
    Issuer(#[from] IssuerError),
    #[error("config: {0}")]
    Config(String),
    #[error("{0}")]
    Autoconfig(#[from] crate::autoconfig::StartError),
    #[error("refusing to serve the status page on {0} with the default dev token: set `token`")]
    InsecureStatusToken(std::net::SocketAddr),
    #[error("{0}")]
    StatusPage(#[from] crate::status_page::StartError),
}

/// The directory the config names, and node membership by lease when it is in etcd.
fn open_directory(config: &RouterConfig) -> Result<(ClusterDirectory, Option<Membership>), RouterError> {
    let copies = config.copies().map_err(RouterError::Config)?;
    let (directory, membership) = match config.directory {
        DirectoryKind::Sled => (ClusterDirectory::open(&config.data_dir.join("directory"))?, None),
        DirectoryKind::Etcd => {
            let timeout = std::time::Duration::from_millis(config.etcd.timeout_ms.max(100));
            let tls = config.etcd.tls.as_ref().map(ClusterTls::load).transpose()?.map(|tls| tls.tonic_client());
            let client = Arc::new(EtcdClient::with_tls(&config.etcd.endpoints, timeout, tls)?);
            let (store, state) = EtcdStore::open(client.clone(), &config.etcd.prefix);
            let membership = Membership::start(client, &config.etcd.prefix);
            (ClusterDirectory::new(Box::new(store), state), Some(membership))
        }
    };
    Ok((directory.with_copies(copies), membership))
}

/// How often a router removes the greylisting records that ran out (and counts the rest).
const GREYLIST_PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Prunes the greylisting records at start and then every [`GREYLIST_PRUNE_EVERY`]: expired
/// records go, and the count that bounds the store is taken afresh. With etcd every router
/// prunes; a removal is conditional, so they never undo each other's writes.
async fn prune_greylist(router: Arc<Router>, mut stopped: watch::Receiver<bool>) {
    loop {
        match router.directory().prune_greylist().await {
            Ok(left) => tracing::debug!(left, "greylisting records pruned"),
            Err(e) => tracing::warn!(error = %e, "cannot prune the greylisting records"),
        }
        tokio::select! {
            _ = tokio::time::sleep(GREYLIST_PRUNE_EVERY) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// Runs the router until `shutdown` resolves.
pub async fn run(config: RouterConfig, shutdown: impl Future<Output = ()>) -> Result<(), RouterError> {
    if config.token == DEV_TOKEN && !config.admin_listen.ip().is_loopback() {
        return Err(RouterError::InsecureToken(config.admin_listen));
    }
    // The page shows the whole cluster to whoever has the token: not the one everyone knows.
    if let Some(status) = &config.status
        && config.token == DEV_TOKEN
        && !status.listen.ip().is_loopback()
    {
        return Err(RouterError::InsecureStatusToken(status.listen));
    }
    // The directory database holds password hashes and DKIM private keys: owner-only.
    sirms_storage::durable::create_private_dir(&config.data_dir)?;
    let (directory, membership) = open_directory(&config)?;
    tracing::info!(directory = %directory.describe(), "directory");
    let tls = config.cluster_tls.as_ref().map(ClusterTls::load).transpose()?;
    // The router's own credentials, for probing storage nodes' Store service.
    let credentials = cluster_tls::Credentials { token: config.token.clone(), tls: tls.clone() };
    let router = Router::new(Arc::new(directory), membership, &config, credentials);
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(crate::failover::run(router.clone(), stopped.clone()));
    tokio::spawn(prune_greylist(router.clone(), stopped.clone()));

    let admin_listener = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {} (admin): {e}", config.admin_listen)))?;
    tracing::info!(addr = %config.admin_listen, "admin API listening");
    if let Some(addr) = config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr} (metrics): {e}")))?;
        tracing::info!(%addr, "metrics at /metrics");
        let scrape = Arc::new(crate::scrape::Scrape(router.clone()));
        tokio::spawn(sirms_telemetry::http::serve(listener, scrape, stopped.clone()));
    }
    if let Some(autoconfig) = &config.autoconfig {
        let directory = router.directory().clone();
        crate::autoconfig::start(autoconfig, &config.listen, directory, stopped.clone()).await?;
    }
    if let Some(status) = &config.status {
        let page = StatusPage::new(router.clone(), &config.token, RecentErrors::global());
        crate::status_page::start(status.listen, page, stopped.clone()).await?;
    }
    let (admin, directory_service) = AdminService::new(router.clone(), &config.token).into_servers();
    let mut admin_stop = stopped.clone();
    if tls.is_some() {
        tracing::info!("admin and directory API over mutual TLS");
    }
    let enrolment = EnrolmentService::new(
        router.clone(),
        config.issuer.as_ref(),
        config.cluster_tls.as_ref().map(|files| files.ca.as_path()),
    )?;
    if config.issuer.is_some() && config.cluster_tls.is_none() {
        tracing::warn!("[issuer] is set but [cluster_tls] is not: this router issues no certificates");
    }
    let routes = (tonic::transport::Server::builder().add_service(admin))
        .add_service(directory_service)
        .add_service(enrolment.into_server());
    let admin_task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = admin_stop.changed().await;
        };
        // Optional client certificates: a node joining with an invitation has none yet, and
        // every call but the join checks for one (`cluster_tls::authorize`).
        cluster_tls::serve(routes, tls.as_ref(), ClientAuth::Optional, admin_listener, shutdown).await
    });
    let data_plane = tokio::spawn({
        let (router, listen, nat) = (router.clone(), config.listen.clone(), config.nat.clone());
        let mode = config.mode;
        let budget = ConnectionBudget::new(config.max_connections, config.max_connections_per_ip);
        async move {
            match mode {
                Mode::Proxy => server::serve(router, &listen, budget, stopped).await,
                Mode::Nat => server::serve_nat(router, &listen, &nat, stopped).await,
            }
        }
    });
    tokio::select! {
        _ = shutdown => {}
        result = data_plane => {
            // The data plane only returns early when a listener could not be bound or the
            // TUN device failed.
            if let Ok(Err(e)) = result {
                return Err(e.into());
            }
        }
    }
    tracing::info!("router stopping");
    let _ = stop.send(true);
    if let Ok(Err(e)) = admin_task.await {
        return Err(e.into());
    }
    Ok(())
}
