//! CPU and memory of a local process from `/proc/<pid>/stat` and `/proc/<pid>/status`, sampled
//! in the background while a scenario runs: the server's (when the tool started it) and the load
//! generator's own, since both share the machine's cores.
//!
//! Follows a PID that may change (a restarted node) and is 0 while the process is down.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// How often the samplers read `/proc`.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// Linux reports CPU times in USER_HZ ticks, fixed at 100 per second in the user-space ABI.
const TICKS_PER_SEC: f64 = 100.0;

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ProcUsage {
    /// CPU time over wall time while sampled, in percent of one core (200 = two cores busy).
    pub cpu_percent_avg: f64,
    pub cpu_percent_peak: f64,
    pub rss_peak_mib: f64,
    pub rss_last_mib: f64,
}

/// utime + stime in ticks, from the text of `/proc/<pid>/stat`.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The thread's name (field 2), from the text of `/proc/<pid>/task/<tid>/stat`.
pub fn thread_name(stat: &str) -> Option<&str> {
    stat.get(stat.find('(')? + 1..stat.rfind(')')?)
}

/// Name prefix of a node's token-signing threads (stagefleet's signer pool).
const SIGNER_THREAD: &str = "signer-";

/// One process's CPU ticks so far: (its signing threads alive now, the whole process, exited
/// threads included).
fn signing_ticks(pid: u32) -> Option<(u32, u64, u64)> {
    if pid == 0 {
        return None;
    }
    let all = cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    let mut signing = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if thread_name(&stat).is_some_and(|n| n.starts_with(SIGNER_THREAD)) {
            signing += cpu_ticks(&stat).unwrap_or(0);
        }
    }
    Some((pid, signing, all))
}

/// The server's CPU over the load, split between signing tokens and everything else. Both run
/// on the same cores in the same seconds, so `other ÷ signing` holds still while the machine's
/// speed drifts: the number to compare builds by (signing is the same work for every join).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct SigningSplit {
    pub signing_secs: f64,
    pub other_secs: f64,
    /// Processes counted (a node restarted during the load is left out: its counters began anew).
    pub processes: usize,
}

impl SigningSplit {
    pub fn other_per_signing(&self) -> Option<f64> {
        (self.signing_secs > 0.0).then(|| self.other_secs / self.signing_secs)
    }

    /// From each process's ticks at the start and at the end, matched by PID.
    fn between(start: &[(u32, u64, u64)], end: &[(u32, u64, u64)]) -> Self {
        let mut split = SigningSplit::default();
        for &(pid, s1, a1) in end {
            let Some(&(_, s0, a0)) = start.iter().find(|(p, ..)| *p == pid) else {
                continue;
            };
            let signing = s1.saturating_sub(s0) as f64 / TICKS_PER_SEC;
            let all = a1.saturating_sub(a0) as f64 / TICKS_PER_SEC;
            split.signing_secs += signing;
            split.other_secs += (all - signing).max(0.0);
            split.processes += 1;
        }
        split
    }
}

/// Reads [`SigningSplit`] from [`SplitProbe::begin`] (the load starts) to [`SplitProbe::freeze`]
/// (it is over), or to now if never frozen; like [`Sampler`].
pub struct SplitProbe {
    pids: Vec<Arc<AtomicU32>>,
    start: Vec<(u32, u64, u64)>,
    frozen: Option<Option<SigningSplit>>,
}

impl SplitProbe {
    pub fn begin(pids: Vec<Arc<AtomicU32>>) -> Self {
        let start = read_split(&pids);
        Self {
            pids,
            start,
            frozen: None,
        }
    }

    /// Keep the split as of now: what follows (the ledger check) is not part of the load.
    pub fn freeze(&mut self) {
        if self.frozen.is_none() {
            self.frozen = Some(self.split());
        }
    }

    /// `None` when no process was measured across the whole stretch.
    pub fn split(&self) -> Option<SigningSplit> {
        if let Some(frozen) = &self.frozen {
            return frozen.clone();
        }
        let split = SigningSplit::between(&self.start, &read_split(&self.pids));
        (split.processes > 0).then_some(split)
    }
}

fn read_split(pids: &[Arc<AtomicU32>]) -> Vec<(u32, u64, u64)> {
    pids.iter()
        .filter_map(|p| signing_ticks(p.load(Ordering::Relaxed)))
        .collect()
}

/// VmRSS in KiB, from the text of `/proc/<pid>/status`.
pub fn rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[derive(Default)]
struct State {
    usage: ProcUsage,
    busy_secs: f64,
    wall_secs: f64,
    /// Per PID slot: the PID and its CPU ticks at the previous sample.
    last: Vec<Option<(u32, u64)>>,
    last_at: Option<Instant>,
}

