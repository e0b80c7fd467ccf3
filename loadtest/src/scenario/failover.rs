//! `failover`: a join storm across a cluster this tool started (`--cluster 3` or more) while the
//! current leader is SIGKILLed `--kills` times, evenly spread over the storm. After each kill:
//! the **stall**, from the SIGKILL to the first join sent after it that the cluster
//! acknowledges (writes wait while the survivors elect a leader); then the killed node is
//! started again with its own flags, addresses and data dir, and must answer `/readyz` 200
//! before the next kill.
//!
//! Requests take turns over the running nodes (the killed one is left out until it is ready
//! again). A join that fails in flight (no answer, or `UNAVAILABLE`) is retried with the same
//! user id: the node answers a second join of a user with the same session, so a join that was
//! in fact committed is not seated twice. At the end the ledger is checked against the cluster
//! (every node caught up first): every acknowledged join present once, none lost.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;
use tokio::sync::watch;

use crate::api::Api;
use crate::cli::FailoverArgs;
use crate::driver::{Load, drive_in_background};
use crate::error::ApiError;
use crate::ledger::Ledger;
use crate::report::{Phase, Report};
use crate::setup::Setup;
use crate::target::wait_ready;

/// A join failing in flight is retried for this long after its first attempt.
const RETRY_FOR: Duration = Duration::from_secs(60);
/// Pause between attempts of one join (most retries are answered by another node at once).
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// How long to look for the leader before a kill, and for the new one after it.
const LEADER_WITHIN: Duration = Duration::from_secs(30);
/// A kill after which no join is acknowledged within this counts as a stall not measured.
const STALL_WITHIN: Duration = Duration::from_secs(60);

/// The kill being watched: when the SIGKILL went out, and when the first join sent after it
/// was acknowledged.
#[derive(Clone, Copy, Debug, Default)]
struct KillWatch {
    killed: Option<Instant>,
    resumed: Option<Instant>,
}

struct Storm {
    api: Api,
    broadcast: String,
    prefix: String,
    ledger: Mutex<Ledger>,
    /// Acknowledged joins so far; the killer waits on it to spread kills over the storm.
    acked: watch::Sender<u64>,
    retries: Mutex<BTreeMap<String, u64>>,
    kill: watch::Sender<KillWatch>,
}

