//! `sirms bench smtp`: C clients send N messages; the clock runs from the first connect to
//! the last 250 (time to accept) and, with --imap, to the moment every accepted message is in
//! its recipient's INBOX (time to deliver); server CPU is read over the same span. A failed
//! transaction is counted with its reply and never retried.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cli::SmtpArgs;
use crate::cpu::{CpuMeter, wait_quiet};
use crate::error::Error;
use crate::mailboxes::{MailboxWatch, empty_inboxes};
use crate::message::MessageFactory;
use crate::progress::{Counters, Progress};
use crate::recipients::{Recipients, check_mailbox};
use crate::report::{ErrorCount, SmtpReport};
use crate::smtp::SmtpClient;
use crate::sources::Sources;
use crate::stats::{Latency, round, secs};

/// Kinds of failure listed in the report; more are only counted.
const MAX_ERROR_KINDS: usize = 20;

/// What every client shares.
struct Plan {
    target: SocketAddr,
    recipients: Recipients,
    factory: MessageFactory,
    sources: Sources,
    sender: String,
    helo: String,
    msgs_per_conn: u64,
    timeout: Duration,
    /// The next message to send.
    next: AtomicUsize,
    counters: Arc<Counters>,
}

/// What one client did.
struct ClientOutcome {
    latencies: Vec<Duration>,
    /// Accepted messages per recipient (index into `Recipients::addresses`).
    accepted: Vec<u32>,
    last_250: Option<Instant>,
    failures: Failures,
}

/// Failures by kind (the error text), a bounded number of kinds.
#[derive(Default)]
struct Failures {
    kinds: BTreeMap<String, u64>,
    not_listed: u64,
}

impl Failures {
    fn add(&mut self, kind: String, count: u64) {
        if let Some(n) = self.kinds.get_mut(&kind) {
            *n += count;
        } else if self.kinds.len() < MAX_ERROR_KINDS {
            self.kinds.insert(kind, count);
        } else {
            self.not_listed += count;
        }
    }

    fn merge(&mut self, other: Failures) {
        for (kind, count) in other.kinds {
            self.add(kind, count);
        }
        self.not_listed += other.not_listed;
    }
}

