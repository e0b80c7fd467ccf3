//! `subscribers`: N viewers each hold their own GraphQL WebSocket with two subscriptions — the
//! broadcast's `stats` (one document and one set of variables for all, so the node runs it once)
//! and their own `assignment` — while a join storm changes the stats all the time.
//!
//! 1. A join storm without subscribers (on a fresh node of its own when this tool starts the
//!    node, else on the same broadcast first): admitted joins/s to compare against.
//! 2. The node's RSS, then N subscribers attach (`--attach-concurrency` at once, each from a
//!    loopback source address of its own range, 127.0.0.2, 127.0.0.3, …), then the RSS again.
//! 3. The same storm with all of them attached. Every subscriber records, for each stats message
//!    carrying a change it had not seen, receipt time − `changedAtMs` (the commit-to-receipt
//!    delay); `/metrics` before and after gives payloads serialized against frames sent.
//! 4. No frame lost: each subscriber must see the node's final `viewers`/`admittedTotal` (read
//!    over HTTP) within `--catch-up-secs`.
//!
//! The pieces that decide something (source addresses, message parsing, which message counts as
//! a delivered change, summaries) are plain functions in `pieces`; what the subscribers tell the
//! run is `tally`; what is reported is `summary`; the open-files limit is `files`. Their tests
//! are in `tests`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};
use tokio_tungstenite::tungstenite::Message;

use super::join_storm::storm;
use crate::api::Api;
use crate::cli::SubscribersArgs;
use crate::driver::{Load, Outcome, drive};
use crate::error::ApiError;
use crate::ledger::Ledger;
use crate::percentiles::percentiles_ms;
use crate::procstat::{ProcUsage, rss_kib};
use crate::report::{Phase, Report};
use crate::setup::Setup;
use crate::ws;

mod files;
mod pieces;
mod summary;
mod tally;

pub use files::*;
pub use pieces::*;
pub use summary::*;
use tally::{RunPhase, Tally, unix_us};

/// The one `stats` document every subscriber sends (with the same variables): the node shares it.
pub const STATS_QUERY: &str = "subscription($b: ID!) { stats(broadcastId: $b) { viewers admittedTotal joinsPerSecond appliedIndex changedAtMs } }";
pub const ASSIGNMENT_QUERY: &str =
    "subscription($s: ID!) { assignment(sessionId: $s) { kind reason token session { id stageId } } }";
const FINAL_STATS_QUERY: &str = "query($b: ID) { stats(broadcastId: $b) { viewers admittedTotal } }";
/// Operation ids on every subscriber's socket.
const STATS_ID: &str = "s";
const ASSIGNMENT_ID: &str = "a";
/// A subscriber that has not got its first stats and its `SEATED` within this failed to attach.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);
/// The first source address; the next range starts at the next address.
const FIRST_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// Files a node keeps for itself out of its open-files limit (its `max_connections` is lowered to
/// fit the rest).
const NODE_RESERVED_FILES: u64 = 512;
/// How often the catch-up check reads the node's stats and every subscriber's last message.
const CATCH_UP_POLL: Duration = Duration::from_millis(100);
/// The quiet wait before the storm gives up after this (the node's join rate is over 10 s).
const QUIET_AT_MOST: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// One subscriber

struct Plan {
    api: Api,
    broadcast: String,
    user: String,
    source: IpAddr,
    index: usize,
}

/// How a subscriber's socket ended.
enum End {
    Stopped,
    Closed,
    Ended(String),
    Failed(ApiError),
}