impl Storm {
    async fn join(&self, i: u64) -> Result<(), ApiError> {
        let user = super::user_id(&self.prefix, i);
        let first = Instant::now();
        loop {
            let sent = Instant::now();
            match self.api.join(&self.broadcast, &user).await {
                Ok(join) => {
                    let at = Instant::now();
                    self.ledger.lock().expect("ledger").record(&join);
                    // Every join is a write; a rejoin is left out all the same, so a stall is
                    // never ended by an answer that might have come from a node's own copy.
                    if !join.rejoined {
                        self.note_ack(sent, at);
                    }
                    self.acked.send_modify(|n| *n += 1);
                    return Ok(());
                }
                Err(e) if e.is_retryable() && first.elapsed() < RETRY_FOR => {
                    *self.retries.lock().expect("retries").entry(e.code()).or_default() += 1;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A join sent at `sent` was acknowledged at `at`: the first such after the watched kill
    /// ends its stall.
    fn note_ack(&self, sent: Instant, at: Instant) {
        self.kill.send_if_modified(|w| match w.killed {
            Some(k) if sent >= k && w.resumed.is_none() => {
                w.resumed = Some(at);
                true
            }
            _ => false,
        });
    }

    /// Watch the kill sent at `killed`.
    fn arm(&self, killed: Instant) {
        self.kill.send_replace(KillWatch {
            killed: Some(killed),
            resumed: None,
        });
    }
}

/// One kill of the leader and what followed.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct KillRecord {
    /// Acknowledged joins when the kill was due.
    pub after_joins: u64,
    /// When the SIGKILL went out (Unix ms, UTC), to find it in the nodes' logs.
    pub killed_at_unix_ms: u64,
    /// `--node-id` of the node killed (the leader then).
    pub node: u64,
    /// Its Raft term as leader.
    pub term: u64,
    /// SIGKILL to the first acknowledged join sent after it; `None`: none within 60 s or
    /// before the storm ended.
    pub stall_secs: Option<f64>,
    /// The leader after the stall, and its term.
    pub new_leader: Option<u64>,
    pub new_term: Option<u64>,
    /// The killed node's restart (same flags) to its `/readyz` 200.
    pub restart_to_ready_secs: f64,
    /// Whom the restarted node named as leader, and in which term, at that first 200.
    pub leader_named_when_ready: Option<u64>,
    pub term_when_ready: Option<u64>,
    /// The restart to the moment every running node, the restarted one too, names the same
    /// leader; only then does load go to it again and the next kill follow.
    pub restart_to_agreement_secs: f64,
}

/// Median and max of the stalls, against the goal.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct StallSummary {
    pub measured: usize,
    /// Kills after which no join was acknowledged in time (or the storm had ended).
    pub unmeasured: usize,
    pub median_secs: Option<f64>,
    pub max_secs: Option<f64>,
    pub goal_secs: f64,
    /// Every kill's stall measured and below the goal.
    pub goal_met: bool,
}

impl StallSummary {
    pub fn of(stalls: &[Option<f64>], goal_secs: f64) -> Self {
        let mut measured: Vec<f64> = stalls.iter().flatten().copied().collect();
        measured.sort_by(f64::total_cmp);
        let unmeasured = stalls.len() - measured.len();
        let max_secs = measured.last().copied();
        Self {
            measured: measured.len(),
            unmeasured,
            median_secs: median(&measured),
            max_secs,
            goal_secs,
            goal_met: unmeasured == 0 && max_secs.is_some_and(|m| m < goal_secs),
        }
    }
}

/// Median of sorted values (the mean of the two middle ones for an even count).
pub fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// `HH:MM:SS.mmmZ` of a Unix time in ms, as the nodes' logs print it.
pub fn utc_time_of_day(unix_ms: u64) -> String {
    let ms_of_day = unix_ms % 86_400_000;
    let (h, m, s, ms) = (
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000,
    );
    format!("{h:02}:{m:02}:{s:02}.{ms:03}Z")
}

/// Acknowledged joins at which each kill is due: `kills` marks evenly spread over `viewers`,
/// none at the very start or end.
pub fn kill_marks(viewers: u64, kills: u32) -> Vec<u64> {
    let k = u64::from(kills);
    (1..=k)
        .map(|i| (u128::from(viewers) * u128::from(i) / u128::from(k + 1)) as u64)
        .collect()
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct FailoverSummary {
    pub nodes: u32,
    pub kills_planned: u32,
    pub kills: Vec<KillRecord>,
    pub stall: StallSummary,
    pub joins_offered: u64,
    pub joins_admitted: u64,
    /// Joins that failed for good (a refusal, or still failing after 60 s of retries).
    pub joins_not_admitted: u64,
    pub admitted_per_sec: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    /// Attempts that failed in flight and were retried, by error code.
    pub retries_by_code: BTreeMap<String, u64>,
    /// Acknowledged joins the cluster no longer knows; `None` with `--no-verify`.
    pub lost: Option<usize>,
}

impl FailoverSummary {
    /// Every planned kill done with its stall measured, every join admitted, none lost. The
    /// stall goal is judged in the text, not here.
    pub fn ok(&self) -> bool {
        self.problems().is_empty()
    }

    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if (self.kills.len() as u32) < self.kills_planned {
            p.push(format!(
                "{} of {} kills done (the storm ended first)",
                self.kills.len(),
                self.kills_planned
            ));
        }
        if self.stall.unmeasured > 0 {
            p.push(format!(
                "{} kill(s) with no join acknowledged after them",
                self.stall.unmeasured
            ));
        }
        if self.joins_not_admitted > 0 {
            p.push(format!("{} join(s) not admitted", self.joins_not_admitted));
        }
        if let Some(lost) = self.lost
            && lost > 0
        {
            p.push(format!("{lost} acknowledged join(s) lost"));
        }
        p
    }

    pub fn text(&self) -> String {
        let secs = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{s:.3} s"));
        let mut s = format!(
            "failover: {} nodes; the leader SIGKILLed {} time(s) of {} planned, each restarted and ready before the next kill\n",
            self.nodes,
            self.kills.len(),
            self.kills_planned
        );
        for (i, k) in self.kills.iter().enumerate() {
            let next = match (k.new_leader, k.new_term) {
                (Some(l), Some(t)) => format!("node {l} leads (term {t})"),
                _ => "no leader found".to_string(),
            };
            let named = match (k.leader_named_when_ready, k.term_when_ready) {
                (Some(l), Some(t)) => format!("naming node {l}, term {t}"),
                (None, Some(t)) => format!("naming no leader, term {t}"),
                _ => "not asked".to_string(),
            };
            s += &format!(
                "  kill {} at {} after {} joins: node {} (leader, term {}); stall {}; {next}; node {} restarted: /readyz 200 after {:.2} s ({named}), all agree on the leader after {:.2} s\n",
                i + 1,
                utc_time_of_day(k.killed_at_unix_ms),
                k.after_joins,
                k.node,
                k.term,
                secs(k.stall_secs),
                k.node,
                k.restart_to_ready_secs,
                k.restart_to_agreement_secs
            );
        }
        let st = &self.stall;
        s += &format!(
            "stall (SIGKILL -> first join sent after it acknowledged): median {}, max {} over {} kill(s){}\n",
            secs(st.median_secs),
            secs(st.max_secs),
            st.measured,
            if st.unmeasured > 0 {
                format!(", {} not measured", st.unmeasured)
            } else {
                String::new()
            }
        );
        let retries: Vec<String> = self.retries_by_code.iter().map(|(c, n)| format!("{c} {n}")).collect();
        s += &format!(
            "joins: {} admitted of {} ({} not), {:.1} admitted/s; latency ms p50 {:.2} p99 {:.2} max {:.2} (retries included); retried in flight: {}\n",
            self.joins_admitted,
            self.joins_offered,
            self.joins_not_admitted,
            self.admitted_per_sec,
            self.latency_p50_ms,
            self.latency_p99_ms,
            self.latency_max_ms,
            if retries.is_empty() {
                "none".to_string()
            } else {
                retries.join(", ")
            }
        );
        s += &match self.lost {
            Some(n) => format!("lost: {n} (ledger check against the cluster, every node caught up)\n"),
            None => "lost: not checked (--no-verify)\n".to_string(),
        };
        s += &format!(
            "goal max stall < {} s: {} (max {})\n",
            st.goal_secs,
            if st.goal_met { "MET" } else { "MISSED" },
            secs(st.max_secs)
        );
        let problems = self.problems();
        if problems.is_empty() {
            s += "failover verdict: OK (every kill done, every join admitted, none lost)\n";
        } else {
            s += &format!("failover verdict: FAILED ({})\n", problems.join("; "));
        }
        s
    }
}

pub async fn run(args: &FailoverArgs) -> anyhow::Result<Report> {
    let nodes = args.common.node.cluster;
    anyhow::ensure!(
        nodes >= 3,
        "failover needs --cluster 3 or more (and --server-bin): two of three nodes must survive a kill"
    );
    let mut setup = Setup::new(&args.common, true).await?;
    let added = super::subscribers::ensure_seats(&setup, args.viewers).await?;
    if added > 0 {
        eprintln!(
            "added {added} stage(s) so that every one of the {} viewers has a seat",
            args.viewers
        );
    }
    // Before the cluster is taken out of the setup: the sampler follows its nodes' PIDs.
    setup.load_begins();
    let mut cluster = setup.cluster.take().context("failover starts its own cluster")?;
    let http = setup.api.http().clone();
    let storm = Arc::new(Storm {
        api: setup.api.clone(),
        broadcast: setup.broadcast.clone(),
        prefix: args.common.user_prefix.clone(),
        ledger: Mutex::new(Ledger::default()),
        acked: watch::Sender::new(0),
        retries: Mutex::new(BTreeMap::new()),
        kill: watch::Sender::new(KillWatch::default()),
    });
    let load = Load {
        total: args.viewers,
        rate: args.rate,
        concurrency: args.common.concurrency,
        label: "failover".into(),
    };
    let s = storm.clone();
    let (storm_task, mut done) = drive_in_background(load, move |i| {
        let s = s.clone();
        async move { s.join(i).await }
    });

    let mut kills = Vec::new();
    let mut acked = storm.acked.subscribe();
    let ready_within = Duration::from_secs_f64(args.ready_timeout_secs);
    for at in kill_marks(args.viewers, args.kills) {
        // Biased: a storm that reached the mark and ended meanwhile still gets its kill.
        tokio::select! {
            biased;
            _ = acked.wait_for(|n| *n >= at) => {}
            _ = done.wait_for(|d| *d) => break,
        }
        let (victim, before) = cluster.leader(&http, LEADER_WITHIN).await?;
        storm.api.targets.set_down(victim, true);
        let killed = Instant::now();
        let killed_at_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
        storm.arm(killed);
        cluster.nodes[victim].kill().await?;

        let mut watching = storm.kill.subscribe();
        let _ = tokio::time::timeout(STALL_WITHIN, async {
            tokio::select! {
                biased;
                _ = watching.wait_for(|w| w.resumed.is_some()) => {}
                _ = done.wait_for(|d| *d) => {}
            }
        })
        .await;
        let stall_secs = storm
            .kill
            .borrow()
            .resumed
            .map(|r| r.duration_since(killed).as_secs_f64());
        let after = cluster.leader(&http, LEADER_WITHIN).await.ok();

        let restarted = Instant::now();
        cluster.nodes[victim].restart().await?;
        wait_ready(&http, &cluster.nodes[victim].banner.base_url, ready_within).await?;
        let ready_secs = restarted.elapsed().as_secs_f64();
        let when_ready = cluster.status(&http, victim).await.ok();
        // A restarted leader may call itself leader of its old term until it hears of the new
        // one: load goes to it, and the next kill is aimed, only once all agree.
        cluster
            .leader(&http, ready_within)
            .await
            .context("after a restart, the nodes did not agree on a leader")?;
        storm.api.targets.set_down(victim, false);
        kills.push(KillRecord {
            after_joins: at,
            killed_at_unix_ms,
            node: victim as u64 + 1,
            term: before.term,
            stall_secs,
            new_leader: after.as_ref().map(|(_, s)| s.node_id),
            new_term: after.as_ref().map(|(_, s)| s.term),
            restart_to_ready_secs: ready_secs,
            leader_named_when_ready: when_ready.as_ref().and_then(|s| s.leader_id),
            term_when_ready: when_ready.as_ref().map(|s| s.term),
            restart_to_agreement_secs: restarted.elapsed().as_secs_f64(),
        });
    }
    let outcome = storm_task.await?;
    setup.load_ends();
    setup.cluster = Some(cluster);

    let mut report = setup.report("failover");
    let phase = Phase::from_outcome("joins (with retries)", &outcome);
    let ledger = std::mem::take(&mut *storm.ledger.lock().expect("ledger"));
    report.verdict = setup.verify(&ledger).await?;
    let stalls: Vec<Option<f64>> = kills.iter().map(|k| k.stall_secs).collect();
    report.failover = Some(FailoverSummary {
        nodes,
        kills_planned: args.kills,
        stall: StallSummary::of(&stalls, args.stall_goal_secs),
        kills,
        joins_offered: args.viewers,
        joins_admitted: outcome.ok,
        joins_not_admitted: outcome.errors.values().sum(),
        admitted_per_sec: phase.ok_per_sec,
        latency_p50_ms: phase.latency_ms.p50,
        latency_p99_ms: phase.latency_ms.p99,
        latency_max_ms: phase.latency_ms.max,
        retries_by_code: storm.retries.lock().expect("retries").clone(),
        lost: report.verdict.as_ref().map(|v| v.lost_joins),
    });
    report.phases.push(phase);
    setup.finish(&mut report).await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kills_are_spread_evenly_and_never_at_the_ends() {
        assert_eq!(kill_marks(20_000, 5), [3333, 6666, 10_000, 13_333, 16_666]);
        assert_eq!(kill_marks(10, 1), [5]);
        assert!(kill_marks(1000, 0).is_empty());
        let marks = kill_marks(u64::MAX, 3);
        assert!(marks.windows(2).all(|w| w[0] < w[1]) && *marks.last().unwrap() < u64::MAX);
    }

    #[test]
    fn kill_times_read_as_the_logs_print_them() {
        // 2026-12-02T07:17:04.270Z
        assert_eq!(utc_time_of_day(1_796_195_824_270), "07:17:04.270Z");
        assert_eq!(utc_time_of_day(0), "00:00:00.000Z");
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[2.0]), Some(2.0));
        assert_eq!(median(&[1.0, 2.0, 9.0]), Some(2.0));
        assert_eq!(median(&[1.0, 2.0, 4.0, 9.0]), Some(3.0));
    }

