//! The shared load driver: issues `total` operations at a fixed rate or open loop, at most
//! `concurrency` in flight (that many workers), records each latency in HDR histograms and each failure
//! by its `extensions.code`, and shows an `indicatif` progress bar on stderr.
//!
//! What an operation does (join, join+leave, join+hold…) is the scenario's closure; the driver
//! only paces and measures.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinSet;

use crate::error::ApiError;
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

impl Tally {
    fn new() -> Self {
        Self {
            ok: 0,
            errors: BTreeMap::new(),
            latency: histogram(),
            latency_from_due: histogram(),
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
        self.latency.add(other.latency).expect("histograms share bounds");
        self.latency_from_due
            .add(other.latency_from_due)
            .expect("histograms share bounds");
    }
}

/// Run `op(i)` for i in 0..total. `op` returns `Ok` for an operation the server acknowledged.
///
/// `concurrency` workers each take the next index, wait for its due time (fixed rate) and run
/// it, as wrk's connections do: nothing is spawned or locked per operation, and each worker keeps
/// its own tallies until the end (the generator shares the machine with the node it measures).
/// [`drive`] in the background, for scenarios that act on the node while the load runs; the
/// watch turns true once the load is done.
pub fn drive_in_background<F, Fut>(
    load: Load,
    op: F,
) -> (tokio::task::JoinHandle<Outcome>, tokio::sync::watch::Receiver<bool>)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), ApiError>> + Send + 'static,
{
    let (done_tx, done) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let outcome = drive(&load, op).await;
        done_tx.send_replace(true);
        outcome
    });
    (task, done)
}

pub async fn drive<F, Fut>(load: &Load, op: F) -> Outcome
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), ApiError>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let errors_seen = Arc::new(AtomicU64::new(0));
    let bar = progress_bar(load.total, &load.label);
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..load.concurrency.max(1).min(load.total.max(1) as usize) {
        let (op, next, errors_seen, bar) = (op.clone(), next.clone(), errors_seen.clone(), bar.clone());
        let (total, rate) = (load.total, load.rate);
        workers.spawn(async move {
            let mut t = Tally::new();
            let micros = |d: Duration| (d.as_micros() as u64).clamp(1, 600_000_000);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return t;
                }
                let due = started + pacing::due(i, rate);
                if rate.is_some() {
                    tokio::time::sleep_until(due.into()).await;
                }
                let sent = Instant::now();
                let result = op(i).await;
                let done = Instant::now();
                match result {
                    Ok(()) => {
                        t.ok += 1;
                        t.latency.saturating_record(micros(done - sent));
                        t.latency_from_due.saturating_record(micros(done - due));
                    }
                    Err(e) => {
                        *t.errors.entry(e.code()).or_default() += 1;
                        let n = errors_seen.fetch_add(1, Ordering::Relaxed) + 1;
                        bar.set_message(format!("errors {n} (last {})", e.code()));
                    }
                }
                bar.inc(1);
            }
        });
    }
    let mut tally = Tally::new();
    while let Some(t) = workers.join_next().await {
        tally.merge(t.expect("a load worker panicked"));
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    Outcome {
        offered_rate: load.rate,
        ok: tally.ok,
        errors: tally.errors,
        elapsed,
        latency: tally.latency,
        latency_from_due: tally.latency_from_due,
    }
}