/// Join, connect from `plan.source`, subscribe to `stats` and `assignment`; once the first stats
/// message and `SEATED` are in, say so on `attached` and follow both until `stop`.
async fn subscriber(
    plan: Plan,
    tally: Arc<Tally>,
    ledger: Arc<Mutex<Ledger>>,
    attached: oneshot::Sender<Result<(), ApiError>>,
    mut stop: watch::Receiver<bool>,
) {
    let opened = async {
        let join = plan.api.join(&plan.broadcast, &plan.user).await?;
        ledger.lock().expect("ledger").record(&join);
        let socket = ws::connect_from(plan.api.targets.pick(), plan.api.viewer_key(), Some(plan.source)).await?;
        Ok::<_, ApiError>((socket, join.session.id))
    };
    let (socket, session) = match opened.await {
        Ok(x) => x,
        Err(e) => {
            let _ = attached.send(Err(e));
            return;
        }
    };
    let (mut tx, mut rx) = socket.split();
    let subscribe = |id: &str, query: &str, vars: Value| {
        ws::text(json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": vars } }))
    };
    let sent = async {
        tx.send(subscribe(STATS_ID, STATS_QUERY, json!({ "b": plan.broadcast })))
            .await?;
        tx.send(subscribe(ASSIGNMENT_ID, ASSIGNMENT_QUERY, json!({ "s": session })))
            .await
    };
    if let Err(e) = sent.await {
        let _ = attached.send(Err(ApiError::Transport(e.to_string())));
        return;
    }
    let mut attached = Some(attached);
    let mut seen = StatsSeen::default();
    let mut seated = false;
    let attach_deadline = tokio::time::sleep(ATTACH_TIMEOUT);
    tokio::pin!(attach_deadline);
    let end = loop {
        if *stop.borrow() {
            break End::Stopped;
        }
        tokio::select! {
            _ = stop.changed() => break End::Stopped,
            () = &mut attach_deadline, if attached.is_some() => {
                break End::Failed(ApiError::Protocol(format!("no first stats and SEATED within {ATTACH_TIMEOUT:?}")));
            }
            msg = rx.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break End::Closed,
                    Some(Ok(_)) => continue,
                };
                match parse_server_message(text.as_str()) {
                    ServerMsg::Ping => {
                        if tx.send(ws::text(json!({ "type": "pong" }))).await.is_err() {
                            break End::Closed;
                        }
                    }
                    ServerMsg::Stats(m) => tally.on_stats(plan.index, &mut seen, &m),
                    ServerMsg::Seated => seated = true,
                    ServerMsg::Ended(reason) => break End::Ended(reason),
                    ServerMsg::Failed { id, code } => {
                        break End::Failed(ApiError::Graphql { code, message: format!("operation {id}") });
                    }
                    ServerMsg::Complete { id } => {
                        break End::Failed(ApiError::Protocol(format!("the node completed operation {id}")));
                    }
                    ServerMsg::Ack | ServerMsg::Pong | ServerMsg::Other => {}
                }
                if seated && seen.messages > 0 && let Some(a) = attached.take() {
                    tally.slots[plan.index].attached.store(true, Ordering::Release);
                    tally.open.fetch_add(1, Ordering::Relaxed);
                    let _ = a.send(Ok(()));
                }
            }
        }
    };
    if let Some(a) = attached {
        // Never attached: the driver counts it by its code.
        let e = match end {
            End::Failed(e) => e,
            End::Closed => ApiError::Transport("the node closed the socket before attaching".into()),
            End::Ended(reason) => ApiError::Graphql {
                code: format!("ENDED_{reason}"),
                message: "assignment ended before attaching".into(),
            },
            End::Stopped => ApiError::Protocol("stopped before attaching".into()),
        };
        let _ = a.send(Err(e));
        return;
    }
    tally.open.fetch_sub(1, Ordering::Relaxed);
    match end {
        End::Stopped => {
            let _ = tx.send(Message::Close(None)).await;
        }
        End::Closed => {
            tally.closed_by_node.fetch_add(1, Ordering::Relaxed);
        }
        End::Ended(reason) => Tally::count(&tally.ended, &reason),
        End::Failed(e) => Tally::count(&tally.failed, &e.code()),
    }
}

// ---------------------------------------------------------------------------------------------
// The run

fn rss_of(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    rss_kib(&status)
}

/// Add stages to a broadcast this tool started until it seats `seats` (the node's default stage
/// holds 10,000). Returns the stages added.
pub(crate) async fn ensure_seats(setup: &Setup, seats: u64) -> anyhow::Result<u32> {
    if setup.common.broadcast_id.is_some() {
        return Ok(0);
    }
    let mut added = 0;
    loop {
        let capacity: u64 = setup
            .api
            .stages(&setup.broadcast)
            .await
            .context("stages")?
            .iter()
            .map(|s| u64::from(s.capacity))
            .sum();
        if capacity >= seats {
            return Ok(added);
        }
        anyhow::ensure!(added < 1000, "{seats} seats need more than 1000 extra stages");
        setup
            .api
            .create_stage(&setup.broadcast)
            .await
            .context("createStage (to seat every subscriber and storm join)")?;
        added += 1;
    }
}

