//! Benchmark, not a test (ignored by default): the same TCP workload reaching a backend
//! directly (kernel forwarding through the router's namespace), through the router in proxy
//! mode, and through the router in NAT mode, in one run, in the namespace lab of
//! `sirms_integration_tests::netns`.
//!
//!     cargo build --release --bin sirms
//!     SIRMS_BIN=target/release/sirms cargo test -p sirms-integration-tests --test nat_bench -- --ignored --nocapture
//!
//! The backend is a small server in the nodes' namespace (a thread of this process), so the
//! router is the only SIRMS code measured:
//! - bulk: one connection streams `NAT_BENCH_MB` MiB (default 512) to the backend, which
//!   answers one byte after the end; MiB/s over the whole exchange;
//! - sequential: `NAT_BENCH_SEQ` connections (default 5000) one after another, each connect,
//!   a 64-byte request, its 64-byte echo, close: per-connection latency percentiles;
//! - concurrent: 16 clients doing the same, `NAT_BENCH_CONC` connections each (default 500):
//!   connections per second.
//!
//! The router's CPU time (user + system, from /proc) is reported per phase.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sirms_integration_tests::Process;
use sirms_integration_tests::netns::{self, NODE_IPS, NatLab, PUBLIC, ROUTER_PRIVATE, TOKEN};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const REQUEST: usize = 64;
/// The PROXY v2 signature; the backend skips the header when a connection starts with it.
const PROXY_V2_SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// One backend connection: an optional PROXY v2 header, then a mode byte: `B` streams to
/// EOF and answers one byte; anything else is the first byte of a request echoed back.
fn serve(mut s: TcpStream) {
    let mut first = [0u8; 1];
    if s.read_exact(&mut first).is_err() {
        return; // a health probe: connect and close
    }
    if first[0] == PROXY_V2_SIG[0] {
        let mut rest = [0u8; 15];
        if s.read_exact(&mut rest).is_err() || rest[..11] != PROXY_V2_SIG[1..] {
            return;
        }
        let mut addresses = vec![0u8; usize::from(u16::from_be_bytes([rest[13], rest[14]]))];
        if s.read_exact(&mut addresses).is_err() || s.read_exact(&mut first).is_err() {
            return;
        }
    }
    if first[0] == b'B' {
        let mut buf = vec![0u8; 256 * 1024];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        let _ = s.write_all(b"k");
    } else {
        let mut request = [0u8; REQUEST];
        request[0] = first[0];
        if s.read_exact(&mut request[1..]).is_ok() {
            let _ = s.write_all(&request);
        }
    }
}

/// Runs the backend on `addr` until `stop` is set (and one more connection wakes it).
fn backend(lab: &NatLab, addr: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    lab.nodes.spawn(move || {
        let listener = TcpListener::bind(addr).expect("bind backend");
        for stream in listener.incoming() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            if let Ok(stream) = stream {
                let _ = stream.set_nodelay(true);
                std::thread::spawn(move || serve(stream));
            }
        }
    })
}

fn bulk(addr: SocketAddr, mib: usize) -> f64 {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    s.write_all(b"B").expect("mode");
    let chunk = vec![0x5a_u8; 1024 * 1024];
    for _ in 0..mib {
        s.write_all(&chunk).expect("stream");
    }
    s.shutdown(Shutdown::Write).expect("shutdown");
    let mut k = [0u8; 1];
    s.read_exact(&mut k).expect("final byte");
    mib as f64 / start.elapsed().as_secs_f64()
}

/// One short session; returns its duration.
fn request(addr: SocketAddr) -> std::io::Result<Duration> {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(&[b'R'; REQUEST])?;
    let mut reply = [0u8; REQUEST];
    s.read_exact(&mut reply)?;
    Ok(start.elapsed())
}

struct Row {
    name: &'static str,
    /// Sessions that failed (connect or echo timed out, refused, reset).
    failed: usize,
    bulk_mib_s: f64,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    seq_per_s: f64,
    conc_per_s: f64,
    router_cpu: Option<(f64, f64, f64)>,
}

/// User + system CPU seconds of process `pid`.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz // utime, stime
}

