//! What a run reports: one JSON object per run (field names follow the shared mailbench's
//! records where the meaning is the same, so scripts and `bench/report.py` can read both),
//! or the same as a short human table. Fields are documented in docs/BENCHMARKS.md.

use std::fmt::{self, Display};
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::cpu::{CpuReport, QuietWait};
use crate::error::Error;
use crate::stats::Latency;

/// One kind of failure and how often it happened.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorCount {
    pub error: String,
    pub count: u64,
}

/// An SMTP delivery run (`sirms bench smtp`).
#[derive(Debug, Clone, Serialize)]
pub struct SmtpReport {
    pub test: &'static str,
    pub name: Option<String>,
    pub target: String,
    pub imap: Option<String>,
    pub run_id: String,
    pub n: usize,
    pub conc: usize,
    pub msgs_per_conn: usize,
    pub msg_size: usize,
    pub users: usize,
    pub sources: Vec<String>,
    pub accepted: u64,
    pub failed: u64,
    pub errors: Vec<ErrorCount>,
    pub errors_not_listed: u64,
    pub accept_s: Option<f64>,
    pub accept_msgs_per_s: Option<f64>,
    pub clients_done_s: f64,
    pub smtp_lat_ms: Option<Latency>,
    pub delivery_checked: bool,
    pub delivered: Option<u64>,
    pub missing: Option<u64>,
    pub all_delivered: Option<bool>,
    pub deliver_s: Option<f64>,
    pub msgs_per_s: Option<f64>,
    pub ms_per_msg: Option<f64>,
    pub delivery_error: Option<String>,
    pub reset_removed: Option<u64>,
    pub quiet_wait: Option<QuietWait>,
    pub cpu: CpuReport,
    pub server_cpu_ms_per_msg: Option<f64>,
    pub ok: bool,
}

/// One fresh IMAP session of `sirms bench imap`; times in seconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImapRepeat {
    pub rep: usize,
    pub exists: Option<u32>,
    pub login_s: Option<f64>,
    pub select_s: Option<f64>,
    pub fetch_meta_s: Option<f64>,
    pub fetch_meta_msgs: Option<u64>,
    pub fetch_meta_bytes: Option<u64>,
    pub fetch_body_s: Option<f64>,
    pub fetch_body_msgs: Option<u64>,
    pub fetch_body_bytes: Option<u64>,
    pub total_s: Option<f64>,
    pub error: Option<String>,
    pub cpu: Option<CpuReport>,
}

/// Medians over the repeats that completed.
#[derive(Debug, Clone, Serialize)]
pub struct ImapMedians {
    pub login_s: Option<f64>,
    pub select_s: Option<f64>,
    pub fetch_meta_s: Option<f64>,
    pub fetch_body_s: Option<f64>,
    pub total_s: Option<f64>,
    pub servers_total_cpu_s: Option<f64>,
}

/// An IMAP fetch run (`sirms bench imap`).
#[derive(Debug, Clone, Serialize)]
pub struct ImapReport {
    pub test: &'static str,
    pub name: Option<String>,
    pub target: String,
    pub user: String,
    pub messages: Option<u32>,
    pub repeats: Vec<ImapRepeat>,
    pub median: ImapMedians,
    pub ok: bool,
}

/// One fresh POP3 session of `sirms bench pop3`; times in seconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pop3Repeat {
    pub rep: usize,
    pub msgs: Option<u32>,
    pub login_s: Option<f64>,
    pub list_s: Option<f64>,
    pub retr_all_s: Option<f64>,
    pub retr_msgs: Option<u64>,
    pub retr_bytes: Option<u64>,
    pub retr_lat_ms: Option<Latency>,
    pub total_s: Option<f64>,
    pub error: Option<String>,
    pub cpu: Option<CpuReport>,
}

/// Medians over the repeats that completed.
#[derive(Debug, Clone, Serialize)]
pub struct Pop3Medians {
    pub login_s: Option<f64>,
    pub list_s: Option<f64>,
    pub retr_all_s: Option<f64>,
    pub total_s: Option<f64>,
    pub servers_total_cpu_s: Option<f64>,
}

