//! The orphan reaper (leader only): every `reaper_interval_secs` it lists the stages carrying this
//! fleet's tag, asks the pure `fleet::reaping::orphans` which the state does not own, and deletes
//! those that stayed unowned for `reaper_grace_secs` (a stage whose CreateStage answered a moment
//! ago is recorded by then, or adopted by the stage loop). Stages of other fleets are never
//! listed, so never touched. A crash between CreateStage and its record, or a duplicate for one
//! slot, is cleaned up this way.

use std::collections::HashMap;

use tokio::time::Instant;

use super::{LoopContext, jittered};
use crate::fleet::reaping::{self, Tagged};
use crate::ivs::naming::{TAG_BROADCAST, TAG_FLEET, TAG_SLOT};
use crate::ivs::{BackendError, ratelimit};

pub async fn run(ctx: LoopContext) {
    // When each unowned ARN was first seen unowned (this leader's memory: a new leader waits a
    // whole grace again, which only delays a deletion).
    let mut unowned: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::time::sleep(jittered(ctx.settings.reaper_every)).await;
        // The reaper takes only the budget's spare calls.
        ratelimit::in_background(sweep(&ctx, &mut unowned)).await;
    }
}

async fn sweep(ctx: &LoopContext, unowned: &mut HashMap<String, Instant>) {
    let filter = [(TAG_FLEET.to_string(), ctx.settings.fleet_id.clone())].into();
    let listed = ctx.backend.list_stages(&filter).await;
    super::stages::count(ctx, "ListStages", &listed);
    let Ok(listed) = listed else { return };
    let tagged: Vec<Tagged> = listed
        .iter()
        .map(|s| Tagged {
            arn: s.arn.clone(),
            broadcast_id: s.tags.get(TAG_BROADCAST).cloned(),
            slot: s.tags.get(TAG_SLOT).and_then(|v| v.parse().ok()),
        })
        .collect();
    let orphans = reaping::orphans(&ctx.store.view().fleet, &tagged);
    let now = Instant::now();
    unowned.retain(|arn, _| orphans.contains(&arn.as_str()));
    for arn in orphans {
        let since = *unowned.entry(arn.to_string()).or_insert(now);
        if now.duration_since(since) < ctx.settings.reaper_grace {
            continue;
        }
        let r = ctx.backend.delete_stage(arn).await;
        super::stages::count(ctx, "DeleteStage", &r);
        match r {
            Ok(()) | Err(BackendError::NotFound(_)) => {
                tracing::warn!(%arn, "deleted a stage of this fleet that the state does not know (orphan)");
                ctx.metrics.orphans_deleted.inc();
                unowned.remove(arn);
            }
            Err(e) => tracing::warn!(%arn, error = %e, "deleting an orphan stage failed; retried next sweep"),
        }
    }
}
