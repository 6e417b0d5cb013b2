//! `sirms ctl queue`: asks every mail node's NodeAdmin service, found through the router.

use std::time::Duration;

use clap::Subcommand;
use sirms_proto::cluster::node_admin_client::NodeAdminClient;
use sirms_proto::cluster::{Empty, Name, QueueList, QueuedMessage};
use sirms_proto::cluster_tls::Credentials;
use sirms_proto::token::TokenInterceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::{Client, CtlError, node_channel, show};

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
    credentials: &Credentials,
) -> Result<NodeAdminClient<InterceptedService<Channel, TokenInterceptor>>, String> {
    let (channel, interceptor) = node_channel(endpoint, credentials, Duration::from_secs(30)).await?;
    Ok(NodeAdminClient::with_interceptor(channel, interceptor))
}

pub(super) async fn run(
    router: &mut Client,
    credentials: &Credentials,
    json: bool,
    cmd: QueueCmd,
) -> Result<String, CtlError> {
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
            let mut admin = node_admin(&endpoint, credentials).await?;
            let call = match &cmd {
                QueueCmd::List | QueueCmd::Show { .. } => admin.list_queue(Empty {}).await.map(|r| r.into_inner()),
                QueueCmd::Flush => admin.flush_queue(Empty {}).await.map(|_| QueueList::default()),
                QueueCmd::Remove { id } => match admin.remove_queued(Name { name: id.clone() }).await {
                    Ok(_) => Ok(QueueList { messages: vec![QueuedMessage { id: id.clone(), ..Default::default() }] }),
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
            let on: Vec<&str> = answers.iter().filter(|a| !a.messages.is_empty()).map(|a| a.node.as_str()).collect();
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
