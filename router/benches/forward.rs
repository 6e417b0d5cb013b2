//! Router overhead: `cargo bench -p sirms-router`.
//!
//! Measures, in one run, a client talking to a backend directly and through the router's
//! forwarder (PROXY header, bounded copy loop) on loopback:
//! - bulk throughput: one connection streaming `BENCH_MB` MiB to the backend, which
//!   answers with one byte at the end;
//! - connection rate: `BENCH_CONNS` short sessions (connect, a 64-byte request, a 64-byte
//!   reply, close) from 16 concurrent clients — what mail traffic looks like.
//!
//! The goal (issue 6): the forwarded numbers reach at least 95% of the direct ones.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use sirms_proto::proxy_v2::read_header;
use sirms_router::{Backend, Forwarder, Inbound, NodeId, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A backend: optionally reads a PROXY header, then for bulk mode reads until EOF and
/// answers one byte; for request mode echoes one 64-byte request.
async fn backend(proxy: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                if proxy && read_header(&mut s).await.is_err() {
                    return;
                }
                let mut mode = [0u8; 1];
                if s.read_exact(&mut mode).await.is_err() {
                    return;
                }
                if mode[0] == b'B' {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                    let _ = s.write_all(b"k").await;
                } else {
                    let mut req = [0u8; 64];
                    if s.read_exact(&mut req).await.is_ok() {
                        let _ = s.write_all(&req).await;
                    }
                }
            });
        }
    });
    addr
}

/// The router: accepts and forwards every connection to `target`.
async fn router(target: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let forwarder = Arc::new(Forwarder::default());
    let backends =
        Arc::new(vec![Backend { node: NodeId::from_str("node1").unwrap(), service: Service::Smtp, addr: target }]);
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            let (f, b) = (forwarder.clone(), backends.clone());
            tokio::spawn(async move {
                let inbound = Inbound::from_stream(s).unwrap();
                let _ = f.forward(inbound, &b, &|_: &Backend, _: &std::io::Error| {}).await;
            });
        }
    });
    addr
}

async fn bulk(addr: SocketAddr, mib: u64) -> f64 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let chunk = vec![7u8; 256 * 1024];
    let start = Instant::now();
    s.write_all(b"B").await.unwrap();
    for _ in 0..(mib * 4) {
        s.write_all(&chunk).await.unwrap();
    }
    s.shutdown().await.unwrap();
    let mut done = [0u8; 1];
    s.read_exact(&mut done).await.unwrap();
    mib as f64 / start.elapsed().as_secs_f64()
}

async fn sessions(addr: SocketAddr, total: u64) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        tasks.push(tokio::spawn(async move {
            for _ in 0..total / 16 {
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.set_nodelay(true).unwrap();
                let mut req = [b'R'; 65];
                s.write_all(&req).await.unwrap();
                s.read_exact(&mut req[..64]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (total / 16 * 16) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("router overhead benchmark: run with `cargo bench -p sirms-router`");
        return;
    }
    let mib = env_num("BENCH_MB", 2048);
    let conns = env_num("BENCH_CONNS", 20_000);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let direct = backend(false).await;
        let proxied = backend(true).await;
        let via = router(proxied).await;
        // Warm up both paths once.
        sessions(direct, 160).await;
        sessions(via, 160).await;
        let mut rows = Vec::new();
        for round in 0..3 {
            // Alternate the order so neither path always runs on a warmer machine.
            let (d, r) = if round % 2 == 0 {
                (bulk(direct, mib).await, bulk(via, mib).await)
            } else {
                let r = bulk(via, mib).await;
                (bulk(direct, mib).await, r)
            };
            let (ds, rs) = (sessions(direct, conns).await, sessions(via, conns).await);
            rows.push((d, r, ds, rs));
        }
        let median = |f: fn(&(f64, f64, f64, f64)) -> f64| {
            let mut v: Vec<f64> = rows.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (d, r) = (median(|x| x.0), median(|x| x.1));
        let (ds, rs) = (median(|x| x.2), median(|x| x.3));
        println!("router overhead, median of 3 rounds ({mib} MiB bulk, {conns} sessions, 16 clients)");
        println!("{:<28} {:>12} {:>14} {:>8}", "measure", "direct", "via router", "ratio");
        println!("{:<28} {:>9.0} MiB/s {:>9.0} MiB/s {:>7.1}%", "bulk throughput", d, r, 100.0 * r / d);
        println!("{:<28} {:>10.0} /s {:>12.0} /s {:>7.1}%", "short sessions", ds, rs, 100.0 * rs / ds);
    });
}
