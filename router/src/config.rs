//! `router.toml`: every key has a default, so `sirms router` runs with no config at all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The token an unconfigured cluster uses; refused on non-loopback addresses.
pub const DEV_TOKEN: &str = "sirms-dev-token";

/// The whole router config.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// The directory database.
    pub data_dir: PathBuf,
    /// Cluster token for the admin and directory APIs.
    pub token: String,
    /// Admin + Directory gRPC API.
    pub admin_listen: SocketAddr,
    pub listen: PublicListen,
    /// Seconds between active health checks.
    pub health_interval_secs: u64,
    /// Seconds a node has to accept a forwarded connection before the next is tried.
    pub connect_timeout_secs: u64,
    /// Seconds a forwarded connection may stay silent both ways.
    pub idle_timeout_secs: u64,
}

/// The public listeners, one per service.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PublicListen {
    pub smtp: SocketAddr,
    pub submission: SocketAddr,
    pub submissions: SocketAddr,
    pub imap: SocketAddr,
    pub imaps: SocketAddr,
    pub pop3: SocketAddr,
    pub pop3s: SocketAddr,
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Default for PublicListen {
    fn default() -> Self {
        // Unprivileged stand-ins for 25, 587, 465, 143, 993, 110, 995.
        PublicListen {
            smtp: local(2525),
            submission: local(2587),
            submissions: local(2465),
            imap: local(2143),
            imaps: local(2993),
            pop3: local(2110),
            pop3s: local(2995),
        }
    }
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            data_dir: PathBuf::from("sirms-data/router"),
            token: DEV_TOKEN.to_string(),
            admin_listen: local(7070),
            listen: PublicListen::default(),
            health_interval_secs: 2,
            connect_timeout_secs: 2,
            idle_timeout_secs: 31 * 60,
        }
    }
}

impl RouterConfig {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> Result<RouterConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("invalid config {}: {e}", path.display()))
    }

    /// The forwarder's timeouts.
    pub fn forward(&self) -> crate::forward::ForwardConfig {
        crate::forward::ForwardConfig {
            connect_timeout: Duration::from_secs(self.connect_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs.max(1)),
            ..Default::default()
        }
    }
}
