//! The options of `sirms bench`, one subcommand per protocol. Values are checked here, at
//! parse time, so a run never starts with an address or a pid spec it cannot use.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::cpu::ServerPid;
use crate::sources::parse_sources;

/// Options of `sirms bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchCmd,
}

/// What to load.
#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Send N messages with C concurrent SMTP clients; with --imap, also time until every
    /// accepted message is in its recipient's INBOX.
    Smtp(Box<SmtpArgs>),
    /// One mailbox over IMAP: LOGIN, SELECT INBOX, UID FETCH 1:* of FLAGS ENVELOPE
    /// BODYSTRUCTURE, then of BODY.PEEK[]; a fresh session per repeat.
    Imap(FetchArgs),
    /// One maildrop over POP3: USER/PASS, LIST, RETR of every message (no DELE); a fresh
    /// session per repeat.
    Pop3(FetchArgs),
}

/// Options every subcommand has.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Seconds one step may take: a connect, or one command and its whole reply.
    #[arg(long, default_value = "120", value_parser = positive_seconds)]
    pub timeout: Duration,
    /// A server process tree whose CPU time is measured (/proc, local servers only):
    /// NAME=PID or NAME=PIDFILE. Repeatable.
    #[arg(long = "server-pid", value_name = "NAME=PID|PIDFILE", value_parser = ServerPid::parse)]
    pub server_pid: Vec<ServerPid>,
    /// Print the report as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// A label for the target in the report (N1, pfdc, ...).
    #[arg(long)]
    pub name: Option<String>,
}

/// The client addresses of `--sources`.
#[derive(Debug, Clone)]
pub struct SourceList(pub Vec<IpAddr>);

/// Options of `sirms bench smtp`.
#[derive(Args, Debug)]
pub struct SmtpArgs {
    /// The SMTP server, IP:PORT (no name lookups: only the address given is contacted).
    #[arg(long)]
    pub target: SocketAddr,
    /// Messages to send.
    #[arg(short = 'n', long = "messages", default_value = "1000", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub messages: u64,
    /// Concurrent SMTP clients.
    #[arg(short = 'c', long = "concurrency", default_value = "16", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub concurrency: u64,
    /// Client source addresses, used round robin, one per connection: a comma list of
    /// addresses, ranges (127.77.1.1-8) and CIDR blocks (127.77.1.0/29). Default: the
    /// kernel's choice.
    #[arg(long, value_parser = source_list)]
    pub sources: Option<SourceList>,
    /// Message size in bytes (headers included).
    #[arg(long, default_value = "4096", value_parser = clap::value_parser!(u64).range(1..=1_073_741_824))]
    pub size: u64,
    /// Recipient address; {i} stands for 1..=--users, one picked at random per message.
    #[arg(long, default_value = "u{i}@example.test")]
    pub rcpt: String,
    /// How many users {i} of --rcpt runs over.
    #[arg(long, default_value = "100")]
    pub users: u32,
    /// Messages per SMTP session before QUIT and a new connection (0: one session per
    /// client for the whole run).
    #[arg(long, default_value = "1")]
    pub msgs_per_conn: u64,
    /// Envelope and From: sender.
    #[arg(long, default_value = "bench@example.test")]
    pub sender: String,
    /// The name sent with EHLO.
    #[arg(long, default_value = "sirms-bench.test")]
    pub helo: String,
    /// Seed of the recipient choice: the same seed sends the same mail to the same users.
    #[arg(long, default_value = "1")]
    pub seed: u64,
    /// The run's mark in X-Bench-Run and Message-ID (letters, digits, '.', '-', '_').
    /// Default: sirms-bench-<unix time>-<pid>.
    #[arg(long)]
    pub run_id: Option<String>,
    /// IMAP server (IP:PORT) where the recipients' mailboxes are read: time until every
    /// accepted message is in its INBOX. Each recipient logs in with its address and
    /// --password; plain LOGIN, no TLS.
    #[arg(long)]
    pub imap: Option<SocketAddr>,
    /// Password of every user, for --imap.
    #[arg(long, default_value = "pw")]
    pub password: String,
    /// Empty the INBOX of every --rcpt user over IMAP before the run (destructive).
    #[arg(long, requires = "imap")]
    pub reset: bool,
    /// Seconds to wait for delivery after the last 250.
    #[arg(long, default_value = "900", value_parser = seconds)]
    pub deliver_timeout: Duration,
    /// Seconds between two STATUS polls of the mailboxes.
    #[arg(long, default_value = "0.01", value_parser = seconds)]
    pub poll_interval: Duration,
    /// Seconds of rest after the mailboxes are open, before the clock starts.
    #[arg(long, default_value = "0", value_parser = seconds)]
    pub settle: Duration,
    /// At most this many seconds to wait, before the clock starts, for the rest of the
    /// machine to use fewer than --quiet-max-cores cores.
    #[arg(long, default_value = "0", value_parser = seconds)]
    pub quiet_wait: Duration,
    /// See --quiet-wait.
    #[arg(long, default_value = "0.5")]
    pub quiet_max_cores: f64,
    #[command(flatten)]
    pub common: Common,
}

