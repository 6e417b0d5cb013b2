//! `router.toml`: every key has a default, so `sirms router` runs with no config at all.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
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
    /// Prometheus `/metrics` (off when unset).
    pub metrics_listen: Option<SocketAddr>,
    pub listen: PublicListen,
    /// Seconds between active health checks.
    pub health_interval_secs: u64,
    /// Seconds a node has to accept a forwarded connection before the next is tried.
    pub connect_timeout_secs: u64,
    /// Seconds a forwarded connection may stay silent both ways.
    pub idle_timeout_secs: u64,
    /// Client connections the router holds at once, over all its public ports (proxy mode).
    pub max_connections: usize,
    /// The same from one client address.
    pub max_connections_per_ip: usize,
    /// How connections reach the nodes: proxied (the default) or translated packets.
    pub mode: Mode,
    /// NAT mode's device, addresses and flow table.
    pub nat: NatConfig,
    /// Where the directory is kept: the router's own sled database, or etcd.
    pub directory: DirectoryKind,
    /// `[etcd]`: used when `directory = "etcd"`.
    pub etcd: EtcdConfig,
    /// Copies of each mailbox: 2 (the default) gives every user a replica on a second
    /// store-capable node when the cluster has one; 1 picks no replica.
    pub replicas: u8,
    /// `[cluster_tls] ca, cert, key`: mutual TLS on the Admin and Directory API (off when unset).
    pub cluster_tls: Option<sirms_proto::cluster_tls::TlsFiles>,
    /// `[issuer] cert, key`: the cluster's issuing CA, with which this router gives invited
    /// nodes their certificates (`sirms join`) and renews them (off when unset).
    pub issuer: Option<IssuerConfig>,
    /// `[autoconfig]`: mail clients' autoconfiguration and the MTA-STS policy over HTTPS
    /// (off when unset).
    pub autoconfig: Option<AutoconfigConfig>,
    /// `[status] listen`: the status page for people, over plain HTTP behind the admin token
    /// (off when unset).
    pub status: Option<StatusConfig>,
}

/// `[status]`: the read-only status page (`router/src/status_page/`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusConfig {
    /// Where its plain-HTTP listener binds: loopback or a private management address, since
    /// the token travels readably.
    pub listen: SocketAddr,
}

/// `[autoconfig]`: the HTTPS listener that tells mail clients (Thunderbird, Outlook, Apple
/// Mail) and sending servers (MTA-STS) how to reach the cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoconfigConfig {
    /// Where the HTTPS listener binds.
    pub listen: SocketAddr,
    /// The public name of the cluster's mail service (`mail.example.com`), which clients
    /// are told to connect to and MTA-STS names as the MX by default.
    pub hostname: String,
    /// The provider's name clients show (default: the user's domain).
    #[serde(default)]
    pub display_name: Option<String>,
    /// `[autoconfig.tls] cert, key, [[names]]`: as a node's `[tls]`; without them a
    /// self-signed certificate for `hostname`, which clients refuse (tests only).
    #[serde(default)]
    pub tls: sirms_proto::public_tls::TlsConfig,
    /// `[autoconfig.mta_sts]`: the MTA-STS policy served to senders.
    #[serde(default)]
    pub mta_sts: MtaStsConfig,
}

/// `[autoconfig.mta_sts]`: the policy at `https://mta-sts.DOMAIN/.well-known/mta-sts.txt`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MtaStsConfig {
    /// `enforce`, `testing` (the default: failures reported, mail still delivered) or `none`.
    pub mode: crate::autoconfig::mta_sts::Mode,
    /// Seconds senders cache the policy (default a week; RFC 8461 allows up to a year).
    pub max_age: Option<u64>,
    /// The MX names senders may deliver to (default: `hostname`); `*.example.com` allowed.
    pub mx: Vec<String>,
}

impl AutoconfigConfig {
    /// Refuses names that are no DNS names and a `max_age` over RFC 8461's year.
    pub fn check(&self) -> Result<(), String> {
        if !crate::autoconfig::is_dns_name(&self.hostname) {
            return Err(format!("autoconfig.hostname {:?} is not a DNS name", self.hostname));
        }
        for mx in &self.mta_sts.mx {
            if !crate::autoconfig::is_dns_name(mx.strip_prefix("*.").unwrap_or(mx)) {
                return Err(format!("autoconfig.mta_sts.mx {mx:?} is not a DNS name"));
            }
        }
        if self.mta_sts.max_age.is_some_and(|age| age > crate::autoconfig::mta_sts::MAX_AGE_LIMIT) {
            return Err(format!("autoconfig.mta_sts.max_age is over {}", crate::autoconfig::mta_sts::MAX_AGE_LIMIT));
        }
        Ok(())
    }
}

