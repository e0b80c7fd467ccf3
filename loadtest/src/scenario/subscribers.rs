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
//! a delivered change, summaries) are plain functions, unit-tested below.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};
use tokio_tungstenite::tungstenite::Message;

use super::join_storm::storm;
use crate::api::Api;
use crate::cli::SubscribersArgs;
use crate::driver::{Load, Outcome, drive, histogram};
use crate::error::ApiError;
use crate::ledger::Ledger;
use crate::percentiles::{Percentiles, percentiles_ms};
use crate::procstat::{ProcUsage, rss_kib};
use crate::report::{Phase, Report};
use crate::setup::Setup;
use crate::ws;

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

// ---------------------------------------------------------------------------------------------
// Small pieces, unit-tested

/// The loopback address subscriber `i` connects from: `per_source` subscribers per address,
/// from 127.0.0.2 on. `None` past the end of 127.0.0.0/8.
pub fn source_addr(i: u64, per_source: u64) -> Option<Ipv4Addr> {
    let offset = u32::try_from(i / per_source.max(1)).ok()?;
    let ip = u32::from(FIRST_SOURCE).checked_add(offset)?;
    // 127.255.255.255 is the broadcast address of 127.0.0.0/8.
    (ip < u32::from(Ipv4Addr::new(127, 255, 255, 255))).then(|| Ipv4Addr::from(ip))
}

/// How many source addresses `n` subscribers use.
pub fn sources_needed(n: u64, per_source: u64) -> u64 {
    n.div_ceil(per_source.max(1))
}

/// The numbers of one `stats` message this scenario asks for.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsMsg {
    pub viewers: u64,
    pub admitted_total: u64,
    pub joins_per_second: f64,
    pub applied_index: u64,
    pub changed_at_ms: i64,
}

/// A message from the node, as far as a subscriber cares.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerMsg {
    Ack,
    Ping,
    Pong,
    Stats(StatsMsg),
    /// `assignment` said `SEATED` (the first message).
    Seated,
    /// `assignment` said `ENDED`, with its reason.
    Ended(String),
    /// An operation failed: `next` with errors, or `error`; its id and first `extensions.code`.
    Failed {
        id: String,
        code: String,
    },
    Complete {
        id: String,
    },
    /// Anything else (unknown types, a `next` of neither subscription, text that is not JSON).
    Other,
}

/// Read one text frame of graphql-transport-ws.
pub fn parse_server_message(text: &str) -> ServerMsg {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return ServerMsg::Other;
    };
    let id = v["id"].as_str().unwrap_or_default().to_string();
    let first_code = |errors: &Value| {
        errors
            .as_array()
            .and_then(|e| e.first())
            .map(|e| e["extensions"]["code"].as_str().unwrap_or("NO_CODE").to_string())
    };
    match v["type"].as_str() {
        Some("connection_ack") => ServerMsg::Ack,
        Some("ping") => ServerMsg::Ping,
        Some("pong") => ServerMsg::Pong,
        Some("complete") => ServerMsg::Complete { id },
        Some("error") => ServerMsg::Failed {
            id,
            code: first_code(&v["payload"]).unwrap_or_else(|| "WS_ERROR".into()),
        },
        Some("next") => {
            let payload = &v["payload"];
            if let Some(code) = first_code(&payload["errors"]) {
                return ServerMsg::Failed { id, code };
            }
            let data = &payload["data"];
            if let Some(stats) = data.get("stats") {
                return serde_json::from_value(stats.clone()).map_or(ServerMsg::Other, ServerMsg::Stats);
            }
            match data["assignment"]["kind"].as_str() {
                Some("SEATED") => ServerMsg::Seated,
                Some("ENDED") => ServerMsg::Ended(data["assignment"]["reason"].as_str().unwrap_or("NONE").to_string()),
                _ => ServerMsg::Other,
            }
        }
        _ => ServerMsg::Other,
    }
}

/// What one subscriber has seen of its `stats` subscription, and which messages are deliveries
/// of a change. The first message is the value at subscription (for a late subscriber of a
/// shared execution: the latest payload), not a delivery; after it, a message whose
/// `changedAtMs` moved on delivers a change committed at `changedAtMs`; one whose did not only
/// carries rates that moved with the clock (they fall for 10 s after the last join).
#[derive(Clone, Debug, Default)]
pub struct StatsSeen {
    pub messages: u64,
    last_changed_at_ms: Option<i64>,
}

