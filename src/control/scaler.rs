//! The scaler (leader only, `autoscale = true`): adds stages ahead of the crowd. It measures from
//! the store's bus — admitted joins per second per broadcast (an EWMA over one-second buckets) and
//! how long stages take from intent to ready — and every `scaler_interval_ms` asks the pure
//! planner (`fleet::scaling`) what to add, proposing each stage as an intent the stage loop then
//! creates in IVS. Every decision is logged and counted with its reason
//! (`stagefleet_scaler_decisions_total{action,reason}`), and the last one per broadcast, with its
//! inputs, is kept for the API.
//!
//! Not yet (issue 12): replication into new replicas before they take viewers, scale-down and
//! drain, the shared API budget, the region-full admission refusal.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::{LoopContext, jittered};
use crate::clock::now_ms;
use crate::fleet::event::{Change, StageStep};
use crate::fleet::scaling::{self, Decision, Reason, ScalePolicy, Signals};
use crate::fleet::{Millis, StageRole};
use crate::metrics::Labels;
use crate::state::{Applied, proposal};

/// Weight of the newest second in the join-rate EWMA.
const ALPHA: f64 = 0.5;

/// What the scaler measures, per broadcast.
#[derive(Default)]
struct Measured {
    /// (second, admitted) of the second being counted.
    current: Option<(i64, u64)>,
    rate: f64,
}

impl Measured {
    fn seated(&mut self, at_ms: Millis, n: u64) {
        let sec = at_ms.div_euclid(1000);
        match &mut self.current {
            Some((s, count)) if *s == sec => *count += n,
            Some((s, count)) if *s < sec => {
                // Close the seconds that passed (empty ones included) into the average.
                let gap = (sec - *s).min(30);
                self.rate = ALPHA * *count as f64 + (1.0 - ALPHA) * self.rate;
                for _ in 1..gap {
                    self.rate *= 1.0 - ALPHA;
                }
                self.current = Some((sec, n));
            }
            // A late entry (another proposer's clock) counts in the current second.
            Some((_, count)) => *count += n,
            None => self.current = Some((sec, n)),
        }
    }

    /// The rate as of `now`: seconds without joins since the last one pull it down.
    fn rate(&self, now_ms: Millis) -> f64 {
        let Some((sec, count)) = self.current else {
            return self.rate;
        };
        let now = now_ms.div_euclid(1000);
        if now <= sec {
            // The current second is still counting: weigh what it has so far as a full second.
            return self.rate.max(count as f64);
        }
        let mut rate = ALPHA * count as f64 + (1.0 - ALPHA) * self.rate;
        for _ in 1..(now - sec).min(30) {
            rate *= 1.0 - ALPHA;
        }
        rate
    }
}

pub async fn run(ctx: LoopContext) {
    let settings = &ctx.settings;
    let scale = settings.scale.clone();
    let every = Duration::from_millis(u64::from(scale.tick_ms).max(50));
    let mut bus = ctx.store.subscribe();
    let mut measured: HashMap<String, Measured> = HashMap::new();
    let mut creating_since: HashMap<String, Millis> = HashMap::new();
    let mut ready_ms = settings.stage_ready_ms;
    let mut low_since: BTreeMap<String, Millis> = BTreeMap::new();
    let mut next = tokio::time::Instant::now() + jittered(every);
    loop {
        tokio::select! {
            applied = bus.recv() => match applied {
                None => return,
                Some(Applied::Reset { .. }) => creating_since.clear(),
                Some(Applied::Changes(events)) => for e in events.iter() {
                    match &e.change {
                        Change::Seated { broadcast_id, count, .. } => {
                            measured.entry(broadcast_id.clone()).or_default().seated(e.at_ms, u64::from(*count));
                        }
                        Change::Stage { id, step: StageStep::Creating, .. } => {
                            creating_since.insert(id.clone(), e.at_ms);
                        }
                        Change::Stage { id, step: StageStep::Ready, .. } => {
                            // Learn how long a stage takes to get ready (an EWMA of what we saw).
                            if let Some(since) = creating_since.remove(id) {
                                let took = (e.at_ms - since).max(0) as f64;
                                ready_ms = 0.7 * ready_ms + 0.3 * took;
                            }
                        }
                        Change::Stage { id, step: StageStep::CreateFailed(_) | StageStep::Deleted, .. } => {
                            creating_since.remove(id);
                        }
                        _ => {}
                    }
                }
            },
            () = tokio::time::sleep_until(next) => {
                next = tokio::time::Instant::now() + jittered(every);
                tick(&ctx, &scale, &measured, ready_ms, &mut low_since).await;
            }
        }
    }
}

