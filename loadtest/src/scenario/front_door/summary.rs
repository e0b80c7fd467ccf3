//! What `front-door` found, as the report holds it (JSON) and prints it (text). Numbers only.

use std::collections::BTreeMap;

use serde::Serialize;

use super::docs::Expect;
use crate::percentiles::Percentiles;

/// The goals BENCHMARKS.md states, printed beside the measurements.
const GOAL_REFUSAL_MS: f64 = 5.0;
const GOAL_STALLED_RSS_MIB: f64 = 300.0;

#[derive(Clone, Debug, Serialize)]
pub struct KindSummary {
    pub kind: String,
    pub expect: Expect,
    /// Largest body of this kind, in bytes.
    pub bytes_max: usize,
    /// Answers by HTTP status (`none` = no answer).
    pub statuses: BTreeMap<String, u64>,
    /// Answers by `errors[0].extensions.code` (`-` = none).
    pub codes: BTreeMap<String, u64>,
    pub latency_ms: Percentiles,
}

/// The one document that took longest, and how to make it again.
#[derive(Clone, Debug, Serialize)]
pub struct Slowest {
    pub kind: String,
    pub origin: String,
    pub round: u32,
    pub index: usize,
    pub status: u16,
    pub body_bytes: usize,
    pub ms: f64,
}

