//! Append throughput with fsync: `cargo bench -p sirms-storage`.
//!
//! Measures, in one run on the same disk: the raw single-writer limit (a plain loop of
//! write + fsync + rename of the same bytes, and the same plus a directory fsync, which
//! is what a durable Maildir delivery costs), then `LocalStore::append` with 1 and 32
//! concurrent writers. Group commit is what lets many writers beat the raw loop.
//!
//! Knobs: `BENCH_DIR` (default: a temporary directory under `target/`), `BENCH_SECS`
//! (seconds per measurement, default 3), `BENCH_SIZE` (message bytes, default 4096).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sirms_storage::{LocalStore, MailStore, NewMessage};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: bench@example.test\r\nSubject: bench\r\n\r\n".to_vec();
    m.resize(size.max(m.len()), b'x');
    m
}

/// The raw loop: write + fsync + rename, optionally + fsync of the directory.
fn raw_loop(dir: &Path, data: &[u8], secs: Duration, dir_fsync: bool) -> f64 {
    let tmp = dir.join("tmp");
    let cur = dir.join("cur");
    fs::create_dir_all(&tmp).unwrap();
    fs::create_dir_all(&cur).unwrap();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < secs {
        let t = tmp.join(format!("m{n}"));
        let mut f = fs::File::create(&t).unwrap();
        f.write_all(data).unwrap();
        f.sync_all().unwrap();
        fs::rename(&t, cur.join(format!("m{n}"))).unwrap();
        if dir_fsync {
            fs::File::open(&cur).unwrap().sync_all().unwrap();
        }
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn store_appends(root: &Path, data: &[u8], secs: Duration, writers: usize) -> f64 {
    let store = Arc::new(LocalStore::open(root).unwrap());
    let data = bytes::Bytes::copy_from_slice(data);
    // Open the mailbox before the clock starts.
    store.status("bench@example.test", "INBOX").await.unwrap();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (store, data) = (store.clone(), data.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while start.elapsed() < secs {
                store.append("bench@example.test", "INBOX", NewMessage::new(data.clone())).await.unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

fn bench_dir() -> PathBuf {
    match std::env::var_os("BENCH_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-append"),
    }
}

fn main() {
    // `cargo test --benches` runs this with --bench absent; keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("append benchmark: run with `cargo bench -p sirms-storage`");
        return;
    }
    let secs = Duration::from_secs(env_num("BENCH_SECS", 3));
    let size = env_num("BENCH_SIZE", 4096) as usize;
    let data = message(size);
    let base = bench_dir();
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base).unwrap();
    println!("append benchmark: {size}-byte messages, {}s per row, in {}", secs.as_secs(), base.display());

    let raw = raw_loop(&base.join("raw"), &data, secs, false);
    let raw_dir = raw_loop(&base.join("raw-dir"), &data, secs, true);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let one = rt.block_on(store_appends(&base.join("store1"), &data, secs, 1));
    let many = rt.block_on(store_appends(&base.join("store32"), &data, secs, 32));

    println!("{:<52} {:>10} {:>8}", "case", "appends/s", "× raw");
    let row = |name: &str, v: f64| println!("{name:<52} {v:>10.0} {:>8.2}", v / raw);
    row("raw loop: write+fsync+rename (baseline)", raw);
    row("raw loop: write+fsync+rename+dir fsync", raw_dir);
    row("LocalStore::append, 1 writer", one);
    row("LocalStore::append, 32 writers (group commit)", many);
    let _ = fs::remove_dir_all(&base);
}
