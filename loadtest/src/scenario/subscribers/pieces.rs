//! The small pieces of the `subscribers` scenario that decide something: source addresses,
//! message parsing, which message delivers a change, summaries of spreads and fan-outs. Unit-tested
//! in the scenario's tests.

use std::net::Ipv4Addr;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::*;

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

/// `{"type":"next","payload":{"data":{"stats":{…}}}}` without errors, the common case.
#[derive(Deserialize)]
struct StatsFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    payload: StatsPayload,
}

#[derive(Deserialize)]
struct StatsPayload {
    data: StatsData,
    #[serde(default)]
    errors: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct StatsData {
    stats: StatsMsg,
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
    // Nearly every message is a stats update: read it straight into its struct, not into a JSON
    // tree and a copy of it (the generator shares the node's cores; one pair at 10,000
    // subscribers: its CPU 10 % against 12 % on average).
    if let Ok(f) = serde_json::from_str::<StatsFrame>(text)
        && f.kind == "next"
        && f.payload.errors.is_none()
    {
        return ServerMsg::Stats(f.payload.data.stats);
    }
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
pub(super) const UNSEEN: u64 = u64::MAX;

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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fanout {
    /// The update's `changedAtMs` (when its change was committed).
    pub changed_at_ms: i64,
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
    let slowest = whole.iter().max_by_key(|u| u.first_us).expect("not empty");
    let first: Vec<i64> = whole.iter().map(|u| u.first_us).collect();
    let spread: Vec<i64> = whole.iter().map(|u| u.last_us - u.first_us).collect();
    Some(FanoutSummary {
        updates: whole.len() as u64,
        first_receiver_p50_ms: median(first.clone()),
        first_receiver_max_ms: first.iter().copied().max().unwrap_or(0) as f64 / 1000.0,
        fanout_p50_ms: median(spread.clone()),
        fanout_max_ms: spread.iter().copied().max().unwrap_or(0) as f64 / 1000.0,
        slowest_first_changed_at_ms: slowest.changed_at_ms,
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
    /// `changedAtMs` of the update that took longest to reach its first receiver.
    pub slowest_first_changed_at_ms: i64,
}

/// The node's RSS growth per subscriber, in KiB.
pub fn kib_per(before_kib: u64, after_kib: u64, n: u64) -> Option<f64> {
    (n > 0).then(|| (after_kib as f64 - before_kib as f64) / n as f64)
}