fn measure(lab: &NatLab, name: &'static str, target: SocketAddr, router: Option<u32>) -> Row {
    let (mib, seq, conc) =
        (env_num("NAT_BENCH_MB", 512), env_num("NAT_BENCH_SEQ", 5000), env_num("NAT_BENCH_CONC", 500));
    let cpu = || router.map(cpu_secs).unwrap_or(0.0);
    eprintln!("measuring {name}");
    lab.public.within(|| {
        for _ in 0..50 {
            request(target).expect("warm-up session"); // ARP, routes, the router's first flows
        }
        let c0 = cpu();
        let bulk_mib_s = bulk(target, mib);
        eprintln!("  bulk done");
        let c1 = cpu();
        let failed = std::sync::atomic::AtomicUsize::new(0);
        let count = |r: std::io::Result<Duration>| {
            r.inspect_err(|e| {
                failed.fetch_add(1, Ordering::Relaxed);
                eprintln!("  session failed: {e}");
            })
            .ok()
        };
        let mut times: Vec<Duration> = (0..seq).filter_map(|_| count(request(target))).collect();
        let seq_secs: f64 = times.iter().map(Duration::as_secs_f64).sum();
        eprintln!("  sequential done");
        let c2 = cpu();
        let start = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..16 {
                scope.spawn(|| {
                    for _ in 0..conc {
                        count(request(target));
                    }
                });
            }
        });
        let conc_per_s = (16 * conc) as f64 / start.elapsed().as_secs_f64();
        let c3 = cpu();
        times.sort();
        let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
        Row {
            name,
            failed: failed.into_inner(),
            bulk_mib_s,
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            seq_per_s: times.len() as f64 / seq_secs,
            conc_per_s,
            // CPU seconds per GiB streamed, per 1000 sequential and per 1000 concurrent sessions.
            router_cpu: router.map(|_| {
                (
                    (c1 - c0) * 1024.0 / mib as f64,
                    (c2 - c1) * 1000.0 / seq as f64,
                    (c3 - c2) * 1000.0 / (16 * conc) as f64,
                )
            }),
        }
    })
}

/// Starts a router in the router namespace with `mode` and one node, node1, at its SMTP
/// backend port; waits until the node is up.
fn router(lab: &NatLab, dir: &std::path::Path, mode: &str, public: &str) -> Process {
    let ports = [25, 587, 465, 143, 993, 110, 995];
    let names = ["smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s"];
    let listen: String = names.iter().zip(ports).map(|(n, p)| format!("{n} = \"{public}:{p}\"\n")).collect();
    let config = format!(
        "data_dir = \"{}\"\ntoken = \"{TOKEN}\"\nadmin_listen = \"{ROUTER_PRIVATE}:7070\"\nhealth_interval_secs = 1\n\
         mode = \"{mode}\"\n[listen]\n{listen}[nat]\npublic = \"{public}\"\n",
        dir.join(format!("data-{mode}")).display()
    );
    let path = dir.join(format!("router-{mode}.toml"));
    std::fs::write(&path, config).expect("write config");
    let mut process = lab.router.sirms(&["router", "-c", path.to_str().expect("utf-8")]);
    let admin: SocketAddr = format!("{ROUTER_PRIVATE}:7070").parse().expect("addr");
    lab.router.wait_listening(&mut process, "sirms router", &[admin]);
    let ctl = |args: &[&str]| ctl(lab, args);
    ctl(&["nodes", "add", "node1", NODE_IPS[0], "--smtp-port", "2525"]);
    let start = Instant::now();
    while !ctl(&["nodes", "list"]).contains(" up ") {
        assert!(start.elapsed() < Duration::from_secs(20), "node1 never came up");
        std::thread::sleep(Duration::from_millis(200));
    }
    process
}

