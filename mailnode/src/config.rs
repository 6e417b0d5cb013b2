//! `node.toml`: every key has a default, so `sirms node` runs with no config at all.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::auth::throttle::ThrottleConfig;
use crate::cluster::ClusterConfig;
use crate::directory::DirectoryConfig;
use crate::inbound::InboundConfig;
use crate::outbound::OutboundConfig;
use sirms_proto::public_tls::TlsConfig;

/// The whole node config.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// The name in greetings and `Received:` headers: which node served.
    pub hostname: String,
    /// Local mail store root (unless `store.remote` is set).
    pub data_dir: PathBuf,
    /// Routers allowed (and required) to start connections with a PROXY v2 header.
    pub trusted_proxies: Vec<IpAddr>,
    /// Allow AUTH/LOGIN/USER without TLS (tests and closed networks only).
    pub allow_plaintext_auth: bool,
    pub listen: Listen,
    pub tls: TlsConfig,
    pub limits: Limits,
    /// Failed-login throttling (`[auth]`).
    pub auth: ThrottleConfig,
    pub store: StoreConfig,
    /// Delivery to foreign domains (`[outbound]`).
    pub outbound: OutboundConfig,
    pub directory: DirectoryConfig,
    pub cluster: ClusterConfig,
    /// `[cluster_tls] ca, cert, key`: mutual TLS on every cluster connection (off when unset).
    pub cluster_tls: Option<sirms_proto::cluster_tls::TlsFiles>,
    /// What mail is checked for at the end of DATA (`[inbound]`; nothing by default).
    pub inbound: InboundConfig,
}

/// Listener addresses.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    pub smtp: SocketAddr,
    pub submission: SocketAddr,
    pub submissions: SocketAddr,
    pub pop3: SocketAddr,
    pub pop3s: SocketAddr,
    pub imap: SocketAddr,
    pub imaps: SocketAddr,
    /// ManageSieve (RFC 5804, port 4190; off when unset).
    pub sieve: Option<SocketAddr>,
    /// Prometheus `/metrics` (off when unset).
    pub metrics: Option<SocketAddr>,
}

/// Protocol limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_message_size: usize,
    pub max_recipients: usize,
    /// Most `Received:`/`Delivered-To:` headers an arriving message may carry (Postfix's
    /// `hopcount_limit`): more means a mail loop.
    pub max_hops: usize,
    /// Connections the node holds at once, over all its listeners.
    pub max_connections: usize,
    /// The same from one client address (the real one, from the router's PROXY header).
    pub max_connections_per_ip: usize,
    pub smtp_idle_secs: u64,
    pub pop3_idle_secs: u64,
    /// IMAP autologout, IDLE included (RFC 3501 §5.4: at least 30 minutes).
    pub imap_idle_secs: u64,
    /// How often an IDLE session hears `* OK Still here`, so that NATs and firewalls that drop
    /// silent connections keep it (Dovecot's default is 2 minutes); 0: never.
    pub imap_idle_keepalive_secs: u64,
    /// Largest message an IMAP client may APPEND.
    pub imap_max_append: u32,
    pub max_errors: u32,
    pub max_auth_failures: u32,
    /// Recipients one authenticated login may send to in an hour, on this node; 0: no limit.
    pub submission_recipients_per_hour: u32,
    /// The same for all logins of one domain together.
    pub submission_domain_recipients_per_hour: u32,
}

/// Where mailboxes live.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// A storage node's Store endpoint (`http://host:7400`); unset means the local store.
    pub remote: Option<String>,
    /// Cluster token for the remote store.
    pub token: Option<String>,
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Default for Listen {
    fn default() -> Self {
        // Unprivileged ports so `sirms node` runs as any user, clear of the router's 25xx defaults
        // on the same host (`sirms dev`); production configs say 25, 587…
        Listen {
            smtp: local(3025),
            submission: local(3587),
            submissions: local(3465),
            pop3: local(3110),
            pop3s: local(3995),
            imap: local(3143),
            imaps: local(3993),
            sieve: None,
            metrics: None,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 100,
            max_hops: 50,
            max_connections: 10_000,
            max_connections_per_ip: 50,
            smtp_idle_secs: 300,
            pop3_idle_secs: 600,
            imap_idle_secs: 30 * 60,
            imap_idle_keepalive_secs: 120,
            imap_max_append: 64 * 1024 * 1024,
            max_errors: 20,
            max_auth_failures: 3,
            submission_recipients_per_hour: 1000,
            submission_domain_recipients_per_hour: 10_000,
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            hostname: system_hostname(),
            data_dir: PathBuf::from("sirms-data/node"),
            trusted_proxies: Vec::new(),
            allow_plaintext_auth: false,
            listen: Listen::default(),
            tls: TlsConfig::default(),
            limits: Limits::default(),
            auth: ThrottleConfig::default(),
            store: StoreConfig::default(),
            outbound: OutboundConfig::default(),
            directory: DirectoryConfig::default(),
            cluster: ClusterConfig::default(),
            cluster_tls: None,
            inbound: InboundConfig::default(),
        }
    }
}

/// The machine's host name, or `localhost`.
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Config loading errors.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
}

impl NodeConfig {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        toml::from_str(&text)
            .map_err(|source| ConfigError::Parse { path: path.to_path_buf(), source: Box::new(source) })
    }

    /// The node's id in the cluster: `[cluster] node_id`, else the first label of `hostname`.
    pub fn node_id(&self) -> String {
        let first_label = || self.hostname.split('.').next().unwrap_or("node").to_string();
        self.cluster.node_id.clone().unwrap_or_else(first_label)
    }
}
