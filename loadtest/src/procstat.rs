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
    last: Option<(u32, u64, Instant)>,
}

/// Samples a PID every `every` until dropped or frozen.
pub struct Sampler {
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
    frozen: Option<ProcUsage>,
}

impl Sampler {
    pub fn start(pid: Arc<AtomicU32>, every: Duration) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                sample(&st, pid.load(Ordering::Relaxed));
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

fn sample(state: &Mutex<State>, pid: u32) {
    if pid == 0 {
        return;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok();
    let (Some(ticks), Some(rss)) = (stat.as_deref().and_then(cpu_ticks), status.as_deref().and_then(rss_kib)) else {
        return;
    };
    let now = Instant::now();
    let mut s = state.lock().expect("sampler state");
    let rss_mib = rss as f64 / 1024.0;
    s.usage.rss_last_mib = rss_mib;
    s.usage.rss_peak_mib = s.usage.rss_peak_mib.max(rss_mib);
    // A new PID (restarted node) starts a new baseline rather than a negative delta.
    if let Some((last_pid, last_ticks, at)) = s.last
        && last_pid == pid
    {
        let busy = ticks.saturating_sub(last_ticks) as f64 / TICKS_PER_SEC;
        let wall = now.duration_since(at).as_secs_f64();
        s.busy_secs += busy;
        s.wall_secs += wall;
        if wall > 0.0 {
            s.usage.cpu_percent_peak = s.usage.cpu_percent_peak.max(100.0 * busy / wall);
        }
    }
    s.last = Some((pid, ticks, now));
}
