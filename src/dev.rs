//! `sirms dev`: the whole cluster in one process, wired together on 127.0.0.x with no
//! config — a router, two mail nodes (127.0.0.1 and 127.0.0.2) and a storage node that
//! holds every mailbox (the paper's N2 with shared storage), plus demo users.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use sirms_mailnode::config::NodeConfig;
use sirms_proto::cluster::admin_client::AdminClient;
use sirms_proto::cluster::{Name, Node, User};
use sirms_proto::token::TokenInterceptor;
use sirms_router::config::{DEV_TOKEN, RouterConfig, StatusConfig};
use sirms_storage::role::StorageConfig;
use tokio::sync::watch;

/// Options of `sirms dev`.
#[derive(Args)]
pub struct DevArgs {
    /// Where the cluster keeps its data.
    #[arg(long = "data", default_value = "sirms-data")]
    data_dir: PathBuf,
}

/// The demo users `sirms dev` creates, with their passwords.
const DEMO_USERS: [(&str, &str); 2] = [("alice@example.test", "alice-pw"), ("bob@example.test", "bob-pw")];

fn addr(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

/// Prometheus endpoints: router, node1, node2, storage1.
const METRICS_PORTS: [u16; 4] = [9100, 9101, 9102, 9103];
/// The router's status page.
const STATUS_PORT: u16 = 9190;

fn node_config(data: &std::path::Path, id: &str, ip: [u8; 4], metrics_port: u16) -> NodeConfig {
    let mut c = NodeConfig {
        hostname: format!("{id}.sirms.test"),
        data_dir: data.join(id),
        trusted_proxies: vec![IpAddr::from([127, 0, 0, 1])],
        ..NodeConfig::default()
    };
    c.listen.smtp = addr(ip, 3025);
    c.listen.submission = addr(ip, 3587);
    c.listen.submissions = addr(ip, 3465);
    c.listen.pop3 = addr(ip, 3110);
    c.listen.pop3s = addr(ip, 3995);
    c.listen.imap = addr(ip, 3143);
    c.listen.imaps = addr(ip, 3993);
    c.listen.sieve = Some(addr(ip, 3190));
    c.listen.metrics = Some(addr([127, 0, 0, 1], metrics_port));
    c.cluster.router = Some(format!("http://{}", RouterConfig::default().admin_listen));
    c.cluster.node_id = Some(id.into());
    c.cluster.store_listen = Some(addr(ip, 7401));
    c
}

/// Runs the dev cluster until `shutdown` resolves.
pub async fn run(args: DevArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let (stop, stopped) = watch::channel(false);
    let until_stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.changed().await;
    };
    let storage = StorageConfig {
        listen: addr([127, 0, 0, 1], 7400),
        data_dir: args.data_dir.join("storage"),
        token: DEV_TOKEN.into(),
        metrics_listen: Some(addr([127, 0, 0, 1], METRICS_PORTS[3])),
        cluster_tls: None,
    };
    let mut router = RouterConfig {
        data_dir: args.data_dir.join("router"),
        metrics_listen: Some(addr([127, 0, 0, 1], METRICS_PORTS[0])),
        status: Some(StatusConfig { listen: addr([127, 0, 0, 1], STATUS_PORT) }),
        ..RouterConfig::default()
    };
    router.listen.sieve = Some(addr([127, 0, 0, 1], 4190));
    let mut roles = tokio::task::JoinSet::new();
    roles.spawn({
        let done = until_stopped(stopped.clone());
        async move { sirms_storage::role::run(storage, done).await.context("storage node") }
    });
    roles.spawn({
        let done = until_stopped(stopped.clone());
        async move { sirms_router::role::run(router, done).await.context("router") }
    });
    let admin = connect_admin().await?;
    provision(admin).await?;
    for (id, ip, metrics) in [("node1", [127, 0, 0, 1], METRICS_PORTS[1]), ("node2", [127, 0, 0, 2], METRICS_PORTS[2])]
    {
        let config = node_config(&args.data_dir, id, ip, metrics);
        let done = until_stopped(stopped.clone());
        roles.spawn(async move { sirms_mailnode::role::run(config, done).await.context("mail node") });
    }
    let users: String = DEMO_USERS.iter().map(|(u, p)| format!("  user {u}  password {p}\n")).collect();
    eprintln!(
        "\nSIRMS dev cluster is up: point a mail client at 127.0.0.1\n  \
         SMTP 2525, submission 2587 (STARTTLS) / 2465 (TLS), IMAP 2143 / 2993, POP3 2110 / 2995,\n  \
         ManageSieve 4190 (STARTTLS)\n\
         {users}  admin: `sirms ctl status` (router API {}, token {DEV_TOKEN})\n  \
         metrics: http://127.0.0.1:{{{}}}/metrics (router, node1, node2, storage1)\n  \
         status page: http://127.0.0.1:{STATUS_PORT}/ (any user name, the token as password)\n  Ctrl-C stops it.\n",
        RouterConfig::default().admin_listen,
        METRICS_PORTS.map(|p| p.to_string()).join(",")
    );
    tokio::select! {
        _ = shutdown => {}
        Some(result) = roles.join_next() => {
            let _ = stop.send(true);
            return match result {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) => Ok(()),
                Err(e) => Err(e.into()),
            };
        }
    }
    let _ = stop.send(true);
    while let Some(result) = roles.join_next().await {
        if let Ok(Err(e)) = result {
            tracing::warn!(error = %e, "role stopped with an error");
        }
    }
    Ok(())
}

type Admin = AdminClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, TokenInterceptor>>;

async fn connect_admin() -> anyhow::Result<Admin> {
    let token = TokenInterceptor::new(DEV_TOKEN).context("token")?;
    // The router starts in the background: wait (bounded) for its admin API.
    for _ in 0..100 {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{}", RouterConfig::default().admin_listen))?;
        if let Ok(channel) = endpoint.connect().await {
            return Ok(AdminClient::with_interceptor(channel, token));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the router's admin API did not come up on {}", RouterConfig::default().admin_listen)
}

/// The storage node, the demo domain and users.
async fn provision(mut admin: Admin) -> anyhow::Result<()> {
    admin
        .put_node(Node {
            id: "storage1".into(),
            host: "127.0.0.1".into(),
            store_endpoint: "http://127.0.0.1:7400".into(),
            storage_only: true,
            ..Default::default()
        })
        .await?;
    admin.put_domain(Name { name: "example.test".into() }).await?;
    for (address, password) in DEMO_USERS {
        let password_hash =
            sirms_mailnode::auth::password::hash_password(password).map_err(|e| anyhow::anyhow!("{e}"))?;
        let user = User { address: address.into(), password_hash, home: "storage1".into(), ..Default::default() };
        admin.put_user(user).await?;
    }
    Ok(())
}