/// Runs the benchmark and reports it; Err only when it could not start (bad arguments, the
/// delivery check's mailboxes unreachable).
pub async fn run(args: &SmtpArgs) -> Result<SmtpReport, Error> {
    let n = usize::try_from(args.messages).map_err(|_| Error::Usage("too many messages".into()))?;
    let recipients = Recipients::new(&args.rcpt, args.users, n, args.seed).map_err(Error::Usage)?;
    check_mailbox(&args.sender).map_err(|e| Error::Usage(format!("--sender: {e}")))?;
    if args.helo.is_empty() || !args.helo.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::Usage("--helo must be printable ASCII without spaces".into()));
    }
    let run_id = match &args.run_id {
        Some(id)
            if !id.is_empty()
                && id.len() <= 64
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) =>
        {
            id.clone()
        }
        Some(id) => return Err(Error::Usage(format!("--run-id {id:?}: use letters, digits, '.', '-', '_'"))),
        None => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            format!("sirms-bench-{now}-{}", std::process::id())
        }
    };
    let sources = Sources::new(args.sources.clone().map(|s| s.0).unwrap_or_default());
    let timeout = args.common.timeout;
    let meter = CpuMeter::new(args.common.server_pid.clone());
    let size = usize::try_from(args.size).map_err(|_| Error::Usage("--size too large".into()))?;

    // The delivery check's sessions are open, and the mailboxes counted, before the clock.
    let users_total = recipients.addresses.len();
    let watched: Vec<usize> =
        recipients.per_address().iter().enumerate().filter(|(_, n)| **n > 0).map(|(i, _)| i).collect();
    let mut reset_removed = None;
    let mut watch = None;
    if let Some(imap) = args.imap {
        let imap_sources = sources.clone();
        if args.reset {
            reset_removed =
                Some(empty_inboxes(imap, &recipients.addresses, &args.password, &imap_sources, timeout).await?);
        }
        let users: Vec<String> = watched.iter().map(|&i| recipients.addresses[i].clone()).collect();
        watch = Some(MailboxWatch::open(imap, &users, &args.password, &imap_sources, timeout).await?);
    }
    let base: Vec<u32> = watch.as_ref().map(|w| w.counts().to_vec()).unwrap_or_default();
    tokio::time::sleep(args.settle).await;
    let quiet =
        if args.quiet_wait.is_zero() { None } else { Some(wait_quiet(args.quiet_max_cores, args.quiet_wait).await) };

    let counters = Arc::new(Counters::default());
    let plan = Arc::new(Plan {
        target: args.target,
        factory: MessageFactory::new(&args.sender, &run_id, size, SystemTime::now()),
        recipients,
        sources,
        sender: args.sender.clone(),
        helo: args.helo.clone(),
        msgs_per_conn: args.msgs_per_conn,
        timeout,
        next: AtomicUsize::new(0),
        counters: counters.clone(),
    });
    let before = meter.snapshot();
    let progress = Progress::start(counters.clone(), args.messages);
    let t0 = Instant::now();
    let mut clients = JoinSet::new();
    for _ in 0..args.concurrency.min(args.messages) {
        clients.spawn(client(plan.clone()));
    }
    let mut latencies = Vec::with_capacity(n);
    let mut accepted = vec![0u32; users_total];
    let mut last_250 = None;
    let mut failures = Failures::default();
    while let Some(done) = clients.join_next().await {
        let done = done.map_err(|e| Error::Io(std::io::Error::other(e)))?;
        latencies.extend(done.latencies);
        for (sum, n) in accepted.iter_mut().zip(done.accepted) {
            *sum += n;
        }
        last_250 = last_250.max(done.last_250);
        failures.merge(done.failures);
    }
    let clients_done = t0.elapsed();
    let accepted_total: u64 = accepted.iter().map(|&n| u64::from(n)).sum();

    // Delivery: every accepted message in its mailbox.
    let mut delivered_at = None;
    let mut delivered = None;
    let mut delivery_error = None;
    if let Some(watch) = watch.as_mut() {
        counters.delivering.store(true, Ordering::Relaxed);
        let want: Vec<u32> = watched.iter().map(|&i| accepted[i]).collect();
        let expected: Vec<u32> = base.iter().zip(&want).map(|(b, w)| b + w).collect();
        let arrived = |counts: &[u32]| -> u64 {
            counts.iter().zip(&base).zip(&want).map(|((c, b), w)| u64::from(c.saturating_sub(*b).min(*w))).sum()
        };
        let deadline = Instant::now() + args.deliver_timeout;
        let waited = watch
            .wait_for(&expected, deadline, args.poll_interval, |counts| {
                counters.delivered.store(arrived(counts), Ordering::Relaxed)
            })
            .await;
        match waited {
            Ok(at) => delivered_at = at,
            Err(e) => delivery_error = Some(e.to_string()),
        }
        delivered = Some(arrived(watch.counts()));
    }
    let after = meter.snapshot();
    progress.finish().await;
    if let Some(watch) = watch {
        watch.close().await;
    }

    let cpu = meter.report(&before, &after);
    let accept_s = last_250.map(|t: Instant| t.duration_since(t0).as_secs_f64());
    let deliver_s = delivered_at.map(|t: Instant| t.duration_since(t0).as_secs_f64());
    let per_s = |s: f64| if s > 0.0 { Some(round(accepted_total as f64 / s, 1)) } else { None };
    let all_delivered = args.imap.map(|_| delivery_error.is_none() && delivered_at.is_some());
    let failed = args.messages - accepted_total;
    Ok(SmtpReport {
        test: "deliver",
        name: args.common.name.clone(),
        target: args.target.to_string(),
        imap: args.imap.map(|a| a.to_string()),
        run_id,
        n,
        conc: args.concurrency.min(args.messages) as usize,
        msgs_per_conn: args.msgs_per_conn as usize,
        msg_size: size,
        users: users_total,
        sources: plan.sources.addrs().iter().map(|a| a.to_string()).collect(),
        accepted: accepted_total,
        failed,
        errors: failures.kinds.into_iter().map(|(error, count)| ErrorCount { error, count }).collect(),
        errors_not_listed: failures.not_listed,
        accept_s: accept_s.map(|s| round(s, 6)),
        accept_msgs_per_s: accept_s.and_then(per_s),
        clients_done_s: secs(clients_done),
        smtp_lat_ms: Latency::of(&mut latencies),
        delivery_checked: args.imap.is_some(),
        delivered,
        missing: delivered.map(|d| accepted_total - d),
        all_delivered,
        deliver_s: deliver_s.map(|s| round(s, 6)),
        msgs_per_s: deliver_s.and_then(per_s),
        ms_per_msg: deliver_s.filter(|_| accepted_total > 0).map(|s| round(1000.0 * s / accepted_total as f64, 4)),
        delivery_error,
        reset_removed,
        quiet_wait: quiet,
        server_cpu_ms_per_msg: (!cpu.servers_cpu_s.is_empty() && accepted_total > 0)
            .then(|| round(1000.0 * cpu.servers_total_cpu_s / accepted_total as f64, 4)),
        cpu,
        ok: failed == 0 && all_delivered != Some(false),
    })
}