fn metric(text: Option<&str>, name: &str) -> Option<u64> {
    crate::scenario::front_door::gauge(text?, name)
}

/// The storm without subscribers, and where it ran.
struct Baseline {
    outcome: Outcome,
    on: String,
    server: Option<ProcUsage>,
    rss_per_join_kib: Option<f64>,
}

/// The storm on a fresh node of its own (stopped again afterwards), after as many plain joins as
/// there will be subscribers: the two storms then differ only by the subscribers' sockets.
async fn baseline_on_fresh_node(args: &SubscribersArgs, load: &Load) -> anyhow::Result<Baseline> {
    let mut common = args.common.clone();
    common.concurrency = args.common.concurrency.max(args.attach_concurrency);
    common.node.data_dir = common
        .node
        .data_dir
        .as_ref()
        .map(|d| PathBuf::from(format!("{}-baseline", d.display())));
    let mut setup = Setup::new(&common, false).await?;
    let extra = ensure_seats(&setup, args.subscribers + args.joins).await?;
    let pid = setup.node.as_ref().map(|n| n.pid.load(Ordering::Relaxed));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let before = rss_of(pid);
    let seat = Load {
        total: args.subscribers,
        rate: None,
        concurrency: args.attach_concurrency,
        label: "baseline: plain joins, no sockets".into(),
    };
    let prefix = format!("{}-sub", args.common.user_prefix);
    let seated = storm(&setup.api, &setup.broadcast, &prefix, &seat, &ledger).await;
    let after = rss_of(pid);
    setup.load_begins();
    let outcome = storm(
        &setup.api,
        &setup.broadcast,
        &format!("{}-base", args.common.user_prefix),
        load,
        &ledger,
    )
    .await;
    setup.load_ends();
    let mut scratch = setup.report("baseline");
    setup.finish(&mut scratch).await?;
    Ok(Baseline {
        outcome,
        on: format!(
            "a fresh node of its own, after {} plain joins (no sockets) in place of the subscribers; {extra} stage(s) added; stopped before the subscribers' node started",
            seated.ok
        ),
        server: scratch.server,
        rss_per_join_kib: before.zip(after).and_then(|(b, a)| kib_per(b, a, seated.ok)),
    })
}