/// `[issuer]`: the intermediate CA `sirms ctl ca init` makes for routers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The issuer's certificate (PEM), signed by the cluster CA.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// Seconds a certificate it issues is valid (default 90 days); nodes renew theirs when a
    /// third of this is left.
    #[serde(default = "default_issued_secs")]
    pub lifetime_secs: u64,
}

fn default_issued_secs() -> u64 {
    sirms_proto::cluster_tls::ca::days(sirms_proto::cluster_tls::ca::JOINED_DAYS).as_secs()
}

/// Where the cluster directory lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectoryKind {
    /// A sled database in `data_dir`: one router, no other service (the default).
    #[default]
    Sled,
    /// An etcd cluster that every router shares (docs/CONTROL-PLANE.md).
    Etcd,
}

/// `[etcd]`: the cluster that holds the directory when several routers share it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EtcdConfig {
    /// Client URLs of the members (`host:port` or `http://host:port`); any one that answers
    /// with a leader is enough.
    pub endpoints: Vec<String>,
    /// The key prefix everything of this cluster lives under, so one etcd can serve several.
    pub prefix: String,
    /// Milliseconds a member has to answer before the next is asked.
    pub timeout_ms: u64,
    /// `[etcd.tls] ca, cert, key`: TLS with a client certificate to etcd (etcd's
    /// `--client-cert-auth`); the CA is the one etcd's own certificates are signed by.
    pub tls: Option<sirms_proto::cluster_tls::TlsFiles>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["127.0.0.1:2379".to_string()],
            prefix: "/sirms".to_string(),
            timeout_ms: 2000,
            tls: None,
        }
    }
}

/// The router's data plane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Accept each connection and relay it to a node behind a PROXY v2 header.
    #[default]
    Proxy,
    /// Rewrite packets through a TUN device: nodes see clients directly (docs/NAT.md).
    Nat,
}

/// `[nat]`: used when `mode = "nat"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatConfig {
    /// The TUN device packets are read from and written to.
    pub device: String,
    /// The cluster's public address; clients connect to it on the `[listen]` ports.
    pub public: Option<Ipv4Addr>,
    /// Node id → the public address its own outbound flows leave from (else `public`).
    pub aliases: BTreeMap<String, Ipv4Addr>,
    /// Most flows tracked at once.
    pub max_flows: usize,
    pub tcp_syn_secs: u64,
    pub tcp_established_secs: u64,
    pub tcp_closing_secs: u64,
    pub tcp_closed_secs: u64,
    pub udp_secs: u64,
}

impl Default for NatConfig {
    fn default() -> Self {
        let timeouts = crate::nat::Timeouts::default();
        NatConfig {
            device: "sirms0".to_string(),
            public: None,
            aliases: BTreeMap::new(),
            max_flows: 65_536,
            tcp_syn_secs: timeouts.tcp_syn.as_secs(),
            tcp_established_secs: timeouts.tcp_established.as_secs(),
            tcp_closing_secs: timeouts.tcp_closing.as_secs(),
            tcp_closed_secs: timeouts.tcp_closed.as_secs(),
            udp_secs: timeouts.udp.as_secs(),
        }
    }
}

impl NatConfig {
    /// The flow timeouts, each at least a second.
    pub fn timeouts(&self) -> crate::nat::Timeouts {
        let secs = |s: u64| Duration::from_secs(s.max(1));
        crate::nat::Timeouts {
            tcp_syn: secs(self.tcp_syn_secs),
            tcp_established: secs(self.tcp_established_secs),
            tcp_closing: secs(self.tcp_closing_secs),
            tcp_closed: secs(self.tcp_closed_secs),
            udp: secs(self.udp_secs),
        }
    }
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
    /// ManageSieve (RFC 5804, port 4190); off when unset.
    pub sieve: Option<SocketAddr>,
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
            sieve: None,
        }
    }
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            data_dir: PathBuf::from("sirms-data/router"),
            token: DEV_TOKEN.to_string(),
            admin_listen: local(7070),
            metrics_listen: None,
            listen: PublicListen::default(),
            health_interval_secs: 2,
            connect_timeout_secs: 2,
            idle_timeout_secs: 31 * 60,
            max_connections: 50_000,
            max_connections_per_ip: 200,
            mode: Mode::Proxy,
            nat: NatConfig::default(),
            directory: DirectoryKind::Sled,
            etcd: EtcdConfig::default(),
            replicas: 2,
            cluster_tls: None,
            issuer: None,
            autoconfig: None,
            status: None,
        }
    }
}

