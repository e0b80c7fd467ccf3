//! `crowd`: a steady crowd against one autoscaling node this tool starts, with small stages and
//! emulator latencies like AWS's, while a host publishes on every origin as the broadcaster page
//! does — so a replica takes viewers only once the host's media is replicated into it, and the
//! scaler has to stay ahead of the crowd.
//!
//! 1. The broadcast starts and the host publishes on its origin; every 500 ms it also publishes
//!    on any new origin (the fleet adds origins as it grows, and their replicas wait for it).
//! 2. With `--wait-headroom`, the crowd waits for `--headroom-floor` free seats on READY stages.
//! 3. `--rate` new viewers per second join for `--seconds`; every 250 ms the stages are sampled:
//!    the first READY replica, the fewest free ready seats, the most stages.
//! 4. At the end, a stage over capacity or a viewer on a replica the host's media does not reach
//!    fails the run; refusals are reported (judged only with `--max-refused-pct`), with IVS calls
//!    per 1,000 admitted viewers from `/metrics`.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::api::{Api, FleetStage};
use crate::cli::{CrowdArgs, NodeArgs};
use crate::driver::{Load, drive};
use crate::report::{Phase, Report};
use crate::setup::Setup;

const HOST_USER: &str = "host";
const VIEWER_PREFIX: &str = "viewer";
/// How often the host looks for new origins, as the broadcaster page polls for them.
const HOST_POLL: Duration = Duration::from_millis(500);
const STAGES_POLL: Duration = Duration::from_millis(250);
const HEADROOM_POLL: Duration = Duration::from_millis(100);
const HEADROOM_WITHIN: Duration = Duration::from_secs(60);
/// How often the node's scaler plans, in ms (its default is 1 s), as BENCHMARKS.md measured it.
const SCALER_INTERVAL_MS: u64 = 250;

pub async fn run(args: &CrowdArgs) -> anyhow::Result<Report> {
    args.node.single_node_only("crowd")?;
    anyhow::ensure!(
        args.node.targets.is_empty(),
        "crowd starts its own node (--server-bin) with the flags it needs; it takes no --target"
    );
    anyhow::ensure!(args.rate > 0.0, "--rate must be above 0");
    let mut setup = Setup::new(&setup_flags(args), true).await?;
    let emulator = setup
        .node
        .as_ref()
        .and_then(|n| n.banner.emulator_url.clone())
        .context("the node's banner names no built-in IVS emulator, which crowd needs (drop any --server-arg choosing another IVS)")?;
    let api = setup.api.clone();
    if args.throttle_rate > 0.0 {
        // The emulator replaces all its faults at once: the latencies go along with the rate.
        let faults = json!({
            "throttleRate": args.throttle_rate,
            "createStageMs": args.create_stage_ms,
            "replicationActiveMs": args.replication_ms,
        });
        emulator_post(api.http(), &emulator, "/_emulator/faults", &faults).await?;
    }
    let broadcast = setup.broadcast.clone();
    api.start_broadcast(&broadcast, "crowd")
        .await
        .with_context(|| format!("startBroadcast {broadcast}"))?;
    let mut host = Host {
        api: api.clone(),
        emulator,
        broadcast: broadcast.clone(),
        published: HashSet::new(),
        failures: 0,
        last_failure: None,
    };
    host.publish_on_new_origins()
        .await
        .context("the host could not publish on the origin")?;
    let (stop, stopped) = watch::channel(false);
    let host = tokio::spawn(host.follow(Ticker::new(HOST_POLL, stopped.clone())));
    let mut warm_after = None;
    if args.wait_headroom {
        let took = wait_headroom(&api, &broadcast, args.headroom_floor).await?;
        eprintln!(
            "crowd: {} free ready seats {:.2} s after the host published; the crowd starts",
            args.headroom_floor,
            took.as_secs_f64()
        );
        warm_after = Some(took.as_secs_f64());
    }

    let load = Load {
        total: (args.rate * args.seconds as f64).round() as u64,
        rate: Some(args.rate),
        concurrency: args.concurrency,
        label: "crowd".into(),
    };
    let sampler = tokio::spawn(sample_stages(
        api.clone(),
        broadcast.clone(),
        Instant::now(),
        Ticker::new(STAGES_POLL, stopped),
    ));
    setup.load_begins();
    let (a, b) = (api.clone(), broadcast.clone());
    let outcome = drive(&load, move |i| {
        let (api, broadcast) = (a.clone(), b.clone());
        let user = super::user_id(VIEWER_PREFIX, i);
        async move { api.join(&broadcast, &user).await.map(drop) }
    })
    .await;
    setup.load_ends();
    stop.send_replace(true);
    let sampled = sampler.await?;
    let host = host.await?;

    let stages = api.fleet_stages(&broadcast).await.context("stages after the crowd")?;
    let ivs_by_op = api.metrics().await.map(|m| ivs_calls(&m));
    let ivs_calls = ivs_by_op.as_ref().map(|by_op| by_op.values().sum::<u64>());
    let refused: u64 = outcome.errors.values().sum();
    let summary = CrowdSummary {
        rate_per_sec: args.rate,
        seconds: args.seconds,
        seats_per_stage: args.seats,
        headroom_floor: args.headroom_floor,
        throttle_rate: args.throttle_rate,
        warm_after_secs: warm_after,
        joins: load.total,
        admitted: outcome.ok,
        refused,
        refused_pct: 100.0 * refused as f64 / load.total.max(1) as f64,
        refused_by_code: outcome.errors.clone(),
        max_refused_pct: args.max_refused_pct,
        sampled,
        at_end: AtEnd::of(&stages),
        host_origins_published: host.published.len(),
        host_failures: host.failures,
        host_last_failure: host.last_failure,
        ivs_calls,
        ivs_calls_by_op: ivs_by_op.unwrap_or_default(),
        ivs_calls_per_1000_admitted: ivs_calls.map(|c| 1000.0 * c as f64 / outcome.ok.max(1) as f64),
        failures: Vec::new(),
    }
    .judged();
    let mut report = setup.report("crowd");
    report.phases.push(Phase::from_outcome("joins", &outcome));
    report.crowd = Some(summary);
    setup.finish(&mut report).await?;
    Ok(report)
}

