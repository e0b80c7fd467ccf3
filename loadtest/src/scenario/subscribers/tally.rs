//! What every subscriber tells the run: its last stats message (for the catch-up checks), and
//! per phase the messages, the delays of the changes delivered and the fan-out of each update.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

use super::pieces::{Delivery, Fanout, StatsMsg, StatsSeen, UNSEEN, pack, record_delay};
use crate::driver::histogram;

/// Where the run is: messages and delays are counted per phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum RunPhase {
    Attach = 0,
    /// The storm with subscribers and the catch-up after it.
    Storm = 1,
    After = 2,
}

/// One subscriber's state, read by the catch-up check.
pub(super) struct Slot {
    /// `pack(viewers, admittedTotal)` of its last stats message, or [`UNSEEN`].
    pub(super) last: AtomicU64,
    pub(super) attached: AtomicBool,
    pub(super) storm_messages: AtomicU64,
}

pub(super) struct Tally {
    pub(super) phase: AtomicU8,
    pub(super) slots: Vec<Slot>,
    pub(super) open: AtomicU64,
    /// Per phase: stats messages, changes delivered (and their delays), rate-only messages.
    pub(super) messages: [AtomicU64; 3],
    pub(super) rates_only: [AtomicU64; 3],
    pub(super) delays: [Mutex<Histogram<u64>>; 3],
    pub(super) negative_delays: AtomicU64,
    /// The `joinsPerSecond` of the latest stats message read (as f64 bits), and when any
    /// subscriber last read one (unix ms).
    pub(super) last_joins_per_second: AtomicU64,
    pub(super) last_receipt_ms: AtomicI64,
    /// Changes delivered during the storm, by `appliedIndex`.
    pub(super) storm_updates: Mutex<HashMap<u64, Fanout>>,
    /// After attaching: sockets the node closed, assignments that ended, operations that failed.
    pub(super) closed_by_node: AtomicU64,
    pub(super) ended: Mutex<BTreeMap<String, u64>>,
    pub(super) failed: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    pub(super) fn new(n: usize) -> Self {
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
            last_joins_per_second: AtomicU64::new(0),
            last_receipt_ms: AtomicI64::new(0),
            storm_updates: Mutex::default(),
            closed_by_node: AtomicU64::new(0),
            ended: Mutex::default(),
            failed: Mutex::default(),
        }
    }

    pub(super) fn set_phase(&self, p: RunPhase) {
        self.phase.store(p as u8, Ordering::Release);
    }

    pub(super) fn on_stats(&self, index: usize, seen: &mut StatsSeen, m: &StatsMsg) {
        let now_us = unix_us();
        let delivery = seen.on_message(m, now_us);
        let slot = &self.slots[index];
        slot.last.store(pack(m.viewers, m.admitted_total), Ordering::Release);
        self.last_joins_per_second
            .store(m.joins_per_second.to_bits(), Ordering::Release);
        self.last_receipt_ms.fetch_max(now_us / 1000, Ordering::AcqRel);
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
                        changed_at_ms: m.changed_at_ms,
                        ..Fanout::default()
                    });
                    u.add(us);
                }
            }
        }
    }

    pub(super) fn count(map: &Mutex<BTreeMap<String, u64>>, key: &str) {
        *map.lock().expect("tally").entry(key.to_string()).or_default() += 1;
    }
}

pub(super) fn unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}