/// `sirms ctl ARGS` against the router in the lab.
fn ctl(lab: &NatLab, args: &[&str]) -> String {
    let out = lab
        .router
        .command(sirms_integration_tests::sirms_bin())
        .args(["ctl", "--router", &format!("http://{ROUTER_PRIVATE}:7070"), "--token", TOKEN])
        .args(args)
        .output()
        .expect("ctl");
    assert!(out.status.success(), "ctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture (see the file's header)"]
fn nat_vs_proxy_vs_direct() {
    if let Some(why) = netns::unavailable() {
        eprintln!("SKIPPED: the NAT benchmark needs network namespaces: {why}");
        return;
    }
    let lab = NatLab::create().expect("namespace lab");
    let dir = tempfile::tempdir().expect("tempdir");
    // Three phases' worth of sessions end in TIME_WAIT on the client side: give them room.
    lab.public.sysctl("net.ipv4.ip_local_port_range", "1024 65000");
    lab.public.sysctl("net.ipv4.tcp_tw_reuse", "1");
    let stop = Arc::new(AtomicBool::new(false));
    let backend_addr: SocketAddr = format!("{}:2525", NODE_IPS[0]).parse().expect("addr");
    // Direct sessions go to a second backend address. On one address the backend would keep
    // TIME_WAIT entries of direct sessions that NAT sessions from the same client port then
    // run into, and refuse them: the client's timestamps and initial sequence numbers are
    // derived from the destination it sees, which differs (the classic NAT clash).
    let direct_addr: SocketAddr = format!("{}:2525", NODE_IPS[1]).parse().expect("addr");
    let servers = [backend(&lab, backend_addr, stop.clone()), backend(&lab, direct_addr, stop.clone())];
    let public: SocketAddr = format!("{PUBLIC}:25").parse().expect("addr");
    // Proxy mode gets an address of its own: the router's TIME_WAIT sockets on the public
    // address would otherwise catch (and the kernel drop, being forwarded) NAT-mode packets
    // of clients that reuse their ports.
    let proxy_public: SocketAddr = "198.18.100.2:25".parse().expect("addr");
    let mut rows = Vec::new();

    // Direct: the client reaches the backend's private address, forwarded by the kernel.
    lab.public.ip(&["route", "add", "198.19.0.0/24", "via", "198.18.0.1"]);
    lab.nodes.within(|| netns_wait(backend_addr));
    lab.nodes.within(|| netns_wait(direct_addr));
    rows.push(measure(&lab, "direct (kernel forwarding)", direct_addr, None));

    // Proxy mode: the public address is the router's own.
    let proxy_ip = proxy_public.ip().to_string();
    lab.router.ip(&["addr", "add", &format!("{proxy_ip}/32"), "dev", "lo"]);
    let mut proxy = router(&lab, dir.path(), "proxy", &proxy_ip);
    rows.push(measure(&lab, "proxy mode", proxy_public, Some(proxy.pid())));
    proxy.stop();

    // NAT mode: the public address is routed into the TUN device.
    lab.route_through_tun();
    let mut nat = router(&lab, dir.path(), "nat", PUBLIC);
    rows.push(measure(&lab, "NAT mode", public, Some(nat.pid())));
    eprint!("{}", ctl(&lab, &["status"]).lines().nth(1).unwrap_or_default());
    nat.stop();

    stop.store(true, Ordering::SeqCst);
    lab.nodes.within(|| {
        for addr in [backend_addr, direct_addr] {
            let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        }
    });
    for server in servers {
        let _ = server.join();
    }

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("\nsirms: {}; load average at the end: {}", sirms_integration_tests::sirms_bin().display(), load.trim());
    println!(
        "\n| path | bulk MiB/s | session p50 ms | p90 ms | p99 ms | sequential sessions/s | 16 concurrent sessions/s | failed sessions | router CPU s per GiB / per 1000 seq / per 1000 conc |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in &rows {
        let cpu = r.router_cpu.map(|(g, s, c)| format!("{g:.2} / {s:.2} / {c:.2}")).unwrap_or_else(|| "-".into());
        println!(
            "| {} | {:.0} | {} | {} | {} | {:.0} | {:.0} | {} | {} |",
            r.name,
            r.bulk_mib_s,
            ms(r.p50),
            ms(r.p90),
            ms(r.p99),
            r.seq_per_s,
            r.conc_per_s,
            r.failed,
            cpu
        );
    }
}

/// Waits (bounded) until `addr` accepts connections.
fn netns_wait(addr: SocketAddr) {
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "{addr} never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}
