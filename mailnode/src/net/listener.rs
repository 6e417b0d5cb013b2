//! The accept loop every protocol listener shares: connection limits (total and per
//! client IP, one budget for all of a node's listeners), the PROXY header from trusted
//! routers, implicit TLS, one task a session.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use sirms_proto::budget::ConnectionBudget;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::stream::{HANDSHAKE_TIMEOUT, Stream};
use crate::metrics::{NodeMetrics, Protocol};
use crate::proxy;

/// A connection ready for a protocol session.
pub struct Accepted {
    pub stream: Stream,
    /// The real client: from the PROXY header when the peer is a trusted router.
    pub client: SocketAddr,
    /// The router's own health check (PROXY `LOCAL`): served like a client, logged quietly.
    pub health_check: bool,
    /// Connection number, for logs and ids.
    pub number: u64,
}

/// What a listener enforces.
#[derive(Clone)]
pub struct ListenerSettings {
    /// Name for logs: "smtp", "submission", "pop3s"…
    pub service: &'static str,
    /// The node's connection budget, shared by all its listeners.
    pub budget: Arc<ConnectionBudget>,
    /// Peers whose connections must start with a PROXY v2 header (the routers).
    pub trusted_proxies: Arc<Vec<IpAddr>>,
    /// Set on implicit-TLS ports (465, 993, 995).
    pub implicit_tls: Option<TlsAcceptor>,
    /// Sent, then the connection closed, when a limit is hit (in the protocol's own words).
    pub busy_reply: &'static [u8],
    /// Where connections and open sessions are counted.
    pub metrics: Arc<NodeMetrics>,
}

/// Accepts connections until `shutdown` turns true, running `handler` for each in its own task.
pub async fn serve<H, F>(
    listener: TcpListener,
    settings: ListenerSettings,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(Accepted) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let handler = Arc::new(handler);
    let mut number = 0u64;
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(service = settings.service, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        number += 1;
        let _ = tcp.set_nodelay(true);
        let (settings, handler) = (settings.clone(), handler.clone());
        tokio::spawn(async move {
            let budget = settings.budget.clone();
            let Some(_slot) = budget.slot() else {
                settings.metrics.refused(settings.service);
                refuse(tcp, settings.busy_reply).await;
                tracing::warn!(service = settings.service, %peer, "connection limit reached");
                return;
            };
            let (tcp, client, health_check) =
                match proxy::accept(tcp, peer, &settings.trusted_proxies, HANDSHAKE_TIMEOUT).await {
                    Ok((tcp, who)) => (tcp, who.addr(), matches!(who, proxy::Peer::Router(_))),
                    Err(e) => {
                        tracing::warn!(service = settings.service, %peer, error = %e, "bad PROXY header");
                        return;
                    }
                };
            let Some(_ip_slot) = budget.ip_slot(client.ip()) else {
                settings.metrics.refused(settings.service);
                refuse(tcp, settings.busy_reply).await;
                tracing::warn!(service = settings.service, %client, "per-IP connection limit reached");
                return;
            };
            let stream = match &settings.implicit_tls {
                None => Stream::Plain(tcp),
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, Stream::Plain(tcp).start_tls(acceptor)).await {
                        Ok(Ok(s)) => s,
                        // The router's probe of implicit-TLS ports trusts no certificate, so its
                        // handshakes always fail here; one a round would drown the real ones.
                        Ok(Err(e)) if health_check => {
                            tracing::debug!(service = settings.service, error = %e, "health check's TLS handshake ended");
                            return;
                        }
                        Ok(Err(e)) => {
                            tracing::info!(service = settings.service, %client, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(service = settings.service, %client, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            tracing::debug!(service = settings.service, %client, number, "connection");
            // The router's health checks are not client sessions: they would swamp the counts.
            let _counted = (!health_check).then(|| {
                settings.metrics.connection(settings.service);
                settings.metrics.sessions(Protocol::of(settings.service)).track()
            });
            handler(Accepted { stream, client, health_check, number }).await;
        });
    }
}

async fn refuse(mut tcp: TcpStream, reply: &[u8]) {
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.write_all(reply)).await;
    let _ = tcp.shutdown().await;
}