    #[test]
    fn the_stall_summary_judges_the_max_and_counts_an_unmeasured_kill_as_missed() {
        let s = StallSummary::of(&[Some(1.2), Some(0.9), Some(2.5), Some(1.0), Some(1.1)], 3.0);
        assert_eq!((s.measured, s.unmeasured), (5, 0));
        assert_eq!(s.median_secs, Some(1.1));
        assert_eq!(s.max_secs, Some(2.5));
        assert!(s.goal_met);
        assert!(
            !StallSummary::of(&[Some(1.0), Some(3.0)], 3.0).goal_met,
            "3 s is not below 3 s"
        );
        let gap = StallSummary::of(&[Some(1.0), None], 3.0);
        assert_eq!((gap.measured, gap.unmeasured, gap.max_secs), (1, 1, Some(1.0)));
        assert!(!gap.goal_met);
        assert!(!StallSummary::of(&[], 3.0).goal_met, "no kill, nothing shown");
    }

    fn summary() -> FailoverSummary {
        let kill = |node, stall| KillRecord {
            after_joins: 100,
            killed_at_unix_ms: 0,
            node,
            term: 1,
            stall_secs: stall,
            new_leader: Some(2),
            new_term: Some(2),
            restart_to_ready_secs: 0.8,
            leader_named_when_ready: Some(2),
            term_when_ready: Some(2),
            restart_to_agreement_secs: 0.9,
        };
        let kills = vec![kill(1, Some(1.1)), kill(2, Some(0.7))];
        FailoverSummary {
            nodes: 3,
            kills_planned: 2,
            stall: StallSummary::of(&[Some(1.1), Some(0.7)], 3.0),
            kills,
            joins_offered: 1000,
            joins_admitted: 1000,
            lost: Some(0),
            ..FailoverSummary::default()
        }
    }

