//! A real etcd cluster for tests: Debian's `etcd` (package `etcd-server`) started as child
//! processes on loopback ports, each member with its own data directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{Process, free_port};

/// The etcd server binary: `$ETCD_BIN`, else `etcd` on the PATH (`.ci/install-deps` installs it).
fn etcd_bin() -> PathBuf {
    std::env::var_os("ETCD_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("etcd"))
}

struct Member {
    name: String,
    client: SocketAddr,
    peer: SocketAddr,
    process: Option<Process>,
}

/// An etcd cluster of one or more members, killed when dropped.
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    dir: tempfile::TempDir,
    tls: Option<EtcdTls>,
}

/// TLS for etcd's clients: member `i` serves `m{i}.pem`/`m{i}.key` from `dir` and takes only
/// clients with a certificate of `dir/ca.pem`; `etcdctl` presents `client`.
#[derive(Clone)]
pub struct EtcdTls {
    pub dir: PathBuf,
    pub client: String,
}

impl EtcdCluster {
    /// Starts `n` members and waits until each listens for clients.
    pub fn start(n: usize) -> EtcdCluster {
        EtcdCluster::start_with(n, None)
    }

    /// Starts `n` members whose client port speaks only TLS with client certificates.
    pub fn start_tls(n: usize, tls: EtcdTls) -> EtcdCluster {
        EtcdCluster::start_with(n, Some(tls))
    }

    fn start_with(n: usize, tls: Option<EtcdTls>) -> EtcdCluster {
        let dir = tempfile::tempdir().expect("etcd tempdir");
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: SocketAddr::from(([127, 0, 0, 1], free_port())),
                peer: SocketAddr::from(([127, 0, 0, 1], free_port())),
                process: None,
            })
            .collect();
        let initial_cluster =
            members.iter().map(|m| format!("{}=http://{}", m.name, m.peer)).collect::<Vec<_>>().join(",");
        let mut cluster = EtcdCluster { members, initial_cluster, dir, tls };
        for i in 0..n {
            cluster.spawn(i);
        }
        for i in 0..n {
            cluster.wait_listening(i);
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let member = &self.members[i];
        let data = self.dir.path().join(&member.name);
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://{}", member.client);
        let peer = format!("http://{}", member.peer);
        let mut command = Command::new(etcd_bin());
        if let Some(tls) = &self.tls {
            let file = |name: String| tls.dir.join(name).display().to_string();
            command
                .args(["--cert-file", &file(format!("{}.pem", member.name))])
                .args(["--key-file", &file(format!("{}.key", member.name))])
                .args(["--trusted-ca-file", &file("ca.pem".into()), "--client-cert-auth"]);
        }
        let child = command
            .args(["--name", &member.name, "--data-dir"])
            .arg(&data)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster, "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "sirms-test"])
            // Fast elections, so a lost member or quorum shows within a second or two.
            .args(["--heartbeat-interval", "100", "--election-timeout", "600"])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start etcd ({}): {e}; install Debian's etcd-server", etcd_bin().display())
            });
        self.members[i].process = Some(Process::from_child(child));
    }

    fn wait_listening(&mut self, i: usize) {
        let member = &mut self.members[i];
        let addr = member.client;
        if let Some(process) = member.process.as_mut() {
            process.wait_listening("etcd", &[addr]);
        }
    }

    /// The members' client endpoints (`host:port`), in order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client.to_string()).collect()
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut process) = self.members[i].process.take() {
            process.kill9();
        }
    }

    /// Starts member `i` again on its data directory, after [`EtcdCluster::kill`].
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_listening(i);
    }

    /// Waits (bounded) until the cluster takes a write, which needs a leader (written with
    /// `etcdctl`, from Debian's etcd-client).
    pub fn wait_ready(&self, limit: Duration) {
        let start = std::time::Instant::now();
        let endpoints = self.endpoints().join(",");
        while start.elapsed() < limit {
            let mut etcdctl = Command::new("etcdctl");
            if let Some(tls) = &self.tls {
                let file = |name: String| tls.dir.join(name).display().to_string();
                etcdctl
                    .args(["--cacert", &file("ca.pem".into())])
                    .args(["--cert", &file(format!("{}.pem", tls.client))])
                    .args(["--key", &file(format!("{}.key", tls.client))]);
            }
            let ok = etcdctl
                .args(["--endpoints", &endpoints, "--command-timeout=1s", "put", "/sirms-test/ready", "1"])
                .env("ETCDCTL_API", "3")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd cluster at {endpoints} took no write within {limit:?}");
    }
}