/// A POP3 retrieve run (`sirms bench pop3`).
#[derive(Debug, Clone, Serialize)]
pub struct Pop3Report {
    pub test: &'static str,
    pub name: Option<String>,
    pub target: String,
    pub user: String,
    pub messages: Option<u32>,
    pub repeats: Vec<Pop3Repeat>,
    pub median: Pop3Medians,
    pub ok: bool,
}

/// Prints `report` as JSON (`json`) or as a table on stdout, and writes its JSON to `out`.
pub fn emit<R: Serialize + Display>(report: &R, json: bool, out: Option<&Path>) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(report).map_err(|e| Error::Io(e.into()))?;
    if let Some(path) = out {
        // Whole or not at all: a script never reads half a file.
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, format!("{text}\n")).and_then(|_| std::fs::rename(&tmp, path))?;
    }
    // Written, not println!: a reader that goes away (`| head`) is an error to report, not a panic.
    let mut stdout = std::io::stdout().lock();
    if json {
        writeln!(stdout, "{text}")?;
    } else {
        write!(stdout, "{report}")?;
    }
    stdout.flush()?;
    Ok(())
}

/// `Some(x)` shown with `digits` decimals, `None` as a dash.
fn num(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "-".to_string(), |x| format!("{x:.digits$}"))
}

fn title(f: &mut fmt::Formatter<'_>, what: &str, name: &Option<String>, target: &str) -> fmt::Result {
    match name {
        Some(name) => writeln!(f, "sirms bench {what}: {name} ({target})"),
        None => writeln!(f, "sirms bench {what}: {target}"),
    }
}

fn cpu_line(f: &mut fmt::Formatter<'_>, cpu: &CpuReport) -> fmt::Result {
    let per: Vec<String> = cpu.servers_cpu_s.iter().map(|(k, v)| format!("{k} {v:.2}")).collect();
    if per.is_empty() {
        write!(f, "  CPU s            servers not measured (no --server-pid)")?;
    } else {
        write!(f, "  CPU s            servers {:.2} ({})", cpu.servers_total_cpu_s, per.join(", "))?;
    }
    write!(f, ", this client {:.2}", cpu.harness_cpu_s)?;
    if let Some(other) = cpu.other_cpu_s {
        write!(f, ", rest of the machine {other:.2}")?;
    }
    writeln!(f, " over {:.2} s on {} CPUs", cpu.wall_s, cpu.ncpu)
}

impl Display for SmtpReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        title(f, "smtp", &self.name, &self.target)?;
        writeln!(
            f,
            "  run {}: {} messages of {} bytes to {} users, {} clients, {} per session, {} source addresses",
            self.run_id,
            self.n,
            self.msg_size,
            self.users,
            self.conc,
            if self.msgs_per_conn == 0 { "all".to_string() } else { self.msgs_per_conn.to_string() },
            self.sources.len()
        )?;
        writeln!(f, "  accepted         {} of {} ({} failed)", self.accepted, self.n, self.failed)?;
        writeln!(
            f,
            "  time to accept   {} s, {} msg/s (until the last 250)",
            num(self.accept_s, 3),
            num(self.accept_msgs_per_s, 1)
        )?;
        if !self.delivery_checked {
            writeln!(f, "  time to deliver  not checked (no --imap)")?;
        } else if let Some(error) = &self.delivery_error {
            writeln!(f, "  time to deliver  check failed: {error}")?;
        } else if self.all_delivered == Some(true) {
            writeln!(
                f,
                "  time to deliver  {} s, {} msg/s, {} ms/msg (every accepted message in its mailbox)",
                num(self.deliver_s, 3),
                num(self.msgs_per_s, 1),
                num(self.ms_per_msg, 3)
            )?;
        } else {
            writeln!(
                f,
                "  time to deliver  NOT DELIVERED: {} of {} missing at the deadline",
                self.missing.unwrap_or(0),
                self.accepted
            )?;
        }
        match &self.smtp_lat_ms {
            Some(l) => writeln!(
                f,
                "  SMTP txn ms      mean {:.2}  p50 {:.2}  p99 {:.2}  max {:.2}",
                l.mean, l.p50, l.p99, l.max
            )?,
            None => writeln!(f, "  SMTP txn ms      -")?,
        }
        cpu_line(f, &self.cpu)?;
        if let Some(per) = self.server_cpu_ms_per_msg {
            writeln!(f, "  server CPU       {per:.3} ms per message")?;
        }
        for e in &self.errors {
            writeln!(f, "  FAILED {:>6} × {}", e.count, e.error)?;
        }
        if self.errors_not_listed > 0 {
            writeln!(f, "  FAILED {:>6} × other errors", self.errors_not_listed)?;
        }
        Ok(())
    }
}

