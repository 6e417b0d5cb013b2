//! Network namespaces for tests that need real routing (the router's NAT mode): a lab of
//! three namespaces the test creates itself and always deletes, even when it fails.
//!
//! ```text
//!  public ns                      router ns                                 nodes ns
//!  clients 198.18.1.1-20/32      up0 198.18.0.1/24                          nod0 198.19.0.11/24 (node1)
//!  remote MTA 198.18.2.1/32  ──  down0 198.19.0.1/24 (admin API)        ──       198.19.0.12/24 (node2)
//!  pub0 198.18.0.2/24            sirms0 (TUN): 198.18.100.0/24 routed in;    default via 198.19.0.1
//!  198.18.100.0/24 via router    whatever arrives on down0 goes in too
//! ```
//!
//! 198.18.100.1 is the cluster's public address, .11 and .12 the nodes' aliases; none of
//! them is a local address anywhere, so packets to them are routed into the TUN device
//! rather than delivered. Every address is inside these namespaces (198.18.0.0/15 is the
//! benchmarking range), so nothing leaves the machine.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::{Process, python_with, sirms_bin};

/// A network namespace, deleted on drop (with every device inside it).
pub struct Netns {
    name: String,
}

static NEXT_NETNS: AtomicU32 = AtomicU32::new(0);

