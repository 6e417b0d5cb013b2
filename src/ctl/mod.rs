//! `sirms ctl`: the admin CLI, a client of the router's Admin API.
//!
//! It lives in the binary rather than in the router because some commands need the mail
//! node's code, called directly: `users add` and `users passwd` hash passwords the way the
//! nodes check them (no clear password crosses the admin API), `users move` copies
//! mailboxes between stores, and `dkim` makes keys and their DNS records.
//!
//! One file per command family; each turns its subcommand into Admin calls (`queue`: the
//! nodes' NodeAdmin calls) and returns the text to print, a human table or, with `--json`,
//! the API's reply.

mod aliases;
mod backup;
mod ca;
mod dkim;
mod domains;
mod evacuate;
mod groups;
mod import;
mod nodes;
mod queue;
mod routes;
mod status;
mod transports;
mod users;

use clap::{Args, Subcommand};
use sirms_proto::cluster::admin_client::AdminClient;
use sirms_proto::cluster_tls::{ClusterTls, Credentials, TlsFiles};
use sirms_proto::token::TokenInterceptor;
use sirms_router::config::DEV_TOKEN;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Where the router is and how to prove we are its admin.
#[derive(Args, Debug)]
pub struct CtlArgs {
    /// The router's admin API.
    #[arg(long, env = "SIRMS_ROUTER", default_value = "http://127.0.0.1:7070")]
    pub router: String,
    /// The cluster token.
    #[arg(long, env = "SIRMS_TOKEN", default_value = DEV_TOKEN, hide_env_values = true)]
    pub token: String,
    /// With --cert and --key: the cluster CA, for a cluster whose plane runs mutual TLS
    /// (`sirms ctl ca init` makes it).
    #[arg(long, env = "SIRMS_CA", requires_all = ["cert", "key"])]
    pub ca: Option<std::path::PathBuf>,
    /// The administrator's certificate (admin.pem from `sirms ctl ca init`).
    #[arg(long, env = "SIRMS_CERT", requires_all = ["ca", "key"])]
    pub cert: Option<std::path::PathBuf>,
    /// Its private key.
    #[arg(long, env = "SIRMS_KEY", requires_all = ["ca", "cert"])]
    pub key: Option<std::path::PathBuf>,
    /// Print the API's replies as JSON, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// What `sirms ctl` can do.
#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// Nodes, their health and connections, and directory counts.
    Status,
    /// Mail and storage nodes.
    #[command(subcommand)]
    Nodes(nodes::NodesCmd),
    /// The source-IP routing table.
    #[command(subcommand)]
    Routes(routes::RoutesCmd),
    /// Node groups (route targets written `group:NAME`).
    #[command(subcommand)]
    Groups(groups::GroupsCmd),
    /// Mail domains.
    #[command(subcommand)]
    Domains(domains::DomainsCmd),
    /// Mail users.
    #[command(subcommand)]
    Users(users::UsersCmd),
    /// Aliases (one address delivered to others).
    #[command(subcommand)]
    Aliases(aliases::AliasesCmd),
    /// Static outbound routes: a domain's mail goes to one relay instead of its MX hosts.
    #[command(subcommand)]
    Transports(transports::TransportsCmd),
    /// Bring mail in from a Maildir tree (Dovecot, Courier) or mbox files, keeping flags, dates
    /// and Dovecot's UIDs.
    Import(import::ImportArgs),
    /// Write the directory and users' mailboxes to a folder (Maildirs with Dovecot's uidlists);
    /// again into the same folder, only what changed.
    Backup(backup::BackupArgs),
    /// Bring back the directory and mail from a backup: everything, some users, or one folder.
    Restore(backup::RestoreArgs),
    /// The mail nodes' queues: mail waiting for a remote server or an unreachable home.
    #[command(subcommand)]
    Queue(queue::QueueCmd),
    /// DKIM keys: outbound mail of a domain is signed with its key.
    #[command(subcommand)]
    Dkim(dkim::DkimCmd),
    /// The cluster CA and the certificates of the cluster plane's mutual TLS (offline: no router).
    #[command(subcommand)]
    Ca(ca::CaCmd),
}

/// Errors of `sirms ctl`.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot reach the router at {0}: {1}")]
    Connect(String, String),
    #[error("the token is not a valid gRPC metadata value")]
    Token,
    #[error("{}", .0.message())]
    Rpc(#[from] tonic::Status),
    #[error("{0}")]
    Input(String),
}

/// The router's Admin API, with the cluster token on every call.
type Client = AdminClient<InterceptedService<Channel, TokenInterceptor>>;

