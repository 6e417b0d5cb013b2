//! CPU accounting from /proc: the CPU time of each server's process tree (`--server-pid`),
//! of this client, and of the whole machine, so a run can say what the servers spent per
//! message and how busy the rest of the machine was. The same sums as the shared mailbench:
//! utime + stime + cutime + cstime of the root and of every live descendant.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::stats::round;

/// A server whose CPU is measured: a name for the report, and where its pid comes from.
#[derive(Debug, Clone)]
pub struct ServerPid {
    pub name: String,
    pub pid: PidSource,
}

/// A pid, or a pid file read at each measurement (a restarted server writes a new one).
#[derive(Debug, Clone)]
pub enum PidSource {
    Pid(u32),
    File(PathBuf),
}

impl ServerPid {
    /// Parses `NAME=PID`, `NAME=PIDFILE`, or a bare `PID`/`PIDFILE` (named after it).
    pub fn parse(spec: &str) -> Result<ServerPid, String> {
        let (name, source) = match spec.split_once('=') {
            Some((name, source)) => (name.to_string(), source),
            None => (spec.to_string(), spec),
        };
        if name.is_empty() || source.is_empty() {
            return Err(format!("{spec:?}: want NAME=PID or NAME=PIDFILE"));
        }
        let pid = match source.parse::<u32>() {
            Ok(pid) if pid > 0 => PidSource::Pid(pid),
            Ok(_) => return Err(format!("{spec:?}: pid 0")),
            Err(_) => PidSource::File(PathBuf::from(source)),
        };
        Ok(ServerPid { name, pid })
    }

    fn resolve(&self) -> Option<u32> {
        match &self.pid {
            PidSource::Pid(pid) => Some(*pid),
            PidSource::File(path) => std::fs::read_to_string(path).ok()?.trim().parse().ok(),
        }
    }
}

/// What `/proc/PID/stat` says about a process's CPU (in clock ticks) and its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub ppid: u32,
    /// utime + stime: the process's own CPU, all threads.
    pub own: u64,
    /// cutime + cstime: CPU of its children that it has reaped.
    pub reaped_children: u64,
}

/// Parses the content of `/proc/PID/stat`. The command name (field 2) may hold spaces and
/// parentheses, so the fields are counted from its last `)`.
pub fn parse_stat(content: &[u8]) -> Option<ProcStat> {
    let close = content.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(content.get(close + 2..)?).ok()?;
    // After the name: state(3) ppid(4) … utime(14) stime(15) cutime(16) cstime(17).
    let fields: Vec<&str> = rest.split_ascii_whitespace().take(15).collect();
    let number = |i: usize| -> Option<u64> { fields.get(i)?.parse().ok() };
    Some(ProcStat {
        ppid: u32::try_from(number(1)?).ok()?,
        own: number(11)? + number(12)?,
        reaped_children: number(13)?.checked_add(number(14)?)?,
    })
}

/// CPU ticks of `root`'s tree among `procs` (pid → stat): its own and every live
/// descendant's, each with its reaped children's. `None` if `root` is not there.
pub fn tree_ticks(root: u32, procs: &HashMap<u32, ProcStat>) -> Option<u64> {
    procs.get(&root)?;
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, stat) in procs {
        children.entry(stat.ppid).or_default().push(pid);
    }
    let mut total = 0;
    let mut todo = vec![root];
    // Each pid has one parent, so each is visited once; the bound guards a pid loop anyway.
    let mut visits = 0;
    while let Some(pid) = todo.pop() {
        visits += 1;
        if visits > procs.len() {
            break;
        }
        if let Some(stat) = procs.get(&pid) {
            total += stat.own + stat.reaped_children;
        }
        if pid != 0 {
            todo.extend(children.get(&pid).into_iter().flatten());
        }
    }
    Some(total)
}

/// Busy ticks of the whole machine from the first line of `/proc/stat`
/// (`cpu user nice system idle iowait irq softirq steal …`): all but idle and iowait.
pub fn busy_ticks(proc_stat: &str) -> Option<u64> {
    let line = proc_stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_ascii_whitespace().take(8).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    if v.len() < 5 {
        return None;
    }
    Some(v.iter().sum::<u64>() - v[3] - v[4])
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

fn all_procs() -> HashMap<u32, ProcStat> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // A process may exit between the listing and the read: it is simply not counted.
        if let Some(stat) = std::fs::read(entry.path().join("stat")).ok().and_then(|c| parse_stat(&c)) {
            out.insert(pid, stat);
        }
    }
    out
}