/// What the shared setup needs: a node with the crowd's flags and no ledger check. The broadcast
/// is named here but started by [`run`], so the setup leaves it live in the stopped node's data
/// dir rather than ending it (and deleting its stages) before the node stops.
fn setup_flags(args: &CrowdArgs) -> crate::cli::Common {
    crate::cli::Common {
        node: NodeArgs {
            server_args: server_args(args),
            ..args.node.clone()
        },
        broadcast_id: Some(args.broadcast_id.clone()),
        extra_stages: 0,
        exclusive: true,
        admin_key: None,
        viewer_key: None,
        concurrency: args.concurrency,
        user_prefix: VIEWER_PREFIX.into(),
        public_keys: Vec::new(),
        emulator_url: None,
        no_verify: true,
        json: None,
    }
}

/// The node's flags for the crowd, then the user's `--server-arg`s. `--join-rate-per-ip 0` is
/// not among them: every node this tool starts gets it, and the node refuses a flag given twice.
pub fn server_args(args: &CrowdArgs) -> Vec<String> {
    [
        ("autoscale", "true".to_string()),
        ("seats-per-stage", args.seats.to_string()),
        ("scaler-interval-ms", SCALER_INTERVAL_MS.to_string()),
        ("headroom-floor", args.headroom_floor.to_string()),
        ("emulator-create-stage-ms", args.create_stage_ms.to_string()),
        ("emulator-replication-active-ms", args.replication_ms.to_string()),
        ("region-subscription-quota", args.region_subscription_quota.to_string()),
    ]
    .into_iter()
    .map(|(flag, value)| format!("--{flag}={value}"))
    .chain(args.node.server_args.iter().cloned())
    .collect()
}

