//! Test harness for black-box tests: finding the `sirms` binary, starting it as a real
//! process on a loopback port, and stopping it (gracefully or with SIGKILL).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// A free TCP port on 127.0.0.1 (the OS picks it; we release it for the child to take).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
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

/// A child process that is killed when dropped.
pub struct Process {
    child: Child,
}

impl Process {
    /// Starts `sirms` with `args`, logs going to the test's stderr.
    pub fn sirms(args: &[&str]) -> Process {
        let child = Command::new(sirms_bin())
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
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

    /// The child itself.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
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
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let token = "test-token".to_string();
        let process = Process::sirms(&[
            "storage",
            "--listen",
            &addr.to_string(),
            "--data-dir",
            data_dir.to_str().expect("utf-8 path"),
            "--token",
            &token,
        ]);
        assert!(wait_for_port(addr, Duration::from_secs(20)), "sirms storage did not start on {addr}");
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
    pub hostname: String,
}

/// Users every test node has: `alice@example.test` / `alice-pw`, `bob@example.test` / `bob-pw`.
pub const TEST_USERS: &[(&str, &str)] = &[("alice@example.test", "alice-pw"), ("bob@example.test", "bob-pw")];

impl MailNode {
    /// Starts a node named `hostname` with the test users; `extra` is appended to its TOML.
    pub fn start(hostname: &str, extra: &str) -> MailNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = |_| -> SocketAddr { format!("127.0.0.1:{}", free_port()).parse().expect("addr") };
        let (smtp, submission, submissions, pop3, pop3s) = (port(0), port(1), port(2), port(3), port(4));
        let users: Vec<String> =
            TEST_USERS.iter().map(|(u, p)| format!("{{ address = \"{u}\", password = \"{{plain}}{p}\" }}")).collect();
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
[directory]
domains = ["example.test"]
users = [ {users} ]
[directory.aliases]
"postmaster@example.test" = ["alice@example.test"]
"team@example.test" = ["alice@example.test", "bob@example.test"]
"#,
            data = dir.path().join("data").display(),
            users = users.join(", "),
        );
        let config_path = dir.path().join("node.toml");
        std::fs::write(&config_path, config).expect("write config");
        let process = Process::sirms(&["node", "-c", config_path.to_str().expect("utf-8")]);
        for addr in [smtp, submission, submissions, pop3, pop3s] {
            assert!(wait_for_port(addr, Duration::from_secs(20)), "sirms node did not listen on {addr}");
        }
        MailNode { process, dir, smtp, submission, submissions, pop3, pop3s, hostname: hostname.to_string() }
    }

    /// The files in a user's INBOX (`cur/`), oldest UID first, as bytes.
    pub fn inbox(&self, user: &str) -> Vec<Vec<u8>> {
        let escaped = user.replace('.', "%2E");
        let cur = self.dir.path().join("data/store/mail").join(escaped).join("cur");
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

/// Runs a Python 3 script (real client libraries: smtplib, poplib, imaplib) with
/// arguments; returns stdout, panicking with stderr if it fails.
pub fn python(script: &str, args: &[String]) -> String {
    let out = Command::new("python3").arg("-c").arg(script).args(args).output().expect("run python3");
    assert!(
        out.status.success(),
        "python failed:\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