pub async fn run(args: &SubscribersArgs) -> anyhow::Result<Report> {
    args.common.node.single_node_only("subscribers")?;
    let n = args.subscribers;
    let pool = args.common.concurrency.max(args.attach_concurrency) as u64;
    // This process holds every socket and the HTTP pool; a node started here inherits the limit
    // and keeps 512 files for itself.
    let files = raise_open_files(n + pool + NODE_RESERVED_FILES + 64).context("raising the open-files limit")?;
    eprintln!("{}", files.text());
    if files.soft < n + pool + 64 {
        eprintln!(
            "warning: this process may open {} files, fewer than {n} WebSockets and {pool} HTTP connections need: \
             attaches past it fail",
            files.soft
        );
    }
    if args.common.node.targets.is_empty() && files.hard.saturating_sub(NODE_RESERVED_FILES) < n + pool {
        eprintln!(
            "warning: the node started here may hold {} connections (its open-files limit {} minus {NODE_RESERVED_FILES}), \
             fewer than {n} WebSockets and {pool} HTTP connections: it refuses the rest with 503",
            files.hard.saturating_sub(NODE_RESERVED_FILES),
            files.hard
        );
    }
    let sources = sources_needed(n, args.per_source);
    anyhow::ensure!(
        n == 0 || source_addr(n - 1, args.per_source).is_some(),
        "--subscribers {n} at --per-source {} needs more addresses than 127.0.0.0/8 has",
        args.per_source
    );
    let storm_load = |label: &str| Load {
        total: args.joins,
        rate: args.rate,
        concurrency: args.common.concurrency,
        label: label.into(),
    };
    let fresh_baseline = !args.no_baseline && args.common.node.targets.is_empty();

    // --- 1. the storm without subscribers, on its own node when this tool starts nodes
    let mut baseline = None;
    if fresh_baseline {
        baseline = Some(baseline_on_fresh_node(args, &storm_load("storm without subscribers")).await?);
    }

    // --- the subscribers' node
    let mut common = args.common.clone();
    // Attaching joins use the HTTP pool as well: room for both.
    common.concurrency = args.common.concurrency.max(args.attach_concurrency);
    let mut setup = Setup::new(&common, false).await?;
    let storms_here = if fresh_baseline || args.no_baseline { 1 } else { 2 };
    let extra_stages = ensure_seats(&setup, n + storms_here * args.joins).await?;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    if !fresh_baseline && !args.no_baseline {
        let load = storm_load("storm without subscribers");
        let prefix = format!("{}-base", args.common.user_prefix);
        let outcome = storm(&setup.api, &setup.broadcast, &prefix, &load, &ledger).await;
        baseline = Some(Baseline {
            outcome,
            on: "the same node and broadcast, before the subscribers attached".into(),
            server: None,
            rss_per_join_kib: None,
        });
    }
    let catch_up_within = Duration::from_secs_f64(args.catch_up_secs);
    let pid = setup.node.as_ref().map(|n| n.pid.clone());
    let pid_now = || pid.as_ref().map(|p| p.load(Ordering::Relaxed));

    // --- 2. attach, measuring the node's RSS around it
    let rss_before = rss_of(pid_now());
    let tally = Arc::new(Tally::new(n as usize));
    let (stop_tx, stop_rx) = watch::channel(false);
    let tasks = Arc::new(Mutex::new(Vec::with_capacity(n as usize)));
    let attach_load = Load {
        total: n,
        rate: None,
        concurrency: args.attach_concurrency,
        label: "subscribers: attach".into(),
    };
    let (api, broadcast, per_source) = (setup.api.clone(), setup.broadcast.clone(), args.per_source);
    let prefix = format!("{}-sub", args.common.user_prefix);
    let (t, l, h) = (tally.clone(), ledger.clone(), tasks.clone());
    // The first error of each code, to say what the codes mean.
    let examples: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let attach_error_examples = examples.clone();
    let attach_started = Instant::now();
    let attach = drive(&attach_load, move |i| {
        let plan = Plan {
            api: api.clone(),
            broadcast: broadcast.clone(),
            user: super::user_id(&prefix, i),
            source: IpAddr::V4(source_addr(i, per_source).expect("checked before the run")),
            index: i as usize,
        };
        let (t, l, stop) = (t.clone(), l.clone(), stop_rx.clone());
        let (tx, rx) = oneshot::channel();
        h.lock()
            .expect("tasks")
            .push(tokio::spawn(subscriber(plan, t, l, tx, stop)));
        let examples = examples.clone();
        async move {
            let attached = rx
                .await
                .unwrap_or_else(|_| Err(ApiError::Protocol("subscriber task ended".into())));
            if let Err(e) = &attached {
                let mut examples = examples.lock().expect("examples");
                examples.entry(e.code()).or_insert_with(|| e.to_string());
            }
            attached
        }
    })
    .await;
    let attach_secs = attach_started.elapsed().as_secs_f64();
    let attached = tally.open.load(Ordering::Relaxed);
    // Let the last fan-out of the attach (its joins changed the stats) reach everyone, so the
    // storm's deliveries are the storm's and the RSS is that of a quiet node.
    let settle = catch_up(&setup.api, &setup.broadcast, &tally, catch_up_within).await;
    let settled_after = settle
        .all_after
        .map(|at| at.duration_since(attach_started).as_secs_f64() - attach_secs);
    let rss_after = rss_of(pid_now());
    let after_attach = setup.api.metrics().await;
    let gauges_after_attach = (
        metric(after_attach.as_deref(), "open_websockets"),
        metric(after_attach.as_deref(), "subscriptions_open"),
    );

    // --- 3. the storm with every subscriber attached, once the stats have been quiet for an
    // interval (else the storm's first update waits behind the attach's last messages)
    let quiet_wait_secs = quiet(&tally, Duration::from_millis(args.quiet_ms)).await;
    tally.set_phase(RunPhase::Storm);
    let m0 = setup.api.metrics().await;
    let storm_started_ms = unix_us() / 1000;
    setup.load_begins();
    let storm_prefix = format!("{}-storm", args.common.user_prefix);
    let with = storm(
        &setup.api,
        &setup.broadcast,
        &storm_prefix,
        &storm_load(&format!("storm with {attached} subscribers")),
        &ledger,
    )
    .await;
    setup.load_ends();
    let storm_ended = Instant::now();

    // --- 4. every subscriber must see the final stats
    let catch = catch_up(&setup.api, &setup.broadcast, &tally, catch_up_within).await;
    let caught_up_after = catch.all_after.map(|at| at.duration_since(storm_ended).as_secs_f64());
    let m1 = setup.api.metrics().await;
    tally.set_phase(RunPhase::After);
    let counter = |text: &Option<String>, name: &str| metric(text.as_deref(), name);
    let delta = |name: &str| Some(counter(&m1, name)?.saturating_sub(counter(&m0, name)?));
    let payloads = delta("subscription_payloads_total");
    let frames = delta("subscription_frames_total");

    // Check the ledger while every socket is still open (their sessions must all be alive).
    let ledger = std::mem::take(&mut *ledger.lock().expect("ledger"));
    let verdict = setup.verify(&ledger).await?;
    let open_at_end = tally.open.load(Ordering::Relaxed);
    stop_tx.send_replace(true);
    let handles = std::mem::take(&mut *tasks.lock().expect("tasks"));
    for task in handles {
        let _ = task.await;
    }

    // --- the report
    let storm_messages = spread(
        tally
            .slots
            .iter()
            .filter(|s| s.attached.load(Ordering::Relaxed))
            .map(|s| s.storm_messages.load(Ordering::Relaxed)),
    );
    let with_rate = with.ok_rate();
    let summary = SubscribersSummary {
        wanted: n,
        attached,
        attach_secs,
        attach_error_examples: std::mem::take(&mut *attach_error_examples.lock().expect("examples")),
        behind_after_attach: settle.behind,
        settled_after_attach_secs: settled_after,
        quiet_ms: args.quiet_ms,
        quiet_wait_secs,
        storm_started_ms,
        source_addresses: sources,
        first_source: source_addr(0, args.per_source).map(|a| a.to_string()),
        last_source: n
            .checked_sub(1)
            .and_then(|i| source_addr(i, args.per_source))
            .map(|a| a.to_string()),
        files,
        extra_stages,
        rss_before_mib: rss_before.map(|k| k as f64 / 1024.0),
        rss_after_attach_mib: rss_after.map(|k| k as f64 / 1024.0),
        rss_per_subscriber_kib: rss_before.zip(rss_after).and_then(|(b, a)| kib_per(b, a, attached)),
        baseline_rss_per_join_kib: baseline.as_ref().and_then(|b| b.rss_per_join_kib),
        node_websockets_after_attach: gauges_after_attach.0,
        node_subscriptions_after_attach: gauges_after_attach.1,
        delay_ms: percentiles_ms(&tally.delays[RunPhase::Storm as usize].lock().expect("delays")),
        attach_delay_ms: percentiles_ms(&tally.delays[RunPhase::Attach as usize].lock().expect("delays")),
        negative_delays: tally.negative_delays.load(Ordering::Relaxed),
        fanout: fanout_summary(
            &tally
                .storm_updates
                .lock()
                .expect("updates")
                .values()
                .copied()
                .collect::<Vec<_>>(),
            attached,
        ),
        storm_stats_messages: tally.messages[RunPhase::Storm as usize].load(Ordering::Relaxed),
        storm_rates_only_messages: tally.rates_only[RunPhase::Storm as usize].load(Ordering::Relaxed),
        storm_messages_per_subscriber: storm_messages,
        stats_messages_total: tally.messages.iter().map(|m| m.load(Ordering::Relaxed)).sum(),
        payloads,
        frames,
        final_viewers: catch.target.map(|t| t.0),
        final_admitted_total: catch.target.map(|t| t.1),
        final_value_moved: catch.moved,
        catch_up_secs: args.catch_up_secs,
        lost: catch.behind,
        caught_up_after_secs: caught_up_after,
        open_at_end,
        closed_by_node: tally.closed_by_node.load(Ordering::Relaxed),
        assignments_ended: tally.ended.lock().expect("tally").clone(),
        operations_failed: tally.failed.lock().expect("tally").clone(),
        baseline_on: baseline.as_ref().map(|b| b.on.clone()),
        joins_per_sec_without: baseline.as_ref().map(|b| b.outcome.ok_rate()),
        joins_per_sec_with: with_rate,
        ratio: baseline
            .as_ref()
            .map(|b| b.outcome.ok_rate())
            .filter(|r| *r > 0.0)
            .map(|r| with_rate / r),
        baseline_server: baseline.as_ref().and_then(|b| b.server.clone()),
        failures: Vec::new(),
    }
    .judged();
    let mut report = setup.report("subscribers");
    if let Some(b) = &baseline {
        report
            .phases
            .push(Phase::from_outcome("storm without subscribers", &b.outcome));
    }
    report
        .phases
        .push(Phase::from_outcome("attach (join, connect, stats + SEATED)", &attach));
    report.phases.push(Phase::from_outcome(
        &format!("storm with {attached} subscribers"),
        &with,
    ));
    report.verdict = verdict;
    report.subscribers = Some(summary);
    setup.finish(&mut report).await?;
    Ok(report)
}