/// Samples one PID, or the sum over several (the nodes of a cluster), every `every` until
/// dropped or frozen.
pub struct Sampler {
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
    frozen: Option<ProcUsage>,
}

impl Sampler {
    pub fn start(pid: Arc<AtomicU32>, every: Duration) -> Self {
        Self::start_all(vec![pid], every)
    }

    /// CPU and RSS summed over `pids`: CPU in percent of one core (three nodes each using half a
    /// core are 150), RSS the sum of the processes' at the same moment. A PID that is 0 (down)
    /// adds nothing meanwhile.
    pub fn start_all(pids: Vec<Arc<AtomicU32>>, every: Duration) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let now: Vec<u32> = pids.iter().map(|p| p.load(Ordering::Relaxed)).collect();
                sample(&st, &now);
            }
        });
        Self {
            state,
            task,
            frozen: None,
        }
    }

    pub fn own() -> Self {
        Self::start(Arc::new(AtomicU32::new(std::process::id())), SAMPLE_EVERY)
    }

    /// Stop sampling and keep the usage as of the last sample: the scenario's load is over, and
    /// what follows (the ledger check verifies thousands of signatures) is not part of it.
    pub fn freeze(&mut self) {
        if self.frozen.is_none() {
            self.task.abort();
            self.frozen = Some(self.usage());
        }
    }

    pub fn usage(&self) -> ProcUsage {
        if let Some(u) = &self.frozen {
            return u.clone();
        }
        let s = self.state.lock().expect("sampler state");
        let mut u = s.usage.clone();
        if s.wall_secs > 0.0 {
            u.cpu_percent_avg = 100.0 * s.busy_secs / s.wall_secs;
        }
        u
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(cpu_ticks(&stat)? as f64 / TICKS_PER_SEC)
}

/// The whole machine's CPU time so far, in seconds summed over its cores: (busy, all), from the
/// first line of `/proc/stat` (idle and iowait are not busy).
pub fn machine_cpu_secs() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    machine_ticks(stat.lines().next()?).map(|(busy, all)| (busy as f64 / TICKS_PER_SEC, all as f64 / TICKS_PER_SEC))
}

/// (busy, all) ticks from `/proc/stat`'s `cpu` line; guest time is already in user time.
pub fn machine_ticks(line: &str) -> Option<(u64, u64)> {
    let mut f = line.split_whitespace();
    if f.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = f.take(8).map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let all: u64 = v.iter().sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((all - idle, all))
}

/// Datagrams dropped because a UDP socket's receive buffer was full, over this machine's IPv4
/// UDP sockets (`/proc/net/udp`, this network namespace): (those bound to `port`, all others).
pub fn udp_drops(port: Option<u16>) -> Option<(u64, u64)> {
    Some(parse_udp_drops(&std::fs::read_to_string("/proc/net/udp").ok()?, port))
}

/// [`udp_drops`] from the text of `/proc/net/udp`: the local address is `HEXIP:HEXPORT`, the
/// drop count the last column.
pub fn parse_udp_drops(text: &str, port: Option<u16>) -> (u64, u64) {
    let (mut bound, mut others) = (0, 0);
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(Ok(drops))) = (f.get(1), f.last().map(|d| d.parse::<u64>())) else {
            continue;
        };
        let local_port = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
        if port.is_some() && local_port == port {
            bound += drops;
        } else {
            others += drops;
        }
    }
    (bound, others)
}

/// (CPU ticks, RSS in KiB) of a running process.
fn read(pid: u32) -> Option<(u64, u64)> {
    if pid == 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some((cpu_ticks(&stat)?, rss_kib(&status)?))
}

fn sample(state: &Mutex<State>, pids: &[u32]) {
    let reads: Vec<Option<(u32, u64, u64)>> = pids
        .iter()
        .map(|&pid| read(pid).map(|(ticks, rss)| (pid, ticks, rss)))
        .collect();
    account(&mut state.lock().expect("sampler state"), &reads, Instant::now());
}

