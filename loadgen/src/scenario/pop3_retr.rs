//! `sirms bench pop3`: a fresh POP3 session per repeat retrieves one maildrop whole, as the
//! shared mailbench's pop3 test does: USER/PASS (timed with the connect and greeting), LIST,
//! then RETR of every message in turn, each timed; no DELE, so nothing changes.

use std::time::Duration;

use tokio::time::Instant;

use crate::cli::FetchArgs;
use crate::cpu::{CpuMeter, CpuReport};
use crate::error::Error;
use crate::pop3::Pop3Client;
use crate::report::{Pop3Medians, Pop3Repeat, Pop3Report};
use crate::stats::{Latency, median, secs};

/// Runs the repeats and reports them; a failed repeat is reported with its error.
pub async fn run(args: &FetchArgs) -> Pop3Report {
    let meter = CpuMeter::new(args.common.server_pid.clone());
    let mut repeats = Vec::new();
    for rep in 0..args.repeat as usize {
        let mut r = Pop3Repeat { rep, ..Pop3Repeat::default() };
        let before = meter.snapshot();
        let result = session(args, &mut r).await;
        r.cpu = Some(meter.report(&before, &meter.snapshot()));
        r.error = result.err().map(|e| e.to_string());
        repeats.push(r);
    }
    let done: Vec<&Pop3Repeat> = repeats.iter().filter(|r| r.error.is_none()).collect();
    let med = |f: fn(&Pop3Repeat) -> Option<f64>| median(done.iter().filter_map(|r| f(r)));
    let median = Pop3Medians {
        login_s: med(|r| r.login_s),
        list_s: med(|r| r.list_s),
        retr_all_s: med(|r| r.retr_all_s),
        total_s: med(|r| r.total_s),
        servers_total_cpu_s: med(|r| r.cpu.as_ref().and_then(CpuReport::servers_measured)),
    };
    Pop3Report {
        test: "pop3",
        name: args.common.name.clone(),
        target: args.target.to_string(),
        user: args.user.clone(),
        messages: repeats.iter().rev().find_map(|r| r.msgs),
        ok: done.len() == repeats.len(),
        repeats,
        median,
    }
}

/// One session; fills `r` step by step, so a failure leaves the steps that completed.
async fn session(args: &FetchArgs, r: &mut Pop3Repeat) -> Result<(), Error> {
    let t0 = Instant::now();
    let mut pop3 = Pop3Client::connect(args.target, args.source, args.common.timeout).await?;
    pop3.login(&args.user, &args.password).await?;
    let t_login = Instant::now();
    r.login_s = Some(secs(t_login - t0));
    let listing = pop3.list().await?;
    let t_list = Instant::now();
    r.list_s = Some(secs(t_list - t_login));
    r.msgs = Some(u32::try_from(listing.len()).unwrap_or(u32::MAX));
    let mut latencies: Vec<Duration> = Vec::with_capacity(listing.len());
    let (mut bytes, mut count) = (0, 0);
    for (number, _) in listing {
        let start = Instant::now();
        bytes += pop3.retr(number).await?;
        latencies.push(start.elapsed());
        count += 1;
        r.retr_msgs = Some(count);
        r.retr_bytes = Some(bytes);
    }
    let t_retr = Instant::now();
    r.retr_msgs = Some(count);
    r.retr_bytes = Some(bytes);
    r.retr_all_s = Some(secs(t_retr - t_list));
    r.retr_lat_ms = Latency::of(&mut latencies);
    r.total_s = Some(secs(t_retr - t0));
    pop3.quit().await;
    Ok(())
}
