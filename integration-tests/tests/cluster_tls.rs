//! The cluster plane over mutual TLS, with certificates from `sirms ctl ca`: a router and two
//! nodes work as before, and every caller is held to its certificate's identity: a node may
//! register only as itself, only the administrator may use the Admin API, no one without a
//! certificate (or with a router's) reads a mailbox.

use std::path::PathBuf;

use sirms_integration_tests::{
    CLUSTER_TOKEN, MailNode, RouterProcess, cluster_credentials, cluster_tls_toml, ctl_ca, directory_client, python,
    sirms_bin, tls_args,
};
use sirms_proto::cluster::{Node, NodeLoad};
use sirms_proto::store::UserRequest;
use sirms_proto::store::store_client::StoreClient;
use sirms_proto::token::TokenInterceptor;
use sirms_storage::{MailStore, RemoteStore};

/// Sends one message to argv[3] through argv[1] from source argv[2].
const SEND: &str = r#"
import smtplib, sys
host, port = sys.argv[1].rsplit(":", 1)
s = smtplib.SMTP(host, int(port), source_address=(sys.argv[2], 0), timeout=20)
s.ehlo("client.test")
print(s.sendmail("x@remote.test", [sys.argv[3]], b"Subject: over mTLS\r\n\r\nhi\r\n"))
s.quit()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_plane_runs_on_mutual_tls_and_holds_callers_to_their_certificates() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir: PathBuf = tmp.path().join("ca");
    ctl_ca(&dir, &["init"]);
    ctl_ca(&dir, &["issue", "router", "router1", "--host", "127.0.0.1"]);
    ctl_ca(&dir, &["issue", "node", "node1", "--host", "127.0.0.1"]);
    ctl_ca(&dir, &["issue", "node", "node2", "--host", "127.0.0.2"]);

    let (router, n1, _n2) = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || {
            let mut router = RouterProcess::start_with(&cluster_tls_toml(&dir, "router1"));
            router.ctl_args = tls_args(&dir, "admin");
            let extra = |id: &str, ip| RouterProcess::nodes_extra(&[&router], id, ip) + &cluster_tls_toml(&dir, id);
            let n1 = MailNode::start_on([127, 0, 0, 1], "node1.example.test", &extra("node1", [127, 0, 0, 1]));
            let n2 = MailNode::start_on([127, 0, 0, 2], "node2.example.test", &extra("node2", [127, 0, 0, 2]));
            router.wait_nodes(" up ", 2);
            router.ctl(&["domains", "add", "example.test"]);
            router.ctl(&["users", "add", "alice@example.test", "--password", "alice-pw", "--home", "node1"]);
            router.ctl(&["routes", "add", "127.0.0.77/32", "node2"]);
            (router, n1, n2)
        }
    })
    .await
    .expect("cluster starts");

    // Mail taken by node2 for a user homed on node1 crosses the plane over mutual TLS.
    let sent = python(SEND, &[router.smtp.to_string(), "127.0.0.77".into(), "alice@example.test".into()]);
    assert_eq!(sent.trim(), "{}");
    let (n1, inbox) = tokio::task::spawn_blocking(move || {
        let inbox = n1.inbox("alice@example.test");
        (n1, inbox)
    })
    .await
    .expect("inbox");
    assert_eq!(inbox.len(), 1);
    assert!(String::from_utf8_lossy(&inbox[0]).contains("greets [127.0.0.77]") || inbox[0].ends_with(b"hi\r\n"));

    // A node's certificate is no admin's.
    let as_node = router.ctl_as(&tls_args(&dir, "node1"), &["status"]);
    let err = String::from_utf8_lossy(&as_node.stderr);
    assert!(!as_node.status.success() && err.contains("node node1 may not make this call"), "{err}");
    // Without a certificate the router does not even answer.
    let plain = std::process::Command::new(sirms_bin())
        .args(["ctl", "--router", &format!("http://{}", router.admin), "--token", CLUSTER_TOKEN, "status"])
        .output()
        .expect("run sirms ctl");
    assert!(!plain.status.success());

    // node2's certificate cannot register as node1 (and so take its traffic).
    let node2 = cluster_credentials(&dir, "node2");
    let mut directory = directory_client(router.admin, &node2).await;
    let impostor = Node { id: "node1".into(), host: "127.0.0.2".into(), smtp_port: 25, ..Default::default() };
    let refused = directory.register(impostor).await.expect_err("registering as another node is refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("may not act as node node1"), "{refused:?}");
    let load = |id: &str| NodeLoad { node_id: id.into(), ..Default::default() };
    let refused = directory.heartbeat(load("node1")).await.expect_err("a heartbeat for another node is refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    directory.heartbeat(load("node2")).await.expect("a node heartbeats as itself");

    // node1's mailboxes: not without a certificate, not with a router's, yes with a node's.
    let store = router.ctl(&["nodes", "list", "--json"]);
    let store: serde_json::Value = serde_json::from_str(&store).expect("json");
    let endpoint = store["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["node"]["id"] == "node1"))
        .and_then(|n| n["node"]["store_endpoint"].as_str())
        .expect("node1's store endpoint")
        .to_string();
    let plaintext = RemoteStore::connect(&endpoint, CLUSTER_TOKEN);
    assert!(plaintext.expect("client").list_mailboxes("alice@example.test").await.is_err());
    let ca_only = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(std::fs::read(dir.join("ca.pem")).expect("ca")));
    let https = endpoint.replacen("http://", "https://", 1);
    let no_cert = tonic::transport::Endpoint::from_shared(https).expect("endpoint").tls_config(ca_only).expect("tls");
    if let Ok(channel) = no_cert.connect().await {
        let mut client = StoreClient::with_interceptor(channel, TokenInterceptor::new(CLUSTER_TOKEN).expect("token"));
        let call = client.list_mailboxes(UserRequest { user: "alice@example.test".into() }).await;
        assert!(call.is_err(), "a client without a certificate read a mailbox list");
    }
    let as_router = RemoteStore::connect_with(&endpoint, &cluster_credentials(&dir, "router1")).expect("client");
    let refused = as_router.list_mailboxes("alice@example.test").await.expect_err("a router reads no mailbox");
    assert!(refused.to_string().contains("may not make this call"), "{refused}");
    let as_node2 = RemoteStore::connect_with(&endpoint, &node2).expect("client");
    let inbox = as_node2.list_mailboxes("alice@example.test").await.expect("a node reads a mailbox it serves");
    assert!(inbox.iter().any(|m| m.name == "INBOX"));
    drop(n1);
}
