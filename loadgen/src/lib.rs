//! `sirms bench`: a load generator that reproduces the paper's experiment against any SMTP,
//! IMAP or POP3 endpoint. SMTP: N messages from C concurrent clients bound to K source
//! addresses, timed until the last 250 and until every message is in its mailbox (read over
//! IMAP), with per-transaction latency and the server processes' CPU time. IMAP and POP3:
//! one mailbox read whole, each step timed. Reports are tables or JSON.
//!
//! Layout: `wire` (bounded, deadline-bound line I/O), the protocol clients `smtp`, `imap`,
//! `pop3` (their parsing is plain functions over bytes), `sources`, `recipients`, `message`,
//! `mailboxes` (the delivery check), `cpu`, `stats`, `report`, `progress`, and `scenario/`
//! with one file per benchmark.

pub mod cli;
pub mod cpu;
pub mod error;
pub mod imap;
pub mod mailboxes;
pub mod message;
pub mod pop3;
pub mod progress;
pub mod recipients;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod smtp;
pub mod sources;
pub mod stats;
pub mod wire;

pub use cli::BenchArgs;
pub use error::Error;

use cli::BenchCmd;

/// Runs `sirms bench …`, prints its report, and returns the exit code: 0 when everything
/// succeeded, 1 when the run finished with failures (refused or lost messages, undelivered
/// mail, a failed step), 2 when it could not run (bad arguments, unreachable mailboxes).
pub async fn run(args: BenchArgs) -> i32 {
    let printed = match args.what {
        BenchCmd::Smtp(a) => match scenario::deliver::run(&a).await {
            Ok(report) => report::emit(&report, a.common.json, a.common.out.as_deref()).map(|_| report.ok),
            Err(e) => Err(e),
        },
        BenchCmd::Imap(a) => {
            let report = scenario::imap_fetch::run(&a).await;
            report::emit(&report, a.common.json, a.common.out.as_deref()).map(|_| report.ok)
        }
        BenchCmd::Pop3(a) => {
            let report = scenario::pop3_retr::run(&a).await;
            report::emit(&report, a.common.json, a.common.out.as_deref()).map(|_| report.ok)
        }
    };
    match printed {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("sirms bench: {e}");
            2
        }
    }
}