impl RouterConfig {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> Result<RouterConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let config: RouterConfig =
            toml::from_str(&text).map_err(|e| format!("invalid config {}: {e}", path.display()))?;
        if config.mode == Mode::Nat && config.nat.public.is_none() {
            return Err(format!("invalid config {}: mode = \"nat\" needs nat.public", path.display()));
        }
        config.copies().map_err(|e| format!("invalid config {}: {e}", path.display()))?;
        if let Some(autoconfig) = &config.autoconfig {
            autoconfig.check().map_err(|e| format!("invalid config {}: {e}", path.display()))?;
        }
        Ok(config)
    }

    /// How many copies of each mailbox the directory places, from `replicas`.
    pub fn copies(&self) -> Result<crate::directory::Copies, String> {
        crate::directory::Copies::try_from(self.replicas)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_is_the_default_mode() {
        let config: RouterConfig = toml::from_str("").expect("empty config");
        assert_eq!(config.mode, Mode::Proxy);
        assert!(config.status.is_none(), "no status page unless asked for");
        let config: RouterConfig = toml::from_str("[status]\nlisten = \"127.0.0.1:8080\"\n").expect("status");
        assert_eq!(config.status.map(|s| s.listen.port()), Some(8080));
        assert_eq!(config.nat.timeouts(), crate::nat::Timeouts::default());
    }

    #[test]
    fn nat_mode_reads_its_section() {
        let config: RouterConfig = toml::from_str(
            "mode = \"nat\"\n[nat]\ndevice = \"tun9\"\npublic = \"198.18.100.1\"\nmax_flows = 10\n\
             tcp_closed_secs = 0\n[nat.aliases]\nnode1 = \"198.18.100.11\"\n",
        )
        .expect("valid");
        assert_eq!(config.mode, Mode::Nat);
        assert_eq!(config.nat.device, "tun9");
        assert_eq!(config.nat.public, Some(Ipv4Addr::new(198, 18, 100, 1)));
        assert_eq!(config.nat.aliases.get("node1"), Some(&Ipv4Addr::new(198, 18, 100, 11)));
        assert_eq!(config.nat.timeouts().tcp_closed, Duration::from_secs(1), "at least a second");
        assert!(toml::from_str::<RouterConfig>("mode = \"kernel\"").is_err());
    }

    #[test]
    fn replicas_are_one_or_two() {
        let config: RouterConfig = toml::from_str("").expect("empty config");
        assert_eq!(config.copies(), Ok(crate::directory::Copies::Two));
        let one: RouterConfig = toml::from_str("replicas = 1").expect("valid");
        assert_eq!(one.copies(), Ok(crate::directory::Copies::One));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("router.toml");
        std::fs::write(&path, "replicas = 3\n").expect("write");
        assert!(RouterConfig::load(&path).expect_err("refused").contains("replicas = 3"));
    }

    #[test]
    fn autoconfig_is_off_unless_configured() {
        let config: RouterConfig = toml::from_str("").expect("empty config");
        assert!(config.autoconfig.is_none());
        let config: RouterConfig = toml::from_str(
            "[autoconfig]\nlisten = \"127.0.0.1:8443\"\nhostname = \"mail.example.com\"\n\
             [autoconfig.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n\
             [autoconfig.mta_sts]\nmode = \"enforce\"\nmx = [\"*.example.com\"]\n",
        )
        .expect("valid");
        let autoconfig = config.autoconfig.expect("set");
        assert_eq!(autoconfig.mta_sts.mode, crate::autoconfig::mta_sts::Mode::Enforce);
        assert_eq!(autoconfig.tls.cert, Some(PathBuf::from("c.pem")));
        assert_eq!(autoconfig.check(), Ok(()));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("router.toml");
        std::fs::write(&path, "[autoconfig]\nlisten = \"127.0.0.1:8443\"\nhostname = \"mail example\"\n")
            .expect("write");
        assert!(RouterConfig::load(&path).expect_err("refused").contains("not a DNS name"));
        std::fs::write(
            &path,
            "[autoconfig]\nlisten = \"127.0.0.1:8443\"\nhostname = \"m.test\"\n\
                               [autoconfig.mta_sts]\nmax_age = 99999999\n",
        )
        .expect("write");
        assert!(RouterConfig::load(&path).expect_err("refused").contains("max_age"));
    }

    #[test]
    fn nat_mode_needs_a_public_address() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("router.toml");
        std::fs::write(&path, "mode = \"nat\"\n").expect("write");
        assert!(RouterConfig::load(&path).expect_err("refused").contains("nat.public"));
    }
}
