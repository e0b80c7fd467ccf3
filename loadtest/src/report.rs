//! The summary: printed as text on stdout and, with `--json PATH`, written as JSON for machines.
//! One [`Phase`] per measured kind of operation (joins, leaves, heartbeats…), plus calibration,
//! CPU/RSS, the ledger verdict and scenario-specific facts.
//!
//! Builds text and JSON from numbers; measures nothing itself.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::calibrate::Calibration;
use crate::driver::Outcome;
use crate::percentiles::{Percentiles, percentiles_ms};
use crate::procstat::{ProcUsage, SigningSplit};
use crate::scenario::crowd::CrowdSummary;
use crate::scenario::failover::FailoverSummary;
use crate::scenario::front_door::summary::FrontDoorSummary;
use crate::scenario::media::summary::MediaSummary;
use crate::scenario::subscribers::SubscribersSummary;
use crate::verify::Verdict;

#[derive(Clone, Debug, Serialize)]
pub struct Phase {
    pub name: String,
    pub attempted: u64,
    pub ok: u64,
    /// Per second; `None` = open loop.
    pub offered_rate: Option<f64>,
    pub achieved_rate: f64,
    pub ok_per_sec: f64,
    pub elapsed_secs: f64,
    pub latency_ms: Percentiles,
    /// From the due time, so waiting for a free concurrency slot counts (fixed rate only).
    pub latency_from_due_ms: Option<Percentiles>,
    pub errors: BTreeMap<String, u64>,
}