/// POST `body` to the node's IVS emulator; a refusal is an error carrying its answer.
async fn emulator_post(http: &reqwest::Client, emulator: &str, path: &str, body: &Value) -> anyhow::Result<()> {
    let url = format!("{emulator}{path}");
    let r = http
        .post(&url)
        .json(body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = r.status();
    if !status.is_success() {
        bail!("POST {url}: {status} {}", r.text().await.unwrap_or_default());
    }
    Ok(())
}

/// The host, publishing on every origin of the broadcast.
struct Host {
    api: Api,
    emulator: String,
    broadcast: String,
    /// Its participant ids, one per origin, that publish.
    published: HashSet<String>,
    failures: u64,
    last_failure: Option<String>,
}

impl Host {
    /// On each origin not yet published on, the host's token joins the emulator's stage as a
    /// publisher and the node hears of it (`hostPublishing`), which replicates it into the
    /// origin's replicas.
    async fn publish_on_new_origins(&mut self) -> anyhow::Result<()> {
        let tokens = self
            .api
            .host_tokens(&self.broadcast, HOST_USER)
            .await
            .context("hostTokens")?;
        for t in tokens {
            if self.published.contains(&t.participant_id) {
                continue;
            }
            let join = json!({ "token": t.token, "publish": true });
            emulator_post(self.api.http(), &self.emulator, "/_emulator/join", &join).await?;
            self.api
                .host_publishing(&self.broadcast, &t.participant_id)
                .await
                .context("hostPublishing")?;
            self.published.insert(t.participant_id);
        }
        Ok(())
    }

    /// Publish on new origins at every tick until stopped; a failed round is counted and the next
    /// tick tries again.
    async fn follow(mut self, mut ticker: Ticker) -> Self {
        while ticker.next().await {
            if let Err(e) = self.publish_on_new_origins().await {
                self.failures += 1;
                self.last_failure = Some(format!("{e:#}"));
            }
        }
        self
    }
}

/// A tick every `period`, the first at once, until the run says stop.
struct Ticker {
    interval: tokio::time::Interval,
    stop: watch::Receiver<bool>,
}

impl Ticker {
    fn new(period: Duration, stop: watch::Receiver<bool>) -> Self {
        let mut interval = tokio::time::interval(period);
        // A slow answer delays the next tick instead of bunching the ones it missed.
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self { interval, stop }
    }

    /// False once stopped.
    async fn next(&mut self) -> bool {
        tokio::select! {
            biased;
            _ = self.stop.wait_for(|s| *s) => false,
            _ = self.interval.tick() => true,
        }
    }
}

/// Wait until the broadcast has `floor` [`free_ready_seats`] — the headroom the scaler keeps —
/// and say how long that took. (`stats.capacity` counts seats of created stages too, whose
/// replication is not yet active: it reached the floor before any replica took viewers.)
async fn wait_headroom(api: &Api, broadcast: &str, floor: u32) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let stages = api
            .fleet_stages(broadcast)
            .await
            .context("stages while waiting for the headroom")?;
        let free = free_ready_seats(&stages);
        if free >= i64::from(floor) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > HEADROOM_WITHIN {
            bail!(
                "{broadcast} still had {free} free ready seats {HEADROOM_WITHIN:?} after the host published, fewer than \
                 --headroom-floor {floor}: the scaler did not warm it (see the node's log), or pass --wait-headroom false"
            );
        }
        tokio::time::sleep(HEADROOM_POLL).await; // poll interval, bounded by the deadline
    }
}

/// Sample the broadcast's stages at every tick; times are from `crowd_started`.
async fn sample_stages(api: Api, broadcast: String, crowd_started: Instant, mut ticker: Ticker) -> Sampled {
    let mut sampled = Sampled::default();
    while ticker.next().await {
        match api.fleet_stages(&broadcast).await {
            Ok(stages) => sampled.add(crowd_started.elapsed(), &stages),
            Err(_) => sampled.failed_samples += 1,
        }
    }
    sampled
}

/// Seats new viewers can take now: capacity − viewers over the READY stages.
pub fn free_ready_seats(stages: &[FleetStage]) -> i64 {
    stages
        .iter()
        .filter(|s| s.ready)
        .map(|s| i64::from(s.capacity) - i64::from(s.viewers))
        .sum()
}

fn is_replica(s: &FleetStage) -> bool {
    s.role == "REPLICA"
}

/// What the samples of the stages showed while the crowd came.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Sampled {
    pub samples: u64,
    pub failed_samples: u64,
    /// From the crowd's start to the first sample with a READY replica.
    pub first_replica_ready_secs: Option<f64>,
    /// [`free_ready_seats`] at its lowest.
    pub min_free_ready_seats: Option<i64>,
    pub peak_stages: usize,
}

impl Sampled {
    pub fn add(&mut self, at: Duration, stages: &[FleetStage]) {
        self.samples += 1;
        if self.first_replica_ready_secs.is_none() && stages.iter().any(|s| is_replica(s) && s.ready) {
            self.first_replica_ready_secs = Some(at.as_secs_f64());
        }
        let free = free_ready_seats(stages);
        self.min_free_ready_seats = Some(self.min_free_ready_seats.map_or(free, |m| m.min(free)));
        self.peak_stages = self.peak_stages.max(stages.len());
    }
}

