//! The probe of storage nodes, which take no client and hold no lease: a `Ping` to their Store
//! service, made with the router's cluster credentials (the token, and its certificate when
//! cluster TLS is on) as the nodes' own calls are. A TCP connect would not do: the kernel of a
//! frozen or wedged process still accepts connections, and only an answered call shows the
//! service runs. [`RouterProbe`] sends each service to its check.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use sirms_proto::cluster_tls::Credentials;
use sirms_storage::RemoteStore;

use crate::health::{GreetingProbe, Probe, ProbeTarget};
use crate::service::Service;

/// Channels kept between probes at most. Past it they are dropped and made again as needed,
/// so endpoints that left the directory do not pile up.
const MAX_CHANNELS: usize = 256;

/// Pings Store services.
pub struct StoreProbe {
    credentials: Credentials,
    /// One channel per endpoint, kept between probes: a live store answers on its open
    /// HTTP/2 connection, a killed one's connection is reset and the next connect refused,
    /// and a frozen one leaves the ping unanswered until the monitor's timeout.
    stores: Mutex<HashMap<Arc<str>, RemoteStore>>,
}

impl StoreProbe {
    /// Pings with `credentials`.
    pub fn new(credentials: Credentials) -> StoreProbe {
        StoreProbe { credentials, stores: Mutex::new(HashMap::new()) }
    }

    /// The channel to `endpoint`, made on first use.
    fn store(&self, endpoint: &Arc<str>) -> io::Result<RemoteStore> {
        let mut stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(store) = stores.get(endpoint) {
            return Ok(store.clone());
        }
        if stores.len() >= MAX_CHANNELS {
            stores.clear();
        }
        let store = RemoteStore::connect_with(endpoint, &self.credentials)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        stores.insert(endpoint.clone(), store.clone());
        Ok(store)
    }

    /// Whether the Store service at `endpoint` answers a ping (the caller bounds the wait).
    pub async fn ping(&self, endpoint: &Arc<str>) -> io::Result<()> {
        self.store(endpoint)?.ping().await.map_err(io::Error::other)
    }
}

/// The router's probe: a mail service must greet ([`GreetingProbe`]), a Store service answer a
/// ping ([`StoreProbe`]).
pub struct RouterProbe {
    store: StoreProbe,
}

impl RouterProbe {
    /// Pings Store services with `credentials`.
    pub fn new(credentials: Credentials) -> RouterProbe {
        RouterProbe { store: StoreProbe::new(credentials) }
    }
}

impl Probe for RouterProbe {
    async fn probe(&self, service: Service, target: &ProbeTarget) -> io::Result<()> {
        match (service, target) {
            (Service::Store, ProbeTarget::Endpoint(endpoint)) => self.store.ping(endpoint).await,
            _ => GreetingProbe.probe(service, target).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sirms_proto::cluster_tls::{Credentials, Identity, Role, ca};
    use sirms_storage::{MailStore, MemoryStore, StoreService};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;

    const TOKEN: &str = "probe-test-token";

    /// A Store service on loopback; its endpoint URL.
    async fn store_service(token: &str) -> Arc<str> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let service = StoreService::new(Arc::new(MemoryStore::new()), token.to_string());
        tokio::spawn(service.serve(listener, None, std::future::pending()));
        format!("http://{addr}").into()
    }

    /// Pings `endpoint` with the test token, bounded as the monitor bounds it.
    async fn ping(endpoint: &Arc<str>) -> io::Result<()> {
        let probe = RouterProbe::new(Credentials::token(TOKEN));
        let target = ProbeTarget::Endpoint(endpoint.clone());
        match tokio::time::timeout(Duration::from_secs(1), probe.probe(Service::Store, &target)).await {
            Ok(result) => result,
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    #[tokio::test]
    async fn a_serving_store_answers_and_a_wedged_or_closed_one_does_not() {
        assert!(ping(&store_service(TOKEN).await).await.is_ok(), "a serving store answers");
        // Accepted by the kernel, never served: a frozen process.
        let wedged = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let wedged_at: Arc<str> = format!("http://{}", wedged.local_addr().expect("addr")).into();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut tcp, _)) = wedged.accept().await {
                let mut buf = [0u8; 64];
                let _ = tcp.read(&mut buf).await;
                held.push(tcp);
            }
        });
        assert_eq!(ping(&wedged_at).await.map_err(|e| e.kind()), Err(io::ErrorKind::TimedOut));
        let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr");
        assert!(ping(&format!("http://{closed}").into()).await.is_err(), "nothing listens");
    }

    /// Cluster TLS for `identity`, serving at 127.0.0.1, signed by `issuer`, whose certificate is `ca`.
    fn tls_for(
        identity: Identity,
        ca: &str,
        issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
    ) -> sirms_proto::cluster_tls::ClusterTls {
        let key = ca::key().expect("key");
        let params = ca::leaf(&identity, &["127.0.0.1".to_string()], ca::days(1)).expect("leaf");
        let cert = ca::sign(&params, &key, issuer).expect("sign");
        let pem = key.serialize_pem();
        sirms_proto::cluster_tls::ClusterTls::from_pem(ca.as_bytes(), cert.as_bytes(), pem.as_bytes()).expect("tls")
    }

    /// Under mutual TLS a router's certificate may ping a storage node, and read nothing there.
    #[tokio::test]
    async fn a_router_certificate_may_ping_and_nothing_more() {
        let ca_key = ca::key().expect("key");
        let ca_pem = ca::authority("test CA", 1).self_signed(&ca_key).expect("CA").pem();
        let issuer = ca::issuer(&ca_pem, &ca_key.serialize_pem()).expect("issuer");
        let identity = |role, name: &str| Identity { role, name: name.into() };
        let storage = tls_for(identity(Role::Storage, "storage1"), &ca_pem, &issuer);
        let router = tls_for(identity(Role::Router, "router1"), &ca_pem, &issuer);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint: Arc<str> = format!("https://{}", listener.local_addr().expect("addr")).into();
        let service = StoreService::new(Arc::new(MemoryStore::new()), TOKEN.to_string());
        tokio::spawn(async move { service.serve(listener, Some(&storage), std::future::pending()).await });
        let credentials = Credentials { token: TOKEN.into(), tls: Some(router) };
        let probe = RouterProbe::new(credentials.clone());
        let target = ProbeTarget::Endpoint(endpoint.clone());
        let pinged = tokio::time::timeout(Duration::from_secs(5), probe.probe(Service::Store, &target)).await;
        assert!(matches!(pinged, Ok(Ok(()))), "{pinged:?}");
        let store = RemoteStore::connect_with(&endpoint, &credentials).expect("client");
        let read = tokio::time::timeout(Duration::from_secs(5), store.list_mailboxes("alice@example.test")).await;
        assert!(matches!(read, Ok(Err(_))), "a router reads no mailbox: {read:?}");
    }

    #[tokio::test]
    async fn a_store_that_refuses_the_token_counts_as_failing() {
        // Every node calls with the cluster token: a store that refuses it serves no one.
        assert!(ping(&store_service("another-token").await).await.is_err());
    }
}
