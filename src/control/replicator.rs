//! The replicator (leader only): keeps "every host publishing on an origin is replicated into
//! every replica that origin feeds" true in IVS. What to do comes from the pure
//! `fleet::replication::jobs`; this loop performs it and reports each outcome through the log, so
//! every node sees each replica's per-host status and when it becomes READY.
//!
//! - Start: StartParticipantReplication (a conflict that turns out to be "already replicated"
//!   counts as started).
//! - Check: the host's media shows in the replica — its replica participant is `published` in
//!   the replica's ListParticipants — and the replication is reported active.
//! - Give up: media not seen within the time-out; reported failed (and stopped), so it is started
//!   again after backoff.
//!
//! Who publishes on each origin is learned from ListParticipants (every `publisher_poll_secs`)
//! and at once from the broadcaster page's `hostPublishing`. It wakes on the bus when a stage,
//! publisher or replication changes, and on its interval while work is pending.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures_util::StreamExt;

use super::{LoopContext, jittered};
use crate::clock::now_ms;
use crate::fleet::event::{Change, StageStep};
use crate::fleet::replication::{self, Job, JobKind, Pacing};
use crate::fleet::transition::{ReplicationReport, host_participant};
use crate::ivs::backend::{ParticipantFilter, ReplicationState};
use crate::ivs::{BackendError, ratelimit};
use crate::state::{Applied, proposal};

/// Replication jobs in flight at once (each op is paced by the backend's rate limiter anyway).
const CONCURRENCY: usize = 8;

pub async fn run(ctx: LoopContext) {
    let mut bus = ctx.store.subscribe();
    let every = ctx.settings.replicate_every;
    let pacing = ctx.settings.pacing;
    let mut next_work = tokio::time::Instant::now();
    let mut next_sample = tokio::time::Instant::now() + jittered(ctx.settings.publisher_poll);
    let mut looked = Looked::default();
    loop {
        tokio::select! {
            applied = bus.recv() => match applied {
                None => return,
                Some(Applied::Reset { .. }) => next_work = tokio::time::Instant::now(),
                Some(Applied::Changes(events)) => {
                    if events.iter().any(|e| wakes(&e.change)) {
                        next_work = tokio::time::Instant::now();
                    }
                }
            },
            () = tokio::time::sleep_until(next_work) => {
                work(&ctx, &pacing, &mut looked).await;
                next_work = tokio::time::Instant::now() + jittered(every);
            }
            () = tokio::time::sleep_until(next_sample) => {
                // Sampling takes only the budget's spare calls: replications and creates go first.
                ratelimit::in_background(sample_publishers(&ctx)).await;
                next_sample = tokio::time::Instant::now() + jittered(ctx.settings.publisher_poll);
            }
        }
    }
}

/// Changes that may give the replicator something to do.
fn wakes(change: &Change) -> bool {
    match change {
        Change::Publishers { .. } | Change::HostAdded { .. } => true,
        Change::Stage { step, .. } => matches!(
            step,
            StageStep::Created | StageStep::Waiting | StageStep::Replication { .. }
        ),
        _ => false,
    }
}

/// When this leader last looked at each (replica, host) for media: checks thin out while IVS
/// takes its time (`replication::check_due`). Kept here, not in the log: a new leader simply
/// looks once more.
#[derive(Default)]
struct Looked(HashMap<(String, String), i64>);

async fn work(ctx: &LoopContext, pacing: &Pacing, looked: &mut Looked) {
    let now = now_ms();
    let min_gap = ctx.settings.replicate_every.as_millis() as i64;
    let mut jobs = replication::jobs(&ctx.store.view().fleet, now, pacing);
    let pending: std::collections::HashSet<(String, String)> = jobs
        .iter()
        .map(|j| (j.replica_id.clone(), j.participant_id.clone()))
        .collect();
    looked.0.retain(|k, _| pending.contains(k));
    jobs.retain(|j| {
        if j.kind != JobKind::Check {
            return true;
        }
        let key = (j.replica_id.clone(), j.participant_id.clone());
        let due = replication::check_due(j.since, looked.0.get(&key).copied(), now, min_gap);
        if due {
            looked.0.insert(key, now);
        }
        due
    });
    futures_util::stream::iter(jobs)
        .for_each_concurrent(CONCURRENCY, |job| async move {
            let act = async {
                match job.kind {
                    JobKind::Start => Some(start(ctx, &job).await),
                    JobKind::Check => check(ctx, &job).await,
                    JobKind::GiveUp => {
                        stop(ctx, &job).await;
                        Some(ReplicationReport::Failed(format!(
                            "the host's media did not show in the replica within {} s",
                            pacing.active_timeout_ms / 1000
                        )))
                    }
                }
            };
            // A replica the crowd waits for goes first; one already seating viewers (a host came
            // back, a second host joined) takes the budget's spare calls.
            let report = if job.urgent { act.await } else { ratelimit::in_background(act).await };
            if let Some(report) = report {
                if let ReplicationReport::Failed(why) = &report {
                    tracing::warn!(replica = %job.replica_id, participant = %job.participant_id, %why, "replication failed; retried after backoff");
                }
                let outcome = ctx.propose(proposal::ReportReplication {
                        stage_id: job.replica_id.clone(),
                        participant_id: job.participant_id.clone(),
                        report,
                        now: now_ms(),
                    })
                    .await;
                if let Err(e) = outcome {
                    // Refused: the replica or the host went meanwhile; nothing to record.
                    tracing::debug!(replica = %job.replica_id, error = %e, "replication report not recorded");
                }
            }
        })
        .await;
}

