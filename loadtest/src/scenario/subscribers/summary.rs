//! What the `subscribers` scenario reports, and how it prints it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::percentiles::Percentiles;
use crate::procstat::ProcUsage;

use super::*;

#[derive(Clone, Debug, Default, Serialize)]
pub struct SubscribersSummary {
    pub wanted: u64,
    pub attached: u64,
    pub attach_secs: f64,
    /// The first attach error of each code, as a sample of what it means.
    pub attach_error_examples: BTreeMap<String, String>,
    /// Attached subscribers that had not seen the node's stats as they were after the attach
    /// within `catch_up_secs` (also lost frames), and when all had.
    pub behind_after_attach: u64,
    pub settled_after_attach_secs: Option<f64>,
    /// The storm began once the stats had not changed for `quiet_ms`; waited this long for it.
    pub quiet_ms: u64,
    pub quiet_wait_secs: f64,
    /// When the storm with subscribers began (unix ms).
    pub storm_started_ms: i64,
    pub source_addresses: u64,
    pub first_source: Option<String>,
    pub last_source: Option<String>,
    pub files: FilesLimit,
    /// Stages added so every subscriber and storm join has a seat.
    pub extra_stages: u32,
    pub rss_before_mib: Option<f64>,
    pub rss_after_attach_mib: Option<f64>,
    pub rss_per_subscriber_kib: Option<f64>,
    /// The baseline node's RSS growth per plain join (a seat with no socket), for comparison.
    pub baseline_rss_per_join_kib: Option<f64>,
    pub node_websockets_after_attach: Option<u64>,
    pub node_subscriptions_after_attach: Option<u64>,
    /// Commit (`changedAtMs`) to receipt, for every change delivered during the storm and the
    /// catch-up after it.
    pub delay_ms: Percentiles,
    /// The same while the subscribers attached (their own joins change the stats).
    pub attach_delay_ms: Percentiles,
    /// Deliveries received before their `changedAtMs` by this machine's clock (recorded as 0).
    pub negative_delays: u64,
    /// Per update delivered to every subscriber during the storm: delay at the first receiver,
    /// and the time from the first receipt to the last.
    pub fanout: Option<FanoutSummary>,
    pub storm_stats_messages: u64,
    /// Messages during the storm that carried no new change, only rates.
    pub storm_rates_only_messages: u64,
    pub storm_messages_per_subscriber: Spread,
    pub stats_messages_total: u64,
    /// `/metrics` counters over the storm and catch-up.
    pub payloads: Option<u64>,
    pub frames: Option<u64>,
    pub final_viewers: Option<u64>,
    pub final_admitted_total: Option<u64>,
    pub final_value_moved: bool,
    pub catch_up_secs: f64,
    /// Attached subscribers that never saw the final stats within `catch_up_secs`.
    pub lost: u64,
    /// After the storm's last answer, when every subscriber had the final stats.
    pub caught_up_after_secs: Option<f64>,
    pub open_at_end: u64,
    pub closed_by_node: u64,
    pub assignments_ended: BTreeMap<String, u64>,
    pub operations_failed: BTreeMap<String, u64>,
    pub baseline_on: Option<String>,
    pub joins_per_sec_without: Option<f64>,
    pub joins_per_sec_with: f64,
    /// With over without.
    pub ratio: Option<f64>,
    pub baseline_server: Option<ProcUsage>,
    pub failures: Vec<String>,
}

