//! The leader ends sessions whose lease ran out (no heartbeat or open subscription renewed them),
//! freeing their seats, at most [`EXPIRE_BATCH`] per log entry.

use crate::clock::now_ms;
use crate::state::proposal;

use super::{LoopContext, jittered};

/// Most sessions expired per log entry; the rest go in the next round.
pub const EXPIRE_BATCH: usize = 10_000;

pub async fn run(ctx: LoopContext) {
    loop {
        tokio::time::sleep(jittered(ctx.settings.expire_every)).await;
        once(&ctx).await;
    }
}

/// One round: expire a batch if any lease lapsed.
pub async fn once(ctx: &LoopContext) {
    let now = now_ms();
    if !ctx.store.view().any_expired(now) {
        return;
    }
    let expire = proposal::Expire {
        now,
        limit: EXPIRE_BATCH,
    };
    match ctx.propose(expire).await {
        Ok(v) => tracing::info!(count = v.len(), "expired lapsed sessions"),
        Err(e) => tracing::warn!(error = %e, "expiring sessions failed"),
    }
}
