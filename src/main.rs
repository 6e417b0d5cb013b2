//! The `sirms` command line: one binary, one subcommand per role. No logic lives here.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sirms_mailnode::config::NodeConfig;
use sirms_router::config::RouterConfig;
use tracing_subscriber::prelude::*;

mod ctl;
mod dev;
mod probe;
use ctl::CtlArgs;
use dev::DevArgs;
use sirms_storage::role::{self, StorageConfig};

#[derive(Parser)]
#[command(name = "sirms", version, about = "SIRMS: a clustered mail server routed by source IP")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a storage node: the Store gRPC service over a local Maildir store.
    Storage(StorageCmd),
    /// Run a mail node: SMTP (MX and submission), IMAP and POP3 over a mail store.
    Node(NodeCmd),
    /// Run the router: source-IP routing of SMTP/IMAP/POP3, the directory, the admin API.
    Router(RouterCmd),
    /// Administer a running cluster through the router's admin API.
    Ctl(CtlArgs),
    /// A whole cluster (router, 2 mail nodes, 1 storage node) in one process on 127.0.0.x.
    Dev(DevArgs),
    /// Obtain this node's cluster certificate with an invitation (`sirms ctl nodes invite`).
    Join(JoinCmd),
    /// Hash a password (read from stdin) for a config or the directory.
    HashPassword,
    /// Health checks without a shell: is a port up, does it greet as expected (for containers).
    Probe(probe::ProbeArgs),
    /// Load generator: SMTP delivery (time to accept and to the mailbox), IMAP fetch, POP3
    /// retrieve against any endpoint, with latencies and the servers' CPU time.
    Bench(sirms_loadgen::BenchArgs),
}

#[derive(Args)]
struct RouterCmd {
    /// Config file (TOML); every key has a default.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Override `token` (also read from SIRMS_TOKEN), so it need not sit in the file.
    #[arg(long, env = "SIRMS_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Args)]
struct NodeCmd {
    /// Config file (TOML); every key has a default.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Override the cluster token of `[cluster]` and `[store]` (also read from SIRMS_TOKEN).
    #[arg(long, env = "SIRMS_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Args)]
struct JoinCmd {
    /// A router's admin API, host:port.
    #[arg(long)]
    router: String,
    /// The invitation token (also read from SIRMS_JOIN_TOKEN).
    #[arg(long, env = "SIRMS_JOIN_TOKEN", hide_env_values = true)]
    token: String,
    /// The cluster CA's certificate, to know the router is the cluster's. It is rewritten
    /// with the one the router returns.
    #[arg(long)]
    ca: PathBuf,
    /// Where to write this node's certificate (then `[cluster_tls] cert`).
    #[arg(long)]
    cert: PathBuf,
    /// Where to write its private key, 0600 (then `[cluster_tls] key`).
    #[arg(long)]
    key: PathBuf,
}

#[derive(Args)]
struct StorageCmd {
    /// Config file (TOML); every key has a default.
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    /// Override `listen`.
    #[arg(long, global = true)]
    listen: Option<std::net::SocketAddr>,
    /// Override `data_dir`.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Override `token` (also read from SIRMS_TOKEN).
    #[arg(long, env = "SIRMS_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    action: Option<StorageAction>,
}

#[derive(Subcommand)]
enum StorageAction {
    /// Rebuild the index from the Maildirs (the storage node must be stopped).
    Reindex,
}

impl StorageCmd {
    fn config(&self) -> anyhow::Result<StorageConfig> {
        let mut config = match &self.config {
            Some(path) => StorageConfig::load(path)?,
            None => StorageConfig::default(),
        };
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(token) = &self.token {
            config.token = token.clone();
        }
        Ok(config)
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}

/// SIGHUP: every certificate (and other watched file) is loaded again before its next use,
/// for new connections; sessions already open keep theirs.
fn reload_on_sighup() {
    #[cfg(unix)]
    if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: certificates are loaded again at their next use");
                sirms_proto::watched::reload_all();
            }
        });
    }
}

/// Raises the soft limit on open files to the hard limit: a server needs a descriptor per
/// connection (the router two), and shells often start processes capped at 1,024.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                tracing::warn!(soft = limit.rlim_cur, "cannot raise the open file limit");
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Logs as RUST_LOG says; besides, every warning and error into the ring the router's status
    // page shows (a filter of its own, so RUST_LOG=error still fills it).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter))
        .with(sirms_router::status_page::errors::Recorder.with_filter(tracing_subscriber::filter::LevelFilter::WARN))
        .init();
    raise_open_file_limit();
    reload_on_sighup();
    let cli = Cli::parse();
    match cli.command {
        Command::Router(cmd) => {
            let mut config = match &cmd.config {
                Some(path) => RouterConfig::load(path).map_err(anyhow::Error::msg)?,
                None => RouterConfig::default(),
            };
            if let Some(token) = cmd.token {
                config.token = token;
            }
            sirms_router::role::run(config, shutdown_signal()).await.context("router")?;
        }
        Command::Ctl(args) => {
            let out = ctl::run(args).await?;
            println!("{}", out.trim_end());
        }
        Command::Dev(args) => dev::run(args, shutdown_signal()).await?,
        Command::Probe(args) => std::process::exit(probe::run(args, shutdown_signal()).await),
        Command::Bench(args) => std::process::exit(sirms_loadgen::run(args).await),
        Command::Node(cmd) => {
            let mut config = match &cmd.config {
                Some(path) => NodeConfig::load(path)?,
                None => NodeConfig::default(),
            };
            if let Some(token) = cmd.token {
                config.cluster.token = Some(token.clone());
                config.store.token = Some(token);
            }
            sirms_mailnode::role::run(config, shutdown_signal()).await.context("mail node")?;
        }
        Command::Join(cmd) => {
            let ca = std::fs::read(&cmd.ca).with_context(|| format!("reading {}", cmd.ca.display()))?;
            let files = sirms_proto::cluster_tls::TlsFiles { ca: cmd.ca, cert: cmd.cert, key: cmd.key };
            let identity = sirms_proto::cluster_tls::enrol::join(&cmd.router, &ca, &cmd.token, &files).await?;
            println!(
                "joined as {identity}: certificate {}, key {}; set them in [cluster_tls]",
                files.cert.display(),
                files.key.display()
            );
        }
        Command::HashPassword => {
            let mut password = String::new();
            std::io::stdin().read_line(&mut password).context("reading the password from stdin")?;
            let password = password.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!password.is_empty(), "empty password");
            let hash = sirms_mailnode::auth::password::hash_password(password).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{hash}");
        }
        Command::Storage(cmd) => {
            let config = cmd.config()?;
            match cmd.action {
                None => role::run(config, shutdown_signal()).await.context("storage node")?,
                Some(StorageAction::Reindex) => {
                    let report = sirms_storage::LocalStore::reindex(&config.data_dir).context("reindex")?;
                    println!(
                        "reindexed {} users, {} mailboxes, {} messages",
                        report.users, report.mailboxes, report.messages
                    );
                }
            }
        }
    }
    Ok(())
}
