//! The drift reconciler (leader only): every `drift_interval_secs` it samples up to
//! `drift_stages_per_sweep` stages (round robin) with GetStage + ListParticipants, taking only the
//! budget's spare calls, and compares what IVS lists with the ledger (`fleet::drift`). The last
//! report per stage is kept for `/metrics` and the `Stage.drift` field; with
//! `release_unused_seats` the seats whose viewer never connected within `connect_grace_secs` are
//! released (their `assignment` ends with `UNUSED`).

use std::collections::BTreeSet;

use super::{LoopContext, jittered};
use crate::clock::now_ms;
use crate::fleet::StageState;
use crate::fleet::drift::{self, Listed};
use crate::ivs::backend::ParticipantState;
use crate::ivs::ratelimit;
use crate::metrics::Labels;
use crate::state::proposal;

pub async fn run(ctx: LoopContext) {
    let mut cursor = String::new();
    loop {
        tokio::time::sleep(jittered(ctx.settings.drift_every)).await;
        cursor = ratelimit::in_background(sweep(&ctx, cursor)).await;
    }
}

/// Sample the next stages after `cursor` (by id); answers the new cursor.
async fn sweep(ctx: &LoopContext, cursor: String) -> String {
    let view = ctx.store.view();
    let mut stages: Vec<(String, String)> = view
        .fleet
        .stages
        .values()
        .filter(|s| s.state == StageState::Active)
        .filter_map(|s| Some((s.id.clone(), s.arn.clone()?)))
        .collect();
    drop(view);
    let start = stages.iter().position(|(id, _)| *id > cursor).unwrap_or(0);
    stages.rotate_left(start);
    stages.truncate(ctx.settings.drift_stages_per_sweep.max(1));
    let mut last = cursor;
    for (stage_id, arn) in stages {
        if let Some(listed) = list(ctx, &arn).await {
            report(ctx, &stage_id, &listed).await;
        }
        last = stage_id;
    }
    last
}

async fn list(ctx: &LoopContext, arn: &str) -> Option<Listed> {
    let stage = ctx.backend.get_stage(arn).await;
    super::stages::count(ctx, "GetStage", &stage);
    let session = stage.ok()?.active_session_id;
    let mut listed = Listed {
        joined: BTreeSet::new(),
        connected: BTreeSet::new(),
        publishers: BTreeSet::new(),
    };
    if session.is_empty() {
        return Some(listed);
    }
    let all = ctx
        .backend
        .list_participants(arn, &session, crate::ivs::backend::ParticipantFilter::All)
        .await;
    super::stages::count(ctx, "ListParticipants", &all);
    for p in all.ok()? {
        if p.published {
            listed.publishers.insert(p.participant_id.clone());
        }
        if p.state == ParticipantState::Connected {
            listed.connected.insert(p.participant_id.clone());
        }
        listed.joined.insert(p.participant_id);
    }
    Some(listed)
}

async fn report(ctx: &LoopContext, stage_id: &str, listed: &Listed) {
    let sessions = ctx.store.view().sessions_on_stage(stage_id);
    let grace = ctx.settings.connect_grace.as_millis() as i64;
    let d = drift::compare(&sessions, listed, now_ms(), grace);
    for (kind, n) in [
        ("never_connected", d.never_connected.len() as i64),
        ("unknown", i64::from(d.unknown)),
    ] {
        let labels: Labels = vec![("stage", stage_id.to_string()), ("kind", kind.to_string())];
        ctx.metrics.drift.get_or_create(&labels).set(n);
    }
    if !d.never_connected.is_empty() || d.unknown > 0 {
        tracing::info!(stage = %stage_id, never_connected = d.never_connected.len(), unknown = d.unknown, "ledger and IVS differ");
    }
    if ctx.settings.release_unused_seats && !d.never_connected.is_empty() {
        let release = proposal::ReleaseUnused {
            session_ids: d.never_connected.clone(),
        };
        match ctx.propose(release).await {
            Ok(n) => tracing::warn!(stage = %stage_id, released = n, "released seats whose viewer never connected"),
            Err(e) => tracing::warn!(stage = %stage_id, error = %e, "releasing unused seats failed"),
        }
    }
    ctx.drift.lock().expect("drift lock").insert(stage_id.to_string(), d);
}
