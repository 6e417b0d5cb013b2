//! `sirms ctl`: the admin CLI, a client of the router's Admin API.

use std::io::Read;

use clap::{Args, Subcommand};
use sirms_proto::cluster::admin_client::AdminClient;
use sirms_proto::cluster::{Alias, DkimKey, DrainRequest, Empty, Group, Name, Node, Route, Transport, User};
use sirms_proto::token::TokenInterceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::config::DEV_TOKEN;

/// Where the router is and how to prove we are its admin.
#[derive(Args, Debug)]
pub struct CtlArgs {
    /// The router's admin API.
    #[arg(long, env = "SIRMS_ROUTER", default_value = "http://127.0.0.1:7070")]
    pub router: String,
    /// The cluster token.
    #[arg(long, env = "SIRMS_TOKEN", default_value = DEV_TOKEN, hide_env_values = true)]
    pub token: String,
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
    Nodes(NodesCmd),
    /// The source-IP routing table.
    #[command(subcommand)]
    Routes(RoutesCmd),
    /// Node groups (route targets written `group:NAME`).
    #[command(subcommand)]
    Groups(GroupsCmd),
    /// Mail domains.
    #[command(subcommand)]
    Domains(DomainsCmd),
    /// Mail users.
    #[command(subcommand)]
    Users(UsersCmd),
    /// Aliases (one address delivered to others).
    #[command(subcommand)]
    Aliases(AliasesCmd),
    /// Static outbound routes: a domain's mail goes to one relay instead of its MX hosts.
    #[command(subcommand)]
    Transports(TransportsCmd),
    /// The mail nodes' queues: mail waiting for a remote server or an unreachable home.
    #[command(subcommand)]
    Queue(QueueCmd),
    /// DKIM keys: outbound mail of a domain is signed with its key.
    #[command(subcommand)]
    Dkim(DkimCmd),
}

#[derive(Subcommand, Debug)]
pub enum NodesCmd {
    /// List nodes.
    List,
    /// Add or replace a node by hand (nodes also register themselves).
    Add {
        id: String,
        host: String,
        #[arg(long, default_value_t = 100)]
        weight: u32,
        #[arg(long, default_value_t = 25)]
        smtp_port: u32,
        #[arg(long, default_value_t = 587)]
        submission_port: u32,
        #[arg(long, default_value_t = 465)]
        submissions_port: u32,
        #[arg(long, default_value_t = 143)]
        imap_port: u32,
        #[arg(long, default_value_t = 993)]
        imaps_port: u32,
        #[arg(long, default_value_t = 110)]
        pop3_port: u32,
        #[arg(long, default_value_t = 995)]
        pop3s_port: u32,
        /// The node's Store gRPC endpoint, e.g. http://10.0.0.5:7401.
        #[arg(long, default_value = "")]
        store: String,
        /// A storage-only node: holds mailboxes, takes no mail traffic.
        #[arg(long)]
        storage_only: bool,
    },
    /// Remove a node.
    #[command(alias = "rm")]
    Remove { id: String },
    /// Stop sending new connections to a node; open sessions finish.
    Drain { id: String },
    /// Send new connections to a drained node again.
    Undrain { id: String },
}

#[derive(Subcommand, Debug)]
pub enum RoutesCmd {
    /// List routes.
    List,
    /// Route sources in CIDR to a node or `group:NAME` (longest prefix wins).
    Add { cidr: String, target: String },
    /// Remove a route.
    #[command(alias = "rm")]
    Remove { cidr: String },
    /// Which node a source address goes to now, and why.
    Test { ip: String },
}

#[derive(Subcommand, Debug)]
pub enum GroupsCmd {
    /// List groups.
    List,
    /// Create or replace a group.
    Set { name: String, members: Vec<String> },
    /// Remove a group.
    #[command(alias = "rm")]
    Remove { name: String },
}

#[derive(Subcommand, Debug)]
pub enum DomainsCmd {
    /// List domains.
    List,
    /// Add a domain.
    Add { domain: String },
    /// Remove a domain.
    #[command(alias = "rm")]
    Remove { domain: String },
}

