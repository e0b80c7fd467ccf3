//! The stage loop: turns stage intents in the log into IVS calls and their results. An intent (a
//! `Creating` or `Deleting` stage) is written by a use case on any node; this loop, on the leader
//! only, performs CreateStage/DeleteStage and proposes the outcome with the intent's term, so a
//! deposed leader's late answer is fenced. Outcomes — failures included — go through the log,
//! where the use case that wrote the intent awaits them on its own node's bus.
//!
//! It wakes on the bus for new intents and on its interval to reconcile: finish intents nobody is
//! driving (after a crash, a restart or a change of leader), taking them over for this term and
//! finding half-created stages by their tags.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;

use super::{LoopContext, jittered};
use crate::clock::now_ms;
use crate::fleet::event::{Change, StageStep};
use crate::fleet::{FailureKind, Stage, StageFailure, StageState, StageUrls};
use crate::ivs::naming;
use crate::ivs::{BackendError, StageEndpoints, StageInfo};
use crate::metrics::Labels;
use crate::state::{Applied, ProposalError, proposal};

/// Tags every managed stage carries: how a new leader finds its own stages and no one else's.
pub fn stage_tags(fleet_id: &str, stage: &Stage) -> BTreeMap<String, String> {
    naming::stage_tags(fleet_id, &stage.broadcast_id, stage.slot)
}

fn stage_name(stage: &Stage) -> String {
    naming::stage_name(&stage.broadcast_id, stage.slot)
}

/// The adapter's endpoints become the domain's record here, at the edge that called IVS, so the
/// log and `fleet` never hold an `ivs` type.
fn stage_urls(e: &StageEndpoints) -> StageUrls {
    StageUrls {
        events: e.events.clone(),
        whip: e.whip.clone(),
        rtmp: e.rtmp.clone(),
        rtmps: e.rtmps.clone(),
    }
}

/// The adapter's error, reduced to what the log records.
fn failure(e: &BackendError) -> StageFailure {
    let kind = match e {
        BackendError::QuotaExceeded(_) => FailureKind::Quota,
        BackendError::AccessDenied(_) => FailureKind::AccessDenied,
        _ => FailureKind::Failed,
    };
    StageFailure {
        kind,
        message: e.to_string(),
    }
}

/// Stage ids being driven right now by this loop.
type Busy = Arc<Mutex<HashSet<String>>>;

pub async fn run(ctx: LoopContext) {
    // Subscribe before the first scan, so no intent written in between is missed.
    let mut bus = ctx.store.subscribe();
    let busy: Busy = Arc::default();
    // Calls in flight: cancelled with this loop (dropping the set aborts them).
    let mut work = JoinSet::new();
    let mut next_scan = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_scan) => {
                reconcile(&ctx, &busy, &mut work);
                next_scan = tokio::time::Instant::now() + jittered(ctx.settings.reconcile_every);
            }
            applied = bus.recv() => match applied {
                None => return,
                Some(Applied::Reset { .. }) => reconcile(&ctx, &busy, &mut work),
                Some(Applied::Changes(events)) => {
                    for e in events.iter() {
                        if let Change::Stage { id, step: StageStep::Creating | StageStep::Deleting, .. } = &e.change {
                            drive(&ctx, &busy, &mut work, id, false);
                        }
                    }
                }
            },
            Some(_) = work.join_next(), if !work.is_empty() => {}
        }
    }
}

/// Drive every pending intent nobody is driving.
fn reconcile(ctx: &LoopContext, busy: &Busy, work: &mut JoinSet<()>) {
    let view = ctx.store.view();
    for stage in view.fleet.stages.values().filter(|s| s.state != StageState::Active) {
        drive(ctx, busy, work, &stage.id, true);
    }
}

/// Start driving stage `id`'s intent unless it is already driven or no longer pending. `adopt`:
/// look for a stage an earlier attempt may have created (a fresh intent's slot was never used, so
/// it skips that ListStages walk).
fn drive(ctx: &LoopContext, busy: &Busy, work: &mut JoinSet<()>, id: &str, adopt: bool) {
    let Some(stage) = ctx.store.view().fleet.stages.get(id).cloned() else {
        return;
    };
    if stage.state == StageState::Active || !busy.lock().expect("busy set").insert(id.to_string()) {
        return;
    }
    let (ctx, busy, id) = (ctx.clone(), busy.clone(), id.to_string());
    work.spawn(async move {
        let (mut stage, mut adopt) = (stage, adopt);
        loop {
            let driven = stage.state;
            drive_intent(&ctx, stage, adopt).await;
            // An intent that changed while this one was driven (a broadcast ended during its
            // origin's creation) is driven now, not at the next reconcile.
            match ctx.store.view().fleet.stages.get(&id) {
                Some(s) if s.state != StageState::Active && s.state != driven => (stage, adopt) = (s.clone(), true),
                _ => break,
            }
        }
        busy.lock().expect("busy set").remove(&id);
    });
}