async fn tick(
    ctx: &LoopContext,
    scale: &ScalePolicy,
    measured: &HashMap<String, Measured>,
    ready_ms: f64,
    low_since: &mut BTreeMap<String, Millis>,
) {
    let now = now_ms();
    let view = ctx.store.view();
    // Since when each ready stage's audience has been under `drain_below` (this leader's memory:
    // a new leader waits a whole cool-down again, which only delays a scale-down).
    low_since.retain(|id, _| {
        view.fleet
            .stages
            .get(id)
            .is_some_and(|s| s.is_ready() && s.viewers < scale.drain_below)
    });
    for s in view.fleet.stages.values() {
        if s.is_ready() && s.viewers < scale.drain_below {
            low_since.entry(s.id.clone()).or_insert(now);
        }
    }
    let signals: BTreeMap<String, Signals> = view
        .fleet
        .broadcasts
        .keys()
        .map(|id| {
            let rate = measured.get(id).map_or(0.0, |m| m.rate(now));
            (
                id.clone(),
                Signals {
                    join_rate: rate,
                    ready_time_ms: ready_ms,
                },
            )
        })
        .collect();
    let plans = scaling::plan(&view.fleet, &view.policy, scale, &signals, low_since, now);
    drop(view);
    for (broadcast_id, plan) in &plans {
        for stage_id in &plan.undrain {
            tracing::info!(broadcast = %broadcast_id, stage = %stage_id, headroom = plan.headroom, free_ready = plan.free_ready, "scaler takes a draining stage back");
            count(ctx, "undrain", "headroom");
            let undrain = proposal::UndrainStage {
                stage_id: stage_id.clone(),
            };
            if let Err(e) = ctx.propose(undrain).await {
                tracing::warn!(stage = %stage_id, error = %e, "undrain not taken");
            }
        }
        if let Some(drain) = &plan.drain {
            tracing::info!(
                broadcast = %broadcast_id,
                stage = %drain.stage_id,
                viewers = drain.viewers,
                low_for_ms = now - drain.low_since,
                free_ready = plan.free_ready,
                headroom = plan.headroom,
                consolidate = scale.consolidate,
                "scaler drains a quiet stage"
            );
            count(ctx, "drain", "low_audience");
            drain_stage(ctx, &drain.stage_id, drain.viewers, scale.consolidate).await;
        }
        for add in &plan.add {
            let (action, reason) = labels(add.role, &add.reason);
            tracing::info!(
                broadcast = %broadcast_id,
                action,
                reason,
                free_ready = plan.free_ready,
                pending = plan.pending,
                headroom = plan.headroom,
                join_rate = signals[broadcast_id].join_rate,
                ready_ms,
                "scaler adds a stage"
            );
            count(ctx, action, reason);
            let add_stage = proposal::AddStage {
                broadcast_id: broadcast_id.clone(),
                role: add.role,
                now: now_ms(),
            };
            if let Err(e) = ctx.propose(add_stage).await {
                tracing::warn!(broadcast = %broadcast_id, error = %e, "the scaler's stage intent was not taken");
                break;
            }
        }
        if let Some(limit) = plan.limited_by {
            let reason = limit.setting();
            tracing::warn!(broadcast = %broadcast_id, reason, headroom = plan.headroom, "the scaler is held back by a limit");
            count(ctx, "held", reason);
        }
    }
    let mut last = ctx.decisions.lock().expect("decisions lock");
    last.clear();
    for (id, plan) in plans {
        let decision = Decision {
            at_ms: now,
            signals: signals[&id],
            plan,
        };
        last.insert(id, decision);
    }
}

/// Drain a stage and, with `consolidate`, move its viewers now (it is retired once empty).
async fn drain_stage(ctx: &LoopContext, stage_id: &str, viewers: u32, consolidate: bool) {
    let drain = proposal::DrainStage {
        stage_id: stage_id.to_string(),
    };
    if let Err(e) = ctx.propose(drain).await {
        tracing::warn!(stage = %stage_id, error = %e, "drain not taken");
        return;
    }
    if consolidate && viewers > 0 {
        let moves = proposal::MoveViewers {
            stage_id: stage_id.to_string(),
            limit: viewers,
        };
        match ctx.propose(moves).await {
            Ok(n) => tracing::info!(stage = %stage_id, moved = n, "viewers moved off a draining stage"),
            Err(e) => {
                tracing::warn!(stage = %stage_id, error = %e, "moving viewers failed; they stay until they leave")
            }
        }
    }
}

fn labels(role: StageRole, reason: &Reason) -> (&'static str, &'static str) {
    let action = match role {
        StageRole::Origin => "add_origin",
        StageRole::Replica => "add_replica",
    };
    let reason = match reason {
        Reason::Headroom { .. } => "headroom",
        Reason::WarmPool { .. } => "warm_pool",
    };
    (action, reason)
}

fn count(ctx: &LoopContext, action: &'static str, reason: &'static str) {
    let labels: Labels = vec![("action", action.to_string()), ("reason", reason.to_string())];
    ctx.metrics.scaler_decisions.get_or_create(&labels).inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_join_rate_follows_the_seconds_and_falls_when_joins_stop() {
        let mut m = Measured::default();
        for ms in (0..3000).step_by(10) {
            m.seated(ms, 1); // 100 joins a second for three seconds
        }
        let during = m.rate(2_500);
        assert!((80.0..=100.0).contains(&during), "{during}");
        let after = m.rate(10_000);
        assert!(after < 2.0, "seven quiet seconds bring it near zero: {after}");
        assert_eq!(Measured::default().rate(5_000), 0.0);
    }
}