fn machine_busy_seconds() -> Option<f64> {
    Some(busy_ticks(&std::fs::read_to_string("/proc/stat").ok()?)? as f64 / ticks_per_second())
}

/// CPU seconds this process and its reaped children used so far.
fn own_seconds() -> f64 {
    let seconds = |who| {
        // SAFETY: getrusage fills the zeroed struct we pass.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(who, &mut usage) } != 0 {
            return 0.0;
        }
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(usage.ru_utime) + tv(usage.ru_stime)
    };
    seconds(libc::RUSAGE_SELF) + seconds(libc::RUSAGE_CHILDREN)
}

/// CPU counters at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    servers: Vec<Option<f64>>,
    machine: Option<f64>,
    client: f64,
    at: Instant,
}

/// CPU used between two snapshots.
#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    /// Seconds per server (name → seconds); a server whose pid could not be read at both
    /// ends is left out.
    pub servers_cpu_s: std::collections::BTreeMap<String, f64>,
    /// Sum of `servers_cpu_s`.
    pub servers_total_cpu_s: f64,
    /// This load generator's own CPU seconds.
    pub harness_cpu_s: f64,
    /// Every core's busy seconds, the whole machine.
    pub system_busy_cpu_s: Option<f64>,
    /// Machine busy seconds not spent by the servers or this client.
    pub other_cpu_s: Option<f64>,
    /// Wall-clock seconds between the snapshots.
    pub wall_s: f64,
    /// CPUs of the machine.
    pub ncpu: usize,
}

impl CpuReport {
    /// `servers_total_cpu_s`, if any server was measured.
    pub fn servers_measured(&self) -> Option<f64> {
        (!self.servers_cpu_s.is_empty()).then_some(self.servers_total_cpu_s)
    }
}

/// Measures the servers given with `--server-pid`.
#[derive(Debug, Clone, Default)]
pub struct CpuMeter {
    servers: Vec<ServerPid>,
}

impl CpuMeter {
    /// A meter over `servers`.
    pub fn new(servers: Vec<ServerPid>) -> CpuMeter {
        CpuMeter { servers }
    }

    /// Reads the counters now (a scan of /proc: a few milliseconds).
    pub fn snapshot(&self) -> Snapshot {
        let procs = if self.servers.is_empty() { HashMap::new() } else { all_procs() };
        let hz = ticks_per_second();
        let servers =
            self.servers.iter().map(|s| Some(tree_ticks(s.resolve()?, &procs)? as f64 / hz)).collect::<Vec<_>>();
        Snapshot { servers, machine: machine_busy_seconds(), client: own_seconds(), at: Instant::now() }
    }

    /// What was used from `before` to `after`.
    pub fn report(&self, before: &Snapshot, after: &Snapshot) -> CpuReport {
        let mut servers_cpu_s = std::collections::BTreeMap::new();
        for (i, server) in self.servers.iter().enumerate() {
            if let (Some(Some(a)), Some(Some(b))) = (before.servers.get(i), after.servers.get(i)) {
                *servers_cpu_s.entry(server.name.clone()).or_insert(0.0) += round(b - a, 3);
            }
        }
        // An empty float sum is -0.0; adding 0.0 makes "nothing measured" a plain 0.
        let servers_total_cpu_s = round(servers_cpu_s.values().sum::<f64>() + 0.0, 3);
        let harness_cpu_s = round(after.client - before.client, 3);
        let system_busy_cpu_s = before.machine.zip(after.machine).map(|(a, b)| round(b - a, 3));
        CpuReport {
            servers_cpu_s,
            servers_total_cpu_s,
            harness_cpu_s,
            system_busy_cpu_s,
            other_cpu_s: system_busy_cpu_s.map(|busy| round(busy - harness_cpu_s - servers_total_cpu_s, 3)),
            wall_s: round(after.at.duration_since(before.at).as_secs_f64(), 3),
            ncpu: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        }
    }
}

/// How long a run waited for the machine to calm down, and how busy it was at the end.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct QuietWait {
    pub waited_s: f64,
    pub busy_cores: f64,
}

