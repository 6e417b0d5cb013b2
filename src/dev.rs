//! `sirms dev`: the whole cluster in one process, wired together on 127.0.0.x with no
//! config — a router, two mail nodes (127.0.0.1 and 127.0.0.2) and a storage node that
//! holds every mailbox (the paper's N2 with shared storage), plus a demo user.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use sirms_mailnode::config::NodeConfig;
use sirms_proto::cluster::admin_client::AdminClient;
use sirms_proto::cluster::{Name, Node, User};
use sirms_proto::token::TokenInterceptor;
use sirms_router::config::{DEV_TOKEN, RouterConfig};
use sirms_storage::role::StorageConfig;
use tokio::sync::watch;

/// Options of `sirms dev`.
#[derive(Args)]
pub struct DevArgs {
    /// Where the cluster keeps its data.
    #[arg(long, default_value = "sirms-data/dev")]
    data_dir: PathBuf,
    /// The demo user created at start.
    #[arg(long, default_value = "dev@example.test")]
    user: String,
    /// The demo user's password.
    #[arg(long, default_value = "dev")]
    password: String,
}

fn addr(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

fn node_config(data: &std::path::Path, id: &str, ip: [u8; 4]) -> NodeConfig {
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
    c.cluster.router = Some("http://127.0.0.1:7500".into());
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
    };
    let router = RouterConfig { data_dir: args.data_dir.join("router"), ..RouterConfig::default() };
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
    provision(admin, &args).await?;
    for (id, ip) in [("node1", [127, 0, 0, 1]), ("node2", [127, 0, 0, 2])] {
        let config = node_config(&args.data_dir, id, ip);
        let done = until_stopped(stopped.clone());
        roles.spawn(async move { sirms_mailnode::role::run(config, done).await.context("mail node") });
    }
    eprintln!(
        "\nSIRMS dev cluster: SMTP 127.0.0.1:2525, submission :2587 (STARTTLS) / :2465 (TLS), \
         POP3 :2110 / :2995, IMAP :2143 / :2993\n  user {} password {}\n  \
         admin: sirms ctl status   (router API 127.0.0.1:7500, token {DEV_TOKEN})\n",
        args.user, args.password
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
        if let Ok(channel) = tonic::transport::Endpoint::from_static("http://127.0.0.1:7500").connect().await {
            return Ok(AdminClient::with_interceptor(channel, token));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the router's admin API did not come up on 127.0.0.1:7500")
}

/// The storage node, the demo domain and user.
async fn provision(mut admin: Admin, args: &DevArgs) -> anyhow::Result<()> {
    admin
        .put_node(Node {
            id: "storage1".into(),
            host: "127.0.0.1".into(),
            store_endpoint: "http://127.0.0.1:7400".into(),
            storage_only: true,
            ..Default::default()
        })
        .await?;
    let domain = args.user.rsplit_once('@').map(|(_, d)| d.to_string()).context("the demo user needs a domain")?;
    admin.put_domain(Name { name: domain }).await?;
    let password_hash = sirms_mailnode::directory::hash_password(&args.password).map_err(|e| anyhow::anyhow!("{e}"))?;
    admin.put_user(User { address: args.user.clone(), password_hash, home: "storage1".into(), quota_bytes: 0 }).await?;
    Ok(())
}
