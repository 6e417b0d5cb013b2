//! Certificates without downtime: a node joins the cluster plane with a one-time invitation
//! (`sirms ctl nodes invite`, `sirms join`), renews its certificate at the router by itself
//! before it expires, and a router takes a replaced certificate without a restart.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use sirms_integration_tests::{
    MailNode, RouterProcess, cluster_credentials, cluster_tls_toml, ctl_ca, directory_client, sirms_bin, tls_args,
};
use sirms_proto::cluster::{Node, NodeLoad};
use sirms_proto::cluster_tls::{Identity, Role};

/// `sirms join` for the node whose files go in `dir`.
fn join(router: &RouterProcess, token: &str, dir: &Path) -> Output {
    Command::new(sirms_bin())
        .args(["join", "--router", &router.admin.to_string(), "--token", token])
        .args(tls_args(dir, "node3"))
        .output()
        .expect("run sirms join")
}

/// A router with mutual TLS whose admin is the test, and that issues certificates valid for
/// `lifetime_secs` with the issuer `sirms ctl ca init` made.
fn router(ca: &Path, lifetime_secs: u64) -> RouterProcess {
    let issuer = format!(
        "[issuer]\ncert = \"{0}/issuer.pem\"\nkey = \"{0}/issuer.key\"\nlifetime_secs = {lifetime_secs}\n",
        ca.display()
    );
    let mut router = RouterProcess::start_with(&(cluster_tls_toml(ca, "router1") + &issuer));
    router.ctl_args = tls_args(ca, "admin");
    router
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_once_with_an_invitation_and_renews_its_certificate_by_itself() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = tmp.path().join("ca");
    ctl_ca(&ca, &["init"]);
    ctl_ca(&ca, &["issue", "router", "router1", "--host", "127.0.0.1"]);
    // The node's side has the CA certificate and nothing else.
    let node_dir = tmp.path().join("node3");
    std::fs::create_dir_all(&node_dir).expect("node dir");
    std::fs::copy(ca.join("ca.pem"), node_dir.join("ca.pem")).expect("copy ca.pem");

    // Certificates live 15 s here, so the node renews its own within the test.
    let router = tokio::task::spawn_blocking({
        let ca = ca.clone();
        move || router(&ca, 15)
    })
    .await
    .expect("router");
    let invitation = router.ctl(&["nodes", "invite", "node3", "--host", "127.0.0.3"]);
    let token = invitation.lines().next().expect("token line").to_string();
    assert!(token.starts_with("sirms1:node3:"), "{invitation}");

    // A token that is not the one given is refused, and so is the real one the second time.
    let forged = format!("{}{}", &token[..token.len() - 4], "0000");
    let refused = join(&router, &forged, &node_dir);
    assert!(!refused.status.success(), "a forged token joined");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown, used or expired invitation"));
    let joined = join(&router, &token, &node_dir);
    assert!(joined.status.success(), "sirms join: {}", String::from_utf8_lossy(&joined.stderr));
    assert!(String::from_utf8_lossy(&joined.stdout).contains("joined as node node3"));
    let again = join(&router, &token, &node_dir);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && err.contains("unknown, used or expired invitation"), "{err}");

    let cert = std::fs::read(node_dir.join("node3.pem")).expect("certificate written");
    assert_eq!(Identity::from_pem(&cert), Some(Identity { role: Role::Node, name: "node3".into() }));
    let mode = std::fs::metadata(node_dir.join("node3.key")).expect("key written").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the private key is readable by others");

    // The node runs on what it got: it registers, and it is a node, not an admin.
    let node = tokio::task::spawn_blocking({
        let extra =
            RouterProcess::nodes_extra(&[&router], "node3", [127, 0, 0, 3]) + &cluster_tls_toml(&node_dir, "node3");
        move || MailNode::start_on([127, 0, 0, 3], "node3.example.test", &extra)
    })
    .await
    .expect("node3 starts");
    let router = tokio::task::spawn_blocking(move || {
        router.wait_nodes(" up ", 1);
        router
    })
    .await
    .expect("node3 registers");
    let as_node = router.ctl_as(&tls_args(&node_dir, "node3"), &["status"]);
    let err = String::from_utf8_lossy(&as_node.stderr);
    assert!(!as_node.status.success() && err.contains("node node3 may not make this call"), "{err}");
    let node3 = cluster_credentials(&node_dir, "node3");
    let mut directory = directory_client(router.admin, &node3).await;
    let impostor = Node { id: "node1".into(), host: "127.0.0.3".into(), smtp_port: 25, ..Default::default() };
    let refused = directory.register(impostor).await.expect_err("a joined node registers only as itself");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    // Within its 15 s the node renews the certificate at the router and writes the new one.
    let deadline = Instant::now() + Duration::from_secs(45);
    let renewed = loop {
        let now = std::fs::read(node_dir.join("node3.pem")).expect("certificate");
        if now != cert {
            break now;
        }
        assert!(Instant::now() < deadline, "the node did not renew its certificate");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(Identity::from_pem(&renewed), Some(Identity { role: Role::Node, name: "node3".into() }));
    // The renewed files work on a new connection.
    let node3 = cluster_credentials(&node_dir, "node3");
    let mut directory = directory_client(router.admin, &node3).await;
    directory
        .heartbeat(NodeLoad { node_id: "node3".into(), ..Default::default() })
        .await
        .expect("the renewed certificate is the node's");
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_takes_a_replaced_certificate_without_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = tmp.path().join("ca");
    ctl_ca(&ca, &["init"]);
    // The first certificate does not name the address the admin uses: every call fails.
    ctl_ca(&ca, &["issue", "router", "router1", "--host", "router1.example.test"]);
    let router = tokio::task::spawn_blocking({
        let ca = ca.clone();
        move || {
            // The harness waits for the admin API with `ctl status`, which cannot succeed yet.
            let router = router(&ca, 3600);
            router.ctl_fails(&["status"]);
            router
        }
    })
    .await
    .expect("router");

    // Replaced on disk as an admin would (new files moved into place): the next connection
    // is made with the new certificate, with no restart.
    ctl_ca(&ca, &["issue", "router", "router1b", "--host", "127.0.0.1"]);
    std::fs::rename(ca.join("router1b.key"), ca.join("router1.key")).expect("move key");
    std::fs::rename(ca.join("router1b.pem"), ca.join("router1.pem")).expect("move certificate");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = router.ctl_output(&["status"]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the router kept the old certificate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
