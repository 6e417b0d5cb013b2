//! The `sirms storage` role: a Store gRPC service over a `LocalStore`, nothing else.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sirms_proto::cluster_tls::ClusterTls;

use crate::grpc::StoreService;
use crate::local::LocalStore;
use crate::measured::{Measured, StoreMetrics};

/// The token `sirms dev` and an unconfigured storage node use; fine on loopback only.
pub const DEV_TOKEN: &str = "sirms-dev-token";

/// `storage.toml`: every key has a default, so an empty file (or none) works for dev.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Where the Store gRPC service listens.
    pub listen: SocketAddr,
    /// The store root: Maildirs under `mail/`, the index under `index/`.
    pub data_dir: PathBuf,
    /// The cluster token every caller must present.
    pub token: String,
    /// Where Prometheus scrapes `/metrics` (off when unset).
    pub metrics_listen: Option<SocketAddr>,
    /// `[cluster_tls] ca, cert, key`: mutual TLS on the Store service (off when unset).
    pub cluster_tls: Option<sirms_proto::cluster_tls::TlsFiles>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
            data_dir: PathBuf::from("sirms-data/storage"),
            token: DEV_TOKEN.to_string(),
            metrics_listen: None,
            cluster_tls: None,
        }
    }
}

/// Errors of loading a config or running the role.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error("cluster TLS: {0}")]
    ClusterTls(#[from] sirms_proto::cluster_tls::ClusterTlsError),
    #[error("cannot read {path}: {source}")]
    ReadConfig { path: PathBuf, source: std::io::Error },
    #[error("invalid config {path}: {source}")]
    ParseConfig { path: PathBuf, source: Box<toml::de::Error> },
    #[error("refusing to listen on {0} with the default dev token: set `token` in the config")]
    InsecureToken(SocketAddr),
    #[error("store: {0}")]
    Store(#[from] crate::error::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

impl StorageConfig {
    /// Reads a TOML config file.
    pub fn load(path: &Path) -> Result<StorageConfig, RoleError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| RoleError::ReadConfig { path: path.to_path_buf(), source })?;
        toml::from_str(&text)
            .map_err(|source| RoleError::ParseConfig { path: path.to_path_buf(), source: Box::new(source) })
    }
}

/// Runs the storage role until `shutdown` resolves, then flushes the index.
pub async fn run(config: StorageConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), RoleError> {
    if config.token == DEV_TOKEN && !config.listen.ip().is_loopback() {
        return Err(RoleError::InsecureToken(config.listen));
    }
    let store = LocalStore::open(&config.data_dir)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| RoleError::Listen { addr: config.listen, source })?;
    let addr = listener.local_addr().unwrap_or(config.listen);
    let metrics = Arc::new(StoreMetrics::default());
    let (stop_metrics, metrics_stopped) = tokio::sync::watch::channel(false);
    if let Some(addr) = config.metrics_listen {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|source| RoleError::Listen { addr, source })?;
        tracing::info!(%addr, "metrics at /metrics");
        tokio::spawn(sirms_telemetry::http::serve(listener, metrics.clone(), metrics_stopped));
    }
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "storage node serving the Store service");
    let measured = Measured::new(Arc::new(store.clone()), metrics);
    let tls = config.cluster_tls.as_ref().map(ClusterTls::load).transpose()?;
    StoreService::new(Arc::new(measured), config.token)
        .with_replica(Arc::new(store.clone()))
        .serve(listener, tls.as_ref(), shutdown)
        .await?;
    let _ = stop_metrics.send(true);
    store.flush().await?;
    tracing::info!("storage node stopped");
    Ok(())
}