/// Options of `sirms bench imap` and `sirms bench pop3`.
#[derive(Args, Debug)]
pub struct FetchArgs {
    /// The server, IP:PORT.
    #[arg(long)]
    pub target: SocketAddr,
    /// The user whose mailbox is read.
    #[arg(long)]
    pub user: String,
    /// Its password (plain LOGIN / USER+PASS, no TLS).
    #[arg(long, default_value = "pw")]
    pub password: String,
    /// Sessions, one after the other.
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub repeat: u64,
    /// Client source address (default: the kernel's choice).
    #[arg(long)]
    pub source: Option<IpAddr>,
    #[command(flatten)]
    pub common: Common,
}

fn source_list(s: &str) -> Result<SourceList, String> {
    parse_sources(s).map(SourceList)
}

fn seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{e}"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("not a number of seconds: {s}"))
}

fn positive_seconds(s: &str) -> Result<Duration, String> {
    seconds(s).and_then(|d| if d.is_zero() { Err("must be more than 0".into()) } else { Ok(d) })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    #[test]
    fn smtp_options() {
        let cli = Cli::try_parse_from([
            "bench",
            "smtp",
            "--target",
            "127.0.0.1:2525",
            "-n",
            "200",
            "-c",
            "4",
            "--sources",
            "127.0.93.1-2",
            "--imap",
            "127.0.0.1:2143",
            "--server-pid",
            "node=42",
            "--server-pid",
            "pf=/tmp/x.pid",
            "--json",
        ])
        .unwrap();
        let BenchCmd::Smtp(a) = cli.bench.what else { panic!("not smtp") };
        assert_eq!((a.messages, a.concurrency, a.size, a.users), (200, 4, 4096, 100));
        assert_eq!(a.sources.unwrap().0.len(), 2);
        assert_eq!(a.common.server_pid.len(), 2);
        assert_eq!(a.deliver_timeout, Duration::from_secs(900));
        assert_eq!(a.poll_interval, Duration::from_millis(10));
        assert!(a.common.json);
    }

    #[test]
    fn bad_options_are_refused() {
        for args in [
            &["bench", "smtp", "--target", "localhost:25"][..],
            &["bench", "smtp", "--target", "127.0.0.1:25", "-c", "0"],
            &["bench", "smtp", "--target", "127.0.0.1:25", "--sources", "127.0.0.9-1"],
            &["bench", "smtp", "--target", "127.0.0.1:25", "--reset"],
            &["bench", "smtp", "--target", "127.0.0.1:25", "--timeout", "0"],
            &["bench", "smtp", "--target", "127.0.0.1:25", "--server-pid", "x="],
            &["bench", "imap", "--target", "127.0.0.1:143"],
            &["bench", "pop3", "--target", "127.0.0.1:110", "--user", "u", "--repeat", "0"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }
}