#[derive(Subcommand, Debug)]
pub enum UsersCmd {
    /// List users and their homes.
    List,
    /// Add a user, or change one's password or home. The password is read from stdin
    /// (one line) unless --password is given.
    Add {
        address: String,
        #[arg(long)]
        password: Option<String>,
        /// Node or storage node that holds the mailbox (default: the router picks).
        #[arg(long, default_value = "")]
        home: String,
        /// Keep the stored password (to change only the home).
        #[arg(long)]
        keep_password: bool,
    },
    /// Change a user's password (read from stdin unless --password is given).
    Passwd {
        address: String,
        #[arg(long)]
        password: Option<String>,
    },
    /// Move a user's mailboxes to another node or storage node, losing nothing.
    Move {
        address: String,
        /// The new home.
        #[arg(long)]
        to: String,
    },
    /// Remove a user (the mailbox stays on its home).
    #[command(alias = "rm")]
    Remove { address: String },
}

#[derive(Subcommand, Debug)]
pub enum AliasesCmd {
    /// List aliases.
    List,
    /// Deliver mail for ADDRESS to TARGETS.
    Add { address: String, targets: Vec<String> },
    /// Remove an alias.
    #[command(alias = "rm")]
    Remove { address: String },
}

#[derive(Subcommand, Debug)]
pub enum TransportsCmd {
    /// List static transports.
    List,
    /// Send mail for DOMAIN to RELAY (`host:port`, or a host for port 25).
    Add { domain: String, relay: String },
    /// Remove a transport (the domain's MX hosts are used again).
    #[command(alias = "rm")]
    Remove { domain: String },
}

#[derive(Subcommand, Debug)]
pub enum DkimCmd {
    /// Domains with a key, and the DNS record each needs.
    List,
    /// Give DOMAIN a key (a new RSA-2048 one unless --key-file names a PKCS#8 PEM) and print
    /// the TXT record to publish.
    Add {
        domain: String,
        #[arg(long, default_value = "sirms")]
        selector: String,
        #[arg(long)]
        key_file: Option<std::path::PathBuf>,
    },
    /// Stop signing DOMAIN's mail.
    #[command(alias = "rm")]
    Remove { domain: String },
}

#[derive(Subcommand, Debug)]
pub enum QueueCmd {
    /// Messages waiting on every node, with their last error.
    List,
    /// One queued message in full.
    Show { id: String },
    /// Retry every queued message now.
    Flush,
    /// Delete a queued message without a bounce.
    #[command(alias = "rm")]
    Remove { id: String },
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

type Client = AdminClient<InterceptedService<Channel, TokenInterceptor>>;

/// A pending result of a hook.
pub type HookFuture = std::pin::Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// What `sirms ctl` needs from crates the router must not depend on (the router knows
/// mailboxes only through the directory).
pub struct Hooks<'a> {
    /// Turns a password into the stored hash.
    pub hash: &'a dyn Fn(&str) -> Result<String, String>,
    /// Moves a user's mailboxes: (router, token, user, new home) → report.
    pub move_user: &'a dyn Fn(String, String, String, String) -> HookFuture,
    /// A new DKIM private key (PKCS#8 PEM).
    pub dkim_key: &'a dyn Fn() -> Result<String, String>,
    /// The DNS TXT record that publishes a DKIM private key's public half.
    pub dkim_record: &'a dyn Fn(&str) -> Result<String, String>,
}

