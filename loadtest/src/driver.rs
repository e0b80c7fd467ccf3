//! The shared load driver: issues `total` operations at a fixed rate or open loop, at most
//! `concurrency` in flight (a semaphore), records each latency in HDR histograms and each failure
//! by its `extensions.code`, and shows an `indicatif` progress bar on stderr.
//!
//! What an operation does (join, join+leave, join+hold…) is the scenario's closure; the driver
//! only paces and measures.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::api::ApiError;
use crate::pacing;

#[derive(Clone, Debug)]
pub struct Load {
    pub total: u64,
    /// Operations per second; `None` = open loop, as fast as `concurrency` allows.
    pub rate: Option<f64>,
    pub concurrency: usize,
    pub label: String,
}

/// What the driver measured.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub offered_rate: Option<f64>,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub elapsed: Duration,
    /// Microseconds from sending to the answer.
    pub latency: Histogram<u64>,
    /// Microseconds from the due time to the answer: includes waiting for a free slot.
    pub latency_from_due: Histogram<u64>,
}

impl Outcome {
    pub fn achieved_rate(&self) -> f64 {
        (self.ok + self.errors.values().sum::<u64>()) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn ok_rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

pub fn histogram() -> Histogram<u64> {
    // 1 µs .. 10 min at 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

pub fn progress_bar(len: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} {msg}")
            .expect("progress template"),
    );
    bar.set_prefix(label.to_string());
    bar
}

struct Tally {
    ok: u64,
    errors: BTreeMap<String, u64>,
    latency: Histogram<u64>,
    latency_from_due: Histogram<u64>,
}

/// Run `op(i)` for i in 0..total. `op` returns `Ok` for an operation the server acknowledged.
pub async fn drive<F, Fut>(load: &Load, op: F) -> Outcome
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), ApiError>> + Send + 'static,
{
    let op = Arc::new(op);
    let slots = Arc::new(Semaphore::new(load.concurrency.max(1)));
    let tally = Arc::new(Mutex::new(Tally {
        ok: 0,
        errors: BTreeMap::new(),
        latency: histogram(),
        latency_from_due: histogram(),
    }));
    let bar = progress_bar(load.total, &load.label);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..load.total {
        let due = started + pacing::due(i, load.rate);
        tokio::time::sleep_until(due.into()).await;
        let permit = slots.clone().acquire_owned().await.expect("semaphore open");
        let (op, tally, bar) = (op.clone(), tally.clone(), bar.clone());
        tasks.spawn(async move {
            let sent = Instant::now();
            let result = op(i).await;
            let done = Instant::now();
            drop(permit);
            let mut t = tally.lock().expect("tally");
            let micros = |d: Duration| (d.as_micros() as u64).clamp(1, 600_000_000);
            match result {
                Ok(()) => {
                    t.ok += 1;
                    t.latency.saturating_record(micros(done - sent));
                    t.latency_from_due.saturating_record(micros(done - due));
                }
                Err(e) => {
                    *t.errors.entry(e.code()).or_default() += 1;
                    let n: u64 = t.errors.values().sum();
                    bar.set_message(format!("errors {n} (last {})", e.code()));
                }
            }
            bar.inc(1);
        });
        // Reap finished tasks as we go so the set stays as small as the concurrency.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let t = Arc::try_unwrap(tally)
        .ok()
        .expect("all tasks joined")
        .into_inner()
        .expect("tally");
    Outcome {
        offered_rate: load.rate,
        ok: t.ok,
        errors: t.errors,
        elapsed,
        latency: t.latency,
        latency_from_due: t.latency_from_due,
    }
}