/// The catch-up check's outcome.
struct CatchUp {
    /// The node's last `(viewers, admittedTotal)`.
    target: Option<(u64, u64)>,
    /// The node's value changed during the check.
    moved: bool,
    /// Attached subscribers whose last stats message is not the target at the end.
    behind: u64,
    /// When every attached subscriber had it.
    all_after: Option<Instant>,
}

/// Read the node's `(viewers, admittedTotal)` and every subscriber's last stats message until
/// all match or `within` has passed.
/// Wait until no subscriber has read a stats message for `quiet` (the last change and the last
/// fan-out are over) and the join rate they last saw has fallen to 0 (while it decays the node
/// sends the rates alone every 1.5 intervals, one fan-out to every socket each: a storm's first
/// update would queue behind one); at most [`QUIET_AT_MOST`]. The seconds waited; 0 for `quiet` 0.
async fn quiet(tally: &Tally, quiet: Duration) -> f64 {
    if quiet.is_zero() {
        return 0.0;
    }
    let started = Instant::now();
    let quiet_ms = i64::try_from(quiet.as_millis()).unwrap_or(i64::MAX);
    loop {
        let due = tally.last_receipt_ms.load(Ordering::Acquire).saturating_add(quiet_ms);
        let now = unix_us() / 1000;
        let rate = f64::from_bits(tally.last_joins_per_second.load(Ordering::Acquire));
        if (now >= due && rate == 0.0) || started.elapsed() >= QUIET_AT_MOST {
            return started.elapsed().as_secs_f64();
        }
        // The wait is the quiet spell itself, re-checked in case a change came meanwhile.
        let wait = Duration::from_millis(due.saturating_sub(now).max(0) as u64).max(CATCH_UP_POLL);
        tokio::time::sleep(wait).await;
    }
}

async fn catch_up(api: &Api, broadcast: &str, tally: &Tally, within: Duration) -> CatchUp {
    let deadline = Instant::now() + within;
    let mut out = CatchUp {
        target: None,
        moved: false,
        behind: 0,
        all_after: None,
    };
    loop {
        let node = api
            .gql(api.admin_key(), FINAL_STATS_QUERY, json!({ "b": broadcast }))
            .await
            .ok()
            .and_then(|d| Some((d["stats"]["viewers"].as_u64()?, d["stats"]["admittedTotal"].as_u64()?)));
        if let Some(t) = node {
            out.moved |= out.target.is_some_and(|old| old != t);
            out.target = Some(t);
        }
        if let Some((v, a)) = out.target {
            let want = pack(v, a);
            out.behind = tally
                .slots
                .iter()
                .filter(|s| s.attached.load(Ordering::Acquire) && s.last.load(Ordering::Acquire) != want)
                .count() as u64;
            if out.behind == 0 {
                out.all_after = Some(Instant::now());
                return out;
            }
        }
        if Instant::now() >= deadline {
            return out;
        }
        // Poll interval of a check bounded by its deadline.
        tokio::time::sleep(CATCH_UP_POLL).await;
    }
}

#[cfg(test)]
mod tests;