/// What [`StatsSeen::on_message`] made of one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The value at subscription.
    First,
    /// A change committed at `changedAtMs`: its delay from commit to receipt, in microseconds
    /// (negative when the clocks disagree: the node's proposer and this machine).
    Change(i64),
    /// No new change: only the rates moved.
    RatesOnly,
}

impl StatsSeen {
    pub fn on_message(&mut self, m: &StatsMsg, receipt_unix_us: i64) -> Delivery {
        self.messages += 1;
        let before = self.last_changed_at_ms.replace(m.changed_at_ms);
        match before {
            None => Delivery::First,
            Some(c) if m.changed_at_ms > c => Delivery::Change(receipt_unix_us - m.changed_at_ms * 1000),
            Some(_) => Delivery::RatesOnly,
        }
    }
}

/// `viewers` and `admittedTotal` in one word, so the catch-up check reads a pair one message
/// wrote (each saturates at 2^32 − 1).
pub fn pack(viewers: u64, admitted_total: u64) -> u64 {
    (viewers.min(u64::from(u32::MAX)) << 32) | admitted_total.min(u64::from(u32::MAX))
}

/// Nothing seen yet.
const UNSEEN: u64 = u64::MAX;

/// Smallest, mean and largest of some counts.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Spread {
    pub min: u64,
    pub mean: f64,
    pub max: u64,
    pub count: u64,
}

pub fn spread(values: impl IntoIterator<Item = u64>) -> Spread {
    let mut s = Spread {
        min: u64::MAX,
        ..Spread::default()
    };
    let mut sum = 0u128;
    for v in values {
        s.min = s.min.min(v);
        s.max = s.max.max(v);
        sum += u128::from(v);
        s.count += 1;
    }
    if s.count == 0 {
        return Spread::default();
    }
    s.mean = sum as f64 / s.count as f64;
    s
}

/// Record a commit-to-receipt delay (µs); a negative one is recorded as 1 µs and counted apart.
pub fn record_delay(h: &mut Histogram<u64>, delay_us: i64) -> bool {
    h.saturating_record(delay_us.max(1) as u64);
    delay_us < 0
}

/// One update (one payload) as all subscribers received it: its commit-to-receipt delay at the
/// first and at the last receiver. Their difference is the time to fan it out to everyone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fanout {
    pub receivers: u64,
    pub first_us: i64,
    pub last_us: i64,
}

impl Fanout {
    pub fn add(&mut self, delay_us: i64) {
        if self.receivers == 0 {
            self.first_us = delay_us;
            self.last_us = delay_us;
        }
        self.receivers += 1;
        self.first_us = self.first_us.min(delay_us);
        self.last_us = self.last_us.max(delay_us);
    }
}

/// Over the updates: (median and largest delay at the first receiver, median and largest
/// fan-out time), in ms; updates seen by fewer than `min_receivers` are left out (a change
/// delivered to only some subscribers is not a whole fan-out).
pub fn fanout_summary(updates: &[Fanout], min_receivers: u64) -> Option<FanoutSummary> {
    let whole: Vec<&Fanout> = updates.iter().filter(|u| u.receivers >= min_receivers.max(1)).collect();
    if whole.is_empty() {
        return None;
    }
    let median = |mut v: Vec<i64>| {
        v.sort_unstable();
        v[v.len() / 2] as f64 / 1000.0
    };
    let first: Vec<i64> = whole.iter().map(|u| u.first_us).collect();
    let spread: Vec<i64> = whole.iter().map(|u| u.last_us - u.first_us).collect();
    Some(FanoutSummary {
        updates: whole.len() as u64,
        first_receiver_p50_ms: median(first.clone()),
        first_receiver_max_ms: first.iter().copied().max().unwrap_or(0) as f64 / 1000.0,
        fanout_p50_ms: median(spread.clone()),
        fanout_max_ms: spread.iter().copied().max().unwrap_or(0) as f64 / 1000.0,
    })
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct FanoutSummary {
    pub updates: u64,
    pub first_receiver_p50_ms: f64,
    pub first_receiver_max_ms: f64,
    /// Last receipt minus first receipt of one update.
    pub fanout_p50_ms: f64,
    pub fanout_max_ms: f64,
}

/// The node's RSS growth per subscriber, in KiB.
pub fn kib_per(before_kib: u64, after_kib: u64, n: u64) -> Option<f64> {
    (n > 0).then(|| (after_kib as f64 - before_kib as f64) / n as f64)
}

// ---------------------------------------------------------------------------------------------
// Shared tallies

/// Where the run is: messages and delays are counted per phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum RunPhase {
    Attach = 0,
    /// The storm with subscribers and the catch-up after it.
    Storm = 1,
    After = 2,
}

