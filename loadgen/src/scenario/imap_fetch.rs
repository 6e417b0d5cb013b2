//! `sirms bench imap`: a fresh IMAP session per repeat reads one mailbox whole, as the shared
//! mailbench's imap test does: LOGIN (timed with the connect and greeting), SELECT INBOX,
//! `UID FETCH 1:* (FLAGS ENVELOPE BODYSTRUCTURE)`, `UID FETCH 1:* (BODY.PEEK[])`.

use tokio::time::Instant;

use crate::cli::FetchArgs;
use crate::cpu::{CpuMeter, CpuReport};
use crate::error::Error;
use crate::imap::{ImapClient, fetch_number};
use crate::report::{ImapMedians, ImapRepeat, ImapReport};
use crate::stats::{median, secs};

/// Runs the repeats and reports them; a failed repeat is reported with its error.
pub async fn run(args: &FetchArgs) -> ImapReport {
    let meter = CpuMeter::new(args.common.server_pid.clone());
    let mut repeats = Vec::new();
    for rep in 0..args.repeat as usize {
        let mut r = ImapRepeat { rep, ..ImapRepeat::default() };
        let before = meter.snapshot();
        let result = session(args, &mut r).await;
        r.cpu = Some(meter.report(&before, &meter.snapshot()));
        r.error = result.err().map(|e| e.to_string());
        repeats.push(r);
    }
    let done: Vec<&ImapRepeat> = repeats.iter().filter(|r| r.error.is_none()).collect();
    let med = |f: fn(&ImapRepeat) -> Option<f64>| median(done.iter().filter_map(|r| f(r)));
    let median = ImapMedians {
        login_s: med(|r| r.login_s),
        select_s: med(|r| r.select_s),
        fetch_meta_s: med(|r| r.fetch_meta_s),
        fetch_body_s: med(|r| r.fetch_body_s),
        total_s: med(|r| r.total_s),
        servers_total_cpu_s: med(|r| r.cpu.as_ref().and_then(CpuReport::servers_measured)),
    };
    ImapReport {
        test: "imap",
        name: args.common.name.clone(),
        target: args.target.to_string(),
        user: args.user.clone(),
        messages: repeats.iter().rev().find_map(|r| r.exists),
        ok: done.len() == repeats.len(),
        repeats,
        median,
    }
}

/// One session; fills `r` step by step, so a failure leaves the steps that completed.
async fn session(args: &FetchArgs, r: &mut ImapRepeat) -> Result<(), Error> {
    let t0 = Instant::now();
    let mut imap = ImapClient::connect(args.target, args.source, args.common.timeout).await?;
    imap.login(&args.user, &args.password).await?;
    let t_login = Instant::now();
    r.login_s = Some(secs(t_login - t0));
    r.exists = Some(imap.select("INBOX").await?);
    let t_select = Instant::now();
    r.select_s = Some(secs(t_select - t_login));
    let mut msgs = 0;
    let meta = imap
        .command("UID FETCH", "UID FETCH 1:* (FLAGS ENVELOPE BODYSTRUCTURE)", |resp| {
            msgs += u64::from(fetch_number(resp).is_some())
        })
        .await?;
    let t_meta = Instant::now();
    r.fetch_meta_s = Some(secs(t_meta - t_select));
    r.fetch_meta_msgs = Some(msgs);
    r.fetch_meta_bytes = Some(meta.bytes);
    let mut msgs = 0;
    let body = imap
        .command("UID FETCH", "UID FETCH 1:* (BODY.PEEK[])", |resp| msgs += u64::from(fetch_number(resp).is_some()))
        .await?;
    let t_body = Instant::now();
    r.fetch_body_s = Some(secs(t_body - t_meta));
    r.fetch_body_msgs = Some(msgs);
    r.fetch_body_bytes = Some(body.bytes);
    r.total_s = Some(secs(t_body - t0));
    imap.logout().await;
    Ok(())
}