/// One SMTP client: takes the next message until none is left.
async fn client(plan: Arc<Plan>) -> ClientOutcome {
    let mut out = ClientOutcome {
        latencies: Vec::new(),
        accepted: vec![0; plan.recipients.addresses.len()],
        last_250: None,
        failures: Failures::default(),
    };
    let mut session: Option<SmtpClient> = None;
    let mut on_session = 0;
    // Each turn takes a message number; numbers end at N, so this loop does too.
    loop {
        let seq = plan.next.fetch_add(1, Ordering::Relaxed);
        let Some(&who) = plan.recipients.plan.get(seq) else {
            break;
        };
        let rcpt = &plan.recipients.addresses[who as usize];
        let message = plan.factory.build(seq as u64, rcpt);
        let start = Instant::now();
        match transaction(&plan, &mut session, rcpt, &message).await {
            Ok(()) => {
                let end = Instant::now();
                out.latencies.push(end - start);
                out.last_250 = Some(end);
                out.accepted[who as usize] += 1;
                plan.counters.accepted.fetch_add(1, Ordering::Relaxed);
                on_session += 1;
                if plan.msgs_per_conn > 0 && on_session >= plan.msgs_per_conn {
                    if let Some(done) = session.take() {
                        done.quit().await;
                    }
                    on_session = 0;
                }
            }
            Err(e) => {
                plan.counters.failed.fetch_add(1, Ordering::Relaxed);
                // A refused transaction leaves a usable session, which is closed politely;
                // after any other error its state is unknown. The next message starts afresh.
                if let Some(broken) = session.take()
                    && matches!(e, Error::Refused { .. })
                {
                    broken.quit().await;
                }
                on_session = 0;
                out.failures.add(e.to_string(), 1);
            }
        }
    }
    if let Some(done) = session {
        done.quit().await;
    }
    out
}

/// One message over the client's session, connecting first if it has none.
async fn transaction(plan: &Plan, session: &mut Option<SmtpClient>, rcpt: &str, message: &[u8]) -> Result<(), Error> {
    let smtp = match session {
        Some(smtp) => smtp,
        None => session.insert(SmtpClient::connect(plan.target, plan.sources.next(), &plan.helo, plan.timeout).await?),
    };
    smtp.send_mail(&plan.sender, rcpt, message).await
}