impl SubscribersSummary {
    /// Fill in `failures` from the numbers.
    pub fn judged(mut self) -> Self {
        let mut f = Vec::new();
        if self.attached < self.wanted {
            f.push(format!(
                "{} of {} subscribers failed to attach",
                self.wanted - self.attached,
                self.wanted
            ));
        }
        if self.behind_after_attach > 0 {
            f.push(format!(
                "frames lost: after attaching, {} subscribers never saw the current stats within {} s",
                self.behind_after_attach, self.catch_up_secs
            ));
        }
        if self.lost > 0 {
            f.push(format!(
                "frames lost: {} subscribers never saw the final stats within {} s",
                self.lost, self.catch_up_secs
            ));
        }
        if self.attached > 0 && self.final_viewers.is_none() {
            f.push("the node's final stats could not be read: lost frames not checked".into());
        }
        if self.closed_by_node > 0 {
            f.push(format!(
                "the node closed {} attached subscribers' sockets",
                self.closed_by_node
            ));
        }
        let ended: u64 = self.assignments_ended.values().sum();
        if ended > 0 {
            f.push(format!(
                "{ended} assignments ended while attached: {:?}",
                self.assignments_ended
            ));
        }
        let failed: u64 = self.operations_failed.values().sum();
        if failed > 0 {
            f.push(format!(
                "{failed} subscriptions failed while attached: {:?}",
                self.operations_failed
            ));
        }
        self.failures = f;
        self
    }

    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    pub fn text(&self) -> String {
        let opt = |v: Option<f64>, unit: &str| v.map_or("n/a".to_string(), |v| format!("{v:.1}{unit}"));
        let cnt = |v: Option<u64>| v.map_or("n/a".to_string(), |v| v.to_string());
        let mut s = format!(
            "subscribers: {} attached of {} in {:.1}s, from {} source address(es) {}..{}\n  {}\n",
            self.attached,
            self.wanted,
            self.attach_secs,
            self.source_addresses,
            self.first_source.as_deref().unwrap_or("-"),
            self.last_source.as_deref().unwrap_or("-"),
            self.files.text()
        );
        for (code, e) in &self.attach_error_examples {
            s += &format!("  attach error {code}, e.g.: {e}\n");
        }
        s += &format!(
            "  all had the stats as of the end of the attach {}; {} did not within {} s\n",
            self.settled_after_attach_secs
                .map_or("-".to_string(), |t| format!("{t:.2} s after it")),
            self.behind_after_attach,
            self.catch_up_secs
        );
        if self.quiet_ms > 0 {
            s += &format!(
                "  the storm began once no stats message had come for {} ms and the join rate was 0 (waited {:.2} s for it)\n",
                self.quiet_ms, self.quiet_wait_secs
            );
        }
        s += &format!(
            "  node RSS {} before attaching, {} after: {} per subscriber (a plain join on the baseline node: {})\n",
            opt(self.rss_before_mib, " MiB"),
            opt(self.rss_after_attach_mib, " MiB"),
            opt(self.rss_per_subscriber_kib, " KiB"),
            opt(self.baseline_rss_per_join_kib, " KiB"),
        );
        s += &format!(
            "  node after attaching: {} WebSockets, {} subscriptions open; {} stage(s) added for seats\n",
            cnt(self.node_websockets_after_attach),
            cnt(self.node_subscriptions_after_attach),
            self.extra_stages
        );
        let d = &self.delay_ms;
        s += &format!(
            "stats delivery during the storm, commit (changedAtMs) -> receipt: p50 {:.1} ms p90 {:.1} p99 {:.1} max {:.1} over {} deliveries ({} before their changedAtMs)\n",
            d.p50, d.p90, d.p99, d.max, d.count, self.negative_delays
        );
        if let Some(f) = &self.fanout {
            s += &format!(
                "  per update ({} reached every subscriber): first receiver after p50 {:.1} ms (max {:.1}, the update committed {:.1} s into the storm); first to last receipt p50 {:.1} ms (max {:.1})\n",
                f.updates,
                f.first_receiver_p50_ms,
                f.first_receiver_max_ms,
                (f.slowest_first_changed_at_ms - self.storm_started_ms) as f64 / 1000.0,
                f.fanout_p50_ms,
                f.fanout_max_ms
            );
        }
        let a = &self.attach_delay_ms;
        s += &format!(
            "  while attaching: p50 {:.1} ms p99 {:.1} max {:.1} over {} deliveries\n",
            a.p50, a.p99, a.max, a.count
        );
        let m = &self.storm_messages_per_subscriber;
        s += &format!(
            "  stats messages per subscriber during the storm: mean {:.1} (min {}, max {}); {} in all, {} with only the rates changed; {} over the whole run\n",
            m.mean, m.min, m.max, self.storm_stats_messages, self.storm_rates_only_messages, self.stats_messages_total
        );
        let per = match (self.payloads, self.frames) {
            (Some(p), Some(f)) if p > 0 => format!(" ({:.1} frames per payload)", f as f64 / p as f64),
            _ => String::new(),
        };
        s += &format!(
            "  node payloads serialized {} vs frames sent {} during the storm{per}\n",
            cnt(self.payloads),
            cnt(self.frames)
        );
        s += &format!(
            "frames lost: {} of {} subscribers did not see the final stats (viewers {}, admittedTotal {}) within {} s{}{}\n",
            self.lost,
            self.attached,
            cnt(self.final_viewers),
            cnt(self.final_admitted_total),
            self.catch_up_secs,
            self.caught_up_after_secs
                .map_or(String::new(), |t| format!("; all had them {t:.2} s after the storm")),
            if self.final_value_moved {
                "; the node's value moved during the check"
            } else {
                ""
            },
        );
        s += &format!(
            "join storm: {} admitted joins/s without subscribers, {:.1}/s with {} attached: ratio {}\n",
            opt(self.joins_per_sec_without, ""),
            self.joins_per_sec_with,
            self.attached,
            self.ratio.map_or("n/a".to_string(), |r| format!("{r:.2}")),
        );
        if let Some(on) = &self.baseline_on {
            s += &format!("  the storm without subscribers ran on {on}\n");
        }
        if let Some(u) = &self.baseline_server {
            s += &format!(
                "  server during the storm without subscribers: CPU avg {:.0}% peak {:.0}%, RSS peak {:.1} MiB\n",
                u.cpu_percent_avg, u.cpu_percent_peak, u.rss_peak_mib
            );
        }
        s += &format!(
            "  subscribers open at the end {}; closed by the node {}; assignments ended {:?}; subscriptions failed {:?}\n",
            self.open_at_end, self.closed_by_node, self.assignments_ended, self.operations_failed
        );
        if self.ok() {
            s += "subscribers verdict: OK (all attached, no frame lost, none closed)\n";
        } else {
            s += "subscribers verdict: FAILED\n";
            for f in &self.failures {
                s += &format!("  {f}\n");
            }
        }
        s
    }
}
