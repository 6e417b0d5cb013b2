//! Test harness for black-box tests: finding the `sirms` binary, starting it as a real
//! process on a loopback port, and stopping it (gracefully or with SIGKILL).

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod dkim_key;
pub mod dovecot;
pub mod etcd;
pub mod netns;
pub mod nsd;
pub mod raw_imap;

/// The `sirms` binary next to this test's target directory (built by the README's test
/// command), or `$SIRMS_BIN`.
pub fn sirms_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SIRMS_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/sirms
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target profile directory");
    let bin = profile_dir.join("sirms");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build --bin sirms`; the README's test command does) or set SIRMS_BIN",
        bin.display()
    );
    bin
}

/// `sirms ctl ca ARGS --dir DIR`, which must succeed: the cluster CA and certificates for
/// tests of mutual TLS.
pub fn ctl_ca(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new(sirms_bin())
        .args(["ctl", "ca"])
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("run sirms ctl ca");
    assert!(out.status.success(), "ctl ca {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The `[cluster_tls]` section for certificate NAME in the CA directory `dir`.
pub fn cluster_tls_toml(dir: &std::path::Path, name: &str) -> String {
    format!("[cluster_tls]\nca = \"{0}/ca.pem\"\ncert = \"{0}/{name}.pem\"\nkey = \"{0}/{name}.key\"\n", dir.display())
}

/// `--ca --cert --key` for `sirms ctl` or `sirms join` with certificate NAME (and `ca.pem`)
/// from the directory `dir`.
pub fn tls_args(dir: &std::path::Path, name: &str) -> Vec<String> {
    let path = |file: String| dir.join(file).display().to_string();
    vec![
        "--ca".into(),
        path("ca.pem".into()),
        "--cert".into(),
        path(format!("{name}.pem")),
        "--key".into(),
        path(format!("{name}.key")),
    ]
}

/// The cluster token with certificate NAME from the CA directory `dir`.
pub fn cluster_credentials(dir: &std::path::Path, name: &str) -> sirms_proto::cluster_tls::Credentials {
    use sirms_proto::cluster_tls::{ClusterTls, TlsFiles};
    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    let tls = ClusterTls::load(&files).expect("load certificates");
    sirms_proto::cluster_tls::Credentials { token: CLUSTER_TOKEN.into(), tls: Some(tls) }
}

/// A Directory client (the API nodes use) of the router at `admin`, with `credentials`.
pub async fn directory_client(
    admin: SocketAddr,
    credentials: &sirms_proto::cluster_tls::Credentials,
) -> sirms_proto::cluster::directory_client::DirectoryClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, sirms_proto::token::TokenInterceptor>,
> {
    let endpoint = credentials.endpoint(&format!("http://{admin}")).expect("endpoint");
    let channel = endpoint.connect().await.expect("connect to the router");
    let token = sirms_proto::token::TokenInterceptor::new(&credentials.token).expect("token");
    sirms_proto::cluster::directory_client::DirectoryClient::with_interceptor(channel, token)
}

/// A free TCP port on 127.0.0.1, released for a child process to take.
pub fn free_port() -> u16 {
    free_port_on(Ipv4Addr::LOCALHOST)
}

/// Ports handed out by this test process. They come from below Linux's ephemeral range
/// (32768+), so an outgoing connection's local port can never take one between our check
/// and the child's bind; a counter keeps parallel tests in one process apart, and the pid
/// spreads test processes apart.
static NEXT_PORT: AtomicU32 = AtomicU32::new(0);
const PORT_BASE: u32 = 12000;
const PORT_SPAN: u32 = 20000;

/// A free TCP port on `ip`, released for a child process to take.
pub fn free_port_on(ip: Ipv4Addr) -> u16 {
    let offset = (std::process::id() % 100) * (PORT_SPAN / 100);
    for _ in 0..PORT_SPAN {
        let n = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let port = (PORT_BASE + (offset + n) % PORT_SPAN) as u16;
        if TcpListener::bind(SocketAddr::from((ip, port))).is_ok() {
            return port;
        }
    }
    panic!("no free port on {ip} between {PORT_BASE} and {}", PORT_BASE + PORT_SPAN);
}

/// Waits until something accepts connections on `addr`, at most `limit`.
pub fn wait_for_port(addr: SocketAddr, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Connects to `addr` from the loopback address `source` (any port), within `limit`.
pub fn connect_from(source: Ipv4Addr, addr: SocketAddr, limit: Duration) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    socket.connect_timeout(&addr.into(), limit)?;
    Ok(socket.into())
}

/// A child process that is killed when dropped.
pub struct Process {
    child: Child,
}

impl Process {
    /// Starts `sirms` with `args`, logs going to the test's stderr.
    pub fn sirms(args: &[&str]) -> Process {
        Process::sirms_with_env(args, &[])
    }

    /// The same with more environment variables (a debug build's test switches).
    pub fn sirms_with_env(args: &[&str], env: &[(&str, &str)]) -> Process {
        let child = Command::new(sirms_bin())
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sirms");
        Process { child }
    }

    /// The same, its stderr (the logs) going to the file `log` instead, for tests that read them.
    pub fn sirms_logging_to(args: &[&str], log: &std::path::Path) -> Process {
        let file = std::fs::File::create(log).expect("create log file");
        let child = Command::new(sirms_bin())
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn sirms");
        Process { child }
    }

    /// Wraps an already started child.
    pub fn from_child(child: Child) -> Process {
        Process { child }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A size line of `/proc/<pid>/status` in KiB: `VmRSS` (resident now), `VmHWM` (peak
    /// resident); `None` once the process is gone.
    pub fn status_kib(&self, key: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.strip_prefix(key).is_some_and(|rest| rest.starts_with(':')))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// The child itself.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Waits (bounded) until every address in `addrs` accepts connections; panics at once,
    /// with the exit status, if the process dies first (say, a port it could not bind).
    pub fn wait_listening(&mut self, what: &str, addrs: &[SocketAddr]) {
        let start = Instant::now();
        for &addr in addrs {
            loop {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!("{what} exited ({status}) before listening on {addr}");
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    break;
                }
                assert!(start.elapsed() < Duration::from_secs(30), "{what} did not listen on {addr}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait (bounded) for a clean exit; SIGKILL if it does not come.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

/// A `sirms storage` process on a loopback port with its own data directory.
pub struct StorageNode {
    pub process: Process,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub token: String,
}

impl StorageNode {
    /// Starts a storage node over `data_dir` and waits until it listens.
    pub fn start(data_dir: PathBuf) -> StorageNode {
        StorageNode::start_with_token(data_dir, "test-token")
    }

    /// The same, with a given cluster token.
    pub fn start_with_token(data_dir: PathBuf, token: &str) -> StorageNode {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        StorageNode::start_at(addr, data_dir, token)
    }

    /// A storage node on a given address (to restart one where it was).
    pub fn start_at(addr: SocketAddr, data_dir: PathBuf, token: &str) -> StorageNode {
        StorageNode::start_at_with_env(addr, data_dir, token, &[])
    }

    /// The same with more environment variables (a debug build's test switches).
    pub fn start_at_with_env(addr: SocketAddr, data_dir: PathBuf, token: &str, env: &[(&str, &str)]) -> StorageNode {
        let token = token.to_string();
        let mut process = Process::sirms_with_env(
            &[
                "storage",
                "--listen",
                &addr.to_string(),
                "--data-dir",
                data_dir.to_str().expect("utf-8 path"),
                "--token",
                &token,
            ],
            env,
        );
        process.wait_listening("sirms storage", &[addr]);
        StorageNode { process, addr, data_dir, token }
    }

    /// The gRPC endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A `sirms node` process with its own config, data directory and loopback ports.
pub struct MailNode {
    pub process: Process,
    pub dir: tempfile::TempDir,
    pub smtp: SocketAddr,
    pub submission: SocketAddr,
    pub submissions: SocketAddr,
    pub pop3: SocketAddr,
    pub pop3s: SocketAddr,
    pub imap: SocketAddr,
    pub imaps: SocketAddr,
    /// ManageSieve.
    pub sieve: SocketAddr,
    /// Prometheus `/metrics`.
    pub metrics: SocketAddr,
    pub hostname: String,
    /// The node's `data_dir`: `dir/data`, or where [`MailNode::start_with_data`] put it.
    pub data: PathBuf,
}

/// Users every test node has: `alice@example.test` / `alice-pw`, `bob@example.test` / `bob-pw`.
pub const TEST_USERS: &[(&str, &str)] = &[("alice@example.test", "alice-pw"), ("bob@example.test", "bob-pw")];

/// Outbound mail of test nodes goes to a dead loopback relay: tests never reach DNS or the
/// internet, whatever foreign address a client names. Tests of outbound delivery set their
/// own `[outbound]`.
const LOOPBACK_ONLY_OUTBOUND: &str = "[outbound]\nsmarthost = \"127.0.0.9:9\"\n";

impl MailNode {
    /// Starts a node named `hostname` with the test users; `extra` is top-level TOML
    /// (keys, then whole sections) added to its config.
    pub fn start(hostname: &str, extra: &str) -> MailNode {
        MailNode::start_on([127, 0, 0, 1], hostname, extra)
    }

    /// The same, listening on loopback address `ip`.
    pub fn start_on(ip: [u8; 4], hostname: &str, extra: &str) -> MailNode {
        MailNode::start_with_users(ip, hostname, extra, &[])
    }

    /// The same, with more users: each an inline TOML table of `[directory] users`
    /// (`{ address = "…", password = "{plain}…", quota_bytes = … }`).
    pub fn start_with_users(ip: [u8; 4], hostname: &str, extra: &str, more_users: &[&str]) -> MailNode {
        MailNode::launch(ip, hostname, extra, more_users, &[], false, None)
    }

    /// The same, with more aliases too: each a TOML line of `[directory.aliases]`
    /// (`"a@example.test" = ["b@example.test"]`). Its logs go to [`MailNode::log`].
    pub fn start_with_directory(
        ip: [u8; 4],
        hostname: &str,
        extra: &str,
        more_users: &[&str],
        more_aliases: &[&str],
    ) -> MailNode {
        MailNode::launch(ip, hostname, extra, more_users, more_aliases, true, None)
    }

    /// The same as [`MailNode::start_on`], with the data directory at `data` (say, on a
    /// file system of the test's own).
    pub fn start_with_data(ip: [u8; 4], hostname: &str, extra: &str, data: PathBuf) -> MailNode {
        MailNode::launch(ip, hostname, extra, &[], &[], false, Some(data))
    }

    fn launch(
        ip: [u8; 4],
        hostname: &str,
        extra: &str,
        more_users: &[&str],
        more_aliases: &[&str],
        log_to_file: bool,
        data: Option<PathBuf>,
    ) -> MailNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = data.unwrap_or_else(|| dir.path().join("data"));
        let ip = Ipv4Addr::from(ip);
        let port = |_| -> SocketAddr { SocketAddr::new(ip.into(), free_port_on(ip)) };
        let (smtp, submission, submissions, pop3, pop3s) = (port(0), port(1), port(2), port(3), port(4));
        let (imap, imaps, metrics, sieve) = (port(5), port(6), port(7), port(8));
        let mut users: Vec<String> =
            TEST_USERS.iter().map(|(u, p)| format!("{{ address = \"{u}\", password = \"{{plain}}{p}\" }}")).collect();
        users.extend(more_users.iter().map(|u| u.to_string()));
        let config = format!(
            r#"
hostname = "{hostname}"
data_dir = "{data}"
{extra}
[listen]
smtp = "{smtp}"
submission = "{submission}"
submissions = "{submissions}"
pop3 = "{pop3}"
pop3s = "{pop3s}"
imap = "{imap}"
imaps = "{imaps}"
sieve = "{sieve}"
metrics = "{metrics}"
[directory]
domains = ["example.test"]
users = [ {users} ]
[directory.aliases]
"postmaster@example.test" = ["alice@example.test"]
"team@example.test" = ["alice@example.test", "bob@example.test"]
{aliases}
{outbound}"#,
            data = data.display(),
            users = users.join(", "),
            aliases = more_aliases.join("\n"),
            outbound = if extra.contains("[outbound]") { "" } else { LOOPBACK_ONLY_OUTBOUND },
        );
        let config_path = dir.path().join("node.toml");
        std::fs::write(&config_path, config).expect("write config");
        let args = ["node", "-c", config_path.to_str().expect("utf-8")];
        let mut process = if log_to_file {
            Process::sirms_logging_to(&args, &dir.path().join("node.log"))
        } else {
            Process::sirms(&args)
        };
        process.wait_listening("sirms node", &[smtp, submission, submissions, pop3, pop3s, imap, imaps]);
        MailNode {
            process,
            dir,
            smtp,
            submission,
            submissions,
            pop3,
            pop3s,
            imap,
            imaps,
            sieve,
            metrics,
            hostname: hostname.to_string(),
            data,
        }
    }

    /// Every listening address of the node.
    pub fn addresses(&self) -> [SocketAddr; 7] {
        [self.smtp, self.submission, self.submissions, self.pop3, self.pop3s, self.imap, self.imaps]
    }

    /// What the node logged, if it was started with its logs going to a file
    /// ([`MailNode::start_with_directory`]).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }

    /// Kills the node (SIGKILL, if it still runs) and starts it again with the same config,
    /// ports and data directory, as after a crash; waits until it listens.
    pub fn restart(&mut self) {
        self.process.kill9();
        self.start_again();
    }

    /// Starts the node again, after it was killed, with the same config, ports and data
    /// directory; waits until it listens.
    pub fn start_again(&mut self) {
        let config = self.dir.path().join("node.toml");
        self.process = Process::sirms(&["node", "-c", config.to_str().expect("utf-8")]);
        self.process.wait_listening("restarted sirms node", &self.addresses());
    }

    /// Messages the node holds in its spool (accepted, not yet in their home mailbox).
    pub fn spooled(&self) -> usize {
        std::fs::read_dir(self.data.join("queue/env"))
            .map(|d| d.filter_map(|e| e.ok()).filter(|e| !e.file_name().to_string_lossy().starts_with('.')).count())
            .unwrap_or(0)
    }

    /// Delivers `n` numbered messages to alice by SMTP (`Subject: message <i>`, a body line
    /// that starts with a dot, so transparency is exercised too).
    pub fn deliver_numbered(&self, n: usize) {
        python(
            r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=20)
for i in range(int(sys.argv[2])):
    s.sendmail("x@remote.test", ["alice@example.test"],
        ("From: X <x@remote.test>\r\nSubject: message %d\r\n\r\nbody %d\r\n.starts with a dot\r\n" % (i, i)).encode())
s.quit()
"#,
            &[self.smtp.port().to_string(), n.to_string()],
        );
    }

    /// The files in a user's INBOX (`cur/`), oldest UID first, as bytes.
    pub fn inbox(&self, user: &str) -> Vec<Vec<u8>> {
        let escaped = user.replace('.', "%2E");
        let cur = self.data.join("store/mail").join(escaped).join("cur");
        let mut files: Vec<(u32, PathBuf)> = match std::fs::read_dir(&cur) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let uid = name.split(",U=").nth(1)?.split(',').next()?.parse().ok()?;
                    Some((uid, e.path()))
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        files.into_iter().map(|(_, p)| std::fs::read(p).expect("read message")).collect()
    }
}

/// A `/metrics` page (Prometheus text) served at `addr`.
pub fn metrics_page(addr: SocketAddr) -> String {
    const GET: &str = r#"
import sys, urllib.request
print(urllib.request.urlopen("http://" + sys.argv[1] + "/metrics", timeout=10).read().decode())
"#;
    python(GET, &[addr.to_string()])
}

/// Runs a Python 3 script (real client libraries: smtplib, poplib, imaplib) with
/// arguments; returns stdout, panicking with stderr if it fails.
pub fn python(script: &str, args: &[String]) -> String {
    python_with(Command::new("python3"), script, args)
}

/// The same, run by `python3`, a command that starts Python 3 (say, in a network namespace).
pub fn python_with(mut python3: Command, script: &str, args: &[String]) -> String {
    let out = python3.arg("-c").arg(script).args(args).output().expect("run python3");
    assert!(
        out.status.success(),
        "python failed:\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `sirms router` process with its own directory and loopback ports.
pub struct RouterProcess {
    pub process: Process,
    pub dir: tempfile::TempDir,
    pub admin: SocketAddr,
    pub smtp: SocketAddr,
    pub submission: SocketAddr,
    pub submissions: SocketAddr,
    pub pop3: SocketAddr,
    pub pop3s: SocketAddr,
    pub imap: SocketAddr,
    pub imaps: SocketAddr,
    /// ManageSieve.
    pub sieve: SocketAddr,
    /// Prometheus `/metrics`.
    pub metrics: SocketAddr,
    /// Put before every `sirms ctl` command's own arguments (`--ca`, `--cert`, `--key`).
    pub ctl_args: Vec<String>,
}

/// A router with two mail nodes, node1 on 127.0.0.1 and node2 on 127.0.0.2, both up.
pub fn two_node_cluster() -> (RouterProcess, MailNode, MailNode) {
    let router = RouterProcess::start();
    let n1 = MailNode::start_on([127, 0, 0, 1], "node1.example.test", &router.node_extra("node1", [127, 0, 0, 1]));
    let n2 = MailNode::start_on([127, 0, 0, 2], "node2.example.test", &router.node_extra("node2", [127, 0, 0, 2]));
    router.wait_nodes(" up ", 2);
    (router, n1, n2)
}

/// The token the test cluster uses.
/// Python that logs in as alice over ManageSieve (STARTTLS, PLAIN, python-managesieve) on
/// the port in argv[1], retrying while the new user reaches the node: `m` is the session.
/// What follows it in a script uses the session.
pub const MANAGESIEVE_LOGIN: &str = r#"
import managesieve, sys, time
host, port = "127.0.0.1", int(sys.argv[1])
# STARTTLS first: the server offers PLAIN only inside TLS. The user was just added: until
# the directory reaches the node the login fails, so each try is a new session.
deadline = time.time() + 20
while True:
    m = managesieve.MANAGESIEVE(host, port, use_tls=True, tls_verify=False, timeout=20)
    assert "fileinto" in m.capabilities and "vacation" in m.capabilities, m.capabilities
    assert m.loginmechs == ["PLAIN"], m.loginmechs
    if m.login("", "alice@example.test", "alice-pw") == "OK":
        break
    assert time.time() < deadline, m.response_text
    m.logout()
    time.sleep(0.5)
"#;

pub const CLUSTER_TOKEN: &str = "test-cluster-token";

impl RouterProcess {
    /// Starts a router on 127.0.0.1 with fresh ports and a health check every second.
    pub fn start() -> RouterProcess {
        RouterProcess::start_with("")
    }

    /// Starts a router whose directory is in the etcd cluster at `endpoints`, under `prefix`
    /// (several such routers share it).
    pub fn start_etcd(endpoints: &[String], prefix: &str) -> RouterProcess {
        let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
        RouterProcess::start_with(&format!(
            "directory = \"etcd\"\n[etcd]\nendpoints = [{}]\nprefix = \"{prefix}\"\ntimeout_ms = 1000\n",
            endpoints.join(", ")
        ))
    }

    /// Starts a router with `extra` TOML: top-level keys first, then any tables.
    pub fn start_with(extra: &str) -> RouterProcess {
        RouterProcess::start_on(Ipv4Addr::LOCALHOST, extra)
    }

    /// The same, listening on loopback address `ip` (a test's own range).
    pub fn start_on(ip: Ipv4Addr, extra: &str) -> RouterProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = || -> SocketAddr { SocketAddr::new(ip.into(), free_port_on(ip)) };
        let (admin, smtp, submission, submissions, imap, imaps, pop3, pop3s, metrics, sieve) =
            (port(), port(), port(), port(), port(), port(), port(), port(), port(), port());
        let config = format!(
            "data_dir = \"{}\"\ntoken = \"{CLUSTER_TOKEN}\"\nadmin_listen = \"{admin}\"\nhealth_interval_secs = 1\n\
             metrics_listen = \"{metrics}\"\n{extra}\n\
             [listen]\nsmtp = \"{smtp}\"\nsubmission = \"{submission}\"\nsubmissions = \"{submissions}\"\n\
             imap = \"{imap}\"\nimaps = \"{imaps}\"\npop3 = \"{pop3}\"\npop3s = \"{pop3s}\"\nsieve = \"{sieve}\"\n",
            dir.path().join("data").display()
        );
        let path = dir.path().join("router.toml");
        std::fs::write(&path, config).expect("write router config");
        let mut process = Process::sirms(&["router", "-c", path.to_str().expect("utf-8")]);
        process.wait_listening("sirms router", &[admin, smtp, pop3]);
        RouterProcess {
            process,
            dir,
            admin,
            smtp,
            submission,
            submissions,
            pop3,
            pop3s,
            imap,
            imaps,
            sieve,
            metrics,
            ctl_args: Vec::new(),
        }
    }

    /// Runs `sirms ctl ARGS` against this router.
    pub fn ctl_output(&self, args: &[&str]) -> std::process::Output {
        self.ctl_as(&self.ctl_args, args)
    }

    /// Runs `sirms ctl ARGS` against this router with other credentials (`tls_args`).
    pub fn ctl_as(&self, credentials: &[String], args: &[&str]) -> std::process::Output {
        Command::new(sirms_bin())
            .args(["ctl", "--router", &format!("http://{}", self.admin), "--token", CLUSTER_TOKEN])
            .args(credentials)
            .args(args)
            .output()
            .expect("run sirms ctl")
    }

    /// Runs `sirms ctl ARGS` against this router and returns its output (panics on failure).
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = self.ctl_output(args);
        assert!(out.status.success(), "sirms ctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `sirms ctl ARGS` that must fail; returns its error output.
    pub fn ctl_fails(&self, args: &[&str]) -> String {
        let out = self.ctl_output(args);
        assert!(!out.status.success(), "sirms ctl {args:?} should have failed");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// The `[cluster]` TOML a node needs to join this router as `node_id`, serving its
    /// store on `ip`.
    pub fn node_extra(&self, node_id: &str, ip: [u8; 4]) -> String {
        let ip = Ipv4Addr::from(ip);
        format!(
            "trusted_proxies = [\"127.0.0.1\"]\n[cluster]\nrouter = \"http://{}\"\nnode_id = \"{node_id}\"\n\
             token = \"{CLUSTER_TOKEN}\"\nstore_listen = \"{ip}:{}\"\n",
            self.admin,
            free_port_on(ip)
        )
    }

    /// The `[cluster]` TOML a node needs to follow the directory through any of `routers`.
    pub fn nodes_extra(routers: &[&RouterProcess], node_id: &str, ip: [u8; 4]) -> String {
        let list: Vec<String> = routers.iter().map(|r| format!("\"http://{}\"", r.admin)).collect();
        let ip = Ipv4Addr::from(ip);
        format!(
            "trusted_proxies = [\"127.0.0.1\"]\n[cluster]\nrouters = [{}]\nnode_id = \"{node_id}\"\n\
             token = \"{CLUSTER_TOKEN}\"\nstore_listen = \"{ip}:{}\"\n",
            list.join(", "),
            free_port_on(ip)
        )
    }

    /// Waits (bounded) until `sirms ctl nodes list` shows `want` lines matching `pattern`.
    pub fn wait_nodes(&self, pattern: &str, want: usize) {
        for _ in 0..100 {
            let list = self.ctl(&["nodes", "list"]);
            if list.lines().filter(|l| l.contains(pattern)).count() == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("nodes never reached {want} × {pattern:?}: {}", self.ctl(&["nodes", "list"]));
    }
}

/// The lines a child prints, gathered by a thread as they come, so a test can look at them
/// while the child runs (a load generator's acknowledgements).
pub struct Lines {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Lines {
    /// Starts gathering `child`'s standard output (it must be piped).
    pub fn of(child: &mut Child) -> Lines {
        use std::io::BufRead;
        let stdout = child.stdout.take().expect("the child's stdout is piped");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let gathered = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                gathered.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        Lines { lines, reader }
    }

    /// The lines so far.
    pub fn now(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops a load generator that ends when the file `stop` appears (within 30 s), and
    /// returns every line it printed, which must end with its `DONE`.
    pub fn stop(self, child: &mut Child, stop: &std::path::Path) -> Vec<String> {
        std::fs::write(stop, b"").expect("write the stop file");
        let wait = std::time::Instant::now();
        while child.try_wait().expect("wait for the load").is_none() {
            assert!(wait.elapsed() < std::time::Duration::from_secs(30), "the load did not stop");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let lines = self.all();
        assert_eq!(lines.last().map(String::as_str), Some("DONE"));
        lines
    }

    /// Every line, once the child has closed its output.
    pub fn all(self) -> Vec<String> {
        self.reader.join().expect("line reader");
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines.clone()
    }
}