/// Runs one `sirms ctl` command and returns the text to print.
pub async fn run(args: CtlArgs) -> Result<String, CtlError> {
    let command = match args.command {
        CtlCommand::Ca(cmd) => return ca::run(cmd),
        command => command,
    };
    let tls = match (&args.ca, &args.cert, &args.key) {
        (Some(ca), Some(cert), Some(key)) => {
            let files = TlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() };
            Some(ClusterTls::load(&files).map_err(|e| CtlError::Input(e.to_string()))?)
        }
        _ => None,
    };
    let credentials = Credentials { token: args.token.clone(), tls };
    let channel = credentials
        .endpoint(&args.router)
        .map_err(|e| CtlError::Connect(args.router.clone(), e.to_string()))?
        .connect()
        .await
        .map_err(|e| CtlError::Connect(args.router.clone(), e.to_string()))?;
    let mut c: Client =
        AdminClient::with_interceptor(channel, TokenInterceptor::new(&args.token).ok_or(CtlError::Token)?);
    let json = args.json;
    match command {
        CtlCommand::Status => status::run(&mut c, json).await,
        CtlCommand::Nodes(cmd) => nodes::run(&mut c, json, cmd).await,
        CtlCommand::Routes(cmd) => routes::run(&mut c, json, cmd).await,
        CtlCommand::Groups(cmd) => groups::run(&mut c, json, cmd).await,
        CtlCommand::Domains(cmd) => domains::run(&mut c, &credentials, json, cmd).await,
        CtlCommand::Users(cmd) => users::run(&mut c, &args.router, &credentials, json, cmd).await,
        CtlCommand::Aliases(cmd) => aliases::run(&mut c, json, cmd).await,
        CtlCommand::Transports(cmd) => transports::run(&mut c, json, cmd).await,
        CtlCommand::Queue(cmd) => queue::run(&mut c, &credentials, json, cmd).await,
        CtlCommand::Import(args) => import::run(&mut c, &credentials, json, args).await,
        CtlCommand::Backup(args) => backup::backup(&mut c, &credentials, json, args).await,
        CtlCommand::Restore(args) => backup::restore(&mut c, &credentials, json, args).await,
        CtlCommand::Dkim(cmd) => dkim::run(&mut c, json, cmd).await,
        CtlCommand::Ca(cmd) => ca::run(cmd),
    }
}

/// A channel to a mail node's admin services (NodeAdmin, Import) with the token to present;
/// each call may take up to `timeout`.
async fn node_channel(
    endpoint: &str,
    credentials: &Credentials,
    timeout: std::time::Duration,
) -> Result<(Channel, TokenInterceptor), String> {
    let channel = credentials
        .endpoint(endpoint)
        .map_err(|e| e.to_string())?
        .configure(|e| e.connect_timeout(std::time::Duration::from_secs(3)).timeout(timeout))
        .connect()
        .await
        .map_err(|e| format!("unreachable: {e}"))?;
    let interceptor = TokenInterceptor::new(&credentials.token).ok_or("the token is not valid metadata")?;
    Ok((channel, interceptor))
}

/// "ok" (or `{"ok": true}`) for an acknowledged change.
fn acked<T>(json: bool, reply: Result<tonic::Response<T>, tonic::Status>) -> Result<String, CtlError> {
    reply?;
    show(json, &serde_json::json!({ "ok": true }), |_| "ok".to_string())
}

/// A reply as a human table, or with `--json` as the API gave it.
fn show<T: serde::Serialize>(json: bool, reply: &T, human: impl FnOnce(&T) -> String) -> Result<String, CtlError> {
    if !json {
        return Ok(human(reply));
    }
    let mut text = serde_json::to_string_pretty(reply).map_err(|e| CtlError::Input(e.to_string()))?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use clap::Args;

    use super::CtlArgs;

    /// Clap's own checks of the whole `sirms ctl` tree (names, aliases, defaults, globals).
    #[test]
    fn the_command_tree_is_well_formed() {
        CtlArgs::augment_args(clap::Command::new("ctl")).debug_assert();
    }

    #[test]
    fn json_replies_end_with_a_newline_and_human_ones_as_written() {
        assert_eq!(
            super::show(true, &serde_json::json!({ "ok": true }), |_| unreachable!()).unwrap(),
            "{\n  \"ok\": true\n}\n"
        );
        assert_eq!(super::show(false, &1, |n| format!("{n} thing")).unwrap(), "1 thing");
    }
}