/// Add one sample — per PID slot (pid, CPU ticks, RSS KiB), or `None` for a process that is
/// down — to the running totals.
fn account(s: &mut State, reads: &[Option<(u32, u64, u64)>], now: Instant) {
    if reads.iter().all(Option::is_none) {
        return;
    }
    s.last.resize(reads.len(), None);
    let rss_mib = reads.iter().flatten().map(|r| r.2).sum::<u64>() as f64 / 1024.0;
    s.usage.rss_last_mib = rss_mib;
    s.usage.rss_peak_mib = s.usage.rss_peak_mib.max(rss_mib);
    // A new PID (restarted node) starts a new baseline rather than a negative delta; the time
    // counts only when some process was measured across it.
    let mut busy_ticks = 0;
    let mut measured = false;
    for (slot, r) in reads.iter().enumerate() {
        if let (Some((pid, ticks, _)), Some((last_pid, last_ticks))) = (r, s.last[slot])
            && *pid == last_pid
        {
            busy_ticks += ticks.saturating_sub(last_ticks);
            measured = true;
        }
    }
    if measured && let Some(at) = s.last_at {
        let busy = busy_ticks as f64 / TICKS_PER_SEC;
        let wall = now.duration_since(at).as_secs_f64();
        s.busy_secs += busy;
        s.wall_secs += wall;
        if wall > 0.0 {
            s.usage.cpu_percent_peak = s.usage.cpu_percent_peak.max(100.0 * busy / wall);
        }
    }
    for (slot, r) in reads.iter().enumerate() {
        s.last[slot] = r.map(|(pid, ticks, _)| (pid, ticks));
    }
    s.last_at = Some(now);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_and_the_rest_are_told_apart_per_process_and_a_restarted_one_is_left_out() {
        assert_eq!(thread_name("4321 (signer-1) S 1 2 3"), Some("signer-1"));
        assert_eq!(thread_name("4321 (a (b) c) S 1"), Some("a (b) c"));
        // pid 7: 150 ticks, 100 of them signing; pid 8 restarted as pid 9 (left out).
        let start = [(7, 200, 1_000), (8, 50, 400)];
        let end = [(7, 300, 1_150), (9, 5, 20)];
        let split = SigningSplit::between(&start, &end);
        assert_eq!(split.processes, 1);
        assert!((split.signing_secs - 1.0).abs() < 1e-9, "{split:?}");
        assert!((split.other_secs - 0.5).abs() < 1e-9, "{split:?}");
        assert_eq!(split.other_per_signing(), Some(0.5));
        assert_eq!(SigningSplit::default().other_per_signing(), None);
    }

    #[test]
    fn this_process_reads_its_own_ticks() {
        let (pid, signing, _all) = signing_ticks(std::process::id()).expect("own /proc entry");
        assert_eq!(pid, std::process::id());
        assert_eq!(signing, 0, "the test binary has no signer threads");
        assert!(signing_ticks(0).is_none());
    }

    #[test]
    fn several_processes_are_summed_and_a_restarted_one_starts_a_new_baseline() {
        let mut s = State::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        account(
            &mut s,
            &[Some((10, 100, 1024)), Some((11, 500, 2048)), Some((12, 0, 1024))],
            at(0),
        );
        // One second later: 50 + 30 + 20 ticks, i.e. one core busy in all.
        account(
            &mut s,
            &[Some((10, 150, 1024)), Some((11, 530, 2048)), Some((12, 20, 1024))],
            at(1000),
        );
        assert!((s.busy_secs - 1.0).abs() < 1e-9 && (s.wall_secs - 1.0).abs() < 1e-9);
        assert_eq!(s.usage.rss_last_mib, 4.0);
        // Node 10 killed: the other two go on being counted, RSS drops to theirs.
        account(&mut s, &[None, Some((11, 630, 2048)), Some((12, 20, 1024))], at(2000));
        assert!((s.busy_secs - 2.0).abs() < 1e-9 && (s.wall_secs - 2.0).abs() < 1e-9);
        assert_eq!(s.usage.rss_last_mib, 3.0);
        assert_eq!(s.usage.rss_peak_mib, 4.0);
        // Restarted under a new PID with fewer ticks: no negative delta, a new baseline.
        account(
            &mut s,
            &[Some((20, 5, 1024)), Some((11, 630, 2048)), Some((12, 20, 1024))],
            at(3000),
        );
        assert!((s.busy_secs - 2.0).abs() < 1e-9 && (s.wall_secs - 3.0).abs() < 1e-9);
        account(
            &mut s,
            &[Some((20, 105, 1024)), Some((11, 630, 2048)), Some((12, 20, 1024))],
            at(4000),
        );
        assert!((s.busy_secs - 3.0).abs() < 1e-9);
        assert!((s.usage.cpu_percent_peak - 100.0).abs() < 1e-9);
    }

    #[test]
    fn one_process_down_and_back_does_not_count_the_gap() {
        let mut s = State::default();
        let t0 = Instant::now();
        account(&mut s, &[Some((10, 0, 1024))], t0);
        account(&mut s, &[None], t0 + Duration::from_secs(1));
        account(&mut s, &[Some((20, 0, 1024))], t0 + Duration::from_secs(5));
        account(&mut s, &[Some((20, 50, 1024))], t0 + Duration::from_secs(6));
        assert!((s.wall_secs - 1.0).abs() < 1e-9 && (s.busy_secs - 0.5).abs() < 1e-9);
    }
}