async fn start(ctx: &LoopContext, job: &Job) -> ReplicationReport {
    let r = ctx
        .backend
        .start_participant_replication(
            &job.origin_arn,
            &job.replica_arn,
            &job.participant_id,
            ctx.settings.reconnect_window_secs,
            &BTreeMap::new(),
        )
        .await;
    super::stages::count(ctx, "StartParticipantReplication", &r);
    match r {
        Ok(()) => ReplicationReport::Started,
        // Already replicated there (an earlier attempt whose answer was lost, or a previous leader's)?
        Err(BackendError::Conflict(why)) => match replicating(ctx, job).await {
            Ok(true) => ReplicationReport::Started,
            _ => ReplicationReport::Failed(why),
        },
        Err(e) => ReplicationReport::Failed(e.to_string()),
    }
}

/// Whether IVS has an active replication of this host into this replica.
async fn replicating(ctx: &LoopContext, job: &Job) -> Result<bool, BackendError> {
    let r = ctx
        .backend
        .list_participant_replicas(&job.origin_arn, &job.participant_id)
        .await;
    super::stages::count(ctx, "ListParticipantReplicas", &r);
    Ok(r?
        .iter()
        .any(|x| x.destination_stage_arn == job.replica_arn && x.state == ReplicationState::Active))
}

/// `Active` once the host's replica participant publishes in the replica; `None` while not yet.
async fn check(ctx: &LoopContext, job: &Job) -> Option<ReplicationReport> {
    let publishing = published_in(ctx, &job.replica_arn).await.ok()?;
    publishing
        .contains(&job.participant_id)
        .then_some(ReplicationReport::Active)
}

/// Participant ids publishing in a stage's current session (empty when it has none).
async fn published_in(ctx: &LoopContext, arn: &str) -> Result<BTreeSet<String>, BackendError> {
    let stage = ctx.backend.get_stage(arn).await;
    super::stages::count(ctx, "GetStage", &stage);
    let session = stage?.active_session_id;
    if session.is_empty() {
        return Ok(BTreeSet::new());
    }
    let listed = ctx
        .backend
        .list_participants(arn, &session, ParticipantFilter::Published)
        .await;
    super::stages::count(ctx, "ListParticipants", &listed);
    Ok(listed?
        .into_iter()
        .filter(|p| p.published)
        .map(|p| p.participant_id)
        .collect())
}

async fn stop(ctx: &LoopContext, job: &Job) {
    let r = ctx
        .backend
        .stop_participant_replication(&job.origin_arn, &job.replica_arn, &job.participant_id)
        .await;
    super::stages::count(ctx, "StopParticipantReplication", &r);
}

/// Learn who publishes on each stage hosts publish to from IVS (hosts publishing from OBS, or a
/// page that never said so; hosts who stopped).
async fn sample_publishers(ctx: &LoopContext) {
    let view = ctx.store.view();
    let origins: Vec<(String, String, BTreeSet<String>, BTreeSet<String>)> = replication::stages_to_sample(&view.fleet)
        .into_iter()
        .filter_map(|s| {
            let b = view.fleet.broadcasts.get(&s.broadcast_id)?;
            let hosts = b
                .hosts
                .values()
                .map(|h| host_participant(&h.participant_base, s.slot))
                .collect();
            Some((s.id.clone(), s.arn.clone()?, hosts, s.media.publishers.clone()))
        })
        .collect();
    drop(view);
    for (stage_id, arn, hosts, known) in origins {
        let Ok(publishing) = published_in(ctx, &arn).await else {
            continue;
        };
        let publishers: BTreeSet<String> = publishing.intersection(&hosts).cloned().collect();
        if publishers == known {
            continue;
        }
        tracing::info!(stage = %stage_id, ?publishers, "hosts publishing on a stage changed");
        let set = proposal::SetPublishers {
            stage_id: stage_id.clone(),
            publishers,
            now: now_ms(),
        };
        if let Err(e) = ctx.propose(set).await {
            tracing::debug!(stage = %stage_id, error = %e, "publishers not recorded");
        }
    }
}