impl Phase {
    pub fn from_outcome(name: &str, o: &Outcome) -> Self {
        Self {
            name: name.into(),
            attempted: o.ok + o.errors.values().sum::<u64>(),
            ok: o.ok,
            offered_rate: o.offered_rate,
            achieved_rate: o.achieved_rate(),
            ok_per_sec: o.ok_rate(),
            elapsed_secs: o.elapsed.as_secs_f64(),
            latency_ms: percentiles_ms(&o.latency),
            latency_from_due_ms: o.offered_rate.map(|_| percentiles_ms(&o.latency_from_due)),
            errors: o.errors.clone(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    pub targets: Vec<String>,
    pub phases: Vec<Phase>,
    pub calibration: Option<Calibration>,
    /// Admitted joins/s over the 2-thread signing rate (join-storm with `--calibrate`).
    pub signing_ratio: Option<f64>,
    /// The node's process, when this tool started it; with `--cluster N`, the sum over the nodes.
    pub server: Option<ProcUsage>,
    /// With `--cluster N`: each node's own, in node order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub server_per_node: Vec<ProcUsage>,
    /// The server's CPU during the load, signing tokens vs everything else (summed over nodes).
    pub server_signing: Option<SigningSplit>,
    /// This load generator's own process (it shares the machine).
    pub loadgen: Option<ProcUsage>,
    pub verdict: Option<Verdict>,
    /// `front-door`: refusal times, held sockets, and its own verdict.
    pub front_door: Option<FrontDoorSummary>,
    /// `subscribers`: delivery delay, lost frames, RSS per subscriber, join rates, its failures.
    pub subscribers: Option<SubscribersSummary>,
    /// `crowd`: refusals, stages, readiness, IVS calls, and its own verdict.
    pub crowd: Option<CrowdSummary>,
    /// `failover`: the kills, the stall after each, and its own verdict.
    pub failover: Option<FailoverSummary>,
    /// `media`: the SFU's CPU per forwarded stream, the fan-out ramp, join to first frame.
    pub media: Option<MediaSummary>,
    /// Scenario-specific numbers (restart times, connections held…).
    pub facts: BTreeMap<String, Value>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.verdict.as_ref().is_none_or(|v| v.ok)
            && self.front_door.as_ref().is_none_or(FrontDoorSummary::ok)
            && self.subscribers.as_ref().is_none_or(SubscribersSummary::ok)
            && self.crowd.as_ref().is_none_or(CrowdSummary::ok)
            && self.failover.as_ref().is_none_or(FailoverSummary::ok)
            && self.media.as_ref().is_none_or(MediaSummary::ok)
    }

    pub fn text(&self) -> String {
        let mut s = format!("== loadtest {}", self.scenario);
        if !self.targets.is_empty() {
            s += &format!(" against {}", self.targets.join(", "));
        }
        s += "\n";
        if let Some(c) = &self.calibration {
            s += &c.text();
        }
        for p in &self.phases {
            s += &phase_text(p);
        }
        if let Some(f) = &self.front_door {
            s += &f.text();
        }
        if let Some(sub) = &self.subscribers {
            s += &sub.text();
        }
        if let Some(c) = &self.crowd {
            s += &c.text();
        }
        if let Some(f) = &self.failover {
            s += &f.text();
        }
        if let Some(m) = &self.media {
            s += &m.text();
        }
        if let Some(r) = self.signing_ratio {
            s += &format!("admitted joins/s = {:.1}% of the 2-thread signing rate\n", 100.0 * r);
        }
        let server = match self.server_per_node.len() {
            0 | 1 => "server".to_string(),
            n => format!("server ({n} nodes summed)"),
        };
        let each = self
            .server_per_node
            .iter()
            .enumerate()
            .map(|(k, u)| (format!("  node {}", k + 1), Some(u)));
        let rows = [(server, self.server.as_ref())]
            .into_iter()
            .chain(each)
            .chain([("loadgen".to_string(), self.loadgen.as_ref())]);
        for (name, u) in rows {
            if let Some(u) = u {
                s += &format!(
                    "{name} during the load: CPU avg {:.0}% peak {:.0}% (100% = one core), RSS peak {:.1} MiB, last {:.1} MiB\n",
                    u.cpu_percent_avg, u.cpu_percent_peak, u.rss_peak_mib, u.rss_last_mib
                );
            }
        }
        if let Some(split) = &self.server_signing {
            s += &signing_text(split, self.phases.iter().map(|p| p.ok).sum());
        }
        for (k, v) in &self.facts {
            s += &format!("{k}: {v}\n");
        }
        match &self.verdict {
            Some(v) => s += &v.text(),
            // calibrate checks nothing; front-door, crowd and media printed their own verdicts above.
            None if self.scenario != "calibrate"
                && self.front_door.is_none()
                && self.crowd.is_none()
                && self.media.is_none() =>
            {
                s += "verdict: not checked\n"
            }
            None => {}
        }
        s
    }
}

/// The server's CPU split; per admitted request when the phases admitted any.
fn signing_text(split: &SigningSplit, ok: u64) -> String {
    let Some(ratio) = split.other_per_signing() else {
        return format!(
            "server CPU during the load: {:.1} s, none of it signing tokens\n",
            split.other_secs
        );
    };
    let per_ok = if ok > 0 {
        format!(
            "; per admitted request {:.0} µs signing + {:.0} µs the rest",
            split.signing_secs * 1e6 / ok as f64,
            split.other_secs * 1e6 / ok as f64
        )
    } else {
        String::new()
    };
    format!(
        "server CPU during the load: signing tokens {:.1} s, the rest {:.1} s: {ratio:.2} of the rest per unit of signing (compare builds by it: it holds still while the machine's speed drifts){per_ok}\n",
        split.signing_secs, split.other_secs
    )
}

fn phase_text(p: &Phase) -> String {
    let offered = p.offered_rate.map_or("open loop".to_string(), |r| format!("{r:.0}/s"));
    let l = &p.latency_ms;
    let mut s = format!(
        "{}: {} ok of {} in {:.2}s; offered {offered}, achieved {:.1}/s, ok {:.1}/s\n  latency ms p50 {:.2} p90 {:.2} p99 {:.2} p999 {:.2} max {:.2}\n",
        p.name, p.ok, p.attempted, p.elapsed_secs, p.achieved_rate, p.ok_per_sec, l.p50, l.p90, l.p99, l.p999, l.max
    );
    if let Some(d) = &p.latency_from_due_ms {
        s += &format!(
            "  from due time ms p50 {:.2} p90 {:.2} p99 {:.2} p999 {:.2} max {:.2}\n",
            d.p50, d.p90, d.p99, d.p999, d.max
        );
    }
    if p.errors.is_empty() {
        s += "  errors: none\n";
    } else {
        let e: Vec<String> = p.errors.iter().map(|(c, n)| format!("{c} {n}")).collect();
        s += &format!("  errors: {}\n", e.join(", "));
    }
    s
}
