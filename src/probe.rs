//! `sirms probe`: what a FROM-scratch image has instead of a shell and netcat, for
//! container health checks (connect to a port, check the greeting) and for a harmless
//! long-running command (`sleep`).

use std::time::Duration;

use clap::{Args, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

/// Options of `sirms probe`.
#[derive(Args)]
pub struct ProbeArgs {
    #[command(subcommand)]
    what: ProbeCmd,
}

#[derive(Subcommand)]
enum ProbeCmd {
    /// Connect to HOST:PORT (and with --expect, check the greeting): exit 0 if it answers,
    /// 1 with a one-line reason otherwise.
    Tcp {
        /// HOST:PORT; a host name is resolved.
        addr: String,
        /// The first line the server sends must start with this: "220 " (SMTP), "+OK"
        /// (POP3), "* OK" (IMAP).
        #[arg(long)]
        expect: Option<String>,
        /// A line sent after a good greeting (CRLF added), such as QUIT, so the server
        /// ends the session cleanly; its answer does not matter.
        #[arg(long, requires = "expect")]
        send: Option<String>,
        /// Seconds for the connect and the greeting together.
        #[arg(long, default_value = "3", value_parser = seconds)]
        timeout: Duration,
    },
    /// Do nothing for SECONDS (default: until SIGTERM or SIGINT), exit 0: a container
    /// that only holds a network address.
    Sleep { seconds: Option<u64> },
}

fn seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{e}"))?;
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!("not a positive number of seconds: {s}")),
    }
}

/// Runs the probe and returns the process exit code; the outcome is printed as one line
/// (stdout on success, stderr on failure), which is what `docker inspect` shows.
pub async fn run(args: ProbeArgs, shutdown: impl Future<Output = ()>) -> i32 {
    match args.what {
        ProbeCmd::Tcp { addr, expect, send, timeout } => {
            match tcp(&addr, expect.as_deref(), send.as_deref(), Instant::now() + timeout).await {
                Ok(what) => {
                    println!("ok: {addr}{what}");
                    0
                }
                Err(reason) => {
                    eprintln!("probe failed: {addr}: {reason}");
                    1
                }
            }
        }
        ProbeCmd::Sleep { seconds } => {
            let done = async {
                match seconds {
                    Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = done => {}
                _ = shutdown => {}
            }
            0
        }
    }
}

/// Connects and checks the greeting; Ok carries what to add to the success line.
async fn tcp(addr: &str, expect: Option<&str>, send: Option<&str>, deadline: Instant) -> Result<String, String> {
    let mut stream = match timeout_at(deadline, TcpStream::connect(addr)).await {
        Err(_) => return Err("connect timed out".into()),
        Ok(Err(e)) => return Err(format!("connect: {e}")),
        Ok(Ok(s)) => s,
    };
    let Some(expect) = expect else {
        return Ok(" accepts connections".into());
    };
    let mut line = Vec::new();
    let mut buf = [0u8; 512];
    while !line.contains(&b'\n') && line.len() < 1024 {
        match timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return Err(format!("no greeting line in time (got {})", shown(&line))),
            Ok(Err(e)) => return Err(format!("reading the greeting: {e}")),
            Ok(Ok(0)) => return Err(format!("closed before a greeting line (got {})", shown(&line))),
            Ok(Ok(n)) => line.extend_from_slice(&buf[..n]),
        }
    }
    if let Some(end) = line.iter().position(|&b| b == b'\n') {
        line.truncate(end);
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if !line.starts_with(expect.as_bytes()) {
        return Err(format!("greeting {} does not start with {expect:?}", shown(&line)));
    }
    if let Some(send) = send {
        // Best effort: the greeting already passed. Read until the server closes.
        let bye = async {
            stream.write_all(format!("{send}\r\n").as_bytes()).await?;
            while stream.read(&mut buf).await? > 0 {}
            std::io::Result::Ok(())
        };
        let _ = timeout_at(deadline, bye).await;
    }
    Ok(format!(" greets {}", shown(&line)))
}

/// Bytes as a quoted, escaped, shortened string for a one-line message: long enough for an
/// IMAP greeting whose capability list comes before the server's name.
fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(600)]);
    format!("{:?}", text.trim_end_matches(['\r', '\n']))
}
