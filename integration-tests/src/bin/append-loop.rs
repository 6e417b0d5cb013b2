//! Crash-test writer: appends numbered messages to a `LocalStore` from several tasks and
//! prints `<uid> <seq>` for every append the store acknowledged, until killed.
//!
//! Usage: `append-loop <data-dir> <first-seq> <tasks>`

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sirms_storage::{LocalStore, MailStore, NewMessage};

/// The bytes of message number `seq`: deterministic, so the checker can rebuild them.
pub fn body(seq: u64) -> Vec<u8> {
    let mut b = format!("Subject: crash test {seq}\r\n\r\n").into_bytes();
    b.extend(std::iter::repeat_n(b'a' + (seq % 26) as u8, (seq % 4000) as usize));
    b.extend_from_slice(b"\r\n");
    b
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(first), Some(tasks)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: append-loop <data-dir> <first-seq> <tasks>");
        std::process::exit(2);
    };
    let first: u64 = first.parse().expect("first-seq");
    let tasks: u64 = tasks.parse().expect("tasks");
    let store = Arc::new(LocalStore::open(dir).expect("open store"));
    let next = Arc::new(AtomicU64::new(first));
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (store, next, out) = (store.clone(), next.clone(), out.clone());
        handles.push(tokio::spawn(async move {
            // Bounded: the parent kills us long before this ends.
            for _ in 0..1_000_000 {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                let r = store.append("crash@example.test", "INBOX", NewMessage::new(body(seq))).await.expect("append");
                let mut out = out.lock().expect("stdout lock");
                writeln!(out, "{} {}", r.uid, seq).expect("stdout");
                out.flush().expect("flush");
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
}