    #[test]
    fn a_clean_run_is_ok_and_says_so() {
        let s = summary();
        assert!(s.ok());
        let text = s.text();
        assert!(text.contains("median 0.900 s, max 1.100 s over 2 kill(s)"), "{text}");
        assert!(text.contains("goal max stall < 3 s: MET"), "{text}");
        assert!(text.contains("failover verdict: OK"), "{text}");
    }

    #[test]
    fn a_lost_join_a_missing_kill_or_a_failed_join_fails_the_run_a_slow_stall_only_the_goal() {
        let lost = FailoverSummary {
            lost: Some(1),
            ..summary()
        };
        assert!(!lost.ok() && lost.text().contains("1 acknowledged join(s) lost"));
        let short = FailoverSummary {
            kills_planned: 3,
            ..summary()
        };
        assert!(!short.ok() && short.text().contains("2 of 3 kills done"));
        let failed = FailoverSummary {
            joins_not_admitted: 4,
            ..summary()
        };
        assert!(!failed.ok());
        let slow = FailoverSummary {
            stall: StallSummary::of(&[Some(4.0), Some(0.7)], 3.0),
            ..summary()
        };
        assert!(slow.ok(), "the goal is reported, not an error");
        assert!(slow.text().contains("goal max stall < 3 s: MISSED (max 4.000 s)"));
        let unchecked = FailoverSummary {
            lost: None,
            ..summary()
        };
        assert!(unchecked.ok() && unchecked.text().contains("lost: not checked"));
    }

    #[test]
    fn only_a_join_sent_after_the_kill_ends_its_stall() {
        let targets = Arc::new(crate::target::Targets::new(&["http://127.0.0.1:9".to_string()]).unwrap());
        let storm = Storm {
            api: Api::new(targets, 1, None, None).unwrap(),
            broadcast: "b".into(),
            prefix: "lt".into(),
            ledger: Mutex::new(Ledger::default()),
            acked: watch::Sender::new(0),
            retries: Mutex::new(BTreeMap::new()),
            kill: watch::Sender::new(KillWatch::default()),
        };
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        storm.note_ack(at(0), at(5));
        assert!(storm.kill.borrow().resumed.is_none(), "nothing armed yet");
        storm.arm(at(10));
        storm.note_ack(at(9), at(400)); // sent before the kill, answered after it
        assert!(storm.kill.borrow().resumed.is_none());
        storm.note_ack(at(11), at(900));
        storm.note_ack(at(12), at(950));
        assert_eq!(storm.kill.borrow().resumed, Some(at(900)), "the first one counts");
        storm.arm(at(2000));
        assert!(storm.kill.borrow().resumed.is_none(), "a new kill, a new stall");
    }
}