/// One subscriber's state, read by the catch-up check.
struct Slot {
    /// `pack(viewers, admittedTotal)` of its last stats message, or [`UNSEEN`].
    last: AtomicU64,
    attached: AtomicBool,
    storm_messages: AtomicU64,
}

struct Tally {
    phase: AtomicU8,
    slots: Vec<Slot>,
    open: AtomicU64,
    /// Per phase: stats messages, changes delivered (and their delays), rate-only messages.
    messages: [AtomicU64; 3],
    rates_only: [AtomicU64; 3],
    delays: [Mutex<Histogram<u64>>; 3],
    negative_delays: AtomicU64,
    /// Changes delivered during the storm, by `appliedIndex`.
    storm_updates: Mutex<HashMap<u64, Fanout>>,
    /// After attaching: sockets the node closed, assignments that ended, operations that failed.
    closed_by_node: AtomicU64,
    ended: Mutex<BTreeMap<String, u64>>,
    failed: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn new(n: usize) -> Self {
        Self {
            phase: AtomicU8::new(RunPhase::Attach as u8),
            slots: (0..n)
                .map(|_| Slot {
                    last: AtomicU64::new(UNSEEN),
                    attached: AtomicBool::new(false),
                    storm_messages: AtomicU64::new(0),
                })
                .collect(),
            open: AtomicU64::new(0),
            messages: Default::default(),
            rates_only: Default::default(),
            delays: [
                Mutex::new(histogram()),
                Mutex::new(histogram()),
                Mutex::new(histogram()),
            ],
            negative_delays: AtomicU64::new(0),
            storm_updates: Mutex::default(),
            closed_by_node: AtomicU64::new(0),
            ended: Mutex::default(),
            failed: Mutex::default(),
        }
    }

    fn set_phase(&self, p: RunPhase) {
        self.phase.store(p as u8, Ordering::Release);
    }

    fn on_stats(&self, index: usize, seen: &mut StatsSeen, m: &StatsMsg) {
        let delivery = seen.on_message(m, unix_us());
        let slot = &self.slots[index];
        slot.last.store(pack(m.viewers, m.admitted_total), Ordering::Release);
        let phase = usize::from(self.phase.load(Ordering::Acquire).min(2));
        self.messages[phase].fetch_add(1, Ordering::Relaxed);
        if phase == RunPhase::Storm as usize {
            slot.storm_messages.fetch_add(1, Ordering::Relaxed);
        }
        match delivery {
            Delivery::First => {}
            Delivery::RatesOnly => {
                self.rates_only[phase].fetch_add(1, Ordering::Relaxed);
            }
            Delivery::Change(us) => {
                if record_delay(&mut self.delays[phase].lock().expect("delays"), us) {
                    self.negative_delays.fetch_add(1, Ordering::Relaxed);
                }
                if phase == RunPhase::Storm as usize {
                    let mut updates = self.storm_updates.lock().expect("updates");
                    let u = updates.entry(m.applied_index).or_insert(Fanout {
                        receivers: 0,
                        first_us: 0,
                        last_us: 0,
                    });
                    u.add(us);
                }
            }
        }
    }

    fn count(map: &Mutex<BTreeMap<String, u64>>, key: &str) {
        *map.lock().expect("tally").entry(key.to_string()).or_default() += 1;
    }
}

fn unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

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

/// The process's open-files limit before and after raising it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FilesLimit {
    pub soft_before: u64,
    pub hard_before: u64,
    pub soft: u64,
    pub hard: u64,
    /// Why the hard limit could not be raised to what the run wants, if it could not.
    pub hard_raise_error: Option<String>,
}