impl Netns {
    /// Creates a namespace named after this process, a counter and `role`, with `lo` up.
    pub fn create(role: &str) -> Result<Netns, String> {
        let n = NEXT_NETNS.fetch_add(1, Ordering::Relaxed);
        let name = format!("sirms-{}-{n}-{role}", std::process::id());
        let out = Command::new("ip").args(["netns", "add", &name]).output().map_err(|e| format!("run ip: {e}"))?;
        if !out.status.success() {
            return Err(format!("ip netns add {name}: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        let netns = Netns { name };
        netns.ip(&["link", "set", "lo", "up"]);
        Ok(netns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME ARGS`, panicking with its error output if it fails.
    pub fn ip(&self, args: &[&str]) {
        let out = Command::new("ip").arg("-n").arg(&self.name).args(args).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip -n {} {}: {}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        let out = self.command("sysctl").args(["-qw", &format!("{key}={value}")]).output().expect("run sysctl");
        assert!(out.status.success(), "sysctl {key}={value}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Starts `sirms ARGS` inside the namespace (logs to the test's stderr).
    pub fn sirms(&self, args: &[&str]) -> Process {
        let child = self
            .command(sirms_bin())
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sirms");
        Process::from_child(child)
    }

    /// Runs a Python 3 script inside the namespace; see [`crate::python`].
    pub fn python(&self, script: &str, args: &[String]) -> String {
        python_with(self.command("python3"), script, args)
    }

    /// Runs `f` on a thread that has entered the namespace, so its sockets live there.
    pub fn within<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let path = PathBuf::from("/run/netns").join(&self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    enter(&path);
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Starts a thread that enters the namespace and runs `f` (a server, say).
    pub fn spawn<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> std::thread::JoinHandle<R> {
        let path = PathBuf::from("/run/netns").join(&self.name);
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
    }

    /// Waits (bounded) until `process` accepts connections on every address, seen from inside.
    pub fn wait_listening(&self, process: &mut Process, what: &str, addrs: &[SocketAddr]) {
        self.within(|| process.wait_listening(what, addrs));
    }
}

/// Moves the calling thread into the network namespace bound at `path`.
fn enter(path: &std::path::Path) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // SAFETY: setns(2) on a descriptor we hold; it moves only this thread.
    let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(entered, 0, "setns {}: {}", path.display(), std::io::Error::last_os_error());
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth ends and TUN device too.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Why namespace tests cannot run here, if they cannot: they need root, `ip` and `/dev/net/tun`.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces and a TUN device)".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun".into());
    }
    match Netns::create("probe") {
        Ok(_) => None,
        Err(e) => Some(format!("cannot create a network namespace: {e}")),
    }
}

/// The cluster's public address.
pub const PUBLIC: &str = "198.18.100.1";
/// The nodes' private addresses, node1 and node2.
pub const NODE_IPS: [&str; 2] = ["198.19.0.11", "198.19.0.12"];
/// The nodes' public aliases, which their own outbound flows leave from.
pub const ALIASES: [&str; 2] = ["198.18.100.11", "198.18.100.12"];
/// The router's address on the private side, where its admin API listens.
pub const ROUTER_PRIVATE: &str = "198.19.0.1";
/// A mail server out on the public side.
pub const REMOTE_MTA: &str = "198.18.2.1";
/// Client source addresses on the public side: 198.18.1.1 to .20.
pub fn client(i: u8) -> String {
    assert!((1..=20).contains(&i), "clients are 198.18.1.1-20");
    format!("198.18.1.{i}")
}

/// The three namespaces and the links and routes between them (see the module docs).
/// Dropping it deletes them all.
pub struct NatLab {
    pub public: Netns,
    pub router: Netns,
    pub nodes: Netns,
}

impl NatLab {
    /// Creates the namespaces and links; `Err` when namespaces cannot be made here.
    pub fn create() -> Result<NatLab, String> {
        let lab = NatLab { public: Netns::create("pub")?, router: Netns::create("rtr")?, nodes: Netns::create("nod")? };
        let (public, router, nodes) = (&lab.public, &lab.router, &lab.nodes);
        router.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "pub0", "netns", public.name()]);
        router.ip(&["link", "add", "down0", "type", "veth", "peer", "name", "nod0", "netns", nodes.name()]);

        public.ip(&["addr", "add", "198.18.0.2/24", "dev", "pub0"]);
        for i in 1..=20 {
            public.ip(&["addr", "add", &format!("{}/32", client(i)), "dev", "pub0"]);
        }
        public.ip(&["addr", "add", &format!("{REMOTE_MTA}/32"), "dev", "pub0"]);
        public.ip(&["link", "set", "pub0", "up"]);
        public.ip(&["route", "add", "198.18.100.0/24", "via", "198.18.0.1"]);

        router.ip(&["addr", "add", "198.18.0.1/24", "dev", "up0"]);
        router.ip(&["addr", "add", &format!("{ROUTER_PRIVATE}/24"), "dev", "down0"]);
        router.ip(&["link", "set", "up0", "up"]);
        router.ip(&["link", "set", "down0", "up"]);
        router.ip(&["route", "add", "198.18.1.0/24", "via", "198.18.0.2"]);
        router.ip(&["route", "add", "198.18.2.0/24", "via", "198.18.0.2"]);
        router.sysctl("net.ipv4.ip_forward", "1");

        for ip in NODE_IPS {
            nodes.ip(&["addr", "add", &format!("{ip}/24"), "dev", "nod0"]);
        }
        nodes.ip(&["link", "set", "nod0", "up"]);
        nodes.ip(&["route", "add", "default", "via", ROUTER_PRIVATE]);
        // A node address taken away must black-hole its packets, not bounce them back.
        nodes.sysctl("net.ipv4.ip_forward", "0");
        Ok(lab)
    }

    /// Adds the TUN device `sirms0` to the router namespace and routes through it: the public
    /// address and aliases (198.18.100.0/24), and — by a policy rule, since the kernel would
    /// otherwise send them straight out — every packet the nodes send that is not for the
    /// router itself (local delivery is decided before the rule).
    pub fn route_through_tun(&self) {
        let router = &self.router;
        router.ip(&["tuntap", "add", "dev", "sirms0", "mode", "tun"]);
        router.ip(&["link", "set", "sirms0", "up"]);
        router.ip(&["route", "add", "198.18.100.0/24", "dev", "sirms0"]);
        router.ip(&["route", "add", "default", "dev", "sirms0", "table", "100"]);
        router.ip(&["rule", "add", "iif", "down0", "lookup", "100", "priority", "100"]);
        // Translated packets come out of the TUN with the client's source address, which the
        // main table reaches by up0: strict reverse-path filtering would drop them.
        for scope in ["all", "default", "sirms0"] {
            router.sysctl(&format!("net.ipv4.conf.{scope}.rp_filter"), "0");
        }
    }
}

/// The token of the lab's cluster.
pub const TOKEN: &str = "nat-lab-token";

/// A router in NAT mode and two plain mail nodes in a [`NatLab`]; dropping it kills the
/// processes first, then deletes the namespaces.
pub struct NatCluster {
    pub router: Process,
    pub node_processes: Vec<Process>,
    pub node_dirs: Vec<tempfile::TempDir>,
    pub dir: tempfile::TempDir,
    pub lab: NatLab,
}

/// Node ports; each node has its own address, so both use the same.
pub const NODE_SMTP: u16 = 2525;
/// The admin API, on [`ROUTER_PRIVATE`].
pub const ADMIN_PORT: u16 = 7070;

impl NatCluster {
    /// Starts the router (NAT mode, public ports 25/587/465/143/993/110/995, TCP flows closed
    /// for a second and UDP flows idle for two are forgotten) and the nodes, waits until both are up, and adds the
    /// domain `example.test` with `alice@example.test` / `alice-pw` homed on node1.
    pub fn start(lab: NatLab) -> NatCluster {
        lab.route_through_tun();
        let dir = tempfile::tempdir().expect("tempdir");
        let config = format!(
            "data_dir = \"{data}\"\ntoken = \"{TOKEN}\"\nadmin_listen = \"{ROUTER_PRIVATE}:{ADMIN_PORT}\"\n\
             health_interval_secs = 1\nmode = \"nat\"\n\
             [listen]\nsmtp = \"0.0.0.0:25\"\nsubmission = \"0.0.0.0:587\"\nsubmissions = \"0.0.0.0:465\"\n\
             imap = \"0.0.0.0:143\"\nimaps = \"0.0.0.0:993\"\npop3 = \"0.0.0.0:110\"\npop3s = \"0.0.0.0:995\"\n\
             [nat]\ndevice = \"sirms0\"\npublic = \"{PUBLIC}\"\ntcp_closed_secs = 1\nudp_secs = 2\n\
             [nat.aliases]\nnode1 = \"{}\"\nnode2 = \"{}\"\n",
            ALIASES[0],
            ALIASES[1],
            data = dir.path().join("data").display(),
        );
        let path = dir.path().join("router.toml");
        std::fs::write(&path, config).expect("write router config");
        let admin: SocketAddr = format!("{ROUTER_PRIVATE}:{ADMIN_PORT}").parse().expect("addr");
        let mut router = lab.router.sirms(&["router", "-c", path.to_str().expect("utf-8")]);
        lab.router.wait_listening(&mut router, "sirms router", &[admin]);

        let mut node_processes = Vec::new();
        let mut node_dirs = Vec::new();
        for (i, ip) in NODE_IPS.iter().enumerate() {
            let (process, dir) = start_node(&lab, &format!("node{}", i + 1), ip);
            node_processes.push(process);
            node_dirs.push(dir);
        }
        let cluster = NatCluster { router, node_processes, node_dirs, dir, lab };
        cluster.wait_nodes(" up ", 2);
        cluster.ctl(&["domains", "add", "example.test"]);
        cluster.ctl(&["users", "add", "alice@example.test", "--password", "alice-pw", "--home", "node1"]);
        cluster
    }

    /// Runs `sirms ctl ARGS` in the router's namespace; panics if it fails.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = self
            .lab
            .router
            .command(sirms_bin())
            .args(["ctl", "--router", &format!("http://{ROUTER_PRIVATE}:{ADMIN_PORT}"), "--token", TOKEN])
            .args(args)
            .output()
            .expect("run sirms ctl");
        assert!(out.status.success(), "sirms ctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits (bounded) until `sirms ctl nodes list` shows `want` lines matching `pattern`.
    pub fn wait_nodes(&self, pattern: &str, want: usize) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            let list = self.ctl(&["nodes", "list"]);
            if list.lines().filter(|l| l.contains(pattern)).count() == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("nodes never reached {want} × {pattern:?}: {}", self.ctl(&["nodes", "list"]));
    }

    /// NAT mode's status (`ctl status --json`, its `nat` object).
    pub fn nat_status(&self) -> serde_json::Value {
        let status: serde_json::Value = serde_json::from_str(&self.ctl(&["status", "--json"])).expect("status JSON");
        status["nat"].clone()
    }

    /// The node `sirms ctl routes test` predicts for `ip`.
    pub fn predicted(&self, ip: &str) -> String {
        self.ctl(&["routes", "test", ip]).split_whitespace().next().unwrap_or_default().to_string()
    }

    /// The message files in `user`'s INBOX on node `i` (0 or 1).
    pub fn inbox(&self, i: usize, user: &str) -> Vec<String> {
        read_inbox(&self.node_dirs[i].path().join("data"), user)
    }
}

/// The message files in `user`'s INBOX under a node's data directory.
pub fn read_inbox(data: &std::path::Path, user: &str) -> Vec<String> {
    let cur = data.join("store/mail").join(user.replace('.', "%2E")).join("cur");
    match std::fs::read_dir(cur) {
        Ok(entries) => entries
            .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn node_listen(ip: &str) -> String {
    format!(
        "[listen]\nsmtp = \"{ip}:{NODE_SMTP}\"\nsubmission = \"{ip}:2587\"\nsubmissions = \"{ip}:2465\"\n\
         pop3 = \"{ip}:2110\"\npop3s = \"{ip}:2995\"\nimap = \"{ip}:2143\"\nimaps = \"{ip}:2993\"\n"
    )
}

/// A plain `sirms node` on `ip` in the nodes namespace: no `trusted_proxies`, so it takes
/// the source address of each connection as the client's, which NAT mode leaves real.
fn start_node(lab: &NatLab, id: &str, ip: &str) -> (Process, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "hostname = \"{id}.example.test\"\ndata_dir = \"{data}\"\n{listen}\
         [cluster]\nrouter = \"http://{ROUTER_PRIVATE}:{ADMIN_PORT}\"\nnode_id = \"{id}\"\ntoken = \"{TOKEN}\"\n\
         store_listen = \"{ip}:7400\"\n",
        data = dir.path().join("data").display(),
        listen = node_listen(ip),
    );
    let path = dir.path().join("node.toml");
    std::fs::write(&path, config).expect("write node config");
    let mut process = lab.nodes.sirms(&["node", "-c", path.to_str().expect("utf-8")]);
    let smtp: SocketAddr = format!("{ip}:{NODE_SMTP}").parse().expect("addr");
    lab.nodes.wait_listening(&mut process, "sirms node", &[smtp]);
    (process, dir)
}

/// A stand-alone mail server for `remote.test` (user `rcpt@remote.test`) at [`REMOTE_MTA`]
/// port 25, on the public side.
pub fn start_remote_mta(lab: &NatLab) -> (Process, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "hostname = \"mx.remote.test\"\ndata_dir = \"{data}\"\n{listen}\
         [directory]\ndomains = [\"remote.test\"]\nusers = [ {{ address = \"rcpt@remote.test\", password = \"{{plain}}pw\" }} ]\n",
        data = dir.path().join("data").display(),
        listen = node_listen(REMOTE_MTA).replace(&format!(":{NODE_SMTP}\""), ":25\""),
    );
    let path = dir.path().join("node.toml");
    std::fs::write(&path, config).expect("write remote config");
    let mut process = lab.public.sirms(&["node", "-c", path.to_str().expect("utf-8")]);
    let smtp: SocketAddr = format!("{REMOTE_MTA}:25").parse().expect("addr");
    lab.public.wait_listening(&mut process, "remote MTA", &[smtp]);
    (process, dir)
}