/// A base document's refusal time over the rounds (see `send::worst_median`).
#[derive(Clone, Debug, Serialize)]
pub struct WorstDoc {
    pub kind: String,
    pub index: usize,
    pub rounds: usize,
    pub median_ms: f64,
    pub max_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct DocsSummary {
    pub rounds: u32,
    pub seed: u64,
    pub sent: u64,
    pub elapsed_secs: f64,
    pub kinds: Vec<KindSummary>,
    /// Every answer that refused (400 or 413), whatever the document.
    pub refusal_ms: Percentiles,
    /// Every answer.
    pub all_ms: Percentiles,
    pub slowest: Option<Slowest>,
    /// The base document meant to be refused that is slowest by its median over the rounds.
    pub worst_median: Option<WorstDoc>,
    pub failures_total: usize,
    /// The first failures (all are counted in `failures_total`).
    pub failures: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SocketPhase {
    pub name: String,
    /// Bytes each frame header announced and bytes sent after it (`None`: no frame at all).
    pub frame_announced: Option<u64>,
    pub frame_sent: Option<usize>,
    pub wanted: usize,
    pub opened: usize,
    pub open_errors: BTreeMap<String, u64>,
    pub open_secs: f64,
    /// Open at the end of the hold; the others the node closed (the socket read end-of-file).
    pub held_at_end: usize,
    pub closed_by_node: usize,
    /// The node's `open_websockets` gauge at the end of the hold, if `/metrics` answered.
    pub node_open_websockets: Option<u64>,
    /// The node's RSS (only for a node this tool started).
    pub rss_before_mib: Option<f64>,
    pub rss_peak_mib: Option<f64>,
    pub rss_after_close_mib: Option<f64>,
}

impl SocketPhase {
    /// RSS the node grew by per opened socket, in KiB.
    pub fn kib_per_socket(&self) -> Option<f64> {
        let (before, peak) = (self.rss_before_mib?, self.rss_peak_mib?);
        (self.opened > 0).then(|| (peak - before) * 1024.0 / self.opened as f64)
    }

    fn text(&self) -> String {
        let what = match (self.frame_announced, self.frame_sent) {
            (Some(a), Some(s)) => format!("{} (a {a}-byte frame announced, {s} bytes of it sent)", self.name),
            _ => format!("{} (upgrade completed, nothing sent)", self.name),
        };
        let mut s = format!(
            "sockets {what}: {} of {} opened in {:.1}s, held {} at the end, closed by the node {}",
            self.opened, self.wanted, self.open_secs, self.held_at_end, self.closed_by_node
        );
        if let Some(n) = self.node_open_websockets {
            s += &format!(" (node's open_websockets gauge: {n})");
        }
        s += "\n";
        if !self.open_errors.is_empty() {
            let e: Vec<String> = self.open_errors.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
            s += &format!("  failed to open: {}\n", e.join(", "));
        }
        let mib = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.1} MiB"));
        s += &format!(
            "  node RSS: {} before, peak {}, {} after closing them",
            mib(self.rss_before_mib),
            mib(self.rss_peak_mib),
            mib(self.rss_after_close_mib)
        );
        if let Some(k) = self.kib_per_socket() {
            s += &format!(" (+{k:.1} KiB per socket)");
        }
        s + "\n"
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct FrontDoorSummary {
    pub documents: DocsSummary,
    pub sockets: Vec<SocketPhase>,
    /// Seconds until the node closed a socket whose frame header announced 1 MiB (`None`: it
    /// did not within the probe's wait); not probed when the socket part is skipped.
    pub oversized_frame_closed_after_secs: Option<Option<f64>>,
    /// `GET /livez` answered 200 after everything.
    pub node_up_at_end: bool,
    /// What failed beyond the documents' own failures.
    pub other_failures: Vec<String>,
}

impl FrontDoorSummary {
    pub fn ok(&self) -> bool {
        self.documents.failures_total == 0 && self.other_failures.is_empty() && self.node_up_at_end
    }

    pub fn text(&self) -> String {
        let d = &self.documents;
        let mut s = format!(
            "documents: {} sent one at a time over one keep-alive connection in {:.1}s ({} rounds, seed {})\n",
            d.sent, d.elapsed_secs, d.rounds, d.seed
        );
        s += &format!(
            "  {:<20} {:>6} {:>8}  {:<22} {:>8} {:>8} {:>8}\n",
            "kind", "count", "max KiB", "statuses", "p50 ms", "p99 ms", "max ms"
        );
        for k in &d.kinds {
            let statuses: Vec<String> = k.statuses.iter().map(|(st, n)| format!("{st}×{n}")).collect();
            s += &format!(
                "  {:<20} {:>6} {:>8.1}  {:<22} {:>8.2} {:>8.2} {:>8.2}\n",
                k.kind,
                k.latency_ms.count + k.statuses.get("none").copied().unwrap_or(0),
                k.bytes_max as f64 / 1024.0,
                statuses.join(" "),
                k.latency_ms.p50,
                k.latency_ms.p99,
                k.latency_ms.max
            );
        }
        let (r, a) = (&d.refusal_ms, &d.all_ms);
        s += &format!(
            "time to refuse (every 400/413, {} answers): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (goal: max < {GOAL_REFUSAL_MS} ms)\n",
            r.count, r.p50, r.p99, r.max
        );
        s += &format!(
            "time to answer (every answer, {}): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n",
            a.count, a.p50, a.p99, a.max
        );
        if let Some(w) = &d.slowest {
            s += &format!(
                "  slowest: {} (from {}), round {} #{}, {} bytes, HTTP {}, {:.2} ms\n",
                w.kind, w.origin, w.round, w.index, w.body_bytes, w.status, w.ms
            );
        }
        if let Some(w) = &d.worst_median {
            s += &format!(
                "  worst document by its median over {} rounds: {} #{}, {:.2} ms (its max {:.2} ms)\n",
                w.rounds, w.kind, w.index, w.median_ms, w.max_ms
            );
        }
        for p in &self.sockets {
            s += &p.text();
        }
        if let Some(stalled) = self.sockets.iter().find(|p| p.frame_announced.is_some())
            && let Some(peak) = stalled.rss_peak_mib
        {
            s += &format!(
                "node RSS peak with {} stalled sockets: {peak:.1} MiB (goal: < {GOAL_STALLED_RSS_MIB} MiB)\n",
                stalled.held_at_end
            );
        }
        match self.oversized_frame_closed_after_secs {
            Some(Some(secs)) => {
                s += &format!("a frame header announcing 1 MiB: the node closed the socket after {secs:.2}s\n")
            }
            Some(None) => s += "a frame header announcing 1 MiB: the node kept the socket open\n",
            None => {}
        }
        s += &format!(
            "node /livez at the end: {}\n",
            if self.node_up_at_end { "200" } else { "DOWN" }
        );
        if self.ok() {
            s += "verdict: OK (documents meant to be refused got 400/413, harmless ones 200, no 5xx, the node stayed up)\n";
        } else {
            s += &format!(
                "verdict: FAILED ({} document failures{})\n",
                d.failures_total,
                if self.node_up_at_end { "" } else { ", the node is down" }
            );
            for f in d.failures.iter().chain(&self.other_failures) {
                s += &format!("  {f}\n");
            }
        }
        s
    }
}