impl Display for ImapReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        title(f, "imap", &self.name, &self.target)?;
        writeln!(
            f,
            "  user {}, {} messages; seconds per step, fresh session per repeat",
            self.user,
            self.messages.map_or("?".into(), |m| m.to_string())
        )?;
        writeln!(
            f,
            "  {:>4} {:>9} {:>9} {:>12} {:>12} {:>9} {:>9}",
            "rep", "login", "SELECT", "FETCH meta", "FETCH body", "total", "CPU s"
        )?;
        for r in &self.repeats {
            writeln!(
                f,
                "  {:>4} {:>9} {:>9} {:>12} {:>12} {:>9} {:>9}",
                r.rep,
                num(r.login_s, 4),
                num(r.select_s, 4),
                num(r.fetch_meta_s, 4),
                num(r.fetch_body_s, 4),
                num(r.total_s, 4),
                num(r.cpu.as_ref().and_then(CpuReport::servers_measured), 2)
            )?;
            if let Some(error) = &r.error {
                writeln!(f, "  FAILED repeat {}: {error}", r.rep)?;
            }
        }
        let m = &self.median;
        writeln!(
            f,
            "  {:>4} {:>9} {:>9} {:>12} {:>12} {:>9} {:>9}",
            "med",
            num(m.login_s, 4),
            num(m.select_s, 4),
            num(m.fetch_meta_s, 4),
            num(m.fetch_body_s, 4),
            num(m.total_s, 4),
            num(m.servers_total_cpu_s, 2)
        )
    }
}

impl Display for Pop3Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        title(f, "pop3", &self.name, &self.target)?;
        writeln!(
            f,
            "  user {}, {} messages; seconds per step, fresh session per repeat",
            self.user,
            self.messages.map_or("?".into(), |m| m.to_string())
        )?;
        writeln!(
            f,
            "  {:>4} {:>9} {:>9} {:>10} {:>9} {:>16} {:>9}",
            "rep", "login", "LIST", "RETR all", "total", "RETR p50/p99 ms", "CPU s"
        )?;
        for r in &self.repeats {
            let lat = r.retr_lat_ms.map_or("-".to_string(), |l| format!("{:.2}/{:.2}", l.p50, l.p99));
            writeln!(
                f,
                "  {:>4} {:>9} {:>9} {:>10} {:>9} {:>16} {:>9}",
                r.rep,
                num(r.login_s, 4),
                num(r.list_s, 4),
                num(r.retr_all_s, 4),
                num(r.total_s, 4),
                lat,
                num(r.cpu.as_ref().and_then(CpuReport::servers_measured), 2)
            )?;
            if let Some(error) = &r.error {
                writeln!(f, "  FAILED repeat {}: {error}", r.rep)?;
            }
        }
        let m = &self.median;
        writeln!(
            f,
            "  {:>4} {:>9} {:>9} {:>10} {:>9} {:>16} {:>9}",
            "med",
            num(m.login_s, 4),
            num(m.list_s, 4),
            num(m.retr_all_s, 4),
            num(m.total_s, 4),
            "",
            num(m.servers_total_cpu_s, 2)
        )
    }
}