/// The stages once the crowd is over.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AtEnd {
    pub stages: usize,
    pub origins: usize,
    pub replicas_ready: usize,
    /// `id viewers/capacity` of each stage seating more viewers than it has seats.
    pub overfilled: Vec<String>,
    /// Replicas seating viewers while a host's media does not flow into them: a replication not
    /// ACTIVE, or none at all (the host publishes throughout the run).
    pub viewers_without_media: Vec<String>,
}

impl AtEnd {
    pub fn of(stages: &[FleetStage]) -> Self {
        let flowing = |s: &FleetStage| !s.replication.is_empty() && s.replication.iter().all(|r| r.state == "ACTIVE");
        Self {
            stages: stages.len(),
            origins: stages.iter().filter(|s| !is_replica(s)).count(),
            replicas_ready: stages.iter().filter(|s| is_replica(s) && s.ready).count(),
            overfilled: stages
                .iter()
                .filter(|s| s.viewers > s.capacity)
                .map(|s| format!("{} {}/{}", s.id, s.viewers, s.capacity))
                .collect(),
            viewers_without_media: stages
                .iter()
                .filter(|s| is_replica(s) && s.viewers > 0 && !flowing(s))
                .map(|s| {
                    let states: Vec<&str> = s.replication.iter().map(|r| r.state.as_str()).collect();
                    format!("{} ({} viewers, replication [{}])", s.id, s.viewers, states.join(", "))
                })
                .collect(),
        }
    }
}