/// Runs one `sirms ctl` command and returns the text to print.
pub async fn run(args: CtlArgs, hooks: &Hooks<'_>) -> Result<String, CtlError> {
    let hash = hooks.hash;
    let channel = tonic::transport::Endpoint::from_shared(args.router.clone())
        .map_err(|e| CtlError::Connect(args.router.clone(), e.to_string()))?
        .connect()
        .await
        .map_err(|e| CtlError::Connect(args.router.clone(), e.to_string()))?;
    let mut c: Client =
        AdminClient::with_interceptor(channel, TokenInterceptor::new(&args.token).ok_or(CtlError::Token)?);
    let name = |name: String| Name { name };
    let json = args.json;
    Ok(match args.command {
        CtlCommand::Status => show(json, &c.status(Empty {}).await?.into_inner(), |s| {
            let mut out = format!(
                "directory version {}, {} domains, {} users, {} routes\n",
                s.directory_version, s.domains, s.users, s.routes
            );
            if let Some(nat) = &s.nat {
                out.push_str(&format!(
                    "nat: {} flows; {} opened, {} reset; packets {} forwarded, {} answered, {} dropped\n",
                    nat.flows, nat.flows_opened, nat.flows_reset, nat.forwarded, nat.answered, nat.discarded
                ));
            }
            out.push_str(&nodes_table(&s.nodes));
            out
        })?,
        CtlCommand::Nodes(cmd) => match cmd {
            NodesCmd::List => show(json, &c.list_nodes(Empty {}).await?.into_inner(), |l| nodes_table(&l.nodes))?,
            NodesCmd::Add {
                id,
                host,
                weight,
                smtp_port,
                submission_port,
                submissions_port,
                imap_port,
                imaps_port,
                pop3_port,
                pop3s_port,
                store,
                storage_only,
            } => {
                let node = Node {
                    id,
                    host,
                    weight,
                    smtp_port,
                    submission_port,
                    submissions_port,
                    imap_port,
                    imaps_port,
                    pop3_port,
                    pop3s_port,
                    store_endpoint: store,
                    drained: false,
                    storage_only,
                };
                acked(json, c.put_node(node).await)?
            }
            NodesCmd::Remove { id } => acked(json, c.remove_node(name(id)).await)?,
            NodesCmd::Drain { id } => acked(json, c.drain_node(DrainRequest { id, drained: true }).await)?,
            NodesCmd::Undrain { id } => acked(json, c.drain_node(DrainRequest { id, drained: false }).await)?,
        },
        CtlCommand::Routes(cmd) => match cmd {
            RoutesCmd::List => show(json, &c.list_routes(Empty {}).await?.into_inner(), |l| {
                l.routes.iter().map(|r| format!("{} -> {}\n", r.cidr, r.target)).collect()
            })?,
            RoutesCmd::Add { cidr, target } => acked(json, c.put_route(Route { cidr, target }).await)?,
            RoutesCmd::Remove { cidr } => acked(json, c.remove_route(name(cidr)).await)?,
            RoutesCmd::Test { ip } => show(json, &c.explain(name(ip)).await?.into_inner(), |e| {
                format!("{} ({}); fallback order: {}\n", e.node, e.reason, e.ranked.join(" "))
            })?,
        },
        CtlCommand::Groups(cmd) => match cmd {
            GroupsCmd::List => show(json, &c.list_groups(Empty {}).await?.into_inner(), |l| {
                l.groups.iter().map(|g| format!("{}: {}\n", g.name, g.members.join(" "))).collect()
            })?,
            GroupsCmd::Set { name: group, members } => acked(json, c.put_group(Group { name: group, members }).await)?,
            GroupsCmd::Remove { name: group } => acked(json, c.remove_group(name(group)).await)?,
        },
        CtlCommand::Domains(cmd) => match cmd {
            DomainsCmd::List => {
                let domains = c.get_directory(Empty {}).await?.into_inner().domains;
                show(json, &domains, |d| d.iter().map(|d| format!("{d}\n")).collect())?
            }
            DomainsCmd::Add { domain } => acked(json, c.put_domain(name(domain)).await)?,
            DomainsCmd::Remove { domain } => acked(json, c.remove_domain(name(domain)).await)?,
        },
        CtlCommand::Users(cmd) => match cmd {
            UsersCmd::List => {
                // Password hashes stay out of the listing, in JSON too.
                let users: Vec<User> = c
                    .get_directory(Empty {})
                    .await?
                    .into_inner()
                    .users
                    .into_iter()
                    .map(|u| User { password_hash: String::new(), ..u })
                    .collect();
                show(json, &users, |l| {
                    l.iter()
                        .map(|u| match u.quota_bytes {
                            0 => format!("{} home={}\n", u.address, u.home),
                            q => format!("{} home={} quota={q}\n", u.address, u.home),
                        })
                        .collect()
                })?
            }
            UsersCmd::Add { address, password, home, keep_password } => {
                let password_hash = if keep_password { String::new() } else { password_hash(password, hash)? };
                acked(json, c.put_user(User { address, password_hash, home, quota_bytes: 0 }).await)?
            }
            UsersCmd::Passwd { address, password } => {
                let password_hash = password_hash(password, hash)?;
                acked(json, c.put_user(User { address, password_hash, home: String::new(), quota_bytes: 0 }).await)?
            }
            UsersCmd::Move { address, to } => {
                let report = (hooks.move_user)(args.router.clone(), args.token.clone(), address, to)
                    .await
                    .map_err(CtlError::Input)?;
                show(json, &serde_json::json!({ "ok": true, "report": report }), |_| report.clone())?
            }
            UsersCmd::Remove { address } => acked(json, c.remove_user(name(address)).await)?,
        },
        CtlCommand::Aliases(cmd) => match cmd {
            AliasesCmd::List => {
                let aliases = c.get_directory(Empty {}).await?.into_inner().aliases;
                show(json, &aliases, |l| {
                    l.iter().map(|a| format!("{} -> {}\n", a.address, a.targets.join(" "))).collect()
                })?
            }
            AliasesCmd::Add { address, targets } => acked(json, c.put_alias(Alias { address, targets }).await)?,
            AliasesCmd::Remove { address } => acked(json, c.remove_alias(name(address)).await)?,
        },
        CtlCommand::Transports(cmd) => match cmd {
            TransportsCmd::List => {
                let transports = c.get_directory(Empty {}).await?.into_inner().transports;
                show(json, &transports, |l| l.iter().map(|t| format!("{} -> {}\n", t.domain, t.relay)).collect())?
            }
            TransportsCmd::Add { domain, relay } => acked(json, c.put_transport(Transport { domain, relay }).await)?,
            TransportsCmd::Remove { domain } => acked(json, c.remove_transport(name(domain)).await)?,
        },
        CtlCommand::Queue(cmd) => queue::run(&mut c, &args.token, json, cmd).await?,
        CtlCommand::Dkim(cmd) => match cmd {
            DkimCmd::List => {
                let keys = c.get_directory(Empty {}).await?.into_inner().dkim_keys;
                let records = keys
                    .iter()
                    .map(|k| dkim_record(hooks, &k.domain, &k.selector, &k.private_key_pem))
                    .collect::<Result<Vec<_>, _>>()?;
                show(json, &records, |r| r.iter().map(|r| format!("{} IN TXT \"{}\"\n", r.name, r.txt)).collect())?
            }
            DkimCmd::Add { domain, selector, key_file } => {
                let pem = match key_file {
                    Some(path) => std::fs::read_to_string(&path)
                        .map_err(|e| CtlError::Input(format!("{}: {e}", path.display())))?,
                    None => (hooks.dkim_key)().map_err(CtlError::Input)?,
                };
                let record = dkim_record(hooks, &domain.to_lowercase(), &selector, &pem)?;
                c.put_dkim_key(DkimKey { domain, selector, private_key_pem: pem }).await?;
                show(json, &record, |r| {
                    format!("publish this record, then mail is signed:\n{} IN TXT \"{}\"", r.name, r.txt)
                })?
            }
            DkimCmd::Remove { domain } => acked(json, c.remove_dkim_key(name(domain)).await)?,
        },
    })
}