async fn drive_intent(ctx: &LoopContext, stage: Stage, adopt: bool) {
    // Take an older term's intent over first, so a late result from its old owner is fenced.
    let (stage, adopt) = if stage.intent_term != ctx.term {
        let reclaim = proposal::ReclaimIntent {
            stage_id: stage.id.clone(),
        };
        match ctx.propose(reclaim).await {
            Ok(s) => (s, true),
            Err(e) => {
                tracing::warn!(stage = %stage.id, error = %e, "taking over a stage intent failed; will retry");
                return;
            }
        }
    } else {
        (stage, adopt)
    };
    if adopt {
        tracing::info!(stage = %stage.id, state = ?stage.state, "reconciling a pending stage intent");
    }
    let r = match stage.state {
        StageState::Creating => create(ctx, &stage, adopt).await,
        StageState::Deleting => delete(ctx, &stage).await,
        StageState::Active => Ok(()),
    };
    if let Err(e) = r {
        tracing::warn!(stage = %stage.id, error = %e, "recording a stage outcome failed; will retry");
    }
}

/// Create `intent` in IVS and record the outcome, success or failure.
async fn create(ctx: &LoopContext, intent: &Stage, adopt: bool) -> Result<(), ProposalError> {
    let tags = stage_tags(&ctx.settings.fleet_id, intent);
    let found = if adopt { find_tagged(ctx, &tags).await } else { Ok(None) };
    let created = match found {
        Ok(Some(info)) => ctx.backend.get_stage(&info.arn).await,
        Ok(None) => ctx.backend.create_stage(&stage_name(intent), &tags).await,
        Err(e) => Err(e),
    };
    count(ctx, "CreateStage", &created);
    let recorded = match created {
        Ok(info) => ctx
            .propose(proposal::StageCreated {
                stage_id: intent.id.clone(),
                intent_term: intent.intent_term,
                endpoints: info.endpoints.as_ref().map(stage_urls).unwrap_or_default(),
                arn: info.arn,
                now: now_ms(),
            })
            .await
            .map(|_| ()),
        Err(e) => {
            tracing::warn!(stage = %intent.id, error = %e, "CreateStage failed");
            ctx.propose(proposal::StageCreateFailed {
                stage_id: intent.id.clone(),
                intent_term: intent.intent_term,
                failure: failure(&e),
            })
            .await
        }
    };
    fenced_is_fine(recorded)
}

/// Delete `intent` in IVS (a stage already gone counts as deleted) and forget it; a failure is
/// recorded and the intent stays for the next reconcile.
async fn delete(ctx: &LoopContext, intent: &Stage) -> Result<(), ProposalError> {
    let arn = match &intent.arn {
        Some(arn) => Ok(Some(arn.clone())),
        None => find_tagged(ctx, &stage_tags(&ctx.settings.fleet_id, intent))
            .await
            .map(|s| s.map(|s| s.arn)),
    };
    let deleted = match arn {
        Ok(Some(arn)) => {
            stop_replications_into(ctx, intent, &arn).await;
            let r = ctx.backend.delete_stage(&arn).await;
            count(ctx, "DeleteStage", &r);
            match r {
                Ok(()) | Err(BackendError::NotFound(_)) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    let recorded = match deleted {
        Ok(()) => {
            ctx.propose(proposal::StageDeleted {
                stage_id: intent.id.clone(),
                intent_term: intent.intent_term,
                now: now_ms(),
            })
            .await
        }
        Err(e) => {
            tracing::warn!(stage = %intent.id, error = %e, "DeleteStage failed; the reconciler will retry");
            ctx.propose(proposal::StageDeleteFailed {
                stage_id: intent.id.clone(),
                intent_term: intent.intent_term,
                failure: failure(&e),
            })
            .await
        }
    };
    fenced_is_fine(recorded)
}

/// Before a replica goes, stop every replication into it, so none is left running into a
/// deleted stage (best effort: IVS ends them with the stage anyway; a failure is logged).
async fn stop_replications_into(ctx: &LoopContext, intent: &Stage, arn: &str) {
    let Some(origin) = intent.media.fed_by else { return };
    let view = ctx.store.view();
    let Some(origin_arn) = view
        .fleet
        .stages
        .get(&Stage::key(&intent.broadcast_id, origin))
        .and_then(|o| o.arn.clone())
    else {
        return;
    };
    drop(view);
    for pid in intent.media.replication.keys() {
        let r = ctx.backend.stop_participant_replication(&origin_arn, arn, pid).await;
        count(ctx, "StopParticipantReplication", &r);
        if let Err(e) = r
            && !matches!(e, BackendError::NotFound(_))
        {
            tracing::warn!(stage = %intent.id, participant = %pid, error = %e, "stopping a replication before DeleteStage failed");
        }
    }
}

/// A refusal means the intent is no longer ours (fenced by a newer term, or gone): nothing to do.
fn fenced_is_fine(r: Result<(), ProposalError>) -> Result<(), ProposalError> {
    match r {
        Err(ProposalError::Refused(_)) => Ok(()),
        r => r,
    }
}

pub(super) fn count<T>(ctx: &LoopContext, op: &'static str, r: &Result<T, BackendError>) {
    let result = match r {
        Ok(_) => "ok".to_string(),
        Err(e) => e.kind().to_string(),
    };
    let labels: Labels = vec![("op", op.to_string()), ("result", result)];
    ctx.metrics.ivs_calls.get_or_create(&labels).inc();
}

async fn find_tagged(ctx: &LoopContext, tags: &BTreeMap<String, String>) -> Result<Option<StageInfo>, BackendError> {
    Ok(ctx.backend.list_stages(tags).await?.into_iter().next())
}
