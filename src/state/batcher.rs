//! Group commit: many concurrent requests of one kind become one log entry. A loop takes whatever
//! is queued (up to `max_batch`), proposes it, and keeps at most `max_in_flight` proposals
//! outstanding; while they are in flight the next batch builds up by itself. An idle node sends
//! a lone request at once, so batching adds no latency when there is no load. A busy node (the
//! last batch was big) proposes one batch at a time, each open for `linger` at least: every entry
//! costs a flush and Raft's own work, so under load fewer, larger entries leave more CPU for
//! signing (BENCHMARKS.md), while the wait is small next to the queue for the signer.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Notify, Semaphore, mpsc, oneshot};

use super::proposal::ProposeError;
use super::proposal::{Proposal, ProposalError};
use super::store::Store;

/// Where one caller's answer goes.
pub type Reply<T> = oneshot::Sender<Result<T, ProposalError>>;

/// What a batch kind's proposal answers.
pub type Output<K> = <<K as BatchKind>::Proposal as Proposal>::Output;

/// How one kind of request becomes a proposal and how its callers are answered.
pub trait BatchKind: Send + Sync + 'static {
    type Req: Send + 'static;
    type Out: Send + 'static;
    type Proposal: Proposal;
    fn proposal(&self, reqs: Vec<Self::Req>) -> Self::Proposal;
    /// Answer every caller once the proposal is applied (or could not be): `replies[i]` sent the
    /// i-th request. A kind may answer later, from elsewhere (joins answer from the signer).
    fn answer(&self, output: Result<Output<Self>, ProposalError>, replies: Vec<Reply<Self::Out>>);
}

/// The usual [`BatchKind::answer`]: `outs[i]` to `replies[i]`, or the error to all of them.
pub fn answer_each<T>(outs: Result<Vec<T>, ProposalError>, replies: Vec<Reply<T>>) {
    match outs {
        Ok(outs) => {
            for (reply, out) in replies.into_iter().zip(outs) {
                let _ = reply.send(Ok(out));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

type Pending<K> = (<K as BatchKind>::Req, Reply<<K as BatchKind>::Out>);

pub struct Batcher<K: BatchKind> {
    tx: mpsc::Sender<Pending<K>>,
}

impl<K: BatchKind> Clone for Batcher<K> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone() }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct BatchConfig {
    pub max_batch: usize,
    pub max_in_flight: usize,
    /// Requests waiting to be batched; beyond it callers wait (backpressure).
    pub queue: usize,
    /// After a batch of [`LINGER_FROM`] requests or more (the node is busy), the next batch goes
    /// once no other is in flight and this long after its first request at the earliest.
    pub linger: std::time::Duration,
}

/// Batch size that marks the node as busy: below it batches go at once, as waiting would only
/// add latency.
pub const LINGER_FROM: usize = 16;

impl<K: BatchKind> Batcher<K> {
    pub fn spawn(
        store: Arc<Store>,
        kind: K,
        cfg: BatchConfig,
        on_batch: impl Fn(usize) + Send + Sync + 'static,
    ) -> Self {
        let (tx, rx) = mpsc::channel(cfg.queue);
        tokio::spawn(run(store, Arc::new(kind), cfg, rx, Arc::new(on_batch)));
        Self { tx }
    }

    pub async fn submit(&self, req: K::Req) -> Result<K::Out, ProposalError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((req, reply))
            .await
            .map_err(|_| ProposeError::Unavailable("the node is shutting down".into()))?;
        rx.await
            .map_err(|_| ProposeError::Unavailable("the batch was dropped".into()))?
    }
}

/// Move what is queued into `batch`, up to `max` requests in all.
fn drain<T>(rx: &mut mpsc::Receiver<T>, batch: &mut Vec<T>, max: usize) {
    while batch.len() < max {
        match rx.try_recv() {
            Ok(p) => batch.push(p),
            Err(_) => break,
        }
    }
}

async fn run<K: BatchKind>(
    store: Arc<Store>,
    kind: Arc<K>,
    cfg: BatchConfig,
    mut rx: mpsc::Receiver<Pending<K>>,
    on_batch: Arc<dyn Fn(usize) + Send + Sync>,
) {
    let slots = cfg.max_in_flight.max(1);
    let in_flight = Arc::new(Semaphore::new(slots));
    // Signalled whenever a proposal has been answered.
    let done = Arc::new(Notify::new());
    let mut last_len = 0;
    while let Some(first) = rx.recv().await {
        let opened = Instant::now();
        // Wait for a free proposal slot first: requests arriving meanwhile join this batch.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        if last_len >= LINGER_FROM && !cfg.linger.is_zero() {
            // Busy (the last batch was big): every log entry costs a flush and Raft's own work
            // whatever it carries, so gather more per entry. Proposals go one at a time — a
            // second slot would only carry the few requests that came in since the last one —
            // and each batch stays open for `linger` at least.
            loop {
                let answered = done.notified();
                tokio::pin!(answered);
                answered.as_mut().enable();
                if in_flight.available_permits() + 1 >= slots {
                    break;
                }
                answered.await;
            }
            tokio::time::sleep_until((opened + cfg.linger).into()).await;
        }
        let mut batch = vec![first];
        drain(&mut rx, &mut batch, cfg.max_batch);
        last_len = batch.len();
        on_batch(batch.len());
        let (reqs, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let (store, kind, done) = (store.clone(), kind.clone(), done.clone());
        tokio::spawn(async move {
            let output = store.propose(kind.proposal(reqs)).await;
            drop(permit);
            done.notify_waiters();
            kind.answer(output, replies);
        });
    }
}