/// `sirms ctl queue`: asks every mail node's NodeAdmin service, found through the router.
mod queue {
    use std::time::Duration;

    use sirms_proto::cluster::node_admin_client::NodeAdminClient;
    use sirms_proto::cluster::{Empty, Name, QueueList, QueuedMessage};
    use sirms_proto::token::TokenInterceptor;

    use super::{Client, CtlError, QueueCmd, show};

    /// What one node answered, or why it did not.
    #[derive(serde::Serialize)]
    struct NodeQueue {
        node: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        messages: Vec<QueuedMessage>,
    }

    async fn node_admin(
        endpoint: &str,
        token: &str,
    ) -> Result<
        NodeAdminClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, TokenInterceptor>>,
        String,
    > {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(30))
            .connect()
            .await
            .map_err(|e| format!("unreachable: {e}"))?;
        let interceptor = TokenInterceptor::new(token).ok_or("the token is not valid metadata")?;
        Ok(NodeAdminClient::with_interceptor(channel, interceptor))
    }

    pub(super) async fn run(router: &mut Client, token: &str, json: bool, cmd: QueueCmd) -> Result<String, CtlError> {
        let nodes: Vec<(String, String)> = router
            .list_nodes(Empty {})
            .await?
            .into_inner()
            .nodes
            .into_iter()
            .filter_map(|s| s.node)
            .filter(|n| !n.storage_only)
            .map(|n| (n.id, n.store_endpoint))
            .collect();
        let mut answers = Vec::new();
        for (node, endpoint) in nodes {
            let mut answer = NodeQueue { node, error: None, messages: Vec::new() };
            if endpoint.is_empty() {
                answer.error = Some("no admin endpoint (the node has no store_listen)".into());
                answers.push(answer);
                continue;
            }
            let result = async {
                let mut admin = node_admin(&endpoint, token).await?;
                let call = match &cmd {
                    QueueCmd::List | QueueCmd::Show { .. } => admin.list_queue(Empty {}).await.map(|r| r.into_inner()),
                    QueueCmd::Flush => admin.flush_queue(Empty {}).await.map(|_| QueueList::default()),
                    QueueCmd::Remove { id } => match admin.remove_queued(Name { name: id.clone() }).await {
                        Ok(_) => {
                            Ok(QueueList { messages: vec![QueuedMessage { id: id.clone(), ..Default::default() }] })
                        }
                        Err(s) if s.code() == tonic::Code::NotFound => Ok(QueueList::default()),
                        Err(s) => Err(s),
                    },
                };
                call.map_err(|s| s.message().to_string())
            }
            .await;
            match result {
                Ok(list) => answer.messages = list.messages,
                Err(e) => answer.error = Some(e),
            }
            answers.push(answer);
        }
        match cmd {
            QueueCmd::List => show(json, &answers, |a| listing(a)),
            QueueCmd::Show { id } => {
                let found = answers
                    .into_iter()
                    .find_map(|a| a.messages.into_iter().find(|m| m.id == id).map(|m| (a.node, m)))
                    .ok_or_else(|| CtlError::Input(format!("no queued message {id}")))?;
                show(json, &found.1, |m| details(&found.0, m))
            }
            QueueCmd::Flush => show(json, &answers, |a| {
                a.iter()
                    .map(|n| match &n.error {
                        None => format!("{}: flushed\n", n.node),
                        Some(e) => format!("{}: {e}\n", n.node),
                    })
                    .collect()
            }),
            QueueCmd::Remove { id } => {
                let on: Vec<&str> =
                    answers.iter().filter(|a| !a.messages.is_empty()).map(|a| a.node.as_str()).collect();
                if on.is_empty() {
                    return Err(CtlError::Input(format!("no queued message {id}")));
                }
                show(json, &serde_json::json!({ "ok": true, "removed_on": on }), |_| {
                    format!("removed {id} from {}", on.join(" "))
                })
            }
        }
    }

    fn now() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
    }

    fn listing(answers: &[NodeQueue]) -> String {
        let mut out = format!(
            "{:<10} {:<28} {:>9} {:>8} {:>9}  {:<28} recipients\n",
            "node", "id", "size", "attempts", "next", "sender"
        );
        for a in answers {
            if let Some(e) = &a.error {
                out.push_str(&format!("{:<10} ({e})\n", a.node));
            }
            for m in &a.messages {
                let next = m.next_attempt - now();
                let next = if next > 0 { format!("in {next}s") } else { "due".to_string() };
                let sender = if m.sender.is_empty() { "<>" } else { &m.sender };
                let rcpts: Vec<&str> = m.remote.iter().chain(&m.local).map(String::as_str).collect();
                out.push_str(&format!(
                    "{:<10} {:<28} {:>9} {:>8} {:>9}  {:<28} {}\n",
                    a.node,
                    m.id,
                    m.size,
                    m.attempts,
                    next,
                    sender,
                    rcpts.join(" ")
                ));
            }
        }
        out
    }

    fn details(node: &str, m: &QueuedMessage) -> String {
        let mut out = format!(
            "id: {}\nnode: {node}\nsender: <{}>\nsize: {}\nattempts: {}\nqueued: {}s ago\nnext attempt: in {}s\n",
            m.id,
            m.sender,
            m.size,
            m.attempts,
            now() - m.created,
            (m.next_attempt - now()).max(0)
        );
        for r in &m.local {
            out.push_str(&format!("local: {r} (home store unreachable)\n"));
        }
        for r in &m.remote {
            let error = m.errors.get(r).map(String::as_str).unwrap_or("not tried yet");
            out.push_str(&format!("remote: {r}: {error}\n"));
        }
        out
    }
}

