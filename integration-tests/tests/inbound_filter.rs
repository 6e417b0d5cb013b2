//! Spam filtering at the end of DATA against a real rspamd (`/usr/bin/rspamd`, started by the
//! test with a config of its own on 127.0.27.x): over its HTTP protocol, and as a milter (its
//! proxy worker in milter mode). Python's smtplib sends; the delivered files are read back.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sirms_integration_tests::{MailNode, free_port_on, python, wait_for_port};

/// The GTUBE line: rspamd's test pattern, answered with `reject` by its default config.
const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

/// An rspamd of the test's own: the system config with the listeners, logs and databases in a
/// temp dir, no DNS to ask (a dead nameserver on loopback), no redis. Killed with its
/// workers (its own process group) when dropped.
struct Rspamd {
    child: Child,
    dir: tempfile::TempDir,
    /// The normal worker: HTTP `/checkv2`.
    normal: SocketAddr,
    /// The proxy worker in milter mode, scanning by itself.
    milter: SocketAddr,
}

impl Rspamd {
    fn start(ip: Ipv4Addr) -> Rspamd {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = || SocketAddr::new(ip.into(), free_port_on(ip));
        let (normal, controller, milter) = (port(), port(), port());
        let local = dir.path().join("local");
        let write = |name: &str, text: String| {
            std::fs::create_dir_all(local.join("override.d")).expect("mkdir");
            std::fs::write(local.join("override.d").join(name), text).expect("write rspamd config");
        };
        write("worker-normal.inc", format!("bind_socket = \"{normal}\";\ncount = 1;\n"));
        write("worker-controller.inc", format!("bind_socket = \"{controller}\";\ncount = 1;\n"));
        write(
            "worker-proxy.inc",
            format!(
                "bind_socket = \"{milter}\";\nmilter = yes;\ntimeout = 30s;\ncount = 1;\n\
                 upstream \"local\" {{\n  default = yes;\n  self_scan = yes;\n}}\n"
            ),
        );
        write(
            "logging.inc",
            format!(
                "type = \"file\";\nfilename = \"{}\";\nlevel = \"info\";\n",
                dir.path().join("rspamd.log").display()
            ),
        );
        write(
            "options.inc",
            "dns {\n  nameserver = [\"127.0.27.254:9\"];\n  timeout = 0.2s;\n  retransmits = 1;\n}\n".into(),
        );
        // rspamd's own header fields on local mail too, so the tests can see them arrive.
        write(
            "milter_headers.conf",
            "use = [\"x-spamd-result\", \"x-rspamd-queue-id\"];\nskip_local = false;\nskip_authenticated = false;\n"
                .into(),
        );
        // Clean test mail would otherwise score a greylist for missing DNS; GTUBE still rejects.
        write("actions.conf", "reject = 15;\nadd_header = 12;\ngreylist = 11;\n".into());
        let var = |name: &str, value: &Path| format!("{name}={}", value.display());
        let mut command = Command::new("rspamd");
        command.args(["-f", "-i", "-c", "/etc/rspamd/rspamd.conf"]);
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            command.args(["-u", "root", "-g", "root"]);
        }
        for name in ["RUNDIR", "DBDIR", "LOGDIR"] {
            command.args(["--var", &var(name, dir.path())]);
        }
        command.args(["--var", &var("LOCAL_CONFDIR", &local)]);
        let child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn rspamd (is it installed? .ci/install-deps)");
        let mut rspamd = Rspamd { child, dir, normal, milter };
        for addr in [normal, milter] {
            let up = wait_for_port(addr, Duration::from_secs(90));
            assert!(up, "rspamd did not listen on {addr}; its log:\n{}", rspamd.log());
        }
        assert!(rspamd.child.try_wait().expect("try_wait").is_none(), "rspamd exited:\n{}", rspamd.log());
        rspamd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rspamd.log")).unwrap_or_default()
    }

    /// The process group: rspamd's main process and its workers.
    fn group(&self) -> i32 {
        self.child.id() as i32
    }

    fn kill(&mut self) {
        // SAFETY: kill(2) on the process group of our own child, which leads it.
        unsafe { libc::kill(-self.group(), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Rspamd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// Sends one message per argument-given body from 127.0.0.1; prints `<i> <code>` per message.
/// With a process group to kill after `kill_after` messages, the filter dies mid-flood.
const SEND: &str = r#"
import os, signal, smtplib, sys
port, count, kill_after, group = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
kind, host, gtube = sys.argv[5], sys.argv[6], sys.argv[7]
for i in range(count):
    if i == kill_after and group > 0:
        os.killpg(group, signal.SIGKILL)
    body = gtube if kind == "gtube" else "hello, nothing to see here"
    # Clean mail carries the sender's own scan fields, forged: the node must drop them.
    forged = "" if kind == "gtube" else "X-Spam-Score: -100.00 / 15.00\r\nX-Spam-Unscanned: trust me\r\n"
    msg = (forged + "From: Sender <x@remote.test>\r\nTo: alice@example.test\r\nSubject: test %d\r\n"
           "Message-ID: <m%d.%s@remote.test>\r\nDate: Mon, 07 Dec 2026 16:00:00 +0000\r\n\r\n%s\r\ntoken-%s-%d\r\n"
           % (i, i, kind, body, kind, i))
    try:
        s = smtplib.SMTP(host, port, source_address=("127.0.0.1", 0), timeout=60)
        s.sendmail("x@remote.test", ["alice@example.test"], msg.encode())
        s.quit()
        print(i, 250)
    except smtplib.SMTPDataError as e:
        print(i, e.smtp_code, e.smtp_error.decode().replace("\n", " "))
    except smtplib.SMTPException as e:
        print(i, "error", e)
"#;

/// Sends `count` messages of `kind` ("gtube" or "clean") to alice at `node`; each message's
/// reply, in order.
fn send(node: &MailNode, kind: &str, count: usize, kill: Option<(usize, i32)>) -> Vec<String> {
    let (after, group) = kill.unwrap_or((usize::MAX >> 1, 0));
    let args = [
        node.smtp.port().to_string(),
        count.to_string(),
        after.to_string(),
        group.to_string(),
        kind.into(),
        node.smtp.ip().to_string(),
        GTUBE.into(),
    ];
    let out = python(SEND, &args);
    let replies: Vec<String> = out.lines().map(|l| l.split_once(' ').map_or("", |(_, r)| r).to_string()).collect();
    assert_eq!(replies.len(), count, "{out}");
    replies
}

/// Alice's INBOX once it holds `want` messages (delivery from the spool may lag a little).
fn inbox_of(node: &MailNode, want: usize) -> Vec<String> {
    let start = Instant::now();
    loop {
        let inbox: Vec<String> =
            node.inbox("alice@example.test").iter().map(|m| String::from_utf8_lossy(m).into_owned()).collect();
        if inbox.len() >= want || start.elapsed() > Duration::from_secs(20) {
            return inbox;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    let head = message.split("\r\n\r\n").next().unwrap_or("");
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn rspamd_refuses_spam_scores_clean_mail_and_loses_nothing_when_it_dies() {
    let mut rspamd = Rspamd::start(Ipv4Addr::new(127, 0, 27, 3));
    let extra =
        format!("[inbound.rspamd]\nurl = \"http://{}\"\ntimeout_secs = 10\non_failure = \"accept\"\n", rspamd.normal);
    let node = MailNode::start_on([127, 0, 27, 1], "mx1.example.test", &extra);
    let extra = format!("[[inbound.milter]]\naddress = \"{}\"\ntimeout_secs = 20\n", rspamd.milter);
    let milter_node = MailNode::start_on([127, 0, 27, 2], "mx2.example.test", &extra);

    // GTUBE: refused for good, with rspamd's reason, and nothing delivered.
    let replies = send(&node, "gtube", 1, None);
    assert!(replies[0].starts_with("550 5.7.1"), "{replies:?}\n{}", rspamd.log());
    // A clean message: taken and delivered with its score and rspamd's action on top.
    let replies = send(&node, "clean", 1, None);
    assert_eq!(replies, ["250"], "{}", rspamd.log());
    let inbox = inbox_of(&node, 1);
    assert_eq!(inbox.len(), 1, "only the clean message is delivered: {inbox:?}");
    assert!(inbox[0].contains("token-clean-0"), "{}", inbox[0]);
    assert!(!inbox.iter().any(|m| m.contains("token-gtube")), "{inbox:?}");
    let score = header(&inbox[0], "X-Spam-Score").expect("X-Spam-Score on the clean message");
    assert!(score.contains(" / 15.00"), "{score}");
    assert!(!inbox[0].contains("-100.00") && !inbox[0].contains("trust me"), "forged fields kept: {}", inbox[0]);
    assert_eq!(header(&inbox[0], "X-Spam-Action"), Some("no action"), "{}", inbox[0]);
    assert!(header(&inbox[0], "X-Spam-Unscanned").is_none(), "{}", inbox[0]);
    // rspamd's milter_headers fields arrive too (its `milter.add_headers`).
    assert!(header(&inbox[0], "X-Spamd-Result").is_some(), "{}", inbox[0]);

    // The same through the milter path: rspamd's proxy worker as a milter.
    let replies = send(&milter_node, "gtube", 1, None);
    assert!(replies[0].starts_with("550 5.7.1"), "{replies:?}\n{}", rspamd.log());
    let replies = send(&milter_node, "clean", 1, None);
    assert_eq!(replies, ["250"], "{}", rspamd.log());
    let inbox = inbox_of(&milter_node, 1);
    assert_eq!(inbox.len(), 1, "only the clean message is delivered: {inbox:?}");
    assert!(inbox[0].contains("token-clean-0"), "{}", inbox[0]);
    assert!(header(&inbox[0], "X-Spamd-Result").is_some(), "the milter's header fields: {}", inbox[0]);
    assert!(header(&inbox[0], "X-Spam-Unscanned").is_none(), "{}", inbox[0]);

    // rspamd killed after 10 of 40: every 250 is delivered once, byte for byte its token;
    // the ones after the kill marked as unscanned, the ones before scanned.
    let replies = send(&node, "flood", 40, Some((10, rspamd.group())));
    let _ = rspamd.child.wait();
    let accepted: Vec<usize> = (0..40).filter(|&i| replies[i] == "250").collect();
    assert_eq!(accepted.len(), 40, "on_failure = accept takes every message: {replies:?}");
    let inbox = inbox_of(&node, 1 + accepted.len());
    assert_eq!(inbox.len(), 1 + accepted.len(), "none lost, none doubled");
    for i in accepted {
        let token = format!("token-flood-{i}\r\n");
        let held: Vec<&String> = inbox.iter().filter(|m| m.contains(&token)).collect();
        assert_eq!(held.len(), 1, "message {i} delivered once");
        let unscanned = header(held[0], "X-Spam-Unscanned");
        if i >= 10 {
            assert!(unscanned.is_some_and(|v| v.starts_with("rspamd ")), "message {i}: {}", held[0]);
        } else {
            assert!(unscanned.is_none() && header(held[0], "X-Spam-Score").is_some(), "message {i}: {}", held[0]);
        }
    }
    let page = sirms_integration_tests::metrics_page(node.metrics);
    assert!(page.contains("sirms_filter_results_total{filter=\"rspamd\",result=\"failed\"} 30"), "{page}");
    assert!(page.contains("sirms_filter_results_total{filter=\"rspamd\",result=\"refused\"} 1"), "{page}");
    let page = sirms_integration_tests::metrics_page(milter_node.metrics);
    assert!(page.contains("sirms_filter_results_total{filter=\"milter\",result=\"refused\"} 1"), "{page}");
}