/// Every IVS call the node made, by operation, of any outcome: the
/// `stagefleet_ivs_calls_total{op=…}` series in Prometheus text, added up per `op`.
pub fn ivs_calls(metrics: &str) -> BTreeMap<String, u64> {
    let mut by_op = BTreeMap::new();
    for line in metrics.lines() {
        let Some(series) = line.strip_prefix("stagefleet_ivs_calls_total{") else {
            continue;
        };
        let Some((labels, value)) = series.rsplit_once('}') else {
            continue;
        };
        let Some(value) = value.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let op = labels
            .split(',')
            .find_map(|l| l.strip_prefix("op=\""))
            .map_or("?", |v| v.trim_end_matches('"'));
        *by_op.entry(op.to_string()).or_insert(0) += value.round() as u64;
    }
    by_op
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CrowdSummary {
    pub rate_per_sec: f64,
    pub seconds: u64,
    pub seats_per_stage: u32,
    pub headroom_floor: u32,
    pub throttle_rate: f64,
    /// From the host publishing on the origin to `headroom_floor` free seats (`None`: the crowd
    /// did not wait).
    pub warm_after_secs: Option<f64>,
    pub joins: u64,
    pub admitted: u64,
    pub refused: u64,
    pub refused_pct: f64,
    /// By `errors[0].extensions.code` (`TRANSPORT`: no answer).
    pub refused_by_code: BTreeMap<String, u64>,
    pub max_refused_pct: Option<f64>,
    pub sampled: Sampled,
    pub at_end: AtEnd,
    pub host_origins_published: usize,
    /// Rounds of looking for new origins that failed (the next round tried again).
    pub host_failures: u64,
    pub host_last_failure: Option<String>,
    /// From `/metrics` (`None`: it could not be read).
    pub ivs_calls: Option<u64>,
    pub ivs_calls_by_op: BTreeMap<String, u64>,
    pub ivs_calls_per_1000_admitted: Option<f64>,
    pub failures: Vec<String>,
}

impl CrowdSummary {
    /// Fill in `failures` from the numbers.
    pub fn judged(mut self) -> Self {
        let mut f = Vec::new();
        let end = &self.at_end;
        if !end.overfilled.is_empty() {
            f.push(format!("stages over capacity: {}", end.overfilled.join(", ")));
        }
        if !end.viewers_without_media.is_empty() {
            f.push(format!(
                "replicas seating viewers without the host's media ACTIVE: {}",
                end.viewers_without_media.join(", ")
            ));
        }
        if let Some(max) = self.max_refused_pct
            && self.refused_pct > max
        {
            f.push(format!(
                "{:.2} % of the joins refused, more than --max-refused-pct {max}",
                self.refused_pct
            ));
        }
        self.failures = f;
        self
    }

    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    pub fn text(&self) -> String {
        let secs = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} s"));
        let mut s = format!(
            "crowd: {} new viewers/s for {} s, {} seats per stage, headroom floor {}",
            self.rate_per_sec, self.seconds, self.seats_per_stage, self.headroom_floor
        );
        if self.throttle_rate > 0.0 {
            s += &format!(", IVS throttling {:.0} %", 100.0 * self.throttle_rate);
        }
        s += &match self.warm_after_secs {
            Some(t) => format!("; warm {t:.2} s after the host published\n"),
            None => "; started without waiting for the headroom\n".into(),
        };
        let codes: Vec<String> = self.refused_by_code.iter().map(|(c, n)| format!("{c} {n}")).collect();
        s += &format!(
            "  admitted {} of {} joins; refused {} ({:.2} %){}\n",
            self.admitted,
            self.joins,
            self.refused,
            self.refused_pct,
            if codes.is_empty() {
                String::new()
            } else {
                format!(": {}", codes.join(", "))
            }
        );
        let p = &self.sampled;
        s += &format!(
            "  first READY replica {} after the crowd started; fewest free ready seats {}; at most {} stages ({} samples every {} ms, {} failed)\n",
            secs(p.first_replica_ready_secs),
            p.min_free_ready_seats.map_or("-".to_string(), |n| n.to_string()),
            p.peak_stages,
            p.samples,
            STAGES_POLL.as_millis(),
            p.failed_samples
        );
        let e = &self.at_end;
        s += &format!(
            "  at the end: {} stages, {} origins, {} replicas READY; {} over capacity; {} replicas seating viewers without the host's media ACTIVE\n",
            e.stages,
            e.origins,
            e.replicas_ready,
            e.overfilled.len(),
            e.viewers_without_media.len()
        );
        s += &format!(
            "  the host published on {} origins; {} failed rounds{}\n",
            self.host_origins_published,
            self.host_failures,
            self.host_last_failure
                .as_ref()
                .map_or(String::new(), |m| format!(" (last: {m})"))
        );
        s += &match (self.ivs_calls, self.ivs_calls_per_1000_admitted) {
            (Some(c), Some(per)) => {
                let ops: Vec<String> = self.ivs_calls_by_op.iter().map(|(op, n)| format!("{op} {n}")).collect();
                format!(
                    "  IVS calls {c}, {per:.1} per 1,000 admitted viewers ({})\n",
                    ops.join(", ")
                )
            }
            _ => "  IVS calls: /metrics could not be read\n".into(),
        };
        if self.ok() {
            s += "crowd verdict: OK (no stage over capacity, every viewer on a replica gets the host's media)\n";
        } else {
            s += "crowd verdict: FAILED\n";
            for f in &self.failures {
                s += &format!("  {f}\n");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::api::Replication;
    use crate::cli::{Cli, Scenario};

    fn stage(id: &str, role: &str, ready: bool, viewers: u32, capacity: u32, replication: &[&str]) -> FleetStage {
        FleetStage {
            id: id.into(),
            role: role.into(),
            ready,
            viewers,
            capacity,
            replication: replication
                .iter()
                .map(|s| Replication { state: s.to_string() })
                .collect(),
        }
    }

    fn crowd_args(argv: &[&str]) -> CrowdArgs {
        let argv = ["loadtest", "crowd", "--server-bin", "stagefleet"].iter().chain(argv);
        match Cli::try_parse_from(argv).expect("flags").scenario {
            Scenario::Crowd(a) => a,
            other => panic!("not crowd: {other:?}"),
        }
    }

    #[test]
    fn the_node_gets_the_crowds_flags_then_the_users() {
        let a = crowd_args(&["--seats", "20", "--replication-ms", "700", "--server-arg=--warm-pool=1"]);
        assert_eq!(
            server_args(&a),
            [
                "--autoscale=true",
                "--seats-per-stage=20",
                "--scaler-interval-ms=250",
                "--headroom-floor=100",
                "--emulator-create-stage-ms=300",
                "--emulator-replication-active-ms=700",
                "--region-subscription-quota=0",
                "--warm-pool=1",
            ]
        );
        assert!(a.wait_headroom && a.max_refused_pct.is_none());
        assert_eq!(
            (a.rate, a.seconds, a.concurrency, a.broadcast_id.as_str()),
            (50.0, 60, 200, "crowd")
        );
        assert!(!crowd_args(&["--wait-headroom", "false"]).wait_headroom);
    }

    #[test]
    fn samples_keep_the_first_ready_replica_the_fewest_free_seats_and_the_most_stages() {
        let mut s = Sampled::default();
        let origin_only = [stage("b:0", "ORIGIN", true, 10, 50, &[])];
        s.add(Duration::from_millis(0), &origin_only);
        let creating = [
            stage("b:0", "ORIGIN", true, 45, 50, &[]),
            stage("b:1", "REPLICA", false, 0, 50, &["PENDING"]),
            stage("b:2", "REPLICA", false, 0, 50, &[]),
        ];
        s.add(Duration::from_millis(250), &creating);
        let ready = [
            stage("b:0", "ORIGIN", true, 50, 50, &[]),
            stage("b:1", "REPLICA", true, 20, 50, &["ACTIVE"]),
        ];
        s.add(Duration::from_millis(500), &ready);
        assert_eq!(s.first_replica_ready_secs, Some(0.5));
        assert_eq!(s.min_free_ready_seats, Some(5), "stages not READY offer no seats");
        assert_eq!((s.samples, s.peak_stages), (3, 3));
        assert_eq!(free_ready_seats(&[stage("b:0", "ORIGIN", true, 52, 50, &[])]), -2);
    }

    #[test]
    fn the_end_finds_overfilled_stages_and_viewers_where_media_does_not_flow() {
        let stages = [
            stage("b:0", "ORIGIN", true, 51, 50, &[]),
            stage("b:1", "REPLICA", true, 50, 50, &["ACTIVE", "ACTIVE"]),
            stage("b:2", "REPLICA", false, 3, 50, &["ACTIVE", "PENDING"]),
            stage("b:3", "REPLICA", true, 1, 50, &[]),
            stage("b:4", "REPLICA", false, 0, 50, &["FAILED"]),
            stage("b:6", "ORIGIN", true, 0, 50, &[]),
        ];
        let end = AtEnd::of(&stages);
        assert_eq!((end.stages, end.origins, end.replicas_ready), (6, 2, 2));
        assert_eq!(end.overfilled, ["b:0 51/50"]);
        assert_eq!(
            end.viewers_without_media,
            [
                "b:2 (3 viewers, replication [ACTIVE, PENDING])",
                "b:3 (1 viewers, replication [])"
            ],
            "an empty replica without media is no failure"
        );
    }

    #[test]
    fn ivs_calls_add_up_every_operation_and_outcome() {
        let text = "# HELP stagefleet_ivs_calls IVS API calls.\n# TYPE stagefleet_ivs_calls counter\n\
                    stagefleet_ivs_calls_total{op=\"CreateStage\",result=\"ok\"} 12\n\
                    stagefleet_ivs_calls_total{op=\"GetStage\",result=\"throttled\"} 30\n\
                    stagefleet_ivs_retries_total{op=\"GetStage\"} 7\n\
                    stagefleet_joins_total 3000\n# EOF\n";
        let by_op = ivs_calls(text);
        assert_eq!(by_op.get("CreateStage"), Some(&12));
        assert_eq!(by_op.get("GetStage"), Some(&30));
        assert_eq!(by_op.len(), 2, "retries are not calls of their own: {by_op:?}");
        assert!(ivs_calls("").is_empty());
    }

    #[test]
    fn refusals_are_reported_and_judged_only_against_a_limit() {
        let summary = |max: Option<f64>, at_end: AtEnd| {
            CrowdSummary {
                joins: 1000,
                admitted: 990,
                refused: 10,
                refused_pct: 1.0,
                max_refused_pct: max,
                at_end,
                ..CrowdSummary::default()
            }
            .judged()
        };
        assert!(summary(None, AtEnd::default()).ok());
        assert!(summary(Some(1.0), AtEnd::default()).ok());
        assert!(!summary(Some(0.5), AtEnd::default()).ok());
        let overfilled = AtEnd {
            overfilled: vec!["b:0 51/50".into()],
            ..AtEnd::default()
        };
        let failed = summary(None, overfilled);
        assert!(!failed.ok());
        assert!(
            failed
                .text()
                .contains("crowd verdict: FAILED\n  stages over capacity: b:0 51/50")
        );
    }
}