/// The DNS record a DKIM key needs.
#[derive(serde::Serialize)]
struct DkimRecord {
    domain: String,
    selector: String,
    /// `SELECTOR._domainkey.DOMAIN`.
    name: String,
    txt: String,
}

fn dkim_record(hooks: &Hooks<'_>, domain: &str, selector: &str, pem: &str) -> Result<DkimRecord, CtlError> {
    let txt = (hooks.dkim_record)(pem).map_err(CtlError::Input)?;
    Ok(DkimRecord {
        domain: domain.to_string(),
        selector: selector.to_string(),
        name: format!("{selector}._domainkey.{domain}"),
        txt,
    })
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

/// The hash of the given password, or of the first line of stdin.
fn password_hash(password: Option<String>, hash: &dyn Fn(&str) -> Result<String, String>) -> Result<String, CtlError> {
    let password = match password {
        Some(p) => p,
        None => {
            let mut text = String::new();
            std::io::stdin().take(4096).read_to_string(&mut text).map_err(|e| CtlError::Input(e.to_string()))?;
            text.lines().next().unwrap_or_default().to_string()
        }
    };
    if password.is_empty() {
        return Err(CtlError::Input("empty password".into()));
    }
    hash(&password).map_err(CtlError::Input)
}

fn nodes_table(nodes: &[sirms_proto::cluster::NodeStatus]) -> String {
    let row = |cells: [&str; 14]| {
        let [
            id,
            host,
            weight,
            health,
            state,
            active,
            total,
            sessions,
            queue,
            received,
            delivered,
            deferred,
            bounced,
            auth,
        ] = cells;
        format!(
            "{id:<12} {host:<16} {weight:>6} {health:<8} {state:<8} {active:>7} {total:>7} {sessions:>18} {queue:>6} \
             {received:>9} {delivered:>9} {deferred:>8} {bounced:>7} {auth:>9}\n"
        )
    };
    let mut out = row([
        "node",
        "host",
        "weight",
        "health",
        "state",
        "active",
        "total",
        "smtp/imap/pop3",
        "queue",
        "received",
        "delivered",
        "deferred",
        "bounced",
        "auth-fail",
    ]);
    for s in nodes {
        let Some(n) = &s.node else { continue };
        let state = if n.storage_only {
            "storage"
        } else if n.drained {
            "drained"
        } else {
            "active"
        };
        // Without a recent heartbeat the node's own numbers are unknown.
        let load = |pick: fn(&sirms_proto::cluster::NodeLoad) -> String| s.load.as_ref().map_or("-".to_string(), pick);
        out.push_str(&row([
            &n.id,
            &n.host,
            &n.weight.to_string(),
            if s.healthy { "up" } else { "down" },
            state,
            &s.active_connections.to_string(),
            &s.total_connections.to_string(),
            &load(|l| format!("{}/{}/{}", l.smtp_sessions, l.imap_sessions, l.pop3_sessions)),
            &load(|l| l.queue_length.to_string()),
            &load(|l| l.messages_received.to_string()),
            &load(|l| l.delivered.to_string()),
            &load(|l| l.deferred.to_string()),
            &load(|l| l.bounced.to_string()),
            &load(|l| l.auth_failures.to_string()),
        ]));
    }
    out
}