impl FilesLimit {
    fn text(&self) -> String {
        let mut s = format!(
            "open files of this process (and the node it starts): soft {} -> {}, hard {} -> {}",
            self.soft_before, self.soft, self.hard_before, self.hard
        );
        if let Some(e) = &self.hard_raise_error {
            s += &format!(" ({e})");
        }
        s
    }
}

fn getrlimit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct passed by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

fn setrlimit(soft: u64, hard: u64) -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit reads only the struct passed by pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Raise the open-files hard limit to `want` if it is lower (needs CAP_SYS_RESOURCE; capped by
/// `fs.nr_open`), then the soft limit to the hard one. Started nodes inherit both.
pub fn raise_open_files(want: u64) -> std::io::Result<FilesLimit> {
    let (soft_before, hard_before) = getrlimit()?;
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    let mut hard_raise_error = None;
    let target = want.min(nr_open);
    if target > hard_before
        && let Err(e) = setrlimit(target, target)
    {
        hard_raise_error = Some(format!("raising the hard limit to {target}: {e}"));
    }
    let (soft, hard) = getrlimit()?;
    if soft < hard {
        setrlimit(hard, hard)?;
    }
    let (soft, hard) = getrlimit()?;
    Ok(FilesLimit {
        soft_before,
        hard_before,
        soft,
        hard,
        hard_raise_error,
    })
}

fn rss_of(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    rss_kib(&status)
}

/// Add stages to a broadcast this tool started until it seats `seats` (the node's default stage
/// holds 10,000). Returns the stages added.
async fn ensure_seats(setup: &Setup, seats: u64) -> anyhow::Result<u32> {
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

/// `/metrics` as text, if the node serves it.
async fn metrics(api: &Api) -> Option<String> {
    let url = format!("{}/metrics", api.targets.all()[0]);
    api.http().get(url).send().await.ok()?.text().await.ok()
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
    let after_attach = metrics(&setup.api).await;
    let gauges_after_attach = (
        metric(after_attach.as_deref(), "open_websockets"),
        metric(after_attach.as_deref(), "subscriptions_open"),
    );

    // --- 3. the storm with every subscriber attached
    tally.set_phase(RunPhase::Storm);
    let m0 = metrics(&setup.api).await;
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
    let m1 = metrics(&setup.api).await;
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

// ---------------------------------------------------------------------------------------------
// Summary

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
                "  per update ({} reached every subscriber): first receiver after p50 {:.1} ms (max {:.1}); first to last receipt p50 {:.1} ms (max {:.1})\n",
                f.updates, f.first_receiver_p50_ms, f.first_receiver_max_ms, f.fanout_p50_ms, f.fanout_max_ms
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_spread_by_range_from_127_0_0_2() {
        assert_eq!(source_addr(0, 20_000), Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(source_addr(19_999, 20_000), Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(source_addr(20_000, 20_000), Some(Ipv4Addr::new(127, 0, 0, 3)));
        assert_eq!(source_addr(29_999, 20_000), Some(Ipv4Addr::new(127, 0, 0, 3)));
        // Across an octet, and 0 per source counts as 1.
        assert_eq!(source_addr(254, 1), Some(Ipv4Addr::new(127, 0, 1, 0)));
        assert_eq!(source_addr(3, 0), Some(Ipv4Addr::new(127, 0, 0, 5)));
        // The last usable address is 127.255.255.254; no further.
        let last = u64::from(u32::from(Ipv4Addr::new(127, 255, 255, 254)) - u32::from(FIRST_SOURCE));
        assert_eq!(source_addr(last, 1), Some(Ipv4Addr::new(127, 255, 255, 254)));
        assert_eq!(source_addr(last + 1, 1), None);
        assert_eq!(source_addr(u64::MAX, 1), None);
        assert_eq!(sources_needed(30_000, 20_000), 2);
        assert_eq!(sources_needed(20_000, 20_000), 1);
        assert_eq!(sources_needed(0, 20_000), 0);
    }

    #[test]
    fn stats_assignment_and_protocol_messages_are_told_apart() {
        let stats = r#"{"id":"s","type":"next","payload":{"data":{"stats":{"viewers":12,"admittedTotal":15,
            "joinsPerSecond":1.5,"appliedIndex":99,"changedAtMs":1764645000123}}}}"#;
        assert_eq!(
            parse_server_message(stats),
            ServerMsg::Stats(StatsMsg {
                viewers: 12,
                admitted_total: 15,
                joins_per_second: 1.5,
                applied_index: 99,
                changed_at_ms: 1_764_645_000_123,
            })
        );
        let seated = r#"{"id":"a","type":"next","payload":{"data":{"assignment":{"kind":"SEATED","reason":null,
            "token":"x.y.z","session":{"id":"S1","stageId":"b:0"}}}}}"#;
        assert_eq!(parse_server_message(seated), ServerMsg::Seated);
        let ended = r#"{"id":"a","type":"next","payload":{"data":{"assignment":{"kind":"ENDED","reason":"BROADCAST_ENDED",
            "token":null,"session":{"id":"S1","stageId":"b:0"}}}}}"#;
        assert_eq!(parse_server_message(ended), ServerMsg::Ended("BROADCAST_ENDED".into()));
        let refused = r#"{"id":"s","type":"next","payload":{"data":null,"errors":[{"message":"no",
            "extensions":{"code":"BROADCAST_NOT_FOUND"}}]}}"#;
        assert_eq!(
            parse_server_message(refused),
            ServerMsg::Failed {
                id: "s".into(),
                code: "BROADCAST_NOT_FOUND".into()
            }
        );
        assert_eq!(
            parse_server_message(r#"{"id":"a","type":"error","payload":[{"message":"bad"}]}"#),
            ServerMsg::Failed {
                id: "a".into(),
                code: "NO_CODE".into()
            }
        );
        assert_eq!(parse_server_message(r#"{"type":"ping"}"#), ServerMsg::Ping);
        assert_eq!(parse_server_message(r#"{"type":"pong"}"#), ServerMsg::Pong);
        assert_eq!(parse_server_message(r#"{"type":"connection_ack"}"#), ServerMsg::Ack);
        assert_eq!(
            parse_server_message(r#"{"id":"s","type":"complete"}"#),
            ServerMsg::Complete { id: "s".into() }
        );
        // A stats message missing a field asked for, or text that is not JSON, is not stats.
        let partial = r#"{"id":"s","type":"next","payload":{"data":{"stats":{"viewers":1}}}}"#;
        assert_eq!(parse_server_message(partial), ServerMsg::Other);
        assert_eq!(parse_server_message("not json"), ServerMsg::Other);
    }

    fn stats(changed_at_ms: i64, jps: f64) -> StatsMsg {
        StatsMsg {
            viewers: 1,
            admitted_total: 1,
            joins_per_second: jps,
            applied_index: 1,
            changed_at_ms,
        }
    }

    #[test]
    fn only_a_new_change_after_the_first_message_is_a_delivery() {
        let mut seen = StatsSeen::default();
        // The value at subscription may be old: not a delivery, whatever its age.
        assert_eq!(seen.on_message(&stats(1_000, 0.0), 9_000_000), Delivery::First);
        // A change committed at 2,000 ms received at 2,012.5 ms: 12.5 ms.
        assert_eq!(seen.on_message(&stats(2_000, 3.0), 2_012_500), Delivery::Change(12_500));
        // The rates fell, nothing new was committed: not a delivery.
        assert_eq!(seen.on_message(&stats(2_000, 2.0), 3_000_000), Delivery::RatesOnly);
        // Received "before" its commit by this clock: negative, left to the caller to count.
        assert_eq!(seen.on_message(&stats(5_000, 2.0), 4_999_000), Delivery::Change(-1_000));
        assert_eq!(seen.messages, 4);
    }

    #[test]
    fn delays_are_recorded_in_microseconds_and_negative_ones_counted_apart() {
        let mut h = histogram();
        assert!(!record_delay(&mut h, 12_500));
        assert!(!record_delay(&mut h, 40_000));
        assert!(record_delay(&mut h, -3_000));
        assert_eq!(h.len(), 3);
        let p = percentiles_ms(&h);
        assert_eq!(p.count, 3);
        assert!((p.max - 40.0).abs() < 0.05, "{p:?}");
        assert!((p.p50 - 12.5).abs() < 0.05, "{p:?}");
        assert_eq!(h.min(), 1, "a negative delay counts as 1 µs");
    }

    #[test]
    fn fan_out_is_first_to_last_receipt_of_updates_everyone_got() {
        let mut a = Fanout {
            receivers: 0,
            first_us: 0,
            last_us: 0,
        };
        for d in [30_000, 10_000, 250_000] {
            a.add(d);
        }
        assert_eq!(
            a,
            Fanout {
                receivers: 3,
                first_us: 10_000,
                last_us: 250_000
            }
        );
        let b = Fanout {
            receivers: 3,
            first_us: 20_000,
            last_us: 60_000,
        };
        let c = Fanout {
            receivers: 3,
            first_us: 5_000,
            last_us: 105_000,
        };
        // Seen by one subscriber only: not a whole fan-out.
        let partial = Fanout {
            receivers: 1,
            first_us: 900_000,
            last_us: 900_000,
        };
        let f = fanout_summary(&[a, b, c, partial], 3).unwrap();
        assert_eq!(f.updates, 3);
        assert_eq!(f.first_receiver_p50_ms, 10.0);
        assert_eq!(f.first_receiver_max_ms, 20.0);
        assert_eq!(f.fanout_p50_ms, 100.0);
        assert_eq!(f.fanout_max_ms, 240.0);
        assert_eq!(fanout_summary(&[partial], 3), None);
        assert_eq!(fanout_summary(&[], 0), None);
    }

    #[test]
    fn viewers_and_admitted_pack_into_one_word() {
        assert_eq!(pack(30_000, 30_001), (30_000u64 << 32) | 30_001);
        assert_ne!(pack(1, 2), pack(2, 1));
        assert_ne!(pack(0, 0), UNSEEN);
        assert_eq!(pack(u64::MAX, 5), (u64::from(u32::MAX) << 32) | 5);
    }

    #[test]
    fn spreads_and_rss_per_subscriber() {
        assert_eq!(
            spread([3, 5, 4]),
            Spread {
                min: 3,
                mean: 4.0,
                max: 5,
                count: 3
            }
        );
        assert_eq!(spread(std::iter::empty()), Spread::default());
        assert_eq!(kib_per(100_000, 300_000, 10_000), Some(20.0));
        assert_eq!(kib_per(300_000, 290_000, 10_000), Some(-1.0));
        assert_eq!(kib_per(1, 2, 0), None);
    }

    #[test]
    fn the_summary_fails_on_lost_frames_and_failed_attaches() {
        let ok = SubscribersSummary {
            wanted: 10,
            attached: 10,
            final_viewers: Some(30),
            final_admitted_total: Some(30),
            ..SubscribersSummary::default()
        }
        .judged();
        assert!(ok.ok(), "{:?}", ok.failures);
        assert!(ok.text().contains("subscribers verdict: OK"));
        let lost = SubscribersSummary { lost: 2, ..ok.clone() }.judged();
        assert!(!lost.ok());
        assert!(lost.failures[0].contains("frames lost: 2"), "{:?}", lost.failures);
        let short = SubscribersSummary {
            attached: 7,
            ..ok.clone()
        }
        .judged();
        assert!(short.failures[0].starts_with("3 of 10 subscribers failed to attach"));
        let closed = SubscribersSummary {
            closed_by_node: 1,
            ..ok.clone()
        }
        .judged();
        assert!(!closed.ok());
        assert!(closed.text().contains("subscribers verdict: FAILED"));
        let unread = SubscribersSummary {
            final_viewers: None,
            ..ok
        }
        .judged();
        assert!(!unread.ok());
    }

    #[test]
    fn a_metrics_counter_is_read_by_its_suffix() {
        let text = "# TYPE stagefleet_subscription_payloads counter\nstagefleet_subscription_payloads_total 17\n\
                    stagefleet_subscription_frames_total 170000\n";
        assert_eq!(metric(Some(text), "subscription_payloads_total"), Some(17));
        assert_eq!(metric(Some(text), "subscription_frames_total"), Some(170_000));
        assert_eq!(metric(None, "subscription_frames_total"), None);
    }
}