/// Waits (at most `max_wait`) until the rest of the machine keeps fewer than `max_cores`
/// cores busy over half a second, so a timed run does not start in someone else's build.
pub async fn wait_quiet(max_cores: f64, max_wait: Duration) -> QuietWait {
    let start = Instant::now();
    let sample = Duration::from_millis(500);
    loop {
        let before = machine_busy_seconds();
        tokio::time::sleep(sample).await;
        let busy = before.zip(machine_busy_seconds()).map(|(a, b)| (b - a) / sample.as_secs_f64());
        let waited = start.elapsed();
        let busy_cores = busy.unwrap_or(0.0);
        if busy.is_none() || busy_cores <= max_cores || waited >= max_wait {
            return QuietWait { waited_s: round(waited.as_secs_f64(), 3), busy_cores: round(busy_cores, 3) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines() {
        let line = b"4242 (sirms node) S 1 4242 4242 0 -1 4194560 1000 0 0 0 150 37 12 3 20 0 9 0 100 0 0\n";
        assert_eq!(parse_stat(line), Some(ProcStat { ppid: 1, own: 187, reaped_children: 15 }));
        // A name with ") " inside: fields count from the last ')'.
        let odd = b"7 (a) b (c)) R 6 7 7 0 -1 0 0 0 0 0 5 6 7 8 20 0 1 0 1 0 0";
        assert_eq!(parse_stat(odd), Some(ProcStat { ppid: 6, own: 11, reaped_children: 15 }));
        assert_eq!(parse_stat(b"1 (init) S 0 1"), None);
        assert_eq!(parse_stat(b"garbage"), None);
    }

    #[test]
    fn trees() {
        let p = |ppid, own, reaped_children| ProcStat { ppid, own, reaped_children };
        let procs: HashMap<u32, ProcStat> =
            [(1, p(0, 1000, 0)), (10, p(1, 5, 2)), (11, p(10, 3, 0)), (12, p(11, 4, 1)), (20, p(1, 7, 0))].into();
        assert_eq!(tree_ticks(10, &procs), Some(5 + 2 + 3 + 4 + 1));
        assert_eq!(tree_ticks(20, &procs), Some(7));
        assert_eq!(tree_ticks(99, &procs), None);
        // A parent loop (cannot happen in /proc, but a bad read must not hang us).
        let looped: HashMap<u32, ProcStat> = [(5, p(6, 1, 0)), (6, p(5, 1, 0))].into();
        assert!(tree_ticks(5, &looped).is_some());
    }

    #[test]
    fn machine_busy() {
        assert_eq!(busy_ticks("cpu  100 5 50 1000 20 1 2 3 0 0\ncpu0 1 2 3 4 5\n"), Some(161));
        assert_eq!(busy_ticks("cpu0 100 5 50 1000 20"), None);
        assert_eq!(busy_ticks("cpu  1 2"), None);
    }

    #[test]
    fn server_pids() {
        let s = ServerPid::parse("node=4242").unwrap();
        assert_eq!(s.name, "node");
        assert!(matches!(s.pid, PidSource::Pid(4242)));
        let f = ServerPid::parse("postfix=/run/master.pid").unwrap();
        assert!(matches!(f.pid, PidSource::File(ref p) if p == std::path::Path::new("/run/master.pid")));
        assert_eq!(ServerPid::parse("77").unwrap().name, "77");
        for bad in ["", "=1", "x=", "x=0"] {
            assert!(ServerPid::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn no_servers_is_not_measured_rather_than_negative_zero() {
        let meter = CpuMeter::default();
        let report = meter.report(&meter.snapshot(), &meter.snapshot());
        assert!(report.servers_total_cpu_s == 0.0 && report.servers_total_cpu_s.is_sign_positive());
        assert_eq!(report.servers_measured(), None);
    }

    #[test]
    fn our_own_tree_is_measured() {
        let meter = CpuMeter::new(vec![ServerPid::parse(&format!("me={}", std::process::id())).unwrap()]);
        let before = meter.snapshot();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(80) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let report = meter.report(&before, &meter.snapshot());
        assert!(x > 0);
        assert!(report.servers_cpu_s["me"] > 0.0, "{report:?}");
        assert!(report.harness_cpu_s > 0.0);
    }
}
