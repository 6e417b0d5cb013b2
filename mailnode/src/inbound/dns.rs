//! The resolver the inbound checks ask (sender authentication, DNS blocklists): the
//! system's, or the servers `[inbound] nameservers` names (a local validating resolver; a
//! test's own DNS server). Outbound routing builds its own from [`resolver_config`] and
//! `[outbound] nameservers`.

use std::net::SocketAddr;
use std::time::Duration;

use mail_auth::MessageAuthenticator;
use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::hickory_resolver::system_conf::read_system_conf;

/// The resolver could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DnsSetupError {
    #[error("cannot read the system's resolver config: {0}")]
    SystemConf(String),
    #[error("cannot build the resolver: {0}")]
    Build(String),
}

/// A resolver asking `nameservers` (UDP, then TCP for truncated answers), or the system's
/// when there are none; each query waits at most `timeout`, twice.
pub fn resolver(nameservers: &[SocketAddr], timeout: Duration) -> Result<MessageAuthenticator, DnsSetupError> {
    let (config, options) = resolver_config(nameservers, timeout)?;
    MessageAuthenticator::new(config, options).map_err(|e| DnsSetupError::Build(e.to_string()))
}

/// The configuration of such a resolver.
pub fn resolver_config(
    nameservers: &[SocketAddr],
    timeout: Duration,
) -> Result<(ResolverConfig, ResolverOpts), DnsSetupError> {
    let (config, mut options) = if nameservers.is_empty() {
        read_system_conf().map_err(|e| DnsSetupError::SystemConf(e.to_string()))?
    } else {
        let servers = nameservers
            .iter()
            .map(|addr| {
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut server.connections {
                    connection.port = addr.port();
                }
                server
            })
            .collect();
        (ResolverConfig::from_name_servers(servers), ResolverOpts::default())
    };
    // Bounded, so that a dead server costs the sender a 451 within seconds, not the
    // session's idle timeout.
    options.timeout = timeout;
    options.attempts = 2;
    Ok((config, options))
}
