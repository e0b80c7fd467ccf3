//! Leader-side work that drives IVS. A [`supervisor`] starts the loops as one group when this node
//! becomes leader for a term and cancels the group when it loses leadership or the process shuts
//! down; no loop asks `is_leader()`. Loops get a narrow [`LoopContext`] — the store, the IVS
//! backend, metrics and their settings — never the node's use cases.
//!
//! - [`stages`]: stage intents in the log → IVS calls → results (fenced by term), woken by the
//!   store's bus for new intents and by its interval to reconcile what nobody is driving;
//! - [`expiry`]: ends sessions whose lease ran out;
//! - [`replicator`]: replicates every publishing host into the replicas its origin feeds;
//! - [`reaper`]: deletes stages of this fleet that the state does not know (after a grace);
//! - [`drift`]: samples ListParticipants and compares it with the ledger;
//! - [`scaler`] (with `autoscale = true`): adds stages ahead of the crowd and drains them after.
//!
//! Renewals are not here: every node writes the renewals it saw (`node::presence`).

pub mod drift;
pub mod expiry;
pub mod reaper;
pub mod replicator;
pub mod scaler;
pub mod stages;
pub mod supervisor;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::config::Config;
use crate::ivs::StageBackend;
use crate::metrics::Metrics;
use crate::state::Store;

/// The loops' settings, read once from the config.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Tags every managed stage carries, so a new leader finds its fleet's stages and no other's.
    pub fleet_id: String,
    /// How often the stage loop looks for intents nobody is driving.
    pub reconcile_every: Duration,
    /// How often the leader ends lapsed sessions.
    pub expire_every: Duration,
    /// Whether the scaler runs.
    pub autoscale: bool,
    pub scale: crate::fleet::scaling::ScalePolicy,
    /// The first guess of how long a stage takes to become ready (ms), until the scaler has seen some.
    pub stage_ready_ms: f64,
    /// How often the replicator looks while replications are pending.
    pub replicate_every: Duration,
    /// How often the replicator asks IVS who publishes on each origin.
    pub publisher_poll: Duration,
    /// The replicator's retry backoff and time-out.
    pub pacing: crate::fleet::replication::Pacing,
    /// `reconnectWindowSeconds` of each replication: a host who drops for less stays replicated.
    pub reconnect_window_secs: u32,
    /// How often the drift reconciler samples, how many stages per sweep, the grace a new seat
    /// has to connect, and whether seats never used are released.
    pub drift_every: Duration,
    pub drift_stages_per_sweep: usize,
    pub connect_grace: Duration,
    pub release_unused_seats: bool,
    /// How often the reaper lists this fleet's stages, and how long one stays unowned before it goes.
    pub reaper_every: Duration,
    pub reaper_grace: Duration,
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            fleet_id: cfg.fleet_id.clone(),
            reconcile_every: Duration::from_secs(cfg.reconcile_interval_secs.max(1)),
            expire_every: Duration::from_secs(cfg.presence_interval_secs.max(1)),
            autoscale: cfg.autoscale,
            scale: crate::fleet::scaling::ScalePolicy {
                headroom_floor: cfg.headroom_floor,
                safety: cfg.headroom_safety,
                warm_pool: cfg.warm_pool,
                replicas_per_origin: crate::fleet::scaling::ScalePolicy::default().replicas_per_origin,
                region_stage_quota: cfg.region_stage_quota,
                tick_ms: cfg.scaler_interval_ms,
                drain_below: cfg.drain_below,
                cool_down_ms: cfg.cool_down_secs as i64 * 1000,
                consolidate: cfg.consolidate,
            },
            stage_ready_ms: cfg.stage_ready_ms as f64,
            replicate_every: Duration::from_millis(cfg.replicator_interval_ms.max(10)),
            publisher_poll: Duration::from_secs(cfg.publisher_poll_secs.max(1)),
            pacing: crate::fleet::replication::Pacing {
                active_timeout_ms: cfg.replication_timeout_secs.max(1) as i64 * 1000,
                ..Default::default()
            },
            reconnect_window_secs: cfg.replication_reconnect_window_secs,
            drift_every: Duration::from_secs(cfg.drift_interval_secs.max(1)),
            drift_stages_per_sweep: cfg.drift_stages_per_sweep,
            connect_grace: Duration::from_secs(cfg.connect_grace_secs),
            release_unused_seats: cfg.release_unused_seats,
            reaper_every: Duration::from_secs(cfg.reaper_interval_secs.max(1)),
            reaper_grace: Duration::from_secs(cfg.reaper_grace_secs),
        }
    }
}

/// What a leader's loop may use.
#[derive(Clone)]
pub struct LoopContext {
    pub store: Arc<Store>,
    pub backend: Arc<dyn StageBackend>,
    pub metrics: Arc<Metrics>,
    pub settings: Arc<Settings>,
    /// Where the scaler leaves its last decision for the API.
    pub decisions: Arc<crate::fleet::scaling::Decisions>,
    /// Where the drift reconciler leaves its last report per stage for the API.
    pub drift: Arc<crate::fleet::drift::Reports>,
    /// The term this group runs for: intents of other terms are reclaimed before they are driven.
    pub term: u64,
}

impl LoopContext {
    /// Write for this leader's term: refused if this node no longer leads in it, or if the log
    /// takes it in a later term (so a deposed leader's loop cannot act on the new leader's fleet).
    pub async fn propose<P: crate::state::Proposal>(&self, p: P) -> Result<P::Output, crate::state::ProposalError> {
        self.store.propose_fenced(self.term, p).await
    }
}

/// The loops a leader runs for its term, as one group.
pub fn leader_loops(ctx: LoopContext) -> JoinSet<()> {
    let mut group = JoinSet::new();
    group.spawn(stages::run(ctx.clone()));
    group.spawn(replicator::run(ctx.clone()));
    group.spawn(reaper::run(ctx.clone()));
    group.spawn(drift::run(ctx.clone()));
    if ctx.settings.autoscale {
        group.spawn(scaler::run(ctx.clone()));
    }
    group.spawn(expiry::run(ctx));
    group
}

/// `every` give or take a tenth, so loops of many nodes (and many loops of one) do not tick in step.
pub fn jittered(every: Duration) -> Duration {
    every.mul_f64(rand::random_range(0.9..1.1))
}
